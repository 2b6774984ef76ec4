"""Docker's content-trust client (``docker trust``, no daemon needed) against both servers.

The same repository, built by the notary CLI on the reference notary-server
and on ``countersign serve``, must look the same to ``docker trust inspect``:
the same signed tags and digests, the same signers, the same administrative
keys (key IDs differ, since the keys do). ``docker trust signer add`` must work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _notary import NotaryCLIFactory, make_delegation_key

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed"),
]

PASSPHRASES = {
    "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE": "docker-root-passphrase",
    "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "docker-repository-passphrase",
}


def _docker(server: Any, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    host = server.url.removeprefix("https://")
    tls = config / "tls" / host
    tls.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.ca_path, tls / "ca.crt")
    if not (config / "config.json").exists():
        (config / "config.json").write_text("{}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(config),
           "DOCKER_CONFIG": str(config), "DOCKER_CONTENT_TRUST_SERVER": server.url,
           **PASSPHRASES}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


def _shape(inspected: list[dict[str, Any]]) -> dict[str, Any]:
    repo = inspected[0]
    return {
        "tags": sorted((t["SignedTag"], t["Digest"], tuple(sorted(t["Signers"])))
                       for t in repo["SignedTags"]),
        "signers": sorted((s["Name"], len(s["Keys"])) for s in repo["Signers"]),
        "admin": sorted((k["Name"], len(k["Keys"])) for k in repo["AdministrativeKeys"]),
    }


def test_docker_trust_inspect_shows_what_notary_signed(
    trust_server: Any, notary_cli: NotaryCLIFactory, tmp_path: Path,
) -> None:
    gun = f"localhost:5000/test/docker-inspect-{tmp_path.name[-12:]}"
    cli = notary_cli("admin", server=trust_server)
    payload = tmp_path / "manifest.json"
    payload.write_bytes(b'{"schemaVersion":2}')
    cli.run_ok("init", gun)
    cli.run_ok("key", "rotate", gun, "snapshot", "-r")
    for role in ("targets/releases", "targets/static-tested"):
        key = make_delegation_key(tmp_path / "keys", role.split("/")[1])
        cli.run_ok("delegation", "add", gun, role, str(key.cert_path), "--all-paths")
        cli.run_ok("key", "import", str(key.key_path), "--role", role)
    cli.run_ok("publish", gun)
    for role in ("targets/releases", "targets/static-tested"):
        cli.run_ok("add", gun, "latest", str(payload), "-r", role)
    cli.run_ok("publish", gun)

    result = _docker(trust_server, tmp_path / "docker", "trust", "inspect", gun)
    assert result.returncode == 0, result.stderr
    shape = _shape(json.loads(result.stdout))
    import hashlib

    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert shape == {
        "tags": [("latest", digest, ("static-tested",))],
        "signers": [("static-tested", 1)],
        "admin": [("Repository", 1), ("Root", 1)],
    }


def test_docker_trust_signer_add(trust_server: Any, tmp_path: Path) -> None:
    gun = f"localhost:5000/test/docker-signer-{tmp_path.name[-12:]}"
    config = tmp_path / "docker"
    made = _docker(trust_server, config, "trust", "key", "generate", "alice",
                   "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    added = _docker(trust_server, config, "trust", "signer", "add", "--key",
                    str(tmp_path / "alice.pub"), "alice", gun)
    assert added.returncode == 0, added.stdout + added.stderr
    inspected = _docker(trust_server, config, "trust", "inspect", gun)
    assert inspected.returncode == 0, inspected.stderr
    shape = _shape(json.loads(inspected.stdout))
    assert shape["signers"] == [("alice", 1)]
    assert shape["tags"] == []
