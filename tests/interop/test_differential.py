"""One sequence of requests to the reference notary-server and to ``countersign serve``.

Status codes and error codes must agree on every request; error bodies, the
bytes served for uploaded files, and the caching headers must agree wherever
notary's behaviour fixes them (generated snapshots and timestamps are signed
by different keys, so for those only versions and hashes are compared).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from _tufhttp import create_repository, fetch_repository, multipart, request

from countersign.tuf import TARGETS, FileMeta, Metadata, PrivateKey, Targets

pytestmark = pytest.mark.interop


@pytest.fixture
def servers(reference_notary: Any, countersign_server: Any) -> dict[str, Any]:
    return {"reference": reference_notary, "countersign": countersign_server}


def _code(body: bytes) -> str | None:
    try:
        return json.loads(body)["errors"][0]["code"]  # type: ignore[no-any-return]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _both(servers: dict[str, Any], method: str, path: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> dict[str, tuple[int, Any, bytes]]:
    return {name: request(server, method, path, body, headers) for name, server in
            servers.items()}


def _same(results: dict[str, tuple[int, Any, bytes]], *, body: bool = True,
          headers: tuple[str, ...] = ()) -> tuple[int, bytes]:
    ref, ours = results["reference"], results["countersign"]
    assert ours[0] == ref[0], f"status: reference {ref[0]}, countersign {ours[0]}: {ours[2]!r}"
    assert _code(ours[2]) == _code(ref[2]), (ref[2], ours[2])
    if body:
        assert ours[2] == ref[2], f"body: reference {ref[2]!r}, countersign {ours[2]!r}"
    for name in headers:
        assert ours[1].get(name) == ref[1].get(name), name
    return ref[0], ref[2]


def test_base_routes_and_unknown_repositories(servers: dict[str, Any], gun: str) -> None:
    _same(_both(servers, "GET", "/v2/"))
    _same(_both(servers, "GET", "/_notary_server/health"))
    for path in ("timestamp.json", "snapshot.json", "root.json", "targets.json",
                 "targets/releases.json", "1.root.json", "root." + "ab" * 32 + ".json",
                 "root." + "ab" * 48 + ".json"):
        status, _ = _same(_both(servers, "GET", f"/v2/{gun}/_trust/tuf/{path}"))
        assert status == 404
    for path in ("/v2/nothing/here", "/v2/x/_trust/tuf/bogus.json", "/v2/x/_trust/tuf/root"):
        _same(_both(servers, "GET", path))
    _same(_both(servers, "POST", "/v2/"))
    _same(_both(servers, "PUT", f"/v2/{gun}/_trust/tuf/"))
    # server keys: the same shape (the keys themselves differ)
    for role in ("timestamp", "snapshot"):
        results = _both(servers, "GET", f"/v2/{gun}/_trust/tuf/{role}.key")
        _same(results, body=False, headers=("Content-Type",))
        shapes = {json.dumps({k: sorted(v) if isinstance(v, dict) else v
                              for k, v in json.loads(r[2]).items() if k != "keyval"})
                  for r in results.values()}
        assert len(shapes) == 1
        for result in results.values():
            assert list(json.loads(result[2])["keyval"]) == ["public", "private"]
    _same(_both(servers, "GET", f"/v2/{gun}/_trust/tuf/root.key"))


def test_upload_errors_agree(servers: dict[str, Any], gun: str) -> None:
    path = f"/v2/{gun}/_trust/tuf/"
    _same(_both(servers, "POST", path, b"not multipart", {"Content-Type": "text/plain"}))
    body, headers = multipart({"targets": b"{}"}, filename_header=False)
    _same(_both(servers, "POST", path, body, headers))
    body, headers = multipart({"foo": b"{}"})
    _same(_both(servers, "POST", path, body, headers))
    body, headers = multipart({"targets": b"{not json"})
    _same(_both(servers, "POST", path, body, headers))
    signed = Metadata(Targets(*_targets_fields())).sign(*_signer())
    body, headers = multipart({"targets": signed.to_bytes()})
    status, answer = _same(_both(servers, "POST", path, body, headers))
    assert status == 400 and b"no pre-existing root" in answer


def _targets_fields() -> tuple[Any, ...]:
    from countersign.tuf import GoTime

    return (GoTime.parse("2030-01-01T00:00:00Z"), 1)


def _signer() -> tuple[PrivateKey, Any]:
    key = PrivateKey.generate("ecdsa")
    return key, key.public_key


def test_a_repository_lifecycle_agrees(servers: dict[str, Any], gun: str) -> None:
    payload = b'{"schemaVersion":2}'
    keys = {name: create_repository(server, gun, payload, client_snapshot=False)
            for name, server in servers.items()}
    files = {name: fetch_repository(server, gun) for name, server in servers.items()}
    assert set(files["reference"]) == set(files["countersign"])
    for role in files["reference"]:
        ref = Metadata.from_bytes(files["reference"][role], role=role)
        ours = Metadata.from_bytes(files["countersign"][role], role=role)
        assert ours.signed.version == ref.signed.version, role
        if role in ("snapshot", "timestamp"):
            assert set(ours.signed.meta) == set(ref.signed.meta)  # type: ignore[attr-defined]
    # what was uploaded is served as it was sent, with the same caching headers
    for role in ("root", "targets", "targets/releases"):
        for name, server in servers.items():
            status, headers, body = request(server, "GET", f"/v2/{gun}/_trust/tuf/{role}.json")
            assert status == 200 and body == files[name][role]
            assert headers["Cache-Control"] == "public, max-age=300, s-maxage=300, must-revalidate"
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
        results = _both(servers, "GET", f"/v2/{gun}/_trust/tuf/1.{role}.json")
        assert {r[0] for r in results.values()} == {200}
        for result in results.values():
            assert result[1]["Cache-Control"] == "public, max-age=2592000, s-maxage=2592000"

    # the same stale version is refused the same way, byte for byte
    for name, server in servers.items():
        current = Metadata.from_bytes(files[name][TARGETS], Targets)
        stale = current.sign(keys[name][TARGETS], keys[name][TARGETS].public_key)
        body, headers = multipart({TARGETS: stale.to_bytes()})
        status, _, answer = request(server, "POST", f"/v2/{gun}/_trust/tuf/", body, headers)
        assert (status, _code(answer)) == (400, "VERSION"), answer
        if name == "reference":
            reference_answer = answer
        else:
            assert answer == reference_answer

    # a root that skips a version, and targets signed by the wrong key
    results: dict[str, tuple[int, Any, bytes]] = {}
    for name, server in servers.items():
        root = Metadata.from_bytes(files[name]["root"])
        skipped = Metadata(replace(root.signed, version=3))
        skipped = skipped.sign(keys[name]["root"], next(
            k for k in root.signed.keys.values() if k.keytype == "ecdsa-x509"))  # type: ignore[attr-defined]
        body, headers = multipart({"root": skipped.to_bytes()})
        results[name] = request(server, "POST", f"/v2/{gun}/_trust/tuf/", body, headers)
    _same(results)
    results = {}
    for name, server in servers.items():
        current = Metadata.from_bytes(files[name][TARGETS], Targets)
        entries = dict(current.signed.targets)
        entries["v2"] = FileMeta.for_bytes(b"x", algorithms=("sha256",))
        wrong = Metadata(replace(current.signed.bump(role=TARGETS), targets=entries))
        body, headers = multipart({TARGETS: wrong.sign(*_signer()).to_bytes()})
        results[name] = request(server, "POST", f"/v2/{gun}/_trust/tuf/", body, headers)
    _same(results, body=False)
    for result in results.values():
        assert json.loads(result[2])["errors"][0]["detail"]["Name"] == "ErrBadTargets"

    # change feed of this GUN, then delete
    results = _both(servers, "GET", f"/v2/{gun}/_trust/changefeed?change_id=0&records=10")
    _same(results, body=False)
    counts = {name: json.loads(r[2])["count"] for name, r in results.items()}
    assert counts["reference"] == counts["countersign"] == 1
    _same(_both(servers, "GET", f"/v2/{gun}/_trust/changefeed"))
    _same(_both(servers, "GET", f"/v2/{gun}/_trust/changefeed?records=x"))
    _same(_both(servers, "GET", f"/v2/{gun}/_trust/changefeed?records=1&change_id=x"))
    _same(_both(servers, "DELETE", f"/v2/{gun}/_trust/tuf/"))
    _same(_both(servers, "GET", f"/v2/{gun}/_trust/tuf/timestamp.json"))
    results = _both(servers, "GET", f"/v2/{gun}/_trust/changefeed?change_id=-1&records=1")
    for result in results.values():
        assert json.loads(result[2])["records"][0]["Category"] == "deletion"
