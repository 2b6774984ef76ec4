"""``countersign serve --workers N``: several processes on one address, one SQLite file.

Each worker serves current metadata from memory; what any worker writes must be
what every worker serves from the next request on (a client that publishes and
then reads through another connection must never see an older timestamp).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _countersign import CountersignServer
from _tufhttp import create_repository, fetch_repository, post_update, request

from countersign.tuf import TARGETS, TIMESTAMP, FileMeta, Metadata, Targets

pytestmark = pytest.mark.interop

GUN = "localhost:5000/workers/app"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _timestamp_version(server: CountersignServer) -> int:
    status, _, body = request(server, "GET",  # type: ignore[arg-type]
                              f"/v2/{GUN}/_trust/tuf/timestamp.json")
    assert status == 200, body
    return int(json.loads(body)["signed"]["version"])


def test_every_worker_serves_what_any_worker_wrote(tmp_path: Path) -> None:
    server = CountersignServer(tmp_path / "server", extra_args=["--workers", "2"]).start()
    try:
        parent = server.pids()[0]
        assert len(_children(parent)) == 2
        keys = create_repository(server, GUN, b"payload", client_snapshot=False)  # type: ignore[arg-type]
        targets = Metadata.from_bytes(fetch_repository(server, GUN)[TARGETS],  # type: ignore[arg-type]
                                      Targets)
        for round_ in range(1, 31):
            entries = dict(targets.signed.targets)
            entries[f"v{round_}"] = FileMeta.for_bytes(b"%d" % round_, algorithms=("sha256",))
            targets = Metadata(replace(targets.signed.bump(role=TARGETS), targets=entries)).sign(
                keys[TARGETS], keys[TARGETS].public_key)
            status, body = post_update(server, GUN, {TARGETS: targets.to_bytes()})  # type: ignore[arg-type]
            assert status == 200, body
            # each request a new connection: the kernel spreads them over the workers
            seen = {_timestamp_version(server) for _ in range(6)}
            assert seen == {round_ + 1}, f"after update {round_}: served {sorted(seen)}"
        served = fetch_repository(server, GUN)  # type: ignore[arg-type]
        assert Metadata.from_bytes(served[TARGETS], Targets).signed.targets.keys() >= {"v30"}
        assert Metadata.from_bytes(served[TIMESTAMP]).signed.version == 31

        # a worker that dies is replaced; the server keeps answering
        victim = _children(parent)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            children = _children(parent)
            if len(children) == 2 and victim not in children:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the killed worker was not replaced: {_children(parent)}")
        assert _timestamp_version(server) == 31

        # SIGTERM: every worker stops, the server exits 0
        workers = _children(parent)
        proc = server._proc
        assert proc is not None
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(timeout=20) == 0
        server._proc = None
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                    and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    finally:
        server.stop()


def test_workers_option_is_checked(tmp_path: Path) -> None:
    import subprocess

    from _countersign import COUNTERSIGN

    result = subprocess.run([COUNTERSIGN, "serve", "--workers", "0", "--db",
                             f"sqlite:///{tmp_path / 'db'}"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode != 0
    assert "--workers must be between 1 and 64" in result.stderr
    assert "Traceback" not in result.stderr
