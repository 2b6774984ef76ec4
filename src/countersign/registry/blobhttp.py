"""An HTTP/1.1 transport for blob downloads whose bodies are read straight into a buffer.

Streaming a 500 MB layer through httpx costs more in Python than the network
and the hash together: httpcore reads 64 KiB per ``recv``, h11 copies every
piece into its receive buffer and out again, and each read passes through
several generator layers. :class:`BlobTransport` is an ``httpx`` transport on
the standard library's :mod:`http.client` for ``GET`` and ``HEAD`` only, used
by :class:`~countersign.registry.client.RegistryClient` for blob bodies. Its
responses carry a ``readinto`` (:data:`READINTO`) that fills the caller's
buffer from the socket in C, one copy per byte, with no per-piece objects.

Everything around the body (auth, retries, redirects, status and error
handling) stays with ``httpx.Client`` and the registry client, so the two paths
cannot disagree on them. What this transport guarantees:

* every socket operation (connect, TLS handshake, each read) has ``timeout``
  seconds, and a status line, header line and header count are bounded by
  :mod:`http.client` (64 KiB lines, 100 headers);
* HTTPS verifies the certificate and host name with the context it is given,
  built only when the first HTTPS request needs it (a plain-HTTP loopback
  registry never pays for loading the CA store);
* failures are ``httpx`` transport errors (``ConnectError``, ``ReadTimeout``,
  ``RemoteProtocolError``, ...), the OS or TLS error kept as the cause, so the
  registry client reports them as it does for httpx's own transport;
* a keep-alive connection goes back to the pool only when its response was
  read to the end; a reused connection that the server had closed is replaced
  once, before any byte of a response was seen (``GET`` and ``HEAD`` are safe
  to repeat).
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Final

import httpx

__all__ = ["READINTO", "BlobTransport"]

#: The response extension holding ``readinto(buffer) -> int`` (0 at the end of the body).
READINTO: Final = "countersign.readinto"
#: Idle keep-alive connections kept per origin.
MAX_IDLE: Final = 4
_ITER_CHUNK: Final = 256 * 1024

_Origin = tuple[str, str, int]


def _transport_error(exc: BaseException, *, connecting: bool,
                     request: httpx.Request) -> httpx.TransportError:
    """The ``httpx`` error for a failure of the standard library's HTTP or socket code."""
    error: httpx.TransportError
    if isinstance(exc, TimeoutError):
        error = (httpx.ConnectTimeout if connecting else httpx.ReadTimeout)(
            "timed out", request=request)
    elif connecting:
        error = httpx.ConnectError(str(exc) or type(exc).__name__, request=request)
    elif isinstance(exc, http.client.HTTPException):
        error = httpx.RemoteProtocolError(
            f"malformed or incomplete answer ({type(exc).__name__})", request=request)
    else:
        error = httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    return error


class _Body(httpx.SyncByteStream):
    """A response body read from ``http.client``; the connection is released on close."""

    def __init__(self, owner: BlobTransport, origin: _Origin,
                 connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 request: httpx.Request) -> None:
        self._owner = owner
        self._origin = origin
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self._request = request

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the body (fewer bytes only at its end); 0 once it is over."""
        if self._connection is None:
            return 0
        try:
            count = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise self._failed(exc) from exc
        if not count and buffer:
            self._check_end()
        return count

    def __iter__(self) -> Iterator[bytes]:
        # One receive per piece (``read1``), not a full buffer: whoever iterates (the
        # registry client reading an error body) checks its deadline and size limit
        # after every piece, however slowly the body trickles in.
        while self._connection is not None:
            try:
                piece = self._response.read1(_ITER_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise self._failed(exc) from exc
            if not piece:
                self._check_end()
                return
            yield piece

    def _failed(self, exc: BaseException) -> httpx.TransportError:
        self._discard()
        return _transport_error(exc, connecting=False, request=self._request)

    def _check_end(self) -> None:
        """At an empty read: the body must be complete."""
        if self._response.length:
            # http.client ends quietly when the peer closes early; httpx (h11) does not
            self._discard()
            raise httpx.RemoteProtocolError(
                f"the connection closed {self._response.length} bytes before the end of "
                "the body", request=self._request)

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        finished = self._response.isclosed() or (
            self._response.length == 0 and not self._response.chunked)
        if finished and not self._response.will_close:
            self._response.close()
            self._owner._release(self._origin, connection)
        else:  # not read to the end (or the server closes it): never reuse it
            self._response.close()
            connection.close()


class BlobTransport(httpx.BaseTransport):
    """``GET`` and ``HEAD`` over :mod:`http.client`, with keep-alive per origin.

    ``tls`` returns the SSL context for HTTPS; it is called once, on the first
    HTTPS request. ``timeout`` bounds every socket operation, in seconds.
    """

    def __init__(self, tls: Callable[[], ssl.SSLContext], timeout: float) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._tls = tls
        self._context: ssl.SSLContext | None = None
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = self._tls()
            return self._context

    def _connection(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to ``origin`` (and ``True``), else a new one (``False``)."""
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        scheme, host, port = origin
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self._ssl()), False
        return http.client.HTTPConnection(host, port, timeout=self.timeout), False

    def _release(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < MAX_IDLE:
                idle.append(connection)
                return
        connection.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("GET", "HEAD"):
            raise ValueError(f"BlobTransport sends GET and HEAD only, not {request.method}")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https") or not url.host:
            raise httpx.UnsupportedProtocol(f"cannot fetch {url}", request=request)
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        target = url.raw_path.decode("ascii")
        headers = list(request.headers.raw)
        while True:
            connection, reused = self._connection(origin)
            try:
                response = self._exchange(connection, request.method, target, headers,
                                          reused=reused)
            except _Stale:
                connection.close()
                continue
            except _Connecting as exc:
                connection.close()
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                raise _transport_error(cause, connecting=True, request=request) from cause
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise _transport_error(exc, connecting=False, request=request) from exc
            break
        header_list = [(name.encode("latin-1"), value.encode("latin-1"))
                       for name, value in response.getheaders()]
        return httpx.Response(
            response.status, headers=header_list,
            stream=(body := _Body(self, origin, connection, response, request)),
            request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": response.reason.encode("latin-1", "replace"),
                        READINTO: body.readinto})

    @staticmethod
    def _exchange(connection: http.client.HTTPConnection, method: str, target: str,
                  headers: list[tuple[bytes, bytes]], *, reused: bool,
                  ) -> http.client.HTTPResponse:
        if connection.sock is None:
            try:
                connection.connect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                # ValueError: a host name the resolver cannot encode (UnicodeError for an
                # IDNA label over 63 characters, as a redirect may name)
                raise _Connecting(exc) from exc
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            return connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if reused:  # the server closed the idle connection: one fresh try
                raise _Stale from None
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for connection in idle:
            connection.close()


class _Stale(Exception):
    """Internal: a reused keep-alive connection the server had already closed."""


class _Connecting(OSError):
    """Internal: connecting (or the TLS handshake) failed; the cause is the OS or TLS error."""

