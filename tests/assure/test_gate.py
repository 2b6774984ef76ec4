"""Stages sign into their own delegations; the gate decides. In-process trust server and
an in-memory registry (the real services run in tests/interop)."""

from __future__ import annotations

import datetime as dt
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from images import write_layout
from inprocess import ASGIFetcher

from countersign.assure.evidence import EvidenceCache, EvidenceError, load_and_check
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


# --- verified evidence remembered, and fetched concurrently ---------------------------


def _evidence_requests(registry: MemoryRegistry) -> list[str]:
    return [r.url.path for r in registry.requests
            if "/manifests/" in r.url.path or "/blobs/" in r.url.path]


def test_verified_evidence_is_not_fetched_again_but_freshness_is_checked(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    _run_all(world, policy)
    registry, cache = world["registry"], EvidenceCache()
    updater = Updater(world["ref"].gun, NotaryRemote(ASGIFetcher(world["app"]),
                                                       world["ref"].gun),
                      MetadataCache(world["tmp"] / "gate", world["ref"].gun))
    registry.requests.clear()
    assert decide(policy, world["ref"], updater=updater, client=world["client"],
                  evidence=cache).allowed
    assert len(_evidence_requests(registry)) == 6  # 3 referrers, 3 envelopes
    assert len(cache) == 3
    registry.requests.clear()
    decision = decide(policy, world["ref"], updater=updater, client=world["client"],
                      evidence=cache)
    assert decision.allowed and _evidence_requests(registry) == []
    # max_age is still applied to remembered evidence
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    decision = decide(policy, world["ref"], updater=updater, client=world["client"],
                      now=later, evidence=cache)
    assert not decision.allowed and {v.state for v in decision.stages} == {"stale"}
    # a revoked stage is denied although its evidence is remembered
    party, _ = world["stages"]["fuzz-tested"]
    party.revoke_tag("1.0", roles=["targets/fuzz-tested"])
    decision = decide(policy, world["ref"], updater=updater, client=world["client"],
                      evidence=cache)
    assert [v.stage for v in decision.stages if v.state != "passed"] == ["fuzz-tested"]
    # without a cache, every decision fetches the evidence
    registry.requests.clear()
    decide(policy, world["ref"], updater=updater, client=world["client"], evidence=None)
    assert len(_evidence_requests(registry)) == 4


def test_remembered_evidence_counts_only_for_the_keys_it_was_verified_with(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    cache = EvidenceCache()
    _, key = world["stages"]["static-tested"]
    digest = _gate(world, policy).digest
    assert digest is not None
    subject = digest.removeprefix("sha256:")
    evidence = str(results["static-tested"].evidence)
    repository = world["ref"].repository
    load_and_check(world["client"], repository, evidence, subject_hex=subject,
                   stage="static-tested", keys=[key.public_key], cache=cache)
    assert len(cache) == 1
    other = PrivateKey.generate().public_key
    with pytest.raises(EvidenceError, match="not signed by a key of its role"):
        load_and_check(world["client"], repository, evidence, subject_hex=subject,
                       stage="static-tested", keys=[other], cache=cache)
    with pytest.raises(EvidenceError, match="does not record stage dynamic-tested"):
        load_and_check(world["client"], repository, evidence, subject_hex=subject,
                       stage="dynamic-tested", keys=[key.public_key], cache=cache)
    assert len(cache) == 1  # failures are not remembered


def test_the_evidence_cache_is_bounded() -> None:
    cache = EvidenceCache(max_entries=2)
    for i in range(3):
        cache.put(i, {"stage": str(i)})
    assert len(cache) == 2 and cache.get(0) is None and cache.get(2) == {"stage": "2"}
    assert 1 in cache and 0 not in cache
    cache.put(3, {})  # 1 was used last, so 2 goes
    assert 1 in cache and 2 not in cache
    found = cache.get(1)
    assert found is not None
    found["stage"] = "changed"  # callers get a copy
    assert cache.get(1) == {"stage": "1"}
    EvidenceCache(max_entries=0).put(1, {})
    with pytest.raises(ValueError, match="must not be negative"):
        EvidenceCache(max_entries=-1)


def test_the_evidence_cache_is_bounded_in_bytes() -> None:
    """A stage's results are as large as its signer made them: the memory they take is
    bounded as well as their number."""
    cache = EvidenceCache(max_bytes=4000)
    large = {"results": "x" * 900}  # about a quarter of the bound: kept
    for i in range(5):
        cache.put(i, large)
    assert len(cache) == 4 and 0 not in cache and all(i in cache for i in range(1, 5))
    cache.put(9, {"results": "x" * 1001})  # over a quarter: not kept, nothing dropped
    assert 9 not in cache and len(cache) == 4
    cache.put(1, {"results": "small"})  # a key put again is counted once
    for i in range(10, 13):
        cache.put(i, {"results": "small"})
    assert len(cache) == 7
    cache.clear()
    for i in range(4):
        cache.put(i, large)
    assert len(cache) == 4
    with pytest.raises(ValueError, match="must not be negative"):
        EvidenceCache(max_bytes=-1)


def _hold_evidence(world, results, handle) -> None:  # type: ignore[no-untyped-def]
    """Answer the referrer manifests of ``results`` through ``handle`` first."""
    registry = world["registry"]
    digests = {str(r.evidence) for r in results.values()}

    def responder(request: httpx.Request) -> httpx.Response:
        handle()
        return registry.respond(request)

    registry.intercept(lambda r: r.method == "GET" and r.url.path.rsplit("/", 1)[-1]
                       in digests, responder)


def test_the_stages_evidence_is_fetched_at_once(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    # each referrer request waits for the other two: fetched one after another, they
    # would never meet and the barrier would break
    barrier = threading.Barrier(len(STAGES), timeout=20)
    _hold_evidence(world, results, barrier.wait)
    updater = Updater(world["ref"].gun, NotaryRemote(ASGIFetcher(world["app"]),
                                                       world["ref"].gun),
                      MetadataCache(world["tmp"] / "gate", world["ref"].gun))
    decision = decide(policy, world["ref"], updater=updater, client=world["client"],
                      evidence=EvidenceCache())
    assert decision.allowed, decision.reasons
    assert not barrier.broken


def test_evidence_fetches_are_bounded_by_workers(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    lock, state = threading.Lock(), {"now": 0, "most": 0, "paired": 0}
    pair = threading.Barrier(2, timeout=20)

    def handle() -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            first_two = state["paired"] < 2
            state["paired"] += 1
        if first_two:
            pair.wait()  # two in flight together, whatever the machine's speed
        threading.Event().wait(0.05)  # a third, were it let through, would overlap them
        with lock:
            state["now"] -= 1

    _hold_evidence(world, results, handle)
    updater = Updater(world["ref"].gun, NotaryRemote(ASGIFetcher(world["app"]),
                                                       world["ref"].gun),
                      MetadataCache(world["tmp"] / "gate", world["ref"].gun))
    assert decide(policy, world["ref"], updater=updater, client=world["client"],
                  evidence=EvidenceCache(), workers=2).allowed
    assert state["most"] == 2
    state["most"], state["paired"] = 0, 2  # one at a time now: nothing to pair
    assert decide(policy, world["ref"], updater=updater, client=world["client"],
                  evidence=None, workers=1).allowed
    assert state["most"] == 1


@pytest.mark.parametrize("statement", [
    {"subject": 5, "predicate": {"stage": "static-tested", "passed": True}},
    {"subject": [{"digest": "x"}], "predicate": "passed"},
])
def test_a_statement_of_the_wrong_shape_is_bad_evidence(world, statement) -> None:  # type: ignore[no-untyped-def]
    from countersign.assure.evidence import PREDICATE_TYPE, STATEMENT_TYPE, envelope, store

    _, key = world["stages"]["static-tested"]
    client, ref = world["client"], world["ref"]
    raw = client.get_manifest(ref.repository, "1.0")
    data = envelope({"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE, **statement},
                    key)
    stored = store(client, ref.repository, str(raw.digest), len(raw.data), raw.media_type,
                   data, "static-tested")
    with pytest.raises(EvidenceError, match="not an in-toto statement"):
        load_and_check(client, ref.repository, stored.digest, subject_hex=raw.digest.hex,
                       stage="static-tested", keys=[key.public_key], cache=EvidenceCache())


def test_pinning_for_the_policy_wins_and_a_bad_trust_dir_pinning_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from countersign.assure.gate import pinning_for
    from countersign.cli.main import main
    from countersign.client.pinning import TrustPinning, TrustPinningError

    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    config = trust_dir / "config.json"
    config.write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    policy = _policy(tmp_path)
    assert pinning_for(policy, trust_dir) == TrustPinning(disable_tofu=True)  # type: ignore[arg-type]
    text = (tmp_path / "policy.yaml")
    pinned = parse_policy(
        "version: 1\ntrust: {server: https://127.0.0.1:4443, pinning: {certs: {'a/*': ['"
        + "b" * 64 + "']}}}\nstages:\n  - name: s\n    role: targets/s\n    key: s\n"
        f"    check: {{command: {_writer(tmp_path, 's', CLEAN_SARIF)}, format: sarif}}\n"
        "deliver: {require: [s], max_age: 7d}\n", text, environ={})
    # the policy's pins replace the trust dir's (docs/policy.md), TOFU setting included
    assert pinning_for(pinned, trust_dir) == TrustPinning(certs={"a/*": ["b" * 64]})
    config.write_text(json.dumps({"trust_pinning": {"disable-tofu": True}}))
    with pytest.raises(TrustPinningError, match="unknown key 'disable-tofu'"):
        pinning_for(policy, trust_dir)  # type: ignore[arg-type]
    text.write_text(
        "version: 1\ntrust: {server: https://127.0.0.1:9}\nstages:\n  - name: s\n"
        "    role: targets/s\n    key: s\n"
        f"    check: {{command: {_writer(tmp_path, 's', CLEAN_SARIF)}, format: sarif}}\n"
        "deliver: {require: [s], max_age: 7d}\n")
    capsys.readouterr()
    assert main(["verify", "registry.test/shop/app:1.0", "--policy", str(text),
                 "--trust-dir", str(trust_dir)]) == 2
    err = capsys.readouterr().err
    assert "bad trust_pinning (unknown key 'disable-tofu'" in err and "Traceback" not in err


def test_one_failed_evidence_lane_denies_and_the_others_still_count(world) -> None:  # type: ignore[no-untyped-def]
    """Fetched on several threads, each stage's evidence is settled on its own: a lane whose
    registry request fails leaves its stage bad-evidence (the decision fails closed)."""
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    broken = str(results["dynamic-tested"].evidence)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    world["registry"].intercept(lambda r: r.url.path.endswith(broken), refuse)
    cache = EvidenceCache()
    updater = Updater(world["ref"].gun, NotaryRemote(ASGIFetcher(world["app"]),
                                                       world["ref"].gun),
                      MetadataCache(world["tmp"] / "gate", world["ref"].gun))
    decision = decide(policy, world["ref"], updater=updater, client=world["client"],
                      evidence=cache, workers=3)
    assert not decision.allowed
    states = {v.stage: v.state for v in decision.stages}
    assert states == {"static-tested": "passed", "dynamic-tested": "bad-evidence",
                      "fuzz-tested": "passed"}
    assert len(cache) == 2  # the failure is not remembered
    assert any("dynamic-tested is bad-evidence" in r for r in decision.reasons)


def test_remembered_evidence_is_not_evidence_for_another_image(world) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(world["tmp"])
    results = _run_all(world, policy)
    cache = EvidenceCache()
    _, key = world["stages"]["static-tested"]
    digest = _gate(world, policy).digest
    assert digest is not None
    evidence, repository = str(results["static-tested"].evidence), world["ref"].repository
    load_and_check(world["client"], repository, evidence, subject_hex=digest[7:],
                   stage="static-tested", keys=[key.public_key], cache=cache)
    assert len(cache) == 1
    with pytest.raises(EvidenceError, match="is about another image"):
        load_and_check(world["client"], repository, evidence, subject_hex="0" * 64,
                       stage="static-tested", keys=[key.public_key], cache=cache)


def _signed_evidence(payload: bytes) -> tuple[Any, Any, str]:
    """A registry client stand-in serving one envelope over ``payload``, its key, subject."""
    import base64 as b64
    import json as _json
    from types import SimpleNamespace

    from countersign.assure.evidence import PAYLOAD_TYPE, pae
    from countersign.tuf import PrivateKey

    key = PrivateKey.generate("ecdsa")
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    envelope_bytes = _json.dumps({"payloadType": PAYLOAD_TYPE,
                                  "payload": b64.b64encode(payload).decode(),
                                  "signatures": [{"keyid": key.canonical_key_id,
                                                  "sig": b64.b64encode(sig).decode()}]}).encode()
    subject = "ab" * 32
    manifest = _json.dumps({"layers": [{"digest": "sha256:" + "cd" * 32,
                                        "size": len(envelope_bytes)}],
                            "subject": {"digest": f"sha256:{subject}"}}).encode()
    client = SimpleNamespace(
        registry="registry.test",
        get_manifest=lambda repo, digest: SimpleNamespace(
            verify=lambda d: SimpleNamespace(data=manifest)),
        get_blob=lambda repo, digest, **kw: envelope_bytes)
    return client, key, subject


def test_evidence_nested_too_deeply_is_bad_evidence_not_a_crash() -> None:
    """A stage key holder could sign a statement nested beyond Python's parser: refused
    as evidence, with the usual error, never a RecursionError."""
    client, key, subject = _signed_evidence(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(EvidenceError, match="nested too deeply"):
        load_and_check(client, "team/app", "sha256:" + "ef" * 32,
                       subject_hex=subject, stage="static-tested", keys=[key.public_key])


def test_deep_but_readable_evidence_is_remembered_and_given_back_whole() -> None:
    """A predicate nested 600 levels parses, and the cache keeps and returns it (a deep
    copy of it would exceed Python's recursion limit)."""
    import json as _json

    from countersign.assure.evidence import PREDICATE_TYPE, STATEMENT_TYPE

    deep: Any = 1
    for _ in range(600):
        deep = {"a": deep}
    subject = "ab" * 32
    statement = {"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE,
                 "subject": [{"name": "image", "digest": {"sha256": subject}}],
                 "predicate": {"stage": "static-tested", "passed": True, "deep": deep}}
    client, key, subject = _signed_evidence(_json.dumps(statement).encode())
    cache = EvidenceCache()
    for _ in range(2):  # verified and kept, then given back from the cache
        predicate = load_and_check(client, "team/app", "sha256:" + "ef" * 32,
                                   subject_hex=subject, stage="static-tested",
                                   keys=[key.public_key], cache=cache)
        assert predicate == statement["predicate"]
    assert len(cache) == 1 and cache.hits == 1
