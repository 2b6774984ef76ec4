"""The little of ASGI that countersign's services share: bounded bodies, headers, lifespan.

The trust server and the admission webhook are plain ASGI callables (no framework on
the hot path); what they both need from the protocol lives here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyError(Exception):
    """The request body cannot be taken: over the limit (``too_large``) or cut short."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as text."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, never more than ``limit`` bytes read (a declared larger one: none)."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyError(f"the body of {declared} bytes is over the limit of {limit} bytes",
                            too_large=True)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyError("the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyError(f"the body is over the limit of {limit} bytes", too_large=True)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes,
                  headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]]
                   ) -> None:
    """Answer the server's lifespan messages; ``on_shutdown`` runs before the last."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
