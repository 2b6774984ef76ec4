"""How the trust client reaches a server: one small interface, so tests can swap it.

The update logic never opens a socket. It asks a :class:`Fetcher` for a path
with a byte limit; the HTTPS fetcher enforces that limit, timeouts and a
minimum transfer rate; test fetchers serve an in-process server, or rewrite
its answers to play a malicious mirror.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Fetcher(Protocol):
    """Raw HTTP to one trust server. Errors of transport are :class:`ServerUnavailableError`
    (``countersign.errors``); an over-long body is :class:`DownloadError`."""

    base_url: str

    def get(self, path: str, *, max_length: int) -> Response:
        """GET ``path``; at most ``max_length`` bytes of body are accepted."""
        ...

    def request(self, method: str, path: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None,
                max_length: int = 1 << 20) -> Response:
        """Any other request (POST an update, DELETE a repository, rotate a key)."""
        ...
