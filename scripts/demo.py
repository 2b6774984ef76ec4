"""The main job until the sandbox exists: countersign's trust server and the real notary 0.7.

The notary CLI, unchanged, runs the paper's trust operations against
``countersign serve``; countersign verifies what it serves, signs with keys
notary made, and refuses a tampered file; the reference notary-server accepts a
repository countersign made. Every step checks its own outcome and the demo stops
at the first that differs, with exit status 1. Everything runs on loopback with
fresh TLS material and is stopped at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "interop"), str(ROOT / "tests" / "support")]  # harness

from _countersign import CountersignServer  # noqa: E402
from _notary import (  # noqa: E402
    PASSPHRASE_ENV,
    NotaryCLI,
    ReferenceNotary,
    make_delegation_key,
    parse_list_output,
)
from _tufhttp import create_repository, fetch_repository, post_update  # noqa: E402

from countersign.keystore import EnvPassphrases, KeyStore  # noqa: E402
from countersign.tuf import ROOT as ROOT_ROLE  # noqa: E402
from countersign.tuf import TARGETS, FileMeta, Metadata, Root, Targets  # noqa: E402

GUN = "localhost:5000/test/trusttest"
COUNTERSIGN = str(Path(sys.executable).parent / "countersign")
_counter = itertools.count(1)


class DemoFailure(Exception):
    pass


def step(title: str, action: Callable[[], str]) -> None:
    start = time.monotonic()
    print(f"[{next(_counter)}] {title}", flush=True)
    outcome = action()
    print(f"    ok ({time.monotonic() - start:.1f}s): {outcome}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


def countersign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False,
                          env={"PATH": "/usr/bin:/bin", **PASSPHRASE_ENV})


def run(work: Path) -> None:
    server = CountersignServer(work / "countersign")
    reference = ReferenceNotary(work / "reference")
    payload = work / "manifest.json"
    payload.write_bytes(json.dumps({"schemaVersion": 2, "layers": []}).encode())
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()

    def start() -> str:
        server.start()
        reference.start()
        return (f"countersign serve at {server.url} (SQLite, built-in signer); the reference "
                f"notary-server at {reference.url} for comparison")

    step("start countersign serve and the reference notary-server on loopback", start)
    try:
        _scenario(server, work, payload, digest)
        _interop(reference, work)
    finally:
        server.stop()
        reference.stop()
        expect(not server.running() and not reference.running(), "a server did not stop")
        print("[-] servers stopped", flush=True)


def _interop(reference: ReferenceNotary, work: Path) -> None:
    def created_by_countersign() -> str:
        gun = "localhost:5000/test/made-by-countersign"
        create_repository(reference, gun, b'{"schemaVersion":2}', client_snapshot=False)
        listed = parse_list_output(NotaryCLI(work / "reference-reader", reference.url,
                                             reference.ca_path).run_ok("list", gun).stdout)
        expect(set(listed) == {"latest", "v1.0", "odd<&>name"}, f"notary list: {listed}")
        return ("a repository countersign made (root certificate, RSA delegation) is accepted "
                "by the reference notary-server and listed by notary")

    step("the reference notary-server accepts what countersign writes", created_by_countersign)


def _scenario(server: CountersignServer, work: Path, payload: Path, digest: str) -> None:
    admin = NotaryCLI(work / "admin", server.url, server.ca_path)
    stage = NotaryCLI(work / "stage", server.url, server.ca_path)

    def no_trust() -> str:
        result = admin.run("list", GUN)
        expect(result.returncode != 0 and "does not have trust data" in result.stdout,
               f"notary list of an empty GUN: {result}")
        return "notary: " + result.stdout.strip().splitlines()[-1]

    step("a GUN with no trust data is refused", no_trust)

    def publish() -> str:
        admin.run_ok("init", GUN)
        admin.run_ok("add", GUN, "v1", str(payload))
        admin.run_ok("key", "rotate", GUN, "snapshot", "-r")
        admin.run_ok("publish", GUN)
        listed = parse_list_output(admin.run_ok("list", GUN).stdout)
        expect(listed.get("v1", ("",))[0] == digest, f"notary list: {listed}")
        return f"notary signed v1 = sha256:{digest[:16]}..., the server holds the snapshot key"

    step("notary init, add, publish (server-managed snapshot)", publish)

    keys = make_delegation_key(work / "keys", "static-tested")

    def delegate() -> str:
        admin.run_ok("delegation", "add", GUN, "targets/static-tested", str(keys.cert_path),
                     "--all-paths")
        admin.run_ok("publish", GUN)
        stage.run_ok("key", "import", str(keys.key_path), "--role", "targets/static-tested")
        stage.run_ok("add", GUN, "build-1", str(payload), "-r", "targets/static-tested")
        stage.run_ok("publish", GUN)
        return "the static-tested stage signed build-1 from its own trust dir with its own key"

    step("a stage delegation with its own key (paper, Figure 9)", delegate)

    def verify_bytes() -> str:
        files = fetch_repository(server, GUN)
        for role, data in files.items():
            expect(Metadata.from_bytes(data, role=role).to_bytes() == data,
                   f"{role}.json is not rewritten byte for byte")
        return f"{len(files)} files parsed and rewritten byte for byte: {', '.join(sorted(files))}"

    step("countersign reads every file the server serves, byte for byte", verify_bytes)

    def verify_cache() -> str:
        stage.run_ok("list", GUN, "-r", "targets/static-tested")
        result = countersign("metadata", "verify", str(stage.metadata_dir(GUN)), "--gun", GUN)
        expect(result.returncode == 0, f"countersign metadata verify: {result.stderr}")
        return result.stdout.strip().splitlines()[0]

    step("countersign verifies notary's trust-dir cache: certificates, signatures, hashes",
         verify_cache)

    def notary_keys() -> str:
        result = countersign("key", "list", "--trust-dir", str(admin.trust_dir), "--json")
        expect(result.returncode == 0, f"countersign key list: {result.stderr}")
        roles = sorted(k["role"] for k in json.loads(result.stdout))
        expect(roles == ["root", "targets"], f"keys: {roles}")
        return "countersign lists notary's keys: " + ", ".join(roles)

    step("countersign reads the keys notary made", notary_keys)

    def countersign_signs() -> str:
        store = KeyStore(admin.trust_dir, EnvPassphrases(PASSPHRASE_ENV))
        files = fetch_repository(server, GUN)
        targets = Metadata.from_bytes(files[TARGETS], Targets)
        root = Metadata.from_bytes(files[ROOT_ROLE], Root)
        keys, _ = root.signed.role_keys(TARGETS)
        public = next(iter(keys.values()))
        private = store.get(public.canonical_key_id, role=TARGETS, gun=GUN).key
        entries = dict(targets.signed.targets)
        entries["v2"] = FileMeta.for_bytes(payload.read_bytes(), algorithms=("sha256",))
        new = Metadata(replace(targets.signed.bump(role=TARGETS), targets=entries))
        status, body = post_update(server, GUN, {TARGETS: new.sign(private, public).to_bytes()})
        expect(status == 200, f"the reference server refused countersign's targets: {body!r}")
        fresh = NotaryCLI(work / "reader", server.url, server.ca_path)
        listed = parse_list_output(fresh.run_ok("list", GUN).stdout)
        expect(listed.get("v2", ("",))[0] == digest, f"notary list: {listed}")
        return "signed v2 with notary's targets key; the server accepted it, notary lists it"

    step("countersign signs with the key notary made; the server accepts; notary lists",
         countersign_signs)

    def tamper() -> str:
        directory = work / "tampered"
        for role, data in fetch_repository(server, GUN).items():
            path = directory / f"{role}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.replace(b'"length":', b'"length": ', 1)
                             if role == "targets/static-tested" else data)
        result = countersign("metadata", "verify", str(directory), "--gun", GUN)
        expect(result.returncode == 1, f"tampered repository accepted: {result.stdout}")
        return "refused: " + result.stderr.strip().splitlines()[0].removeprefix(
            "countersign: error: ")

    step("a delegation file altered by one byte is refused", tamper)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="countersign-demo-") as tmp:
        try:
            run(Path(tmp))
        except DemoFailure as exc:
            print(f"DEMO FAILED: {exc}", file=sys.stderr)
            return 1
    print("demo complete: every step checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
