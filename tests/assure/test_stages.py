"""Running stage checks: real commands, real reports, judged by the policy."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import pytest

from countersign.assure.policy import parse_policy
from countersign.assure.stages import StageError, run_stage

DATA = Path(__file__).parent / "data"
IMAGE = "registry.test/shop@sha256:" + "ab" * 32


def _policy(tmp_path: Path, stage: str) -> Path:
    text = ("version: 1\ntrust: {server: https://127.0.0.1:4443}\nstages:\n" + stage
            + "deliver: {require: [s], max_age: 7d}\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def _copy_report(tmp_path: Path, name: str) -> str:
    """A check that writes a fixed report: the command is python copying the fixture."""
    return (f'[{sys.executable!r}, "-c", "import shutil,sys; '
            f"shutil.copy(sys.argv[1], sys.argv[2])\", {str(DATA / name)!r}, \"{{report}}\"]")


def test_a_dast_report_judged_with_the_papers_false_positive_table(tmp_path: Path) -> None:
    shutil.copy(DATA / "false-positives.table", tmp_path / "fp.table")
    stage = (f"  - name: s\n    role: targets/s\n    key: s\n"
             f"    check: {{command: {_copy_report(tmp_path, 'dast.sarif')}, format: sarif}}\n"
             f"    pass: {{max_severity: medium, false_positives: fp.table}}\n")
    policy = parse_policy(_policy(tmp_path, stage).read_text(), tmp_path / "policy.yaml",
                          environ={})
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    result = run_stage(policy.stage("s"), IMAGE, now=now)
    assert result.report.tool == "HandScanner"
    suppressed = {f.location for f, _ in result.evaluation.suppressed}
    assert "https://shop.test/search?q=x" in suppressed
    later = run_stage(policy.stage("s"), IMAGE, now=dt.datetime(2027, 7, 1, tzinfo=dt.UTC))
    assert not later.passed  # the suppression expired: the stage fails, naming it
    assert any("expired" in reason for reason in later.evaluation.reasons)


def test_a_real_static_analyser(tmp_path: Path) -> None:
    bandit = shutil.which("bandit") or str(Path(sys.executable).parent / "bandit")
    if not Path(bandit).exists():
        pytest.skip("bandit is not installed")
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("import subprocess\n\ndef run(cmd):\n"
                                 "    return subprocess.call(cmd, shell=True)\n")
    stage = (f"  - name: s\n    role: targets/static-tested\n    key: s\n"
             f"    check: {{command: [{bandit!r}, '-r', {str(app)!r}, '-f', 'sarif', "
             f"'-o', '{{report}}'], format: sarif}}\n"
             f"    pass: {{max_severity: medium}}\n")
    policy = parse_policy(_policy(tmp_path, stage).read_text(), tmp_path / "policy.yaml",
                          environ={})
    result = run_stage(policy.stage("s"), IMAGE)
    assert result.report.tool.lower().startswith("bandit")
    assert not result.passed and result.exit_status != 0
    assert any("B602" in f.rule_id for f in result.evaluation.counted)
    (app / "main.py").write_text("def add(a, b):\n    return a + b\n")
    assert run_stage(policy.stage("s"), IMAGE).passed


def test_checks_that_do_not_report(tmp_path: Path) -> None:
    stage = ("  - name: s\n    role: targets/s\n    key: s\n"
             "    check: {command: [/nonexistent/tool, '{report}'], format: sarif}\n"
             "    pass: {max_severity: medium}\n")
    policy = parse_policy(_policy(tmp_path, stage).read_text(), tmp_path / "policy.yaml",
                          environ={})
    with pytest.raises(StageError, match="not found"):
        run_stage(policy.stage("s"), IMAGE)
    stage = (f"  - name: s\n    role: targets/s\n    key: s\n"
             f"    check: {{command: [{sys.executable!r}, '-c', 'print(1)', '{{report}}'], "
             f"format: junit}}\n")
    policy = parse_policy(_policy(tmp_path, stage).read_text(), tmp_path / "policy.yaml",
                          environ={})
    with pytest.raises(StageError, match="wrote no report"):
        run_stage(policy.stage("s"), IMAGE)


def test_key_passphrases_never_reach_the_check(tmp_path: Path) -> None:
    """The tool a stage runs sees the environment, but no key passphrase."""
    from countersign.assure.stages import run_check

    dump = (f'[{sys.executable!r}, "-c", "import json,os,sys; '
            f'json.dump(dict(os.environ), open(sys.argv[1], \'w\'))", "{{report}}"]')
    stage = (f"  - name: s\n    role: targets/s\n    key: s\n"
             f"    check: {{command: {dump}, format: json, env: {{CHECK_OWN: \"yes\"}}}}\n"
             f"    pass: {{max_severity: medium}}\n")
    policy = parse_policy(_policy(tmp_path, stage).read_text(), tmp_path / "policy.yaml",
                          environ={})
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
               "COUNTERSIGN_TARGETS_PASSPHRASE": "t0p", "NOTARY_DELEGATION_PASSPHRASE": "d3l",
               "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "r3p",
               "COUNTERSIGN_SIGNER_PASSPHRASE": "s1g", "countersign_key_passphrase": "l0w"}
    data, status = run_check(policy.stage("s"), IMAGE, environ=environ)
    seen = json.loads(data)
    assert status == 0
    assert seen["PATH"] == "/usr/bin:/bin" and seen["CHECK_OWN"] == "yes"
    assert not [name for name in seen if name.upper().endswith("_PASSPHRASE")]
