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

from _countersign import COUNTERSIGN, CountersignProcess
from _notary import TLSFiles

MAX_ANSWER = 1 << 20


class CountersignWebhook(CountersignProcess):
    """``countersign webhook --policy POLICY`` with TLS on a free 127.0.0.1 port."""

    name = "countersign webhook"
    log_name = "webhook.log"

    def __init__(self, workdir: Path, policy: Path, *, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__(workdir, extra_args=extra_args, startup_timeout=startup_timeout)
        self.policy = policy
        self.env = dict(env or {})

    def _argv(self, tls: TLSFiles) -> list[str]:
        return [COUNTERSIGN, "webhook", "--policy", str(self.policy), "--listen",
                f"127.0.0.1:{self.port}", "--tls-cert", str(tls.server_cert),
                "--tls-key", str(tls.server_key), "--trust-dir", str(self.workdir / "trust"),
                "--log-level", "warning", *self.extra_args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

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
