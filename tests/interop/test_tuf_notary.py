"""countersign's TUF core against the real notary 0.7: it reads what notary writes, byte for byte.

Repositories are made by the notary CLI and published to the reference
notary-server; countersign parses every file the server serves (and the
client's trust-dir cache), writes each back byte for byte, and verifies the
whole chain: root certificates, thresholds, hashes, delegations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _notary import (
    NotaryCLIFactory,
    ReferenceNotary,
    make_delegation_key,
    parse_list_output,
)
from _tufhttp import fetch_repository
from cryptography.hazmat.primitives import serialization

from countersign.tuf import Metadata, PrivateKey, make_certificate
from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop


def _check_round_trip(files: dict[str, bytes]) -> None:
    for role, data in files.items():
        md = Metadata.from_bytes(data, role=role)
        assert md.to_bytes() == data, f"{role}.json is not rewritten byte for byte"


def _rsa_delegation(directory: Path, name: str) -> tuple[Path, Path]:
    key = PrivateKey.generate("rsa", rsa_bits=2048)
    cert = make_certificate(key, name)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    directory.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.crypto_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def test_repository_published_by_notary_is_read_byte_for_byte(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path
) -> None:
    cli = notary_cli("publisher")
    payload = tmp_path / "manifest.json"
    payload.write_bytes(b'{"schemaVersion":2,"layers":[]}')
    cli.run_ok("init", gun)
    cli.run_ok("add", gun, "v1", str(payload))
    cli.run_ok("publish", gun)

    releases = make_delegation_key(tmp_path / "keys", "releases")
    rsa_cert, rsa_key = _rsa_delegation(tmp_path / "keys", "static-tested")
    cli.run_ok("delegation", "add", gun, "targets/releases", str(releases.cert_path),
               "--all-paths")
    cli.run_ok("delegation", "add", gun, "targets/static-tested", str(rsa_cert),
               "--paths", "build-")
    cli.run_ok("key", "import", str(releases.key_path), "--role", "targets/releases")
    cli.run_ok("key", "import", str(rsa_key), "--role", "targets/static-tested")
    cli.run_ok("publish", gun)
    cli.run_ok("add", gun, "v2", str(payload), "-r", "targets/releases")
    cli.run_ok("add", gun, "build-7", str(payload), "-r", "targets/static-tested")
    cli.run_ok("publish", gun)

    files = fetch_repository(reference_notary, gun)
    assert set(files) == {"root", "targets", "snapshot", "timestamp", "targets/releases",
                          "targets/static-tested"}
    _check_round_trip(files)

    report = verify_repository(files, gun)
    digest = hashlib.sha256(payload.read_bytes()).digest()
    for name, role in [("v1", "targets"), ("v2", "targets/releases"),
                       ("build-7", "targets/static-tested")]:
        target = report.lookup(name, (role,))
        assert target is not None, f"{name} not found in {role}"
        assert target.meta.sha256 == digest and target.meta.length == payload.stat().st_size
    methods = {sig.method for data in files.values()
               for sig in Metadata.from_bytes(data).signatures}
    assert methods == {"ecdsa", "rsapss"}
    assert report.roles["targets/static-tested"].signatures.verified
    assert not report.warnings

    # the notary client's own cache holds the same files once it has read them
    listed = parse_list_output(cli.run_ok("list", gun, "-r", "targets/releases").stdout)
    assert listed["v2"][0] == digest.hex()
    cached = {
        str(p.relative_to(cli.metadata_dir(gun)).with_suffix("")): p.read_bytes()
        for p in cli.metadata_dir(gun).rglob("*.json")
    }
    assert {"root", "targets", "targets/releases"} <= set(cached)
    _check_round_trip(cached)


def test_tampered_files_from_notary_are_refused(
    reference_notary: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path
) -> None:
    cli = notary_cli("publisher")
    payload = tmp_path / "payload"
    payload.write_bytes(b"payload")
    cli.run_ok("init", gun)
    cli.run_ok("add", gun, "v1", str(payload))
    cli.run_ok("publish", gun)
    files = fetch_repository(reference_notary, gun)
    verify_repository(files, gun)
    from countersign.errors import VerificationError

    with pytest.raises(VerificationError, match="no valid root certificate"):
        verify_repository(files, "localhost:5000/other/repo")
    # one byte of whitespace breaks the hash chain; a changed value breaks the signature
    for role in ("targets", "snapshot"):
        spaced = files[role].replace(b'"version":', b'"version": ', 1)
        with pytest.raises(VerificationError, match="bytes where"):
            verify_repository({**files, role: spaced}, gun)
    for role in ("timestamp", "snapshot", "targets"):
        version = Metadata.from_bytes(files[role]).signed.version
        bumped = files[role].replace(f'"version":{version}}}'.encode(),
                                     f'"version":{version + 1}}}'.encode())
        assert bumped != files[role]
        with pytest.raises(VerificationError, match=r"threshold|checksum"):
            verify_repository({**files, role: bumped}, gun)


def test_server_signed_ed25519_timestamp_and_snapshot(
    reference_notary_local: ReferenceNotary, notary_cli: NotaryCLIFactory, gun: str,
    tmp_path: Path,
) -> None:
    cli = notary_cli("publisher", server=reference_notary_local)
    payload = tmp_path / "payload"
    payload.write_bytes(b"payload")
    cli.run_ok("init", gun)
    cli.run_ok("add", gun, "latest", str(payload))
    cli.run_ok("publish", gun)
    cli.run_ok("key", "rotate", gun, "snapshot", "-r")
    cli.run_ok("add", gun, "v2", str(payload))
    cli.run_ok("publish", gun)
    assert set(parse_list_output(cli.run_ok("list", gun).stdout)) == {"latest", "v2"}
    files = fetch_repository(reference_notary_local, gun)
    _check_round_trip(files)
    report = verify_repository(files, gun)
    for role in ("snapshot", "timestamp"):
        assert {s.method for s in Metadata.from_bytes(files[role]).signatures} == {"eddsa"}
        assert report.roles[role].signatures.verified
    assert report.roles["root"].version == 2
    # the rotation kept the old root addressable by version; it verifies too
    status, _, old_root = reference_notary_local.get_tuf(gun, "root", version=1)
    assert status == 200
    verify_repository({**files, "root": files["root"]}, gun, trusted_root=old_root)
