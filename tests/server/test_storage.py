"""The trust server's storage, on SQLite (a temporary file) and a real PostgreSQL.

Every test taking ``db_url`` runs twice: ``[sqlite]`` and ``[postgresql]`` (a fresh
database on the session's throwaway server; skipped when PostgreSQL is not installed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from pgserver import PostgresServer, free_port
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from countersign.server.migrations import alembic_config, upgrade
from countersign.server.storage import (
    Change,
    KeyRecord,
    NewFile,
    Storage,
    StorageError,
    StoredFile,
    VersionConflict,
    database_url,
)

GUN = "docker.example.com/library/app"
OTHER = "docker.example.com/library/other"

OpenStorage = Callable[..., Storage]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'countersign.db'}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
def open_storage(db_url: str) -> Iterator[OpenStorage]:
    """``open_storage(url=db_url)``: a new :class:`Storage` (as a new server instance
    would open it), closed after the test."""
    opened: list[Storage] = []

    def make(url: str | None = None) -> Storage:
        store = Storage(url or db_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def storage(open_storage: OpenStorage) -> Storage:
    return open_storage()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions(store: Storage, gun: str, role: str, upto: int) -> list[int]:
    return [v for v in range(1, upto + 1) if store.by_version(gun, role, v) is not None]


def _assert_recent(value: dt.datetime) -> None:
    assert value.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - value) < dt.timedelta(minutes=5)


# --- reading and writing ------------------------------------------------------------


def test_write_then_read_by_latest_checksum_and_version(storage: Storage) -> None:
    root1, root2 = b'{"signed": "root v1"}', bytes(range(256)) * 4  # any bytes, NULs too
    targets = b'{"signed": "targets v1"}'
    storage.write(GUN, [NewFile("root", 1, root1), NewFile("targets", 1, targets)])
    storage.write(GUN, [NewFile("root", 2, root2)])

    latest = storage.latest(GUN, "root")
    assert isinstance(latest, StoredFile)
    assert (latest.gun, latest.role, latest.version, latest.data) == (GUN, "root", 2, root2)
    assert latest.sha256 == _sha(root2)
    _assert_recent(latest.created_at)
    _assert_recent(latest.updated_at)

    first = storage.by_version(GUN, "root", 1)
    assert first is not None and first.data == root1 and first.sha256 == _sha(root1)
    assert storage.by_checksum(GUN, "root", _sha(root1)) == first
    assert storage.by_checksum(GUN, "root", _sha(root2)) == latest
    assert storage.latest(GUN, "targets") == storage.by_version(GUN, "targets", 1)

    # misses: other version, role, checksum or GUN
    assert storage.by_version(GUN, "root", 3) is None
    assert storage.by_checksum(GUN, "targets", _sha(root1)) is None
    assert storage.by_checksum(GUN, "root", "0" * 64) is None
    assert storage.latest(GUN, "snapshot") is None
    assert storage.latest(OTHER, "root") is None
    assert storage.healthy() is None


def test_url_is_normalised(storage: Storage, db_url: str) -> None:
    assert storage.url == database_url(db_url)
    if db_url.startswith("postgresql://"):
        assert storage.url.startswith("postgresql+psycopg://")
        assert storage.engine.dialect.name == "postgresql"


def test_update_is_one_transaction(storage: Storage) -> None:
    storage.write(GUN, [NewFile("root", 1, b"root 1")])
    with pytest.raises(VersionConflict) as caught:
        storage.write(GUN, [NewFile("timestamp", 1, b"ts 1"), NewFile("snapshot", 1, b"snap 1"),
                            NewFile("root", 1, b"another root 1")])
    assert (caught.value.role, caught.value.version) == ("root", 1)
    # nothing of the first two files, and no change-feed record for the timestamp
    assert storage.latest(GUN, "timestamp") is None
    assert storage.latest(GUN, "snapshot") is None
    assert storage.by_version(GUN, "root", 1).data == b"root 1"
    assert storage.changes(None, 0, 100) == []
    assert storage.last_change_id() == 0

    # the same update with a newer root goes through as a whole
    storage.write(GUN, [NewFile("timestamp", 1, b"ts 1"), NewFile("snapshot", 1, b"snap 1"),
                        NewFile("root", 2, b"root 2")])
    latest = [storage.latest(GUN, r) for r in ("timestamp", "snapshot", "root")]
    assert [f.version if f else None for f in latest] == [1, 1, 2]
    assert len(storage.changes(None, 0, 100)) == 1


@pytest.mark.parametrize("version", [3, 2, 1], ids=["equal", "lower", "lowest"])
def test_version_not_newer_than_stored_conflicts(storage: Storage, version: int) -> None:
    storage.write(GUN, [NewFile("targets", 3, b"targets 3")])
    with pytest.raises(VersionConflict) as caught:
        storage.write(GUN, [NewFile("targets", version, b"replacement")])
    assert (caught.value.role, caught.value.version) == ("targets", version)
    assert "not newer" in str(caught.value)
    stored = storage.latest(GUN, "targets")
    assert stored is not None and (stored.version, stored.data) == (3, b"targets 3")
    if version < 3:
        assert storage.by_version(GUN, "targets", version) is None
    # other roles and GUNs have their own versions
    storage.write(GUN, [NewFile("snapshot", 1, b"snapshot 1")])
    storage.write(OTHER, [NewFile("targets", 1, b"other targets 1")])
    storage.write(GUN, [NewFile("targets", 4, b"targets 4")])
    assert storage.latest(GUN, "targets").version == 4


def test_conditional_write_needs_the_expected_timestamp(storage: Storage) -> None:
    """An update built on a cached view lands only if the GUN has not moved since."""
    first = storage.write(GUN, [NewFile("root", 1, b"root 1"), NewFile("timestamp", 1, b"ts 1")],
                          after_timestamp=None).files
    assert [(f.role, f.version) for f in first] == [("root", 1), ("timestamp", 1)]
    assert first[0].sha256 == hashlib.sha256(b"root 1").hexdigest()
    with pytest.raises(VersionConflict):  # a second "first publish"
        storage.write(GUN, [NewFile("targets", 1, b"t 1"), NewFile("timestamp", 9, b"ts 9")],
                      after_timestamp=None)
    with pytest.raises(VersionConflict):  # built on a view older than the stored one
        storage.write(GUN, [NewFile("targets", 1, b"t 1"), NewFile("timestamp", 9, b"ts 9")],
                      after_timestamp=0)
    storage.write(GUN, [NewFile("targets", 1, b"t 1"), NewFile("timestamp", 2, b"ts 2")],
                  after_timestamp=1)
    assert storage.delete(GUN)
    with pytest.raises(VersionConflict):  # deleted meanwhile: nothing lands
        storage.write(GUN, [NewFile("targets", 2, b"t 2"), NewFile("timestamp", 3, b"ts 3")],
                      after_timestamp=2)
    assert storage.latest(GUN, "targets") is None and storage.latest(GUN, "timestamp") is None


# --- concurrent writers ---------------------------------------------------------------

THREADS = 16


def _run_threads(target: Callable[[int], None], count: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writer threads hung"


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-instances"])
def test_concurrent_writers_exactly_one_wins_each_version(
        open_storage: OpenStorage, instances: int) -> None:
    """16 writers read the same latest version, then all write the next one at once."""
    stores = [open_storage() for _ in range(instances)]
    rounds = 5
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    wins: dict[int, list[int]] = defaultdict(list)
    conflicts: Counter[int] = Counter()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        store = stores[n % instances]
        try:
            for _round in range(rounds):
                barrier.wait(timeout=60)  # the previous round's writes are all done
                latest = store.latest(GUN, "timestamp")
                version = (latest.version if latest else 0) + 1
                barrier.wait(timeout=60)  # everyone has read before anyone writes
                try:
                    store.write(GUN, [NewFile("timestamp", version, f"{n}:{version}".encode())])
                except VersionConflict as exc:
                    assert (exc.role, exc.version) == ("timestamp", version)
                    with lock:
                        conflicts[version] += 1
                else:
                    with lock:
                        wins[version].append(n)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    _run_threads(writer)
    assert errors == []
    assert sorted(wins) == list(range(1, rounds + 1))
    assert all(len(winners) == 1 for winners in wins.values()), dict(wins)
    assert all(conflicts[v] == THREADS - 1 for v in wins), dict(conflicts)
    check = stores[-1]
    for version, (winner,) in wins.items():
        stored = check.by_version(GUN, "timestamp", version)
        assert stored is not None and stored.data == f"{winner}:{version}".encode()
    changes = check.changes(GUN, 0, 100)
    assert [c.version for c in changes] == list(range(1, rounds + 1))


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-instances"])
def test_concurrent_writers_free_running(open_storage: OpenStorage, instances: int) -> None:
    """Writers racing without coordination: versions stay unique and gapless."""
    stores = [open_storage() for _ in range(instances)]
    attempts = 6
    lock = threading.Lock()
    won: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(n: int) -> None:
        store = stores[n % instances]
        try:
            start.wait(timeout=60)
            for _attempt in range(attempts):
                latest = store.latest(GUN, "snapshot")
                version = (latest.version if latest else 0) + 1
                try:
                    store.write(GUN, [NewFile("snapshot", version, f"{n}:{version}".encode()),
                                      NewFile("timestamp", version, f"ts {n}".encode())])
                except VersionConflict:
                    continue
                with lock:
                    won.append((version, n))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    _run_threads(writer)
    assert errors == []
    versions = sorted(v for v, _n in won)
    assert versions == list(range(1, len(versions) + 1))  # no duplicates, no gaps
    check = stores[0]
    assert check.latest(GUN, "snapshot").version == len(versions)
    for version, n in won:
        assert check.by_version(GUN, "snapshot", version).data == f"{n}:{version}".encode()
    assert [c.version for c in check.changes(GUN, 0, 1000)] == versions


# --- delete ---------------------------------------------------------------------------


def test_delete_removes_one_gun_only(storage: Storage) -> None:
    neighbours = [f"{GUN}/sub", f"{GUN}x", "docker.example.com/library/ap%", OTHER]
    for gun in [GUN, *neighbours]:
        storage.write(gun, [NewFile("root", 1, b"r1"), NewFile("targets", 1, b"t1")])
        storage.write(gun, [NewFile("targets", 2, b"t2")])
    before = storage.last_change_id()

    assert storage.delete(GUN) == 3
    for role in ("root", "targets"):
        assert storage.latest(GUN, role) is None
    assert storage.by_version(GUN, "targets", 1) is None
    for gun in neighbours:
        assert storage.latest(gun, "targets").version == 2
        assert storage.latest(gun, "root") is not None

    (record,) = storage.changes(None, before, 100)
    assert isinstance(record, Change)
    assert (record.gun, record.version, record.sha256, record.category) == (
        GUN, 0, "", "deletion")
    _assert_recent(record.created_at)

    # nothing left to remove: no second record; an unknown GUN neither
    assert storage.delete(GUN) == 0
    assert storage.delete("docker.example.com/never/published") == 0
    assert storage.last_change_id() == record.id

    # the GUN can be published afresh
    storage.write(GUN, [NewFile("root", 1, b"new root")])
    assert storage.latest(GUN, "root").data == b"new root"


# --- change feed ----------------------------------------------------------------------


def test_change_feed(storage: Storage) -> None:
    a, b = "example.com/a", "example.com/b"
    storage.write(a, [NewFile("timestamp", 1, b"a ts 1")])
    storage.write(b, [NewFile("root", 1, b"b root"), NewFile("timestamp", 1, b"b ts 1")])
    storage.write(a, [NewFile("root", 1, b"a root")])  # no timestamp: no record
    storage.write(a, [NewFile("timestamp", 2, b"a ts 2")])
    storage.write(b, [NewFile("timestamp", 2, b"b ts 2")])
    storage.delete(b)

    everything = storage.changes(None, 0, 100)
    ids = [c.id for c in everything]
    assert len(ids) == 5 and ids == sorted(set(ids))
    assert [(c.gun, c.version, c.category) for c in everything] == [
        (a, 1, "update"), (b, 1, "update"), (a, 2, "update"), (b, 2, "update"),
        (b, 0, "deletion")]
    assert everything[0].sha256 == _sha(b"a ts 1")
    assert everything[3].sha256 == _sha(b"b ts 2")
    assert storage.last_change_id() == ids[-1]

    def got(gun: str | None, change_id: int, records: int) -> list[int]:
        result = storage.changes(gun, change_id, records)
        assert [c.id for c in result] == sorted(c.id for c in result)  # always ascending
        return [c.id for c in result]

    # after change_id, ascending, at most `records`
    assert got(None, ids[1], 2) == ids[2:4]
    assert got(None, ids[1], 100) == ids[2:]
    assert got(None, ids[-1], 100) == []
    assert got(None, 0, 0) == []
    # negative records: that many just before change_id
    assert got(None, ids[3], -2) == ids[1:3]
    assert got(None, ids[3], -100) == ids[:3]
    assert got(None, ids[0], -5) == []
    # ... and counted back from the newest when there is no change_id (notary: 0 or < 0)
    assert got(None, 0, -2) == ids[3:]
    assert got(None, -1, 2) == ids[3:]
    assert got(None, -1, -2) == ids[3:]
    # gun filter
    assert got(a, 0, 100) == [ids[0], ids[2]]
    assert got(b, ids[1], 100) == ids[3:]
    assert got(b, 0, -1) == [ids[4]]
    assert got(b, ids[4], -10) == [ids[1], ids[3]]
    assert got(a, ids[2], 100) == []
    assert got("example.com/none", 0, 100) == []


# --- signer keys ----------------------------------------------------------------------


def _key(key_id: str, gun: str, role: str, created: dt.datetime) -> KeyRecord:
    return KeyRecord(key_id=key_id, gun=gun, role=role, algorithm="ecdsa",
                     public=f"public {key_id}".encode(),
                     private=b"\x00sealed\xff" + key_id.encode(), created_at=created)


def test_keys_added_and_listed_newest_first(storage: Storage) -> None:
    t0 = dt.datetime(2026, 12, 3, 13, 19, 0, 123456, tzinfo=dt.UTC)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    first = _key("a" * 64, GUN, "timestamp", t0)
    second = _key("b" * 64, GUN, "timestamp", (t0 + dt.timedelta(seconds=1)).astimezone(plus_two))
    third = _key("c" * 64, GUN, "timestamp", t0 + dt.timedelta(seconds=2))
    snapshot = _key("d" * 64, GUN, "snapshot", t0)
    elsewhere = _key("e" * 64, OTHER, "timestamp", t0)
    for record in (first, snapshot, second, elsewhere, third):
        storage.add_key(record)

    listed = storage.keys(GUN, "timestamp")
    assert listed == [third, second, first]  # equal instants, whatever the offset given
    assert all(r.created_at.utcoffset() == dt.timedelta(0) for r in listed)
    assert listed[1].created_at == t0 + dt.timedelta(seconds=1)
    assert storage.keys(GUN, "snapshot") == [snapshot]
    assert storage.keys(OTHER, "timestamp") == [elsewhere]
    assert storage.keys(OTHER, "snapshot") == []

    with pytest.raises(StorageError, match="already stored"):
        storage.add_key(_key("a" * 64, OTHER, "snapshot", t0))
    assert storage.keys(OTHER, "snapshot") == []


# --- migrations -----------------------------------------------------------------------


def _alembic_versions(store: Storage) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_migrations_are_idempotent_and_shared(open_storage: OpenStorage) -> None:
    first = open_storage()
    head = ScriptDirectory.from_config(alembic_config(first.engine)).get_current_head()
    assert _alembic_versions(first) == [head]
    assert {"tuf_files", "changefeed", "server_keys"} <= set(
        inspect(first.engine).get_table_names())
    first.write(GUN, [NewFile("root", 1, b"root 1"), NewFile("timestamp", 1, b"ts 1")])

    first.migrate()
    upgrade(first.engine)
    second = open_storage()  # a second server instance on the same database
    assert _alembic_versions(second) == [head]
    assert second.latest(GUN, "root").data == b"root 1"
    second.write(GUN, [NewFile("root", 2, b"root 2")])
    assert first.latest(GUN, "root").version == 2
    with pytest.raises(VersionConflict):
        first.write(GUN, [NewFile("root", 2, b"root 2 again")])
    assert len(first.changes(None, 0, 100)) == 1


def test_instances_starting_together_migrate_once(db_url: str) -> None:
    count = 6
    barrier = threading.Barrier(count)
    opened: list[Storage] = []
    errors: list[BaseException] = []

    def start(_n: int) -> None:
        try:
            barrier.wait(timeout=60)
            opened.append(Storage(db_url))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    try:
        _run_threads(start, count)
        assert errors == []
        assert len(opened) == count
        assert len(_alembic_versions(opened[0])) == 1
        opened[0].write(GUN, [NewFile("root", 1, b"root 1")])
        assert opened[-1].latest(GUN, "root") is not None
    finally:
        for store in opened:
            store.close()


_OPEN_IN_CHILD = """
import sys
from countersign.server.storage import Storage
print("ready", flush=True)
sys.stdin.readline()
Storage(sys.argv[1]).close()
print("opened", flush=True)
"""


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    """Separate server processes on one fresh database: the migration runs once."""
    count = 4
    children = [subprocess.Popen([sys.executable, "-c", _OPEN_IN_CHILD, db_url],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for child in children:  # every child has imported everything ...
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:  # ... before any of them touches the database
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [c.returncode for c in children] == [0] * count, [err for _out, err in results]
    assert all(out.strip() == "opened" for out, _err in results)
    store = Storage(db_url)
    try:
        assert len(_alembic_versions(store)) == 1
    finally:
        store.close()


# --- URLs and failures ----------------------------------------------------------------


def test_database_url_normalisation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert database_url("", tmp_path) == f"sqlite:///{tmp_path / 'countersign.db'}"
    monkeypatch.chdir(tmp_path)
    assert database_url("") == f"sqlite:///{tmp_path / 'countersign.db'}"
    for unchanged in ("sqlite:////var/lib/countersign/db.sqlite", "sqlite:///relative.db",
                      "sqlite://", "sqlite+pysqlite:///x.db",
                      "postgresql+psycopg://notary:s3cret@db.example:5433/notary"):
        assert database_url(unchanged) == unchanged
    assert (database_url("postgresql://notary:s3cret@db.example:5433/notary")
            == "postgresql+psycopg://notary:s3cret@db.example:5433/notary")  # password kept
    assert database_url("postgres://notary@db.example/notary") == (
        "postgresql+psycopg://notary@db.example/notary")
    assert database_url("postgresql://u@h/db?sslmode=require&connect_timeout=3") == (
        "postgresql+psycopg://u@h/db?connect_timeout=3&sslmode=require")
    once = database_url("postgresql://u@h/db")
    assert database_url(once) == once


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u@h/db", "not supported"),
    ("postgresql+psycopg2://u@h/db", "not supported"),
    ("oracle://u@h/db", "not supported"),
    ("not a url", "not a database URL"),
    ("://nothing", "not a database URL"),
])
def test_bad_urls_are_storage_errors(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        database_url(url)
    assert caught.value.advice and "postgresql://" in caught.value.advice
    with pytest.raises(StorageError, match=message):
        Storage(url)


def _no_raw_sqlalchemy(error: BaseException) -> None:
    assert isinstance(error, StorageError)
    assert not isinstance(error, SQLAlchemyError)
    assert error.__cause__ is None and error.__suppress_context__


def test_unopenable_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite"
    with pytest.raises(StorageError, match="cannot prepare the database") as caught:
        Storage(f"sqlite:///{missing}")
    _no_raw_sqlalchemy(caught.value)


def test_unreachable_postgresql() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/countersign"  # nobody listens
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot prepare the database") as caught:
        Storage(url)
    _no_raw_sqlalchemy(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert "SELECT" not in str(caught.value)  # the driver's reason, not SQLAlchemy's dump

    lazy = Storage(url, create=False)  # opened without migrating: fails on first use
    try:
        calls: list[Callable[[], object]] = [
            lambda: lazy.latest(GUN, "root"),
            lambda: lazy.by_checksum(GUN, "root", "0" * 64),
            lambda: lazy.by_version(GUN, "root", 1),
            lambda: lazy.write(GUN, [NewFile("root", 1, b"r")]),
            lambda: lazy.delete(GUN),
            lambda: lazy.changes(None, 0, 10),
            lazy.last_change_id,
            lambda: lazy.keys(GUN, "timestamp"),
            lambda: lazy.add_key(_key("f" * 64, GUN, "timestamp", dt.datetime.now(dt.UTC))),
        ]
        for call in calls:
            with pytest.raises(StorageError, match="database unavailable") as failed:
                call()
            _no_raw_sqlalchemy(failed.value)
        assert lazy.healthy() is not None
    finally:
        lazy.close()
    assert time.monotonic() - started < 20


def test_postgresql_database_missing_or_dropped(postgres_server: PostgresServer,
                                                pg_database_url: str) -> None:
    with pytest.raises(StorageError, match="does not exist") as caught:
        Storage(postgres_server.url("no_such_database"))
    _no_raw_sqlalchemy(caught.value)

    store = Storage(pg_database_url)
    try:
        store.write(GUN, [NewFile("root", 1, b"root 1")])
        postgres_server.drop_database(pg_database_url)  # ends the pool's connections too
        with pytest.raises(StorageError, match="database unavailable") as failed:
            store.latest(GUN, "root")
        _no_raw_sqlalchemy(failed.value)
        assert store.healthy() is not None
    finally:
        store.close()


def test_no_writable_temporary_directory_is_a_storage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(StorageError, match="change marks") as caught:
        Storage(f"sqlite:///{tmp_path / 'db'}")
    assert caught.value.advice and "TMPDIR" in caught.value.advice
