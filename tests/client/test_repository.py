"""Publishing with the trust client: init, tags, signers, rotation, threshold signing."""

from __future__ import annotations

from pathlib import Path

import pytest
from inprocess import ASGIFetcher

from countersign.client.cache import MetadataCache
from countersign.client.remote import NotaryRemote
from countersign.client.repository import (
    PendingUpdate,
    SigningKeyError,
    ThresholdPendingError,
    TrustRepository,
)
from countersign.client.updater import Updater
from countersign.errors import CountersignError, ServerRejectedError, VerificationError
from countersign.keystore import KeyStore, StaticPassphrases
from countersign.server.app import TrustServer
from countersign.tuf import ROOT, SNAPSHOT, TARGETS, TIMESTAMP, FileMeta, PrivateKey

GUN = "registry.example.com:5000/team/app"
MANIFEST = FileMeta.for_bytes(b'{"schemaVersion":2}', algorithms=("sha256",))


def _party(app: TrustServer, directory: Path) -> TrustRepository:
    store = KeyStore(directory, StaticPassphrases("party-passphrase"))
    return TrustRepository(GUN, NotaryRemote(ASGIFetcher(app), GUN),
                           MetadataCache(directory, GUN), store)


def test_init_sign_revoke(trust_app: TrustServer, tmp_path: Path) -> None:
    owner = _party(trust_app, tmp_path / "owner")
    state = owner.init()
    root = state.state.root.signed
    assert root.keys[root.roles[ROOT].keyids[0]].keytype == "ecdsa-x509"
    roles = sorted(k.role or "" for k in owner.keystore.list())
    assert roles == ["root", "targets"]  # snapshot and timestamp keys are the server's
    owner.sign_tag("v1", MANIFEST)
    reader = Updater(GUN, NotaryRemote(ASGIFetcher(trust_app), GUN),
                     MetadataCache(tmp_path / "reader", GUN))
    target = reader.refresh().lookup("v1")
    assert target is not None and target.meta.same_file(MANIFEST)
    owner.revoke_tag("v1")
    assert reader.refresh().lookup("v1") is None
    with pytest.raises(CountersignError, match="not signed"):
        owner.revoke_tag("v1")


def test_client_managed_snapshot(trust_app: TrustServer, tmp_path: Path) -> None:
    owner = _party(trust_app, tmp_path / "owner")
    owner.init(server_managed_snapshot=False)
    assert "snapshot" in {k.role for k in owner.keystore.list()}
    state = owner.sign_tag("v1", MANIFEST)
    snapshot = state.state.snapshot
    assert snapshot is not None
    snapshot_keys = state.state.root.signed.roles[SNAPSHOT].keyids
    assert {s.keyid for s in snapshot.signatures} == set(snapshot_keys)
    # to the server and back
    owner.rotate_key(SNAPSHOT, server_managed=True)
    owner.sign_tag("v2", MANIFEST)
    owner.rotate_key(SNAPSHOT)
    state = owner.sign_tag("v3", MANIFEST)
    assert state.lookup("v3") is not None
    owner.rotate_key(TIMESTAMP, server_managed=True)
    owner.rotate_key(TARGETS)
    state = owner.sign_tag("v4", MANIFEST)
    assert state.state.root.signed.version == 5
    assert {t.name for t in state.report.targets} == {"v1", "v2", "v3", "v4"}


def test_delegated_signer_from_its_own_trust_dir(trust_app: TrustServer, tmp_path: Path) -> None:
    owner = _party(trust_app, tmp_path / "owner")
    owner.init()
    stage = _party(trust_app, tmp_path / "stage")
    key = PrivateKey.generate()
    stage.keystore.add(key, role="targets/releases")
    owner.add_signer("targets/releases", [key.public_key])
    # the stage holds no targets key: it signs into the delegation it holds a key for
    state = stage.sign_tag("v1", MANIFEST)
    found = state.lookup("v1", ("targets/releases",))
    assert found is not None and found.role == "targets/releases"
    # the owner now has delegations but no key of one of them
    with pytest.raises(SigningKeyError, match="no valid signing keys"):
        owner.sign_tag("v2", MANIFEST)
    owner.sign_tag("v2", MANIFEST, roles=[TARGETS])
    owner.remove_signer("targets/releases")
    assert stage.refresh().lookup("v1") is None


def test_a_refused_publish_leaves_nothing_behind(trust_app: TrustServer, tmp_path: Path) -> None:
    owner = _party(trust_app, tmp_path / "owner")
    owner.init()
    key = PrivateKey.generate()
    owner.keystore.add(key, role="targets/static-tested")
    owner.add_signer("targets/static-tested", [key.public_key], paths=("build-",))
    with pytest.raises(VerificationError, match="may not sign 'latest'"):
        owner.sign_tag("latest", MANIFEST, roles=["targets/static-tested"])
    owner.sign_tag("build-1", MANIFEST, roles=["targets/static-tested"])
    assert owner.refresh().lookup("build-1") is not None


def test_threshold_signing_by_two_parties(trust_app: TrustServer, tmp_path: Path) -> None:
    owner = _party(trust_app, tmp_path / "owner")
    owner.init()
    alice, bob = _party(trust_app, tmp_path / "alice"), _party(trust_app, tmp_path / "bob")
    alice_key, bob_key = PrivateKey.generate(), PrivateKey.generate()
    alice.keystore.add(alice_key, role="targets/release-board")
    bob.keystore.add(bob_key, role="targets/release-board")
    owner.add_signer("targets/release-board", [alice_key.public_key, bob_key.public_key],
                     threshold=2)
    with pytest.raises(CountersignError, match="more than the 2 distinct keys"):
        owner.add_signer("targets/release-board", [alice_key.public_key], threshold=3)

    def add(targets):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(targets, targets={**targets.targets, "v1": MANIFEST})

    # alice alone cannot publish, directly or through a pending update
    with pytest.raises(ThresholdPendingError, match="needs 2 signatures"):
        alice.sign_tag("v1", MANIFEST, roles=["targets/release-board"])
    pending = alice.prepare("targets/release-board", add)
    assert alice.status(pending).distinct_signers == 1
    with pytest.raises(ThresholdPendingError, match="1 of the 2"):
        alice.submit(pending)
    # the server refuses the half-signed file too
    with pytest.raises(ServerRejectedError, match="ErrBadTargets"):
        alice.remote.publish({"targets/release-board": pending.metadata.to_bytes()})
    # alice signing again does not count twice
    with pytest.raises(SigningKeyError, match="has not signed already"):
        alice.cosign(pending)
    passed_along = PendingUpdate.from_json(pending.to_json())
    cosigned = bob.cosign(passed_along)
    assert bob.status(cosigned).verified
    state = bob.submit(cosigned)
    assert state.lookup("v1", ("targets/release-board",)) is not None
    signed = state.state.roles["targets/release-board"].signatures
    assert signed.distinct_signers == 2
    # a stale pending update is refused
    with pytest.raises(ServerRejectedError, match="changed since"):
        bob.submit(cosigned)


def test_pending_update_files_are_checked(tmp_path: Path) -> None:
    for bad in (b"", b"{}", b'{"countersign_pending_update": 1}', b"[1]",
                b'{"countersign_pending_update": 1, "gun": "g", "role": "targets/x", '
                b'"metadata": "!!"}'):
        with pytest.raises(CountersignError):
            PendingUpdate.from_json(bad)
