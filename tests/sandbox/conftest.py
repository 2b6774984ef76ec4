"""Sandbox tests: each gets a fresh sandbox directory, and whatever it started is stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from countersign.sandbox.image import APT_ARCHIVES
from countersign.sandbox.services import Sandbox, find_registry

COUNTERSIGN = str(Path(sys.executable).parent / "countersign")


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``countersign ARGS`` as a separate process, as a user runs it."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("COUNTERSIGN_", "NOTARY_", "DOCKER_CONTENT_TRUST_"))}
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Every live process whose command line contains ``text`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry.name), cmdline.strip()))
    return found


@pytest.fixture(scope="session")
def busybox_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static .deb without network: apt's archive, else packed from the host's binary.

    The package's binary is the one the demo runs (httpd, the decoders); packing
    the installed one with the real dpkg-deb gives the same tree apt would fetch.
    """
    archived = sorted(APT_ARCHIVES.glob("busybox-static_*.deb"))
    if archived:
        return archived[-1]
    binary = shutil.which("busybox")
    if binary is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs busybox-static (apt-get install busybox-static; "
                    "scripts/system-deps.sh does it) and dpkg-deb")
    root = tmp_path_factory.mktemp("busybox-deb") / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copy2(binary, root / "bin" / "busybox")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (root / "DEBIAN" / "control").write_text(
        f"Package: busybox-static\nVersion: 1:0-host\nArchitecture: {arch}\n"
        "Maintainer: countersign tests <tests@example.invalid>\n"
        "Description: the host's busybox, packed for the sandbox tests\n")
    deb = root.parent / f"busybox-static_0-host_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   capture_output=True, check=True)
    return deb


@pytest.fixture
def sandbox_dir(tmp_path: Path, busybox_deb: Path) -> Iterator[Path]:
    """A fresh sandbox directory whose .deb cache holds busybox-static (no apt download)."""
    if find_registry() is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    directory = tmp_path / "sandbox"
    (directory / "debs").mkdir(parents=True)
    shutil.copy2(busybox_deb, directory / "debs" / busybox_deb.name)
    yield directory
    if directory.exists():
        Sandbox(directory).down()
