"""Running stages into the trust data, and the gate that decides delivery.

``assure_stage`` runs one stage on the image pinned by digest; if it passes,
the evidence is stored as a referrer and the stage signs that exact digest, as
the tag, into its own delegation with its own key (the target's ``custom``
names the evidence and when it was made). ``decide`` is the gate: the tag is
resolved through trust to the digest being delivered, and each required stage
must have signed that digest (a threshold of its role's distinct keys, which
the trusted state already checked), recently enough, with evidence that
verifies; the distinct keys of the passing stages are counted once each.
Evidence that verified before is remembered by digest (it cannot change); the
rest is fetched for all stages at once, on a few threads.
"""

from __future__ import annotations

import datetime as _dt
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from countersign.assure.evidence import (
    PROCESS_EVIDENCE,
    EvidenceCache,
    envelope,
    evidence_key,
    load_and_check,
    statement,
    store,
)
from countersign.assure.policy import Policy, Stage
from countersign.assure.stages import StageRun, run_stage
from countersign.client.pinning import TrustPinning, load_trust_pinning
from countersign.client.repository import TrustRepository
from countersign.client.updater import RELEASE_ROLES, Updater
from countersign.errors import CountersignError
from countersign.registry.client import RegistryClient
from countersign.registry.oci import digest_of
from countersign.registry.transfer import ImageReference
from countersign.tuf import FileMeta, PrivateKey, PublicKey
from countersign.tuf.metadata import parent_role
from countersign.tuf.timefmt import GoTime


def pinning_for(policy: Policy, trust_dir: Path) -> TrustPinning:
    """The trust pinning of every command that runs on a policy (``assure``, ``verify``,
    the webhook): the policy's ``trust.pinning`` if it has one, else the trust dir's
    ``config.json``, as for the other commands. The policy travels with the pipeline,
    so its pins hold wherever it runs, on a fresh trust dir too."""
    pinned = policy.trust.pinning
    if pinned is None:
        return load_trust_pinning(trust_dir / "config.json")
    return TrustPinning(certs={gun: list(ids) for gun, ids in pinned.certs},
                        ca=dict(pinned.ca), disable_tofu=pinned.disable_tofu)


@dataclass(frozen=True)
class AssureResult:
    run: StageRun
    digest: str
    evidence: str | None  # the referrer's digest when the stage passed and signed


def assure_stage(stage: Stage, ref: ImageReference, *, client: RegistryClient,
                 repo: TrustRepository, key: PrivateKey,
                 now: _dt.datetime | None = None) -> AssureResult:
    """Run ``stage`` on ``ref`` pinned by digest; sign it with ``key`` if it passes."""
    when = now or _dt.datetime.now(_dt.UTC)
    tag = ref.tag or "latest"
    raw = client.get_manifest(ref.repository, ref.digest or tag)
    if ref.digest is not None:
        raw.verify(ref.digest)
    digest = digest_of(raw.data)
    run = run_stage(stage, f"{ref.gun}@{digest}", now=when)
    if not run.passed:
        return AssureResult(run, str(digest), None)
    data = envelope(statement(ref.gun, digest.hex, run, when), key)
    stored = store(client, ref.repository, str(digest), len(raw.data), raw.media_type, data,
                   stage.name)
    meta = FileMeta(len(raw.data), {"sha256": bytes.fromhex(digest.hex)}, custom={
        "countersign": {"stage": stage.name, "evidence": stored.digest,
                        "signed_at": GoTime.from_datetime(when).format()}})
    repo.sign_tag(tag, meta, roles=[stage.role])
    return AssureResult(run, str(digest), stored.digest)


@dataclass
class StageVerdict:
    stage: str
    role: str
    state: str  # "passed", "missing", "stale", "bad-evidence"
    reason: str = ""
    signers: list[str] = field(default_factory=list)
    signed_at: str | None = None
    evidence: str | None = None


@dataclass
class Decision:
    """The gate's answer, and everything it was based on (the decision record)."""

    reference: str
    digest: str | None
    allowed: bool
    reasons: list[str]
    stages: list[StageVerdict]
    distinct_signers: int
    decided_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "digest": self.digest, "allowed": self.allowed,
            "reasons": self.reasons, "distinct_signers": self.distinct_signers,
            "decided_at": self.decided_at,
            "stages": [vars(v) for v in self.stages],
        }


#: at most this many evidence fetches of one decision run at once
EVIDENCE_WORKERS = 4


def decide(policy: Policy, ref: ImageReference, *, updater: Updater,
           client: RegistryClient | None, now: _dt.datetime | None = None,
           evidence: EvidenceCache | None = PROCESS_EVIDENCE,
           workers: int = EVIDENCE_WORKERS) -> Decision:
    """Allow the image only if the policy's stages signed its exact digest, fresh, with evidence.

    The trust data is refreshed (the timestamp fetched) and every stage's signature,
    signing time and ``max_age`` checked on every call; only the evidence, which is
    content-addressed, comes from ``evidence`` when it verified before. The stages
    whose evidence must be fetched are fetched at once, at most ``workers`` at a time.
    """
    when = now or _dt.datetime.now(_dt.UTC)
    tag = ref.tag or "latest"
    refreshed = updater.refresh()
    state = refreshed.state
    delivered = refreshed.lookup(tag, RELEASE_ROLES)
    stamp = GoTime.from_datetime(when).format()
    if delivered is None or delivered.meta.sha256 is None:
        return Decision(str(ref), None, False, [f"{ref.gun}:{tag} is not signed for delivery "
                        "(targets/releases or targets)"], [], 0, stamp)
    digest_hex = delivered.meta.sha256.hex()
    if ref.digest is not None and ref.digest != f"sha256:{digest_hex}":
        return Decision(str(ref), f"sha256:{digest_hex}", False,
                        [f"the signed digest of {tag} is not {ref.digest}"], [], 0, stamp)
    verdicts: list[StageVerdict] = []
    pending: list[tuple[StageVerdict, list[PublicKey]]] = []
    for stage in policy.stages:
        verdict, keys = _verdict(stage, state, tag, digest_hex, policy, when)
        verdicts.append(verdict)
        if keys is not None:
            if client is None:
                verdict.state, verdict.reason = "passed", ""
            else:
                pending.append((verdict, keys))
    if client is not None and pending:
        _check_evidence(pending, client, ref.repository, digest_hex, evidence, workers)
    passed = {v.stage for v in verdicts if v.state == "passed"}
    rule = policy.deliver
    required = list(rule.require)
    reasons: list[str] = []
    if rule.all_required:
        for name in required:
            if name not in passed:
                verdict = next(v for v in verdicts if v.stage == name)
                reasons.append(f"stage {name} is {verdict.state}: {verdict.reason}")
    else:
        count = len([n for n in required if n in passed])
        if count < (rule.at_least or len(required)):
            reasons.append(f"{count} of the stages {', '.join(required)} passed; "
                           f"{rule.at_least} are required")
    signers = {s for v in verdicts if v.state == "passed" and v.stage in required
               for s in v.signers}
    if len(signers) < rule.min_distinct_signers:
        reasons.append(f"{len(signers)} distinct keys signed the required stages; "
                       f"{rule.min_distinct_signers} are required (one key counts once)")
    return Decision(str(ref), f"sha256:{digest_hex}", not reasons, reasons, verdicts,
                    len(signers), stamp)


def _verdict(stage: Stage, state: Any, tag: str, digest_hex: str, policy: Policy,
             when: _dt.datetime) -> tuple[StageVerdict, list[PublicKey] | None]:
    """The stage's verdict from the trust data alone; with the role's keys when only the
    evidence is left to check (the verdict is then still "missing")."""
    verdict = StageVerdict(stage.name, stage.role, "missing")
    trusted = state.roles.get(stage.role)
    if trusted is None:
        verdict.reason = f"{stage.role} has no valid signature in the trust data"
        return verdict, None
    target = state.targets_of(stage.role).get(tag)
    if target is None:
        verdict.reason = f"{stage.role} has not signed {tag}"
        return verdict, None
    if target.sha256 is None or target.sha256.hex() != digest_hex:
        verdict.reason = f"{stage.role} signed another digest of {tag}"
        return verdict, None
    parent = state.roles[parent_role(stage.role)].metadata.signed.delegations
    keys = {k: parent.keys[k] for k in parent.get(stage.role).keyids}
    verdict.signers = sorted({keys[k].canonical_key_id for k in trusted.signatures.signed
                              if k in keys})
    info = target.custom.get("countersign") if isinstance(target.custom, dict) else None
    if not isinstance(info, dict):
        verdict.state, verdict.reason = "bad-evidence", "the signature records no evidence"
        return verdict, None
    verdict.signed_at, verdict.evidence = info.get("signed_at"), info.get("evidence")
    try:
        signed_at = GoTime.parse(str(verdict.signed_at)).to_datetime()
    except CountersignError:
        verdict.state, verdict.reason = "bad-evidence", "the signing time is unreadable"
        return verdict, None
    if when - signed_at > policy.deliver.max_age:
        verdict.state = "stale"
        verdict.reason = f"signed at {verdict.signed_at}, older than {policy.deliver.max_age}"
        return verdict, None
    return verdict, list(keys.values())


def _check_evidence(pending: list[tuple[StageVerdict, list[PublicKey]]],
                    client: RegistryClient, repository: str, digest_hex: str,
                    cache: EvidenceCache | None, workers: int) -> None:
    """Settle each pending verdict on its evidence: remembered ones at once, the rest
    fetched concurrently (each request keeps the client's timeouts and size limits)."""

    def settle(job: tuple[StageVerdict, list[PublicKey]]) -> None:
        verdict, keys = job
        try:
            load_and_check(client, repository, str(verdict.evidence), subject_hex=digest_hex,
                           stage=verdict.stage, keys=keys, cache=cache)
        except CountersignError as exc:
            verdict.state, verdict.reason = "bad-evidence", exc.message
            return
        verdict.state, verdict.reason = "passed", ""

    fetch = []
    for verdict, keys in pending:
        if cache is not None and evidence_key(
                client, repository, str(verdict.evidence), subject_hex=digest_hex,
                stage=verdict.stage, keys=keys) in cache:
            verdict.state, verdict.reason = "passed", ""
        else:
            fetch.append((verdict, keys))
    lanes = [fetch[i::max(1, workers)] for i in range(min(max(1, workers), len(fetch)))]
    if len(lanes) <= 1:
        for job in fetch:
            settle(job)
        return

    def run(lane: list[tuple[StageVerdict, list[PublicKey]]]) -> None:
        for job in lane:
            settle(job)

    # the first lane on this thread, the others on the shared pool: at most ``workers``
    # requests of this decision at once, and no thread started per decision
    others = [_evidence_pool().submit(run, lane) for lane in lanes[1:]]
    try:
        run(lanes[0])
    finally:
        for future in others:
            future.result()


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
#: threads shared by all decisions of the process for evidence fetches
EVIDENCE_POOL_THREADS = 16


def _evidence_pool() -> ThreadPoolExecutor:
    global _POOL  # noqa: PLW0603 - one pool per process, made on first use
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=EVIDENCE_POOL_THREADS,
                                       thread_name_prefix="countersign-evidence")
        return _POOL
