"""The fsync policy of ``countersign pull``, seen from outside with strace.

By default a pull returns only once the layout is on disk (blobs, their directories,
``index.json``); ``--no-fsync`` makes no fsync at all. The pull runs as the real CLI
against the real registry and ``countersign serve``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _countersign import COUNTERSIGN
from _notary import PASSPHRASE_ENV
from images import random_files, write_layout

pytestmark = pytest.mark.interop


def _cs(server: Any, trust_dir: Path, *args: str,
        strace: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(trust_dir),
           "COUNTERSIGN_SERVER": server.url, "COUNTERSIGN_TLS_CA": str(server.ca_path),
           "COUNTERSIGN_TRUST_DIR": str(trust_dir), **PASSPHRASE_ENV}
    argv = [COUNTERSIGN, *args]
    if strace is not None:
        argv = ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o",
                str(strace), *argv]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _synced(trace: Path) -> list[str]:
    """The paths synced (``strace -y`` names each descriptor's file)."""
    return re.findall(r"\b(?:fsync|fdatasync)\(\d+<([^>]*)>\)\s+=\s+0", trace.read_text())


def test_a_pull_is_on_disk_when_it_returns_unless_told_not_to(
        countersign_server: Any, docker_registry: Any, tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (Debian: apt-get install strace, or "
                    "scripts/system-deps.sh)")
    ref = f"{docker_registry.registry}/test/fsync:latest"
    trust = tmp_path / "trust"
    write_layout(tmp_path / "src", "latest", [random_files(3, 200 << 10)])
    _cs(countersign_server, trust, "trust", "init", ref.rsplit(":", 1)[0])
    pushed = json.loads(_cs(countersign_server, trust, "push", f"oci:{tmp_path / 'src'}:latest",
                            ref, "--sign", "--registry-insecure", "--json").stdout)

    durable = tmp_path / "durable.trace"
    out = json.loads(_cs(countersign_server, trust, "pull", ref, "--to",
                         f"oci:{tmp_path / 'a'}", "--registry-insecure", "--json",
                         strace=durable).stdout)
    assert out["digest"] == pushed["digest"] and out["verified"]
    manifest = json.loads((tmp_path / "a" / "blobs" / "sha256" /
                           pushed["digest"].split(":")[1]).read_bytes())
    hexes = {pushed["digest"].split(":")[1], manifest["config"]["digest"].split(":")[1],
             *(layer["digest"].split(":")[1] for layer in manifest["layers"])}
    synced = _synced(durable)
    assert hexes <= {Path(p).name for p in synced}  # every blob, staged
    layout = str(tmp_path / "a")
    for path in ("/blobs/sha256", "/blobs", "", "/oci-layout"):
        assert layout + path in synced
    assert any(p.endswith("/index.json") for p in synced)
    assert str(tmp_path) in synced  # the new layout's own entry

    quick = tmp_path / "quick.trace"
    out = json.loads(_cs(countersign_server, trust, "pull", ref, "--to",
                         f"oci:{tmp_path / 'b'}", "--registry-insecure", "--json",
                         "--no-fsync", strace=quick).stdout)
    assert out["digest"] == pushed["digest"]
    # nothing of the layout or its staging directory (the trust cache is the client's own)
    assert [p for p in _synced(quick)
            if p.startswith(str(tmp_path)) and not p.startswith(str(trust))] == []
    assert (tmp_path / "b" / "index.json").read_bytes() == \
        (tmp_path / "a" / "index.json").read_bytes()
