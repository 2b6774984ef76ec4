"""``countersign key``: keys in a trust dir through the command line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from countersign.cli.main import main

PASSPHRASES = {
    "COUNTERSIGN_ROOT_PASSPHRASE": "root-passphrase",
    "COUNTERSIGN_TARGETS_PASSPHRASE": "targets-passphrase",
    "COUNTERSIGN_DELEGATION_PASSPHRASE": "delegation-passphrase",
}


@pytest.fixture
def trust_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in PASSPHRASES.items():
        monkeypatch.setenv(name, value)
    for name in ("NOTARY_ROOT_PASSPHRASE", "NOTARY_TARGETS_PASSPHRASE",
                 "NOTARY_DELEGATION_PASSPHRASE", "COUNTERSIGN_EXPORT_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    directory = tmp_path / "trust"
    monkeypatch.setenv("COUNTERSIGN_TRUST_DIR", str(directory))
    return directory


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_generate_list_export_import_remove(trust_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["key", "generate", "--role", "targets", "--gun", "example.com/app",
                 "--json"]) == 0
    made = _json(capsys)
    assert isinstance(made, dict)
    key_file = Path(made["path"])
    assert key_file.parent == trust_dir / "private"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    assert b"targets-passphrase" not in key_file.read_bytes()

    assert main(["key", "list", "--json"]) == 0
    assert _json(capsys) == [{"key_id": made["key_id"], "role": "targets",
                              "gun": "example.com/app", "path": str(key_file),
                              "encrypted": True}]

    exported = tmp_path / "exported.pem"
    monkeypatch.setenv("COUNTERSIGN_EXPORT_PASSPHRASE", "export-passphrase")
    assert main(["key", "export", made["key_id"], "-o", str(exported)]) == 0
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert main(["key", "export", made["key_id"], "-o", str(exported)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["key", "remove", made["key_id"]]) == 0
    assert "removed key" in capsys.readouterr().out
    assert main(["key", "list", "--json"]) == 0
    assert _json(capsys) == []
    assert main(["key", "import", str(exported), "--json"]) == 0
    imported = _json(capsys)
    assert isinstance(imported, dict)
    assert (imported["key_id"], imported["role"], imported["gun"]) == (
        made["key_id"], "targets", "example.com/app")


def test_public_key_out(trust_dir: Path, tmp_path: Path) -> None:
    public = tmp_path / "releases.pub"
    assert main(["key", "generate", "--role", "targets/releases", "--algorithm", "ed25519",
                 "--public-out", str(public)]) == 0
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["key", "generate", "--role", "targets"], "no GUN was given"),
        (["key", "import", "/nonexistent/key.pem"], "no such file"),
        (["key", "export", "ab" * 32, "-o", "/tmp/never-written.pem"], "no private key"),
        (["key", "remove", "zz"], "key"),
    ],
)
def test_errors_are_clear(trust_dir: Path, argv: list[str], fragment: str,
                          capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_EXPORT_PASSPHRASE", "export-passphrase")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_missing_passphrase_without_terminal_names_the_variable(
    trust_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COUNTERSIGN_ROOT_PASSPHRASE")
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # noqa: SIM115
    assert main(["key", "generate", "--role", "root"]) == 1
    assert "COUNTERSIGN_ROOT_PASSPHRASE" in capsys.readouterr().err


def test_wrong_passphrase_is_a_clear_error(trust_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["key", "generate", "--role", "root", "--json"]) == 0
    made = _json(capsys)
    assert isinstance(made, dict)
    monkeypatch.setenv("COUNTERSIGN_ROOT_PASSPHRASE", "not-the-passphrase")
    monkeypatch.setenv("COUNTERSIGN_EXPORT_PASSPHRASE", "export-passphrase")
    assert main(["key", "export", made["key_id"], "-o", str(tmp_path / "x.pem")]) == 1
    assert "passphrase" in capsys.readouterr().err
    assert not (tmp_path / "x.pem").exists()
