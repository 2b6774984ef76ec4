"""The sandbox's services: ``countersign serve`` on SQLite and a registry, on loopback, with TLS.

Everything lives in one directory (``--dir``; ``$COUNTERSIGN_SANDBOX_DIR``;
default ``.countersign-sandbox`` in the current directory, so a sandbox is next
to the work it belongs to and removing the directory removes all of it)::

    sandbox.json          the ports, chosen free on the first ``up`` and kept
    pki/                  ca.crt (what clients trust), server.crt, server.key (0600)
    server/               countersign.db (SQLite), signer-passphrase (0600)
    registry/             config.yml, storage/ (the registry's blobs on disk)
    run/NAME.pid          pid, start time and command line of each service
    logs/NAME.log         each service's output
    trust/                the client trust dir; config.json for countersign and notary
    env                   the ``export`` lines ``up`` prints

Services are detached (their own session, output to their log), so they keep
running after ``up`` exits; ``down`` stops exactly the processes its pid files
name, after checking they are still those processes (:mod:`procs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from countersign.client.http import ssl_context
from countersign.errors import RemoteError
from countersign.sandbox import SandboxError, pki, procs

DIR_ENV = "COUNTERSIGN_SANDBOX_DIR"
DEFAULT_DIR_NAME = ".countersign-sandbox"
REGISTRY_ENV = "COUNTERSIGN_DOCKER_REGISTRY"
TRUST_SERVER = "trust-server"
REGISTRY = "registry"
SERVICES = (TRUST_SERVER, REGISTRY)
HOST = "127.0.0.1"


def default_dir() -> Path:
    """``$COUNTERSIGN_SANDBOX_DIR``, else ``.countersign-sandbox`` in the current directory."""
    value = os.environ.get(DIR_ENV)
    return Path(value) if value else Path.cwd() / DEFAULT_DIR_NAME


def find_registry() -> Path | None:
    """The CNCF distribution registry: ``$COUNTERSIGN_DOCKER_REGISTRY`` or ``docker-registry``."""
    override = os.environ.get(REGISTRY_ENV)
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("docker-registry")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all bound at once, then released, so none repeats."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def registry_config(storage: Path, addr: str, *, secret: str,
                    tls: tuple[Path, Path] | None = None) -> str:
    """A CNCF distribution config: filesystem storage under ``storage``, deletes allowed,
    no upload purging (nothing deleted behind a test's or a demo's back), quiet logs,
    TLS when given."""
    return "\n".join([
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {addr}",
        f"  secret: {secret}",
        *(["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"] if tls else []),
        "",
    ])


def registry_blob_path(storage: Path, digest: str) -> Path:
    """Where distribution's filesystem driver under ``storage`` keeps blob ``digest``."""
    algorithm, _, hexdigest = digest.partition(":")
    return (storage / "docker" / "registry" / "v2" / "blobs" / algorithm / hexdigest[:2]
            / hexdigest / "data")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "running", "stale" (pid file of a process that is gone) or "stopped"
    address: str
    pid: int | None = None
    log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sandbox:
    """The sandbox in ``root``; see the module docstring for what is where."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        #: sandbox.json's ports once read or written: they never change after the first up
        self._ports: dict[str, int] = {}

    # --- where things are -------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def tls(self) -> pki.TLSFiles:
        return pki.tls_files(self.root / "pki")

    @property
    def ca(self) -> Path:
        return self.tls.ca_cert

    @property
    def trust_dir(self) -> Path:
        return self.root / "trust"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def registry_storage(self) -> Path:
        return self.root / "registry" / "storage"

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps blob ``digest`` on disk (the filesystem driver's layout)."""
        return registry_blob_path(self.registry_storage, digest)

    def ports(self) -> dict[str, int]:
        """The ports of the services, from ``sandbox.json`` (empty before the first ``up``).

        The file is read until it names the ports, then not again: ``up`` writes
        them once and keeps them.
        """
        if self._ports:
            return dict(self._ports)
        if self.root.exists() and not self.root.is_dir():
            raise SandboxError(f"{self.root} is not a directory", advice="pass another --dir")
        try:
            doc = json.loads(self.state_file.read_text())
            ports = {name: int(doc["ports"][name]) for name in SERVICES}
            bad = [f"{name} port {port}" for name, port in ports.items()
                   if not 1 <= port <= 65535]
            if bad:
                raise ValueError(f"{', '.join(bad)} outside 1..65535")
            self._ports = ports
            return dict(ports)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"{self.state_file}: not a sandbox state file ({exc})",
                               advice="run countersign sandbox down, remove the directory "
                               "and start again") from None

    def _port(self, name: str) -> int:
        ports = self.ports()
        if name not in ports:
            raise SandboxError(f"no sandbox in {self.root}",
                               advice=f"countersign sandbox up --dir {self.root}")
        return ports[name]

    @property
    def trust_url(self) -> str:
        return f"https://{HOST}:{self._port(TRUST_SERVER)}"

    @property
    def registry(self) -> str:
        """``127.0.0.1:PORT``: the registry part of image references."""
        return f"{HOST}:{self._port(REGISTRY)}"

    def address(self, name: str) -> str:
        return self.trust_url if name == TRUST_SERVER else f"https://{self.registry}"

    # --- status -----------------------------------------------------------------------

    def _record(self, name: str) -> procs.ProcessRecord | None:
        path = self.pid_file(name)
        return procs.ProcessRecord.load(path) if path.exists() else None

    def status(self) -> list[ServiceStatus]:
        ports = self.ports()
        out = []
        for name in SERVICES:
            address = self.address(name) if ports else "-"
            record = self._record(name)
            if record is None:
                out.append(ServiceStatus(name, "stopped", address))
            elif procs.is_running(record):
                out.append(ServiceStatus(name, "running", address, record.pid, record.log))
            else:
                out.append(ServiceStatus(name, "stale", address, record.pid, record.log))
        return out

    def running(self) -> bool:
        return all(s.state == "running" for s in self.status())

    # --- up and down ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, *, create: bool) -> Iterator[None]:
        """One ``up`` or ``down`` at a time per sandbox directory (made first if ``create``)."""
        self.ports()  # refuses a root that is not a directory
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".lock").open("a")
        except OSError as exc:
            raise SandboxError(f"cannot use {self.root} as the sandbox directory: "
                               f"{exc.strerror}", advice="pass another --dir") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self, *, timeout: float = 30.0) -> list[str]:
        """Start what is not running; returns the names started (empty: all were running)."""
        binary = find_registry()
        with self._locked(create=True):
            statuses = {s.name: s for s in self.status()}
            if all(s.state == "running" for s in statuses.values()):
                self.write_client_config()
                return []
            if binary is None and statuses[REGISTRY].state != "running":
                raise SandboxError(
                    "docker-registry (the CNCF distribution registry) is not installed",
                    advice="apt-get install docker-registry (scripts/system-deps.sh does it), "
                    f"or set {REGISTRY_ENV} to the binary")
            self.root.chmod(0o700)
            ports = self.ports() or dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
            self.state_file.write_text(json.dumps({"ports": ports}, indent=2) + "\n")
            self._ports = dict(ports)
            nothing_runs = not any(s.state == "running" for s in statuses.values())
            if nothing_runs and not (self.tls.exist() and pki.still_valid(self.tls)):
                pki.make_tls(self.root / "pki")
            started = []
            try:
                for name in SERVICES:
                    if statuses[name].state == "running":
                        continue
                    stale = statuses[name].pid
                    if stale is not None:
                        procs.reap(stale)  # collects it if it was a child of this process
                    self.pid_file(name).unlink(missing_ok=True)
                    if not _wait_port_free(ports[name]):
                        raise SandboxError(
                            f"port {ports[name]} of the sandbox's {name} is taken by another "
                            "program", advice=f"free it, or use another --dir than {self.root}")
                    if name == TRUST_SERVER:
                        self._start_trust_server(ports[name], timeout)
                    elif binary is not None:
                        self._start_registry(binary, ports[name], timeout)
                    started.append(name)
            except BaseException:
                for name in started:
                    self._stop(name)
                raise
            self.write_client_config()
            return started

    def down(self, names: Sequence[str] = SERVICES) -> list[tuple[str, str]]:
        """Stop what ``up`` started: (name, "stopped" | "stale" | "not running") per service.

        ``stale``: the pid file named a process that is gone or is now another
        program; the file is removed and nothing is signalled. A directory that does not
        exist holds no sandbox: every service is "not running", and nothing is created.
        """
        if not self.root.exists():
            return [(name, "not running") for name in reversed(SERVICES) if name in names]
        with self._locked(create=False):
            return [(name, self._stop(name)) for name in reversed(SERVICES) if name in names]

    def _stop(self, name: str) -> str:
        record = self._record(name)
        if record is None:
            return "not running"
        was_running = procs.stop(record)
        self.pid_file(name).unlink(missing_ok=True)
        return "stopped" if was_running else "stale"

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC",
               "HOME": str(self.root)}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _launch(self, name: str, argv: list[str], port: int, probe: str,
                timeout: float) -> None:
        try:  # before anything starts, so a bad CA file leaves no process behind
            context = ssl_context(self.ca)
        except RemoteError as exc:
            raise SandboxError(f"{name}: {exc.message}",
                               advice="run countersign sandbox down, then up: it makes "
                               "fresh TLS material when nothing runs") from None
        log = self.log_file(name)
        record = procs.spawn(name, argv, log=log, cwd=self.root, env=self._env())
        procs.write_record(self.pid_file(name), record)
        url = f"https://{HOST}:{port}{probe}"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not procs.is_running(record):
                procs.reap(record.pid)
                self.pid_file(name).unlink(missing_ok=True)
                raise SandboxError(f"{name} exited while starting:\n{_tail(log)}",
                                   advice=f"see {log}")
            try:
                if httpx.get(url, verify=context, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.05)
        self._stop(name)
        raise SandboxError(f"{name} did not answer {url} within {timeout:.0f}s ({last})",
                           advice=f"see {log}")

    def _start_trust_server(self, port: int, timeout: float) -> None:
        server_dir = self.root / "server"
        server_dir.mkdir(exist_ok=True)
        passphrase = server_dir / "signer-passphrase"
        if not passphrase.exists():
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        argv = [sys.executable, "-m", "countersign.cli.main", "serve",
                "--db", f"sqlite:///{server_dir / 'countersign.db'}",
                "--listen", f"{HOST}:{port}",
                "--tls-cert", str(self.tls.server_cert), "--tls-key", str(self.tls.server_key),
                "--signer-passphrase-file", str(passphrase), "--log-level", "warning"]
        self._launch(TRUST_SERVER, argv, port, "/_notary_server/health", timeout)

    def _start_registry(self, binary: Path, port: int, timeout: float) -> None:
        directory = self.root / "registry"
        self.registry_storage.mkdir(parents=True, exist_ok=True)
        config = directory / "config.yml"
        config.write_text(registry_config(
            self.registry_storage, f"{HOST}:{port}", secret=secrets.token_hex(16),
            tls=(self.tls.server_cert, self.tls.server_key)))
        config.chmod(0o600)
        self._launch(REGISTRY, [str(binary), "serve", str(config)], port, "/v2/", timeout)

    # --- what clients need ------------------------------------------------------------

    def write_client_config(self) -> None:
        """The trust dir's config.json (read by countersign and by ``notary -c``) and ``env``."""
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        self.trust_dir.chmod(0o700)
        config = {"trust_dir": str(self.trust_dir),
                  "remote_server": {"url": self.trust_url, "root_ca": str(self.ca)},
                  "trust_servers": {self.registry: self.trust_url}}
        (self.trust_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.env_file.write_text("\n".join(self.env_lines()) + "\n")

    def env_lines(self) -> list[str]:
        """What a shell needs for the other countersign commands to use this sandbox."""
        return [f"export {DIR_ENV}={shlex.quote(str(self.root))}",
                f"export COUNTERSIGN_TRUST_DIR={shlex.quote(str(self.trust_dir))}",
                f"export COUNTERSIGN_SERVER={self.trust_url}",
                f"export COUNTERSIGN_TLS_CA={shlex.quote(str(self.ca))}",
                f"export COUNTERSIGN_SANDBOX_REGISTRY={self.registry}"]


def _wait_port_free(port: int, timeout: float = 5.0) -> bool:
    """Whether ``port`` is (or soon becomes) free: a service just stopped releases it late."""
    deadline = time.monotonic() + timeout
    while not port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
