"""Sandbox tests: each gets a fresh sandbox directory, and whatever it started is stopped."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from countersign.sandbox.image import APT_ARCHIVES
from countersign.sandbox.services import Sandbox, find_registry


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
