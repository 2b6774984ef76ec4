"""The sandbox policy's stage checks find what they look for, not only the happy case.

Each check runs on a small root file system made here; the reports are read back
with countersign's own report parsers, as the stage would read them.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

from countersign.assure.reports import parse_report
from countersign.sandbox import checks

VULNERABLE_HTTPD = '''#!{python}
"""httpd -f -p ADDR -h DIR that joins the request path to DIR without any clean-up."""
import socket, sys, urllib.parse
addr, root = sys.argv[sys.argv.index("-p") + 1], sys.argv[sys.argv.index("-h") + 1]
host, port = addr.rsplit(":", 1)
server = socket.create_server((host, int(port)))
while True:
    conn, _ = server.accept()
    with conn:
        request = conn.recv(70000).decode("latin-1")
        path = urllib.parse.unquote(request.split(" ")[1]) if " " in request else "/"
        try:
            body = open(root + (path if path != "/" else "/index.html"), "rb").read()
            conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n" + body)
        except OSError:
            conn.sendall(b"HTTP/1.0 404 Not Found\\r\\n\\r\\n")
'''


def _rootfs(tmp_path: Path, busybox: str | None) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "app" / "www").mkdir(parents=True)
    (root / "app" / "www" / "index.html").write_text("<h1>countersign</h1>\n")
    if busybox is not None:
        (root / "bin" / "busybox").write_text(busybox)
        (root / "bin" / "busybox").chmod(0o755)
    return root


def test_fuzz_reports_a_decoder_that_crashes(tmp_path: Path) -> None:
    # a "busybox" whose gunzip dies of SIGSEGV on any input that is not the seed itself,
    # byte for byte: every mutated input crashes it, whatever the mutations were
    seed = tmp_path / "gunzip-seed"
    seed.write_bytes(next(make() for name, _, make in checks.FUZZ_TARGETS if name == "gunzip"))
    crashing = (f'#!/bin/sh\nif [ "$1" = gunzip ]; then cmp -s - {shlex.quote(str(seed))} '
                "|| kill -SEGV $$; else cat >/dev/null; fi\n")
    root = _rootfs(tmp_path, crashing)
    report = tmp_path / "fuzz.xml"
    assert checks.fuzz(root, report, "r/app@sha256:" + "0" * 64, rounds=5) == 1
    parsed = parse_report(report.read_bytes(), format="junit", source="fuzz.xml")
    assert parsed.tests_run == 5 and parsed.failures == 1
    assert "gunzip (5 inputs)" in report.read_text()
    assert "killed by signal 11" in report.read_text()
    assert "4 of 5 inputs crashed" in report.read_text()  # the seed passes, every mutant not


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_fuzz_of_the_real_busybox_passes(tmp_path: Path) -> None:
    root = _rootfs(tmp_path, None)
    shutil.copy2(shutil.which("busybox") or "", root / "bin" / "busybox")
    report = tmp_path / "fuzz.xml"
    assert checks.fuzz(root, report, "r/app@sha256:" + "1" * 64, rounds=10) == 0
    parsed = parse_report(report.read_bytes(), format="junit", source="fuzz.xml")
    assert parsed.tests_run == 5 and parsed.failures == 0


def test_dynamic_finds_a_path_traversal(tmp_path: Path) -> None:
    root = _rootfs(tmp_path, VULNERABLE_HTTPD.replace("{python}", sys.executable))
    report = tmp_path / "dynamic.json"
    assert checks.dynamic(root, report) == 1
    parsed = parse_report(report.read_bytes(), format="json", source="dynamic.json")
    rules = {f.rule_id for f in parsed.findings}
    assert "path-traversal" in rules
    traversal = next(f for f in parsed.findings if f.rule_id == "path-traversal")
    assert traversal.severity.label == "critical" and traversal.cwe == (22,)
    assert parsed.failures >= 1


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_dynamic_on_busybox_httpd_finds_only_the_missing_header(tmp_path: Path) -> None:
    root = _rootfs(tmp_path, None)
    shutil.copy2(shutil.which("busybox") or "", root / "bin" / "busybox")
    report = tmp_path / "dynamic.json"
    checks.dynamic(root, report)
    parsed = parse_report(report.read_bytes(), format="json", source="dynamic.json")
    assert [f.rule_id for f in parsed.findings] == ["missing-x-content-type-options"]
    assert parsed.tests_run == 7 and parsed.failures == 1


def test_static_reports_what_bandit_finds(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "bandit").exists() and not shutil.which("bandit"):
        pytest.skip("bandit is not installed")
    root = _rootfs(tmp_path, None)
    (root / "app" / "run.py").write_text(
        "import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n")
    report = tmp_path / "static.sarif"
    checks.static(root, report)
    parsed = parse_report(report.read_bytes(), format="sarif", source="static.sarif")
    found = {f.rule_id: f.severity.label for f in parsed.findings}
    assert found.get("B602") == "high"
    assert all(f.location.startswith("app/") for f in parsed.findings)
