"""``countersign webhook`` as a process over HTTPS, deciding on ``countersign serve`` and the
real docker-registry: an image whose two stages signed is allowed and pinned to its digest,
one whose stage did not sign is denied naming the stage, and a bad request gets a 4xx."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _countersign import COUNTERSIGN
from _webhook import CountersignWebhook
from images import write_layout

pytestmark = pytest.mark.interop
ADMISSION = Path(__file__).parents[1] / "assure" / "data" / "admission"
PASSPHRASES = {"COUNTERSIGN_ROOT_PASSPHRASE": "hook-root-pass",
               "COUNTERSIGN_TARGETS_PASSPHRASE": "hook-targets-pass",
               "COUNTERSIGN_DELEGATION_PASSPHRASE": "hook-delegation-pass"}
STAGES = ("static-tested", "fuzz-tested")


def _cs(trust_dir: Path, *args: str) -> str:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin')}",
           "HOME": str(trust_dir), "COUNTERSIGN_TRUST_DIR": str(trust_dir), **PASSPHRASES}
    result = subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True, env=env,
                            timeout=180, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _policy(tmp: Path, server: Any) -> Path:
    (tmp / "clean.sarif").write_text('{"version":"2.1.0","runs":[{"tool":{"driver":'
                                     '{"name":"clean","rules":[]}},"results":[]}]}')
    (tmp / "fuzz.xml").write_text('<testsuite name="fuzz" tests="9" failures="0" errors="0">'
                                  '</testsuite>')
    copy = f"[{sys.executable!r}, '-c', 'import shutil,sys; shutil.copy(sys.argv[1], sys.argv[2])'"
    path = tmp / "policy.yaml"
    path.write_text(f"""version: 1
trust: {{server: {server.url}, tls_ca: {server.ca_path}}}
stages:
  - name: static-tested
    role: targets/static-tested
    key: static-tested
    check: {{command: {copy}, {str(tmp / 'clean.sarif')!r}, '{{report}}'], format: sarif}}
    pass: {{max_severity: medium}}
  - name: fuzz-tested
    role: targets/fuzz-tested
    key: fuzz-tested
    check: {{command: {copy}, {str(tmp / 'fuzz.xml')!r}, '{{report}}'], format: junit}}
    pass: {{max_failures: 0}}
deliver: {{require: [static-tested, fuzz-tested], min_distinct_signers: 2, max_age: 7d}}
""")
    return path


def _release(tmp: Path, server: Any, ref: str, stages: tuple[str, ...]) -> None:
    gun, _, tag = ref.rpartition(":")
    name = gun.rsplit("/", 1)[1]
    env_server = ["--server", server.url, "--tls-ca", str(server.ca_path)]
    owner = tmp / "owner"
    layout = tmp / f"img-{name}"
    write_layout(layout, tag, [{"app/main.py": f"print({ref!r})\n".encode()}])
    _cs(owner, "trust", "init", gun, *env_server)
    _cs(owner, "push", f"oci:{layout}:{tag}", ref, "--sign", "--registry-insecure", *env_server)
    for stage in STAGES:
        _cs(owner, "trust", "signer", "add", stage, gun, "--key", str(tmp / f"{stage}.pub"),
            *env_server)
    for stage in stages:
        _cs(tmp / stage, "assure", ref, "--policy", str(tmp / "policy.yaml"), "--stage", stage,
            "--registry-insecure")


def _pod(images: dict[str, str]) -> bytes:
    review = json.loads((ADMISSION / "pod.json").read_bytes())
    spec = review["request"]["object"]["spec"]
    for container in spec["initContainers"] + spec["containers"]:
        container["image"] = images[container["name"]]
    return json.dumps(review).encode()


def test_the_webhook_over_https(countersign_server: Any, docker_registry: Any,
                                tmp_path: Path) -> None:
    registry = docker_registry.registry
    app, proxy, migrate = (f"{registry}/hook/app:1.0", f"{registry}/hook/proxy:2.1",
                           f"{registry}/hook/migrate:1.0")
    policy = _policy(tmp_path, countersign_server)
    for stage in STAGES:
        _cs(tmp_path / stage, "trust", "key", "generate", stage, "--dir", str(tmp_path))
    _release(tmp_path, countersign_server, app, STAGES)
    _release(tmp_path, countersign_server, migrate, STAGES)
    _release(tmp_path, countersign_server, proxy, ("static-tested",))
    with CountersignWebhook(tmp_path / "webhook", policy,
                            extra_args=["--mode", "mutate", "--registry-insecure"]) as hook:
        assert hook.get("/healthz") == (200, {"status": "ok"})
        conn = hook.connection()
        try:
            # proxy's fuzz stage never signed: denied, naming it
            status, review = hook.post("/validate", _pod({"app": app, "proxy": proxy,
                                                          "migrate": migrate}), conn=conn)
            assert status == 200, review
            response = review["response"]
            assert response["uid"] == "1f5c3a2e-6d7b-4c8a-9e0f-1a2b3c4d5e6f"
            assert response["allowed"] is False
            message = response["status"]["message"]
            assert f"containers[1] 'proxy' image {proxy}" in message
            assert "stage fuzz-tested is missing" in message and "1 of 3 images" in message
            # the same pod with the cleared image twice: allowed and pinned
            status, review = hook.post("/mutate", _pod({"app": app, "proxy": app,
                                                        "migrate": migrate}), conn=conn)
            response = review["response"]
            assert status == 200 and response["allowed"] is True, response
            patch = json.loads(base64.b64decode(response["patch"]))
            pinned = {op["path"]: op["value"] for op in patch}
            assert set(pinned) == {"/spec/initContainers/0/image", "/spec/containers/0/image",
                                   "/spec/containers/1/image"}
            assert pinned["/spec/containers/0/image"].startswith(f"{app}@sha256:")
            assert pinned["/spec/containers/1/image"] == pinned["/spec/containers/0/image"]
            # a request that is not an AdmissionReview, on the same connection
            status, error = hook.post("/validate", b'{"kind": "Pod"}', conn=conn)
            assert status == 400 and "is not AdmissionReview" in error["error"]
        finally:
            conn.close()
        assert "Traceback" not in hook.logs()
