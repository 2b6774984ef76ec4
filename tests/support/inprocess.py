"""A :class:`~countersign.client.fetcher.Fetcher` that talks to a trust server in-process,
and one that lets a test rewrite what the server says (a malicious server or mirror)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from asgi import call

from countersign.client.fetcher import Response
from countersign.errors import DownloadError

#: (method, path, response) -> the response the client gets instead
Rewrite = Callable[[str, str, Response], Response]


class ASGIFetcher:
    """Requests go straight into the ASGI app; size limits are enforced as over the wire."""

    base_url = "https://trust.test"

    def __init__(self, app: object, rewrite: Rewrite | None = None) -> None:
        self.app = app
        self.rewrite = rewrite
        self.log: list[tuple[str, str]] = []

    def _do(self, method: str, path: str, body: bytes, headers: Mapping[str, str],
            max_length: int) -> Response:
        split = urlsplit(path)
        self.log.append((method, split.path))
        status, out_headers, data = call(self.app, method, split.path, body, headers,
                                         split.query.encode())
        response = Response(status, data, {k.lower(): v for k, v in out_headers.items()})
        if self.rewrite is not None:
            response = self.rewrite(method, split.path, response)
        if len(response.body) > max_length:
            raise DownloadError(f"{path}: more than {max_length} bytes; refusing the rest")
        return response

    def get(self, path: str, *, max_length: int) -> Response:
        return self._do("GET", path, b"", {}, max_length)

    def request(self, method: str, path: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None,
                max_length: int = 1 << 20) -> Response:
        return self._do(method, path, body, headers or {}, max_length)
