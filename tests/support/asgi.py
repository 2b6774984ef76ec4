"""Call an ASGI application in-process: no sockets, for fast server tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any


async def _call(app: Any, method: str, path: str, body: bytes,
                headers: Mapping[str, str], query: bytes) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": query, "headers": [(k.lower().encode(), v.encode("latin-1"))
                                           for k, v in headers.items()],
        "http_version": "1.1", "scheme": "https", "server": ("127.0.0.1", 443),
        "client": ("127.0.0.1", 50000),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    out_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update({k.decode(): v.decode("latin-1")
                                for k, v in message["headers"]})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, b"".join(chunks)


def call(app: Any, method: str, path: str, body: bytes = b"",
         headers: Mapping[str, str] | None = None,
         query: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(_call(app, method, path, body, headers or {}, query))
