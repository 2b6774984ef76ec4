"""Metadata objects: Go file form, structure rules, thresholds over distinct keys."""

from __future__ import annotations

import json

import pytest
from tufrepo import Repo

from countersign.errors import (
    ExpiredMetadataError,
    FormatError,
    RollbackError,
    SignatureError,
    VerificationError,
)
from countersign.tuf import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    DelegatedRole,
    FileMeta,
    GoTime,
    Metadata,
    PrivateKey,
    Role,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    new_targets,
    root_certificate_key,
)
from countersign.tuf.keys import b64encode
from countersign.tuf.metadata import is_delegation_name, parent_role

EXPIRES = GoTime.parse("2030-01-01T00:00:00Z")


def test_go_file_form_of_targets_is_exact() -> None:
    md = new_targets(expires=EXPIRES, version=3,
                     targets={"v1<": FileMeta(3, {"sha256": b"\x01" * 32})})
    key = PrivateKey.generate("ecdsa")
    signed = md.sign(key, key.public_key)
    sig = signed.signatures[0]
    expected = (
        b'{"signed":{"_type":"Targets","delegations":{"keys":{},"roles":[]},'
        b'"expires":"2030-01-01T00:00:00Z","targets":{"v1\\u003c":{"hashes":{"sha256":"'
        + b64encode(b"\x01" * 32).encode()
        + b'"},"length":3}},"version":3},"signatures":[{"keyid":"'
        + key.public_key.key_id.encode() + b'","method":"ecdsa","sig":"'
        + b64encode(sig.sig).encode() + b'"}]}'
    )
    assert signed.to_bytes() == expected
    # the signature covers the canonical (unescaped) form
    assert b"v1<" in signed.signed_bytes
    again = Metadata.from_bytes(signed.to_bytes(), Targets)
    assert again.to_bytes() == expected
    assert again.signed_bytes == signed.signed_bytes


def test_round_trip_of_every_role(repo: Repo) -> None:
    repo.delegate("targets/releases", PrivateKey.generate("ecdsa"), paths=("v",))
    repo.sign_all()
    for role, md in [("root", repo.root), ("targets", repo.targets),
                     ("snapshot", repo.snapshot), ("timestamp", repo.timestamp),
                     ("targets/releases", repo.delegations["targets/releases"])]:
        assert md is not None
        data = md.to_bytes()
        parsed = Metadata.from_bytes(data, role=role)
        assert parsed.to_bytes() == data
        assert parsed.signed == md.signed


def test_delegation_paths_omitted_when_empty_and_delegations_always_written() -> None:
    role = DelegatedRole("targets/a", ("k",), 1, ())
    assert "paths" not in role.to_dict()
    assert new_targets().signed.to_dict()["delegations"] == {"keys": {}, "roles": []}


def test_custom_is_kept_and_written_canonically() -> None:
    meta = FileMeta(1, {"sha256": b"\0" * 32}, custom={"z": 1, "a": [2]})
    md = new_targets(expires=EXPIRES, targets={"t": meta})
    assert b'"custom":{"a":[2],"z":1}' in md.to_bytes()
    null = json.loads(md.to_bytes())
    null["signed"]["targets"]["t"]["custom"] = None
    parsed = Metadata.from_bytes(json.dumps(null).encode(), Targets)
    assert "custom" not in parsed.to_bytes().decode()


def test_unknown_fields_are_signed_over_but_not_rewritten() -> None:
    key = PrivateKey.generate("ecdsa")
    md = new_targets(expires=EXPIRES)
    doc = json.loads(md.to_bytes())
    doc["signed"]["x-extra"] = "kept"
    from countersign.tuf import encode_canonical

    sig = key.sign(encode_canonical(doc["signed"]))
    doc["signatures"] = [{"keyid": key.public_key.key_id, "method": "ECDSA", "sig": b64encode(sig)}]
    parsed = Metadata.from_bytes(json.dumps(doc, indent=2).encode(), Targets)
    result = parsed.verify({key.public_key.key_id: key.public_key},
                           Role((key.public_key.key_id,), 1))
    assert result.verified
    assert parsed.signatures[0].method == "ecdsa"
    assert b"x-extra" not in parsed.to_bytes()


def test_threshold_counts_distinct_keys_only() -> None:
    a, b = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    cert_a = root_certificate_key(a, "gun")
    md = new_targets(expires=EXPIRES)
    keys = {k.key_id: k for k in (a.public_key, b.public_key, cert_a)}
    # a key listed twice, and the same key as certificate and bare key, count once
    role = Role((a.public_key.key_id, a.public_key.key_id, cert_a.key_id, b.public_key.key_id), 2)
    one = md.sign(a, a.public_key).sign(a, cert_a)
    result = one.verify(keys, role, "targets")
    assert result.signed == {a.public_key.key_id, cert_a.key_id}
    assert result.distinct_signers == 1 and not result.verified and result.missing == 1
    assert result.unsigned == {b.public_key.key_id}
    # a repeated signature counts once too
    repeated = Metadata(md.signed, one.signatures + one.signatures, one.signed_bytes)
    assert repeated.verify(keys, role).distinct_signers == 1
    both = one.sign(b, b.public_key)
    assert both.verify(keys, role).verified
    with pytest.raises(VerificationError, match="did not meet threshold"):
        one.check_signatures(keys, role)


def test_signatures_from_other_keys_or_tampered_content_do_not_count() -> None:
    a, stranger = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    keys = {a.public_key.key_id: a.public_key}
    role = Role((a.public_key.key_id,), 1)
    md = new_targets(expires=EXPIRES, version=1).sign(stranger, stranger.public_key)
    result = md.verify(keys, role)
    assert not result.verified and "not a key" in result.rejected[0]
    signed = new_targets(expires=EXPIRES, version=1).sign(a, a.public_key)
    tampered = Metadata.from_bytes(signed.to_bytes().replace(b'"version":1', b'"version":2'))
    assert not tampered.verify(keys, role).verified


def test_key_listed_under_a_foreign_id_is_refused() -> None:
    a, b = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    keys = {a.public_key.key_id: b.public_key}
    md = new_targets(expires=EXPIRES).sign(b, b.public_key)
    forged = Metadata(md.signed, (md.signatures[0].__class__(a.public_key.key_id, "ecdsa",
                                                             md.signatures[0].sig),),
                      md.signed_bytes)
    result = forged.verify(keys, Role((a.public_key.key_id,), 1))
    assert not result.verified and "not its own" in result.rejected[0]


def test_signing_with_the_wrong_private_key_is_refused() -> None:
    a, b = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    with pytest.raises(SignatureError):
        new_targets().sign(a, b.public_key)


def test_expiry_and_rollback_rules() -> None:
    md = new_targets(expires=EXPIRES, version=4)
    md.check_expiry("targets", GoTime.parse("2029-12-31T23:59:59.999999999Z"))
    with pytest.raises(ExpiredMetadataError, match="expired"):
        md.check_expiry("targets", GoTime.parse("2030-01-01T00:00:00.000000001Z"))
    md.check_version("targets", 4)
    with pytest.raises(RollbackError, match="older"):
        md.check_version("targets", 5)
    bumped = md.signed.bump(now=GoTime.parse("2030-01-01T00:00:00Z"))
    assert bumped.version == 5 and bumped.expires.format() == "2032-12-31T00:00:00Z"


def test_delegation_names_and_paths() -> None:
    assert is_delegation_name("targets/releases")
    assert is_delegation_name("targets/a/b-c_d")
    for bad in ["targets", "targets/", "targets//a", "targets/A", "targets/../x",
                "targets/./x", "root/x", "targets/a/", "targets/" + "a" * 250, "targets/ä"]:
        assert not is_delegation_name(bad), bad
    assert parent_role("targets/a/b") == "targets/a"
    role = DelegatedRole("targets/a", ("k",), 1, ("build-", "v1"))
    assert role.allows("build-7") and role.allows("v1.2") and not role.allows("latest")
    assert role.restrict(["build"]) == ("build-",)
    assert DelegatedRole("targets/b", ("k",), 1, ("",)).allows("anything")
    assert not DelegatedRole("targets/c", ("k",), 1, ()).allows("anything")


def _doc(md: Metadata) -> dict:  # type: ignore[type-arg]
    return json.loads(md.to_bytes())


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["signed"].__setitem__("_type", "Targets"), "expected Root"),
        (lambda d: d["signed"].__setitem__("version", 0), "at least 1"),
        (lambda d: d["signed"].__setitem__("version", True), "integer"),
        (lambda d: d["signed"]["roles"].pop("snapshot"), "no 'snapshot' role"),
        (lambda d: d["signed"]["roles"]["targets"].__setitem__("threshold", 0), "at least 1"),
        (lambda d: d["signed"]["roles"]["targets"].__setitem__("keyids", ["nokey"]),
         "not among the keys"),
        (lambda d: d["signed"].__setitem__("expires", "2030-01-01"), "RFC 3339"),
        (lambda d: d["signed"].__setitem__("consistent_snapshot", "no"), "true or false"),
        (lambda d: d.pop("signed"), "no 'signed'"),
        (lambda d: d.__setitem__("signatures", {}), "must be a list"),
        (lambda d: d["signatures"][0].__setitem__("sig", "%%%"), "base64"),
    ],
)
def test_root_structure_rules(repo: Repo, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert repo.root is not None
    doc = _doc(repo.root)
    mutate(doc)
    with pytest.raises(FormatError, match=fragment):
        Metadata.from_bytes(json.dumps(doc).encode(), Root)


def test_version_written_as_float_is_refused(repo: Repo) -> None:
    assert repo.root is not None
    data = repo.root.to_bytes().replace(b'"version":1}', b'"version":1.0}')
    with pytest.raises(FormatError, match="fraction or exponent"):
        Metadata.from_bytes(data, Root)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["signed"]["delegations"]["roles"][0].__setitem__("name", "targets/a/b"),
         "not a valid child"),
        (lambda d: d["signed"]["delegations"]["roles"][0].__setitem__("name", "targets/A"),
         "not a valid child"),
        (lambda d: d["signed"]["delegations"]["roles"].append(
            dict(d["signed"]["delegations"]["roles"][0])), "appears twice"),
        (lambda d: d["signed"]["delegations"]["keys"].clear(), "not among the keys"),
        (lambda d: d["signed"]["targets"].__setitem__("x", {"length": 1, "hashes": {}}),
         "sha256 or sha512"),
        (lambda d: d["signed"]["targets"].__setitem__(
            "x", {"length": 1, "hashes": {"sha256": "AAAA"}}), "32 bytes"),
        (lambda d: d["signed"]["targets"].__setitem__(
            "x", {"length": -1, "hashes": {"sha256": "AAAA"}}), "at least 0"),
    ],
)
def test_targets_structure_rules(repo: Repo, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    repo.delegate("targets/releases", PrivateKey.generate("ecdsa"))
    repo.sign_all()
    assert repo.targets is not None
    doc = _doc(repo.targets)
    mutate(doc)
    with pytest.raises(FormatError, match=fragment):
        Metadata.from_bytes(json.dumps(doc).encode(), Targets)


def test_delegation_file_must_be_targets_of_that_role(repo: Repo) -> None:
    assert repo.snapshot is not None and repo.timestamp is not None
    with pytest.raises(FormatError, match="expected Targets"):
        Metadata.from_bytes(repo.snapshot.to_bytes(), role="targets/releases")
    with pytest.raises(FormatError, match="expected Snapshot"):
        Metadata.from_bytes(repo.timestamp.to_bytes(), Snapshot)
    doc = _doc(repo.timestamp)
    doc["signed"]["meta"] = {}
    with pytest.raises(FormatError, match="no sha256 for 'snapshot'"):
        Metadata.from_bytes(json.dumps(doc).encode(), Timestamp)


def test_repository_chain_verifies_and_detects_tampering(repo: Repo) -> None:
    rel = PrivateKey.generate("ecdsa")
    repo.delegate("targets/releases", rel, paths=("v",))
    repo.add_target("v1", b"manifest", role="targets/releases")
    repo.sign_all({"targets/releases": [rel]})
    assert repo.root and repo.targets and repo.snapshot and repo.timestamp
    root = repo.root.signed
    for role, md in [(TARGETS, repo.targets), (SNAPSHOT, repo.snapshot)]:
        keys, threshold = root.role_keys(role)
        assert md.verify(keys, threshold).verified
    delegated = repo.targets.signed.delegations.get("targets/releases")
    assert delegated is not None
    assert repo.delegations["targets/releases"].verify(
        repo.targets.signed.delegations.keys, delegated).verified
    snap = repo.snapshot.signed
    snap.meta[ROOT].check(repo.root.to_bytes(), "root")
    snap.meta["targets/releases"].check(repo.delegations["targets/releases"].to_bytes(), "rel")
    repo.timestamp.signed.meta[SNAPSHOT].check(repo.snapshot.to_bytes(), "snapshot")
    with pytest.raises(VerificationError, match="checksum"):
        snap.meta[TARGETS].check(repo.targets.to_bytes()[:-1] + b" ", "targets")
    with pytest.raises(VerificationError, match="bytes where"):
        snap.meta[TARGETS].check(repo.targets.to_bytes() + b" ", "targets")
    target = repo.delegations["targets/releases"].signed.targets["v1"]
    target.check(b"manifest", "v1")
    assert FileMeta.for_bytes(b"manifest").same_file(target)
