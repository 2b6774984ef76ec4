"""The ``countersign`` command line: exit codes, messages, JSON, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tufrepo import GUN, Repo

from countersign import __version__
from countersign.cli.main import main
from countersign.tuf import PrivateKey


def _write_repo(directory: Path) -> Repo:
    repo = Repo.create()
    rel = PrivateKey.generate("ecdsa")
    repo.delegate("targets/releases", rel, paths=("v",))
    repo.add_target("v1", b"manifest", role="targets/releases")
    repo.sign_all({"targets/releases": [rel]})
    files = {"root": repo.root, "targets": repo.targets, "snapshot": repo.snapshot,
             "timestamp": repo.timestamp, **repo.delegations}
    for role, md in files.items():
        assert md is not None
        path = directory / f"{role}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(md.to_bytes())
    return repo


def test_console_script_version_and_help() -> None:
    exe = Path(sys.executable).parent / "countersign"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True,
                         timeout=30)
    assert out.stdout.strip() == f"countersign {__version__}"
    helped = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True,
                            timeout=30)
    assert "metadata" in helped.stdout


def test_verify_a_good_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_repo(tmp_path)
    assert main(["metadata", "verify", str(tmp_path), "--gun", GUN, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is True
    assert [t["name"] for t in report["targets"] if t["role"] == "targets/releases"] == ["v1"]
    assert main(["metadata", "verify", str(tmp_path), "--gun", GUN]) == 0
    assert f"{GUN}: verified" in capsys.readouterr().out


def test_verify_refuses_tampering_with_exit_1(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _write_repo(tmp_path)
    path = tmp_path / "targets" / "releases.json"
    path.write_bytes(path.read_bytes().replace(b'"length":8', b'"length":9'))
    assert main(["metadata", "verify", str(tmp_path), "--gun", GUN]) == 1
    err = capsys.readouterr().err
    assert "targets/releases.json" in err and "checksum" in err and "Traceback" not in err
    assert main(["metadata", "verify", str(tmp_path), "--gun", GUN, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_verify_wrong_gun_and_missing_dir(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _write_repo(tmp_path)
    assert main(["metadata", "verify", str(tmp_path), "--gun", "other/gun"]) == 1
    assert "no valid root certificate" in capsys.readouterr().err
    assert main(["metadata", "verify", str(tmp_path / "none"), "--gun", GUN]) == 1
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["metadata", "verify", str(tmp_path / "empty"), "--gun", GUN]) == 1
    assert "no metadata files" in capsys.readouterr().err


def test_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_repo(tmp_path)
    assert main(["metadata", "inspect", str(tmp_path / "root.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["type"] == "Root" and info["notary_file_form"] is True
    assert main(["metadata", "inspect", str(tmp_path / "targets" / "releases.json"),
                 "--role", "targets/releases"]) == 0
    assert "v1  8 bytes" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"{", b'{"signed":{}}', b"\xff" * 10, b"[]"])
def test_inspect_bad_input_is_a_clear_error(tmp_path: Path, content: bytes,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert main(["metadata", "inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("countersign: error:") and "Traceback" not in err
    assert main(["metadata", "inspect", str(path), "--role", "../etc"]) == 1
    assert "not a role name" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out
