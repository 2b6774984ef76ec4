"""``countersign webhook`` as a child process on loopback with throwaway TLS, and a small
HTTPS client for AdmissionReview POSTs (used by tests/interop and benchmarks/bench_gate.py)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _countersign import COUNTERSIGN
from _notary import ProcessStartError, TLSFiles, _probe_context, _Process, make_tls_material
from procs import free_port, tail

MAX_ANSWER = 1 << 20


class CountersignWebhook:
    """``countersign webhook --policy POLICY`` with TLS on a free 127.0.0.1 port."""

    def __init__(self, workdir: Path, policy: Path, *, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, startup_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.policy = policy
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.tls: TLSFiles | None = None
        self.port = 0
        self._proc: _Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        assert self.tls is not None
        return self.tls.ca_cert

    @property
    def log_path(self) -> Path:
        return self.workdir / "webhook.log"

    def logs(self) -> str:
        return tail(self.log_path)

    def pids(self) -> list[int]:
        return [self._proc.popen.pid] if self._proc else []

    def start(self) -> CountersignWebhook:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            self.tls = make_tls_material(self.workdir / "pki")
        for _attempt in range(3):
            self.port = free_port()
            argv = [COUNTERSIGN, "webhook", "--policy", str(self.policy), "--listen",
                    f"127.0.0.1:{self.port}", "--tls-cert", str(self.tls.server_cert),
                    "--tls-key", str(self.tls.server_key), "--trust-dir",
                    str(self.workdir / "trust"), "--log-level", "warning", *self.extra_args]
            self._proc = _Process("countersign webhook", argv, self.log_path, self.port,
                                  {**os.environ, **self.env})
            try:
                self._proc.wait_port(self.startup_timeout, _probe_context(self.tls))
                return self
            except ProcessStartError:
                self._proc.stop()
                if "cannot listen" not in self.logs().lower():
                    raise
        raise ProcessStartError(f"countersign webhook could not bind a port\n{self.logs()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> CountersignWebhook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection(self, timeout: float = 30.0) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx,
                                           timeout=timeout)

    def post(self, path: str, body: bytes, *, content_type: str = "application/json",
             conn: http.client.HTTPSConnection | None = None) -> tuple[int, Any]:
        """POST ``body``; (status, parsed JSON answer). Reuses ``conn`` (keep-alive) if given."""
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            data = response.read(MAX_ANSWER + 1)
            assert len(data) <= MAX_ANSWER
            return response.status, json.loads(data)
        finally:
            if own:
                conn.close()

    def get(self, path: str) -> tuple[int, Any]:
        conn = self.connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read(MAX_ANSWER))
        finally:
            conn.close()
