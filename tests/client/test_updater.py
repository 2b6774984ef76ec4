"""The trust client's refresh against an in-process countersign server."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from inprocess import ASGIFetcher
from serverrepo import Repo

from countersign.client import cache as cache_module
from countersign.client.cache import MetadataCache
from countersign.client.fetcher import Response
from countersign.client.remote import NotaryRemote
from countersign.client.updater import NoTrustDataError, Updater
from countersign.client.verified import VerifiedMemo, _certificate_window, trusted_root
from countersign.errors import (
    ExpiredMetadataError,
    NotFoundError,
    RollbackError,
    VerificationError,
)
from countersign.server.app import TrustServer
from countersign.tuf import (
    ROOT,
    TARGETS,
    TIMESTAMP,
    DelegatedRole,
    Delegations,
    FileMeta,
    Metadata,
    PrivateKey,
    new_targets,
)

GUN = "registry.example.com:5000/team/app"


def _updater(app: TrustServer, trust_dir: Path, gun: str = GUN) -> Updater:
    fetcher = ASGIFetcher(app)
    return Updater(gun, NotaryRemote(fetcher, gun), MetadataCache(trust_dir, gun))


def test_no_trust_data(trust_app: TrustServer, tmp_path: Path) -> None:
    with pytest.raises(NoTrustDataError, match="does not have trust data for"):
        _updater(trust_app, tmp_path).refresh()
    assert issubclass(NoTrustDataError, NotFoundError)


def test_refresh_reads_verifies_and_caches(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = Repo(trust_app)
    repo.add_target("v1", b"manifest")
    assert repo.publish(ROOT, TARGETS)[0] == 200
    updater = _updater(trust_app, tmp_path / "trust")
    refreshed = updater.refresh()
    target = refreshed.lookup("v1")
    assert target is not None and target.role == TARGETS
    cached = updater.cache.directory
    assert {p.name for p in cached.iterdir()} == {"root.json", "timestamp.json",
                                                   "snapshot.json", "targets.json"}
    # a second refresh uses the cache for unchanged files
    fetcher = updater.remote.fetcher
    assert isinstance(fetcher, ASGIFetcher)
    fetcher.log.clear()
    updater.refresh()
    assert [p for _, p in fetcher.log] == [f"/v2/{GUN}/_trust/tuf/timestamp.json"]
    repo.add_target("v2", b"second")
    assert repo.publish(TARGETS)[0] == 200
    assert updater.refresh().lookup("v2") is not None


def test_stray_files_in_the_cache_are_ignored(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    updater = _updater(trust_app, tmp_path / "trust")
    updater.refresh()
    (updater.cache.directory / "notes.JSON.json").write_text("{}")
    (updater.cache.directory / "Targets").mkdir()
    (updater.cache.directory / "Targets" / "x.json").write_text("[]")
    assert updater.refresh().lookup("v1") is None


# --- unchanged files and verified results remembered by content -----------------------


def _memo_updater(app: TrustServer, trust_dir: Path, memo: VerifiedMemo,
                  rewrite: Any = None) -> Updater:
    fetcher = ASGIFetcher(app, rewrite=rewrite)
    return Updater(GUN, NotaryRemote(fetcher, GUN), MetadataCache(trust_dir, GUN), memo=memo)


def _delegated_repo(app: TrustServer) -> Repo:
    repo = Repo(app)
    key = PrivateKey.generate()
    role = DelegatedRole("targets/releases", (key.public_key.key_id,), 1, ("",))
    repo.targets = Metadata(replace(
        repo.targets.signed.bump(role=TARGETS),
        delegations=Delegations({key.public_key.key_id: key.public_key}, (role,)))
    ).sign(repo.targets_key, repo.targets_key.public_key)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    releases = new_targets(targets={"v1": FileMeta.for_bytes(b"m")}).sign(key, key.public_key)
    assert _post_files(app, {"targets/releases": releases.to_bytes()}) == 200
    return repo


def _post_files(app: TrustServer, files: dict[str, bytes]) -> int:
    from serverrepo import _post

    return _post(app, files)[0]


def _count_verify(monkeypatch: pytest.MonkeyPatch) -> _Count:
    """Counts every signature check of metadata from now on."""
    verify = _Count(Metadata.verify)

    def counted(self: Metadata[Any], *args: Any, **kwargs: Any) -> Any:
        return verify(self, *args, **kwargs)

    monkeypatch.setattr(Metadata, "verify", counted)
    return verify


def _version(data: bytes) -> int:
    version: int = Metadata.from_bytes(data).signed.version
    return version


class _Count:
    """Counts calls of a function it wraps (signature checks, fsyncs)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_a_second_refresh_rewrites_nothing_and_verifies_no_signature_again(
        trust_app: TrustServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _delegated_repo(trust_app)
    memo = VerifiedMemo()
    updater = _memo_updater(trust_app, tmp_path / "trust", memo)
    assert updater.refresh().lookup("v1", ("targets/releases",)) is not None
    updater.refresh()  # the first root was trusted on first use; now it comes from the cache
    files = sorted(updater.cache.directory.rglob("*.json"))
    assert len(files) == 5
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    fsync = _Count(os.fsync)
    monkeypatch.setattr(cache_module.os, "fsync", fsync)
    verify = _count_verify(monkeypatch)
    refreshed = updater.refresh()
    assert refreshed.lookup("v1", ("targets/releases",)) is not None
    assert fsync.calls == 0 and verify.calls == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before
    # the timestamp is still fetched every time, the rest is checked against the cache
    fetcher = updater.remote.fetcher
    assert isinstance(fetcher, ASGIFetcher)
    fetcher.log.clear()
    updater.refresh()
    assert [p for _, p in fetcher.log] == [f"/v2/{GUN}/_trust/tuf/timestamp.json"]
    # without the memo, every signature is checked again (root, 3 roles, the delegation)
    _memo_updater(trust_app, tmp_path / "trust", VerifiedMemo(max_entries=0)).refresh()
    assert verify.calls >= 5 and fsync.calls == 0


def test_a_changed_file_is_written_and_verified(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    memo = VerifiedMemo()
    updater = _memo_updater(trust_app, tmp_path / "trust", memo)
    updater.refresh()
    stamp = updater.cache.path(TIMESTAMP)
    inode = stamp.stat().st_ino
    repo.add_target("v2", b"second")
    assert repo.publish(TARGETS)[0] == 200
    assert updater.refresh().lookup("v2") is not None
    assert stamp.stat().st_ino != inode
    assert _version(stamp.read_bytes()) == 2


def test_a_remembered_timestamp_still_meets_the_rollback_floor(
        trust_app: TrustServer, tmp_path: Path) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    memo = VerifiedMemo()
    old = {}

    def replay(method: str, path: str, response: Response) -> Response:
        return Response(200, old["timestamp"]) if "timestamp" in old and \
            path.endswith("/timestamp.json") else response

    updater = _memo_updater(trust_app, tmp_path / "trust", memo, rewrite=replay)
    updater.refresh()
    first = updater.cache.load(TIMESTAMP)
    assert first is not None
    repo.add_target("v2", b"second")
    assert repo.publish(TARGETS)[0] == 200
    updater.refresh()
    hits = memo.hits
    old["timestamp"] = first  # genuine, unexpired, verified before in this process
    with pytest.raises(RollbackError, match=r"^timestamp version 1 is older than the trusted "
                                            r"version 2$"):
        updater.refresh()
    assert memo.hits > hits  # the remembered result was used, and its floor checked
    assert _version(updater.cache.load(TIMESTAMP) or b"") == 2


def test_a_remembered_timestamp_still_expires(trust_app: TrustServer, tmp_path: Path) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    memo = VerifiedMemo()
    updater = _memo_updater(trust_app, tmp_path / "trust", memo)
    updater.refresh()
    hits = memo.hits
    updater.now = dt.datetime.now(dt.UTC) + dt.timedelta(days=15)
    with pytest.raises(ExpiredMetadataError, match=r"^timestamp expired at "):
        updater.refresh()
    assert memo.hits > hits


def test_a_remembered_root_is_verified_again_when_a_certificate_changes_state(
        trust_app: TrustServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Repo(trust_app)
    assert repo.publish(ROOT, TARGETS)[0] == 200
    data = repo.root.to_bytes()
    cert = repo.root_public.certificates[0]
    inside = cert.not_valid_before_utc + dt.timedelta(days=2)
    low, high = _certificate_window(repo.root, inside) or (None, None)
    assert (low, high) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    verify = _count_verify(monkeypatch)
    memo = VerifiedMemo()
    for _ in range(2):
        state = trusted_root(GUN, data, now=inside, floors={}, memo=memo)
        assert state.root_result is not None and state.root_result.verified
    assert verify.calls == 1
    after = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    trusted_root(GUN, data, now=after, floors={}, memo=memo)
    assert verify.calls == 2
    # another GUN is never answered from the memo: its CN does not match
    with pytest.raises(VerificationError, match="no valid root certificate"):
        trusted_root("other.example.com/app", data, now=inside, floors={}, memo=memo)


def test_the_memo_is_bounded() -> None:
    memo = VerifiedMemo(max_entries=2, max_bytes=100)
    for i in range(3):
        memo.put(("k", i), i, 10)
    assert len(memo) == 2 and memo.get(("k", 0)) is None and memo.get(("k", 2)) == 2
    memo.put("big", 0, 26)  # over a quarter of max_bytes: not kept
    assert memo.get("big") is None
    memo.put("a", 1, 25)
    memo.put("b", 1, 25)
    memo.put("c", 1, 25)
    assert len(memo) == 2  # the entry bound still holds
    with pytest.raises(ValueError, match="must not be negative"):
        VerifiedMemo(max_entries=-1)
