"""A passing stage's evidence: an in-toto Statement v1, in a DSSE envelope signed by the
stage's key, stored in the registry as an OCI referrer of the image.

The statement's subject is the image manifest's digest; its predicate summarises
the stage's results (what the evaluation recorded, deterministic). The target the
stage signs in its delegation points at the referrer's digest through ``custom``,
so the signed trust data and the stored evidence bind each other.

Evidence is content-addressed (the stage's signature names the referrer by
digest, and the referrer names the envelope by digest), so once it has been
verified for an image, a stage and a set of keys, that result cannot change:
:class:`EvidenceCache` keeps it in memory and the gate skips the registry for it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from countersign._lru import BoundedLRU
from countersign.assure.stages import StageRun
from countersign.errors import CountersignError, VerificationError
from countersign.registry.client import RegistryClient
from countersign.registry.oci import OCI_EMPTY, OCI_EMPTY_DATA, OCI_MANIFEST, digest_of
from countersign.tuf import PrivateKey, PublicKey
from countersign.tuf.timefmt import GoTime

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://countersign.dev/stage-result/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
ARTIFACT_TYPE = "application/vnd.countersign.stage-evidence.v1+json"
MAX_ENVELOPE = 16 << 20


class EvidenceError(VerificationError):
    """Evidence that is missing, malformed, or does not match the signed stage."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(gun: str, digest_hex: str, run: StageRun, when: _dt.datetime) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": gun, "digest": {"sha256": digest_hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "stage": run.stage.name,
            "role": run.stage.role,
            "passed": run.passed,
            "finishedOn": GoTime.from_datetime(when).format(),
            "check": {"command": list(run.stage.check.command),
                      "format": run.stage.check.format, "exitStatus": run.exit_status},
            "results": run.evaluation.summary,
        },
    }


def envelope(doc: dict[str, Any], key: PrivateKey) -> bytes:
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return json.dumps({
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.canonical_key_id,
                        "sig": base64.b64encode(signature).decode()}],
    }, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StoredEvidence:
    digest: str  # the referrer manifest's digest
    envelope_digest: str


def store(client: RegistryClient, repository: str, subject_digest: str, subject_size: int,
          subject_media_type: str, data: bytes, stage: str) -> StoredEvidence:
    """Push the envelope as an OCI artifact whose subject is the image manifest."""
    envelope_digest = digest_of(data)
    client.push_blob(repository, str(digest_of(OCI_EMPTY_DATA)), len(OCI_EMPTY_DATA),
                     OCI_EMPTY_DATA)
    client.push_blob(repository, str(envelope_digest), len(data), data)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": str(digest_of(OCI_EMPTY_DATA)),
                   "size": len(OCI_EMPTY_DATA)},
        "layers": [{"mediaType": ENVELOPE_MEDIA_TYPE, "digest": str(envelope_digest),
                    "size": len(data)}],
        "subject": {"mediaType": subject_media_type, "digest": subject_digest,
                    "size": subject_size},
        "annotations": {"dev.countersign.stage": stage},
    }, separators=(",", ":")).encode()
    digest = digest_of(manifest)
    client.put_manifest(repository, str(digest), manifest, OCI_MANIFEST)
    return StoredEvidence(str(digest), str(envelope_digest))


class EvidenceCache(BoundedLRU):
    """Verified evidence (its predicate) by everything it was verified against; bounded LRU.

    At most ``max_entries`` predicates, totalling at most ``max_bytes`` as JSON (one over
    a quarter of that is not kept): a stage's results are as large as its signer made
    them, up to an envelope's 16 MiB. Thread-safe: the webhook's workers share one.
    Predicates are kept as their JSON and parsed again when given back, so no caller
    can change a kept one, at any depth the evidence itself could be read at.
    """

    def __init__(self, max_entries: int = 1024, *, max_bytes: int = 32 << 20) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes)

    def get(self, key: Hashable) -> dict[str, Any] | None:
        found = super().get(key)
        return json.loads(found) if found is not None else None

    def put(self, key: Hashable, predicate: dict[str, Any], size: int | None = None) -> None:
        """Keep ``predicate`` (as JSON); ``size``, if given, is what it counts for."""
        data = json.dumps(predicate, separators=(",", ":"))
        super().put(key, data, len(data) if size is None else size)


#: the cache the gate uses unless given its own
PROCESS_EVIDENCE = EvidenceCache()


def evidence_key(client: RegistryClient, repository: str, evidence_digest: str, *,
                 subject_hex: str, stage: str, keys: Sequence[PublicKey]) -> Hashable:
    """What a verified result depends on: where, which referrer, which image, stage and keys."""
    return (client.registry, repository, evidence_digest, subject_hex, stage,
            frozenset((k.canonical_key_id, k.method) for k in keys))


def load_and_check(client: RegistryClient, repository: str, evidence_digest: str, *,
                   subject_hex: str, stage: str, keys: list[PublicKey],
                   cache: EvidenceCache | None = None) -> dict[str, Any]:
    """Fetch the evidence, check its manifest, envelope signature and statement; the predicate.

    With ``cache``, evidence verified before against the same image, stage and keys is
    not fetched again, and newly verified evidence is remembered.
    """
    key = None
    if cache is not None:
        key = evidence_key(client, repository, evidence_digest, subject_hex=subject_hex,
                           stage=stage, keys=keys)
        known = cache.get(key)
        if known is not None:
            return known
    predicate = _load_and_check(client, repository, evidence_digest,
                                subject_hex=subject_hex, stage=stage, keys=keys)
    if cache is not None and key is not None:
        cache.put(key, predicate)
    return predicate


def _too_deep(evidence_digest: str, stage: str) -> EvidenceError:
    return EvidenceError(f"evidence {evidence_digest} of stage {stage} is nested too deeply "
                         "to be read")


def _load_and_check(client: RegistryClient, repository: str, evidence_digest: str, *,
                    subject_hex: str, stage: str, keys: list[PublicKey]) -> dict[str, Any]:
    try:
        raw = client.get_manifest(repository, evidence_digest).verify(evidence_digest)
        manifest = json.loads(raw.data)
        layer = manifest["layers"][0]
        if manifest.get("subject", {}).get("digest") != f"sha256:{subject_hex}":
            raise EvidenceError(f"evidence {evidence_digest} is about another image")
        data = client.get_blob(repository, layer["digest"], expected_size=layer["size"],
                               max_size=MAX_ENVELOPE)
        doc = json.loads(data)
        payload = base64.b64decode(doc["payload"], validate=True)
        signatures = doc["signatures"]
    except EvidenceError:
        raise
    except RecursionError:  # JSON nested deeper than Python parses: not evidence we wrote
        raise _too_deep(evidence_digest, stage) from None
    except CountersignError as exc:
        raise EvidenceError(f"evidence {evidence_digest} of stage {stage}: {exc.message}") from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise EvidenceError(f"evidence {evidence_digest} of stage {stage} is malformed") from None
    message = pae(str(doc.get("payloadType")), payload)
    by_id = {k.canonical_key_id: k for k in keys}
    valid = False
    for entry in signatures if isinstance(signatures, list) else []:
        key = by_id.get(str(entry.get("keyid"))) if isinstance(entry, dict) else None
        try:
            sig = base64.b64decode(entry.get("sig", ""), validate=True) if key else b""
        except ValueError:
            continue
        if key is not None and key.bare().verify(key.method, sig, message):
            valid = True
    if not valid:
        raise EvidenceError(f"evidence {evidence_digest} of stage {stage} is not signed by "
                            "a key of its role")
    try:
        signed = json.loads(payload)
        subjects = signed["subject"]
        predicate = signed["predicate"]
        if not isinstance(subjects, list) or not isinstance(predicate, dict):
            raise TypeError("subject must be a list and predicate an object")
    except RecursionError:
        raise _too_deep(evidence_digest, stage) from None
    except (ValueError, KeyError, TypeError):
        raise EvidenceError(f"evidence {evidence_digest}: not an in-toto statement") from None
    if signed.get("_type") != STATEMENT_TYPE or signed.get("predicateType") != PREDICATE_TYPE:
        raise EvidenceError(f"evidence {evidence_digest}: not a countersign stage statement")
    if not any(isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == subject_hex
               for s in subjects if isinstance(s, dict)):
        raise EvidenceError(f"evidence {evidence_digest} does not name the image digest")
    if predicate.get("stage") != stage or predicate.get("passed") is not True:
        raise EvidenceError(f"evidence {evidence_digest} does not record stage {stage} passing")
    return predicate
