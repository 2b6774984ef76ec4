"""The policy's ``trust.pinning`` in ``countersign verify``, on ``countersign serve``.

The owner signs a tag; a reader runs the gate on a fresh trust dir with a policy that
pins the repository's root certificate (or pins another, or forbids trust on first
use). A refused root is an error (exit 2) and nothing is cached; an accepted one goes
on to the gate's decision (here a denial: no stage has signed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from countersign.cli.main import main
from countersign.client.cache import MetadataCache
from countersign.client.http import HTTPSFetcher
from countersign.client.remote import NotaryRemote
from countersign.client.repository import TrustRepository
from countersign.keystore import KeyStore, StaticPassphrases
from countersign.tuf import ROOT, FileMeta

pytestmark = pytest.mark.interop


def _owner(server: Any, directory: Path, gun: str) -> str:
    """Make and sign ``gun``:1.0; the root certificate's ID."""
    fetcher = HTTPSFetcher(server.url, ca_file=server.ca_path)
    repo = TrustRepository(gun, NotaryRemote(fetcher, gun), MetadataCache(directory, gun),
                           KeyStore(directory, StaticPassphrases("pinning-passphrase")))
    repo.init()
    refreshed = repo.sign_tag("1.0", FileMeta.for_bytes(b"a manifest"))
    fetcher.close()
    root_id: str = refreshed.state.root.signed.roles[ROOT].keyids[0]
    return root_id


def _policy(tmp: Path, server: Any, pinning: str) -> Path:
    check = f"[{sys.executable!r}, '-c', 'pass']"
    path = tmp / "policy.yaml"
    path.write_text(f"""version: 1
trust:
  server: {server.url}
  tls_ca: {server.ca_path}
  pinning: {pinning}
stages:
  - name: static-tested
    role: targets/static-tested
    key: static-tested
    check: {{command: {check}, format: sarif}}
deliver: {{require: [static-tested], max_age: 7d}}
""")
    return path


def _verify(trust_dir: Path, gun: str, policy: Path) -> int:
    return main(["verify", f"{gun}:1.0", "--policy", str(policy), "--trust-dir",
                 str(trust_dir), "--registry-insecure", "--json"])


def _cached_root(trust_dir: Path, gun: str) -> bool:
    return MetadataCache(trust_dir, gun).load(ROOT) is not None


def test_verify_refuses_a_root_the_policys_pinning_does_not_allow(
        countersign_server: Any, gun: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root_id = _owner(countersign_server, tmp_path / "owner", gun)
    reader = tmp_path / "reader"
    reader.mkdir()
    # the trust dir would allow the root, but the policy pins another certificate: it wins
    (reader / "config.json").write_text(json.dumps(
        {"trust_pinning": {"certs": {gun: [root_id]}}}))
    wrong = _policy(tmp_path, countersign_server, f"{{certs: {{'{gun}': ['{'0' * 64}']}}}}")
    capsys.readouterr()
    assert _verify(reader, gun, wrong) == 2
    err = capsys.readouterr().err
    assert "does not match the trust pinning" in err and "Traceback" not in err
    assert not _cached_root(reader, gun)

    # the certificate's own ID (here through a prefix) lets the gate decide
    prefix = gun.rsplit("/", 1)[0] + "/*"
    right = _policy(tmp_path, countersign_server, f"{{certs: {{'{prefix}': ['{root_id}']}}}}")
    assert _verify(reader, gun, right) == 1  # trusted, then denied: no stage signed
    record = json.loads(capsys.readouterr().out)
    digest = FileMeta.for_bytes(b"a manifest").sha256
    assert digest is not None and record["digest"] == f"sha256:{digest.hex()}"
    assert record["stages"][0]["state"] == "missing"
    assert record["policy"]["trust"]["pinning"]["certs"] == {prefix: [root_id]}
    assert _cached_root(reader, gun)


def test_verify_with_trust_on_first_use_disabled_by_the_policy(
        countersign_server: Any, gun: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _owner(countersign_server, tmp_path / "owner", gun)
    policy = _policy(tmp_path, countersign_server, "{disable_tofu: true}")
    capsys.readouterr()
    assert _verify(tmp_path / "reader", gun, policy) == 2
    assert "trust on first use is disabled" in capsys.readouterr().err
    assert not _cached_root(tmp_path / "reader", gun)
