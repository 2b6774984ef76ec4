"""``countersign serve`` on PostgreSQL: the notary CLI's flow, and two instances on one database.

Two server instances share one PostgreSQL database, as they would behind a
load balancer: what one stores the other serves, their concurrent updates
never write a version twice, and both sign with the same server keys.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from _countersign import CountersignServer
from _notary import NotaryCLIFactory, parse_list_output
from _tufhttp import create_repository, fetch_repository, post_update

from countersign.tuf import TARGETS, FileMeta, Metadata, Targets
from countersign.tuf.repository import verify_repository

pytestmark = pytest.mark.interop


@pytest.fixture
def two_instances(tmp_path: Path, pg_database_url: str):  # type: ignore[no-untyped-def]
    first = CountersignServer(tmp_path / "a", db=pg_database_url,
                              extra_args=["--cache-ttl", "0"])
    first.start()
    second = CountersignServer(tmp_path / "b", db=pg_database_url, tls=first.tls,
                               extra_args=["--cache-ttl", "0"])
    second.start()
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


def test_notary_cli_against_postgresql(two_instances, notary_cli: NotaryCLIFactory,  # type: ignore[no-untyped-def]
                                       gun: str, tmp_path: Path) -> None:
    first, second = two_instances
    payload = tmp_path / "payload"
    payload.write_bytes(b"on postgresql")
    writer = notary_cli("writer", server=first)
    writer.run_ok("init", gun)
    writer.run_ok("add", gun, "v1", str(payload))
    writer.run_ok("publish", gun)
    writer.run_ok("key", "rotate", gun, "snapshot", "-r")
    # publish through the other instance, with the same client keys: the server keys
    # that sign snapshot and timestamp are shared through the database
    other = notary_cli("other", server=second)
    other.run_ok("list", gun)
    shutil.copytree(writer.trust_dir / "private", other.trust_dir / "private",
                    dirs_exist_ok=True)
    other.run_ok("add", gun, "v2", str(payload))
    other.run_ok("publish", gun)
    assert set(parse_list_output(writer.run_ok("list", gun).stdout)) == {"v1", "v2"}
    verify_repository(fetch_repository(first, gun), gun)  # type: ignore[arg-type]
    verify_repository(fetch_repository(second, gun), gun)  # type: ignore[arg-type]


def test_concurrent_updates_through_two_instances(two_instances, gun: str) -> None:  # type: ignore[no-untyped-def]
    first, second = two_instances
    keys = create_repository(first, gun, b"base", client_snapshot=False)  # type: ignore[arg-type]
    key = keys[TARGETS]
    acknowledged: list[int] = []
    lock = threading.Lock()

    def publisher(server: CountersignServer, tag: str) -> None:
        for n in range(6):
            for _attempt in range(100):
                current = Metadata.from_bytes(fetch_repository(server, gun)[TARGETS],  # type: ignore[arg-type]
                                              Targets)
                entries = dict(current.signed.targets)
                entries[f"{tag}-{n}"] = FileMeta.for_bytes(f"{tag}{n}".encode())
                new = Metadata(replace(current.signed.bump(role=TARGETS), targets=entries))
                status, body = post_update(server, gun, {  # type: ignore[arg-type]
                    TARGETS: new.sign(key, key.public_key).to_bytes()})
                if status == 200:
                    with lock:
                        acknowledged.append(new.signed.version)
                    break
                assert status == 400 and b'"VERSION"' in body, body
    threads = [threading.Thread(target=publisher, args=(s, t))
               for s, t in ((first, "a"), (second, "b"), (first, "c"), (second, "d"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(acknowledged) == 24 and len(set(acknowledged)) == 24
    report = verify_repository(fetch_repository(second, gun), gun)  # type: ignore[arg-type]
    names = {t.name for t in report.targets}
    assert {f"{tag}-{n}" for tag in "abcd" for n in range(6)} <= names
