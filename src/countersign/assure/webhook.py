"""The Kubernetes admission webhook: the gate applied to every image a workload would run.

Pure: an AdmissionReview (``admission.k8s.io/v1``) comes in as bytes, the images
of its object are listed with the JSON pointer of each ``image`` field, each
distinct image is decided by a given function (the gate, ``assure.gate.decide``
over real servers in ``webhook_server``), and the answering AdmissionReview goes
out, with the request's ``uid``. No sockets, no clock but the one handed in, so
every rule here is tested with real AdmissionReview JSON and nothing else.

The rules, fail-closed throughout:

- a request that is not an AdmissionReview this webhook understands is an
  :class:`AdmissionError` (an HTTP 4xx, never an answer that could be read as
  "allowed");
- every container, init container and ephemeral container of a Pod, and of the
  pod template of a Deployment, ReplicaSet, StatefulSet, DaemonSet,
  ReplicationController, Job or CronJob, is checked, and so is every image
  volume (``volumes[].image.reference``); any other kind is denied;
- the review is allowed only if every image is; an error deciding an image
  denies it, naming the image and the error. ``fail_open`` lets an image through
  only when the trust server or registry could not be *reached*: a verification
  failure (tampered or rolled-back trust data, bad evidence) always denies;
- in mutating mode, each allowed image given by tag is pinned to the digest the
  gate verified (a JSONPatch ``replace`` of its ``image`` field, ``TAG@DIGEST``),
  so the kubelet pulls exactly what the stages signed.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from countersign.assure.gate import Decision
from countersign.errors import CountersignError, DownloadError, ServerUnavailableError
from countersign.registry.client import RegistryUnavailableError
from countersign.registry.transfer import DOCKER_HUB, ImageReference, ImageReferenceError
from countersign.tuf.timefmt import GoTime

__all__ = [
    "API_VERSION",
    "MAX_IMAGES",
    "AdmissionError",
    "AdmissionRequest",
    "ContainerImage",
    "DecisionCache",
    "Outcome",
    "answer",
    "image_key",
    "outcome_of",
    "parse_review",
    "refuse",
]

log = logging.getLogger("countersign.webhook")

API_VERSION = "admission.k8s.io/v1"
#: Distinct images one review may ask about: more is refused, so one object cannot
#: make the webhook decide without bound.
MAX_IMAGES = 64
#: The longest deny message sent (kubectl shows it whole).
MAX_MESSAGE = 8192
MAX_UID = 256
#: The longest an error outcome is cached, whatever the settings say.
MAX_ERROR_TTL = 10.0

CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
#: (API group, kind) -> the path from the object to its pod spec.
POD_SPECS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
#: Operations that start nothing: answered "allowed" without looking at images.
UNCHECKED_OPERATIONS = frozenset({"DELETE", "CONNECT"})

Decide = Callable[[ImageReference], Decision]


class AdmissionError(CountersignError):
    """A request that is not an AdmissionReview this webhook can answer: an HTTP 4xx."""

    def __init__(self, message: str, *, status: int = 400, advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.status = status


# --- the request -------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerImage:
    """One ``image`` field of the object, and where it is."""

    pointer: str  # JSON pointer of the field, e.g. /spec/template/spec/containers/0/image
    field: str  # containers, initContainers, ephemeralContainers or volumes (image volumes)
    index: int
    name: str
    image: str

    @property
    def where(self) -> str:
        return f"{self.field}[{self.index}] {self.name!r}" if self.name else \
            f"{self.field}[{self.index}]"

    @property
    def shown(self) -> str:
        """The image as a message names it: whole unless it is too long to be one."""
        if len(self.image) <= 300:
            return self.image
        return f"{self.image[:200]}... ({len(self.image)} characters)"


@dataclass(frozen=True)
class AdmissionRequest:
    """What the webhook needs of an AdmissionReview's ``request``."""

    uid: str
    group: str
    kind: str
    operation: str
    namespace: str
    name: str
    images: tuple[ContainerImage, ...]
    #: why the object cannot be checked (denied), or None
    problem: str | None = None

    @property
    def checked(self) -> bool:
        return self.operation not in UNCHECKED_OPERATIONS

    @property
    def display(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where or '(unnamed)'}"


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview v1, or an :class:`AdmissionError` saying what is wrong."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise AdmissionError("the body is not UTF-8 text") from None
    except RecursionError:
        raise AdmissionError("the body is nested too deeply") from None
    except ValueError as exc:
        raise AdmissionError(f"the body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise AdmissionError(f"an AdmissionReview is a JSON object, not {_kind_of(doc)}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if kind != "AdmissionReview":
        raise AdmissionError(f"kind {kind!r} is not AdmissionReview")
    if api_version != API_VERSION:
        raise AdmissionError(f"apiVersion {api_version!r} is not {API_VERSION}",
                             advice="set admissionReviewVersions: [v1] in the webhook "
                             "configuration")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise AdmissionError("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID:
        raise AdmissionError(f"request.uid must be a non-empty string of at most {MAX_UID} "
                             "characters")
    resource_kind = request.get("kind")
    if not isinstance(resource_kind, dict) or not isinstance(resource_kind.get("kind"), str):
        raise AdmissionError("request.kind must be an object with a string kind")
    group = resource_kind.get("group", "")
    if not isinstance(group, str):
        raise AdmissionError("request.kind.group must be a string")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise AdmissionError("request.operation must be a string")
    namespace, name = request.get("namespace", ""), request.get("name", "")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise AdmissionError("request.namespace and request.name must be strings")
    kind_name = resource_kind["kind"]
    obj = request.get("object")
    if operation in UNCHECKED_OPERATIONS:
        return AdmissionRequest(uid, group, kind_name, operation, namespace, name, ())
    if not isinstance(obj, dict):
        raise AdmissionError(f"request.object must be an object for {operation}")
    if not name:
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            found = metadata.get("name") or metadata.get("generateName")
            name = found if isinstance(found, str) else ""
    path = POD_SPECS.get((group, kind_name))
    if path is None:
        shown = f"{group}/{kind_name}" if group else kind_name
        return AdmissionRequest(uid, group, kind_name, operation, namespace, name, (),
                                problem=f"countersign does not check {shown} objects "
                                "(only Pods and the workloads with pod templates)")
    try:
        images = tuple(_images(obj, path))
    except _Malformed as exc:
        return AdmissionRequest(uid, group, kind_name, operation, namespace, name, (),
                                problem=str(exc))
    return AdmissionRequest(uid, group, kind_name, operation, namespace, name, images)


class _Malformed(Exception):
    """A pod spec whose shape cannot be checked: denied, naming the field."""


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _images(obj: dict[str, Any], path: tuple[str, ...]) -> list[ContainerImage]:
    node: Any = obj
    for depth, key in enumerate(path):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise _Malformed(f"the object has no {'.'.join(path[:depth + 1])} object")
    spec_pointer = "".join(f"/{_escape(k)}" for k in path)
    dotted = ".".join(path)
    found: list[ContainerImage] = []
    for field in CONTAINER_FIELDS:
        containers = node.get(field)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise _Malformed(f"{dotted}.{field} is not a list")
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise _Malformed(f"{dotted}.{field}[{index}] is not an object")
            name = container.get("name", "")
            image = container.get("image")
            if not isinstance(image, str) or not image:
                raise _Malformed(f"{dotted}.{field}[{index}] has no image")
            found.append(ContainerImage(f"{spec_pointer}/{field}/{index}/image", field, index,
                                        name if isinstance(name, str) else "", image))
    if not any(i.field == "containers" for i in found):
        raise _Malformed(f"{dotted}.containers is empty")
    # an image volume is pulled like a container image and its files can be run from
    # any container that mounts it: its reference is checked (and pinned) the same way
    volumes = node.get("volumes")
    if volumes is None:
        return found
    if not isinstance(volumes, list):
        raise _Malformed(f"{dotted}.volumes is not a list")
    for index, volume in enumerate(volumes):
        if not isinstance(volume, dict):
            raise _Malformed(f"{dotted}.volumes[{index}] is not an object")
        source = volume.get("image")
        if source is None:
            continue
        reference = source.get("reference") if isinstance(source, dict) else None
        if not isinstance(reference, str) or not reference:
            raise _Malformed(f"{dotted}.volumes[{index}].image has no reference")
        name = volume.get("name", "")
        found.append(ContainerImage(f"{spec_pointer}/volumes/{index}/image/reference",
                                    "volumes", index, name if isinstance(name, str) else "",
                                    reference))
    return found


def _kind_of(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


# --- one image's outcome ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What deciding one image gave: a decision, or the error that stopped it."""

    decision: Decision | None
    error: str = ""
    #: the trust server or registry could not be reached (the only case fail-open admits)
    unavailable: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.decision.allowed


_UNAVAILABLE = (ServerUnavailableError, DownloadError, RegistryUnavailableError)


#: docker's reference grammar (distribution/reference), each part matched on its own and
#: only after the lengths are checked: no pattern here can backtrack without bound
_MAX_NAME = 255
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_reference(image: str) -> None:
    """Refuse what the kubelet would not read as an image reference, saying which part.

    The gate's parser is lenient (it takes what ``docker`` users type); what an
    object names is what the kubelet pulls, so it must be exactly docker's grammar:
    anything else (spaces, control characters, a ``docker://`` prefix, an empty
    path component, a name over 255 characters) is denied here, clearly, before a
    server is asked about it.
    """
    shown = repr(image) if len(image) <= 120 else repr(image[:100]) + f"... ({len(image)} " \
        "characters)"
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    why = None
    if at and not digest:
        why = "the digest after @ is empty"
    elif len(name) > _MAX_NAME:
        why = f"the name is longer than {_MAX_NAME} characters"
    elif tag is not None and (len(tag) > 128 or not _TAG.fullmatch(tag)):
        why = f"the tag {tag[:130]!r} is not 1 to 128 letters, digits, '_', '.' or '-'"
    else:
        first, sep, rest = name.partition("/")
        host = sep and ("." in first or ":" in first or first == "localhost"
                        or first != first.lower())
        if host and not _HOST.fullmatch(first):
            why = f"the registry {first!r} is not HOST[:PORT]"
        path = rest if host else name
        if why is None and not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
            why = (f"the repository {path!r} is not lower-case letters and digits in "
                   "components separated by '/' (with '.', '_', '__' or '-' inside)")
    if why is not None:
        raise ImageReferenceError(f"{shown} is not an image reference: {why}",
                                  advice="write REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")


def image_key(image: str) -> ImageReference:
    """The normalised reference the cache and the gate use (``nginx``: docker.io/library/nginx).

    The registry host is what the kubelet connects to, so it is compared as DNS
    compares it (``Registry.Example.com`` is ``registry.example.com``), and docker's
    old name ``index.docker.io`` is ``docker.io``: one image, one trust collection.
    """
    check_reference(image)
    ref = ImageReference.parse(image)
    registry = ref.registry.lower()
    if registry == "index.docker.io":
        registry = DOCKER_HUB
        if "/" not in ref.repository:
            return replace(ref, registry=registry, repository=f"library/{ref.repository}")
    return ref if registry == ref.registry else replace(ref, registry=registry)


def outcome_of(decide: Decide, ref: ImageReference) -> Outcome:
    """``decide(ref)``, with every failure turned into a denying outcome (fail-closed)."""
    try:
        return Outcome(decide(ref))
    except _UNAVAILABLE as exc:
        return Outcome(None, exc.message, unavailable=True)
    except CountersignError as exc:
        return Outcome(None, exc.message)
    except Exception as exc:  # a bug must still deny, never allow or crash the review
        log.exception("unexpected failure deciding an image", extra={"image": str(ref)})
        return Outcome(None, f"internal error ({type(exc).__name__})")


# --- the answer ---------------------------------------------------------------------


def answer(request: AdmissionRequest, outcomes: Mapping[str, Outcome], *,
           mutate: bool = False, fail_open: bool = False) -> dict[str, Any]:
    """The AdmissionReview answering ``request``; ``outcomes`` by :func:`image_key` text.

    An image whose reference cannot be parsed, or that is missing from
    ``outcomes``, is denied.
    """
    response: dict[str, Any] = {"uid": request.uid, "allowed": True}
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    if not request.checked:
        return review
    if request.problem is not None:
        return _deny(review, f"{request.display}: {request.problem}")
    distinct = {c.image for c in request.images}
    if len(distinct) > MAX_IMAGES:
        return _deny(review, f"{request.display} names {len(distinct)} distinct images; "
                     f"countersign checks at most {MAX_IMAGES} in one object")
    denials: list[str] = []
    warnings: list[str] = []
    patch: list[dict[str, Any]] = []
    for container in request.images:
        try:
            ref = image_key(container.image)
        except CountersignError as exc:
            denials.append(f"{container.where} image {container.shown}: {exc.message}")
            continue
        outcome = outcomes.get(str(ref))
        if outcome is None:
            denials.append(f"{container.where} image {container.shown}: not decided")
            continue
        if outcome.decision is None:
            if fail_open and outcome.unavailable:
                warnings.append(f"countersign: {container.shown} admitted UNCHECKED "
                                f"(fail-open): {outcome.error}")
                continue
            denials.append(f"{container.where} image {container.shown}: cannot be verified: "
                           f"{outcome.error}")
            continue
        decision = outcome.decision
        if not decision.allowed:
            why = "; ".join(decision.reasons) or "denied by the policy"
            denials.append(f"{container.where} image {container.shown}: {why}")
            continue
        if mutate and ref.digest is None and decision.digest is not None:
            patch.append({"op": "replace", "path": container.pointer,
                          "value": f"{container.image}@{decision.digest}"})
    if denials:
        shown = "\n".join(denials)
        return _deny(review, f"countersign denied {request.display}: {len(denials)} of "
                     f"{len(request.images)} images are not cleared for delivery:\n{shown}")
    if warnings:
        response["warnings"] = warnings
        response["auditAnnotations"] = {"fail-open": "; ".join(warnings)[:MAX_MESSAGE]}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(patch, separators=(",", ":")).encode()).decode("ascii")
    return review


def refuse(request: AdmissionRequest, message: str) -> dict[str, Any]:
    """The AdmissionReview denying ``request`` for ``message`` (a failure with no decision)."""
    review = {"apiVersion": API_VERSION, "kind": "AdmissionReview",
              "response": {"uid": request.uid, "allowed": True}}
    return _deny(review, f"countersign denied {request.display}: {message}")


def _deny(review: dict[str, Any], message: str) -> dict[str, Any]:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 40] + "... (message cut short)"
    review["response"].update(allowed=False, status={
        "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": message})
    return review


def distinct_refs(request: AdmissionRequest) -> list[ImageReference]:
    """The request's images to decide, once each (unparsable ones are denied by :func:`answer`)."""
    seen: dict[str, ImageReference] = {}
    if len({c.image for c in request.images}) > MAX_IMAGES:
        return []
    for container in request.images:
        try:
            ref = image_key(container.image)
        except CountersignError:
            continue
        seen.setdefault(str(ref), ref)
    return list(seen.values())


# --- the decision cache -------------------------------------------------------------


class DecisionCache:
    """Outcomes by image, bounded in entries (least recently used go) and in age.

    A decision lives ``ttl`` seconds, and an allowed one never past the moment
    its oldest passing stage goes stale under ``max_age``. An error lives
    ``error_ttl`` seconds (at most :data:`MAX_ERROR_TTL`): long enough that a
    burst of pods for an unreachable server does not become a burst of
    connection attempts, short enough that recovery shows at once.
    ``max_entries=0`` or ``ttl=0`` turns caching off. ``clock`` is monotonic
    seconds, ``wall`` the current UTC time (both replaceable for tests).
    """

    def __init__(self, *, max_entries: int = 1024, ttl: float = 30.0, error_ttl: float = 1.0,
                 max_age: _dt.timedelta | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], _dt.datetime] | None = None) -> None:
        if max_entries < 0 or not 0 <= ttl < math.inf or not 0 <= error_ttl < math.inf:
            # NaN compares false with every expiry time: an entry would never go
            raise ValueError("cache sizes and lifetimes must be finite and not negative")
        self.max_entries = max_entries
        self.ttl = ttl
        self.error_ttl = min(error_ttl, MAX_ERROR_TTL, ttl)
        self.max_age = max_age
        self.clock = clock
        self.wall = wall or (lambda: _dt.datetime.now(_dt.UTC))
        self._entries: OrderedDict[str, tuple[float, Outcome]] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Outcome | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        until, outcome = entry
        if self.clock() >= until:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return outcome

    def put(self, key: str, outcome: Outcome) -> None:
        lifetime = self.lifetime(outcome)
        if lifetime <= 0 or self.max_entries == 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self.clock() + lifetime, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def lifetime(self, outcome: Outcome) -> float:
        """Seconds ``outcome`` may be served from the cache."""
        if outcome.decision is None:
            return self.error_ttl
        lifetime = self.ttl
        if outcome.decision.allowed and self.max_age is not None:
            fresh = fresh_for(outcome.decision, self.max_age, self.wall())
            if fresh is not None:
                lifetime = min(lifetime, fresh)
        return lifetime

    def clear(self) -> None:
        self._entries.clear()


def fresh_for(decision: Decision, max_age: _dt.timedelta, now: _dt.datetime) -> float | None:
    """Seconds until the first passing stage of ``decision`` is older than ``max_age``."""
    left: list[float] = []
    for verdict in decision.stages:
        if verdict.state != "passed" or not verdict.signed_at:
            continue
        try:
            signed = GoTime.parse(verdict.signed_at).to_datetime()
        except CountersignError:
            return 0.0
        left.append((signed + max_age - now).total_seconds())
    return min(left) if left else None


def summary(request: AdmissionRequest, review: Mapping[str, Any]) -> dict[str, Any]:
    """A log record of one review (no secrets: names, images and the verdict)."""
    response = review["response"]
    return {"uid": request.uid, "kind": request.kind, "operation": request.operation,
            "namespace": request.namespace, "name": request.name,
            "images": len(request.images), "allowed": response["allowed"],
            "patched": "patch" in response, "fail_open": "warnings" in response}
