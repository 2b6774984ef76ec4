"""``countersign sandbox demo`` end to end, as a process on a fresh directory."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from procs import processes_mentioning, run_cli

from countersign.sandbox.demo import Demo, StepFailed
from countersign.sandbox.services import Sandbox


def test_the_demo_passes_every_step_and_leaves_nothing_running(sandbox_dir: Path,
                                                                tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # the stage checks' scratch files, and their processes' paths
    scratch.mkdir()
    result = run_cli("sandbox", "demo", "--dir", str(sandbox_dir),
                     env={"TMPDIR": str(scratch)}, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "all steps passed in" in out
    assert out.startswith("started trust-server, registry in ")
    assert "busybox-static_" in out  # the sample image came from the cached package
    assert len(re.findall(r"^  ok \(\d+\.\ds\): ", out, re.M)) == 7
    steps = re.split(r"^\[\d/7\] ", out, flags=re.M)[1:]
    assert len(steps) == 7
    unsigned, signed, tampered, stages, allows, denies, threshold = steps
    assert "does not have trust data for" in unsigned
    assert "ok" in unsigned and "refused: no trust data; nothing written" in unsigned
    assert "verified, signed by targets" in signed
    layer = re.search(r"altered one bit of layer (sha256:[0-9a-f]{64})", tampered)
    assert layer is not None
    assert f"blob {layer.group(1)}" in tampered and "does not match its digest" in tampered
    assert "nothing written" in tampered
    for name in ("static-tested", "dynamic-tested", "fuzz-tested"):
        assert f"{name}: passed; signed sha256:" in stages
        assert f"evidence, checked against {name}.pub:" in stages
    assert "Bandit" in stages and "countersign-sandbox-http-probe" in stages
    assert "fuzz-busybox: 5 tests, 0 failed" in stages
    assert "signed by: dynamic-tested, fuzz-tested, static-tested" in stages
    assert re.search(r"^      ALLOW ", allows, re.M) and "3 distinct keys" in allows
    assert re.search(r"^      DENY ", denies, re.M)
    assert "dynamic-tested   missing" in denies
    assert "denied: dynamic-tested is missing" in denies
    assert "1 of 2 signatures, not ready" in threshold
    assert "has 1 of the 2 signatures it needs" in threshold
    assert "ErrBadTargets" in threshold and "2 of 2 signatures, ready" in threshold
    assert "signer release-approvers" in threshold and "threshold 2, 2 key(s)" in threshold
    assert "stopped registry (stopped), trust-server (stopped)" in out
    # nothing the demo started is left: services (paths in the sandbox dir) and checks
    # (paths in its TMPDIR)
    assert processes_mentioning(str(tmp_path)) == []
    assert not list((sandbox_dir / "run").glob("*.pid"))
    assert not list(scratch.iterdir())


def test_a_failing_step_exits_1_naming_it_and_stops_what_it_started(sandbox_dir: Path) -> None:
    for deb in (sandbox_dir / "debs").iterdir():
        deb.write_bytes(b"this is not a Debian package")
    result = run_cli("sandbox", "demo", "--dir", str(sandbox_dir), timeout=120)
    assert result.returncode == 1
    assert "FAILED: step 1 (an unsigned image is refused (Figure 5)) failed" in result.stderr
    assert "expected: the step to run" in result.stderr
    assert "no ar header" in result.stderr and "Traceback" not in result.stderr
    assert "stopped registry (stopped), trust-server (stopped)" in result.stdout
    assert processes_mentioning(str(sandbox_dir)) == []


class StrictDemo(Demo):
    """The scenario with a static stage that allows no finding at all: bandit's lows fail it."""

    def policy(self) -> Path:
        path = super().policy()
        text = path.read_text().replace("{max_severity: medium}", "{max_severity: info}", 1)
        path.write_text(text)
        return path


def test_a_step_that_differs_fails_loudly_naming_it(sandbox_dir: Path) -> None:
    sandbox = Sandbox(sandbox_dir)
    sandbox.up()
    out = io.StringIO()
    with pytest.raises(StepFailed) as caught:
        StrictDemo(sandbox, out).run()
    failure = caught.value
    assert failure.number == 4 and "Figure 9" in failure.title
    assert "countersign assure to succeed" in failure.expected
    assert failure.got.startswith("exit 1") and "static-tested" in failure.got
    assert "step 4 (" in failure.message and "expected:" in failure.message
    assert "[3/7]" in out.getvalue() and "[5/7]" not in out.getvalue()


def test_the_demo_runs_again_on_a_sandbox_that_is_up(sandbox_dir: Path) -> None:
    sandbox = Sandbox(sandbox_dir)
    sandbox.up()
    pids = [s.pid for s in sandbox.status()]
    result = run_cli("sandbox", "demo", "--dir", str(sandbox_dir), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started " not in result.stdout and "stopped " not in result.stdout
    # it did not bring the sandbox up, so it leaves it running
    assert [s.pid for s in sandbox.status()] == pids and sandbox.running()
