"""Storage of TUF files, the change feed and the signer's keys, on SQLAlchemy 2 Core.

SQLite (one file in a data directory) by default; PostgreSQL for several
server instances. Every update is one transaction; a version that is not newer
than a stored one aborts it (:class:`VersionConflict`), which is also how two
concurrent publishers are kept from writing the same version.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from countersign.errors import CountersignError
from countersign.server.coherence import ChangeMarks
from countersign.server.migrations import upgrade
from countersign.server.schema import changefeed, metadata, server_keys, tuf_files


class StorageError(CountersignError):
    """The database failed (unreachable, locked, misconfigured)."""


class VersionConflict(Exception):
    """A stored version of a role is not older than the one being written."""

    def __init__(self, role: str, version: int) -> None:
        super().__init__(f"{role} version {version} is not newer than the stored one")
        self.role = role
        self.version = version


class Unset:
    """The type of :data:`UNSET`: no condition on the stored timestamp."""


UNSET = Unset()


@dataclass(frozen=True)
class StoredFile:
    gun: str
    role: str
    version: int
    data: bytes
    sha256: str
    created_at: _dt.datetime
    updated_at: _dt.datetime


@dataclass(frozen=True)
class Written:
    """What one write stored, and the GUN's change mark that stands for it."""

    files: list[StoredFile]
    mark: int


@dataclass(frozen=True)
class NewFile:
    role: str
    version: int
    data: bytes


@dataclass(frozen=True)
class Change:
    id: int
    created_at: _dt.datetime
    gun: str
    version: int
    sha256: str
    category: str


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    gun: str
    role: str
    algorithm: str
    public: bytes
    private: bytes
    created_at: _dt.datetime


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _utc(value: _dt.datetime) -> _dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def _reason(exc: BaseException) -> str:
    """The driver's own message (without SQLAlchemy's statement dump), shortened."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(inner).split()) or inner.__class__.__name__
    return text[:300]


def _lock_key(namespace: str, name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"countersign:{namespace}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# Statements built once: building SQLAlchemy expressions costs more than running
# them on SQLite, and these run on every update and every view reload.
_LATEST = (select(tuf_files).where(tuf_files.c.gun == bindparam("gun"),
                                   tuf_files.c.role == bindparam("role"))
           .order_by(tuf_files.c.version.desc()).limit(1))
_BY_CHECKSUM = select(tuf_files).where(tuf_files.c.gun == bindparam("gun"),
                                       tuf_files.c.role == bindparam("role"),
                                       tuf_files.c.sha256 == bindparam("sha256")).limit(1)
_BY_VERSION = select(tuf_files).where(tuf_files.c.gun == bindparam("gun"),
                                      tuf_files.c.role == bindparam("role"),
                                      tuf_files.c.version == bindparam("version"))
# One max per role: SQLite answers each from the (gun, role, version) index in one
# step, where a GROUP BY over several roles reads every stored version of them.
_HIGHEST_BATCH = 8


@functools.lru_cache(maxsize=_HIGHEST_BATCH)
def _highest(count: int) -> Any:
    """One statement for the newest version of ``count`` roles (``:role0``...): one
    indexed ``max`` each, as scalar subqueries, so an update asks once, not per role."""
    return select(*[
        select(func.max(tuf_files.c.version)).where(
            tuf_files.c.gun == bindparam("gun"), tuf_files.c.role == bindparam(f"role{i}")
        ).scalar_subquery() for i in range(count)])


_INSERT_FILE = tuf_files.insert()
_INSERT_CHANGE = changefeed.insert()


def database_url(url: str, data_dir: Path | None = None) -> str:
    """Normalise ``--db``: ``sqlite:///FILE``, ``postgresql://...``, or a default file."""
    if not url:
        directory = data_dir or Path.cwd()
        return f"sqlite:///{directory / 'countersign.db'}"
    try:
        parsed = make_url(url)
    except Exception:  # SQLAlchemy raises several types for a bad URL
        raise StorageError(f"--db {url!r} is not a database URL",
                           advice="use sqlite:///PATH or postgresql://USER@HOST/DB") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise StorageError(f"database {parsed.drivername!r} is not supported",
                           advice="use sqlite:///PATH or postgresql://USER@HOST/DB")
    return parsed.render_as_string(hide_password=False)


class Storage:
    """All database access of the trust server.

    ``url`` goes through :func:`database_url` first, so a plain ``postgresql://``
    URL works too. Every failure of the database surfaces as :class:`StorageError`
    (a version that is not newer as :class:`VersionConflict`).
    """

    def __init__(self, url: str, *, create: bool = True,
                 marks: ChangeMarks | None = None) -> None:
        self.url = url = database_url(url)
        # shared by forked workers when made before the fork (cli.serve --workers)
        if marks is None:
            try:
                marks = ChangeMarks()
            except OSError as exc:
                raise StorageError(f"cannot make the server's change marks: {exc.strerror}",
                                   advice="TMPDIR must name a writable directory") from None
        self.marks = marks
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            # READ COMMITTED whatever the server's default: write() relies on each
            # statement seeing what was committed before it took the GUN's lock
            kwargs.update(pool_size=10, max_overflow=10, pool_recycle=600,
                          isolation_level="READ COMMITTED")
            if "connect_timeout" not in make_url(url).query:
                kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError, TypeError) as exc:
            raise StorageError(f"cannot use database {make_url(url).render_as_string()}: "
                               f"{_reason(exc)}") from None
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if create:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema up to date (alembic); safe to run concurrently and repeatedly."""
        try:
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot prepare the database: {_reason(exc)}") from None
        except CommandError as exc:
            raise StorageError(f"cannot migrate the database schema: {exc}",
                               advice="is the database from a newer countersign?") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"database unavailable: {_reason(exc)}") from None

    @contextmanager
    def _write(self, gun: str | None = None) -> Iterator[Connection]:
        """One write transaction; with ``gun``, writers of that GUN take turns.

        SQLite: one writer at a time anyway (a lock per instance, BEGIN IMMEDIATE
        across processes). PostgreSQL: a transaction-scoped advisory lock per GUN,
        so two instances cannot both pass the version check before either commits.
        IntegrityError is passed on for the caller to interpret.
        """
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
                if gun is not None and not self.is_sqlite:
                    conn.execute(select(func.pg_advisory_xact_lock(_lock_key("gun", gun))))
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StorageError(f"database unavailable: {_reason(exc)}") from None
        finally:
            if lock is not None:
                lock.release()

    # --- TUF files ------------------------------------------------------------
    def _file(self, row: Any) -> StoredFile:
        return StoredFile(row.gun, row.role, row.version, bytes(row.data), row.sha256,
                          _utc(row.created_at), _utc(row.updated_at))

    def latest(self, gun: str, role: str) -> StoredFile | None:
        """The highest stored version of ``role``."""
        with self._read() as conn:
            row = conn.execute(_LATEST, {"gun": gun, "role": role}).first()
        return self._file(row) if row else None

    def by_checksum(self, gun: str, role: str, sha256: str) -> StoredFile | None:
        with self._read() as conn:
            row = conn.execute(_BY_CHECKSUM, {"gun": gun, "role": role,
                                              "sha256": sha256}).first()
        return self._file(row) if row else None

    def by_checksums(self, gun: str, wanted: Sequence[tuple[str, str]]
                     ) -> dict[str, StoredFile]:
        """Several ``(role, sha256)`` lookups on one connection, by role."""
        found: dict[str, StoredFile] = {}
        with self._read() as conn:
            for role, sha256 in wanted:
                row = conn.execute(_BY_CHECKSUM, {"gun": gun, "role": role,
                                                  "sha256": sha256}).first()
                if row is not None:
                    found[role] = self._file(row)
        return found

    def by_version(self, gun: str, role: str, version: int) -> StoredFile | None:
        with self._read() as conn:
            row = conn.execute(_BY_VERSION, {"gun": gun, "role": role,
                                             "version": version}).first()
        return self._file(row) if row else None

    @contextmanager
    def _marking(self, gun: str) -> Iterator[Callable[[], int]]:
        """Around a GUN's write: hold its change-mark slot; yields "commit done, mark it"."""
        with self.marks.writing(gun):
            yield lambda: self.marks.changed(gun)

    def write(self, gun: str, files: Sequence[NewFile], *,
              after_timestamp: int | Unset | None = UNSET) -> Written:
        """Store ``files`` in one transaction, each newer than every stored version.

        ``after_timestamp`` makes the write conditional: it happens only if the
        newest stored timestamp still has that version (None: no timestamp at
        all), so an update prepared from a cached view cannot land on a GUN that
        changed or was deleted meanwhile. A change-feed record is written for the
        timestamp, as notary does. Returns the stored files and the GUN's new
        change mark.
        """
        now = _now()
        stored = [StoredFile(gun, new.role, new.version, new.data,
                             hashlib.sha256(new.data).hexdigest(), now, now) for new in files]
        roles = sorted({new.role for new in files}
                       | (set() if isinstance(after_timestamp, Unset) else {"timestamp"}))
        with self._marking(gun) as committed:
            try:
                self._insert(gun, stored, roles, after_timestamp, now)
            except IntegrityError:
                # a concurrent writer took a version first (not expected with the GUN lock)
                raise VersionConflict(files[0].role if files else "", 0) from None
            return Written(stored, committed())

    def _insert(self, gun: str, stored: Sequence[StoredFile], roles: Sequence[str],
                after_timestamp: int | Unset | None, now: _dt.datetime) -> None:
        with self._write(gun) as conn:
            highest: dict[str, int] = {}
            for start in range(0, len(roles), _HIGHEST_BATCH):
                batch = roles[start:start + _HIGHEST_BATCH]
                row = conn.execute(_highest(len(batch)), {
                    "gun": gun, **{f"role{i}": role for i, role in enumerate(batch)}}).one()
                highest.update((role, top) for role, top in zip(batch, row, strict=True)
                               if top is not None)
            if not isinstance(after_timestamp, Unset) and \
                    highest.get("timestamp") != after_timestamp:
                raise VersionConflict("timestamp", highest.get("timestamp") or 0)
            for new in stored:
                top = highest.get(new.role)
                if top is not None and top >= new.version:
                    raise VersionConflict(new.role, new.version)
            if stored:
                conn.execute(_INSERT_FILE, [
                    {"created_at": now, "updated_at": now, "gun": gun, "role": f.role,
                     "version": f.version, "sha256": f.sha256, "data": f.data}
                    for f in stored])
            changes = [{"created_at": now, "gun": gun, "version": f.version,
                        "sha256": f.sha256, "category": "update"}
                       for f in stored if f.role == "timestamp"]
            if changes:
                conn.execute(_INSERT_CHANGE, changes)

    def delete(self, gun: str) -> int:
        """Remove every file of ``gun``; a deletion record only when something was removed."""
        with self._marking(gun) as committed:
            with self._write(gun) as conn:
                count = conn.execute(delete(tuf_files).where(tuf_files.c.gun == gun)).rowcount
                if count:
                    conn.execute(changefeed.insert().values(
                        created_at=_now(), gun=gun, version=0, sha256="", category="deletion"))
            committed()
        return int(count or 0)

    def changes(self, gun: str | None, change_id: int, records: int) -> list[Change]:
        """Up to ``abs(records)`` change-feed records, always in ascending id order.

        As notary-server: ``records`` >= 0 and ``change_id`` >= 0 gives the records
        after ``change_id``; a negative ``records`` gives the ones just before
        ``change_id``, and counting back from the newest when ``change_id`` <= 0
        (a negative ``change_id`` alone also means "the newest").
        """
        query = select(changefeed)
        if gun is not None:
            query = query.where(changefeed.c.gun == gun)
        if records >= 0 and change_id >= 0:
            query = (query.where(changefeed.c.id > change_id)
                     .order_by(changefeed.c.id.asc()).limit(records))
        else:
            if change_id > 0:
                query = query.where(changefeed.c.id < change_id)
            query = query.order_by(changefeed.c.id.desc()).limit(abs(records))
        with self._read() as conn:
            rows = conn.execute(query).all()
        changes = [Change(r.id, _utc(r.created_at), r.gun, r.version, r.sha256, r.category)
                   for r in rows]
        return sorted(changes, key=lambda c: c.id)

    def last_change_id(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(changefeed.c.id))).scalar() or 0)

    def healthy(self) -> str | None:
        """None when the database answers, else why not."""
        try:
            with self._read() as conn:
                conn.execute(select(1))
        except (StorageError, SQLAlchemyError) as exc:
            return str(exc)[:200]
        return None

    # --- signer keys ----------------------------------------------------------
    def add_key(self, record: KeyRecord) -> None:
        # stored as UTC: SQLite keeps no offset, and _utc() reads it back as UTC
        created = _utc(record.created_at).astimezone(_dt.UTC)
        try:
            with self._write() as conn:
                conn.execute(server_keys.insert().values(
                    created_at=created, key_id=record.key_id, gun=record.gun,
                    role=record.role, algorithm=record.algorithm, public=record.public,
                    private=record.private))
        except IntegrityError:
            raise StorageError(f"server key {record.key_id[:12]} is already stored") from None

    def keys(self, gun: str, role: str) -> list[KeyRecord]:
        """The signer's keys for ``gun``/``role``, newest first."""
        query = (select(server_keys).where(server_keys.c.gun == gun, server_keys.c.role == role)
                 .order_by(server_keys.c.id.desc()))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [KeyRecord(r.key_id, r.gun, r.role, r.algorithm, bytes(r.public),
                          bytes(r.private), _utc(r.created_at)) for r in rows]


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for concurrent readers, a busy timeout, and BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below rule
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # writers take the lock up front, so they queue instead of failing on upgrade
        immediate = conn.get_execution_options().get("immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


__all__ = ["UNSET", "Change", "KeyRecord", "NewFile", "Storage", "StorageError", "StoredFile",
           "Unset", "VersionConflict", "Written", "database_url", "metadata"]
