"""The trust client's refresh against an in-process countersign server."""

from __future__ import annotations

from pathlib import Path

import pytest
from inprocess import ASGIFetcher
from serverrepo import Repo

from countersign.client.cache import MetadataCache
from countersign.client.remote import NotaryRemote
from countersign.client.updater import NoTrustDataError, Updater
from countersign.errors import NotFoundError
from countersign.server.app import TrustServer
from countersign.tuf import ROOT, TARGETS

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
