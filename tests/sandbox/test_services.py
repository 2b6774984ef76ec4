"""``countersign sandbox up|status|down``: detached services, pid files checked by identity."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from procs import processes_mentioning, run_cli

from countersign.sandbox import procs
from countersign.sandbox.services import REGISTRY, TRUST_SERVER, Sandbox


def _answers(url: str, ca: Path) -> int:
    return httpx.get(url, verify=ssl.create_default_context(cafile=str(ca)),
                     timeout=5).status_code


def test_up_status_down_through_the_cli(sandbox_dir: Path) -> None:
    up = run_cli("sandbox", "up", "--dir", str(sandbox_dir), "--json")
    assert up.returncode == 0, up.stderr
    record = json.loads(up.stdout)
    assert record["started"] == [TRUST_SERVER, REGISTRY]
    pids = {s["name"]: s["pid"] for s in record["services"]}
    # the services outlived the `up` process, and they are not its children any more
    sandbox = Sandbox(sandbox_dir)
    assert [s.state for s in sandbox.status()] == ["running", "running"]
    for pid in pids.values():
        assert procs.start_ticks(pid) is not None
        assert os.getpgid(pid) == pid  # their own session and group
    assert _answers(f"{sandbox.trust_url}/_notary_server/health", sandbox.ca) == 200
    assert _answers(f"https://{sandbox.registry}/v2/", sandbox.ca) == 200
    # what clients need was written
    config = json.loads((sandbox.trust_dir / "config.json").read_text())
    assert config["remote_server"] == {"url": sandbox.trust_url, "root_ca": str(sandbox.ca)}
    assert config["trust_servers"] == {sandbox.registry: sandbox.trust_url}
    assert f"export COUNTERSIGN_SERVER={sandbox.trust_url}" in up.stdout
    assert (sandbox_dir / "env").read_text().splitlines() == record["env"]
    for secret in (sandbox.tls.server_key, sandbox_dir / "server" / "signer-passphrase"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    status = run_cli("sandbox", "status", "--dir", str(sandbox_dir))
    assert status.returncode == 0
    assert f"running  {sandbox.trust_url}  pid {pids[TRUST_SERVER]}" in status.stdout
    # a second up starts nothing and keeps the same processes
    again = run_cli("sandbox", "up", "--dir", str(sandbox_dir), "--json")
    assert json.loads(again.stdout)["started"] == []
    assert {s.name: s.pid for s in sandbox.status()} == pids
    down = run_cli("sandbox", "down", "--dir", str(sandbox_dir))
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == ["registry: stopped", "trust-server: stopped"]
    for pid in pids.values():
        assert procs.start_ticks(pid) is None
    assert processes_mentioning(str(sandbox_dir)) == []
    after = run_cli("sandbox", "status", "--dir", str(sandbox_dir), "--json")
    assert after.returncode == 3
    assert [s["state"] for s in json.loads(after.stdout)["services"]] == ["stopped", "stopped"]
    assert not list((sandbox_dir / "run").glob("*.pid"))


def test_down_stops_exactly_what_up_started(sandbox_dir: Path) -> None:
    sandbox = Sandbox(sandbox_dir)
    sandbox.up()
    ports = sandbox.ports()
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        # the registry's pid file now names another process (a reused PID, as after a crash)
        record = procs.ProcessRecord.load(sandbox.pid_file(REGISTRY))
        real_registry = record.pid
        forged = procs.ProcessRecord(REGISTRY, bystander.pid, record.start_ticks, record.argv,
                                     record.log)
        procs.write_record(sandbox.pid_file(REGISTRY), forged)
        status = run_cli("sandbox", "status", "--dir", str(sandbox_dir))
        assert status.returncode == 3
        assert "registry      STALE" in status.stdout
        assert f"pid {bystander.pid}" in status.stdout
        assert sandbox.down() == [(REGISTRY, "stale"), (TRUST_SERVER, "stopped")]
        time.sleep(0.2)
        assert bystander.poll() is None, "down signalled a process it did not start"
        assert procs.start_ticks(real_registry) is not None  # not named by any pid file now
    finally:
        bystander.kill()
        bystander.wait()
        os.kill(real_registry, 15)
    # up again: the same ports, so image references and trust data stay valid
    sandbox.up()
    assert sandbox.ports() == ports
    assert Sandbox(sandbox_dir).ports() == ports  # as sandbox.json says
    assert [s.state for s in sandbox.status()] == ["running", "running"]
    sandbox.down()
    assert [s.state for s in sandbox.status()] == ["stopped", "stopped"]


def test_a_pid_file_whose_process_is_gone_is_stale(sandbox_dir: Path) -> None:
    sandbox = Sandbox(sandbox_dir)
    sandbox.up()
    record = procs.ProcessRecord.load(sandbox.pid_file(TRUST_SERVER))
    os.kill(record.pid, 9)
    deadline = time.monotonic() + 10
    while procs.is_running(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {s.name: s.state for s in sandbox.status()}[TRUST_SERVER] == "stale"
    # up restarts only what is not running
    assert sandbox.up() == [TRUST_SERVER]
    assert sandbox.running()


def test_up_without_a_registry_binary_says_what_to_install(sandbox_dir: Path) -> None:
    result = run_cli("sandbox", "up", "--dir", str(sandbox_dir),
                     env={"COUNTERSIGN_DOCKER_REGISTRY": str(sandbox_dir / "no-such-binary")})
    assert result.returncode == 1
    assert "docker-registry" in result.stderr and "apt-get install docker-registry" in \
        result.stderr
    assert "Traceback" not in result.stderr
    assert processes_mentioning(str(sandbox_dir)) == []


def test_status_of_a_directory_without_a_sandbox(tmp_path: Path) -> None:
    result = run_cli("sandbox", "status", "--dir", str(tmp_path / "none"))
    assert result.returncode == 3
    assert "trust-server  stopped" in result.stdout
    down = run_cli("sandbox", "down", "--dir", str(tmp_path / "none"))
    assert down.returncode == 0 and "not running" in down.stdout
    assert not (tmp_path / "none").exists()  # only up makes the directory


def test_a_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    for command in ("up", "status", "down", "demo"):
        result = run_cli("sandbox", command, "--dir", str(target))
        assert result.returncode == 1, command
        assert f"{target} is not a directory" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_process_manager_signals_only_the_recorded_process(tmp_path: Path) -> None:
    record = procs.spawn("sleeper", ["sleep", "300"], log=tmp_path / "sleep.log",
                         cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    try:
        assert procs.is_running(record)
        path = tmp_path / "run" / "sleeper.pid"
        procs.write_record(path, record)
        assert procs.ProcessRecord.load(path) == record
        # the same PID with another start time or command line is not that process
        for other in (procs.ProcessRecord("x", record.pid, record.start_ticks + 1, record.argv,
                                          ""),
                      procs.ProcessRecord("x", record.pid, record.start_ticks,
                                          ("sleep", "301"), "")):
            assert not procs.is_running(other)
            assert procs.stop(other) is False
            assert procs.is_running(record)
        assert procs.stop(record) is True
        assert not procs.is_running(record) and procs.start_ticks(record.pid) is None
        assert procs.stop(record) is False  # already gone: nothing to do
    finally:
        if procs.is_running(record):
            os.kill(record.pid, 9)
            procs.reap(record.pid)


def test_a_bad_ca_file_is_a_clear_error_and_starts_nothing(sandbox_dir: Path) -> None:
    sandbox = Sandbox(sandbox_dir)
    sandbox.up()
    sandbox.down([REGISTRY])
    sandbox.ca.write_text("not a certificate\n")  # the trust server runs: up keeps the TLS files
    result = run_cli("sandbox", "up", "--dir", str(sandbox_dir))
    assert result.returncode == 1
    assert f"the CA file {sandbox.ca} holds no usable PEM certificate" in result.stderr
    assert "Traceback" not in result.stderr
    assert {s.name: s.state for s in sandbox.status()} == {TRUST_SERVER: "running",
                                                           REGISTRY: "stopped"}
    assert processes_mentioning(str(sandbox_dir / "registry")) == []


def test_a_state_file_with_an_impossible_port_is_a_clear_error(tmp_path: Path) -> None:
    for port in (70000, -1, 0):
        (tmp_path / "sandbox.json").write_text(json.dumps(
            {"ports": {TRUST_SERVER: port, REGISTRY: 5000}}))
        result = run_cli("sandbox", "up", "--dir", str(tmp_path))
        assert result.returncode == 1, port
        assert "sandbox.json: not a sandbox state file" in result.stderr
        assert f"{TRUST_SERVER} port {port} outside 1..65535" in result.stderr
        assert "Traceback" not in result.stderr
    assert processes_mentioning(str(tmp_path)) == []


def test_processes_mentioning_reads_command_lines_that_are_not_utf8(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                marker.encode() + b"-\xff\xfe"])
    try:
        deadline = time.monotonic() + 5
        while not processes_mentioning(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        expected = f"{sys.executable} -c import time; time.sleep(300) {marker}-\ufffd\ufffd"
        assert processes_mentioning(marker) == [(sleeper.pid, expected)]
    finally:
        sleeper.kill()
        sleeper.wait()
