"""HTTPSFetcher against real local servers: limits, TLS, the token flow, credentials.

Every server here is real: ``http.server`` in a thread on 127.0.0.1 (with TLS
from certificates made with ``cryptography``), and for the token flow
countersign's own :class:`TrustServer` behind uvicorn with token auth, plus a
token service minting tokens with ``tokens.TokenIssuer``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import tokens
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.client import http as client_http
from countersign.client.http import (
    BearerChallenge,
    Credentials,
    HTTPSFetcher,
    credentials_for,
    parse_challenge,
)
from countersign.errors import (
    AuthenticationError,
    CountersignError,
    DownloadError,
    RemoteError,
    ServerUnavailableError,
)
from countersign.server.app import ServerConfig, TrustServer
from countersign.server.auth import Access, challenge_header
from countersign.server.signer import DatabaseKeyService
from countersign.server.storage import Storage

GUN = "example.com/app"
USER, PASSWORD = "alice", "s3cret-pass"

# --------------------------------------------------------------------------- certificates


@dataclass
class PKI:
    ca: Path
    cert: Path
    key: Path
    other_cert: Path  # issued by the same CA for another host name only
    other_key: Path
    other_ca: Path  # an unrelated CA

    def server_context(self, *, other: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if other:
            context.load_cert_chain(self.other_cert, self.other_key)
        else:
            context.load_cert_chain(self.cert, self.key)
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
          names: list[x509.GeneralName]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("countersign test CA")
    key, cert = _leaf(ca_key, ca_cert, [x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    other_key, other_cert = _leaf(ca_key, ca_cert, [x509.DNSName("other.example")])
    _, unrelated = _ca("some other CA")
    files = {
        "ca.pem": _pem(ca_cert), "cert.pem": _pem(cert), "key.pem": _key_pem(key),
        "other.pem": _pem(other_cert), "other.key": _key_pem(other_key),
        "other-ca.pem": _pem(unrelated),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return PKI(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "other.pem",
               root / "other.key", root / "other-ca.pem")


# --------------------------------------------------------------------------- scripted servers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    peer: tuple[str, int]
    body: bytes = b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.scripted.dispatch(self)

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_DELETE = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    scripted: Scripted


Route = Callable[[_Handler], None]


@dataclass
class Scripted:
    """An HTTP(S) server on 127.0.0.1 answering each path with a script."""

    routes: dict[str, Route]
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def __post_init__(self) -> None:
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.scripted = self
        if self.tls is not None:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        self.seen.append(Seen(handler.command, handler.path,
                              {k.lower(): v for k, v in handler.headers.items()},
                              handler.client_address, body))
        route = self.routes.get(urlsplit(handler.path).path)
        try:
            if route is None:
                reply(handler, 404, b"not here")
            else:
                route(handler)
        finally:
            self.finished.set()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(handler: _Handler, status: int, body: bytes = b"",
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    started: list[Scripted] = []

    def start(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Scripted:
        server = Scripted(routes, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _endless(chunked: bool) -> Route:
    def route(handler: _Handler) -> None:
        server = handler.server.scripted
        handler.send_response(200)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Connection", "close")
        handler.end_headers()
        block = b"x" * 16384
        frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
        deadline = time.monotonic() + 30
        try:
            while not server.stop.is_set() and time.monotonic() < deadline:
                handler.wfile.write(frame)
                server.sent += len(block)
        except OSError:
            pass
        handler.close_connection = True

    return route


def _trickle(handler: _Handler) -> None:
    server = handler.server.scripted
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    try:
        while not server.stop.wait(0.2):
            handler.wfile.write(b"x")
            handler.wfile.flush()
    except OSError:
        pass
    handler.close_connection = True


def _stall_body(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"x" * 10)
    handler.wfile.flush()
    handler.server.scripted.stop.wait(30)
    handler.close_connection = True


def _stall_headers(handler: _Handler) -> None:
    handler.server.scripted.stop.wait(30)
    handler.close_connection = True


def _trickle_headers(handler: _Handler) -> None:
    server = handler.server.scripted
    text = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000 + b"\r\nContent-Length: 0\r\n\r\n"
    try:
        for byte in text:
            if server.stop.wait(0.1):
                break
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
    except OSError:
        pass
    handler.close_connection = True


# --------------------------------------------------------------------------- plain GETs


def test_get_over_tls(serve: Callable[..., Scripted], pki: PKI) -> None:
    server = serve({"/v2/": lambda h: reply(h, 200, b"{}", {"X-Mixed-Case": "Yes"})},
                   tls=pki.server_context())
    with HTTPSFetcher(server.url, ca_file=pki.ca, user_agent="test-agent/1") as fetcher:
        first = fetcher.get("/v2/", max_length=2)
        second = fetcher.get("/v2/", max_length=2)
    assert first.status == 200 and first.body == b"{}"
    assert first.headers["x-mixed-case"] == "Yes"
    assert all(name == name.lower() for name in first.headers)
    assert second.body == b"{}"
    assert server.seen[0].headers["user-agent"] == "test-agent/1"
    assert server.seen[0].headers["accept-encoding"] == "identity"
    assert "authorization" not in server.seen[0].headers
    assert server.seen[0].peer == server.seen[1].peer, "the connection is kept alive"


def test_any_status_is_the_callers(serve: Callable[..., Scripted]) -> None:
    server = serve({
        "/missing": lambda h: reply(h, 404, b'{"errors":[]}'),
        "/broken": lambda h: reply(h, 500, b"oops"),
        "/basic": lambda h: reply(h, 401, b"no", {"WWW-Authenticate": 'Basic realm="x"'}),
        "/redirect": lambda h: reply(h, 302, b"", {"Location": "/elsewhere"}),
    })
    with HTTPSFetcher(server.url) as fetcher:
        assert fetcher.get("/missing", max_length=100).status == 404
        assert fetcher.get("/broken", max_length=100).body == b"oops"
        basic = fetcher.get("/basic", max_length=100)
        assert basic.status == 401 and basic.headers["www-authenticate"] == 'Basic realm="x"'
        assert fetcher.get("/redirect", max_length=100).status == 302
    assert [s.path for s in server.seen] == ["/missing", "/broken", "/basic", "/redirect"]


def test_cookies_are_not_kept_and_head_has_no_body(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": lambda h: reply(h, 200, b"body", {"Set-Cookie": "session=1; Path=/"})})
    with HTTPSFetcher(server.url) as fetcher:
        fetcher.get("/x", max_length=10)
        head = fetcher.request("HEAD", "/x", max_length=0)
        fetcher.get("/x", max_length=10)
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "4"
    assert all("cookie" not in seen.headers for seen in server.seen)


def test_request_sends_method_body_and_headers(serve: Callable[..., Scripted]) -> None:
    server = serve({"/v2/x/_trust/tuf/": lambda h: reply(h, 200)})
    with HTTPSFetcher(server.url) as fetcher:
        response = fetcher.request("POST", "/v2/x/_trust/tuf/", body=b"multipart bytes",
                                   headers={"Content-Type": "multipart/form-data; boundary=b"})
        deleted = fetcher.request("DELETE", "/v2/x/_trust/tuf/")
    assert response.status == 200 and deleted.status == 200
    posted = server.seen[0]
    assert posted.method == "POST" and posted.body == b"multipart bytes"
    assert posted.headers["content-type"] == "multipart/form-data; boundary=b"
    assert server.seen[1].method == "DELETE"


def test_paths_are_percent_encoded_and_queries_kept(serve: Callable[..., Scripted]) -> None:
    gun = "registry:5000/odd name/100%/é"
    server = serve({})
    with HTTPSFetcher(server.url + "/prefix/") as fetcher:
        assert fetcher.base_url == server.url + "/prefix"
        fetcher.get(f"/v2/{gun}/_trust/tuf/root.json", max_length=100)
        fetcher.get("/v2/_trust/changefeed?change_id=-1&records=10", max_length=100)
    path = urlsplit(server.seen[0].path).path
    assert unquote(path) == f"/prefix/v2/{gun}/_trust/tuf/root.json"
    assert " " not in path
    assert server.seen[1].path == "/prefix/v2/_trust/changefeed?change_id=-1&records=10"


@pytest.mark.parametrize("url", [
    "http://example.com", "http://10.0.0.1:4443", "ftp://127.0.0.1", "notary-server:4443",
    "https://", "https://user:pw@notary.example.com", "https://host:99999",
    "https://host/?q=1",
])
def test_bad_server_urls(url: str) -> None:
    with pytest.raises(RemoteError) as caught:
        HTTPSFetcher(url)
    assert "pw" not in caught.value.render()


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1",
                                 "https://notary.example.com:4443"])
def test_good_server_urls(url: str) -> None:
    HTTPSFetcher(url).close()


def test_ca_file_problems(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="cannot read the CA file"):
        HTTPSFetcher("https://localhost", ca_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(RemoteError, match="no usable PEM") as caught:
        HTTPSFetcher("https://localhost", ca_file=tmp_path / "junk.pem")
    assert caught.value.advice and "--tls-ca" in caught.value.advice


# --------------------------------------------------------------------------- length limits


def test_content_length_over_limit_is_refused_before_reading(
        serve: Callable[..., Scripted]) -> None:
    def huge(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.flush()
        handler.server.scripted.stop.wait(30)

    server = serve({"/timestamp.json": huge})
    start = time.monotonic()
    with HTTPSFetcher(server.url) as fetcher, pytest.raises(DownloadError) as caught:
        fetcher.get("/timestamp.json", max_length=1024 * 1024)
    assert time.monotonic() - start < 2
    assert "Content-Length" in caught.value.message
    assert "/timestamp.json" in caught.value.message
    assert "1048576" in caught.value.message


def test_exact_limit_is_accepted(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": lambda h: reply(h, 200, b"a" * 100)})
    with HTTPSFetcher(server.url) as fetcher:
        assert fetcher.get("/x", max_length=100).body == b"a" * 100
        with pytest.raises(DownloadError):
            fetcher.get("/x", max_length=99)


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
@pytest.mark.parametrize("limit", [10, 100_000])
def test_endless_data_stops_after_the_limit(
        serve: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch,
        chunked: bool, limit: int) -> None:
    read_sizes: list[int] = []
    original = client_http._BoundedStream.read

    def counting(self: Any, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = original(self, max_bytes, timeout)
        read_sizes.append(len(data))
        return data

    monkeypatch.setattr(client_http._BoundedStream, "read", counting)
    server = serve({"/snapshot.json": _endless(chunked)})
    start = time.monotonic()
    with HTTPSFetcher(server.url) as fetcher, pytest.raises(DownloadError) as caught:
        fetcher.get("/snapshot.json", max_length=limit)
    assert time.monotonic() - start < 3
    assert f"more than the {limit} bytes" in caught.value.message
    # Headers and chunk framing come on top of the body; nothing else may.
    framing = 10 * (limit // 16384 + 2) if chunked else 0
    assert sum(read_sizes) <= max(limit + 1, client_http._HEADER_READ) + 200 + framing
    assert server.finished.wait(5), "the client closed the connection"


def test_gzip_body_is_refused(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": lambda h: reply(h, 200, b"\x1f\x8b...", {"Content-Encoding": "gzip"})})
    with HTTPSFetcher(server.url) as fetcher, pytest.raises(DownloadError, match="gzip"):
        fetcher.get("/x", max_length=100)


# --------------------------------------------------------------------------- time limits


def test_slow_retrieval_fails_within_the_deadline(serve: Callable[..., Scripted]) -> None:
    server = serve({"/snapshot.json": _trickle})
    start = time.monotonic()
    with HTTPSFetcher(server.url, deadline=5.0) as fetcher, pytest.raises(DownloadError) as caught:
        fetcher.get("/snapshot.json", max_length=100_000)
    elapsed = time.monotonic() - start
    assert client_http.DEFAULT_GRACE <= elapsed < 5.0
    assert "slow retrieval" in caught.value.message
    assert "/snapshot.json" in caught.value.message


def test_slow_retrieval_with_a_short_grace(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _trickle})
    start = time.monotonic()
    with (HTTPSFetcher(server.url, grace=0.5, min_rate=100, deadline=30) as fetcher,
          pytest.raises(DownloadError, match="slow retrieval")):
        fetcher.get("/x", max_length=100_000)
    assert time.monotonic() - start < 3


def test_stalled_body_fails_at_the_deadline_not_the_timeout(
        serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _stall_body})
    start = time.monotonic()
    with (HTTPSFetcher(server.url, timeout=30, deadline=1.5, min_rate=0) as fetcher,
          pytest.raises(DownloadError, match="deadline")):
        fetcher.get("/x", max_length=1000)
    assert 1.4 < time.monotonic() - start < 5


def test_stalled_body_fails_at_the_rate_cutoff(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _stall_body})
    start = time.monotonic()
    with (HTTPSFetcher(server.url, timeout=30, deadline=30, grace=0.5) as fetcher,
          pytest.raises(DownloadError, match="slow retrieval")):
        fetcher.get("/x", max_length=1000)
    assert time.monotonic() - start < 3


def test_no_answer_is_unavailable_at_the_deadline(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _stall_headers})
    start = time.monotonic()
    with (HTTPSFetcher(server.url, timeout=30, deadline=1.0) as fetcher,
          pytest.raises(ServerUnavailableError, match="deadline")):
        fetcher.get("/x", max_length=1000)
    assert time.monotonic() - start < 5


def test_trickled_headers_are_bounded_by_the_deadline(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _trickle_headers})
    start = time.monotonic()
    with (HTTPSFetcher(server.url, timeout=30, deadline=1.0) as fetcher,
          pytest.raises(ServerUnavailableError, match="deadline")):
        fetcher.get("/x", max_length=1000)
    assert time.monotonic() - start < 5


def test_read_timeout_is_unavailable(serve: Callable[..., Scripted]) -> None:
    server = serve({"/x": _stall_headers})
    with (HTTPSFetcher(server.url, timeout=0.5, deadline=30) as fetcher,
          pytest.raises(ServerUnavailableError, match=r"timed out after 0\.5 s")):
        fetcher.get("/x", max_length=1000)


# --------------------------------------------------------------------------- connection errors


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with HTTPSFetcher(f"https://127.0.0.1:{port}") as fetcher, \
            pytest.raises(ServerUnavailableError) as caught:
        fetcher.get("/v2/", max_length=10)
    assert "cannot connect" in caught.value.message and "/v2/" in caught.value.message
    assert caught.value.advice


@pytest.mark.parametrize("ca", ["system", "other"])
def test_untrusted_certificate_is_unavailable_with_advice(
        serve: Callable[..., Scripted], pki: PKI, ca: str) -> None:
    server = serve({"/v2/": lambda h: reply(h, 200, b"{}")}, tls=pki.server_context())
    ca_file = None if ca == "system" else pki.other_ca
    with HTTPSFetcher(server.url, ca_file=ca_file) as fetcher, \
            pytest.raises(ServerUnavailableError) as caught:
        fetcher.get("/v2/", max_length=10)
    assert "certificate was not trusted" in caught.value.message
    assert caught.value.advice is not None and "--tls-ca" in caught.value.advice
    assert server.seen == []


def test_certificate_for_another_host(serve: Callable[..., Scripted], pki: PKI) -> None:
    server = serve({}, tls=pki.server_context(other=True))
    with HTTPSFetcher(server.url, ca_file=pki.ca) as fetcher, \
            pytest.raises(ServerUnavailableError, match="not trusted") as caught:
        fetcher.get("/v2/", max_length=10)
    assert caught.value.advice and "host name" in caught.value.advice


def test_tls_to_a_plain_server(serve: Callable[..., Scripted]) -> None:
    server = serve({})
    with HTTPSFetcher(server.url.replace("http:", "https:"), deadline=5) as fetcher, \
            pytest.raises(ServerUnavailableError, match="TLS handshake failed"):
        fetcher.get("/v2/", max_length=10)


# --------------------------------------------------------------------------- token flow


@dataclass
class TokenService:
    """A Docker token service on a scripted server, minting with a TokenIssuer."""

    server: Scripted
    issuer: tokens.TokenIssuer
    grant_only: tuple[str, ...] | None = None
    expires_in: int = 300
    hits: list[dict[str, list[str]]] = field(default_factory=list)

    @property
    def realm(self) -> str:
        return self.server.url + "/token"

    def handle(self, handler: _Handler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        self.hits.append(query)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            reply(handler, 401, b'{"details":"bad credentials"}',
                  {"WWW-Authenticate": 'Basic realm="token"'})
            return
        grants: list[tokens.Grant] = []
        for scope in query.get("scope", []):
            rtype, rest = scope.split(":", 1)
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            if self.grant_only is not None:
                wanted = [a for a in wanted if a in self.grant_only]
            grants.append((rtype, name, tuple(wanted)))
        token = self.issuer.mint(grants)
        body = json.dumps({"token": token, "expires_in": self.expires_in}).encode()
        reply(handler, 200, body, {"Content-Type": "application/json"})


@dataclass
class TrustStack:
    url: str
    tokens: TokenService


@pytest.fixture
def trust_stack(tmp_path: Path, pki: PKI,
                serve: Callable[..., Scripted]) -> Iterator[TrustStack]:
    """countersign's TrustServer over TLS behind uvicorn, with token auth."""
    token_server = serve({})
    issuer = tokens.TokenIssuer(realm=token_server.url + "/token")
    service = TokenService(token_server, issuer)
    token_server.routes["/token"] = service.handle
    storage = Storage(f"sqlite:///{tmp_path / 'server.db'}")
    keys = DatabaseKeyService(storage, "test-signer-passphrase")
    app = TrustServer(storage, keys, authorizer=issuer.auth(),
                      config=ServerConfig(cache_ttl=0.0, max_body=1 << 20))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=str(pki.cert),
                            ssl_keyfile=str(pki.key), lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    give_up = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < give_up, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield TrustStack(f"https://127.0.0.1:{port}", service)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        storage.close()


def _fetcher(stack: TrustStack, pki: PKI, credentials: Credentials | None) -> HTTPSFetcher:
    return HTTPSFetcher(stack.url, ca_file=pki.ca, credentials=credentials)


def test_token_flow_end_to_end_and_cached(trust_stack: TrustStack, pki: PKI) -> None:
    service = trust_stack.tokens
    with _fetcher(trust_stack, pki, Credentials(USER, PASSWORD)) as fetcher:
        response = fetcher.get("/v2/", max_length=1024)
        assert response.status == 200 and response.body == b"{}"
        assert len(service.hits) == 1
        assert service.hits[0] == {"service": [tokens.SERVICE], "scope": ["registry:catalog:*"]}
        for _ in range(3):
            assert fetcher.get("/v2/", max_length=1024).status == 200
        assert len(service.hits) == 1, "the token is cached"

        root = f"/v2/{GUN}/_trust/tuf/root.json"
        missing = fetcher.get(root, max_length=1024)
        assert missing.status == 404  # authorized, and not there: the caller's business
        assert b"METADATA_NOT_FOUND" in missing.body
        assert service.hits[1]["scope"] == [f"repository:{GUN}:pull"]
        for _ in range(3):
            assert fetcher.get(root, max_length=1024).status == 404
        assert fetcher.get(f"/v2/{GUN}/_trust/tuf/targets.json", max_length=1024).status == 404
        assert len(service.hits) == 2, "one token per scope"
        assert fetcher.get("/v2/", max_length=1024).status == 200
        assert len(service.hits) == 2


def test_token_flow_with_notary_auth(trust_stack: TrustStack, pki: PKI) -> None:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    credentials = Credentials(environ={"NOTARY_AUTH": encoded}, docker_config=False)
    with _fetcher(trust_stack, pki, credentials) as fetcher:
        assert fetcher.get("/v2/", max_length=1024).status == 200


def test_wrong_credentials_are_an_authentication_error(trust_stack: TrustStack,
                                                       pki: PKI) -> None:
    with _fetcher(trust_stack, pki, Credentials(USER, "wrong-password")) as fetcher, \
            pytest.raises(AuthenticationError) as caught:
        fetcher.get(f"/v2/{GUN}/_trust/tuf/root.json", max_length=1024)
    text = caught.value.render()
    assert "refused the credentials" in text and f"repository:{GUN}:pull" in text
    assert "wrong-password" not in text and PASSWORD not in text
    assert len(trust_stack.tokens.hits) == 1


def test_no_credentials_gets_advice(trust_stack: TrustStack, pki: PKI) -> None:
    with _fetcher(trust_stack, pki, None) as fetcher, \
            pytest.raises(AuthenticationError) as caught:
        fetcher.get("/v2/", max_length=1024)
    assert "anonymous" in caught.value.message
    assert caught.value.advice and "NOTARY_AUTH" in caught.value.advice


def test_insufficient_token_is_an_authentication_error(trust_stack: TrustStack,
                                                       pki: PKI) -> None:
    trust_stack.tokens.grant_only = ("pull",)
    with _fetcher(trust_stack, pki, Credentials(USER, PASSWORD)) as fetcher:
        assert fetcher.get(f"/v2/{GUN}/_trust/tuf/root.json", max_length=1024).status == 404
        with pytest.raises(AuthenticationError) as caught:
            fetcher.get(f"/v2/{GUN}/_trust/tuf/timestamp.key", max_length=1024)
    message = caught.value.message
    assert "refused the token" in message and GUN in message and "push" in message
    assert "insufficient_scope" in message


def test_token_expiry(trust_stack: TrustStack, pki: PKI) -> None:
    trust_stack.tokens.expires_in = 1
    with _fetcher(trust_stack, pki, Credentials(USER, PASSWORD)) as fetcher:
        fetcher.get("/v2/", max_length=1024)
        fetcher.get("/v2/", max_length=1024)
        assert len(trust_stack.tokens.hits) == 1
        time.sleep(1.1)
        assert fetcher.get("/v2/", max_length=1024).status == 200
        assert len(trust_stack.tokens.hits) == 2


def _challenging(realm: str, scope: str = "repository:a:pull repository:b:push",
                 accept: Callable[[str], bool] = lambda auth: auth == "Bearer good") -> Route:
    def route(handler: _Handler) -> None:
        if accept(handler.headers.get("Authorization", "")):
            reply(handler, 200, b"ok")
            return
        challenge = f'Bearer realm="{realm}",service="svc",scope="{scope}"'
        reply(handler, 401, b"unauthorized", {"WWW-Authenticate": challenge})
    return route


def _token_route(body: bytes) -> Route:
    def route(handler: _Handler) -> None:
        reply(handler, 200, body, {"Content-Type": "application/json"})
    return route


def test_scopes_are_repeated_and_realm_query_kept(serve: Callable[..., Scripted]) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth?tenant=7")
    server.routes["/auth"] = _token_route(b'{"access_token":"good","expires_in":60}')
    with HTTPSFetcher(server.url, credentials=Credentials("u", "p")) as fetcher:
        assert fetcher.get("/data", max_length=10).body == b"ok"
    token_request = next(s for s in server.seen if s.path.startswith("/auth"))
    query = parse_qs(urlsplit(token_request.path).query)
    assert query == {"tenant": ["7"], "service": ["svc"],
                     "scope": ["repository:a:pull", "repository:b:push"]}
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert server.seen[-1].headers["authorization"] == "Bearer good"


def test_rejected_token_is_an_authentication_error(serve: Callable[..., Scripted]) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth", accept=lambda _: False)
    server.routes["/auth"] = _token_route(b'{"token":"secret-token-value"}')
    with HTTPSFetcher(server.url) as fetcher, pytest.raises(AuthenticationError) as caught:
        fetcher.get("/data", max_length=10)
    assert "repository:a:pull repository:b:push" in caught.value.message
    assert "secret-token-value" not in caught.value.render()
    assert "secret-token-value" not in repr(fetcher)
    assert [s.path.split("?")[0] for s in server.seen] == ["/data", "/auth", "/data"]


def test_rejected_cached_token_is_replaced_once(serve: Callable[..., Scripted]) -> None:
    issued = iter(["first", "second", "third"])
    server = serve({})
    accepted = {"Bearer first"}
    server.routes["/data"] = _challenging(server.url + "/auth",
                                          accept=lambda auth: auth in accepted)

    def mint(handler: _Handler) -> None:
        reply(handler, 200, json.dumps({"token": next(issued)}).encode())

    server.routes["/auth"] = mint
    with HTTPSFetcher(server.url) as fetcher:
        assert fetcher.get("/data", max_length=10).status == 200
        assert fetcher.get("/data", max_length=10).status == 200
        accepted.clear()
        accepted.add("Bearer second")  # the server revoked "first"
        assert fetcher.get("/data", max_length=10).status == 200
    auths = [s.headers.get("authorization") for s in server.seen if s.path == "/data"]
    assert auths == [None, "Bearer first", "Bearer first", "Bearer first", "Bearer second"]


@pytest.mark.parametrize(("body", "match"), [
    (b"not json", "did not answer with JSON"),
    (b'["token"]', "JSON object"),
    (b'{"token": ""}', "no token"),
    (b'{"token": "a b"}', "cannot be sent"),
    (b'{"token": "ok", "token": "again"}', "JSON"),
    (b'{"token": "ok", "expires_in": "60"}', "expires_in"),
    (b'{"token": "ok", "expires_in": -1}', "expires_in"),
    (b'{"token": "ok", "expires_in": NaN}', "JSON"),
])
def test_bad_token_answers(serve: Callable[..., Scripted], body: bytes, match: str) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth")
    server.routes["/auth"] = _token_route(body)
    with HTTPSFetcher(server.url) as fetcher, pytest.raises(AuthenticationError, match=match):
        fetcher.get("/data", max_length=10)


def test_token_service_errors(serve: Callable[..., Scripted]) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth")
    server.routes["/auth"] = lambda h: reply(h, 503, b"down")
    with HTTPSFetcher(server.url) as fetcher, \
            pytest.raises(ServerUnavailableError, match="answered HTTP 503"):
        fetcher.get("/data", max_length=10)


def test_plain_http_realm_elsewhere_is_refused(serve: Callable[..., Scripted]) -> None:
    server = serve({"/data": _challenging("http://auth.example.com/token")})
    with HTTPSFetcher(server.url, credentials=Credentials("u", "p")) as fetcher, \
            pytest.raises(AuthenticationError, match="not HTTPS"):
        fetcher.get("/data", max_length=10)
    assert len(server.seen) == 1


def test_malformed_bearer_challenge(serve: Callable[..., Scripted]) -> None:
    server = serve({"/data": lambda h: reply(h, 401, b"", {"WWW-Authenticate": "Bearer realm"})})
    with HTTPSFetcher(server.url) as fetcher, \
            pytest.raises(AuthenticationError, match="malformed WWW-Authenticate") as caught:
        fetcher.get("/data", max_length=10)
    assert "/data" in caught.value.message


def test_caller_authorization_is_left_alone(serve: Callable[..., Scripted]) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth", accept=lambda _: False)
    with HTTPSFetcher(server.url) as fetcher:
        response = fetcher.request("GET", "/data", headers={"Authorization": "Bearer mine"})
    assert response.status == 401
    assert len(server.seen) == 1


# --------------------------------------------------------------------------- challenge parser


def test_parse_notary_challenge() -> None:
    header = challenge_header("https://auth.example.com/token", "notary-server",
                              [Access("repository", GUN, "push"),
                               Access("repository", GUN, "pull")], "insufficient_scope")
    assert parse_challenge(header) == BearerChallenge(
        "https://auth.example.com/token", "notary-server", (f"repository:{GUN}:push,pull",),
        "insufficient_scope")


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://a/t"', BearerChallenge("https://a/t")),
    ('  bearer   REALM = "https://a/t" , Service="s"  ,scope=""',
     BearerChallenge("https://a/t", "s")),
    ('BEARER realm="https://a/t",scope="x:y:pull  z:w:push",other="\\"\\\\"',
     BearerChallenge("https://a/t", "", ("x:y:pull", "z:w:push"))),
    ('Bearer realm="https://a/t?x=1",service="a\\"b"', BearerChallenge("https://a/t?x=1", 'a"b')),
])
def test_parse_good_challenges(header: str, expected: BearerChallenge) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize("header", [
    "", "Bearer", "Bearer ", 'Basic realm="https://a/t"', 'Bearerrealm="https://a/t"',
    'Bearer realm="https://a/t",', 'Bearer realm="https://a/t",,service="s"',
    'Bearer realm=https://a/t', 'Bearer realm="https://a/t', 'Bearer realm="https://a/t\\',
    'Bearer realm="https://a/t",realm="https://b/t"', 'Bearer service="s"',
    'Bearer realm=""', 'Bearer realm="/relative"', 'Bearer realm="ftp://a/t"',
    'Bearer realm="https://a/t" service="s"', 'Bearer realm="https://a b/t"',
    'Bearer realm="https://a/t\nx"', 'Bearer realm="https://[::1/t"',
    'Bearer realm="https://a/t", Basic realm="x"',
    'Bearer realm="https://a/t",scope="' + "x" * client_http.MAX_CHALLENGE_LENGTH + '"',
])
def test_parse_bad_challenges(header: str) -> None:
    with pytest.raises(AuthenticationError):
        parse_challenge(header)


_CHALLENGE_ALPHABET = st.sampled_from(
    list('Bearer realm="https://a/t",service=scope\\ \t:,=x"é\x00')
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=200),
    st.text(alphabet=_CHALLENGE_ALPHABET, max_size=120),
    st.builds(lambda tail: 'Bearer realm="https://a/t"' + tail, st.text(max_size=80)),
))
def test_challenge_parser_never_raises_anything_else(header: str) -> None:
    try:
        parsed = parse_challenge(header)
    except CountersignError:
        return
    assert isinstance(parsed, BearerChallenge)
    assert parsed.realm.startswith(("http://", "https://"))
    assert all(scope and " " not in scope for scope in parsed.scopes)


_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                     min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), service=_PRINTABLE,
       gun=_PRINTABLE, actions=st.lists(st.sampled_from(["pull", "push", "*"]), min_size=1,
                                        max_size=3, unique=True))
def test_challenge_parser_reads_what_the_server_writes(
        host: str, service: str, gun: str, actions: list[str]) -> None:
    realm = f"https://{host}/token"
    header = challenge_header(realm, service, [Access("repository", gun, a) for a in actions])
    assert parse_challenge(header) == BearerChallenge(
        realm, service, (f"repository:{gun}:{','.join(actions)}",))


# --------------------------------------------------------------------------- credentials


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_explicit_credentials_and_repr() -> None:
    creds = Credentials("bob", "hunter2")
    assert creds.for_host("anything:1") == ("bob", "hunter2")
    assert "hunter2" not in repr(creds) and "bob" not in repr(creds)
    with pytest.raises(AuthenticationError):
        Credentials("bob")
    with pytest.raises(AuthenticationError):
        Credentials(None, "hunter2")


def test_notary_auth() -> None:
    env = {"NOTARY_AUTH": _b64("bob:pa:ss")}
    assert credentials_for("notary.example.com", environ=env) == ("bob", "pa:ss")
    for bad in ("not base64!", _b64("no-colon"), _b64(":nouser")):
        with pytest.raises(AuthenticationError, match="NOTARY_AUTH") as caught:
            credentials_for("h", environ={"NOTARY_AUTH": bad})
        assert bad not in caught.value.render()


def _docker_env(tmp_path: Path, config: Any, *, raw: bytes | None = None) -> dict[str, str]:
    directory = tmp_path / "docker"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_bytes(raw if raw is not None else json.dumps(config).encode())
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = os.pathsep.join([str(bindir), os.environ.get("PATH", "/usr/bin:/bin")])
    return {"DOCKER_CONFIG": str(directory), "PATH": path, "HOME": str(tmp_path)}


def test_docker_config_auths(tmp_path: Path) -> None:
    env = _docker_env(tmp_path, {"auths": {
        "https://notary.example.com:4443/v1/": {"auth": _b64("dock:er")},
        "other.example.com": {"username": "plain", "password": "pw"},
        "empty.example.com": {},
    }})
    assert credentials_for("notary.example.com:4443", environ=env) == ("dock", "er")
    assert credentials_for("NOTARY.example.com:4443", environ=env) == ("dock", "er")
    assert credentials_for("notary.example.com", environ=env) is None
    assert credentials_for("other.example.com", environ=env) == ("plain", "pw")
    assert credentials_for("empty.example.com", environ=env) is None


def test_docker_config_in_home(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"h.example": {"auth": _b64("u:p")}}}))
    assert credentials_for("h.example", environ={"HOME": str(tmp_path)}) == ("u", "p")
    assert credentials_for("h.example", environ={"HOME": str(tmp_path / "none")}) is None


def test_notary_auth_comes_before_docker_config(tmp_path: Path) -> None:
    env = _docker_env(tmp_path, {"auths": {"h": {"auth": _b64("dock:er")}}})
    env["NOTARY_AUTH"] = _b64("notary:pw")
    assert credentials_for("h", environ=env) == ("notary", "pw")
    assert Credentials("x", "y", environ=env).for_host("h") == ("x", "y")
    assert Credentials(environ=env, notary_auth=False).for_host("h") == ("dock", "er")


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"auths": {}, "auths": {}}'])
def test_bad_docker_config(tmp_path: Path, raw: bytes) -> None:
    env = _docker_env(tmp_path, None, raw=raw)
    with pytest.raises(AuthenticationError, match="docker config"):
        credentials_for("h", environ=env)


def _helper(tmp_path: Path, name: str, script: str) -> Path:
    path = tmp_path / "bin" / f"docker-credential-{name}"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


_TEST_HELPER = """\
log="$(dirname "$0")/calls"
read -r server
echo "$1 $server" >> "$log"
case "$server" in
  notary.example.com:4443)
    printf '{"ServerURL":"%s","Username":"helperuser","Secret":"helper-secret"}' "$server" ;;
  token.example.com)
    printf '{"ServerURL":"%s","Username":"<token>","Secret":"identity"}' "$server" ;;
  broken.example.com)
    echo "something bad" >&2; exit 3 ;;
  garbage.example.com)
    echo "this is not json" ;;
  *)
    echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


def test_cred_helpers(tmp_path: Path) -> None:
    env = _docker_env(tmp_path, {
        "auths": {"fallback.example.com": {"auth": _b64("file:user")}},
        "credHelpers": dict.fromkeys((
            "notary.example.com:4443", "fallback.example.com", "token.example.com",
            "broken.example.com", "garbage.example.com", "missing.example.com"), "test"),
    })
    _helper(tmp_path, "test", _TEST_HELPER)
    creds = Credentials(environ=env)
    assert creds.for_host("notary.example.com:4443") == ("helperuser", "helper-secret")
    assert creds.for_host("notary.example.com:4443") == ("helperuser", "helper-secret")
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls == ["get notary.example.com:4443"], "run once, with 'get' and the server"
    assert creds.for_host("fallback.example.com") == ("file", "user")
    assert creds.for_host("missing.example.com") is None
    assert creds.for_host("token.example.com") is None
    assert "helper-secret" not in repr(creds)
    with pytest.raises(AuthenticationError, match="exit status 3") as caught:
        creds.for_host("broken.example.com")
    assert "something bad" not in caught.value.render()
    with pytest.raises(AuthenticationError, match="JSON object"):
        creds.for_host("garbage.example.com")


def test_creds_store_and_missing_helper(tmp_path: Path) -> None:
    env = _docker_env(tmp_path, {"credsStore": "test",
                                 "credHelpers": {"elsewhere.example.com": "absent"}})
    _helper(tmp_path, "test", _TEST_HELPER)
    assert credentials_for("notary.example.com:4443", environ=env) == ("helperuser",
                                                                        "helper-secret")
    assert credentials_for("unknown.example.com", environ=env) is None
    with pytest.raises(AuthenticationError, match="docker-credential-absent is not on PATH"):
        credentials_for("elsewhere.example.com", environ=env)


def test_helper_timeout_and_bad_name(tmp_path: Path) -> None:
    env = _docker_env(tmp_path, {"credHelpers": {"slow.example.com": "slow",
                                                 "bad.example.com": "../evil"}})
    _helper(tmp_path, "slow", "sleep 10\n")
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match="did not answer"):
        Credentials(environ=env, helper_timeout=0.5).for_host("slow.example.com")
    assert time.monotonic() - start < 5
    with pytest.raises(AuthenticationError, match="invalid docker credential helper"):
        credentials_for("bad.example.com", environ=env)


def test_docker_credentials_in_the_token_flow(serve: Callable[..., Scripted],
                                              tmp_path: Path) -> None:
    server = serve({})
    server.routes["/data"] = _challenging(server.url + "/auth")
    server.routes["/auth"] = _token_route(b'{"token":"good"}')
    host = f"127.0.0.1:{server.port}"
    env = _docker_env(tmp_path, {"auths": {host: {"auth": _b64("dock:er")}}})
    with HTTPSFetcher(server.url, credentials=Credentials(environ=env)) as fetcher:
        assert fetcher.get("/data", max_length=10).status == 200
    token_request = next(s for s in server.seen if s.path.startswith("/auth"))
    assert token_request.headers["authorization"] == "Basic " + _b64("dock:er")


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "NOTARY_AUTH", _b64("env:user"))
    assert credentials_for("h") == ("env", "user")
