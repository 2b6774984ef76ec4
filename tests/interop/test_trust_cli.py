"""``countersign trust`` and the real notary/docker clients, both ways, on both servers.

What countersign signs, ``notary list`` lists and ``docker trust inspect`` shows;
what the notary CLI signs, ``countersign trust inspect`` shows; one trust dir is
shared by notary and countersign and stays usable by both. Each test runs
against the reference notary-server and against ``countersign serve``.
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
from _notary import PASSPHRASE_ENV, NotaryCLIFactory, make_delegation_key, parse_list_output

pytestmark = pytest.mark.interop

DIGEST = "sha256:" + "5e" * 32


def _cs(server: Any, trust_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(trust_dir),
           "COUNTERSIGN_SERVER": server.url, "COUNTERSIGN_TLS_CA": str(server.ca_path),
           "COUNTERSIGN_TRUST_DIR": str(trust_dir), **PASSPHRASE_ENV}
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_what_countersign_signs_notary_lists(trust_server: Any, notary_cli: NotaryCLIFactory,
                                             gun: str, tmp_path: Path) -> None:
    trust = tmp_path / "cs"
    assert "does not have trust data" in _cs(trust_server, trust, "trust", "inspect",
                                             gun).stderr
    _ok(_cs(trust_server, trust, "trust", "init", gun))
    _ok(_cs(trust_server, trust, "trust", "sign", f"{gun}:v1", "--digest", DIGEST,
            "--size", "1234"))
    _ok(_cs(trust_server, trust, "trust", "key", "generate", "releases", "--dir",
            str(tmp_path)))
    _ok(_cs(trust_server, trust, "trust", "signer", "add", "releases", gun, "--key",
            str(tmp_path / "releases.pub")))
    _ok(_cs(trust_server, trust, "trust", "sign", f"{gun}:v2", "--digest", DIGEST,
            "--size", "1234"))
    listed = parse_list_output(notary_cli("reader", server=trust_server).run_ok(
        "list", gun).stdout)
    assert listed == {"v1": (DIGEST[7:], 1234, "targets"),
                      "v2": (DIGEST[7:], 1234, "targets/releases")}
    if shutil.which("docker"):
        config = tmp_path / "docker"
        host_dir = config / "tls" / trust_server.url.removeprefix("https://")
        host_dir.mkdir(parents=True)
        shutil.copy(trust_server.ca_path, host_dir / "ca.crt")
        (config / "config.json").write_text("{}")
        result = subprocess.run(["docker", "trust", "inspect", gun], capture_output=True,
                                text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
                                env={"PATH": os.environ["PATH"], "HOME": str(config),
                                     "DOCKER_CONFIG": str(config),
                                     "DOCKER_CONTENT_TRUST_SERVER": trust_server.url})
        assert result.returncode == 0, result.stderr
        tags = {t["SignedTag"]: t["Digest"] for t in json.loads(result.stdout)[0]["SignedTags"]}
        assert tags == {"v1": DIGEST[7:], "v2": DIGEST[7:]}
        # countersign shows the same as docker
        ours = json.loads(_ok(_cs(trust_server, trust, "trust", "inspect", gun, "--json")))
        theirs = json.loads(result.stdout)
        assert ours[0]["SignedTags"] == theirs[0]["SignedTags"]
        assert [s["Name"] for s in ours[0]["Signers"]] == [s["Name"]
                                                           for s in theirs[0]["Signers"]]


def test_what_notary_signs_countersign_shows(trust_server: Any, notary_cli: NotaryCLIFactory,
                                            gun: str, tmp_path: Path) -> None:
    cli = notary_cli("notary", server=trust_server)
    payload = tmp_path / "manifest"
    payload.write_bytes(b"notary-signed manifest")
    cli.run_ok("init", gun)
    cli.run_ok("add", gun, "latest", str(payload))
    key = make_delegation_key(tmp_path / "keys", "releases")
    cli.run_ok("key", "rotate", gun, "snapshot", "-r")
    cli.run_ok("delegation", "add", gun, "targets/releases", str(key.cert_path), "--all-paths")
    cli.run_ok("key", "import", str(key.key_path), "--role", "targets/releases")
    cli.run_ok("publish", gun)
    cli.run_ok("add", gun, "latest", str(payload), "-r", "targets/releases")
    cli.run_ok("publish", gun)
    record = json.loads(_ok(_cs(trust_server, tmp_path / "cs", "trust", "inspect", f"{gun}:latest",
                                "--json")))[0]
    import hashlib

    assert record["SignedTags"] == [{"SignedTag": "latest",
                                     "Digest": hashlib.sha256(payload.read_bytes()).hexdigest(),
                                     "Signers": ["Repo Admin"]}]


def test_one_trust_dir_shared_by_notary_and_countersign(
    trust_server: Any, notary_cli: NotaryCLIFactory, gun: str, tmp_path: Path,
) -> None:
    cli = notary_cli("shared", server=trust_server)
    payload = tmp_path / "manifest"
    payload.write_bytes(b"shared")
    cli.run_ok("init", gun)
    cli.run_ok("add", gun, "n1", str(payload))
    cli.run_ok("publish", gun)
    # countersign signs with the keys notary made, in notary's trust dir
    _ok(_cs(trust_server, cli.trust_dir, "trust", "sign", f"{gun}:c1", "--digest", DIGEST,
            "--size", "10"))
    # notary goes on in the same trust dir: its cache and keys are intact
    cli.run_ok("add", gun, "n2", str(payload))
    cli.run_ok("publish", gun)
    listed = parse_list_output(cli.run_ok("list", gun).stdout)
    assert set(listed) == {"n1", "c1", "n2"}
    out = _ok(_cs(trust_server, cli.trust_dir, "trust", "inspect", gun, "--json"))
    assert {t["SignedTag"] for t in json.loads(out)[0]["SignedTags"]} == {"n1", "c1", "n2"}
    # and countersign's key list shows notary's keys
    keys = json.loads(_ok(_cs(trust_server, cli.trust_dir, "key", "list", "--json")))
    assert {k["role"] for k in keys} >= {"root", "targets"}


def test_trust_pinning_from_the_trust_dir_config(countersign_server: Any, gun: str,
                                                tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    _ok(_cs(countersign_server, owner, "trust", "init", gun))
    record = json.loads(_ok(_cs(countersign_server, owner, "trust", "inspect", gun, "--json")))
    root_id = record[0]["AdministrativeKeys"][0]["Keys"][0]["ID"]
    reader = tmp_path / "reader"
    reader.mkdir()
    (reader / "config.json").write_text(json.dumps(
        {"trust_pinning": {"certs": {gun: ["0" * 64]}}}))
    refused = _cs(countersign_server, reader, "trust", "inspect", gun)
    assert refused.returncode == 1 and "trust pinning" in refused.stderr
    assert not (reader / "tuf").exists() or not any((reader / "tuf").rglob("root.json"))
    (reader / "config.json").write_text(json.dumps(
        {"trust_pinning": {"certs": {gun.rsplit("/", 1)[0] + "/*": [root_id]}}}))
    _ok(_cs(countersign_server, reader, "trust", "inspect", gun))
    (reader / "config.json").write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    refused = _cs(countersign_server, fresh, "trust", "inspect", gun)
    assert refused.returncode == 1 and "trust on first use is disabled" in refused.stderr
