"""The small web layer countersign's two services share: one handler, two protocols.

The trust server and the admission webhook each implement
:meth:`WebApp.handle` once, on a :class:`Request` and a :class:`Response`.
:class:`WebApp` speaks ASGI (any ASGI server; the in-process tests) and granian's
RSGI, which ``countersign serve`` and ``countersign webhook`` run: RSGI hands the
whole response to Rust in one call, where ASGI needs two messages and their
dictionaries, and that per-request Python is what limits a hot GET.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
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


class Response:
    """Status, body and headers (names in lower case; ``content-length`` is added)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []


class Request:
    """What a handler may ask of a request, whichever protocol brought it."""

    __slots__ = ("method", "path", "query")

    def __init__(self, method: str, path: str, query: str) -> None:
        self.method = method
        self.path = path
        self.query = query  # the raw query string, as text

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case)."""
        raise NotImplementedError

    async def _chunks(self) -> Any:  # an async iterator of body pieces
        raise NotImplementedError
        yield b""  # pragma: no cover

    async def body(self, limit: int) -> bytes:
        """The whole body, never more than ``limit`` bytes read (a declared larger one: none)."""
        declared = self.header("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BodyError("Content-Length is not a number")
            if int(declared) > limit:
                raise BodyError(f"the body of {declared} bytes is over the limit of "
                                f"{limit} bytes", too_large=True)
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._chunks():
            size += len(chunk)
            if size > limit:
                raise BodyError(f"the body is over the limit of {limit} bytes", too_large=True)
            chunks.append(chunk)
        return b"".join(chunks)


class _ASGIRequest(Request):
    __slots__ = ("_receive", "_scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope["method"], scope["path"],
                         bytes(scope.get("query_string", b"")).decode("latin-1"))
        self._scope = scope
        self._receive = receive

    def header(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in self._scope.get("headers", ()):
            if key == wanted:
                return bytes(value).decode("latin-1")
        return None

    async def _chunks(self) -> Any:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BodyError("the client went away before the body ended")
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


class _RSGIRequest(Request):
    __slots__ = ("_headers", "_protocol")

    def __init__(self, scope: Any, protocol: Any) -> None:
        super().__init__(scope.method, scope.path, scope.query_string)
        self._headers = scope.headers
        self._protocol = protocol

    def header(self, name: str) -> str | None:
        value = self._headers.get(name)
        return None if value is None else str(value)

    async def _chunks(self) -> Any:
        try:
            async for chunk in self._protocol:
                yield bytes(chunk)
        except RuntimeError as exc:  # granian's ProtocolClosed: the client went away
            raise BodyError("the client went away before the body ended") from exc


class WebApp:
    """A service: :meth:`handle` each request, :meth:`close` once at shutdown."""

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the service holds (runs once, when the server stops)."""

    # --- ASGI ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self.handle(_ASGIRequest(scope, receive))
        body = response.body
        headers = [(b"content-length", str(len(body)).encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- RSGI (granian) --------------------------------------------------------
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        response = await self.handle(_RSGIRequest(scope, protocol))
        protocol.response_bytes(response.status, response.headers, response.body)

    def __rsgi_del__(self, loop: Any) -> None:
        self.close()


__all__ = ["BodyError", "Request", "Response", "WebApp"]
