"""``countersign assure`` runs the policy's stages; ``countersign verify`` is the gate.

``verify`` exit status: 0 allow, 1 deny, 2 error (the CI contract).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from countersign.cli._common import emit, read_file, trust_dir_option
from countersign.errors import CountersignError

EXIT_DENY = 1
EXIT_ERROR = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", nargs="?", help="REGISTRY/REPOSITORY:TAG")
    parser.add_argument("--policy", type=Path, help="the policy file (YAML)")
    parser.add_argument("--registry-ca", type=Path, default=None)
    parser.add_argument("--registry-insecure", action="store_true",
                        help="plain HTTP to a loopback registry")
    trust_dir_option(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    assure = sub.add_parser("assure", help="run the policy's security stages and sign the passes")
    _common(assure)
    assure.add_argument("--stage", action="append", default=[],
                        help="run only this stage (repeatable; default: every stage)")
    assure.add_argument("--json", action="store_true")
    assure.set_defaults(func=_assure)

    verify = sub.add_parser("verify", help="the delivery gate: exit 0 allow, 1 deny, 2 error")
    _common(verify)
    verify.add_argument("--json", action="store_true",
                        help="write the decision record (re-checked by --record)")
    verify.add_argument("--record", type=Path,
                        help="re-check a decision record offline instead of asking servers")
    verify.set_defaults(func=_verify)


def _load(args: argparse.Namespace) -> Any:
    from countersign.assure.policy import load_policy

    if args.policy is None:
        raise CountersignError("--policy FILE is needed")
    return load_policy(args.policy)


def _setup(args: argparse.Namespace, policy: Any) -> tuple[Any, Any, Any]:
    """The image, its registry client and its trust repository, on the policy's server
    with the policy's trust pinning (else the trust dir's)."""
    from countersign.assure.gate import pinning_for
    from countersign.cli._common import resolve_trust_dir
    from countersign.cli.images import registry_client
    from countersign.cli.trust import repository_for
    from countersign.registry.transfer import ImageReference

    if not args.image:
        raise CountersignError("IMAGE is needed", advice="write REGISTRY/REPOSITORY:TAG")
    ref = ImageReference.parse(args.image)
    args.server = policy.trust.server
    args.tls_ca = policy.trust.tls_ca
    repo = repository_for(args, ref.gun, pinning=pinning_for(policy, resolve_trust_dir(args)))
    return ref, registry_client(args, ref.registry), repo


def _stage_key(repo: Any, stage: Any) -> Any:
    from countersign.keystore import KeyStore

    store: KeyStore = repo.keystore
    if stage.key_file is not None:
        info = store.import_(read_file(stage.key_file, 1 << 20), role=stage.name)
        return store.get(info.key_id).key
    found = store.find(stage.key)
    if not found:
        raise CountersignError(
            f"stage {stage.name}: no key named {stage.key!r} in {store.private_dir}",
            advice=f"countersign trust key generate {stage.key}, then add it as a signer")
    return store.get(found[0].key_id).key


def _assure(args: argparse.Namespace) -> int:
    from countersign.assure.gate import assure_stage

    policy = _load(args)
    ref, client, repo = _setup(args, policy)
    names = args.stage or [s.name for s in policy.stages]
    results = []
    failed = False
    for name in names:
        stage = policy.stage(name)
        result = assure_stage(stage, ref, client=client, repo=repo, key=_stage_key(repo, stage))
        failed |= not result.run.passed
        results.append({"stage": name, "passed": result.run.passed, "digest": result.digest,
                        "evidence": result.evidence,
                        "reasons": list(result.run.evaluation.reasons)})

    def text(items: list[dict[str, Any]]) -> str:
        lines = []
        for r in items:
            if r["passed"]:
                lines.append(f"{r['stage']}: passed; signed {r['digest']} (evidence "
                             f"{r['evidence']})")
            else:
                lines.append(f"{r['stage']}: FAILED, nothing signed")
                lines.extend(f"  - {reason}" for reason in r["reasons"])
        return "\n".join(lines)

    emit(results, args.json, text)
    return 1 if failed else 0


def _decision_text(record: dict[str, Any]) -> str:
    verdict = "ALLOW" if record["allowed"] else "DENY"
    lines = [f"{verdict} {record['reference']} {record['digest'] or ''}".rstrip()]
    for stage in record["stages"]:
        lines.append(f"  {stage['stage']:<20} {stage['state']}"
                     + (f": {stage['reason']}" if stage["reason"] else ""))
    lines.extend(f"  reason: {r}" for r in record["reasons"])
    lines.append(f"  distinct signers: {record['distinct_signers']}")
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    try:
        if args.record is not None:
            return _recheck(args)
        from countersign.assure.gate import decide

        policy = _load(args)
        ref, client, repo = _setup(args, policy)
        decision = decide(policy, ref, updater=repo.updater, client=client)
        record = decision.to_dict()
        record["policy"] = policy.to_dict()
        emit(record, args.json, _decision_text)
        return 0 if decision.allowed else EXIT_DENY
    except CountersignError as exc:
        print(f"countersign: error: {exc.render()}", file=sys.stderr)
        return EXIT_ERROR


def _recheck(args: argparse.Namespace) -> int:
    """A decision record re-checked offline: its stage verdicts against its own rule."""
    try:
        record = json.loads(read_file(args.record, 16 << 20))
        stages = {s["stage"]: s["state"] for s in record["stages"]}
        deliver = record["policy"]["deliver"]
        required = deliver["require"] if isinstance(deliver["require"], list) else \
            deliver["require"]["of"]
        at_least = len(required) if isinstance(deliver["require"], list) else \
            deliver["require"]["at_least"]
        passed = [n for n in required if stages.get(n) == "passed"]
        signers = {k for s in record["stages"] if s["stage"] in passed for k in s["signers"]}
        ok = (len(passed) >= at_least
              and len(signers) >= int(deliver.get("min_distinct_signers", 1))
              and record["digest"] is not None)
    except (ValueError, KeyError, TypeError) as exc:
        raise CountersignError(f"{args.record}: not a countersign decision record ({exc})") \
            from None
    if ok != bool(record["allowed"]):
        raise CountersignError(f"{args.record}: the record's decision does not follow from "
                               "its own verdicts")
    emit(record, args.json, _decision_text)
    return 0 if ok else EXIT_DENY
