"""Operating ``countersign serve``: graceful shutdown, logs without secrets, metrics."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from _countersign import SIGNER_PASSPHRASE, CountersignServer
from _tufhttp import create_repository, request

pytestmark = pytest.mark.interop


def test_sigterm_is_a_clean_shutdown_and_logs_hold_no_secret(tmp_path: Path) -> None:
    server = CountersignServer(tmp_path / "server", extra_args=["--log-level", "debug"])
    server.start()
    try:
        gun = "localhost:5000/ops/repo"
        create_repository(server, gun, b"payload", client_snapshot=False)  # type: ignore[arg-type]
        request(server, "GET", f"/v2/{gun}/_trust/tuf/timestamp.json",  # type: ignore[arg-type]
                headers={"Authorization": "Bearer secret-token-value"})
        status, _, metrics = request(server, "GET", "/metrics")  # type: ignore[arg-type]
        assert status == 200
        assert b'countersign_http_requests_total{route="update",method="POST",status="200"} 1' \
            in metrics
        assert b"countersign_http_request_seconds_bucket" in metrics
        proc = server._proc
        assert proc is not None
        proc.popen.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.popen.wait(timeout=15) == 0
        assert time.monotonic() - started < 12
        server._proc = None
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert '"msg":"update"' in log
    assert SIGNER_PASSPHRASE not in log and "secret-token-value" not in log
    database = (tmp_path / "server" / "countersign.db").read_bytes()
    assert SIGNER_PASSPHRASE.encode() not in database
    assert b"PRIVATE KEY" not in database


def test_restart_keeps_serving_the_same_repository(tmp_path: Path) -> None:
    server = CountersignServer(tmp_path / "server")
    server.start()
    gun = "localhost:5000/ops/persist"
    try:
        create_repository(server, gun, b"payload", client_snapshot=False)  # type: ignore[arg-type]
        before = server.get_tuf(gun, "timestamp").body
    finally:
        server.stop()
    server.start()
    try:
        status, _, after = server.get_tuf(gun, "timestamp")
        assert status == 200 and after == before  # the same keys sign after a restart
        status, _, _ = request(server, "GET", f"/v2/{gun}/_trust/tuf/timestamp.key")  # type: ignore[arg-type]
        assert status == 200
    finally:
        server.stop()
