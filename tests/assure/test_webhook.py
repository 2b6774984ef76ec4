"""The admission webhook on real AdmissionReview JSON (tests/assure/data/admission), with the
gate deciding on an in-process trust server and an in-memory registry, as test_gate.py."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from asgi import call
from images import write_layout
from inprocess import ASGIFetcher
from procs import free_port

from countersign.assure.gate import Decision, StageVerdict, assure_stage, decide
from countersign.assure.policy import Policy, parse_policy
from countersign.assure.webhook import (
    MAX_IMAGES,
    AdmissionError,
    DecisionCache,
    Outcome,
    parse_review,
)
from countersign.assure.webhook_server import PolicyGate, WebhookApp
from countersign.cli.main import main
from countersign.client.cache import MetadataCache
from countersign.client.fetcher import Response
from countersign.client.remote import NotaryRemote
from countersign.client.repository import TrustRepository
from countersign.client.updater import Updater
from countersign.keystore import KeyStore, StaticPassphrases
from countersign.registry.memory import MemoryRegistry
from countersign.registry.transfer import ImageReference, Location, push
from countersign.server.app import TrustServer
from countersign.tuf import PrivateKey
from countersign.tuf.timefmt import GoTime


def admit(body: bytes, decide: Any, *, mutate: bool = False, fail_open: bool = False,
          cache: DecisionCache | None = None) -> dict[str, Any]:
    """Answer ``body`` as the webhook application does (one review, its cache, no HTTP)."""
    app = WebhookApp(decide, mutate=mutate, fail_open=fail_open, cache=cache)
    try:
        return asyncio.run(app.review(body, mutate=mutate))
    finally:
        app.close()


ADMISSION = Path(__file__).parent / "data" / "admission"
STAGES = ("static-tested", "fuzz-tested")
CLEAN_SARIF = ('{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"clean","rules":[]}},'
               '"results":[]}]}')
CLEAN_JUNIT = '<testsuite name="fuzz" tests="3" failures="0" errors="0"></testsuite>'


def _body(name: str) -> bytes:
    return (ADMISSION / name).read_bytes()


def _policy(tmp: Path, server: str = "https://127.0.0.1:4443") -> Policy:
    stages = ""
    for name in STAGES:
        fmt, text = ("junit", CLEAN_JUNIT) if name == "fuzz-tested" else ("sarif", CLEAN_SARIF)
        source = tmp / f"{name}.report"
        source.write_text(text)
        command = (f'[{sys.executable!r}, "-c", "import shutil,sys; shutil.copy(sys.argv[1], '
                   f'sys.argv[2])", {str(source)!r}, "{{report}}"]')
        passes = "{max_failures: 0}" if fmt == "junit" else "{max_severity: medium}"
        stages += (f"  - name: {name}\n    role: targets/{name}\n    key: {name}\n"
                   f"    check: {{command: {command}, format: {fmt}}}\n    pass: {passes}\n")
    text = (f"version: 1\ntrust: {{server: {server}}}\nstages:\n{stages}"
            f"deliver: {{require: [{', '.join(STAGES)}], min_distinct_signers: 2, max_age: 7d}}\n")
    return parse_policy(text, tmp / "policy.yaml", environ={})


class World:
    """Images in a memory registry, released by their owner; stages sign on request."""

    def __init__(self, app: TrustServer, tmp: Path) -> None:
        self.app, self.tmp = app, tmp
        self.registry = MemoryRegistry(host="registry.test")
        self.client = self.registry.client()
        self.policy = _policy(tmp)
        self.keys = {name: PrivateKey.generate() for name in STAGES}
        self.digests: dict[str, str] = {}
        self.decisions = 0

    def _repo(self, who: str, gun: str) -> TrustRepository:
        return TrustRepository(gun, NotaryRemote(ASGIFetcher(self.app), gun),
                               MetadataCache(self.tmp / who, gun),
                               KeyStore(self.tmp / who, StaticPassphrases("hook-passphrase")))

    def release(self, image: str, stages: tuple[str, ...] = STAGES) -> str:
        """Push ``image`` (REGISTRY/REPO:TAG), sign it for delivery, run ``stages`` on it."""
        ref = ImageReference.parse(image)
        tag = ref.tag or "latest"
        layout = self.tmp / "layouts" / ref.repository
        write_layout(layout, tag, [{"app/main.py": f"print({image!r})\n".encode()}])
        pushed = push(Location("oci", layout, tag), self.client, ref)
        owner = self._repo("owner", ref.gun)
        owner.init()
        owner.sign_tag(tag, pushed.file_meta())
        for name in STAGES:
            owner.add_signer(f"targets/{name}", [self.keys[name].public_key])
        for name in stages:
            party = self._repo(name, ref.gun)
            party.keystore.add(self.keys[name], role=name)
            result = assure_stage(self.policy.stage(name), ref, client=self.client,
                                  repo=party, key=self.keys[name])
            assert result.run.passed and result.evidence
        self.digests[image] = pushed.digest
        return pushed.digest

    def decide(self, ref: ImageReference) -> Decision:
        self.decisions += 1
        updater = Updater(ref.gun, NotaryRemote(ASGIFetcher(self.app), ref.gun),
                          MetadataCache(self.tmp / "gate", ref.gun))
        return decide(self.policy, ref, updater=updater, client=self.client)


@pytest.fixture
def world(trust_app: TrustServer, tmp_path: Path) -> World:
    return World(trust_app, tmp_path)


def _response(review: dict[str, Any], uid: str) -> dict[str, Any]:
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    response = review["response"]
    assert response["uid"] == uid
    return dict(response)


def _pointer(token: str) -> str | int:
    token = token.replace("~1", "/").replace("~0", "~")
    return int(token) if token.isdigit() else token


def _apply(doc: Any, patch: list[dict[str, Any]]) -> Any:
    """RFC 6902, as much of it as a webhook's patch may use: replace and add."""
    doc = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] in ("replace", "add"), op
        *parents, last = [_pointer(t) for t in op["path"].split("/")[1:]]
        node = doc
        for token in parents:
            node = node[token]
        if op["op"] == "replace":
            assert last in (range(len(node)) if isinstance(node, list) else node), op["path"]
        node[last] = op["value"]
    return doc


def _images(spec: dict[str, Any]) -> dict[str, str]:
    return {f"{field}/{c['name']}": c["image"] for field in
            ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(field, [])}


# --- allowed, denied, mutated -----------------------------------------------------------------


def test_a_pod_whose_every_image_passed_is_allowed(world: World) -> None:
    for image in ("registry.test/shop/app:1.0", "registry.test/shop/proxy:2.1",
                  "registry.test/shop/migrate:1.0"):
        world.release(image)
    review = admit(_body("pod.json"), world.decide)
    response = _response(review, "1f5c3a2e-6d7b-4c8a-9e0f-1a2b3c4d5e6f")
    assert response == {"uid": "1f5c3a2e-6d7b-4c8a-9e0f-1a2b3c4d5e6f", "allowed": True}
    assert world.decisions == 3  # init container included


def test_a_deployment_is_denied_naming_the_image_and_the_missing_stage(world: World) -> None:
    world.release("registry.test/shop/app:1.0")
    world.release("registry.test/shop/migrate:1.0")
    world.release("registry.test/shop/proxy:2.1", stages=("static-tested",))
    response = _response(admit(_body("deployment.json"), world.decide),
                         "3b5d7f9a-1c2e-4f6a-8b0c-2d4e6f8a0b1c")
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    message = status["message"]
    assert "Deployment shop/shop" in message and "1 of 3 images" in message
    assert "containers[1] 'proxy' image registry.test/shop/proxy:2.1" in message
    assert "stage fuzz-tested is missing" in message
    assert "static-tested" not in message  # the stage that passed is not blamed
    assert "shop/app:1.0" not in message


def test_a_stale_stage_is_named(world: World) -> None:
    for image in ("registry.test/shop/report:3.0", "registry.test/shop/migrate:1.0"):
        world.release(image)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)

    def decide_later(ref: ImageReference) -> Decision:
        updater = Updater(ref.gun, NotaryRemote(ASGIFetcher(world.app), ref.gun),
                          MetadataCache(world.tmp / "later", ref.gun))
        return decide(world.policy, ref, updater=updater, client=world.client, now=later)

    message = admit(_body("cronjob.json"), decide_later)["response"]["status"]["message"]
    assert "stage static-tested is stale" in message and "stage fuzz-tested is stale" in message
    assert "initContainers[0] 'migrate'" in message


def test_a_cronjob_is_pinned_to_the_verified_digests(world: World) -> None:
    report, migrate = "registry.test/shop/report:3.0", "registry.test/shop/migrate:1.0"
    digests = {image: world.release(image) for image in (report, migrate)}
    body = _body("cronjob.json")
    response = _response(admit(body, world.decide, mutate=True),
                         "5d7f9b1c-3e4a-4b6c-8d0e-4f6a8b0c2d3e")
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {op["path"] for op in patch} == {
        "/spec/jobTemplate/spec/template/spec/containers/0/image",
        "/spec/jobTemplate/spec/template/spec/initContainers/0/image"}
    original = json.loads(body)["request"]["object"]
    patched = _apply(original, patch)
    spec = patched["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert _images(spec) == {
        "containers/report": f"registry.test/shop/report:3.0@{digests[report]}",
        "initContainers/migrate": f"registry.test/shop/migrate:1.0@{digests[migrate]}"}
    # nothing else changed, and the pinned object passes the validating webhook
    assert {k: v for k, v in patched.items() if k != "spec"} == \
        {k: v for k, v in original.items() if k != "spec"}
    review = json.loads(body)
    review["request"]["object"] = patched
    again = admit(json.dumps(review).encode(), world.decide, mutate=True)["response"]
    assert again["allowed"] is True and "patch" not in again  # already pinned


def test_a_pinned_digest_that_is_not_the_signed_one_is_denied(world: World) -> None:
    world.release("registry.test/shop/report:3.0")
    world.release("registry.test/shop/migrate:1.0")
    review = json.loads(_body("cronjob.json"))
    spec = review["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    spec["containers"][0]["image"] = "registry.test/shop/report:3.0@sha256:" + "ab" * 32
    message = admit(json.dumps(review).encode(), world.decide)["response"]["status"]["message"]
    assert "the signed digest of 3.0 is not sha256:abab" in message


def test_an_ephemeral_debug_container_is_checked(world: World) -> None:
    for image in ("registry.test/shop/app:1.0", "registry.test/shop/proxy:2.1",
                  "registry.test/shop/migrate:1.0"):
        world.release(image)
    response = admit(_body("pod-debug.json"), world.decide)["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "ephemeralContainers[0] 'debugger-4kq9z' image registry.test/shop/debug:1.0" in message
    assert "does not have trust data" in message
    world.release("registry.test/shop/debug:1.0")
    assert admit(_body("pod-debug.json"), world.decide)["response"]["allowed"] is True


def test_an_image_volume_is_checked_and_pinned(world: World) -> None:
    for image in ("registry.test/shop/app:1.0", "registry.test/shop/proxy:2.1",
                  "registry.test/shop/migrate:1.0"):
        world.release(image)
    review = json.loads(_body("deployment.json"))
    spec = review["request"]["object"]["spec"]["template"]["spec"]
    spec.setdefault("volumes", []).extend([
        {"name": "scratch", "emptyDir": {}},
        {"name": "tools", "image": {"reference": "registry.test/shop/tools:1.0",
                                    "pullPolicy": "IfNotPresent"}}])
    tools = len(spec["volumes"]) - 1
    body = json.dumps(review).encode()
    response = admit(body, world.decide)["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert f"volumes[{tools}] 'tools' image registry.test/shop/tools:1.0" in message
    assert "does not have trust data" in message
    digest = world.release("registry.test/shop/tools:1.0")
    response = admit(body, world.decide, mutate=True)["response"]
    assert response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"]))
    pointer = f"/spec/template/spec/volumes/{tools}/image/reference"
    assert {"op": "replace", "path": pointer,
            "value": f"registry.test/shop/tools:1.0@{digest}"} in patch
    patched = _apply(review["request"]["object"], patch)
    assert patched["spec"]["template"]["spec"]["volumes"][tools] == {
        "name": "tools", "image": {"reference": f"registry.test/shop/tools:1.0@{digest}",
                                   "pullPolicy": "IfNotPresent"}}
    spec["volumes"][tools]["image"] = {"pullPolicy": "Always"}
    message = admit(json.dumps(review).encode(), world.decide)["response"]["status"]["message"]
    assert f"spec.template.spec.volumes[{tools}].image has no reference" in message


# --- fail-closed ----------------------------------------------------------------------------


def test_an_unreachable_trust_server_denies(world: World, tmp_path: Path) -> None:
    policy = _policy(tmp_path, server=f"https://127.0.0.1:{free_port()}")
    gate = PolicyGate(policy, tmp_path / "hook", timeout=2.0)
    try:
        response = admit(_body("pod.json"), gate)["response"]
        assert response["allowed"] is False
        message = response["status"]["message"]
        assert "3 of 3 images" in message and "cannot be verified" in message
        assert "containers[0] 'app' image registry.test/shop/app:1.0" in message
        # fail-open admits what could not be reached, loudly
        opened = admit(_body("pod.json"), gate, fail_open=True)["response"]
        assert opened["allowed"] is True
        assert len(opened["warnings"]) == 3
        assert all("UNCHECKED (fail-open)" in w for w in opened["warnings"])
        assert "fail-open" in opened["auditAnnotations"]
    finally:
        gate.close()


def test_fail_open_never_admits_trust_data_that_does_not_verify(world: World) -> None:
    world.release("registry.test/shop/app:1.0")

    def forge(method: str, path: str, response: Response) -> Response:
        if path.endswith("/timestamp.json") and response.status == 200:  # a later version
            forged = re.sub(rb'"version":\s*(\d+)', rb'"version":\g<1>9', response.body, count=1)
            assert forged != response.body
            return Response(200, forged, response.headers)
        return response

    def decide_forged(ref: ImageReference) -> Decision:
        updater = Updater(ref.gun, NotaryRemote(ASGIFetcher(world.app, forge), ref.gun),
                          MetadataCache(world.tmp / "forged", ref.gun))
        return decide(world.policy, ref, updater=updater, client=world.client)

    review = json.loads(_body("pod.json"))
    review["request"]["object"]["spec"]["containers"] = \
        review["request"]["object"]["spec"]["containers"][:1]
    del review["request"]["object"]["spec"]["initContainers"]
    body = json.dumps(review).encode()
    assert admit(body, world.decide, fail_open=True)["response"]["allowed"] is True
    response = admit(body, decide_forged, fail_open=True)["response"]
    assert response["allowed"] is False and "warnings" not in response
    assert "cannot be verified" in response["status"]["message"]


def test_a_crashing_decide_function_denies() -> None:
    def broken(ref: ImageReference) -> Decision:
        raise RuntimeError("bug")

    response = admit(_body("cronjob.json"), broken, fail_open=True)["response"]
    assert response["allowed"] is False
    assert "internal error (RuntimeError)" in response["status"]["message"]


def test_unchecked_kinds_and_operations() -> None:
    def never(ref: ImageReference) -> Decision:
        raise AssertionError("nothing to decide")

    review = json.loads(_body("deployment.json"))
    review["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    review["request"]["object"] = {"kind": "ConfigMap", "apiVersion": "v1", "data": {}}
    response = admit(json.dumps(review).encode(), never)["response"]
    assert response["allowed"] is False
    assert "does not check ConfigMap objects" in response["status"]["message"]
    review = json.loads(_body("deployment.json"))
    review["request"].update(operation="DELETE", object=None,
                             oldObject=review["request"]["object"])
    assert admit(json.dumps(review).encode(), never)["response"] == {
        "uid": "3b5d7f9a-1c2e-4f6a-8b0c-2d4e6f8a0b1c", "allowed": True}


def test_malformed_pod_specs_and_bad_images_deny() -> None:
    def never(ref: ImageReference) -> Decision:
        raise AssertionError("nothing to decide")

    review = json.loads(_body("pod.json"))
    spec = review["request"]["object"]["spec"]
    spec["initContainers"] = {"name": "migrate"}
    message = admit(json.dumps(review).encode(), never)["response"]["status"]["message"]
    assert "spec.initContainers is not a list" in message
    review = json.loads(_body("pod.json"))
    review["request"]["object"]["spec"]["containers"] = [{"name": "app"}]
    message = admit(json.dumps(review).encode(), never)["response"]["status"]["message"]
    assert "spec.containers[0] has no image" in message
    review = json.loads(_body("pod.json"))
    del review["request"]["object"]["spec"]["initContainers"]
    review["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"registry.test/shop/c{i}:1"} for i in range(MAX_IMAGES + 1)]
    message = admit(json.dumps(review).encode(), never)["response"]["status"]["message"]
    assert f"{MAX_IMAGES + 1} distinct images" in message
    review = json.loads(_body("pod.json"))
    del review["request"]["object"]["spec"]["initContainers"]
    review["request"]["object"]["spec"]["containers"] = [{"name": "app", "image": "Shop/App:1"}]
    message = admit(json.dumps(review).encode(), never)["response"]["status"]["message"]
    assert "containers[0] 'app' image Shop/App:1: 'Shop/App:1' is not an image reference" in \
        message


def _pod_with(image: str) -> bytes:
    review = json.loads(_body("pod.json"))
    del review["request"]["object"]["spec"]["initContainers"]
    review["request"]["object"]["spec"]["containers"] = [{"name": "app", "image": image}]
    return json.dumps(review).encode()


@pytest.mark.parametrize(("image", "words"), [
    ("registry.test/shop/app:1.0\n", "the tag '1.0\\n' is not 1 to 128"),
    ("registry.test/shop/app:1.0 ; id", "the tag '1.0 ; id'"),
    ("registry.test/shop/app:-1", "the tag '-1'"),
    ("registry.test/shop/app:" + "x" * 129, "the tag 'xxx"),
    ("registry.test/sh op/app:1", "the repository 'sh op/app'"),
    ("registry.test/shop//app:1", "the repository 'shop//app'"),
    ("registry.test/shop/-app:1", "the repository 'shop/-app'"),
    ("docker://registry.test/shop/app:1", "the registry 'docker:' is not HOST[:PORT]"),
    ("reg_istry.test/shop/app:1", "the registry 'reg_istry.test'"),
    ("registry.test:http/shop/app:1", "the registry 'registry.test:http'"),
    ("registry.test/shop/app@", "the digest after @ is empty"),
    ("registry.test/" + "a" * 300 + ":1", "(316 characters) is not an image reference: the name "
     "is longer than 255 characters"),
    ("a-" * 50_000 + "!", "(100001 characters) is not an image reference"),
])
def test_what_the_kubelet_could_not_pull_is_denied_naming_the_part(image: str,
                                                                    words: str) -> None:
    asked: list[ImageReference] = []

    def record(ref: ImageReference) -> Decision:
        asked.append(ref)
        return _decision(True)

    response = admit(_pod_with(image), record, fail_open=True)["response"]
    assert response["allowed"] is False and asked == []  # no server is asked about it
    message = response["status"]["message"]
    assert "containers[0] 'app' image" in message and words in message, message
    assert len(message) < 2000


def test_references_are_read_as_docker_reads_them() -> None:
    asked: list[str] = []

    def record(ref: ImageReference) -> Decision:
        asked.append(str(ref))
        return _decision(True)

    for image in ("nginx", "library/nginx:1.25", "registry.test:5000/shop/app:1.0",
                  "localhost/app:1", "[::1]:5000/shop/app:1", "registry.test/shop/a__b--c.d:V1_x",
                  f"registry.test/shop/app:1.0@sha256:{'ab' * 32}", "Registry.Test/shop/app:1.0",
                  "index.docker.io/nginx:1", "index.docker.io/bitnami/redis:7"):
        assert admit(_pod_with(image), record)["response"]["allowed"] is True, image
    assert asked == ["docker.io/library/nginx", "docker.io/library/nginx:1.25",
                     "registry.test:5000/shop/app:1.0", "localhost/app:1",
                     "[::1]:5000/shop/app:1", "registry.test/shop/a__b--c.d:V1_x",
                     f"registry.test/shop/app:1.0@sha256:{'ab' * 32}",
                     "registry.test/shop/app:1.0",  # DNS names are not case-sensitive
                     "docker.io/library/nginx:1", "docker.io/bitnami/redis:7"]


# --- the cache ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _decision(allowed: bool, signed_at: dt.datetime | None = None) -> Decision:
    stamp = GoTime.from_datetime(signed_at).format() if signed_at else None
    verdict = StageVerdict("static-tested", "targets/static-tested",
                           "passed" if allowed else "missing", signed_at=stamp)
    return Decision("registry.test/shop/app:1.0", "sha256:" + "0" * 64, allowed,
                    [] if allowed else ["stage static-tested is missing"], [verdict], 1, "")


def test_the_cache_is_bounded_in_size_least_recently_used_first() -> None:
    clock = Clock()
    cache = DecisionCache(max_entries=3, ttl=60, clock=clock)
    for i in range(3):
        cache.put(f"img{i}", Outcome(_decision(True)))
    assert cache.get("img0") is not None  # img1 is now the least recently used
    cache.put("img3", Outcome(_decision(True)))
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get("img1") is None
    assert all(cache.get(k) is not None for k in ("img0", "img2", "img3"))


def test_the_cache_expires_decisions_and_keeps_errors_briefly() -> None:
    clock = Clock()
    wall = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    cache = DecisionCache(max_entries=10, ttl=30, error_ttl=60, max_age=dt.timedelta(days=7),
                          clock=clock, wall=lambda: wall)
    cache.put("allowed", Outcome(_decision(True, wall - dt.timedelta(days=1))))
    cache.put("denied", Outcome(_decision(False)))
    cache.put("error", Outcome(None, "connection refused", unavailable=True))
    # an allowed decision whose stage turns stale in 5 s lives 5 s, not 30
    cache.put("nearly-stale", Outcome(_decision(
        True, wall - dt.timedelta(days=7) + dt.timedelta(seconds=5))))
    assert cache.error_ttl == 10.0  # capped, whatever was asked
    clock.now += 4.9
    assert all(cache.get(k) is not None for k in ("allowed", "denied", "error", "nearly-stale"))
    clock.now += 0.2
    assert cache.get("nearly-stale") is None
    clock.now += 5
    assert cache.get("error") is None and cache.get("allowed") is not None
    clock.now += 20
    assert cache.get("allowed") is None and cache.get("denied") is None
    off = DecisionCache(max_entries=0, clock=clock)
    off.put("x", Outcome(_decision(True)))
    assert off.get("x") is None and len(off) == 0


@pytest.mark.parametrize("ttl", ["nan", "inf", "-1"])
def test_a_cache_lifetime_that_never_ends_is_refused(ttl: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="finite"):
        DecisionCache(ttl=float(ttl))
    with pytest.raises(ValueError, match="finite"):
        DecisionCache(error_ttl=float(ttl))
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("unused")
    for option in ("--cache-ttl", "--error-cache-ttl"):
        code = main(["webhook", "--policy", str(tmp_path / "policy.yaml"),
                     "--tls-cert", str(tmp_path / "tls.crt"),
                     "--tls-key", str(tmp_path / "tls.key"), option, ttl])
        assert code == 1
        assert "must be finite numbers of seconds" in capsys.readouterr().err



def test_an_unusable_registry_ca_stops_the_webhook_at_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("unused")
    (tmp_path / "not-pem.crt").write_text("not a certificate")
    for ca, needle in (("missing.crt", "cannot read the CA file"),
                       ("not-pem.crt", "holds no usable PEM certificate")):
        code = main(["webhook", "--policy", str(tmp_path / "policy.yaml"),
                     "--tls-cert", str(tmp_path / "tls.crt"),
                     "--tls-key", str(tmp_path / "tls.key"),
                     "--registry-ca", str(tmp_path / ca)])
        err = capsys.readouterr().err
        assert code == 1 and "--registry-ca" in err and needle in err

def test_reviews_reuse_cached_decisions_until_they_expire(world: World) -> None:
    for image in ("registry.test/shop/report:3.0", "registry.test/shop/migrate:1.0"):
        world.release(image)
    clock = Clock()
    cache = DecisionCache(max_entries=8, ttl=30, max_age=world.policy.deliver.max_age,
                          clock=clock)
    body = _body("cronjob.json")
    assert admit(body, world.decide, cache=cache)["response"]["allowed"] is True
    assert world.decisions == 2
    assert admit(body, world.decide, cache=cache)["response"]["allowed"] is True
    assert world.decisions == 2 and cache.hits == 2
    clock.now += 31
    assert admit(body, world.decide, cache=cache)["response"]["allowed"] is True
    assert world.decisions == 4


# --- HTTP: the ASGI layer ---------------------------------------------------------------------


def _app(decide_image: Any, **kwargs: Any) -> WebhookApp:
    return WebhookApp(decide_image, **kwargs)


def _json(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
    status, headers, body = status_headers_body
    assert headers["content-type"] == "application/json"
    assert b"Traceback" not in body
    return status, json.loads(body)


def test_reviews_over_the_asgi_app(world: World) -> None:
    for image in ("registry.test/shop/app:1.0", "registry.test/shop/proxy:2.1",
                  "registry.test/shop/migrate:1.0"):
        world.release(image)
    app = _app(world.decide, mutate=True)
    try:
        status, review = _json(call(app, "POST", "/mutate", _body("deployment.json"),
                                    {"content-type": "application/json"}))
        assert status == 200 and review["response"]["allowed"] is True
        patch = json.loads(base64.b64decode(review["response"]["patch"]))
        assert [op["path"] for op in patch] == [
            "/spec/template/spec/initContainers/0/image",
            "/spec/template/spec/containers/0/image",
            "/spec/template/spec/containers/1/image"]
        status, review = _json(call(app, "POST", "/validate", _body("deployment.json")))
        assert status == 200 and "patch" not in review["response"]
        assert _json(call(app, "GET", "/healthz")) == (200, {"status": "ok"})
    finally:
        app.close()


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 400, "not an array"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
     400, "admissionReviewVersions: [v1]"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}', 400, "is not AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', 400, "no request"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {'
     b'"kind": {"kind": "Pod"}, "operation": "CREATE", "object": {}}}', 400, "request.uid"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {'
     b'"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": null}}', 400,
     "request.object must be an object"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
])
def test_what_is_not_an_admission_review_gets_a_4xx(body: bytes, status: int,
                                                     words: str) -> None:
    app = _app(lambda ref: pytest.fail("nothing to decide"))
    try:
        got, error = _json(call(app, "POST", "/validate", body))
        assert got == status and words in error["error"], error
    finally:
        app.close()


def test_wrong_endpoints_methods_types_and_sizes() -> None:
    app = _app(lambda ref: pytest.fail("nothing to decide"), max_body=4096)
    body = _body("pod.json")
    try:
        assert _json(call(app, "POST", "/mutate", body))[0] == 404  # validate mode only
        assert _json(call(app, "POST", "/", body))[0] == 404
        assert _json(call(app, "GET", "/validate"))[0] == 405
        assert _json(call(app, "POST", "/healthz", b""))[0] == 405
        assert _json(call(app, "POST", "/validate", body, {"content-type": "text/plain"}))[0] \
            == 415
        status, error = _json(call(app, "POST", "/validate", body,
                                   {"content-length": str(len(body))}))
        assert status == 413 and "over the limit of 4096 bytes" in error["error"]
        status, error = _json(call(app, "POST", "/validate", body))  # no length: counted
        assert status == 413
        assert _json(call(app, "POST", "/validate", b"{}", {"content-length": "x"}))[0] == 400
    finally:
        app.close()


def test_a_failure_after_the_review_is_read_denies_it_rather_than_a_4xx() -> None:
    app = _app(lambda ref: _decision(True))
    app.close()  # a review arriving while the server shuts down: no worker to decide
    status, review = _json(call(app, "POST", "/validate", _body("pod.json")))
    assert status == 200
    response = _response(review, "1f5c3a2e-6d7b-4c8a-9e0f-1a2b3c4d5e6f")
    assert response["allowed"] is False and "patch" not in response
    assert "internal error (RuntimeError)" in response["status"]["message"]


def test_one_decision_for_concurrent_reviews_and_a_deadline() -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow(ref: ImageReference) -> Decision:
        calls.append(str(ref))
        release.wait(10)
        return _decision(True)

    review = json.loads(_body("pod.json"))
    del review["request"]["object"]["spec"]["initContainers"]
    review["request"]["object"]["spec"]["containers"] = \
        review["request"]["object"]["spec"]["containers"][:1]
    body = json.dumps(review).encode()

    async def both(app: WebhookApp) -> list[dict[str, Any]]:
        pending = asyncio.gather(app.review(body, mutate=False), app.review(body, mutate=False))
        await asyncio.sleep(0.05)
        release.set()
        return list(await pending)

    app = _app(slow)  # no cache: only the in-flight decision is shared
    try:
        answers = asyncio.run(both(app))
        assert [a["response"]["allowed"] for a in answers] == [True, True]
        assert calls == ["registry.test/shop/app:1.0"]
    finally:
        app.close()
    release.clear()
    late = _app(slow, timeout=0.2)
    try:
        response = asyncio.run(late.review(body, mutate=False))["response"]
        assert response["allowed"] is False
        assert "no decision within 0.2 s" in response["status"]["message"]
    finally:
        release.set()
        late.close()


def test_parse_review_reads_the_fixtures() -> None:
    pod = parse_review(_body("pod.json"))
    assert (pod.kind, pod.operation, pod.namespace, pod.name) == \
        ("Pod", "CREATE", "shop", "shop-5c7d8f9b6d-")
    assert [(c.field, c.pointer) for c in pod.images] == [
        ("initContainers", "/spec/initContainers/0/image"),
        ("containers", "/spec/containers/0/image"),
        ("containers", "/spec/containers/1/image")]
    cron = parse_review(_body("cronjob.json"))
    assert [c.image for c in cron.images] == ["registry.test/shop/migrate:1.0",
                                              "registry.test/shop/report:3.0"]
    with pytest.raises(AdmissionError):
        parse_review(b"")
