"""Attacks on the trust client, each played by a malicious server or mirror.

In every test the attacker (a ``rewrite`` hook of :class:`ASGIFetcher`, old bytes kept
from an earlier publish, or keys the test holds: the server's own timestamp and
snapshot keys, read from ``trust_app.keys``, or a stolen targets key) tries to make
the client trust something it must not. The client must refuse with a specific
countersign error, and its cache must not move below what it trusted. Where it
matters, a test also runs a positive control: the same set-up without the one thing
the check refuses is accepted, so the refusal is shown to come from that check.
docs/security.md maps every attack to the check that stops it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from asgi import call
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from inprocess import ASGIFetcher
from serverrepo import Repo, _get, _post

from countersign.client.cache import MetadataCache
from countersign.client.fetcher import Fetcher, Response
from countersign.client.pinning import TrustPinning, TrustPinningError, load_trust_pinning
from countersign.client.remote import MAX_TIMESTAMP, NotaryRemote
from countersign.client.updater import Updater
from countersign.errors import (
    CanonicalJSONError,
    DownloadError,
    ExpiredMetadataError,
    RollbackError,
    VerificationError,
)
from countersign.server.app import TrustServer
from countersign.tuf import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    DelegatedRole,
    Delegations,
    FileMeta,
    GoTime,
    Metadata,
    PrivateKey,
    PublicKey,
    Role,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    make_certificate,
    new_targets,
    root_certificate_key,
)
from countersign.tuf.metadata import Signed

GUN = "registry.example.com:5000/team/app"
OTHER = "registry.example.com:5000/other/app"
TUF = "/_trust/tuf/"
NOW = dt.datetime.now(dt.UTC)
LATER = dt.timedelta(days=15)  # past the 14 days a timestamp lives


# --- the attacker's tools ----------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_name(path: str) -> str:
    return path.split(TUF, 1)[1] if TUF in path else path


Answer = bytes | Callable[[Response], Response]


class Mirror:
    """A rewrite hook: the server's answers, except for the files the attacker chose."""

    def __init__(self) -> None:
        self.files: dict[str, Answer] = {}
        self.asked: list[str] = []

    def __call__(self, method: str, path: str, response: Response) -> Response:
        name = _file_name(path)
        self.asked.append(name)
        answer = self.files.get(name) if method == "GET" else None
        if answer is None:
            return response
        if callable(answer):
            return answer(response)
        return Response(200, answer)

    def publish(self, role: str, data: bytes) -> None:
        """Serve ``data`` as the current ``role`` and under its hash, as a server would."""
        self.files[f"{role}.json"] = data
        self.files[f"{role}.{_sha(data)}.json"] = data


class ServerKeys:
    """The trust server's online keys, held by whoever compromised the server."""

    def __init__(self, app: TrustServer, gun: str = GUN) -> None:
        self.app, self.gun = app, gun
        status, body = _get(app, "root.json", gun)
        assert status == 200
        self.root: Metadata[Root] = Metadata.from_bytes(body, Root)

    def sign(self, role: str, signed: Signed) -> Metadata[Any]:
        keys, _ = self.root.signed.role_keys(role)
        signers = self.app.keys.signers(self.gun, role, keys.values())
        assert signers, f"the server holds no {role} key"
        listed = {k.canonical_key_id: k for k in keys.values()}
        md: Metadata[Any] = Metadata(signed)
        for signer in signers:
            md = md.sign(signer, listed[signer.canonical_key_id])
        return md

    def snapshot(self, files: Mapping[str, bytes], version: int) -> bytes:
        meta = {role: FileMeta.for_bytes(data) for role, data in files.items()}
        expires = GoTime.now().add(dt.timedelta(days=365))
        return self.sign(SNAPSHOT, Snapshot(expires, version, meta)).to_bytes()

    def timestamp(self, snapshot: bytes, version: int, *,
                  expires: GoTime | None = None) -> bytes:
        expires = expires or GoTime.now().add(dt.timedelta(days=14))
        signed = Timestamp(expires, version, {SNAPSHOT: FileMeta.for_bytes(snapshot)})
        return self.sign(TIMESTAMP, signed).to_bytes()


def _forge(app: TrustServer, mirror: Mirror, files: Mapping[str, bytes], *,
           snapshot_version: int, timestamp_version: int) -> bytes:
    """Play a compromised server: pin ``files`` in a new snapshot and timestamp."""
    keys = ServerKeys(app)
    snapshot = keys.snapshot(files, snapshot_version)
    mirror.publish(SNAPSHOT, snapshot)
    for role, data in files.items():
        mirror.publish(role, data)
    timestamp = keys.timestamp(snapshot, timestamp_version)
    mirror.files["timestamp.json"] = timestamp
    return timestamp


class Recording:
    """A fetcher wrapper that notes the bound the client sets on every download."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner = inner
        self.base_url = inner.base_url
        self.asked: list[tuple[str, int]] = []

    def get(self, path: str, *, max_length: int) -> Response:
        self.asked.append((_file_name(path), max_length))
        return self.inner.get(path, max_length=max_length)

    def request(self, method: str, path: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None,
                max_length: int = 1 << 20) -> Response:
        return self.inner.request(method, path, body=body, headers=headers,
                                  max_length=max_length)


def _client(app: TrustServer, trust_dir: Path, mirror: Mirror | None = None, *,
            pinning: TrustPinning | None = None, now: dt.datetime | None = None,
            remote_gun: str = GUN, wrap: Callable[[Fetcher], Fetcher] | None = None
            ) -> Updater:
    fetcher: Fetcher = ASGIFetcher(app, rewrite=mirror)
    if wrap is not None:
        fetcher = wrap(fetcher)
    return Updater(GUN, NotaryRemote(fetcher, remote_gun), MetadataCache(trust_dir, GUN),
                   pinning, now=now)


def _cached(updater: Updater) -> dict[str, bytes]:
    """Every cached file of the GUN, by role, as bytes."""
    directory = updater.cache.directory
    if not directory.is_dir():
        return {}
    return {str(p.relative_to(directory).with_suffix("")): p.read_bytes()
            for p in sorted(directory.rglob("*.json"))}


def _version(data: bytes) -> int:
    version: int = Metadata.from_bytes(data).signed.version
    return version


def _published(app: TrustServer) -> Repo:
    """A repository with tag v1 in targets (root v1, targets v2), timestamp v1."""
    repo = Repo(app)
    repo.add_target("v1", b"manifest one")
    assert repo.publish(ROOT, TARGETS)[0] == 200
    return repo


def _second_publish(repo: Repo) -> None:
    repo.add_target("v2", b"manifest two")
    assert repo.publish(TARGETS)[0] == 200


def _signed_root(repo: Repo, signers: Iterable[tuple[PrivateKey, PublicKey]] | None = None,
                 **changes: Any) -> Metadata[Root]:
    md: Metadata[Root] = Metadata(replace(repo.root.signed, **changes))
    for key, public in signers or [(repo.root_key, repo.root_public)]:
        md = md.sign(key, public)
    return md


def _with_root_key(repo: Repo, public: PublicKey, signer: PrivateKey | None = None,
                   **changes: Any) -> Metadata[Root]:
    """Repo's root with ``public`` as its only root key (a first root: signed by it)."""
    keys = {k: v for k, v in repo.root.signed.keys.items()
            if k not in repo.root.signed.roles[ROOT].keyids}
    keys[public.key_id] = public
    roles = {**repo.root.signed.roles, ROOT: Role((public.key_id,))}
    return _signed_root(repo, [(signer or repo.root_key, public)], keys=keys, roles=roles,
                        **changes)


def _delegating(repo: Repo, delegations: Iterable[tuple[DelegatedRole, list[PublicKey]]]
                ) -> None:
    keys: dict[str, PublicKey] = {}
    roles = []
    for role, publics in delegations:
        keys.update({p.key_id: p for p in publics})
        roles.append(role)
    repo.targets = Metadata(replace(
        repo.targets.signed.bump(role=TARGETS), delegations=Delegations(keys, tuple(roles)))
    ).sign(repo.targets_key, repo.targets_key.public_key)


# --- 1-3. rollback ------------------------------------------------------------------------


def test_rollback_of_timestamp(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = _published(trust_app)
    old = repo.served()
    _second_publish(repo)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    assert _version(before[TIMESTAMP]) == 2
    mirror.files["timestamp.json"] = old[TIMESTAMP]  # genuine, unexpired, version 1
    with pytest.raises(RollbackError,
                       match=r"^timestamp version 1 is older than the trusted version 2$"):
        client.refresh()
    assert _cached(client) == before


def test_rollback_of_snapshot(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = _published(trust_app)
    old = repo.served()
    _second_publish(repo)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    # a timestamp signed with the server's key pins the old snapshot (genuine, signed by
    # the server's snapshot key), which the server still serves by its hash
    forged = ServerKeys(trust_app).timestamp(old[SNAPSHOT], version=3)
    mirror.files["timestamp.json"] = forged
    with pytest.raises(RollbackError,
                       match=r"^snapshot version 1 is older than the trusted version 2$"):
        client.refresh()
    # the timestamp verified (it is the compromised key's) and was kept, as TUF and
    # notary keep a verified timestamp before the snapshot; nothing below it moved
    assert _cached(client) == {**before, TIMESTAMP: forged}


def test_rollback_of_targets(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = _published(trust_app)
    old = repo.served()
    _second_publish(repo)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    # the old targets is genuine (the owner signed it); snapshot and timestamp pinning it
    # consistently are signed with the server's keys
    forged = _forge(trust_app, mirror, {ROOT: old[ROOT], TARGETS: old[TARGETS]},
                    snapshot_version=3, timestamp_version=3)
    with pytest.raises(RollbackError,
                       match=r"^targets version 2 is older than the trusted version 3$"):
        client.refresh()
    after = _cached(client)
    assert after[TARGETS] == before[TARGETS] and after[ROOT] == before[ROOT]
    assert after[TIMESTAMP] == forged  # the verified roles above it were kept


def test_rollback_of_a_delegation(trust_app: TrustServer, tmp_path: Path) -> None:
    """Unlike a bad signature, which only skips the delegation, a rollback is fatal."""
    repo = Repo(trust_app)
    qa, tester = "targets/qa", PrivateKey.generate()
    _delegating(repo, [(DelegatedRole(qa, (tester.public_key.key_id,), 1, ("",)),
                        [tester.public_key])])
    first = new_targets(targets={"tested": FileMeta.for_bytes(b"one")}).sign(
        tester, tester.public_key)
    assert _post(trust_app, {ROOT: repo.root.to_bytes(), TARGETS: repo.targets.to_bytes(),
                             qa: first.to_bytes()})[0] == 200
    second = Metadata(replace(first.signed.bump(role=TARGETS), targets={
        "tested": FileMeta.for_bytes(b"two")})).sign(tester, tester.public_key)
    assert _post(trust_app, {qa: second.to_bytes()})[0] == 200
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    current = repo.served()
    _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: current[TARGETS],
                               qa: first.to_bytes()}, snapshot_version=3, timestamp_version=3)
    with pytest.raises(RollbackError,
                       match=rf"^{qa} version 1 is older than the trusted version 2$"):
        client.refresh()
    assert _cached(client)[qa] == before[qa]


def test_rollback_within_one_update_across_a_root_rotation(trust_app: TrustServer,
                                                            tmp_path: Path) -> None:
    """The client saw timestamp 3 in the first attempt of an update; after the root
    rotation that attempt led to, the mirror answers the retry with timestamp 2."""
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()  # timestamp 1, root 1
    repo.root = _signed_root(repo, version=2)
    assert repo.publish(ROOT)[0] == 200  # timestamp 2 pins a snapshot pinning root 2
    older = repo.served()[TIMESTAMP]
    _second_publish(repo)  # timestamp 3
    newest = repo.served()[TIMESTAMP]
    answers = iter([newest, older])
    mirror.files["timestamp.json"] = lambda _: Response(200, next(answers))
    with pytest.raises(RollbackError,
                       match=r"^timestamp version 2 is older than the trusted version 3$"):
        client.refresh()
    assert _cached(client)[TIMESTAMP] == newest  # never back to 2
    mirror.files.clear()
    assert client.refresh().lookup("v2") is not None


# --- 4. freeze --------------------------------------------------------------------------


def test_freeze_with_a_timestamp_signed_to_expire_in_the_past(trust_app: TrustServer,
                                                               tmp_path: Path) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    expired = GoTime.now().add(dt.timedelta(minutes=-1))
    mirror.files["timestamp.json"] = ServerKeys(trust_app).timestamp(
        repo.served()[SNAPSHOT], version=2, expires=expired)
    with pytest.raises(ExpiredMetadataError, match=r"^timestamp expired at "):
        client.refresh()
    assert _cached(client) == before


def test_freeze_by_serving_the_same_timestamp_past_its_expiry(trust_app: TrustServer,
                                                               tmp_path: Path) -> None:
    repo = _published(trust_app)
    frozen = repo.served()[TIMESTAMP]
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    mirror.files["timestamp.json"] = frozen  # the mirror stopped updating
    client.now = dt.datetime.now(dt.UTC) + LATER
    with pytest.raises(ExpiredMetadataError, match=r"^timestamp expired at "):
        client.refresh()
    assert _cached(client) == before


def test_freeze_through_the_cached_timestamp_fallback(trust_app: TrustServer,
                                                       tmp_path: Path) -> None:
    _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    mirror.files["timestamp.json"] = lambda _: Response(503, b"")
    # while the cached timestamp is fresh, an unavailable server falls back to it ...
    refreshed = client.refresh()
    assert any("using the cached timestamp" in w for w in refreshed.report.warnings)
    # ... but never once it has expired
    client.now = dt.datetime.now(dt.UTC) + LATER
    with pytest.raises(ExpiredMetadataError, match=r"^timestamp expired at "):
        client.refresh()
    assert _cached(client) == before


def test_freeze_with_an_expired_root(trust_app: TrustServer, tmp_path: Path) -> None:
    """The server offers nothing newer than a cached root that has expired."""
    repo = Repo(trust_app)
    repo.root = _signed_root(repo, expires=GoTime.now().add(dt.timedelta(hours=1)))
    assert repo.publish(ROOT, TARGETS)[0] == 200
    client = _client(trust_app, tmp_path)
    client.refresh()
    before = _cached(client)
    client.now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)  # the rest is fresh
    with pytest.raises(ExpiredMetadataError,
                       match=rf"^the trusted root of {GUN} expired at .* offers no newer root$"):
        client.refresh()
    assert _cached(client) == before


# --- 5-6. mix-and-match, arbitrary targets -------------------------------------------------


@pytest.mark.parametrize("role", [SNAPSHOT, TARGETS])
def test_mix_and_match(trust_app: TrustServer, tmp_path: Path, role: str) -> None:
    """A genuine file from another time served for the hash the current parent pins."""
    repo = _published(trust_app)
    old = repo.served()
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    _second_publish(repo)
    current = repo.served()
    mirror.files[f"{role}.{_sha(current[role])}.json"] = old[role]
    # refused by hash, by length, or (an older file can be longer: Go times drop trailing
    # zeros) at the download bound, which is the pinned length
    with pytest.raises((VerificationError, DownloadError),
                       match=rf"^({role}\.json: (\d+ bytes where \d+ were signed|sha256 "
                       r"checksum does not match the signed [0-9a-f]{64})|/v2/\S+/"
                       rf"{role}\.[0-9a-f]{{64}}\.json: more than {len(current[role])} bytes; "
                       r"refusing the rest)$"):
        client.refresh()
    moved = {TIMESTAMP: current[TIMESTAMP]}  # the verified roles above it are current
    if role == TARGETS:
        moved[SNAPSHOT] = current[SNAPSHOT]
    assert _cached(client) == {**before, **moved}


def _retarget(data: bytes, name: str, content: bytes) -> bytes:
    """``data`` with the hash of target ``name`` changed, its signatures kept."""
    md: Metadata[Targets] = Metadata.from_bytes(data, Targets)
    targets = {**md.signed.targets, name: FileMeta.for_bytes(content, algorithms=("sha256",))}
    return Metadata(replace(md.signed, targets=targets), md.signatures).to_bytes()


def test_arbitrary_target_by_altering_the_targets_file(trust_app: TrustServer,
                                                       tmp_path: Path) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    _second_publish(repo)
    current = repo.served()
    altered = _retarget(current[TARGETS], "v1", b"an image the attacker built")
    assert len(altered) == len(current[TARGETS])
    # a mirror: the snapshot pins the targets file by hash
    mirror.files[f"targets.{_sha(current[TARGETS])}.json"] = altered
    with pytest.raises(VerificationError,
                       match=r"^targets\.json: sha256 checksum does not match the signed "):
        client.refresh()
    assert _cached(client)[TARGETS] == before[TARGETS]
    # a compromised server also re-pins it: the owner's signature no longer verifies
    mirror.files.clear()
    _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: altered},
           snapshot_version=3, timestamp_version=3)
    with pytest.raises(VerificationError,
                       match=r"^valid signatures did not meet threshold for targets: 0 of 1$"):
        client.refresh()
    assert _cached(client)[TARGETS] == before[TARGETS]


def test_duplicate_keys_are_refused(trust_app: TrustServer, tmp_path: Path) -> None:
    """A genuine timestamp with an earlier duplicate ``version``: Go's decoder keeps the
    last value, so the signature still verifies there, while a first-wins reader would
    see version 999. countersign's strict reader refuses the document."""
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    genuine = repo.served()[TIMESTAMP]
    assert genuine.startswith(b'{"signed":{')
    mirror.files["timestamp.json"] = genuine.replace(b'{"signed":{',
                                                     b'{"signed":{"version":999,', 1)
    with pytest.raises(CanonicalJSONError,
                       match=r"^timestamp\.json: duplicate key 'version' in a JSON object$"):
        client.refresh()
    assert _cached(client) == before


# --- 7-8. endless data, slow retrieval -------------------------------------------------------


def test_endless_timestamp(trust_app: TrustServer, tmp_path: Path) -> None:
    _published(trust_app)
    mirror = Mirror()
    recording: list[Recording] = []

    def wrap(inner: Fetcher) -> Fetcher:
        recording.append(Recording(inner))
        return recording[0]

    client = _client(trust_app, tmp_path, mirror, wrap=wrap)
    client.refresh()
    before = _cached(client)
    mirror.files["timestamp.json"] = b"{" + b" " * MAX_TIMESTAMP + b"}"
    with pytest.raises(DownloadError, match=rf"timestamp\.json: more than {MAX_TIMESTAMP} bytes"):
        client.refresh()
    assert recording[0].asked[-1] == ("timestamp.json", MAX_TIMESTAMP)  # 1 MiB, as notary
    assert _cached(client) == before


class Endless:
    """A fetcher whose timestamp answer never ends; it reads only what it is allowed."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner = inner
        self.base_url = inner.base_url
        self.read = 0

    def get(self, path: str, *, max_length: int) -> Response:
        if not path.endswith("/timestamp.json"):
            return self.inner.get(path, max_length=max_length)
        for chunk in itertools.repeat(b" " * 65536):
            self.read += len(chunk)
            if self.read > max_length:
                raise DownloadError(f"{path}: more than {max_length} bytes; refusing the rest")
        raise AssertionError("unreachable")  # pragma: no cover

    def request(self, method: str, path: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None,
                max_length: int = 1 << 20) -> Response:
        return self.inner.request(method, path, body=body, headers=headers,
                                  max_length=max_length)


def test_endless_timestamp_stream_is_cut_at_the_bound(trust_app: TrustServer,
                                                      tmp_path: Path) -> None:
    _published(trust_app)
    endless: list[Endless] = []

    def wrap(inner: Fetcher) -> Fetcher:
        endless.append(Endless(inner))
        return endless[0]

    client = _client(trust_app, tmp_path, wrap=wrap)
    with pytest.raises(DownloadError, match="more than 1048576 bytes"):
        client.refresh()
    assert endless[0].read <= MAX_TIMESTAMP + 65536


def test_endless_snapshot(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    recording: list[Recording] = []

    def wrap(inner: Fetcher) -> Fetcher:
        recording.append(Recording(inner))
        return recording[0]

    client = _client(trust_app, tmp_path, mirror, wrap=wrap)
    client.refresh()
    before = _cached(client)
    _second_publish(repo)
    current = repo.served()
    name = f"snapshot.{_sha(current[SNAPSHOT])}.json"
    mirror.files[name] = current[SNAPSHOT] + b" " * 4096
    length = len(current[SNAPSHOT])
    with pytest.raises(DownloadError, match=rf"{name}: more than {length} bytes"):
        client.refresh()
    assert recording[0].asked[-1] == (name, length)  # exactly the length the timestamp pins
    assert _cached(client) == {**before, TIMESTAMP: current[TIMESTAMP]}


class Trickle:
    """A fetcher whose answer for one file trickles in and then gives up, as the HTTPS
    fetcher does below its minimum transfer rate (tests/client/test_http.py)."""

    def __init__(self, inner: Fetcher, slow: Callable[[str], bool], error: DownloadError):
        self.inner, self.slow, self.error = inner, slow, error
        self.base_url = inner.base_url

    def get(self, path: str, *, max_length: int) -> Response:
        if self.slow(_file_name(path)):
            for _ in range(3):
                time.sleep(0.01)  # a byte now and then
            raise self.error
        return self.inner.get(path, max_length=max_length)

    def request(self, method: str, path: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None,
                max_length: int = 1 << 20) -> Response:
        return self.inner.request(method, path, body=body, headers=headers,
                                  max_length=max_length)


@pytest.mark.parametrize("role", [TIMESTAMP, SNAPSHOT])
def test_slow_retrieval(trust_app: TrustServer, tmp_path: Path, role: str) -> None:
    repo = _published(trust_app)
    client = _client(trust_app, tmp_path)
    client.refresh()
    before = _cached(client)
    _second_publish(repo)
    error = DownloadError(f"{role}: fewer than 1024 bytes a second; giving up")
    trickle = Trickle(client.remote.fetcher, lambda name: name.startswith(f"{role}."), error)
    client.remote.fetcher = trickle
    with pytest.raises(DownloadError) as caught:
        client.refresh()
    assert caught.value is error  # surfaced unchanged; no fallback to the cached timestamp
    moved = {TIMESTAMP: repo.served()[TIMESTAMP]} if role == SNAPSHOT else {}
    assert _cached(client) == {**before, **moved}


# --- 9. key compromise below the threshold ---------------------------------------------------


def _double_signature(md: Metadata[Any], key: PrivateKey, public: PublicKey) -> Metadata[Any]:
    """Two different valid signatures by the same key under the same key ID."""
    first, second = (md.sign(key, public).signatures[-1] for _ in range(2))
    assert first.sig != second.sig
    return Metadata(md.signed, (first, second), md.signed_bytes)


def test_targets_threshold_is_not_met_by_one_stolen_key(trust_app: TrustServer,
                                                        tmp_path: Path) -> None:
    repo = Repo(trust_app)
    stolen, second = repo.targets_key, PrivateKey.generate()
    # the same stolen key also as a certificate: another key ID, the same key
    stolen_cert = PublicKey.from_certificates([make_certificate(stolen, "targets")])
    assert stolen_cert.key_id != stolen.public_key.key_id
    assert stolen_cert.canonical_key_id == stolen.public_key.canonical_key_id
    keys = {**repo.root.signed.keys, second.public_key.key_id: second.public_key,
            stolen_cert.key_id: stolen_cert}
    listed = (stolen.public_key.key_id, stolen.public_key.key_id, stolen_cert.key_id,
              second.public_key.key_id)  # one key listed three times, and a second key
    repo.root = _signed_root(repo, keys=keys,
                             roles={**repo.root.signed.roles, TARGETS: Role(listed, 2)})
    repo.add_target("v1", b"manifest one")
    repo.targets = repo.targets.sign(second, second.public_key)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    current = repo.served()

    evil: Metadata[Targets] = Metadata(replace(
        repo.targets.signed.bump(role=TARGETS),
        targets={**repo.targets.signed.targets, "v1": FileMeta.for_bytes(b"evil")}))
    attempts = {
        "one signature": evil.sign(stolen, stolen.public_key),
        "two signatures by one key": _double_signature(evil, stolen, stolen.public_key),
        "one key under two IDs": evil.sign(stolen, stolen.public_key).sign(stolen,
                                                                           stolen_cert),
    }
    for version, (what, forged) in enumerate(attempts.items(), start=2):
        mirror.files.clear()
        _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: forged.to_bytes()},
               snapshot_version=version, timestamp_version=version)
        with pytest.raises(VerificationError, match=r"^valid signatures did not meet "
                           r"threshold for targets: 1 of 2$"):
            client.refresh()
        assert _cached(client)[TARGETS] == before[TARGETS], what
    # positive control: with the second key too, the same forgery would be trusted
    mirror.files.clear()
    both = evil.sign(stolen, stolen.public_key).sign(second, second.public_key)
    _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: both.to_bytes()},
           snapshot_version=9, timestamp_version=9)
    target = client.refresh().lookup("v1")
    assert target is not None and target.meta == FileMeta.for_bytes(b"evil")


def test_delegation_threshold_is_not_met_by_one_stolen_key(trust_app: TrustServer,
                                                           tmp_path: Path) -> None:
    repo = Repo(trust_app)
    stolen, second = PrivateKey.generate(), PrivateKey.generate()
    qa = "targets/qa"
    _delegating(repo, [(DelegatedRole(qa, (stolen.public_key.key_id,
                                           second.public_key.key_id), 2, ("",)),
                        [stolen.public_key, second.public_key])])
    honest = new_targets(targets={"tested": FileMeta.for_bytes(b"tested image")}).sign(
        stolen, stolen.public_key).sign(second, second.public_key)
    assert _post(trust_app, {ROOT: repo.root.to_bytes(), TARGETS: repo.targets.to_bytes(),
                             qa: honest.to_bytes()})[0] == 200
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    assert client.refresh().lookup("tested", (qa,)) is not None
    before = _cached(client)
    current = repo.served()
    evil = Metadata(replace(honest.signed.bump(role=TARGETS), targets={
        **honest.signed.targets, "evil": FileMeta.for_bytes(b"evil")}))
    for version, forged in enumerate([evil.sign(stolen, stolen.public_key),
                                      _double_signature(evil, stolen, stolen.public_key)],
                                     start=2):
        mirror.files.clear()
        _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: current[TARGETS],
                                   qa: forged.to_bytes()},
               snapshot_version=version, timestamp_version=version)
        refreshed = client.refresh()  # an invalid delegation only loses its subtree
        assert refreshed.lookup("evil") is None and refreshed.lookup("tested") is None
        assert any(w == f"skipping {qa}: valid signatures did not meet threshold for "
                   f"{qa}: 1 of 2" for w in refreshed.report.warnings)
        assert _cached(client)[qa] == before[qa]


# --- 10. a delegation signing outside its paths ---------------------------------------------


def test_delegation_cannot_sign_outside_its_paths(trust_app: TrustServer,
                                                  tmp_path: Path) -> None:
    repo = Repo(trust_app)
    releases, qa = "targets/releases", "targets/releases/qa"
    signer, tester = PrivateKey.generate(), PrivateKey.generate()
    _delegating(repo, [(DelegatedRole(releases, (signer.public_key.key_id,), 1,
                                      ("release/",)), [signer.public_key])])
    # releases delegates on to qa with every path: qa may still only sign release/...
    delegations = Delegations({tester.public_key.key_id: tester.public_key},
                              (DelegatedRole(qa, (tester.public_key.key_id,), 1, ("",)),))
    released = new_targets(targets={
        "release/1.0": FileMeta.for_bytes(b"one"), "latest": FileMeta.for_bytes(b"evil"),
    }, delegations=delegations).sign(signer, signer.public_key)
    tested = new_targets(targets={"release/2.0": FileMeta.for_bytes(b"two")}).sign(
        tester, tester.public_key)
    assert _post(trust_app, {ROOT: repo.root.to_bytes(), TARGETS: repo.targets.to_bytes(),
                             releases: released.to_bytes(), qa: tested.to_bytes()})[0] == 200
    refreshed = _client(trust_app, tmp_path).refresh()
    found = refreshed.lookup("release/1.0")
    assert found is not None and found.role == releases
    assert refreshed.lookup("latest") is None
    assert refreshed.lookup("release/2.0") is None
    warnings = refreshed.report.warnings
    assert f"{releases} lists 'latest' outside its paths; ignored" in warnings
    assert f"{qa} lists 'release/2.0' outside its paths; ignored" in warnings


# --- 11-12. roots: rotation, another repository -----------------------------------------------


def test_root_rotation_without_the_old_roots_threshold(trust_app: TrustServer,
                                                       tmp_path: Path) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)
    current = repo.served()
    thief = PrivateKey.generate()
    thief_cert = root_certificate_key(thief, GUN)
    keys = {**repo.root.signed.keys, thief_cert.key_id: thief_cert}
    roles = {**repo.root.signed.roles, ROOT: Role((thief_cert.key_id,))}
    forged = _signed_root(repo, [(thief, thief_cert)], version=2, keys=keys, roles=roles)
    _forge(trust_app, mirror, {ROOT: forged.to_bytes(), TARGETS: current[TARGETS]},
           snapshot_version=2, timestamp_version=2)
    with pytest.raises(VerificationError,
                       match=rf"^new root of {GUN} is not signed by the threshold of the "
                       r"trusted root: 0 of 1$"):
        client.refresh()
    assert _cached(client)[ROOT] == before[ROOT]
    # positive control: signed by the trusted root key as well, it is a valid rotation
    both = forged.sign(repo.root_key, repo.root_public)
    mirror.files.clear()
    _forge(trust_app, mirror, {ROOT: both.to_bytes(), TARGETS: current[TARGETS]},
           snapshot_version=3, timestamp_version=3)
    assert client.refresh().state.root.signed.version == 2
    assert _cached(client)[ROOT] == both.to_bytes()


def test_rotated_root_is_fetched_by_the_hash_the_snapshot_pins(trust_app: TrustServer,
                                                               tmp_path: Path) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    recording: list[Recording] = []

    def wrap(inner: Fetcher) -> Fetcher:
        recording.append(Recording(inner))
        return recording[0]

    client = _client(trust_app, tmp_path, mirror, wrap=wrap)
    client.refresh()
    before = _cached(client)
    roots = []
    for version in (2, 3):
        repo.root = _signed_root(repo, version=version)
        assert repo.publish(ROOT)[0] == 200
        roots.append(repo.root.to_bytes())
    # a mirror answering with another genuine root (version 2) for the pinned root 3
    pinned = f"root.{_sha(roots[1])}.json"
    mirror.files[pinned] = mirror.files["root.json"] = roots[0]
    with pytest.raises(VerificationError,
                       match=r"^root\.json: sha256 checksum does not match the signed "):
        client.refresh()
    assert (pinned, len(roots[1])) in recording[0].asked  # by hash, with the exact length
    assert _cached(client)[ROOT] == before[ROOT]
    mirror.files.clear()
    assert client.refresh().state.root.signed.version == 3


def test_first_root_for_another_repository(trust_app: TrustServer, tmp_path: Path) -> None:
    other = Repo(trust_app, gun=OTHER)
    assert other.publish(ROOT, TARGETS)[0] == 200
    client = _client(trust_app, tmp_path, remote_gun=OTHER)  # the server answers for OTHER
    with pytest.raises(VerificationError,
                       match=rf"^root of {GUN} has no valid root certificate$") as caught:
        client.refresh()
    assert caught.value.advice is not None
    assert f"root certificate CN {OTHER!r} does not match the GUN {GUN!r}" in caught.value.advice
    assert _cached(client) == {}


def test_trusted_repository_answered_with_another_repositorys_data(
        trust_app: TrustServer, tmp_path: Path) -> None:
    _published(trust_app)
    other = Repo(trust_app, gun=OTHER)
    other.add_target("v1", b"their image")
    assert other.publish(ROOT, TARGETS)[0] == 200
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    before = _cached(client)

    def theirs(method: str, path: str, response: Response) -> Response:
        status, headers, body = call(trust_app, method, path.replace(GUN, OTHER))
        return Response(status, body, headers)

    fetcher = client.remote.fetcher
    assert isinstance(fetcher, ASGIFetcher)
    fetcher.rewrite = theirs
    with pytest.raises(VerificationError,
                       match=rf"^root of {GUN} has no valid root certificate$"):
        client.refresh()
    assert _cached(client) == before


# --- 13. fast-forward ---------------------------------------------------------------------


@pytest.mark.parametrize("role", [TIMESTAMP, SNAPSHOT])
def test_fast_forward_and_recovery_by_key_rotation(trust_app: TrustServer, tmp_path: Path,
                                                   role: str) -> None:
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    honest = repo.served()
    huge = 1_000_000
    keys = ServerKeys(trust_app)  # the attacker has the server's online keys
    if role == TIMESTAMP:
        mirror.files["timestamp.json"] = keys.timestamp(honest[SNAPSHOT], version=huge)
    else:
        _forge(trust_app, mirror, {ROOT: honest[ROOT], TARGETS: honest[TARGETS]},
               snapshot_version=huge, timestamp_version=1)
    client.refresh()  # every signature is valid: the client now trusts version 1000000
    assert _version(_cached(client)[role]) == huge
    mirror.files.clear()
    # the honest server's metadata now looks like a rollback
    with pytest.raises(RollbackError,
                       match=rf"^{role} version 1 is older than the trusted version {huge}$"):
        client.refresh()
    # the owner rotates the compromised key: a new server key, a root listing it
    status, _, body = call(trust_app, "POST", f"/v2/{GUN}{TUF}{role}.key")
    assert status == 200
    fresh = PublicKey.from_dict(json.loads(body))
    repo.root = _signed_root(repo, version=2,
                             keys={**repo.root.signed.keys, fresh.key_id: fresh},
                             roles={**repo.root.signed.roles, role: Role((fresh.key_id,))})
    assert repo.publish(ROOT)[0] == 200
    # the client follows the rotation, drops the floors the old key set, and recovers
    refreshed = client.refresh()
    assert refreshed.state.root.signed.version == 2
    assert refreshed.lookup("v1") is not None
    assert _version(_cached(client)[role]) == 2


# --- trust pinning and first use -----------------------------------------------------------


def test_pinned_certificate_id_mismatch_is_refused(trust_app: TrustServer,
                                                   tmp_path: Path) -> None:
    repo = _published(trust_app)
    wrong = TrustPinning(certs={GUN: ["f" * 64],
                                "registry.example.com:5000/*": [repo.root_public.key_id]})
    client = _client(trust_app, tmp_path / "wrong", pinning=wrong)  # the GUN's pin wins
    with pytest.raises(VerificationError,
                       match=rf"^root of {GUN} has no valid root certificate$") as caught:
        client.refresh()
    assert caught.value.advice is not None
    assert "does not match the trust pinning" in caught.value.advice
    assert _cached(client) == {}
    for n, certs in enumerate(({GUN: [repo.root_public.key_id]},
                               {"registry.example.com:5000/*": [repo.root_public.key_id]})):
        pinned = TrustPinning(certs=certs)
        assert _client(trust_app, tmp_path / f"right{n}", pinning=pinned).refresh().lookup("v1")


def _ca(name: str) -> tuple[PrivateKey, x509.Certificate]:
    key = PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key.crypto_key).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key.crypto_key, hashes.SHA256()))
    return key, cert


def _issued(ca_key: PrivateKey, ca: x509.Certificate, key: PrivateKey,
            name: str) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key.crypto_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key.crypto_key, hashes.SHA256()))


def test_pinned_ca(trust_app: TrustServer, tmp_path: Path) -> None:
    ca_key, ca = _ca("Example Corp Notary CA")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.public_bytes(Encoding.PEM))
    pinning = TrustPinning(ca={"registry.example.com:5000/": bundle})
    # a notary-made self-signed root certificate is not issued by the pinned CA
    _published(trust_app)
    client = _client(trust_app, tmp_path / "self-signed", pinning=pinning)
    with pytest.raises(VerificationError,
                       match=rf"^root of {GUN} has no valid root certificate$") as caught:
        client.refresh()
    assert caught.value.advice is not None
    assert "does not match the trust pinning" in caught.value.advice
    assert _cached(client) == {}
    # nor one issued by another CA with the same name
    other_key, other_ca = _ca("Example Corp Notary CA")
    repo = Repo(trust_app, gun=OTHER)
    impostor = PublicKey.from_certificates([_issued(other_key, other_ca, repo.root_key, OTHER)])
    repo.root = _with_root_key(repo, impostor)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    client = Updater(OTHER, NotaryRemote(ASGIFetcher(trust_app), OTHER),
                     MetadataCache(tmp_path / "impostor", OTHER), pinning)
    with pytest.raises(VerificationError, match="has no valid root certificate"):
        client.refresh()
    # positive control: a root whose leaf the pinned CA issued is accepted
    third = "registry.example.com:5000/third/app"
    repo = Repo(trust_app, gun=third)
    issued = PublicKey.from_certificates([_issued(ca_key, ca, repo.root_key, third)])
    repo.root = _with_root_key(repo, issued)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    accepted = Updater(third, NotaryRemote(ASGIFetcher(trust_app), third),
                       MetadataCache(tmp_path / "issued", third), pinning).refresh()
    assert accepted.state.root.signed.roles[ROOT].keyids == (issued.key_id,)


def test_trust_on_first_use_disabled(trust_app: TrustServer, tmp_path: Path) -> None:
    _published(trust_app)
    client = _client(trust_app, tmp_path, pinning=TrustPinning(disable_tofu=True))
    with pytest.raises(TrustPinningError,
                       match=rf"^no trust pinning for {GUN} and trust on first use is "
                       r"disabled$") as caught:
        client.refresh()
    assert caught.value.advice == "pin the root certificate IDs or a CA for this repository"
    assert _cached(client) == {}


@pytest.mark.parametrize(("section", "reason"), [
    ({"disable-tofu": True}, "unknown key 'disable-tofu'"),
    ({"Disable_TOFU": True}, "unknown key 'Disable_TOFU'"),  # notary ignores case
    ({"cert": {GUN: ["0" * 64]}}, "unknown key 'cert'"),
    ({"certs": []}, "certs must map names to lists of key IDs"),
    ({"ca": ""}, "ca must map GUN prefixes to file paths"),
    (False, "trust_pinning is not an object"),
    ([], "trust_pinning is not an object"),
])
def test_a_trust_pinning_that_would_be_ignored_is_refused(
        trust_app: TrustServer, tmp_path: Path, section: Any, reason: str) -> None:
    """A misspelt or mistyped pinning must not leave trust on first use on unnoticed."""
    _published(trust_app)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"trust_pinning": section}))
    with pytest.raises(TrustPinningError, match=rf"bad trust_pinning \({reason}") as caught:
        load_trust_pinning(config)
    assert caught.value.advice == "see notary's client configuration"
    # the well-spelt pinning is read and holds: no trust on first use
    config.write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    client = _client(trust_app, tmp_path / "trust", pinning=load_trust_pinning(config))
    with pytest.raises(TrustPinningError, match="trust on first use is disabled"):
        client.refresh()
    config.write_text(json.dumps({"trust_pinning": None, "remote_server": {}}))
    assert load_trust_pinning(config) == TrustPinning()


def test_pinning_applies_when_the_cached_root_has_expired(trust_app: TrustServer,
                                                          tmp_path: Path) -> None:
    """As notary: a root replacing an expired cached root must satisfy the pinning too."""
    repo = Repo(trust_app)
    repo.root = _signed_root(repo, expires=GoTime.now().add(dt.timedelta(hours=1)))
    assert repo.publish(ROOT, TARGETS)[0] == 200
    _client(trust_app, tmp_path).refresh()  # trusted on first use, then cached
    new_key = PrivateKey.generate()
    new_cert = root_certificate_key(new_key, GUN)
    keys = {**repo.root.signed.keys, new_cert.key_id: new_cert}
    roles = {**repo.root.signed.roles, ROOT: Role((new_cert.key_id,))}
    repo.root = _signed_root(repo, [(repo.root_key, repo.root_public), (new_key, new_cert)],
                             version=2, keys=keys, roles=roles,
                             expires=GoTime.now().add(dt.timedelta(days=3650)))
    assert repo.publish(ROOT)[0] == 200
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    wrong = TrustPinning(certs={GUN: [repo.root_public.key_id]})  # pins the old certificate
    client = _client(trust_app, tmp_path, pinning=wrong, now=later)
    before = _cached(client)
    with pytest.raises(VerificationError,
                       match=rf"^root of {GUN} has no valid root certificate$") as caught:
        client.refresh()
    assert caught.value.advice is not None
    assert "does not match the trust pinning" in caught.value.advice
    assert _cached(client) == before
    # TOFU disabled does not matter here (a root is trusted); a matching pin is accepted
    for pinning in (TrustPinning(disable_tofu=True),
                    TrustPinning(certs={GUN: [new_cert.key_id]})):
        refreshed = _client(trust_app, tmp_path, pinning=pinning, now=later).refresh()
        assert refreshed.state.root.signed.version == 2


def test_an_unchanged_cache_file_is_kept_only_if_no_one_else_can_change_it(
        trust_app: TrustServer, tmp_path: Path) -> None:
    """A refresh leaves each cached file the client's own, holding what it verified:
    a symlink or a file others may write, with the very same bytes, is replaced."""
    _published(trust_app)
    client = _client(trust_app, tmp_path / "trust")
    client.refresh()
    cached = _cached(client)
    outside = tmp_path / "attacker.json"
    outside.write_bytes(cached[TARGETS])
    targets, timestamp = client.cache.path(TARGETS), client.cache.path(TIMESTAMP)
    targets.unlink()
    targets.symlink_to(outside)
    timestamp.chmod(0o666)
    unchanged = client.cache.path(SNAPSHOT).stat()
    client.refresh()
    assert not targets.is_symlink() and targets.read_bytes() == cached[TARGETS]
    assert targets.stat().st_mode & 0o777 == 0o644
    assert timestamp.stat().st_mode & 0o777 == 0o644
    assert timestamp.read_bytes() == cached[TIMESTAMP]
    # the attacker's file no longer reaches the cache
    outside.write_bytes(b"{}")
    assert _cached(client) == cached
    # a file that already is what a write leaves is not rewritten
    again = client.cache.path(SNAPSHOT).stat()
    assert (again.st_ino, again.st_mtime_ns) == (unchanged.st_ino, unchanged.st_mtime_ns)


def test_forging_helpers_alone_are_accepted(trust_app: TrustServer, tmp_path: Path) -> None:
    """The forging helpers make files a client accepts when nothing is wrong with them."""
    repo = _published(trust_app)
    mirror = Mirror()
    client = _client(trust_app, tmp_path, mirror)
    client.refresh()
    current = repo.served()
    forged = _forge(trust_app, mirror, {ROOT: current[ROOT], TARGETS: current[TARGETS]},
                    snapshot_version=2, timestamp_version=2)
    mirror.asked.clear()
    refreshed = client.refresh()
    assert refreshed.lookup("v1") is not None
    snapshot = Metadata.from_bytes(forged, Timestamp).signed.meta[SNAPSHOT]
    assert snapshot.sha256 is not None
    assert mirror.asked == ["timestamp.json", f"snapshot.{snapshot.sha256.hex()}.json"]
    assert _cached(client)[TIMESTAMP] == forged


# --- remembered verification (client.verified) -----------------------------------------
#
# A result remembered in the process must never let through what a full verification
# refuses. Each case first verifies good files with a memo, then offers the same memo
# files that a full verification (a memo that keeps nothing) refuses, and requires the
# same refusal: a cache key that left out the root, the parent, the role or the GUN, or
# that skipped the floors or the expiry, would accept them.

RELEASES, QA, WEB = "targets/releases", "targets/qa", "targets/releases/web"


class _Keys:
    """A repository's keys, held by the test: root (a certificate for GUN) and the rest."""

    def __init__(self) -> None:
        self.root = PrivateKey.generate()
        self.root_public = root_certificate_key(self.root, GUN)
        self.by_role = {r: PrivateKey.generate() for r in (TARGETS, SNAPSHOT, TIMESTAMP)}
        self.d1, self.d2 = PrivateKey.generate(), PrivateKey.generate()

    def root_md(self, version: int = 1, **swap: PrivateKey) -> Metadata[Root]:
        """A root signed by the root key; ``swap`` gives a role another key."""
        by_role = {**self.by_role, **swap}
        keys = {self.root_public.key_id: self.root_public,
                **{k.public_key.key_id: k.public_key for k in by_role.values()}}
        roles = {ROOT: Role((self.root_public.key_id,)),
                 **{r: Role((k.public_key.key_id,)) for r, k in by_role.items()}}
        signed = Metadata(Root(GoTime.now().add(dt.timedelta(days=365)), version, keys,
                               roles, False))
        return signed.sign(self.root, self.root_public)

    def parent(self, *delegated: tuple[str, tuple[PrivateKey, ...], int, tuple[str, ...]],
               version: int = 2) -> Metadata[Targets]:
        """Targets delegating (name, keys, threshold, paths) each."""
        keys = {k.public_key.key_id: k.public_key for _, ks, _, _ in delegated for k in ks}
        roles = tuple(DelegatedRole(name, tuple(k.public_key.key_id for k in ks), threshold,
                                    paths) for name, ks, threshold, paths in delegated)
        md = new_targets(version=version, delegations=Delegations(keys, roles))
        return md.sign(self.by_role[TARGETS], self.by_role[TARGETS].public_key)

    def delegation(self, key: PrivateKey, *, version: int = 1, expires: GoTime | None = None,
                   child: tuple[str, PrivateKey] | None = None) -> Metadata[Targets]:
        """A delegation with target v1 (and delegating to ``child`` for any path)."""
        delegations = Delegations()
        if child is not None:
            name, child_key = child
            delegations = Delegations({child_key.public_key.key_id: child_key.public_key},
                                      (DelegatedRole(name, (child_key.public_key.key_id,)),))
        md = new_targets(version=version, expires=expires, delegations=delegations,
                         targets={"v1": FileMeta.for_bytes(b"manifest one")})
        return md.sign(key, key.public_key)

    def files(self, root: Metadata[Root], parent: Metadata[Targets],
              delegations: Mapping[str, Metadata[Targets]]) -> dict[str, bytes]:
        """The files, pinned by a snapshot and a timestamp signed with the current keys."""
        files = {ROOT: root.to_bytes(), TARGETS: parent.to_bytes(),
                 **{n: md.to_bytes() for n, md in delegations.items()}}
        snapshot_key, timestamp_key = self.by_role[SNAPSHOT], self.by_role[TIMESTAMP]
        snapshot = Metadata(Snapshot(GoTime.now().add(dt.timedelta(days=365)), 1,
                                     {r: FileMeta.for_bytes(d) for r, d in files.items()}))
        files[SNAPSHOT] = snapshot.sign(snapshot_key, snapshot_key.public_key).to_bytes()
        timestamp = Metadata(Timestamp(GoTime.now().add(dt.timedelta(days=14)), 1,
                                       {SNAPSHOT: FileMeta.for_bytes(files[SNAPSHOT])}))
        files[TIMESTAMP] = timestamp.sign(timestamp_key, timestamp_key.public_key).to_bytes()
        return files


def _walk(files: Mapping[str, bytes], memo: Any, *, gun: str = GUN,
          now: dt.datetime = NOW, floors: Mapping[str, int] | None = None) -> Any:
    """One refresh's verification of ``files`` through ``memo``: what it trusted, or why not."""
    from countersign.client import verified
    from countersign.errors import CountersignError

    try:
        state = verified.trusted_root(gun, files[ROOT], now=now, floors=floors or {},
                                      memo=memo)
        verified.update_timestamp(state, files[TIMESTAMP], memo)
        verified.update_snapshot(state, files[SNAPSHOT], memo)
        verified.update_targets(state, files[TARGETS], memo)
        stack = list(reversed(state.children(TARGETS)))
        while stack:
            role = stack.pop()
            if verified.update_delegation(state, role, files[role], memo) is not None:
                stack.extend(reversed(state.children(role)))
        report = verified.report(state, memo)
    except CountersignError as exc:
        return type(exc).__name__, exc.message
    roles = {name: (r.metadata.signed_bytes, r.paths, r.signatures)
             for name, r in state.roles.items()}
    return roles, state.floors, report.targets, report.warnings


def _memo_case(case: str) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, Any]]:
    """The good files a memo first verifies, the files then offered, and the walk's options."""
    keys = _Keys()
    root = keys.root_md()
    releases = keys.delegation(keys.d1)
    parent = keys.parent((RELEASES, (keys.d1,), 1, ("",)))
    good = keys.files(root, parent, {RELEASES: releases})
    if case == "timestamp key removed by a root rotation":
        return good, {**good, ROOT: keys.root_md(2, timestamp=PrivateKey.generate()).to_bytes()}, {}
    if case == "targets key removed by a root rotation":
        rotated = keys.root_md(2, targets=PrivateKey.generate())
        return good, keys.files(rotated, parent, {RELEASES: releases}), {}
    if case == "delegation key replaced by its parent":
        other = keys.parent((RELEASES, (keys.d2,), 1, ("",)), version=3)
        return good, keys.files(root, other, {RELEASES: releases}), {}
    if case == "delegation threshold raised by its parent":
        other = keys.parent((RELEASES, (keys.d1, keys.d2), 2, ("",)), version=3)
        return good, keys.files(root, other, {RELEASES: releases}), {}
    if case == "delegation paths narrowed by its parent":
        other = keys.parent((RELEASES, (keys.d1,), 1, ("other/",)), version=3)
        return good, keys.files(root, other, {RELEASES: releases}), {}
    if case == "grandparent narrows the paths of a remembered delegation":
        middle = keys.delegation(keys.d1, child=(WEB, keys.d2))
        web = keys.delegation(keys.d2)
        first = keys.files(root, parent, {RELEASES: middle, WEB: web})
        other = keys.parent((RELEASES, (keys.d1,), 1, ("other/",)), version=3)
        return first, keys.files(root, other, {RELEASES: middle, WEB: web}), {}
    if case == "same bytes for another role":
        both = keys.parent((RELEASES, (keys.d1,), 1, ("",)), (QA, (keys.d2,), 1, ("",)))
        first = keys.files(root, both, {RELEASES: releases, QA: keys.delegation(keys.d2)})
        return first, keys.files(root, both, {RELEASES: releases, QA: releases}), {}
    if case == "same root for another GUN":
        return good, good, {"gun": OTHER}
    if case == "timestamp past its expiry":
        return good, good, {"now": NOW + LATER}
    if case == "delegation past its expiry":
        short = keys.delegation(keys.d1, expires=GoTime.now().add(dt.timedelta(hours=1)))
        files = keys.files(root, parent, {RELEASES: short})
        return files, files, {"now": NOW + dt.timedelta(hours=2)}
    if case == "timestamp rollback":
        return good, good, {"floors": {TIMESTAMP: 2}}
    if case == "delegation rollback":
        return good, good, {"floors": {RELEASES: 2}}
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "timestamp key removed by a root rotation", "targets key removed by a root rotation",
    "delegation key replaced by its parent", "delegation threshold raised by its parent",
    "delegation paths narrowed by its parent",
    "grandparent narrows the paths of a remembered delegation", "same bytes for another role",
    "same root for another GUN", "timestamp past its expiry", "delegation past its expiry",
    "timestamp rollback", "delegation rollback",
])
def test_a_remembered_result_is_refused_where_a_full_verification_refuses(case: str) -> None:
    from countersign.client.verified import VerifiedMemo

    first, offered, options = _memo_case(case)
    memo = VerifiedMemo()
    accepted = _walk(first, memo)
    assert isinstance(accepted[0], dict) and not accepted[3], accepted  # verified, cleanly
    assert _walk(first, memo) == accepted and memo.hits > 0  # positive control: remembered
    full = _walk(offered, VerifiedMemo(max_entries=0), **options)
    refused = not isinstance(full[0], dict) or any(
        w.startswith("skipping") or " outside its paths" in w for w in full[3])
    assert refused, full  # the case is an attack: a full verification refuses it
    assert _walk(offered, memo, **options) == full
