"""A throwaway PostgreSQL server for tests.

:class:`PostgresServer` runs ``initdb`` into a fresh temporary directory and
then the ``postgres`` server itself (not ``pg_ctl``, which would daemonise it)
as a direct child of the test process, so that:

- it listens on 127.0.0.1 only, on a free port, with ``trust`` authentication
  for the superuser ``postgres``; its Unix socket lives in the temporary
  directory, and durability is switched off (``fsync``, ``synchronous_commit``,
  ``full_page_writes``) because nothing here has to survive;
- :meth:`PostgresServer.stop` shuts it down (fast shutdown, then immediate, then
  SIGKILL) and removes the directory; an ``atexit`` hook does the same for a
  server whose fixture never got to tear down;
- as a safety net the server gets ``PR_SET_PDEATHSIG`` (SIGQUIT, PostgreSQL's
  immediate shutdown, which also ends its backends), so it dies with the test
  process even when that is killed outright; the directory of such a run is
  removed by the next run (:func:`sweep_stale`).

PostgreSQL refuses to run as root. When the tests run as root (CI, containers)
initdb and postgres are started as an unprivileged user: ``$COUNTERSIGN_TEST_PG_USER``
if set, else ``countersign-test`` (created with ``useradd --system`` when absent),
else ``nobody``. The temporary directory is owned by that user.

The binaries are looked up in ``$COUNTERSIGN_PG_BINDIR``, ``PATH``,
``/usr/local/bin``, ``/usr/local/pgsql/bin``, ``/usr/lib/postgresql/*/bin``
(Debian keeps them there, off ``PATH``; newest version first) and
``/usr/pgsql-*/bin``. :func:`find_binaries` returns ``None`` when there are none,
which the fixtures turn into a skip.

Note: the parent-death signal follows the *thread* that started the server;
start it from the main thread (pytest fixtures do).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from procs import LiveSet, alive, die_with_parent, free_port, tail
from psycopg import sql

SUPERUSER = "postgres"
DIR_PREFIX = "countersign-pg-"
DEFAULT_USER = "countersign-test"
_OWNER_FILE = "owner.pid"


_LIVE = LiveSet()

class PostgresStartError(RuntimeError):
    """initdb or postgres failed, or the server never accepted connections."""


# ---------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PostgresBinaries:
    bindir: Path
    initdb: Path
    postgres: Path

    def version(self) -> str:
        out = subprocess.run([str(self.postgres), "--version"], capture_output=True,
                             text=True, timeout=30, check=False)
        return out.stdout.strip() or out.stderr.strip()


def _version_key(path: Path) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", path.parent.name if path.name == "bin" else path.name)
    return tuple(int(n) for n in numbers) or (0,)


def candidate_dirs() -> list[Path]:
    """Where PostgreSQL's server binaries are looked for, in order."""
    dirs: list[Path] = []
    override = os.environ.get("COUNTERSIGN_PG_BINDIR")
    if override:
        dirs.append(Path(override))
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found:
            dirs.append(Path(found).parent)
    dirs += [Path("/usr/local/bin"), Path("/usr/local/pgsql/bin")]
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    dirs += sorted(Path("/usr").glob("pgsql-*/bin"), key=_version_key, reverse=True)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_binaries() -> PostgresBinaries | None:
    """The first directory holding both ``initdb`` and ``postgres``, or ``None``."""
    for d in candidate_dirs():
        initdb, postgres = d / "initdb", d / "postgres"
        if all(p.is_file() and os.access(p, os.X_OK) for p in (initdb, postgres)):
            return PostgresBinaries(d, initdb, postgres)
    return None


def missing_reason() -> str | None:
    """Why no server can be started (``None`` when one can)."""
    if find_binaries() is None:
        searched = ["$COUNTERSIGN_PG_BINDIR", "PATH", "/usr/local/bin", "/usr/local/pgsql/bin",
                    "/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"]
        return (f"PostgreSQL is not installed: no initdb and postgres in {', '.join(searched)} "
                "(Debian: apt-get install postgresql, or make system-deps)")
    return None


# ---------------------------------------------------------------------- the user


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the server runs as (``None`` fields: ourselves)."""

    name: str
    uid: int
    gid: int


def _lookup(name: str) -> RunAs | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_user(name: str) -> RunAs | None:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    if not Path(useradd).exists():
        return None
    nologin = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()),
                   "/bin/false")
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", nologin, "--comment", "countersign test databases", name],
        capture_output=True, timeout=60, check=False)
    return _lookup(name)  # also right when a parallel run created it first


def unprivileged_user() -> RunAs | None:
    """``None`` when not root (run as ourselves), else the account to switch to."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("COUNTERSIGN_TEST_PG_USER")
    if wanted:
        found = _lookup(wanted)
        if found is None:
            raise PostgresStartError(f"COUNTERSIGN_TEST_PG_USER={wanted!r}: no such user")
        return found
    found = _lookup(DEFAULT_USER) or _create_user(DEFAULT_USER) or _lookup("nobody")
    if found is None or found.uid == 0:
        raise PostgresStartError(
            "running as root and no unprivileged user to run PostgreSQL as "
            f"(tried {DEFAULT_USER!r}, useradd, 'nobody'); set COUNTERSIGN_TEST_PG_USER")
    return found


# ---------------------------------------------------------------------- processes


def _child_setup(run_as: RunAs | None, parent: int) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the forked child
        if run_as is not None:
            os.setgroups([])
            os.setgid(run_as.gid)
            os.setuid(run_as.uid)
        # after the uid change: changing credentials clears the parent-death signal
        die_with_parent(parent, signal.SIGQUIT)

    return setup






def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def sweep_stale(base: Path) -> None:
    """Remove directories of earlier runs whose test process and server are gone."""
    for d in base.glob(f"{DIR_PREFIX}*"):
        owner = _read_pid(d / _OWNER_FILE)
        postmaster = _read_pid(d / "data" / "postmaster.pid")
        if owner is None or alive(owner) or (postmaster is not None and alive(postmaster)):
            continue
        shutil.rmtree(d, ignore_errors=True)






class PostgresServer:
    """One throwaway PostgreSQL server; see the module docstring."""

    def __init__(self, binaries: PostgresBinaries, *, base_dir: Path | None = None) -> None:
        self.binaries = binaries
        self.base_dir = base_dir or Path(tempfile.gettempdir())
        self.root: Path | None = None
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.run_as: RunAs | None = None
        self._db_counter = 0
        self._lock = threading.Lock()

    # --- paths and URLs ------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """A plain ``postgresql://`` URL, as a user would pass to ``--db``."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                               dbname=dbname, connect_timeout=5, autocommit=True)

    # --- life cycle ----------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> PostgresServer:
        if self.popen is not None:
            raise RuntimeError("PostgresServer already started")
        self.run_as = unprivileged_user()
        sweep_stale(self.base_dir)
        self.root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.base_dir))
        (self.root / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        _LIVE.add(self)
        try:
            if self.run_as is not None:
                self._check_reachable(self.root)
                os.chown(self.root, self.run_as.uid, self.run_as.gid)
            self._initdb()
            for _attempt in range(5):
                if self._serve(timeout):
                    return self
            raise PostgresStartError(
                f"postgres could not bind a free port after 5 attempts\n"
                f"--- {self.log_path} ---\n{tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def _check_reachable(self, path: Path) -> None:
        for parent in path.parents:
            if not parent.stat().st_mode & 0o001:
                raise PostgresStartError(
                    f"{parent} is not searchable by {self.run_as.name if self.run_as else '?'}; "
                    "point TMPDIR at a world-searchable directory")

    def _env(self) -> dict[str, str]:
        assert self.root is not None
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
                "HOME": str(self.root), "TZ": "UTC"}

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        assert self.root is not None
        with log.open("ab") as out:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.root, env=self._env(), start_new_session=True, close_fds=True,
                preexec_fn=_child_setup(self.run_as, os.getpid()),  # noqa: PLW1509
            )

    def _initdb(self) -> None:
        assert self.root is not None
        log = self.root / "initdb.log"
        argv = [str(self.binaries.initdb), "--pgdata", str(self.data_dir),
                "--username", SUPERUSER, "--auth", "trust", "--encoding", "UTF8",
                "--locale", "C", "--no-sync"]
        proc = self._spawn(argv, log)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PostgresStartError(f"initdb timed out\n{tail(log)}") from None
        if rc != 0:
            raise PostgresStartError(f"initdb exited with status {rc}\ncommand: {argv}\n"
                                     f"--- {log} ---\n{tail(log)}")

    def _serve(self, timeout: float) -> bool:
        """Start postgres on a free port; False when the port was taken meanwhile."""
        assert self.root is not None
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "32MB",
            "max_wal_size": "1GB",
            "autovacuum": "off",
            "huge_pages": "off",
            "logging_collector": "off",
            "timezone": "UTC",
        }
        argv = [str(self.binaries.postgres), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self.popen = self._spawn(argv, self.log_path)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            rc = self.popen.poll()
            if rc is not None:
                log = tail(self.log_path)
                self.popen = None
                if "could not bind" in log or "already in use" in log:
                    return False
                raise PostgresStartError(f"postgres exited with status {rc}\ncommand: {argv}\n"
                                         f"--- {self.log_path} ---\n{log}")
            try:
                with self.connect() as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError as exc:
                last = str(exc).strip()
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"postgres not accepting connections on 127.0.0.1:{self.port} within "
                    f"{timeout:.0f}s (last error: {last})\n--- {self.log_path} ---\n"
                    f"{tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; remove the dir."""
        popen, self.popen = self.popen, None
        if popen is not None:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                if popen.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=grace)
            popen.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        _LIVE.discard(self)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- databases -----------------------------------------------------------------
    def create_database(self, hint: str = "db") -> str:
        """A new, empty database (a unique name built from ``hint``); its URL."""
        with self._lock:
            self._db_counter += 1
            number = self._db_counter
        clean = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:40] or "db"
        name = f"t{number}_{clean}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing any connection still open to it)."""
        name = url.rsplit("/", 1)[1]
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running."""
        return self.popen.pid if self.popen is not None else None
