"""Stages sign into their own delegations; the gate decides. In-process trust server and
an in-memory registry (the real services run in tests/interop)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from images import write_layout
from inprocess import ASGIFetcher

from countersign.assure.gate import assure_stage, decide
from countersign.assure.policy import parse_policy
from countersign.client.cache import MetadataCache
from countersign.client.remote import NotaryRemote
from countersign.client.repository import TrustRepository
from countersign.client.updater import Updater
from countersign.keystore import KeyStore, StaticPassphrases
from countersign.registry.memory import MemoryRegistry
from countersign.registry.transfer import ImageReference, Location, push
from countersign.server.app import TrustServer
from countersign.tuf import PrivateKey

DATA = Path(__file__).parent / "data"
STAGES = ("static-tested", "dynamic-tested", "fuzz-tested")
CLEAN_SARIF = ('{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"clean","rules":[]}},'
               '"results":[]}]}')
CLEAN_JUNIT = '<testsuite name="fuzz" tests="3" failures="0" errors="0"></testsuite>'


def _writer(directory: Path, name: str, text: str) -> str:
    """A check command that writes ``text`` as its report (copied from a file)."""
    source = directory / f"{name}.report"
    source.write_text(text)
    return (f'[{sys.executable!r}, "-c", "import shutil,sys; shutil.copy(sys.argv[1], '
            f'sys.argv[2])", {str(source)!r}, "{{report}}"]')


def _policy(tmp_path: Path, *, min_signers: int = 3, sarif: str = CLEAN_SARIF) -> object:
    stages = ""
    for name in STAGES:
        fmt = "junit" if name == "fuzz-tested" else "sarif"
        body = CLEAN_JUNIT if fmt == "junit" else sarif
        passes = "{max_failures: 0}" if fmt == "junit" else "{max_severity: medium}"
        stages += (f"  - name: {name}\n    role: targets/{name}\n    key: {name}\n"
                   f"    check: {{command: {_writer(tmp_path, name, body)}, format: {fmt}}}\n"
                   f"    pass: {passes}\n")
    text = ("version: 1\ntrust: {server: https://127.0.0.1:4443}\nstages:\n" + stages
            + f"deliver: {{require: [{', '.join(STAGES)}], min_distinct_signers: {min_signers},"
            " max_age: 7d}\n")
    return parse_policy(text, tmp_path / "policy.yaml", environ={})


def _repo(app: TrustServer, directory: Path, gun: str) -> TrustRepository:
    return TrustRepository(gun, NotaryRemote(ASGIFetcher(app), gun),
                           MetadataCache(directory, gun),
                           KeyStore(directory, StaticPassphrases("gate-passphrase")))


@pytest.fixture
def world(trust_app: TrustServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    registry = MemoryRegistry(host="registry.test")
    client = registry.client()
    ref = ImageReference.parse("registry.test/shop/app:1.0")
    write_layout(tmp_path / "img", "1.0", [{"app/main.py": b"print('shop')\n"}])
    pushed = push(Location("oci", tmp_path / "img", "1.0"), client, ref)
    owner = _repo(trust_app, tmp_path / "owner", ref.gun)
    owner.init()
    owner.sign_tag("1.0", pushed.file_meta())  # released by the owner
    stages = {}
    for name in STAGES:
        key = PrivateKey.generate()
        party = _repo(trust_app, tmp_path / name, ref.gun)
        party.keystore.add(key, role=name)
        owner.add_signer(f"targets/{name}", [key.public_key])
        stages[name] = (party, key)
    return {"client": client, "ref": ref, "owner": owner, "stages": stages,
            "registry": registry, "app": trust_app, "tmp": tmp_path}


def _gate(world, policy, now=None):  # type: ignore[no-untyped-def]
    updater = Updater(world["ref"].gun, NotaryRemote(ASGIFetcher(world["app"]),
                                                       world["ref"].gun),
                      MetadataCache(world["tmp"] / "gate", world["ref"].gun))
    return decide(policy, world["ref"], updater=updater, client=world["client"], now=now)


def _run_all(world, policy):  # type: ignore[no-untyped-def]
    results = {}
    for name in STAGES:
        party, key = world["stages"][name]
        results[name] = assure_stage(policy.stage(name), world["ref"], client=world["client"],
                                     repo=party, key=key)
    return results


def test_three_stages_sign_and_the_gate_allows(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    assert all(r.run.passed and r.evidence for r in results.values())
    decision = _gate(world, policy)
    assert decision.allowed, decision.reasons
    assert decision.distinct_signers == 3
    assert {v.stage: v.state for v in decision.stages} == dict.fromkeys(STAGES, "passed")


def test_a_failing_stage_signs_nothing_and_blocks(world) -> None:  # type: ignore[no-untyped-def]
    failing = ('{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"bandit","rules":[]}},'
               '"results":[{"ruleId":"B602","level":"error","message":{"text":"shell"}}]}]}')
    policy = _policy(world["tmp"], sarif=failing)
    results = _run_all(world, policy)
    assert not results["static-tested"].run.passed and results["static-tested"].evidence is None
    decision = _gate(world, policy)
    assert not decision.allowed
    assert any("static-tested is missing" in r for r in decision.reasons)


def test_another_digest_of_the_same_tag_does_not_count(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    _run_all(world, policy)
    write_layout(world["tmp"] / "v2", "1.0", [{"app/main.py": b"print('changed')\n"}])
    pushed = push(Location("oci", world["tmp"] / "v2", "1.0"), world["client"], world["ref"])
    world["owner"].sign_tag("1.0", pushed.file_meta(), roles=["targets"])
    decision = _gate(world, policy)
    assert not decision.allowed
    assert all(v.reason.endswith("signed another digest of 1.0") for v in decision.stages)


def test_one_key_for_two_stages_counts_once(world) -> None:  # type: ignore[no-untyped-def]
    shared_party, shared_key = world["stages"]["static-tested"]
    world["owner"].add_signer("targets/dynamic-tested", [shared_key.public_key])
    world["stages"]["dynamic-tested"] = (shared_party, shared_key)
    policy = _policy(world["tmp"])
    _run_all(world, policy)
    decision = _gate(world, policy)
    assert not decision.allowed and decision.distinct_signers == 2
    assert any("one key counts once" in r for r in decision.reasons)
    assert _gate(world, _policy(world["tmp"], min_signers=2)).allowed


def test_stale_evidence_and_a_revoked_stage(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    _run_all(world, policy)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    decision = _gate(world, policy, now=later)
    assert not decision.allowed and {v.state for v in decision.stages} == {"stale"}
    party, _ = world["stages"]["fuzz-tested"]
    party.revoke_tag("1.0", roles=["targets/fuzz-tested"])
    decision = _gate(world, policy)
    assert not decision.allowed
    assert [v.stage for v in decision.stages if v.state != "passed"] == ["fuzz-tested"]


def test_tampered_evidence_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    registry = world["registry"]
    import json

    manifest_digest = results["static-tested"].evidence
    manifest = json.loads(world["client"].get_manifest(world["ref"].repository,
                                                       manifest_digest).data)
    layer = manifest["layers"][0]["digest"]
    envelope = json.loads(world["client"].get_blob(world["ref"].repository, layer))
    envelope["payload"] = envelope["payload"][:-4] + "AAAA"
    registry.tamper_blob(layer, json.dumps(envelope).encode())
    decision = _gate(world, policy)
    assert not decision.allowed
    verdict = next(v for v in decision.stages if v.stage == "static-tested")
    assert verdict.state == "bad-evidence"
