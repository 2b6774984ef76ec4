"""The content-trust scenario, replayed step by step on the sandbox.

Every action is a countersign command run in this process through the CLI's
own entry point (:func:`countersign.cli.main.main`), shown as a user would type
it; each step then checks its own outcome and raises :class:`StepFailed`
(which step, what was expected, what happened) at the first difference. Each
run works on a fresh repository and fresh trust dirs under
``SANDBOX/demo/RUN``, one per key holder, so runs never depend on each other.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import secrets
import shlex
import sys
import time
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from countersign.assure.evidence import load_and_check
from countersign.cli.main import main
from countersign.cli.trust import repository_for
from countersign.client.repository import PendingUpdate
from countersign.errors import CountersignError
from countersign.registry.client import RegistryClient
from countersign.registry.layout import OCILayout
from countersign.registry.oci import parse_manifest
from countersign.sandbox import image as images
from countersign.sandbox.services import Sandbox
from countersign.tuf import PublicKey

TAG = "1.0"
STAGES = ("static-tested", "dynamic-tested", "fuzz-tested")
CHECK_OF = {"static-tested": ("static", "sarif", "{max_severity: medium}"),
            "dynamic-tested": ("dynamic", "json", "{max_severity: medium}"),
            "fuzz-tested": ("fuzz", "junit", "{max_failures: 0}")}
PASSPHRASE_VARIABLES = ("COUNTERSIGN_ROOT_PASSPHRASE", "COUNTERSIGN_TARGETS_PASSPHRASE",
                        "COUNTERSIGN_SNAPSHOT_PASSPHRASE", "COUNTERSIGN_DELEGATION_PASSPHRASE")
#: variables that would point the demo's commands elsewhere than its own trust dirs
FOREIGN_VARIABLES = ("COUNTERSIGN_SERVER", "COUNTERSIGN_TLS_CA", "COUNTERSIGN_TRUST_DIR")

SAMPLE_APP = {
    "app/service.py": b'''"""A tiny greeting service, the sandbox's sample application."""

import json
import random
import subprocess


def request_id() -> str:
    return "%08x" % random.getrandbits(32)


def greeting(name: str) -> str:
    return json.dumps({"hello": name[:64], "request": request_id()})


def busybox_version() -> str:
    done = subprocess.run(["/bin/busybox"], capture_output=True, check=False)
    return done.stdout.decode("utf-8", "replace").splitlines()[0]
''',
    "app/www/index.html": b"<!doctype html>\n<title>countersign sandbox</title>\n"
                          b"<h1>countersign sandbox sample service</h1>\n",
}


class StepFailed(CountersignError):
    """A step's outcome differed from what the scenario expects."""

    def __init__(self, number: int, title: str, expected: str, got: str) -> None:
        super().__init__(f"step {number} ({title}) failed\n  expected: {expected}\n"
                         f"  got:      {got}")
        self.number, self.title, self.expected, self.got = number, title, expected, got


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except ValueError:
            return None


@contextlib.contextmanager
def _environment(values: dict[str, str], remove: Sequence[str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, *remove)}
    os.environ.update(values)
    for name in remove:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Demo:
    """One run of the scenario against a running sandbox."""

    def __init__(self, sandbox: Sandbox, out: TextIO) -> None:
        self.sandbox = sandbox
        self.out = out
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        self.run_dir = sandbox.root / "demo" / run_id
        self.ref = f"{sandbox.registry}/demo/app-{run_id}:{TAG}"
        self.gun = self.ref.rsplit(":", 1)[0]
        self.ca = str(sandbox.ca)
        self.server = sandbox.trust_url
        self.number = 0
        self.title = ""
        self.digest = ""
        self.size = 0

    # --- output and checks ------------------------------------------------------------

    def say(self, text: str = "") -> None:
        text = text.replace(str(self.run_dir), "$RUN").replace(str(self.sandbox.root), "$SANDBOX")
        self.out.write(text + "\n")
        self.out.flush()

    def expect(self, condition: bool, expected: str, got: str) -> None:
        if not condition:
            raise StepFailed(self.number, self.title, expected, got)

    def cs(self, *argv: str, show: int = 6) -> Outcome:
        """Run ``countersign ARGV`` through the CLI's entry point; show it and its output."""
        self.say(f"  $ countersign {shlex.join(argv)}")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
        result = Outcome(code, out.getvalue(), err.getvalue())
        lines = [line for line in (result.out + result.err).splitlines() if line.strip()]
        for line in lines[:show]:
            self.say(f"      {line}")
        if show and len(lines) > show:
            self.say(f"      ... ({len(lines) - show} more lines)")
        return result

    def ok(self, *argv: str, show: int = 6) -> Outcome:
        result = self.cs(*argv, show=show)
        self.expect(result.code == 0, f"countersign {argv[0]} to succeed (exit 0)",
                    f"exit {result.code}: {(result.err or result.out).strip()[-500:]}")
        return result

    def trust(self, holder: str) -> list[str]:
        return ["--trust-dir", str(self.run_dir / holder)]

    @property
    def server_args(self) -> list[str]:
        return ["--server", self.server, "--tls-ca", self.ca]

    @property
    def registry_args(self) -> list[str]:
        return ["--registry-ca", self.ca]

    # --- the run ----------------------------------------------------------------------

    def run(self) -> float:
        """All steps; the seconds they took. Raises :class:`StepFailed`."""
        start = time.monotonic()
        self.run_dir.mkdir(parents=True)
        self.run_dir.chmod(0o700)
        secret = secrets.token_urlsafe(24)  # this run's key passphrases, never shown
        with _environment(dict.fromkeys(PASSPHRASE_VARIABLES, secret), FOREIGN_VARIABLES):
            self.out.write(f"SANDBOX={self.sandbox.root}\n")
            self.say(f"trust server {self.server}, registry {self.sandbox.registry}, "
                     f"image {self.ref}")
            self.out.write(f"RUN=$SANDBOX/{self.run_dir.relative_to(self.sandbox.root)}"
                           "   (this run's trust dirs, one per key holder, and files)\n")
            steps: list[tuple[str, Callable[[], str]]] = [
                ("an unsigned image is refused (Figure 5)", self.step_unsigned),
                ("push and sign, then a verified pull (Figure 6)", self.step_signed),
                ("a layer altered on the registry's disk is refused (Figure 7)",
                 self.step_tampered),
                ("static, dynamic and fuzz stages sign with their own keys (Figure 9)",
                 self.step_stages),
                ("the gate allows the image", self.step_gate_allows),
                ("a stage's signature is revoked: the gate denies, naming it",
                 self.step_gate_denies),
                ("a threshold-2 role: one key holder is not enough, two are",
                 self.step_threshold),
            ]
            for number, (title, action) in enumerate(steps, 1):
                self.number, self.title = number, title
                self.say()
                self.say(f"[{number}/{len(steps)}] {title}")
                began = time.monotonic()
                try:
                    summary = action()
                except StepFailed:
                    raise
                except CountersignError as exc:
                    raise StepFailed(number, title, "the step to run",
                                     exc.render()) from None
                except Exception as exc:  # the demo names the step whatever went wrong
                    raise StepFailed(number, title, "the step to run",
                                     f"{type(exc).__name__}: {exc}") from exc
                self.say(f"  ok ({time.monotonic() - began:.1f}s): {summary}")
        return time.monotonic() - start

    def build_image(self) -> images.BuiltImage:
        debs = images.fetch_debs(images.DEFAULT_PACKAGES, self.sandbox.root / "debs")
        built = images.build_from_debs(
            debs, SAMPLE_APP, self.run_dir / "image", TAG,
            config={"Cmd": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/app/www"],
                    "Env": ["PATH=/bin"], "WorkingDir": "/app",
                    "ExposedPorts": {"8080/tcp": {}}})
        self.say(f"  built {built.digest} from {', '.join(d.name for d in debs)} and the "
                 f"sample app: {len(built.layers)} layers")
        return built

    def step_unsigned(self) -> str:
        built = self.build_image()
        self.digest, self.size = built.digest, built.size
        self.ok("push", f"oci:{built.layout}:{TAG}", self.ref, *self.registry_args)
        dest = self.run_dir / "pulled-unsigned"
        result = self.cs("pull", self.ref, "--to", f"oci:{dest}", *self.server_args,
                         *self.registry_args, *self.trust("consumer"))
        refused = any(text in result.err for text in ("no trust data", "does not have trust data"))
        self.expect(result.code == 1 and refused and self.gun in result.err,
                    f"the pull refused with exit 1: no trust data for {self.gun}",
                    f"exit {result.code}: {result.err.strip()[-300:]}")
        self.expect(not dest.exists(), "nothing written to the destination",
                    f"{dest} exists")
        return "refused: no trust data; nothing written"

    def step_signed(self) -> str:
        self.ok("trust", "init", self.gun, *self.server_args, *self.trust("owner"))
        pushed = self.ok("push", f"oci:{self.run_dir / 'image'}:{TAG}", self.ref, "--sign",
                         "--json", *self.server_args, *self.registry_args,
                         *self.trust("owner"), show=0).json() or {}
        self.say(f"      pushed {pushed.get('digest')}, signed in "
                 f"{', '.join(pushed.get('roles', []))}")
        self.expect(pushed.get("signed") is True and pushed.get("digest") == self.digest,
                    f"{self.digest} pushed and signed", json.dumps(pushed))
        dest = self.run_dir / "pulled"
        pulled = self.ok("pull", self.ref, "--to", f"oci:{dest}", "--json", *self.server_args,
                         *self.registry_args, *self.trust("consumer"), show=0).json() or {}
        self.say(f"      pulled {pulled.get('digest')} into {pulled.get('destination')}, "
                 f"verified: {pulled.get('verified')}, signed in {pulled.get('signed_by')}")
        self.expect(pulled.get("verified") is True and pulled.get("digest") == self.digest,
                    f"a verified pull of {self.digest}", json.dumps(pulled))
        on_disk = OCILayout(dest).resolve(TAG)
        self.expect(on_disk.digest == self.digest, f"{dest} holding {self.digest}",
                    on_disk.digest)
        return f"signed in {', '.join(pushed.get('roles', []))}; pulled {self.digest[:19]}, " \
               f"verified, signed by {pulled.get('signed_by')}"

    def step_tampered(self) -> str:
        layout = OCILayout(self.run_dir / "image")
        manifest = parse_manifest(layout.read_blob(self.digest, self.size))
        victim = max(manifest.layers, key=lambda d: d.size)
        path = self.sandbox.blob_path(str(victim.digest))
        original = path.read_bytes()
        altered = bytearray(original)
        altered[len(altered) // 2] ^= 0x01
        path.write_bytes(bytes(altered))
        self.say(f"  altered one bit of layer {victim.digest} in the registry's storage:")
        self.say(f"      {path}")
        dest = self.run_dir / "pulled-tampered"
        try:
            result = self.cs("pull", self.ref, "--to", f"oci:{dest}", *self.server_args,
                             *self.registry_args, *self.trust("consumer"))
        finally:
            path.write_bytes(original)
            self.say("  restored the layer's original bytes")
        self.expect(result.code == 1 and str(victim.digest) in result.err,
                    f"the pull refused with exit 1, naming {victim.digest}",
                    f"exit {result.code}: {result.err.strip()[-300:]}")
        leftovers = [p.name for p in self.run_dir.glob(".pulled-tampered*")]
        self.expect(not dest.exists() and not leftovers, "nothing written to the destination",
                    f"{dest} exists" if dest.exists() else f"staging left: {leftovers}")
        return f"refused naming {victim.digest[:19]}...; nothing written"

    def policy(self) -> Path:
        stages = []
        for name in STAGES:
            check, fmt, passes = CHECK_OF[name]
            command = json.dumps([sys.executable, "-m", "countersign.sandbox.checks", check,
                                  "{image}", "{report}", "--registry-ca", self.ca])
            stages.append(f"""  - name: {name}
    role: targets/{name}
    key: {name}
    check:
      command: {command}
      format: {fmt}
      timeout: 5m
    pass: {passes}""")
        path = self.run_dir / "policy.yaml"
        path.write_text(f"""# written by countersign sandbox demo
version: 1
trust:
  server: {self.server}
  tls_ca: {json.dumps(self.ca)}
stages:
{chr(10).join(stages)}
deliver:
  require: [{", ".join(STAGES)}]
  min_distinct_signers: 3
  max_age: 1d
""")
        return path

    def step_stages(self) -> str:
        keys = self.run_dir / "keys"
        keys.mkdir()
        for name in STAGES:
            self.ok("trust", "key", "generate", name, "--dir", str(keys), *self.trust(name))
            self.ok("trust", "signer", "add", name, self.gun, "--key", str(keys / f"{name}.pub"),
                    *self.server_args, *self.trust("owner"))
        policy = self.policy()
        self.say(f"  wrote the policy {policy}")
        for name in STAGES:
            result = self.ok("assure", self.ref, "--policy", str(policy), "--stage", name,
                             "--json", *self.registry_args, *self.trust(name), show=0)
            records = result.json() or [{}]
            record = records[0]
            self.expect(record.get("passed") is True and record.get("digest") == self.digest,
                        f"{name} passed and signed {self.digest}", json.dumps(record))
            self.say(f"      {name}: passed; signed {record['digest'][:19]}... into "
                     f"targets/{name}, evidence {str(record.get('evidence'))[:19]}...")
            self.say(f"      evidence, checked against {name}.pub: "
                     + self.evidence(name, str(record.get("evidence"))))
        signers, _ = self.inspect()
        self.expect(set(STAGES) <= set(signers), f"{TAG} signed by {', '.join(STAGES)}",
                    f"signers {signers}")
        return f"{TAG} signed by {', '.join(sorted(signers))}, each with its own key"

    def evidence(self, stage: str, digest: str) -> str:
        """What the stage's signed in-toto evidence says, verified with the stage's key."""
        pem = (self.run_dir / "keys" / f"{stage}.pub").read_bytes()
        key = PublicKey.from_crypto(load_pem_public_key(pem))
        repository = self.gun.split("/", 1)[1]
        predicate = load_and_check(RegistryClient(self.sandbox.registry, ca_file=self.ca),
                                   repository, digest, subject_hex=self.digest[7:],
                                   stage=stage, keys=[key])
        results = predicate.get("results", {})
        tool = results.get("tool", {})
        findings, tests = results.get("findings", {}), results.get("tests", {})
        counted = {k: v for k, v in findings.get("counted", {}).items() if v}
        if results.get("format") == "junit":
            what = f"{tests.get('run')} tests, {tests.get('failures')} failed"
        else:
            what = f"{findings.get('total')} findings (" + (", ".join(
                f"{v} {k}" for k, v in counted.items()) or "none") + ")"
        return f"{tool.get('name')} {tool.get('version') or ''}".rstrip() + f": {what}"

    def inspect(self) -> tuple[list[str], dict[str, Any]]:
        """Who signed the tag, as a consumer's trust dir sees it."""
        found = self.ok("trust", "inspect", f"{self.gun}:{TAG}", "--json", *self.server_args,
                        *self.trust("consumer"), show=0).json() or [{}]
        record = found[0] if isinstance(found, list) and found else {}
        tags = record.get("SignedTags") or [{}]
        signers = list(tags[0].get("Signers", []))
        self.say(f"      {TAG} {str(tags[0].get('Digest'))[:12]}... signed by: "
                 f"{', '.join(signers) or 'nobody'}")
        for signer in record.get("Signers", []):
            self.say(f"      signer {signer['Name']:<18} threshold {signer['Threshold']}, "
                     f"{len(signer['Keys'])} key(s)")
        return signers, record

    def gate(self) -> tuple[Outcome, dict[str, Any]]:
        result = self.cs("verify", self.ref, "--policy", str(self.run_dir / "policy.yaml"),
                         "--json", *self.registry_args, *self.trust("gate"), show=0)
        record = result.json()
        if not isinstance(record, dict):
            raise StepFailed(self.number, self.title, "a decision record",
                             f"exit {result.code}: {(result.err or result.out).strip()[-300:]}")
        self.say(f"      {'ALLOW' if record['allowed'] else 'DENY'} {record['reference']} "
                 f"{record['digest']}")
        for stage in record["stages"]:
            self.say(f"      {stage['stage']:<16} {stage['state']}"
                     + (f": {stage['reason']}" if stage["reason"] else ""))
        for reason in record["reasons"]:
            self.say(f"      reason: {reason}")
        return result, record

    def step_gate_allows(self) -> str:
        result, record = self.gate()
        self.expect(result.code == 0 and record["allowed"] and record["distinct_signers"] == 3,
                    "allow (exit 0), 3 distinct signers",
                    f"exit {result.code}, allowed={record['allowed']}, "
                    f"signers={record['distinct_signers']}, reasons={record['reasons']}")
        return f"allowed {record['digest'][:19]}...: 3 stages passed, 3 distinct keys"

    def step_gate_denies(self) -> str:
        self.ok("trust", "revoke", self.ref, "--role", "targets/dynamic-tested",
                *self.server_args, *self.trust("dynamic-tested"))
        result, record = self.gate()
        states = {s["stage"]: s["state"] for s in record["stages"]}
        self.expect(result.code == 1 and not record["allowed"]
                    and any("dynamic-tested" in r for r in record["reasons"])
                    and states.get("dynamic-tested") == "missing",
                    "deny (exit 1) naming dynamic-tested",
                    f"exit {result.code}, allowed={record['allowed']}, "
                    f"reasons={record['reasons']}")
        return "denied: dynamic-tested is missing"

    def step_threshold(self) -> str:
        keys = self.run_dir / "keys"
        for holder in ("alice", "bob"):
            self.ok("trust", "key", "generate", holder, "--dir", str(keys), *self.trust(holder))
        self.ok("trust", "signer", "add", "release-approvers", self.gun,
                "--key", str(keys / "alice.pub"), "--key", str(keys / "bob.pub"),
                "--threshold", "2", *self.server_args, *self.trust("owner"))
        pending = self.run_dir / "approval.json"
        self.ok("trust", "pending", "create", f"{self.gun}:{TAG}", "--digest", self.digest,
                "--size", str(self.size), "--role", "release-approvers", "--output",
                str(pending), *self.server_args, *self.trust("alice"))
        shown = self.pending_show(pending, "alice")
        self.expect(shown.get("signatures") == 1 and shown.get("ready") is False,
                    "1 of 2 signatures, not ready", json.dumps(shown))
        early = self.cs("trust", "pending", "publish", str(pending), *self.server_args,
                        *self.trust("alice"))
        self.expect(early.code == 1 and "1 of the 2" in early.err,
                    "publishing with one signature refused by the client (exit 1)",
                    f"exit {early.code}: {early.err.strip()[-300:]}")
        refusal = self.server_refuses(pending)
        self.ok("trust", "pending", "sign", str(pending), *self.server_args, *self.trust("bob"))
        shown = self.pending_show(pending, "bob")
        self.expect(shown.get("signatures") == 2 and shown.get("ready") is True,
                    "2 of 2 signatures, ready", json.dumps(shown))
        self.ok("trust", "pending", "publish", str(pending), *self.server_args,
                *self.trust("bob"))
        signers, record = self.inspect()
        role: dict[str, Any] = next((s for s in record.get("Signers", [])
                     if s.get("Name") == "release-approvers"), {})
        self.expect("release-approvers" in signers and role.get("Threshold") == 2,
                    "release-approvers (threshold 2) among the signers of the tag",
                    f"signers {signers}, role {role}")
        return f"1 of 2 refused (client, and server: {refusal}); 2 of 2 published and trusted"

    def pending_show(self, pending: Path, holder: str) -> dict[str, Any]:
        shown = self.ok("trust", "pending", "show", str(pending), "--json", *self.server_args,
                        *self.trust(holder), show=0).json() or {}
        self.say(f"      {shown.get('role')}: {shown.get('signatures')} of "
                 f"{shown.get('threshold')} signatures, "
                 f"{'ready' if shown.get('ready') else 'not ready'}")
        return dict(shown)

    def server_refuses(self, pending: Path) -> str:
        """Send the one-signature update to the server anyway: it must refuse it too."""
        update = PendingUpdate.from_json(pending.read_bytes())
        repo = repository_for(Namespace(server=self.server, tls_ca=self.ca,
                                        trust_dir=self.run_dir / "alice"), self.gun)
        self.say("  (library) POST the one-signature release-approvers to the server directly")
        try:
            repo.remote.publish({update.role: update.metadata.to_bytes()})
        except CountersignError as exc:
            self.say(f"      refused: {exc.message}")
            return exc.message.removeprefix("update: ").split(":")[0][:60]
        raise StepFailed(self.number, self.title, "the server to refuse a role short of its "
                         "threshold", "the server accepted it")


def run(sandbox: Sandbox, out: TextIO, *, keep_up: bool = False) -> float:
    """Bring the sandbox up if needed, replay the scenario, and take down what was started."""
    started = sandbox.up()
    if started:
        out.write(f"started {', '.join(started)} in {sandbox.root}\n")
    try:
        return Demo(sandbox, out).run()
    finally:
        if started and not keep_up:
            # the commands' HTTP clients sit in reference cycles with their connections
            # open, and the trust server's graceful stop would wait for those: collect them
            gc.collect()
            stopped = sandbox.down(started)
            out.write("\nstopped " + ", ".join(f"{n} ({s})" for n, s in stopped) + "\n")
