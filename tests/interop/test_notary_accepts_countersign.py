"""What countersign makes, the reference notary-server accepts and the notary CLI reads.

countersign creates a repository from nothing (root certificate for the GUN,
targets key, a delegation with an RSA key, the server's timestamp key and,
in one variant, the server's snapshot key), uploads it in one multipart POST,
and a fresh notary client lists its targets. Because the server hashes its
own re-serialisation of what it receives, and the notary client checks that
hash against the bytes served, this only works when every file countersign
writes is byte-identical to Go notary's form.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from _notary import NotaryCLIFactory, ReferenceNotary, parse_list_output
from _tufhttp import create_repository, fetch_repository, post_update

from countersign.tuf import (
    TARGETS,
    FileMeta,
    Metadata,
    PrivateKey,
)
from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("client_snapshot", [False, True], ids=["server-snapshot",
                                                                "client-snapshot"])
def test_notary_lists_a_repository_countersign_created(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str,
    client_snapshot: bool,
) -> None:
    payload = b'{"schemaVersion":2}'
    create_repository(reference_notary, gun, payload, client_snapshot=client_snapshot)
    reader = notary_cli("reader")
    listed = parse_list_output(reader.run_ok("list", gun).stdout)
    sha = hashlib.sha256(payload).hexdigest()
    assert listed == {"latest": (sha, len(payload), "targets"),
                      "v1.0": (sha, len(payload), "targets/releases"),
                      "odd<&>name": (sha, len(payload), "targets/releases")}
    # and every file served is in the exact form countersign wrote and re-reads
    files = fetch_repository(reference_notary, gun)
    for role, data in files.items():
        assert Metadata.from_bytes(data, role=role).to_bytes() == data
    verify_repository(files, gun)


def test_countersign_updates_a_repository_and_notary_follows(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path,
) -> None:
    payload = b"image manifest"
    keys = create_repository(reference_notary, gun, payload, client_snapshot=False)
    reader = notary_cli("reader")
    assert "v2" not in parse_list_output(reader.run_ok("list", gun).stdout)
    # a second version of targets, signed by countersign, is accepted and followed
    files = fetch_repository(reference_notary, gun)
    current = Metadata.from_bytes(files[TARGETS], role=TARGETS)
    entries = dict(current.signed.targets)
    entries["v2"] = FileMeta.for_bytes(b"second", algorithms=("sha256",))
    new = Metadata(replace(current.signed.bump(role=TARGETS), targets=entries))
    status, body = post_update(reference_notary, gun, {
        TARGETS: new.sign(keys[TARGETS], keys[TARGETS].public_key).to_bytes()})
    assert status == 200, body
    assert parse_list_output(reader.run_ok("list", gun).stdout)["v2"][2] == "targets"
    # a stale version is refused by the server, and the reader is not moved
    status, body = post_update(reference_notary, gun, {
        TARGETS: current.sign(keys[TARGETS], keys[TARGETS].public_key).to_bytes()})
    assert status == 400 and b'"code":"VERSION"' in body, body
    assert "v2" in parse_list_output(reader.run_ok("list", gun).stdout)


def test_notary_signs_with_keys_countersign_made(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path,
) -> None:
    """A delegation key countersign generates and stores is used by notary to publish."""
    from cryptography.hazmat.primitives import serialization

    from countersign.keystore import EnvPassphrases, KeyStore
    from countersign.tuf import make_certificate

    cli = notary_cli("stage")
    payload = tmp_path / "payload"
    payload.write_bytes(b"stage evidence")
    cli.run_ok("init", gun)
    cli.run_ok("publish", gun)
    key = PrivateKey.generate("ecdsa")
    cert_path = tmp_path / "static-tested.crt"
    cert_path.write_bytes(make_certificate(key, "static-tested").public_bytes(
        serialization.Encoding.PEM))
    store = KeyStore(cli.trust_dir, EnvPassphrases(cli.env))
    store.add(key, role="targets/static-tested")
    cli.run_ok("delegation", "add", gun, "targets/static-tested", str(cert_path), "--all-paths")
    cli.run_ok("add", gun, "build-9", str(payload), "-r", "targets/static-tested")
    cli.run_ok("publish", gun)
    listed = parse_list_output(notary_cli("reader").run_ok("list", gun).stdout)
    assert listed["build-9"] == (hashlib.sha256(b"stage evidence").hexdigest(), 14,
                                 "targets/static-tested")
    files = fetch_repository(reference_notary, gun)
    signature = Metadata.from_bytes(files["targets/static-tested"]).signatures[0]
    report = verify_repository(files, gun)
    assert report.roles["targets/static-tested"].signatures.signed == {signature.keyid}
