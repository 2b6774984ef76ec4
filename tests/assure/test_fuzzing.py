"""The atheris harness: real fuzzing of tests/assure/sample/records.py, its JUnit report."""

from __future__ import annotations

import base64
import importlib.util
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from countersign.assure import fuzzing
from countersign.assure.fuzzing import FuzzResult, TargetSpec, write_junit
from countersign.assure.reports import parse_junit

SAMPLE = Path(__file__).parent / "sample"
sys.path.insert(0, str(SAMPLE))
import records  # noqa: E402

needs_atheris = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                   reason="atheris is not installed (pip install atheris)")


def _harness(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    report = tmp / "fuzz.xml"
    done = subprocess.run([sys.executable, "-m", "countersign.assure.fuzzing", "--report",
                           str(report), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False, cwd=tmp)
    return done, report.read_bytes() if report.exists() else b""


@needs_atheris
def test_the_planted_bug_is_found_and_its_input_reproduces_it(tmp_path: Path) -> None:
    done, data = _harness(tmp_path, "--runs", "300000", "--max-time", "60", "--expect",
                          "records:RecordError", "--path", str(SAMPLE), "--artifacts",
                          str(tmp_path / "crashes"), "records:parse_unchecked")
    assert done.returncode == 1, done.stderr
    report = parse_junit(data, source="fuzz.xml")
    assert (report.tests_run, report.failures, report.errors) == (1, 1, 0)
    (finding,) = report.findings
    assert finding.rule_id == "atheris.records:parse_unchecked"
    assert finding.message.startswith("struct.error: unpack requires a buffer of 4 bytes")
    assert finding.severity.label == "high"
    text = data.decode()
    assert 'type="crash"' in text and "records.py" in text and "in _parse" in text
    # the input in the report is the one that crashes, and the kept artifact is the same
    encoded = re.search(r"base64\): ([A-Za-z0-9+/=]*)", text)
    assert encoded is not None
    crash = base64.b64decode(encoded.group(1))
    with pytest.raises(struct.error):
        records.parse_unchecked(crash)
    with pytest.raises(records.RecordError):
        records.parse(crash)
    (kept,) = (tmp_path / "crashes").iterdir()
    assert kept.read_bytes() == crash and kept.name.startswith("records.parse_unchecked.crash-")


@needs_atheris
def test_the_fixed_parser_passes_its_runs_and_the_corpus_is_left_alone(tmp_path: Path) -> None:
    corpus = tmp_path / "seeds"
    corpus.mkdir()
    (corpus / "one").write_bytes(b"REC\x01\x01\x07\x04\x00\x00\x00\x2a")
    done, data = _harness(tmp_path, "--runs", "20000", "--max-time", "60", "--expect",
                          "records:RecordError", "--corpus", str(corpus),
                          f"{SAMPLE / 'records.py'}:parse")
    assert done.returncode == 0, done.stderr
    report = parse_junit(data)
    assert (report.tests_run, report.failures, report.errors) == (1, 0, 0)
    assert "<system-out>20000 runs</system-out>" in data.decode()
    assert [p.name for p in corpus.iterdir()] == ["one"]
    assert "parse: passed (20000 runs" in done.stderr


@needs_atheris
def test_an_unexpected_refusal_is_a_crash_without_expect(tmp_path: Path) -> None:
    done, data = _harness(tmp_path, "--runs", "1000", "--path", str(SAMPLE), "records:parse")
    report = parse_junit(data)
    assert done.returncode == 1 and report.failures == 1
    assert "RecordError: no REC magic" in report.findings[0].message


@needs_atheris
def test_targets_that_cannot_be_fuzzed_are_errors_and_slow_inputs_failures(
        tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text("import time\nVALUE = 3\n\n"
                                     "def slow(data):\n    time.sleep(3)\n")
    done, data = _harness(tmp_path, "--runs", "50", "--max-time", "20", "--input-timeout", "1",
                          "odd.py:VALUE", "odd.py:missing", "no_such_module:f", "odd.py:slow")
    assert done.returncode == 1
    report = parse_junit(data)
    assert (report.tests_run, report.failures, report.errors) == (4, 1, 3)
    messages = {f.rule_id: f.message for f in report.findings}
    assert "is not callable" in messages["atheris.odd.py:VALUE"]
    assert "has no attribute 'missing'" in messages["atheris.odd.py:missing"]
    assert "No module named 'no_such_module'" in messages["atheris.no_such_module:f"]
    assert messages["atheris.odd.py:slow"] == "an input ran longer than 1 s"
    assert 'type="timeout"' in data.decode() and "in slow" in data.decode()


@pytest.mark.parametrize(("args", "needle"), [
    (["--report", "r.xml"], "give at least one TARGET"),
    (["m:f"], "--report FILE is needed"),
    (["--report", "r.xml", "nocolon"], "is not MODULE:FUNCTION"),
    (["--report", "r.xml", "a b:f"], "not a module name or a .py file"),
    (["--report", "r.xml", "--runs", "0", "m:f"], "must be at least 1"),
    (["--report", "r.xml", "--max-time", "x", "m:f"], "is not a whole number"),
    (["--report", "r.xml", "--seed", "-1", "m:f"], "is not from 0 to 4294967295"),
    (["--report", "r.xml", "--corpus", "/nonexistent", "m:f"], "not a directory"),
])
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], needle: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        fuzzing.main(args)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_without_atheris_no_report_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "atheris" else real(name, *a))
    assert fuzzing.main(["--report", str(tmp_path / "r.xml"), "m:f"]) == 2
    assert "atheris is not installed" in capsys.readouterr().err
    assert not (tmp_path / "r.xml").exists()


def test_target_specs() -> None:
    spec = TargetSpec.parse("pkg.mod:Class.method")
    assert (spec.module, spec.function, spec.directory) == ("pkg.mod", "Class.method", None)
    spec = TargetSpec.parse("src/x/parse.py:fuzz_one")
    assert (spec.module, spec.function) == ("parse", "fuzz_one")
    assert spec.directory == Path("src/x").resolve()


def test_the_report_carries_any_text_as_valid_xml(tmp_path: Path) -> None:
    nasty = "boom \x00\x1b[31m <&> \"quoted\" \ud800 end"
    results = [
        FuzzResult("m:bad", "failure", "crash", nasty, f"detail {nasty}", 12, 0.5),
        FuzzResult("m:good", "passed", "", "", "", 900, 1.25),
        FuzzResult("m:gone", "error", "", "cannot load", "", 0, 0.1),
    ]
    write_junit(results, tmp_path / "r.xml", settings=[("runs", "900")])
    report = parse_junit((tmp_path / "r.xml").read_bytes())
    assert (report.tests_run, report.failures, report.errors) == (3, 1, 1)
    bad = next(f for f in report.findings if f.rule_id == "atheris.m:bad")
    assert bad.message.startswith("boom \ufffd\ufffd[31m <&> \"quoted\" \ufffd end")
    assert not list(tmp_path.glob("*.partial"))


@needs_atheris
def test_an_artifacts_path_that_cannot_hold_files_is_refused_before_fuzzing(
        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    done, data = _harness(tmp_path, "--runs", "10", "--path", str(SAMPLE), "--artifacts",
                          str(tmp_path / "a-file" / "crashes"), "records:parse_unchecked")
    assert done.returncode == 2 and "--artifacts" in done.stderr and not data
    assert "Traceback" not in done.stderr
