"""``countersign trust``: argument errors are clear, exit 1, and touch nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from countersign.cli.main import main
from countersign.cli.trust import split_reference


def test_references() -> None:
    assert split_reference("localhost:5000/team/app:v1", tag=True) == (
        "localhost:5000/team/app", "v1")
    assert split_reference("localhost:5000/team/app", tag=False) == (
        "localhost:5000/team/app", None)
    assert split_reference("docker.io/library/alpine:3.20", tag=True) == (
        "docker.io/library/alpine", "3.20")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["trust", "sign", "registry.test/app", "--digest", "sha256:" + "a" * 64, "--size", "1"],
         "names no tag"),
        (["trust", "sign", "registry.test/app:v1", "--digest", "md5:abc", "--size", "1"],
         "is not sha256"),
        (["trust", "sign", "registry.test/app:v1", "--digest", "sha256:" + "A" * 64,
          "--size", "1"], "lowercase hex"),
        (["trust", "sign", "registry.test/app:v1", "--digest", "sha256:" + "a" * 64,
          "--size", "-1"], "must not be negative"),
        (["trust", "sign", "registry.test/app:", "--digest", "sha256:" + "a" * 64,
          "--size", "1"], "not a repository reference"),
        (["trust", "pending", "show", "/nonexistent/pending.json"], "no such file"),
        (["trust", "signer", "add", "alice", "registry.test/app", "--key", "/nonexistent.pub"],
         "no such file"),
    ],
)
def test_bad_arguments(argv: list[str], fragment: str, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_TRUST_DIR", str(tmp_path / "trust"))
    monkeypatch.setenv("COUNTERSIGN_SERVER", "https://127.0.0.1:9")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "trust" / "tuf").exists()


def test_pending_file_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_TRUST_DIR", str(tmp_path / "trust"))
    bad = tmp_path / "pending.json"
    bad.write_text('{"hello": 1}')
    assert main(["trust", "pending", "show", str(bad)]) == 1
    assert "not a countersign pending update" in capsys.readouterr().err


def test_public_key_file_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_TRUST_DIR", str(tmp_path / "trust"))
    bad = tmp_path / "alice.pub"
    bad.write_text("not a key")
    assert main(["trust", "signer", "add", "alice", "registry.test/app", "--key",
                 str(bad)]) == 1
    assert "alice.pub" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_TRUST_DIR", str(tmp_path / "trust"))
    assert main(["trust", "inspect", "registry.test/app", "--server",
                 "https://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "Traceback" not in err
