"""The gate end to end through the CLI, on ``countersign serve`` and the real registry.

Three stages, each with its own key in its own trust dir, each running its real
tool: bandit on a sample app (static), Wapiti scanning the sample web shop on
loopback (dynamic), atheris fuzzing the sample record parser for a bounded
number of inputs (fuzz); then the gate allows. The vulnerable shop fails the
dynamic stage and a strict static stage fails, signing nothing; a revoked stage
signature makes the gate deny; the decision record re-checks offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stagetools
from _countersign import COUNTERSIGN
from images import write_layout
from stagetools import SAMPLE, fuzz_command, wapiti_command, yaml_list

sys.path.insert(0, str(SAMPLE))
import webshop

pytestmark = pytest.mark.interop
PASSPHRASES = {"COUNTERSIGN_ROOT_PASSPHRASE": "gate-root-pass",
               "COUNTERSIGN_TARGETS_PASSPHRASE": "gate-targets-pass",
               "COUNTERSIGN_DELEGATION_PASSPHRASE": "gate-delegation-pass"}


def _cs(trust_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin')}",
           "HOME": str(trust_dir), "COUNTERSIGN_TRUST_DIR": str(trust_dir), **PASSPHRASES}
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True, env=env,
                          timeout=180, stdin=subprocess.DEVNULL, check=False, cwd=cwd)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _policy(tmp: Path, server: Any, app: Path, shop: str, *, strict: bool = False,
            name: str = "policy.yaml") -> Path:
    bandit = str(Path(sys.executable).parent / "bandit")
    level = "low" if strict else "high"
    scan = yaml_list(wapiti_command(shop, tmp / f"wapiti-{name}"))
    fuzz = yaml_list(fuzz_command("parse", runs=20_000))
    text = f"""version: 1
trust: {{server: {server.url}, tls_ca: {server.ca_path}}}
stages:
  - name: static-tested
    role: targets/static-tested
    key: static-tested
    check:
      command: [{bandit!r}, '-r', {str(app)!r}, '-f', 'sarif', '-o', '{{report}}']
      format: sarif
    pass: {{max_severity: {level}}}
  - name: dynamic-tested
    role: targets/dynamic-tested
    key: dynamic-tested
    check: {{command: {scan}, format: json, timeout: 5m}}
    pass: {{max_severity: low}}
  - name: fuzz-tested
    role: targets/fuzz-tested
    key: fuzz-tested
    check: {{command: {fuzz}, format: junit, timeout: 5m}}
    pass: {{max_failures: 0}}
deliver:
  require: [static-tested, dynamic-tested, fuzz-tested]
  min_distinct_signers: 3
  max_age: 7d
"""
    path = tmp / name
    path.write_text(text)
    return path


@pytest.fixture
def shops() -> Iterator[dict[str, str]]:
    """The sample web shop, vulnerable and fixed, on loopback: the running image to scan."""
    with webshop.serve("fixed") as fixed, webshop.serve("vulnerable") as vulnerable:
        yield {"fixed": fixed, "vulnerable": vulnerable}


def test_the_gate_through_the_cli(countersign_server: Any, docker_registry: Any,
                                  shops: dict[str, str], tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "bandit").exists():
        pytest.skip("bandit is not installed")
    reason = stagetools.missing_reason()
    if reason:
        pytest.skip(reason)
    ref = f"{docker_registry.registry}/shop/app:1.0"
    gun = ref.rsplit(":", 1)[0]
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("import subprocess\n\ndef run(cmd):\n"
                                 "    return subprocess.call(cmd, shell=True)\n")
    write_layout(tmp_path / "img", "1.0", [{"app/main.py": (app / "main.py").read_bytes()}])
    env_server = ["--server", countersign_server.url, "--tls-ca", str(countersign_server.ca_path)]
    owner = tmp_path / "owner"
    _ok(_cs(owner, "trust", "init", gun, *env_server))
    _ok(_cs(owner, "push", f"oci:{tmp_path / 'img'}:1.0", ref, "--sign", "--registry-insecure",
            *env_server))
    stage_dirs = {}
    for name in ("static-tested", "dynamic-tested", "fuzz-tested"):
        stage_dir = tmp_path / name
        _ok(_cs(stage_dir, "trust", "key", "generate", name, "--dir", str(tmp_path)))
        _ok(_cs(owner, "trust", "signer", "add", name, gun, "--key",
                str(tmp_path / f"{name}.pub"), *env_server))
        stage_dirs[name] = stage_dir
    policy = _policy(tmp_path, countersign_server, app, shops["fixed"])
    # the vulnerable shop fails the dynamic stage on what Wapiti found, and nothing is signed
    vulnerable = _policy(tmp_path, countersign_server, app, shops["vulnerable"],
                         name="vulnerable.yaml")
    failed = _cs(stage_dirs["dynamic-tested"], "assure", ref, "--policy", str(vulnerable),
                 "--stage", "dynamic-tested", "--registry-insecure")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED, nothing signed" in failed.stdout
    assert "SQL Injection" in failed.stdout and "Cross Site Scripting" in failed.stdout
    for name, stage_dir in stage_dirs.items():
        out = _ok(_cs(stage_dir, "assure", ref, "--policy", str(policy), "--stage", name,
                      "--registry-insecure", "--json"))
        (result,) = json.loads(out)
        assert result["passed"] and result["stage"] == name
    gate = _cs(tmp_path / "gate", "verify", ref, "--policy", str(policy), "--registry-insecure",
               "--json")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    record = json.loads(gate.stdout)
    assert record["allowed"] and record["distinct_signers"] == 3
    (tmp_path / "record.json").write_text(gate.stdout)
    assert _cs(tmp_path / "gate", "verify", "--record", str(tmp_path / "record.json")
               ).returncode == 0
    # a static stage judged more strictly fails, signs nothing, and the gate's verdict holds
    strict = _policy(tmp_path, countersign_server, app, shops["fixed"], strict=True,
                     name="strict.yaml")
    failed = _cs(stage_dirs["static-tested"], "assure", ref, "--policy", str(strict), "--stage",
                 "static-tested", "--registry-insecure")
    assert failed.returncode == 1 and "FAILED, nothing signed" in failed.stdout
    # the stage's signature is revoked: the gate denies, naming it
    _ok(_cs(stage_dirs["static-tested"], "trust", "revoke", f"{ref}", "--role",
            "targets/static-tested", *env_server))
    denied = _cs(tmp_path / "gate", "verify", ref, "--policy", str(policy),
                 "--registry-insecure")
    assert denied.returncode == 1 and "static-tested" in denied.stdout
    assert "DENY" in denied.stdout
    broken = _cs(tmp_path / "gate", "verify", ref, "--policy", str(tmp_path / "nope.yaml"))
    assert broken.returncode == 2
