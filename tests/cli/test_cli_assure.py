"""``assure`` and ``verify`` take the trust pinning from the policy, else from the trust dir,
through the same function as the webhook (``assure.gate.pinning_for``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from countersign.assure.gate import pinning_for
from countersign.assure.policy import Policy, parse_policy
from countersign.assure.webhook_server import PolicyGate
from countersign.cli.assure import _setup
from countersign.cli.main import build_parser

GUN = "registry.test/shop/app"
ROOT_ID = "a" * 64


def _policy(tmp_path: Path, pinning: str | None) -> Policy:
    trust = "trust: {server: https://127.0.0.1:4443" + (
        f", pinning: {pinning}" if pinning else "") + "}\n"
    check = f"[{sys.executable!r}, '-c', 'pass']"
    return parse_policy(
        "version: 1\n" + trust + "stages:\n  - name: static-tested\n"
        "    role: targets/static-tested\n    key: static-tested\n"
        f"    check: {{command: {check}, format: sarif}}\n"
        "deliver: {require: [static-tested], max_age: 7d}\n",
        tmp_path / "policy.yaml", environ={})


def test_the_policys_pinning_wins_over_the_trust_dir(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "config.json").write_text(json.dumps(
        {"trust_pinning": {"certs": {GUN: ["b" * 64]}}}))
    policy = _policy(tmp_path, f"{{certs: {{'{GUN}': ['{ROOT_ID}']}}, "
                               "ca: {'registry.test/': ca.pem}, disable_tofu: true}")
    pinning = pinning_for(policy, tmp_path / "trust")
    assert dict(pinning.certs) == {GUN: [ROOT_ID]}
    assert dict(pinning.ca) == {"registry.test/": tmp_path / "ca.pem"}
    assert pinning.disable_tofu


def test_without_pinning_in_the_policy_the_trust_dir_config_applies(tmp_path: Path) -> None:
    policy = _policy(tmp_path, None)
    assert not pinning_for(policy, tmp_path / "none").certs
    (tmp_path / "config.json").write_text(json.dumps(
        {"trust_pinning": {"certs": {GUN: [ROOT_ID]}}}))
    assert dict(pinning_for(policy, tmp_path).certs) == {GUN: (ROOT_ID,)}


def test_assure_verify_and_the_webhook_use_the_policys_pinning(tmp_path: Path) -> None:
    policy = _policy(tmp_path, f"{{certs: {{'{GUN}': ['{ROOT_ID}']}}}}")
    expected = pinning_for(policy, tmp_path)
    for command in ("assure", "verify"):
        args = build_parser().parse_args([command, f"{GUN}:1.0", "--policy", "p.yaml",
                                          "--trust-dir", str(tmp_path)])
        _, client, repo = _setup(args, policy)
        client.close()
        repo.remote.fetcher.close()
        assert repo.updater.pinning == expected, command
    gate = PolicyGate(policy, tmp_path)
    gate.close()
    assert gate.pinning == expected


def test_a_policy_that_pins_does_not_read_the_trust_dirs_config(tmp_path: Path) -> None:
    """The policy's pins replace the trust dir's: a config.json that would not load
    (here, pinning that is set but means nothing) is not even read."""
    (tmp_path / "config.json").write_text(json.dumps({"trust_pinning": {"certs": []}}))
    policy = _policy(tmp_path, f"{{certs: {{'{GUN}': ['{ROOT_ID}']}}}}")
    args = build_parser().parse_args(["verify", f"{GUN}:1.0", "--policy", "p.yaml",
                                      "--trust-dir", str(tmp_path)])
    _, client, repo = _setup(args, policy)
    client.close()
    repo.remote.fetcher.close()
    assert dict(repo.updater.pinning.certs) == {GUN: [ROOT_ID]}
