"""Benchmark the gate's decision and the admission webhook, on real services on loopback.

    .venv/bin/python benchmarks/bench_gate.py            # about two minutes

It starts a throwaway CNCF distribution registry (``tests/support/registryserver.py``,
plain HTTP) and ``countersign serve`` (``tests/interop/_countersign.py``, TLS, SQLite),
pushes one small image, releases it, and delegates **5 stages** to 5 roles with 5
distinct ECDSA keys; each stage runs its check (a copy of a clean report), stores its
in-toto/DSSE evidence as an OCI referrer in the registry, and signs the digest. The
policy requires all 5 and 5 distinct signers. Then, for that image:

1. ``gate cold``: a fresh :class:`PolicyGate` (new TLS connections, an empty trust
   dir, so the root is fetched and trusted on first use, every role downloaded) and
   one decision, with the process's memory of verified metadata and evidence emptied
   first, as in a new process; ``--cold`` times. Imports are already done (a process
   start adds the CLI's start-up, measured separately in bench_pull.py).
2. ``gate warm``: one :class:`PolicyGate` deciding ``--warm`` times in a row, no
   decision cache: each decision fetches and checks the timestamp, checks the other
   roles against the trust dir by hash, floors and expiry, and each stage's signing
   time; metadata and evidence verified before in the process are not verified again.
3. ``gate warm, nothing remembered``: as 2, but the memory of verified metadata and
   evidence is emptied before each decision, so every signature is checked and the 5
   referrers and envelopes are fetched (concurrently) and verified: the first decision
   after a change.
4. ``webhook`` (``countersign webhook`` as a process, TLS): sequential AdmissionReview
   POSTs of a Pod with that image on one keep-alive connection, with the decision cache
   (the default) and without it (``--cache-size 0``, so every review runs the gate).
5. ``webhook req/s``: ``--concurrency`` keep-alive connections, one POST in flight each,
   for ``--duration`` seconds, cached and uncached.

Prints a Markdown table and writes ``benchmarks/results/gate-<date>.json``. Goal: a
warm decision under 50 ms per image.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _extra in (HERE, REPO / "tests" / "support", REPO / "tests" / "interop"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import loadgen  # noqa: E402
from _countersign import CountersignServer  # noqa: E402
from _webhook import CountersignWebhook  # noqa: E402
from images import write_layout  # noqa: E402
from registryserver import DockerRegistry, find_binary  # noqa: E402

from countersign.assure.evidence import PROCESS_EVIDENCE  # noqa: E402
from countersign.assure.gate import assure_stage  # noqa: E402
from countersign.assure.policy import load_policy  # noqa: E402
from countersign.assure.webhook_server import PolicyGate  # noqa: E402
from countersign.client.cache import MetadataCache  # noqa: E402
from countersign.client.http import HTTPSFetcher  # noqa: E402
from countersign.client.remote import NotaryRemote  # noqa: E402
from countersign.client.repository import TrustRepository  # noqa: E402
from countersign.client.verified import PROCESS_MEMO  # noqa: E402
from countersign.keystore import KeyStore, StaticPassphrases  # noqa: E402
from countersign.registry.client import RegistryClient  # noqa: E402
from countersign.registry.transfer import ImageReference, Location, push  # noqa: E402
from countersign.tuf import PrivateKey  # noqa: E402

STAGES = tuple(f"stage-{i}" for i in range(1, 6))
GOAL_MS = 50.0
ADMISSION = REPO / "tests" / "assure" / "data" / "admission" / "pod.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 2), "p90": at(0.90),
            "p99": at(0.99), "max": round(ordered[-1], 2),
            "mean": round(statistics.fmean(ordered), 2)}


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def expect(condition: object, what: object) -> None:
    """A check of the set-up or of an answer, kept under ``python -O`` too."""
    if not condition:
        raise RuntimeError(f"unexpected: {what}")


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    git = shutil.which("git")
    commit = subprocess.run([git, "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() if git else None
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": commit,
            "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_start": os.getloadavg(),
            "versions": {d: _version(d) for d in ("countersign", "httpx", "uvicorn",
                                                  "cryptography")}}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
        self.registry: DockerRegistry | None = None
        self.server: CountersignServer | None = None

    # --- set-up ------------------------------------------------------------------
    def setup(self) -> None:
        binary = find_binary()
        if binary is None:
            raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
        self.registry = DockerRegistry(binary, base_dir=self.work).start()
        self.server = CountersignServer(self.work / "server").start()
        self.image = f"{self.registry.registry}/bench/gate:1.0"
        ref = ImageReference.parse(self.image)
        self.policy_path = self.write_policy()
        self.policy = load_policy(self.policy_path)
        client = RegistryClient(self.registry.registry, insecure=True)
        layout = self.work / "layout"
        write_layout(layout, "1.0", [{"app/main.py": b"print('gate bench')\n"}])
        pushed = push(Location("oci", layout, "1.0"), client, ref)
        self.digest = pushed.digest
        owner = self.repo("owner", ref.gun)
        owner.init()
        owner.sign_tag("1.0", pushed.file_meta())
        keys = {name: PrivateKey.generate() for name in STAGES}
        for name in STAGES:
            owner.add_signer(f"targets/{name}", [keys[name].public_key])
        for name in STAGES:
            party = self.repo(name, ref.gun)
            party.keystore.add(keys[name], role=name)
            result = assure_stage(self.policy.stage(name), ref, client=client, repo=party,
                                  key=keys[name])
            if not (result.run.passed and result.evidence):
                raise RuntimeError(f"{name} did not pass: {result.run.evaluation.reasons}")
        client.close()
        check = self.gate().__call__(ref)
        if not check.allowed or check.distinct_signers != 5:
            raise RuntimeError(f"the gate does not allow the image: {check.reasons}")
        self.ref = ref

    def repo(self, who: str, gun: str) -> TrustRepository:
        expect(self.server is not None, "the trust server is not started")
        assert self.server is not None  # noqa: S101 - narrows the type
        directory = self.work / "parties" / who
        fetcher = HTTPSFetcher(self.server.url, ca_file=self.server.ca_path)
        return TrustRepository(gun, NotaryRemote(fetcher, gun), MetadataCache(directory, gun),
                               KeyStore(directory, StaticPassphrases("bench-passphrase")))

    def write_policy(self) -> Path:
        expect(self.server is not None, "the trust server is not started")
        assert self.server is not None  # noqa: S101 - narrows the type
        report = self.work / "clean.sarif"
        report.write_text('{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"clean",'
                          '"rules":[]}},"results":[]}]}')
        copy = (f"[{sys.executable!r}, '-c', 'import shutil,sys; shutil.copy(sys.argv[1], "
                f"sys.argv[2])', {str(report)!r}, '{{report}}']")
        stages = "".join(f"  - name: {n}\n    role: targets/{n}\n    key: {n}\n"
                         f"    check: {{command: {copy}, format: sarif}}\n"
                         "    pass: {max_severity: medium}\n" for n in STAGES)
        path = self.work / "policy.yaml"
        path.write_text(f"version: 1\ntrust: {{server: {self.server.url}, tls_ca: "
                        f"{self.server.ca_path}}}\nstages:\n{stages}deliver: {{require: "
                        f"[{', '.join(STAGES)}], min_distinct_signers: 5, max_age: 7d}}\n")
        return path

    def gate(self, trust_dir: Path | None = None) -> PolicyGate:
        directory = trust_dir or self.work / "gate-trust"
        return PolicyGate(self.policy, directory, registry_insecure=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.registry is not None:
            self.registry.stop()
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # --- the gate in this process -------------------------------------------------
    @staticmethod
    def forget() -> None:
        """Empty the process's memory of verified metadata and evidence."""
        PROCESS_MEMO.clear()
        PROCESS_EVIDENCE.clear()

    def gate_cold(self) -> dict[str, Any]:
        samples = []
        for i in range(self.args.cold):
            self.forget()
            started = time.perf_counter()
            gate = self.gate(self.work / "cold" / str(i))
            decision = gate(self.ref)
            samples.append((time.perf_counter() - started) * 1000)
            gate.close()
            expect(decision.allowed, decision.reasons)
        return percentiles(samples)

    def gate_warm(self, *, remember: bool = True) -> dict[str, Any]:
        gate = self.gate()
        for _ in range(3):
            gate(self.ref)
        samples = []
        for _ in range(self.args.warm):
            if not remember:
                self.forget()
            started = time.perf_counter()
            decision = gate(self.ref)
            samples.append((time.perf_counter() - started) * 1000)
            expect(decision.allowed, decision.reasons)
        gate.close()
        return percentiles(samples)

    # --- the webhook process ------------------------------------------------------
    def review_body(self) -> bytes:
        review = json.loads(ADMISSION.read_bytes())
        spec = review["request"]["object"]["spec"]
        del spec["initContainers"]
        spec["containers"] = spec["containers"][:1]
        spec["containers"][0]["image"] = self.image
        return json.dumps(review).encode()

    def webhook(self, name: str, extra: Sequence[str]) -> CountersignWebhook:
        return CountersignWebhook(self.work / name, self.policy_path,
                                  extra_args=["--registry-insecure", *extra]).start()

    def webhook_sequential(self, hook: CountersignWebhook, n: int) -> dict[str, Any]:
        body = self.review_body()
        conn = hook.connection()
        try:
            first_started = time.perf_counter()
            status, review = hook.post("/validate", body, conn=conn)
            first = (time.perf_counter() - first_started) * 1000
            expect(status == 200 and review["response"]["allowed"], review)
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                status, review = hook.post("/validate", body, conn=conn)
                samples.append((time.perf_counter() - started) * 1000)
                expect(status == 200 and review["response"]["allowed"], review)
        finally:
            conn.close()
        return {"first_ms": round(first, 2), **percentiles(samples)}

    def webhook_load(self, hook: CountersignWebhook, concurrency: int,
                     duration: float) -> dict[str, Any]:
        return asyncio.run(_post_load(hook, self.review_body(), concurrency, duration))

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {"settings": vars(self.args) | {"out": str(self.args.out)},
                               "image": {"reference": self.image, "digest": self.digest,
                                         "stages": len(STAGES), "distinct_keys": 5},
                               "machine": machine()}
        log("gate cold ...")
        out["gate_cold"] = self.gate_cold()
        log("gate warm ...")
        out["gate_warm"] = self.gate_warm()
        log("gate warm, nothing remembered ...")
        out["gate_warm_unremembered"] = self.gate_warm(remember=False)
        for label, extra in (("cached", []), ("uncached", ["--cache-size", "0"])):
            log(f"webhook {label} ...")
            hook = self.webhook(f"webhook-{label}", extra)
            try:
                n = self.args.warm if label == "uncached" else self.args.warm * 5
                out[f"webhook_{label}_sequential"] = self.webhook_sequential(hook, n)
                out[f"webhook_{label}_load"] = self.webhook_load(
                    hook, self.args.concurrency, self.args.duration)
                out[f"webhook_{label}_load"]["server_log_tail"] = hook.logs()[-500:]
            finally:
                hook.stop()
        out["machine"]["loadavg_end"] = os.getloadavg()
        return out


async def _post_load(hook: CountersignWebhook, body: bytes, concurrency: int,
                     duration: float) -> dict[str, Any]:
    tls = loadgen.client_tls(str(hook.ca_path))
    conns = [loadgen.Connection("127.0.0.1", hook.port, tls) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    histogram = loadgen.Histogram()
    statuses: dict[int, int] = {}
    errors: list[str] = []
    clock: Callable[[], int] = time.perf_counter_ns
    deadline = time.monotonic() + duration
    headers = [("Content-Type", "application/json")]

    async def worker(conn: loadgen.Connection) -> None:
        while time.monotonic() < deadline:
            started = clock()
            try:
                response = await conn.request("POST", "/validate", body, headers)
            except (OSError, loadgen.ProtocolError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                await conn.open()
                continue
            histogram.record((clock() - started) // 1000)
            ok = response.status == 200 and b'"allowed":true' in response.body
            key = response.status if ok else -response.status
            statuses[key] = statuses.get(key, 0) + 1

    began = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - began
    for conn in conns:
        conn.close()
    return {"concurrency": concurrency, "duration_s": round(elapsed, 2),
            "requests": histogram.total, "req_per_s": round(histogram.total / elapsed, 1),
            "latency_ms": histogram.summary_ms(), "statuses": statuses,
            "errors": len(errors), "error_samples": errors[:5]}


def table(result: dict[str, Any]) -> str:
    def row(name: str, cell: dict[str, Any], note: str = "") -> str:
        return (f"| {name} | {cell['n']} | {cell['p50']:.1f} | {cell['p99']:.1f} | "
                f"{cell['max']:.1f} | {note} |")

    lines = ["| measurement | n | p50 ms | p99 ms | max ms | note |",
             "| --- | --- | --- | --- | --- | --- |",
             row("gate, cold (fresh gate, empty trust dir)", result["gate_cold"]),
             row("gate, warm (no decision cache)", result["gate_warm"],
                 "goal < 50 ms: " + ("met" if result["gate_warm"]["p50"] < GOAL_MS
                                     else "missed")),
             row("gate, warm, nothing remembered", result["gate_warm_unremembered"],
                 "every signature checked, evidence fetched"),
             row("webhook POST, cached decision", result["webhook_cached_sequential"],
                 f"first review {result['webhook_cached_sequential']['first_ms']:.1f} ms"),
             row("webhook POST, no cache", result["webhook_uncached_sequential"])]
    lines += ["", "| webhook load | connections | req/s | p50 ms | p99 ms | non-allowed |",
              "| --- | --- | --- | --- | --- | --- |"]
    for label in ("cached", "uncached"):
        load = result[f"webhook_{label}_load"]
        bad = sum(n for s, n in load["statuses"].items() if int(s) < 0) + load["errors"]
        lines.append(f"| {label} | {load['concurrency']} | {load['req_per_s']:.0f} | "
                     f"{load['latency_ms']['p50']:.1f} | {load['latency_ms']['p99']:.1f} | "
                     f"{bad} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=30, help="cold decisions (default 30)")
    parser.add_argument("--warm", type=int, default=200,
                        help="warm decisions, and uncached webhook POSTs (default 200; "
                        "cached POSTs: 5 times as many)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="keep-alive connections for req/s (default 16)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per req/s run (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 cold, 20 warm, 2 s")
    parser.add_argument("--out", type=Path, help="result file (default "
                        "benchmarks/results/gate-<date>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.cold, args.warm, args.duration = 5, 20, 2.0
    args.cold = max(1, min(args.cold, 500))
    args.warm = max(1, min(args.warm, 5000))
    args.concurrency = max(1, min(args.concurrency, 256))
    args.duration = max(0.5, min(args.duration, 120.0))
    bench = Bench(args)
    try:
        log("setting up: registry, countersign serve, 5 stages ...")
        bench.setup()
        result = bench.run()
    finally:
        bench.stop()
    out = args.out or HERE / "results" / f"gate-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(table(result))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
