"""Blob bodies through ``BlobTransport`` and ``RegistryClient.fetch_blob``.

A scripted HTTP/1.1 server on loopback answers with exact bytes, so keep-alive,
a connection the server closed, truncated, endless, stalled and malformed
answers, redirects and TLS are each checked on the real socket path. The same
checks run on the in-memory registry (the ``iter_bytes`` path), and the
layout writer's fsync policy is checked by watching ``os.fsync``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from countersign.client.http import Credentials
from countersign.registry import oci
from countersign.registry.blobhttp import BlobTransport
from countersign.registry.client import (
    PIECE_SIZE,
    DigestMismatchError,
    RegistryClient,
    RegistryError,
    RegistryLimitError,
    RegistryUnavailableError,
)
from countersign.registry.layout import LayoutDescriptor, LayoutError, LayoutWriter, OCILayout
from countersign.registry.memory import MemoryRegistry

sys.path.insert(0, str(Path(__file__).parents[1] / "interop"))
from _notary import make_tls_material

REPO = "lib/app"
NO_CREDENTIALS = Credentials(notary_auth=False, docker_config=False)

#: What a scripted connection does with one request: write to the socket, and
#: return whether to keep the connection open for another request.
Answer = Callable[[socket.socket, str], bool]


class RawServer:
    """A loopback HTTP/1.1 server whose every answer is written by ``answer``."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[str] = []
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._open.append(conn)
            reader = conn.makefile("rb")
            while True:
                head = b""
                while (line := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
                    head += line
                if not head:
                    return
                self.requests.append(head.decode("latin-1"))
                if not self.answer(conn, self.requests[-1]):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def blob_answer(blobs: dict[str, bytes], *, close_after: bool = False) -> Answer:
    """Serve ``blobs`` (by digest) with Content-Length; ``close_after``: then hang up
    without saying so (an idle keep-alive connection the server drops)."""
    def answer(conn: socket.socket, head: str) -> bool:
        digest = head.split(" ")[1].rsplit("/", 1)[-1]
        data = blobs.get(digest)
        if data is None:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return True
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"X-Note: caf\xe9\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return not close_after

    return answer


def client_for(server: RawServer, **options: object) -> RegistryClient:
    settings: dict[str, object] = {"insecure": True, "credentials": NO_CREDENTIALS,
                                   "timeout": 5.0, "retries": 0}
    settings.update(options)
    return RegistryClient(f"127.0.0.1:{server.port}", **settings)  # type: ignore[arg-type]


class Sink:
    """A ``write`` that keeps what it was given (copied: the views are reused)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.data = bytearray()
        self.calls = 0
        self.fail_at = fail_at
        self.threads: set[str] = set()

    def __call__(self, piece: memoryview) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise OSError(28, "No space left on device")
        assert len(piece) <= PIECE_SIZE
        self.data += piece


# --------------------------------------------------------------------------- the socket path


def test_blobs_come_whole_over_one_kept_alive_connection(
        serve: Callable[..., RawServer]) -> None:
    small, large = os.urandom(1000), os.urandom(3 * PIECE_SIZE + 12345)
    blobs = {str(oci.digest_of(b)): b for b in (small, large)}
    server = serve(blob_answer(blobs))
    with client_for(server) as client:
        for digest, data in blobs.items():
            sink = Sink()
            assert client.fetch_blob(REPO, digest, sink, expected_size=len(data)) == len(data)
            assert bytes(sink.data) == data
            assert sink.threads == {"countersign-blob-writer"}
        with client.stream_blob(REPO, str(oci.digest_of(large)), chunk_size=100_000) as chunks:
            pieces = list(chunks)
        assert b"".join(pieces) == large
        assert {len(p) for p in pieces[:-1]} == {100_000}
    assert server.connections == 1
    assert all(r.startswith("GET /v2/lib/app/blobs/sha256:") for r in server.requests)
    assert all("user-agent: countersign" in r.lower() for r in server.requests)
    assert all("accept-encoding: identity" in r.lower() for r in server.requests)


def test_a_connection_the_server_dropped_is_replaced(serve: Callable[..., RawServer]) -> None:
    data = os.urandom(5000)
    digest = str(oci.digest_of(data))
    server = serve(blob_answer({digest: data}, close_after=True))
    with client_for(server) as client:
        for _ in range(3):
            assert client.get_blob(REPO, digest, expected_size=len(data)) == data
    assert server.connections == 3


def test_a_tampered_blob_never_gets_its_last_piece_written(
        serve: Callable[..., RawServer]) -> None:
    data = os.urandom(3 * PIECE_SIZE + 100)
    digest = str(oci.digest_of(data))
    evil = bytearray(data)
    evil[10] ^= 1
    server = serve(blob_answer({digest: bytes(evil)}))
    sink = Sink()
    with client_for(server) as client, \
            pytest.raises(DigestMismatchError, match=f"blob {digest} .* does not match"):
        client.fetch_blob(REPO, digest, sink, expected_size=len(data))
    assert len(sink.data) == 3 * PIECE_SIZE  # the last 100 bytes were withheld


def test_a_failing_write_stops_the_download(serve: Callable[..., RawServer]) -> None:
    data = os.urandom(40 * PIECE_SIZE)
    digest = str(oci.digest_of(data))
    server = serve(blob_answer({digest: data}))
    sink = Sink(fail_at=2)
    with client_for(server) as client:
        with pytest.raises(OSError, match="No space left"):
            client.fetch_blob(REPO, digest, sink, expected_size=len(data))
        assert sink.calls == 2
        assert client.get_blob(REPO, digest, expected_size=len(data)) == data
    # the first connection was not read to its end, so it was not reused
    assert server.connections == 2


def test_a_truncated_body_is_cut_short(serve: Callable[..., RawServer]) -> None:
    data = os.urandom(100_000)
    digest = str(oci.digest_of(data))

    def answer(conn: socket.socket, _head: str) -> bool:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                     + data[:-10])
        return False

    server = serve(answer)
    with client_for(server) as client, \
            pytest.raises(RegistryUnavailableError, match=r"cut short after 99990 bytes: .*"
                                         r"closed 10 bytes before the end"):
        client.fetch_blob(REPO, digest, Sink(), expected_size=len(data))


def test_an_endless_chunked_body_is_refused_just_past_the_size(
        serve: Callable[..., RawServer]) -> None:
    data = os.urandom(10_000)
    digest = str(oci.digest_of(data))
    sent = [0]

    def answer(conn: socket.socket, _head: str) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 4096 + b"x" * 4096 + b"\r\n"
        while sent[0] < 64 << 20:
            conn.sendall(chunk)
            sent[0] += 4096
        return False

    server = serve(answer)
    with client_for(server) as client:
        with pytest.raises(DigestMismatchError, match="longer than the 10000 bytes expected"):
            client.fetch_blob(REPO, digest, Sink(), expected_size=len(data))
        with pytest.raises(RegistryLimitError, match="longer than the 5000 bytes allowed"):
            client.fetch_blob(REPO, digest, Sink(), max_size=5000)
    assert sent[0] < 64 << 20


def test_a_stalled_body_times_out(serve: Callable[..., RawServer]) -> None:
    release = threading.Event()

    def answer(conn: socket.socket, _head: str) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        release.wait(10)
        return False

    server = serve(answer)
    digest = str(oci.digest_of(b"x" * 1000))
    try:
        with client_for(server, timeout=0.3) as client, \
                pytest.raises(RegistryUnavailableError, match=r"cut short after .*timed out"):
            client.fetch_blob(REPO, digest, Sink(), expected_size=1000)
    finally:
        release.set()


def test_a_trickling_error_body_is_given_up_at_the_deadline(
        serve: Callable[..., RawServer]) -> None:
    """An error body sent a few bytes at a time, each well within ``timeout``, is read
    one receive at a time, so the client's deadline ends it (not the whole body)."""
    release = threading.Event()

    def answer(conn: socket.socket, _head: str) -> bool:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 60000\r\n\r\n")
        for _ in range(400):  # 20 s at most
            if release.wait(0.05):
                break
            conn.sendall(b"x" * 100)
        return False

    server = serve(answer)
    digest = str(oci.digest_of(b"x"))
    began = time.monotonic()
    try:
        with client_for(server, timeout=2.0, deadline=0.5) as client, \
                pytest.raises(RegistryError, match=f"blob {digest} is unknown"):
            client.fetch_blob(REPO, digest, Sink())
        assert time.monotonic() - began < 5
    finally:
        release.set()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 2000 Nope\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
])
def test_malformed_answers_are_registry_errors(serve: Callable[..., RawServer],
                                               answer: bytes) -> None:
    def reply(conn: socket.socket, _head: str) -> bool:
        conn.sendall(answer)
        return False

    server = serve(reply)
    digest = str(oci.digest_of(b"x"))
    with client_for(server) as client, pytest.raises(RegistryUnavailableError):
        client.fetch_blob(REPO, digest, Sink(), expected_size=1)


def test_nothing_listening_is_unavailable() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with RegistryClient(f"127.0.0.1:{port}", insecure=True, credentials=NO_CREDENTIALS,
                        retries=0) as client, \
            pytest.raises(RegistryUnavailableError, match="cannot connect"):
        client.fetch_blob(REPO, str(oci.digest_of(b"x")), Sink())


def test_redirects_are_followed_and_errors_stay_typed(serve: Callable[..., RawServer]) -> None:
    data = os.urandom(70_000)
    digest = str(oci.digest_of(data))
    storage = serve(blob_answer({digest: data}))

    def redirect(conn: socket.socket, head: str) -> bool:
        target = head.split(" ")[1]
        if target.endswith(digest):
            location = f"http://127.0.0.1:{storage.port}/storage/{digest}"
            conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
        else:
            body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"no such blob"}]}'
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return True

    front = serve(redirect)
    with client_for(front) as client:
        sink = Sink()
        client.fetch_blob(REPO, digest, sink, expected_size=len(data))
        assert bytes(sink.data) == data
        missing = str(oci.digest_of(b"missing"))
        with pytest.raises(RegistryError, match=f"blob {missing} is unknown") as caught:
            client.fetch_blob(REPO, missing, Sink())
        assert caught.value.code == "BLOB_UNKNOWN"
    assert front.connections == 1  # the empty redirect answer left it reusable
    assert storage.requests[0].startswith(f"GET /storage/{digest} ")
    assert "authorization" not in storage.requests[0].lower()


def test_a_redirect_to_a_host_name_that_cannot_be_encoded_is_refused(
        serve: Callable[..., RawServer]) -> None:
    """A label over 63 characters makes the resolver's IDNA encoding fail (UnicodeError,
    a ValueError): the client refuses to follow it (GET through BlobTransport, HEAD
    through httpx), and BlobTransport itself makes it a connect error, not a traceback."""
    host = "a" * 64 + ".example"

    def redirect(conn: socket.socket, _head: str) -> bool:
        conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://{host}/x\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        return True

    server = serve(redirect)
    digest = str(oci.digest_of(b"x"))
    with client_for(server) as client:
        with pytest.raises(RegistryError, match=f"invalid URL https://{host}/x"):
            client.fetch_blob(REPO, digest, Sink())
        with pytest.raises(RegistryError, match=f"invalid URL https://{host}/x"):
            client.blob_size(REPO, digest)

    import httpx

    transport = BlobTransport(ssl.create_default_context, timeout=1.0)
    with pytest.raises(httpx.ConnectError, match="idna"):
        transport.handle_request(httpx.Request("GET", f"http://{host}/x"))


def test_a_plain_http_client_loads_no_tls_until_it_needs_it(
        serve: Callable[..., RawServer], tmp_path: Path) -> None:
    data = os.urandom(1000)
    digest = str(oci.digest_of(data))
    server = serve(blob_answer({digest: data}))
    missing_ca = tmp_path / "no-such-ca.pem"
    # the CA file is only read for HTTPS, which a plain loopback registry never uses
    with client_for(server, ca_file=missing_ca) as client:
        assert client.get_blob(REPO, digest) == data

    def to_https(conn: socket.socket, _head: str) -> bool:
        conn.sendall(f"HTTP/1.1 307 Moved\r\nLocation: https://127.0.0.1:{server.port}/x\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        return True

    redirecting = serve(to_https)
    with client_for(redirecting, ca_file=missing_ca) as client, \
            pytest.raises(RegistryError, match="cannot read the CA file"):
        client.fetch_blob(REPO, digest, Sink())
    with pytest.raises(RegistryError, match="cannot read the CA file"):
        RegistryClient(f"127.0.0.1:{server.port}", ca_file=missing_ca)


def test_blobs_over_tls_verify_the_certificate(serve: Callable[..., RawServer],
                                              tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    data = os.urandom(PIECE_SIZE + 1)
    digest = str(oci.digest_of(data))
    server = serve(blob_answer({digest: data}), tls=context)
    with RegistryClient(f"localhost:{server.port}", ca_file=tls.ca_cert, retries=0,
                        credentials=NO_CREDENTIALS) as client:
        sink = Sink()
        client.fetch_blob(REPO, digest, sink, expected_size=len(data))
        assert bytes(sink.data) == data
    other = make_tls_material(tmp_path / "other")
    with RegistryClient(f"localhost:{server.port}", ca_file=other.ca_cert, retries=0,
                        credentials=NO_CREDENTIALS) as client, \
            pytest.raises(RegistryUnavailableError, match="not trusted"):
        client.fetch_blob(REPO, digest, Sink())


def test_both_transports_share_one_tls_context(serve: Callable[..., RawServer],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from countersign.registry import client as client_module

    built: list[ssl.SSLContext] = []

    def counting(ca_file: object) -> ssl.SSLContext:
        built.append(real(ca_file))
        return built[-1]

    real = client_module.ssl_context
    monkeypatch.setattr(client_module, "ssl_context", counting)
    tls = make_tls_material(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    data = os.urandom(1000)
    digest = str(oci.digest_of(data))
    server = serve(blob_answer({digest: data}), tls=context)
    with RegistryClient(f"localhost:{server.port}", ca_file=tls.ca_cert, retries=0,
                        credentials=NO_CREDENTIALS) as client:
        assert client.get_blob(REPO, digest) == data  # BlobTransport
        assert client.blob_size(REPO, str(oci.digest_of(b"other"))) is None  # httpx
    assert len(built) == 1


def test_the_transport_only_gets_and_heads() -> None:
    import httpx

    transport = BlobTransport(ssl.create_default_context, timeout=1.0)
    with pytest.raises(ValueError, match="GET and HEAD only"):
        transport.handle_request(httpx.Request("PUT", "http://127.0.0.1:1/x", content=b"x"))
    with pytest.raises(ValueError, match="timeout"):
        BlobTransport(ssl.create_default_context, timeout=0)


# --------------------------------------------------------------------------- in memory


def test_fetch_blob_on_a_test_transport(memory_registry: MemoryRegistry) -> None:
    registry = memory_registry
    data = os.urandom(2 * PIECE_SIZE + 7)
    digest = registry.add_blob(REPO, data)
    client = registry.client()
    sink = Sink()
    assert client.fetch_blob(REPO, digest, sink, expected_size=len(data)) == len(data)
    assert bytes(sink.data) == data
    registry.tamper_blob(digest, os.urandom(len(data)))
    sink = Sink()
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        client.fetch_blob(REPO, digest, sink, expected_size=len(data))
    assert len(sink.data) == 2 * PIECE_SIZE
    empty = registry.add_blob(REPO, b"")
    sink = Sink()
    assert client.fetch_blob(REPO, empty, sink, expected_size=0) == 0
    assert sink.calls == 0


# --------------------------------------------------------------------------- durability


class FsyncSpy:
    """Records the path of every file or directory fsynced, then fsyncs it."""

    def __init__(self, fail: bool = False) -> None:
        self.paths: list[str] = []
        self.fail = fail
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        if self.fail:
            raise OSError(5, "Input/output error")
        self._real(fd)


def _write_layout(dest: Path, blobs: list[bytes], *, durable: bool = True) -> None:
    with LayoutWriter(dest, durable=durable) as writer:
        for data in blobs:
            with writer.blob(str(oci.digest_of(data)), len(data)) as handle:
                handle.write(memoryview(data))
        top = blobs[0]
        writer.commit(LayoutDescriptor(oci.OCI_MANIFEST, str(oci.digest_of(top)), len(top),
                                       {}), "v1")


def test_a_durable_commit_fsyncs_blobs_then_directories_then_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy()
    monkeypatch.setattr("countersign.registry.layout.os.fsync", spy)
    blobs = [b'{"manifest":1}', os.urandom(300_000), os.urandom(10)]
    dest = tmp_path / "out"
    _write_layout(dest, blobs)
    hexes = [hashlib.sha256(b).hexdigest() for b in blobs]
    names = [Path(p).name for p in spy.paths]
    assert names[:3] == hexes  # every staged blob, before anything else
    assert str(dest / "blobs" / "sha256") in spy.paths
    assert names.index("index.json") > names.index("sha256")  # the index after the blobs
    assert spy.paths[-1] == str(dest)  # and the rename of the index
    assert OCILayout(dest).resolve("v1").digest == str(oci.digest_of(blobs[0]))


def test_no_fsync_when_not_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy()
    monkeypatch.setattr("countersign.registry.layout.os.fsync", spy)
    _write_layout(tmp_path / "out", [b"{}", b"layer"], durable=False)
    assert spy.paths == []
    assert (tmp_path / "out" / "index.json").exists()


def test_a_failed_fsync_leaves_the_destination_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("countersign.registry.layout.os.fsync", FsyncSpy(fail=True))
    dest = tmp_path / "out"
    with pytest.raises(LayoutError, match=r"cannot write .* to disk: Input/output error"):
        _write_layout(dest, [b"{}", b"layer"])
    assert not (dest / "index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_large_durable_blob_is_flushed_while_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr("countersign.registry.layout.os.fdatasync", fdatasync)
    monkeypatch.setattr("countersign.registry.layout.SYNC_EVERY", 1 << 20)
    data = os.urandom(6 << 20)
    digest = str(oci.digest_of(data))
    open_before = len(os.listdir("/proc/self/fd"))
    with LayoutWriter(tmp_path / "out") as writer:
        with writer.blob(digest, len(data)) as handle:
            for start in range(0, len(data), PIECE_SIZE):
                handle.write(memoryview(data)[start:start + PIECE_SIZE])
        with pytest.raises(LayoutError, match="did not verify"), \
                writer.blob(str(oci.digest_of(b"other")), 5) as handle:
            for start in range(0, len(data), PIECE_SIZE):  # the wrong bytes, flushed too
                handle.write(memoryview(data)[start:start + PIECE_SIZE])
        writer.commit(LayoutDescriptor(oci.OCI_MANIFEST, digest, len(data), {}), None)
    assert flushed  # some flushes came while the file was still growing
    assert min(flushed) < len(data)
    assert (tmp_path / "out" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
    assert not (tmp_path / "out" / "blobs" / "sha256" / oci.digest_of(b"other").hex).exists()
    assert len(os.listdir("/proc/self/fd")) == open_before  # every staged file closed
