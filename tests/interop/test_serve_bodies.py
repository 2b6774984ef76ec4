"""Request bodies and HEAD through the real server stack (granian, RSGI, TLS).

The in-process tests drive the application over ASGI; these send what a client
on the network can: bodies over the limit (declared or chunked), a body cut
short, HEAD. Each answer is a 4xx or the metadata, and nothing stored changes.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _countersign import CountersignServer
from _tufhttp import create_repository, multipart, request

pytestmark = pytest.mark.interop

GUN = "localhost:5000/bodies/repo"
LIMIT = 16384


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountersignServer]:
    running = CountersignServer(tmp_path_factory.mktemp("bodies"),
                                extra_args=["--max-body", str(LIMIT)])
    running.start()
    try:
        create_repository(running, GUN, b"payload", client_snapshot=False)  # type: ignore[arg-type]
        yield running
    finally:
        running.stop()


def _raw(server: CountersignServer, data: bytes, *, close_write: bool = False) -> bytes:
    """Send ``data`` as is over TLS; what the server answers (up to 64 KiB)."""
    url = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(Path(server.ca_path)))
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 443),
                                  timeout=20) as plain, \
            context.wrap_socket(plain, server_hostname=url.hostname) as tls:
        tls.sendall(data)
        if close_write:
            return b""
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 12:
            piece = tls.recv(65536)
            if not piece:
                break
            answer += piece
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            piece = tls.recv(65536)
            if not piece:
                break
            rest += piece
        return head + b"\r\n\r\n" + rest


def _timestamp(server: CountersignServer) -> bytes:
    status, _, body = server.get_tuf(GUN, "timestamp")
    assert status == 200
    return body


def _head(host: str, path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary=b\r\n{extra}" + (f"Content-Length: {length}\r\n" if length >= 0 else "")
            + "\r\n").encode()


def test_a_declared_body_over_the_limit_is_a_413(server: CountersignServer) -> None:
    before = _timestamp(server)
    host = urlsplit(server.url).netloc
    answer = _raw(server, _head(host, f"/v2/{GUN}/_trust/tuf/", LIMIT * 4) + b"x" * 100)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"TOO_LARGE"' in answer
    assert _timestamp(server) == before


def test_a_chunked_body_over_the_limit_is_a_413(server: CountersignServer) -> None:
    before = _timestamp(server)
    host = urlsplit(server.url).netloc
    chunk = b"y" * 1024
    chunks = b"".join(b"400\r\n" + chunk + b"\r\n" for _ in range(24)) + b"0\r\n\r\n"
    answer = _raw(server, _head(host, f"/v2/{GUN}/_trust/tuf/", -1,
                                "Transfer-Encoding: chunked\r\n") + chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert _timestamp(server) == before


def test_a_body_cut_short_changes_nothing(server: CountersignServer) -> None:
    before = _timestamp(server)
    host = urlsplit(server.url).netloc
    body, headers = multipart({"targets": b'{"signed":{}}'})
    _raw(server, _head(host, f"/v2/{GUN}/_trust/tuf/", len(body) + 500) + body,
         close_write=True)
    assert _timestamp(server) == before  # and the server still answers
    status, _, _ = request(server, "POST", f"/v2/{GUN}/_trust/tuf/", body,  # type: ignore[arg-type]
                           headers)
    assert 400 <= status < 500


def test_head_gives_the_length_of_the_get_and_no_body(server: CountersignServer) -> None:
    path = f"/v2/{GUN}/_trust/tuf/targets.json"
    status, _, body = request(server, "GET", path)  # type: ignore[arg-type]
    assert status == 200 and body
    host = urlsplit(server.url).netloc
    answer = _raw(server, f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\n"
                          f"Connection: close\r\n\r\n".encode())
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert rest == b""
