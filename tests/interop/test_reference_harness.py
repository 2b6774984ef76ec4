"""The reference Notary 0.7 harness works (and what it taught us).

Checked against the Debian bookworm binaries (notary 0.7.0+ds1, Go 1.19.8),
memory storage, on loopback. Observed behaviour worth knowing when writing
interop tests:

Server / harness
- notary-signer and notary-server are up within ~0.1 s. ``GET /v2/`` and
  ``GET /_notary_server/health`` both answer 200 with body ``{}``.
- A bare TCP connect/close (as a readiness probe) makes notary-server log
  ``http: TLS handshake error ... EOF``; the harness therefore probes with a
  full TLS handshake (presenting the server leaf, which the signer's mutual
  TLS accepts too).
- ``-logf logfmt`` is accepted but the log lines are JSON anyway. At ``info``
  the server logs every request and the signer logs every ``Sign:`` payload.
- The 404 body has **no** ``detail`` key:
  ``{"errors":[{"code":"METADATA_NOT_FOUND","message":"You have requested
  metadata that does not exist."}]}`` plus ``\\n``, ``Content-Type:
  application/json; charset=utf-8``.
- Metadata GETs: ``Content-Type: text/plain; charset=utf-8``; ``<role>.json``
  has ``Cache-Control: public, max-age=300, s-maxage=300, must-revalidate``;
  ``<role>.<sha256>.json`` and ``<N>.<role>.json`` have ``public,
  max-age=2592000, s-maxage=2592000``. Every role can be fetched by the sha256
  of its bytes, timestamp included (``timestamp.<sha256>.json``,
  ``1.timestamp.json`` work too).
- Remote trust service (notary-signer, ``key_algorithm: ecdsa``): server keys
  are ECDSA. With ``trust_service: {type: local}`` the server's timestamp (and
  server-managed snapshot) keys are **Ed25519** (``timestamp.key`` returns
  ``"keytype":"ed25519"``, signatures ``"method":"eddsa"``).
- Delegation uploads (multipart filename ``targets/releases``) work; the Go
  1.17+ multipart basename problem (notary #1630) does not bite this build.

CLI (``notary -c CONFIG``; config has absolute ``trust_dir`` and
``remote_server {url, root_ca}``)
- ``list`` of an unknown GUN: rc 1, on **stdout**:
  ``* fatal: 127.0.0.1:PORT does not have trust data for GUN``.
  Most CLI messages (success and ``* fatal:``) go to stdout; logrus warnings
  go to stderr.
- ``init`` writes three keys to ``private/<keyid>.key`` (all ``ENCRYPTED
  PRIVATE KEY``; headers ``role: root``; ``gun: GUN`` + ``role: targets``;
  ``gun: GUN`` + ``role: snapshot``) and caches ``tuf/GUN/metadata/``
  ``root.json``, ``targets.json``, ``snapshot.json`` (all version 1), with an
  empty ``changelist/``. Nothing is sent to the server until ``publish``.
- First ``publish`` (init, no targets added): the server holds root v1 (the
  very bytes ``init`` cached), targets **v2**, snapshot **v2** (re-signed,
  version bumped, no change) and timestamp v1 (server-made). The client's
  cache still holds the init-time targets/snapshot v1 and no timestamp.json
  until the next read (``list``), which replaces them with the server's bytes.
  With one ``add`` before the first publish the versions are the same
  (root 1, targets 2, snapshot 2, timestamp 1).
- ``key rotate GUN snapshot -r``: root v2 is published at once (``1.root.json``
  stays fetchable), the local snapshot key file is deleted and the server signs
  snapshot.json from then on; snapshot and timestamp versions move on by one.
- ``delegation add GUN targets/releases CERT.crt --all-paths`` takes a PEM
  X.509 cert (self-signed ECDSA P-256, any CN) and prints ``... with keys
  [<canonical key ID>], with paths ["" <all paths>] ...``; ``delegation list``
  shows the canonical ID too. targets.json, however, lists the key as
  ``ecdsa-x509`` under its TUF key ID. Both IDs are the sha256 of the canonical
  JSON ``{"keytype":K,"keyval":{"private":null,"public":B64}}``: canonical =
  ``K=ecdsa``, ``B64`` = base64(DER SPKI); TUF = ``K=ecdsa-x509``, ``B64`` =
  base64(PEM bytes of the cert file). Threshold is 1; a ``publish`` (or
  ``-p``) is needed.
- ``key import KEY.pem --role targets/releases`` accepts an unencrypted PKCS#8
  ``PRIVATE KEY`` PEM and also a SEC1 ``EC PRIVATE KEY`` PEM. It stores it
  re-encrypted (with ``NOTARY_DELEGATION_PASSPHRASE``) as
  ``private/<canonical keyid>.key`` with header ``role: targets/releases`` (without
  ``--role``: ``role: delegation``, which still signs fine because keys are
  found by ID). An encrypted PKCS#8 PEM is refused: rc 1, stdout ``* fatal:
  failed to import all keys: invalid key pem block``, stderr ``Invalid key
  generated, key may be encrypted and does not contain path header``.
  It prints nothing on success.
- ``add GUN NAME FILE -r targets/releases`` + ``publish``: the delegation file
  is cached as ``tuf/GUN/metadata/targets/releases.json`` (version 1), and
  ``list`` shows the target with role ``targets/releases``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from _notary import (
    DELEGATION_PASSPHRASE,
    PASSPHRASE_ENV,
    NotaryCLI,
    NotaryCLIError,
    NotaryCLIFactory,
    ReferenceNotary,
    make_delegation_key,
    missing_binaries,
    parse_list_output,
    sha256_hex,
)
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.interop

CURRENT_CACHE = "public, max-age=300, s-maxage=300, must-revalidate"
CONSISTENT_CACHE = "public, max-age=2592000, s-maxage=2592000"


def _signed(body: bytes) -> dict[str, object]:
    doc = json.loads(body)
    assert isinstance(doc, dict)
    signed = doc["signed"]
    assert isinstance(signed, dict)
    return signed


def _versions(server: ReferenceNotary, gun: str, roles: list[str]) -> dict[str, int]:
    out = {}
    for role in roles:
        status, _, body = server.get_tuf(gun, role)
        assert status == 200, (role, body)
        version = _signed(body)["version"]
        assert isinstance(version, int)
        out[role] = version
    return out


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _key_id(keytype: str, public: bytes) -> str:
    key = {
        "keytype": keytype,
        "keyval": {"private": None, "public": base64.b64encode(public).decode()},
    }
    return sha256_hex(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())


def test_v2_ping_and_health(reference_notary: ReferenceNotary) -> None:
    status, _, body = reference_notary.get("/v2/")
    assert status == 200
    assert json.loads(body) == {}
    status, _, body = reference_notary.get("/_notary_server/health")
    assert status == 200
    assert json.loads(body) == {}


def test_unknown_metadata_is_404(reference_notary: ReferenceNotary, gun: str) -> None:
    status, headers, body = reference_notary.get_tuf(gun, "root")
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["errors"][0]["code"] == "METADATA_NOT_FOUND"


def test_cli_on_uninitialized_gun_fails(notary_cli: NotaryCLIFactory, gun: str) -> None:
    rc, out, _ = notary_cli().run("list", gun)
    assert rc == 1
    assert "does not have trust data" in out


def test_init_and_first_publish(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str
) -> None:
    cli: NotaryCLI = notary_cli()
    cli.run_ok("init", gun)
    meta = cli.metadata_dir(gun)
    assert sorted(p.name for p in meta.iterdir()) == ["root.json", "snapshot.json", "targets.json"]
    assert {_signed(p.read_bytes())["version"] for p in meta.iterdir()} == {1}
    headers = sorted(
        tuple(line for line in p.read_text().splitlines()[1:3] if ":" in line)
        for p in cli.private_keys()
    )
    assert headers == sorted(
        [("role: root",), (f"gun: {gun}", "role: targets"), (f"gun: {gun}", "role: snapshot")]
    )
    init_root = (meta / "root.json").read_bytes()
    assert reference_notary.get_tuf(gun, "root").status == 404  # nothing sent yet

    cli.run_ok("publish", gun)
    assert list(cli.changelist_dir(gun).iterdir()) == []
    roles = ["root", "targets", "snapshot", "timestamp"]
    assert _versions(reference_notary, gun, roles) == {
        "root": 1,
        "targets": 2,
        "snapshot": 2,
        "timestamp": 1,
    }
    assert reference_notary.get_tuf(gun, "root").body == init_root
    cli.run_ok("list", gun)  # refreshes the cache with the server's bytes
    for role in roles:
        assert (meta / f"{role}.json").read_bytes() == reference_notary.get_tuf(gun, role).body


def test_full_flow_with_delegation(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path
) -> None:
    server = reference_notary
    owner: NotaryCLI = notary_cli("owner")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"countersign interop payload\n")
    digest = sha256_hex(payload.read_bytes())

    # init / add / publish / list
    owner.run_ok("init", gun)
    out = owner.run_ok("add", gun, "v1", payload).stdout
    assert "staged for next publish" in out
    owner.run_ok("publish", gun)
    assert _versions(server, gun, ["root", "targets", "snapshot", "timestamp"]) == {
        "root": 1,
        "targets": 2,
        "snapshot": 2,
        "timestamp": 1,
    }
    assert parse_list_output(owner.run_ok("list", gun).stdout) == {
        "v1": (digest, len(payload.read_bytes()), "targets")
    }

    # a second trust dir (TOFU over HTTPS) sees the same
    reader: NotaryCLI = notary_cli("reader")
    assert parse_list_output(reader.run_ok("list", gun).stdout) == {
        "v1": (digest, len(payload.read_bytes()), "targets")
    }
    assert reader.private_keys() == []

    # snapshot key to the server
    assert "snapshot" in owner.run_ok("key", "list").stdout
    owner.run_ok("key", "rotate", gun, "snapshot", "-r")
    assert "snapshot" not in owner.run_ok("key", "list").stdout
    assert len(owner.private_keys()) == 2
    assert _versions(server, gun, ["root", "snapshot", "timestamp"]) == {
        "root": 2,
        "snapshot": 3,
        "timestamp": 2,
    }
    assert server.get_tuf(gun, "root", version=1).status == 200
    assert server.get_tuf(gun, "root", version=2).body == server.get_tuf(gun, "root").body

    # delegation targets/releases with a cert made here and its key imported
    dkey = make_delegation_key(tmp_path / "keys", "releases", common_name="releases-signer")
    out = owner.run_ok(
        "delegation", "add", gun, "targets/releases", dkey.cert_path, "--all-paths"
    ).stdout
    spki = dkey.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    canonical_id = _key_id("ecdsa", spki)
    x509_id = _key_id("ecdsa-x509", dkey.cert_path.read_bytes())
    assert f"targets/releases with keys [{canonical_id}]" in out
    assert '"" <all paths>' in out
    owner.run_ok("publish", gun)
    assert canonical_id in owner.run_ok("delegation", "list", gun).stdout
    delegations = _signed(server.get_tuf(gun, "targets").body)["delegations"]
    assert delegations == {
        "keys": {
            x509_id: {
                "keytype": "ecdsa-x509",
                "keyval": {
                    "private": None,
                    "public": base64.b64encode(dkey.cert_path.read_bytes()).decode(),
                },
            }
        },
        "roles": [{"keyids": [x509_id], "name": "targets/releases", "paths": [""], "threshold": 1}],
    }

    assert dkey.key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    owner.run_ok("key", "import", dkey.key_path, "--role", "targets/releases")
    imported = [p for p in owner.private_keys() if "role: targets/releases" in p.read_text()]
    assert [p.name for p in imported] == [f"{canonical_id}.key"]
    assert imported[0].read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")

    owner.run_ok("add", gun, "v2", payload, "-r", "targets/releases")
    owner.run_ok("publish", gun)
    expected = {
        "v1": (digest, len(payload.read_bytes()), "targets"),
        "v2": (digest, len(payload.read_bytes()), "targets/releases"),
    }
    assert parse_list_output(owner.run_ok("list", gun).stdout) == expected
    assert parse_list_output(reader.run_ok("list", gun).stdout) == expected
    assert (owner.metadata_dir(gun) / "targets" / "releases.json").is_file()
    assert _versions(server, gun, ["targets", "targets/releases", "snapshot", "timestamp"]) == {
        "targets": 3,
        "targets/releases": 1,
        "snapshot": 5,
        "timestamp": 4,
    }

    # raw bytes: by role, and by the sha256 the timestamp / snapshot list
    current = {}
    for role in ["root", "targets", "targets/releases", "snapshot", "timestamp"]:
        status, headers, body = server.get_tuf(gun, role)
        assert status == 200, role
        assert headers["Cache-Control"] == CURRENT_CACHE
        current[role] = body

    ts_meta = _signed(current["timestamp"])["meta"]
    assert isinstance(ts_meta, dict)
    listed = {"snapshot": ts_meta["snapshot"]}
    snap_meta = _signed(current["snapshot"])["meta"]
    assert isinstance(snap_meta, dict)
    assert set(snap_meta) == {"root", "targets", "targets/releases"}
    listed.update(snap_meta)

    for role, meta in listed.items():
        sha = _hex(meta["hashes"]["sha256"])
        assert sha == sha256_hex(current[role]), role
        assert meta["length"] == len(current[role]), role
        status, headers, body = server.get_tuf(gun, role, sha256=sha)
        assert status == 200, role
        assert headers["Cache-Control"] == CONSISTENT_CACHE
        assert body == current[role], role

    ts_sha = sha256_hex(current["timestamp"])
    assert server.get_tuf(gun, "timestamp", sha256=ts_sha).body == current["timestamp"]
    assert server.get_tuf(gun, "targets", sha256="0" * 64).status == 404

    # the reader's cache holds exactly the served bytes
    for role, body in current.items():
        assert (reader.metadata_dir(gun) / f"{role}.json").read_bytes() == body, role


def test_key_import_formats(notary_cli: NotaryCLIFactory, tmp_path: Path) -> None:
    dkey = make_delegation_key(tmp_path / "keys", "d")
    sec1 = tmp_path / "sec1.pem"
    sec1.write_bytes(
        dkey.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        dkey.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(DELEGATION_PASSPHRASE.encode()),
        )
    )
    plain_cli: NotaryCLI = notary_cli("pkcs8")
    plain_cli.run_ok("key", "import", dkey.key_path)
    (stored,) = plain_cli.private_keys()
    assert "role: delegation" in stored.read_text()

    sec1_cli: NotaryCLI = notary_cli("sec1")
    sec1_cli.run_ok("key", "import", sec1, "--role", "targets/releases")
    (stored_sec1,) = sec1_cli.private_keys()
    assert stored_sec1.name == stored.name  # named by the canonical key ID

    enc_cli: NotaryCLI = notary_cli("encrypted")
    with pytest.raises(NotaryCLIError, match="invalid key pem block"):
        enc_cli.run_ok("key", "import", encrypted, "--role", "targets/releases")
    assert enc_cli.private_keys() == []


def test_local_trust_service(
    reference_notary_local: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str
) -> None:
    server = reference_notary_local
    cli: NotaryCLI = notary_cli(server=server)
    status, _, body = server.get(f"/v2/{gun}/_trust/tuf/timestamp.key")
    assert status == 200
    assert json.loads(body)["keytype"] == "ed25519"
    cli.run_ok("init", gun)
    cli.run_ok("publish", gun)
    timestamp = json.loads(server.get_tuf(gun, "timestamp").body)
    assert timestamp["signatures"][0]["method"] == "eddsa"
    assert cli.run_ok("list", gun).returncode == 0


def test_passphrases_are_in_the_cli_environment(notary_cli: NotaryCLIFactory) -> None:
    cli: NotaryCLI = notary_cli()
    for name, value in PASSPHRASE_ENV.items():
        assert cli.env[name] == value
    assert cli.env["HOME"] == str(cli.home)
    config = json.loads(cli.config_path.read_text())
    assert Path(config["trust_dir"]).is_absolute()
    assert config["remote_server"]["url"].startswith("https://127.0.0.1:")


def test_start_stop_leaves_no_process(tmp_path: Path) -> None:
    if missing_binaries():
        pytest.skip("reference Notary 0.7 binaries not on PATH")
    with ReferenceNotary(tmp_path / "srv") as notary:
        pids = notary.pids()
        assert len(pids) == 2
        assert notary.running()
        assert notary.get("/v2/").status == 200
    assert not notary.running()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
