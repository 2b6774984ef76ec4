"""The dynamic and fuzz stages with their real tools, each on a vulnerable and a fixed sample.

Wapiti scans the sample web shop on loopback; the atheris harness fuzzes the
sample record parser. The vulnerable builds fail their stage, naming what the
tool found; the fixed builds pass.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
import stagetools
from stagetools import SAMPLE, fuzz_command, wapiti_command, yaml_list

from countersign.assure.policy import Stage, parse_policy
from countersign.assure.stages import run_stage

sys.path.insert(0, str(SAMPLE))
import webshop

pytestmark = pytest.mark.interop
IMAGE = "127.0.0.1:5000/shop/app@sha256:" + "cd" * 32
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _tools() -> None:
    reason = stagetools.missing_reason()
    if reason:
        pytest.skip(reason)


def _stage(tmp_path: Path, command: list[str], fmt: str, passes: str) -> Stage:
    text = (f"version: 1\ntrust: {{server: https://127.0.0.1:4443}}\nstages:\n"
            f"  - name: s\n    role: targets/s\n    key: s\n"
            f"    check: {{command: {yaml_list(command)}, format: {fmt}, timeout: 5m}}\n"
            f"    pass: {passes}\n"
            "deliver: {require: [s], max_age: 7d}\n")
    return parse_policy(text, tmp_path / "policy.yaml", environ={}).stage("s")


@pytest.mark.parametrize("variant", ["vulnerable", "fixed"])
def test_wapiti_on_the_sample_shop(variant: webshop.Variant, tmp_path: Path) -> None:
    with webshop.serve(variant) as url:
        stage = _stage(tmp_path, wapiti_command(url, tmp_path / "wapiti"), "json",
                       "{max_severity: low}")
        run = run_stage(stage, IMAGE, now=NOW)
    assert (run.report.tool, run.report.format) == ("Wapiti", "wapiti-json")
    assert run.report.tool_version is not None
    assert tuple(map(int, run.report.tool_version.split("."))) >= (3, 0, 4)
    if variant == "fixed":
        assert run.passed, run.evaluation.reasons
        assert run.report.findings == ()
        return
    assert not run.passed
    found = {(f.rule_id, f.location.removeprefix(url.rstrip("/")), f.parameter, f.cwe)
             for f in run.report.findings}
    assert ("SQL Injection", "/item", "id", (89,)) in found
    assert ("Cross Site Scripting", "/search", "q", (79,)) in found
    reasons = " ".join(run.evaluation.reasons)
    assert "SQL Injection" in reasons and "Cross Site Scripting" in reasons
    assert run.evaluation.summary["findings"]["counted"]["critical"] >= 1


@pytest.mark.parametrize(("function", "passes"), [("parse_unchecked", False), ("parse", True)])
def test_atheris_on_the_sample_parser(function: str, passes: bool, tmp_path: Path) -> None:
    stage = _stage(tmp_path, fuzz_command(function, runs=300_000 if not passes else 20_000),
                   "junit", "{max_failures: 0}")
    run = run_stage(stage, IMAGE, now=NOW)
    assert run.report.format == "junit" and run.report.tests_run == 1
    assert run.passed is passes, run.evaluation.reasons
    if not passes:
        assert run.exit_status == 1
        (finding,) = run.report.findings
        assert "struct.error" in finding.message
        assert any("parse_unchecked" in reason for reason in run.evaluation.reasons)
