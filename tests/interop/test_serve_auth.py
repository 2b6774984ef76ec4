"""``countersign serve --auth token``: Docker registry token authentication over HTTPS.

A token without ``push`` cannot write, a token for one GUN cannot read
another, deletion and key rotation need ``*``, routes without a GUN need
``registry:catalog:*``; every refusal is a 401 with the Bearer challenge
the notary and docker clients follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _countersign import CountersignServer
from _tufhttp import WithToken, create_repository, fetch_repository, multipart, request
from tokens import ISSUER, REALM, SERVICE, TokenIssuer, access, catalog

from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop

GUN_A = "localhost:5000/team/a"
GUN_B = "localhost:5000/team/b"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture(scope="module")
def authed_server(tmp_path_factory: pytest.TempPathFactory,
                  issuer: TokenIssuer) -> Iterator[CountersignServer]:
    work = tmp_path_factory.mktemp("auth-server")
    bundle = issuer.write_bundle(work / "token-roots.pem")
    server = CountersignServer(work, extra_args=[
        "--auth", "token", "--token-realm", REALM, "--token-service", SERVICE,
        "--token-issuer", ISSUER, "--token-rootcerts", str(bundle)])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _status(server: object, method: str, path: str, token: str | None = None,
            body: bytes = b"", headers: dict[str, str] | None = None
            ) -> tuple[int, str, bytes]:
    target = WithToken(server, token) if token else server  # type: ignore[arg-type]
    status, response_headers, answer = request(target, method, path, body, headers)  # type: ignore[arg-type]
    return status, response_headers.get("Www-Authenticate", ""), answer


def test_tokens_decide_who_reads_and_writes(authed_server: CountersignServer,
                                            issuer: TokenIssuer) -> None:
    admin = issuer.mint([access(GUN_A, "*"), access(GUN_B, "*")])
    create_repository(WithToken(authed_server, admin), GUN_A, b"a",  # type: ignore[arg-type]
                      client_snapshot=False)
    files = fetch_repository(WithToken(authed_server, admin), GUN_A)  # type: ignore[arg-type]
    verify_repository(files, GUN_A)

    tuf = f"/v2/{GUN_A}/_trust/tuf"
    # no token: a challenge naming the scope
    status, challenge, body = _status(authed_server, "GET", f"{tuf}/timestamp.json")
    assert status == 401
    assert challenge == (f'Bearer realm="{REALM}",service="{SERVICE}",'
                         f'scope="repository:{GUN_A}:pull"')
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"

    reader = issuer.mint([access(GUN_A, "pull")])
    assert _status(authed_server, "GET", f"{tuf}/timestamp.json", reader)[0] == 200
    # a token for A does not read B
    status, challenge, _ = _status(authed_server, "GET", f"/v2/{GUN_B}/_trust/tuf/root.json",
                                   reader)
    assert status == 401 and 'error="insufficient_scope"' in challenge
    # pull without push cannot write, nor rotate keys, nor delete
    body, headers = multipart({"targets": files["targets"]})
    status, challenge, _ = _status(authed_server, "POST", f"{tuf}/", reader, body, headers)
    assert status == 401 and "push" in challenge
    assert _status(authed_server, "POST", f"{tuf}/timestamp.key", reader)[0] == 401
    assert _status(authed_server, "DELETE", f"{tuf}/", reader)[0] == 401
    pusher = issuer.mint([access(GUN_A, "push", "pull")])
    assert _status(authed_server, "DELETE", f"{tuf}/", pusher)[0] == 401
    assert _status(authed_server, "GET", f"{tuf}/timestamp.key", pusher)[0] == 200
    # the repository is untouched by every refused request
    assert fetch_repository(WithToken(authed_server, admin), GUN_A) == files  # type: ignore[arg-type]


def test_bad_tokens_and_catalog_routes(authed_server: CountersignServer,
                                       issuer: TokenIssuer) -> None:
    grants = [access(GUN_A, "pull")]
    path = f"/v2/{GUN_A}/_trust/tuf/timestamp.json"
    for token in (issuer.expired(grants), issuer.wrong_audience(grants),
                  issuer.wrong_issuer(grants), issuer.bad_signature(grants),
                  issuer.alg_none(grants), issuer.hs256(grants), "not-a-jwt"):
        status, challenge, _ = _status(authed_server, "GET", path, token)
        assert status == 401 and 'error="invalid_token"' in challenge
    status, challenge, _ = _status(authed_server, "GET", "/v2/", issuer.mint(grants))
    assert status == 401 and 'scope="registry:catalog:*"' in challenge
    assert _status(authed_server, "GET", "/v2/", issuer.mint([catalog()]))[0] == 200
    assert _status(authed_server, "GET", "/v2/_trust/changefeed?records=1",
                   issuer.mint([catalog()]))[0] == 200
    # health and metrics are not behind authentication, as in notary-server
    assert _status(authed_server, "GET", "/_notary_server/health")[0] == 200
    assert _status(authed_server, "GET", "/metrics")[0] == 200


def test_token_auth_needs_its_options(tmp_path: Path) -> None:
    import subprocess

    from _countersign import COUNTERSIGN

    result = subprocess.run([COUNTERSIGN, "serve", "--auth", "token", "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={"COUNTERSIGN_SIGNER_PASSPHRASE": "passphrase-for-test",
                                 "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 1
    assert "--auth token needs --token-realm" in result.stderr
    assert "Traceback" not in result.stderr


def test_undecodable_authorization_is_a_401(authed_server: CountersignServer,
                                            issuer: TokenIssuer) -> None:
    """Header bytes that are not text reach the server as they are sent (no client
    library would send them); the answer is the challenge, never a 5xx."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(authed_server.url)
    context = ssl.create_default_context(cafile=str(authed_server.ca_path))
    for value in (b"Bearer \xff\xfe\x80", b"\xff", b"Basic \xc3("):
        raw = (b"GET /v2/" + GUN_A.encode() + b"/_trust/tuf/root.json HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: " + value + b"\r\nConnection: close\r\n\r\n")
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 443),
                                      timeout=20) as plain, \
                context.wrap_socket(plain, server_hostname=url.hostname) as tls:
            tls.sendall(raw)
            answer = b""
            while piece := tls.recv(65536):
                answer += piece
        assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 400")), answer[:200]
