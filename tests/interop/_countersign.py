"""``countersign serve`` as a child process on loopback, with the same interface as
:class:`_notary.ReferenceNotary`, so every interop test can run against either."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from _notary import (
    DEFAULT_MAX_BODY,
    HTTPResult,
    NotaryCLI,
    ProcessStartError,
    TLSFiles,
    _probe_context,
    _Process,
    https_get,
    make_tls_material,
    tuf_path,
)
from procs import COUNTERSIGN, free_port, tail

SIGNER_PASSPHRASE = "interop-signer-passphrase"


class CountersignProcess:
    """A ``countersign`` service as a child process with TLS on a free 127.0.0.1 port.

    Subclasses say which command (``_argv``), with which environment (``_env``),
    and where it logs; starting, retrying a taken port and stopping are here.
    """

    name = "countersign"
    log_name = "server.log"

    def __init__(self, workdir: Path, *, extra_args: Sequence[str] = (),
                 startup_timeout: float = 30.0, tls: TLSFiles | None = None) -> None:
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.tls = tls
        self.port = 0
        self._proc: _Process | None = None

    def _argv(self, tls: TLSFiles) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        assert self.tls is not None
        return self.tls.ca_cert

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def logs(self) -> str:
        return tail(self.log_path)

    def running(self) -> bool:
        return self._proc is not None and self._proc.popen.poll() is None

    def pids(self) -> list[int]:
        return [self._proc.popen.pid] if self._proc else []

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            self.tls = make_tls_material(self.workdir / "pki")
        for _attempt in range(3):
            self.port = free_port()
            self._proc = _Process(self.name, self._argv(self.tls), self.log_path, self.port,
                                  self._env())
            try:
                self._proc.wait_port(self.startup_timeout, _probe_context(self.tls))
                return self
            except ProcessStartError:
                self._proc.stop()
                text = self.logs().lower()
                if "address already in use" not in text and "cannot listen" not in text:
                    raise
        raise ProcessStartError(f"{self.name} could not bind a port\n{self.logs()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CountersignServer(CountersignProcess):
    """``countersign serve`` with TLS on a free port; SQLite in ``workdir`` unless ``db``."""

    def __init__(self, workdir: Path, *, db: str | None = None,
                 extra_args: Sequence[str] = (), startup_timeout: float = 30.0,
                 tls: TLSFiles | None = None) -> None:
        super().__init__(workdir, extra_args=extra_args, startup_timeout=startup_timeout,
                         tls=tls)
        self.db = db or f"sqlite:///{workdir / 'countersign.db'}"

    def _argv(self, tls: TLSFiles) -> list[str]:
        return [COUNTERSIGN, "serve", "--db", self.db, "--listen", f"127.0.0.1:{self.port}",
                "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key),
                "--log-level", "warning", *self.extra_args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "COUNTERSIGN_SIGNER_PASSPHRASE": SIGNER_PASSPHRASE}

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None:
            self._proc.popen.send_signal(signal.SIGKILL)
            self._proc.popen.wait()
            self._proc = None

    def get(self, path: str, *, max_bytes: int = DEFAULT_MAX_BODY) -> HTTPResult:
        return https_get(self.url, path, self.ca_path, max_bytes=max_bytes)

    def get_tuf(self, gun: str, role: str, *, sha256: str | None = None,
                version: int | None = None, max_bytes: int = DEFAULT_MAX_BODY) -> HTTPResult:
        return self.get(tuf_path(gun, role, sha256=sha256, version=version), max_bytes=max_bytes)

    def cli(self, trust_dir: Path, *, timeout: float = 60.0,
            extra_env: Mapping[str, str] | None = None) -> NotaryCLI:
        return NotaryCLI(trust_dir, self.url, self.ca_path, timeout=timeout, extra_env=extra_env)
