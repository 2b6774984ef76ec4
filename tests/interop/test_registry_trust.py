"""The paper's Figures 5 to 7 against the real CNCF distribution registry and countersign serve.

All through the ``countersign`` command line: an unsigned repository is
refused ("no trust data"); pushed and signed, the verified pull succeeds; a
layer blob corrupted on the registry's disk makes the pull fail naming that
digest with nothing written; a manifest changed on disk by one appended space
(which skopeo accepts when pulling by tag) is refused; a tag moved to another
image does not change what a verified pull delivers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _countersign import COUNTERSIGN
from _notary import PASSPHRASE_ENV
from images import random_files, write_layout

pytestmark = pytest.mark.interop


def _cs(server: Any, trust_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(trust_dir),
           "COUNTERSIGN_SERVER": server.url, "COUNTERSIGN_TLS_CA": str(server.ca_path),
           "COUNTERSIGN_TRUST_DIR": str(trust_dir), **PASSPHRASE_ENV}
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_figures_5_to_7(countersign_server: Any, docker_registry: Any, tmp_path: Path) -> None:
    registry = docker_registry.registry
    ref = f"{registry}/test/trusttest:latest"
    trust = tmp_path / "trust"
    write_layout(tmp_path / "src", "latest", [random_files(4, 64 << 10),
                                              {"app/run": b"#!/bin/sh\n"}])
    dest = tmp_path / "dest"

    # Figure 5: pulling an unsigned repository fails with "no trust data"
    _ok(_cs(countersign_server, trust, "push", f"oci:{tmp_path / 'src'}:latest", ref,
            "--registry-insecure"))
    refused = _cs(countersign_server, trust, "pull", ref, "--to", f"oci:{dest}",
                  "--registry-insecure")
    assert refused.returncode == 1 and "does not have trust data" in refused.stderr
    assert not dest.exists()

    # Figure 6: push and sign, then the verified pull succeeds
    _ok(_cs(countersign_server, trust, "trust", "init", ref.rsplit(":", 1)[0]))
    pushed = json.loads(_ok(_cs(countersign_server, trust, "push",
                                f"oci:{tmp_path / 'src'}:latest", ref, "--sign",
                                "--registry-insecure", "--json")))
    assert pushed["signed"] and pushed["roles"] == ["targets"]
    pulled = json.loads(_ok(_cs(countersign_server, trust, "pull", ref, "--to",
                                f"oci:{dest}", "--registry-insecure", "--json")))
    assert pulled["digest"] == pushed["digest"] and pulled["verified"]

    # Figure 7: a layer blob modified on the registry's disk is refused by digest
    manifest = json.loads(docker_registry.blob_path(pushed["digest"]).read_bytes())
    layer = manifest["layers"][0]["digest"]
    layer_file = docker_registry.blob_path(layer)
    original = layer_file.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    layer_file.write_bytes(bytes(tampered))
    fresh = tmp_path / "fresh"
    refused = _cs(countersign_server, trust, "pull", ref, "--to", f"oci:{fresh}",
                  "--registry-insecure")
    assert refused.returncode == 1 and layer in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not fresh.exists()
    layer_file.write_bytes(original)

    # one appended space in the manifest: skopeo takes it by tag, countersign refuses it
    manifest_file = docker_registry.blob_path(pushed["digest"])
    manifest_bytes = manifest_file.read_bytes()
    manifest_file.write_bytes(manifest_bytes + b" ")
    if shutil.which("skopeo"):
        copied = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
             f"docker://{ref}", f"oci:{tmp_path / 'skopeo'}:latest"],
            capture_output=True, text=True, timeout=120, check=False,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
        assert copied.returncode == 0, copied.stderr
    refused = _cs(countersign_server, trust, "pull", ref, "--to", f"oci:{fresh}",
                  "--registry-insecure")
    assert refused.returncode == 1 and pushed["digest"] in refused.stderr
    assert "not the signed one" in refused.stderr and not fresh.exists()
    manifest_file.write_bytes(manifest_bytes)

    # the registry's tag moved to another image: the verified pull still delivers the signed one
    write_layout(tmp_path / "evil", "latest", [{"evil": b"payload"}], seed="evil")
    evil = json.loads(_ok(_cs(countersign_server, trust, "push",
                              f"oci:{tmp_path / 'evil'}:latest", ref, "--registry-insecure",
                              "--json")))
    assert evil["digest"] != pushed["digest"]
    again = json.loads(_ok(_cs(countersign_server, trust, "pull", ref, "--to",
                               f"oci:{tmp_path / 'again'}", "--registry-insecure", "--json")))
    assert again["digest"] == pushed["digest"]
    unverified = json.loads(_ok(_cs(countersign_server, trust, "pull", ref, "--to",
                                    f"oci:{tmp_path / 'unverified'}", "--registry-insecure",
                                    "--no-verify", "--json")))
    assert unverified["digest"] == evil["digest"] and not unverified["verified"]
