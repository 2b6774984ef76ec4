"""Benchmark ``countersign serve`` beside the reference notary-server 0.7 on this machine.

One command runs everything and takes about five minutes:

    .venv/bin/python benchmarks/bench_server.py

The servers run one after another (never at the same time), each over HTTPS
on loopback with a throwaway P-256 certificate and logging at ``error``:

- ``reference``: Debian's notary-server 0.7 with notary-signer (gRPC, mutual
  TLS), both on memory storage (the Debian build has no sqlite driver);
- ``countersign-sqlite``: ``countersign serve`` on a SQLite file;
- ``countersign-sqlite-2w``: the same with ``--workers 2``;
- ``countersign-postgres``: the same on a throwaway PostgreSQL server
  (tests/support/pgserver.py), when PostgreSQL is installed.

The rows, the same for every server:

1. ``GET timestamp.json`` and 2. ``GET targets.json`` of a GUN with 10
   targets, 16 and 64 keep-alive connections, ``--get-duration`` seconds per
   run, ``--reps`` runs each (median reported), with ``benchmarks/loadgen.py``
   (``--procs`` client processes) and, when installed, ``wrk -t2``;
3. update POSTs: each POST a new targets.json version signed by the client's
   targets key (the server holds the snapshot key, so it signs snapshot and
   timestamp), one GUN in sequence on one keep-alive connection, and 4 GUNs in
   parallel (one connection each); bodies are signed before the clock starts;
4. ``notary publish`` wall time: of 1 target staged with ``notary addhash`` on an
   existing repository, and of 1,000 targets staged by writing the changelist
   files directly on a freshly initialised and published repository.

Prints a Markdown table and writes ``benchmarks/results/server-<date>.json``.
The servers are started with the project's test harness (tests/interop); this
script needs nothing from outside the repository at run time except the
reference binaries (``notary``, ``notary-server``, ``notary-signer``), and
optionally ``wrk`` and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _extra in (HERE, REPO / "tests" / "support", REPO / "tests" / "interop"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import _countersign  # noqa: E402
import _notary  # noqa: E402
import _tufhttp  # noqa: E402
import loadgen  # noqa: E402
import pgserver  # noqa: E402
from _common import (  # noqa: E402
    TICK,
    command,
    machine_meta,
    machine_ticks,
    process_cpu,
    process_stat,
    version,
)

from countersign.tuf import TARGETS, FileMeta, Metadata, Targets  # noqa: E402

SERVERS = ("reference", "countersign-sqlite", "countersign-sqlite-2w", "countersign-postgres")
TOOLS = ("loadgen", "wrk")
GET_GUN = "bench/get-ten"
SEQ_GUN = "bench/post-seq"
PAR_GUNS = tuple(f"bench/post-par-{i}" for i in range(4))
PAYLOAD = b"countersign benchmark payload\n"
CLI_ONE_GUN = "bench/cli-one"
CLI_THOUSAND_GUN = "bench/cli-thousand-{}"
GOAL_RATIO = 1.5


# ------------------------------------------------------------------ settings


ROWS = ("get", "post", "cli")


@dataclass
class Settings:
    servers: tuple[str, ...] = SERVERS
    tools: tuple[str, ...] = TOOLS
    rows: tuple[str, ...] = ROWS
    get_duration: float = 5.0
    reps: int = 2
    procs: int = 2
    wrk_threads: int = 2
    post_duration: float = 4.0
    cli_one_reps: int = 10
    cli_thousand_reps: int = 3
    out: Path | None = None
    keep: bool = False


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated subset of {','.join(ROWS)} (default: all)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help="GET load tools: loadgen and/or wrk (wrk is skipped if absent)")
    parser.add_argument("--get-duration", type=float, default=5.0,
                        help="seconds per GET run (default 5; each row runs --reps times)")
    parser.add_argument("--reps", type=int, default=2, help="runs per GET row (default 2)")
    parser.add_argument("--procs", type=int, default=2,
                        help="loadgen client processes (default 2)")
    parser.add_argument("--post-duration", type=float, default=4.0,
                        help="seconds per POST row (default 4)")
    parser.add_argument("--cli-reps", type=int, default=10,
                        help="timed 1-target publishes (default 10)")
    parser.add_argument("--cli-thousand-reps", type=int, default=3,
                        help="timed 1,000-target publishes, each on a new GUN (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 s GET runs, 1 rep, 1 s POSTs, 2 and 1 publishes")
    parser.add_argument("--out", type=Path, help="result file (default "
                        "benchmarks/results/server-<date>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    servers = tuple(s for s in args.servers.split(",") if s)
    tools = tuple(t for t in args.tools.split(",") if t)
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    for name in tools:
        if name not in TOOLS:
            parser.error(f"unknown tool {name!r}")
    rows = tuple(r for r in args.rows.split(",") if r)
    for name in rows:
        if name not in ROWS:
            parser.error(f"unknown row kind {name!r}")
    s = Settings(servers=servers, tools=tools, rows=rows, get_duration=min(args.get_duration, 60.0),
                 reps=max(1, min(args.reps, 5)), procs=args.procs,
                 post_duration=min(args.post_duration, 60.0),
                 cli_one_reps=max(1, min(args.cli_reps, 50)),
                 cli_thousand_reps=max(1, min(args.cli_thousand_reps, 10)),
                 out=args.out, keep=args.keep)
    if args.quick:
        s = replace(s, get_duration=1.0, reps=1, post_duration=1.0, cli_one_reps=2,
                    cli_thousand_reps=1)
    return s


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------- processes and CPU


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        return process_cpu(pid)
    except OSError:
        return 0.0


def _cpu_ns(pids: Sequence[int]) -> int:
    """CPU nanoseconds of every thread of ``pids`` so far (schedstat: finer than ticks)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(task.read_text().split()[0])
    return total


def _descendants(roots: Sequence[int]) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = process_stat(int(entry.name))
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
    found = list(roots)
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
        found += sorted(frontier)
    return found


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    parts = machine_ticks()
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / TICK, total / TICK


@contextlib.contextmanager
def cpu_meter(pids: Callable[[], Sequence[int]], into: dict[str, Any]) -> Iterator[None]:
    """Server CPU seconds (its processes and their children) and machine load over a block."""
    watched = _descendants(pids())
    before = {pid: _proc_cpu(pid) for pid in watched}
    busy0, total0 = _machine_busy()
    wall0 = time.monotonic()
    yield
    wall = time.monotonic() - wall0
    used = sum(max(0.0, _proc_cpu(pid) - before[pid]) for pid in watched)
    busy1, total1 = _machine_busy()
    into["server_cpu_s"] = round(used, 3)
    into["server_cpu_pct"] = round(100.0 * used / wall, 1) if wall else None
    into["machine_busy_pct"] = (round(100.0 * (busy1 - busy0) / (total1 - total0), 1)
                                if total1 > total0 else None)


# ------------------------------------------------------------- the servers


@dataclass
class Running:
    name: str
    server: Any  # ReferenceNotary or CountersignServer: url, ca_path, cli(), pids()
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    notes: dict[str, Any] = field(default_factory=dict)


def start_server(name: str, workdir: Path) -> Running:
    if name == "reference":
        ref = _notary.ReferenceNotary(workdir / "reference", log_level="error").start()
        return Running(name, ref, ref.pids, ref.stop, {
            "storage": "memory (Debian's notary-server has no sqlite driver)",
            "signer": "notary-signer over gRPC + mutual TLS, memory storage"})
    if name == "countersign-sqlite":
        cs = _countersign.CountersignServer(workdir / "cs-sqlite",
                                            extra_args=["--log-level", "error"]).start()
        return Running(name, cs, cs.pids, cs.stop, {"storage": f"SQLite file {cs.db}"})
    if name == "countersign-sqlite-2w":
        cs = _countersign.CountersignServer(
            workdir / "cs-sqlite-2w", extra_args=["--log-level", "error", "--workers", "2"]
        ).start()
        return Running(name, cs, cs.pids, cs.stop,
                       {"storage": f"SQLite file {cs.db}", "workers": 2})
    if name == "countersign-postgres":
        binaries = pgserver.find_binaries()
        if binaries is None:
            raise Skip(pgserver.missing_reason() or "PostgreSQL is not installed")
        try:
            # its own directory under $TMPDIR: the unprivileged postgres user must reach it
            pg = pgserver.PostgresServer(binaries).start()
        except pgserver.PostgresStartError as exc:
            raise Skip(f"PostgreSQL could not be started: {exc}") from exc
        try:
            url = pg.create_database("bench")
            cs = _countersign.CountersignServer(workdir / "cs-pg", db=url,
                                                extra_args=["--log-level", "error"]).start()
        except BaseException:
            pg.stop()
            raise

        def stop() -> None:
            try:
                cs.stop()
            finally:
                pg.stop()

        return Running(name, cs, lambda: [*cs.pids(), *([pg.pid] if pg.pid else [])], stop, {
            "storage": f"PostgreSQL ({binaries.version()}), fsync/synchronous_commit off",
            "cpu_includes": "countersign and every PostgreSQL process"})
    raise ValueError(name)


class Skip(Exception):
    """A server that cannot run here; the reason goes into the report."""


# ----------------------------------------------------------------- fixtures


_NINE = {f"v1.{i}": FileMeta.for_bytes(f"release v1.{i}\n".encode() * 40,
                                       algorithms=("sha256",)) for i in range(9)}


def _ten_targets(tag: str) -> dict[str, FileMeta]:
    """Nine fixed targets and ``latest``, whose content depends on ``tag``."""
    latest = FileMeta.for_bytes(f"{tag}: latest\n".encode() * 40, algorithms=("sha256",))
    return {"latest": latest, **_NINE}


def build_get_fixture(run: Running) -> dict[str, Any]:
    """GUN with 10 targets in targets.json (plus a delegation), server-held snapshot."""
    keys = _tufhttp.create_repository(run.server, GET_GUN, PAYLOAD, client_snapshot=False)
    current = Metadata.from_bytes(_tufhttp.fetch_repository(run.server, GET_GUN)[TARGETS],
                                  Targets)
    new = Metadata(replace(current.signed.bump(role=TARGETS), targets=_ten_targets("get")))
    status, body = _tufhttp.post_update(run.server, GET_GUN, {
        TARGETS: new.sign(keys[TARGETS], keys[TARGETS].public_key).to_bytes()})
    if status != 200:
        raise RuntimeError(f"{run.name}: 10-target update refused: {status} {body[:300]!r}")
    files = _tufhttp.fetch_repository(run.server, GET_GUN)
    return {"gun": GET_GUN, "sizes": {role: len(data) for role, data in files.items()},
            "targets_in_targets_json": len(Metadata.from_bytes(files[TARGETS],
                                                               Targets).signed.targets)}


@dataclass
class PostPlan:
    gun: str
    bodies: list[bytes]
    last_version: int


def build_post_plan(run: Running, gun: str, count: int) -> PostPlan:
    """A repository (server-held snapshot) and ``count`` signed next targets versions."""
    keys = _tufhttp.create_repository(run.server, gun, PAYLOAD, client_snapshot=False)
    key = keys[TARGETS]
    current = Metadata.from_bytes(_tufhttp.fetch_repository(run.server, gun)[TARGETS], Targets)
    signed = current.signed
    bodies = []
    for n in range(count):
        signed = replace(signed.bump(role=TARGETS), targets=_ten_targets(f"{gun}#{n}"))
        data = Metadata(signed).sign(key, key.public_key).to_bytes()
        body, headers = _tufhttp.multipart({TARGETS: data}, boundary=uuid.uuid4().hex)
        head = (f"POST /v2/{gun}/_trust/tuf/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"User-Agent: {loadgen.USER_AGENT}\r\nAccept: */*\r\n"
                f"Content-Type: {headers['Content-Type']}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        bodies.append(head + body)
    return PostPlan(gun, bodies, signed.version)


# ------------------------------------------------------------------ GET rows


def run_wrk(url: str, connections: int, duration: float, threads: int) -> dict[str, Any]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--latency", "--timeout", "5s", url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr[-500:]}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    pct = {m[1]: _wrk_time(m[2]) for m in re.finditer(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$",
                                                        out, re.M)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "tool": "wrk", "argv": argv, "connections": connections, "threads": threads,
        "requests": int(total[1]) if total else None,
        "req_per_s": float(rate[1]) if rate else None,
        "latency_ms": {"p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99")},
        "errors": (sum(int(x) for x in errors.groups()) if errors else 0)
        + (int(non2xx[1]) if non2xx else 0),
        "raw": out[-1500:],
    }


def _wrk_time(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m[2]]
    return round(float(m[1]) * scale, 3)


def _get_urls(run: Running) -> dict[str, str]:
    base = f"{run.server.url}/v2/{GET_GUN}/_trust/tuf/"
    return {"timestamp.json": base + "timestamp.json", "targets.json": base + "targets.json"}


def warm_up(run: Running, s: Settings) -> None:
    """Not recorded: caches filled, code paths taken, before the first measured run."""
    for url in _get_urls(run).values():
        loadgen.run_load([url], connections=16, duration=1.0, procs=s.procs,
                         cafile=str(run.server.ca_path))


def get_run(run: Running, s: Settings, endpoint: str, conns: int, tool: str,
            rep: int) -> dict[str, Any]:
    url = _get_urls(run)[endpoint]
    record: dict[str, Any] = {"row": f"GET {endpoint}", "connections": conns, "tool": tool,
                              "rep": rep}
    with cpu_meter(run.pids, record):
        if tool == "loadgen":
            result = loadgen.run_load([url], connections=conns, duration=s.get_duration,
                                      procs=s.procs, cafile=str(run.server.ca_path))
        else:
            result = run_wrk(url, conns, s.get_duration, s.wrk_threads)
    record["result"] = result
    lat = result["latency_ms"]
    log(f"  {run.name} GET {endpoint} c{conns} {tool} rep{rep}: {result['req_per_s']} req/s "
        f"p50 {lat['p50']} p99 {lat['p99']} ms errors {result['errors']} "
        f"server CPU {record['server_cpu_pct']}%")
    return record


def get_rows(runs: Sequence[Running], s: Settings, tools: Sequence[str]
             ) -> dict[str, list[dict[str, Any]]]:
    """Every GET run, the servers taking turns run by run (the order reversed on odd reps),
    so that a slow drift of the shared machine does not favour one server."""
    out: dict[str, list[dict[str, Any]]] = {r.name: [] for r in runs}
    for run in runs:
        warm_up(run, s)
    for rep in range(s.reps):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for endpoint in ("timestamp.json", "targets.json"):
            for conns in (16, 64):
                for tool in tools:
                    for run in order:
                        out[run.name].append(get_run(run, s, endpoint, conns, tool, rep))
    return out


# ----------------------------------------------------------------- POST rows


async def _post_loop(conn: loadgen.Connection, plan: PostPlan, deadline: float,
                     tally: dict[str, Any], hist: loadgen.Histogram) -> int:
    sent = 0
    for raw in plan.bodies:
        if time.monotonic() >= deadline:
            break
        t0 = time.perf_counter_ns()
        response = await conn.send_raw(raw)
        hist.record((time.perf_counter_ns() - t0) // 1000)
        tally["status"][str(response.status)] = tally["status"].get(str(response.status), 0) + 1
        tally["sent"] += 1
        sent += 1
        if response.status != 200 and len(tally["samples"]) < 3:
            tally["samples"].append(response.body[:300].decode("utf-8", "replace"))
    conn.close()
    return sent


async def _post_run(url: str, ca: str, plans: Sequence[PostPlan], warmup: int,
                    duration: float) -> dict[str, Any]:
    target = loadgen.Target.parse(url)
    tls = loadgen.client_tls(ca)
    conns = [loadgen.Connection.for_target(target, tls) for _ in plans]
    await asyncio.gather(*(c.open() for c in conns))
    for conn, plan in zip(conns, plans, strict=True):  # untimed: first writes of each GUN
        for raw in plan.bodies[:warmup]:
            response = await conn.send_raw(raw)
            if response.status != 200:
                raise RuntimeError(f"warm-up POST refused: {response.status} {response.body!r}")
    timed = [replace(p, bodies=p.bodies[warmup:]) for p in plans]
    tally: dict[str, Any] = {"status": {}, "sent": 0, "samples": []}
    hist = loadgen.Histogram()
    began = time.monotonic()
    per_stream = await asyncio.gather(*(_post_loop(c, p, began + duration, tally, hist)
                                        for c, p in zip(conns, timed, strict=True)))
    elapsed = time.monotonic() - began
    ok = tally["status"].get("200", 0)
    return {"tool": "post", "streams": len(plans), "duration_s": round(elapsed, 3),
            "requests": tally["sent"], "ok": ok, "errors": tally["sent"] - ok,
            "req_per_s": round(ok / elapsed, 1) if elapsed else None,
            "latency_ms": hist.summary_ms(), "status": tally["status"],
            "error_samples": tally["samples"],
            "per_stream": list(per_stream),
            "exhausted": any(len(p.bodies) <= n for p, n in zip(timed, per_stream, strict=True))}


def post_rows(run: Running, s: Settings) -> list[dict[str, Any]]:
    warmup = 3
    seq_count = warmup + int(s.post_duration * 300) + 50
    par_count = warmup + int(s.post_duration * 150) + 50
    t0 = time.monotonic()
    plans_seq = [build_post_plan(run, SEQ_GUN, seq_count)]
    plans_par = [build_post_plan(run, gun, par_count) for gun in PAR_GUNS]
    log(f"  {run.name}: signed {seq_count + 4 * par_count} POST bodies in "
        f"{time.monotonic() - t0:.1f} s (not timed)")
    url = run.server.url + "/"
    ca = str(run.server.ca_path)
    runs = []
    for row, plans in (("POST update, 1 GUN sequential", plans_seq),
                       ("POST update, 4 GUNs parallel", plans_par)):
        record: dict[str, Any] = {"row": row, "connections": len(plans), "tool": "post",
                                  "rep": 0}
        with cpu_meter(run.pids, record):
            result = asyncio.run(_post_run(url, ca, plans, warmup, s.post_duration))
        record["result"] = result
        # the server must now serve the last version it acknowledged
        sent = result["per_stream"][0] + warmup
        status, _, body = run.server.get_tuf(plans[0].gun, TARGETS)
        served = Metadata.from_bytes(body, Targets).signed.version if status == 200 else None
        record["check"] = {"gun": plans[0].gun, "served_targets_version": served,
                           "expected_at_least": 1 + min(sent, len(plans[0].bodies))}
        runs.append(record)
        lat = result["latency_ms"]
        log(f"  {run.name} {row}: {result['req_per_s']} POST/s p50 {lat['p50']} "
            f"p99 {lat['p99']} ms errors {result['errors']} served v{served} "
            f"server CPU {record['server_cpu_pct']}%"
            + (" (ran out of pre-signed bodies: the run ended early)" if result["exhausted"]
               else ""))
    return runs


# ------------------------------------------------------------------ CLI rows


def _stage_thousand(cli: _notary.NotaryCLI, gun: str, count: int = 1000) -> None:
    """Write ``count`` target additions into the changelist, as ``notary addhash`` would."""
    directory = cli.changelist_dir(gun)
    directory.mkdir(parents=True, exist_ok=True)
    base = time.time_ns()
    for i in range(count):
        name = f"pkg-{i:04d}"
        digest = hashlib.sha256(f"{gun}/{name}".encode()).digest()
        meta = {"length": 1024 + i, "hashes": {"sha256": base64.b64encode(digest).decode()}}
        change = {"action": "create", "role": "targets", "type": "target", "path": name,
                  "data": base64.b64encode(json.dumps(meta, separators=(",", ":"))
                                           .encode()).decode()}
        (directory / f"{base + i:020d}_{uuid.uuid4()}.change").write_text(
            json.dumps(change, separators=(",", ":")))


def _timed(cli: _notary.NotaryCLI, *args: str, server: Sequence[int] = (),
           cpu: list[float] | None = None, client_cpu: list[float] | None = None) -> float:
    """Wall seconds of one notary command; with ``cpu``, appends the server's CPU
    milliseconds during it (its threads' schedstat), which the client waited for, and
    with ``client_cpu`` the notary process's own CPU milliseconds."""
    before = _cpu_ns(server)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cli.run_ok(*args, timeout=120)
    elapsed = time.perf_counter() - t0
    if cpu is not None:
        cpu.append((_cpu_ns(server) - before) / 1e6)
    if client_cpu is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu.append(1000.0 * (after.ru_utime + after.ru_stime
                                    - children.ru_utime - children.ru_stime))
    return elapsed


def cli_rows(run: Running, s: Settings, workdir: Path) -> list[dict[str, Any]]:
    cli = run.server.cli(workdir / f"{run.name}-trust", timeout=120)
    startup = [_timed(cli, "version") for _ in range(3)]
    cli.run_ok("init", CLI_ONE_GUN)
    cli.run_ok("publish", CLI_ONE_GUN)
    server = _descendants(run.pids())
    one: list[float] = []
    cpu: dict[str, list[float]] = {"one": [], "thousand": []}
    notary_cpu: dict[str, list[float]] = {"one": [], "thousand": []}
    for i in range(s.cli_one_reps):
        digest = hashlib.sha256(f"one-{i}".encode()).hexdigest()
        cli.run_ok("addhash", CLI_ONE_GUN, f"t-{i}", "16", "--sha256", digest)
        one.append(_timed(cli, "publish", CLI_ONE_GUN, server=server, cpu=cpu["one"],
                          client_cpu=notary_cpu["one"]))
    thousand = []
    listed = None
    for rep in range(s.cli_thousand_reps):
        gun = CLI_THOUSAND_GUN.format(rep)
        cli.run_ok("init", gun)
        cli.run_ok("publish", gun)
        _stage_thousand(cli, gun)
        thousand.append(_timed(cli, "publish", gun, server=server, cpu=cpu["thousand"],
                               client_cpu=notary_cpu["thousand"]))
        if rep == 0:
            listed = len(_notary.parse_list_output(cli.run_ok("list", gun).stdout))
    if listed != 1000:
        raise RuntimeError(f"{run.name}: notary list shows {listed} targets, not 1000")
    runs = []
    for row, samples, key in (("notary publish, 1 target", one, "one"),
                              ("notary publish, 1,000 targets", thousand, "thousand")):
        # what no server can take away: each publish's wall time less the server's CPU
        client_ms = [w * 1000.0 - c for w, c in zip(samples, cpu[key], strict=True)]
        ms = sorted(x * 1000.0 for x in samples)
        result = {"tool": "notary-cli", "samples_ms": [round(x, 2) for x in ms],
                  "requests": len(ms), "errors": 0,
                  "req_per_s": round(1000.0 * len(ms) / sum(ms), 2),
                  "latency_ms": {"p50": round(statistics.median(ms), 2),
                                 "p99": round(ms[-1], 2), "max": round(ms[-1], 2)},
                  "cli_process_start_ms": round(statistics.median(startup) * 1000, 2),
                  "server_cpu_ms": [round(x, 2) for x in cpu[key]],
                  "wall_less_server_cpu_ms_median": round(statistics.median(client_ms), 2),
                  "notary_process_cpu_ms": [round(x, 2) for x in notary_cpu[key]]}
        runs.append({"row": row, "connections": 1, "tool": "notary-cli", "rep": 0,
                     "result": result})
        log(f"  {run.name} {row}: median {result['latency_ms']['p50']} ms, "
            f"max {result['latency_ms']['max']} ms over {len(ms)}")
    return runs


# ------------------------------------------------------------------ summary


def summarise(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Median over reps for each (row, connections, tool)."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["row"], r["connections"], r["tool"]), []).append(r)
    out = {}
    for key, items in groups.items():
        rates = [i["result"]["req_per_s"] for i in items if i["result"]["req_per_s"]]
        p50s = [i["result"]["latency_ms"]["p50"] for i in items
                if i["result"]["latency_ms"].get("p50") is not None]
        p99s = [i["result"]["latency_ms"]["p99"] for i in items
                if i["result"]["latency_ms"].get("p99") is not None]
        cpu = [i["server_cpu_pct"] for i in items if i.get("server_cpu_pct") is not None]
        rate = statistics.median(rates) if rates else None
        out[key] = {
            "req_per_s": round(rate, 1) if rate else None,
            "p50_ms": round(statistics.median(p50s), 3) if p50s else None,
            "p99_ms": round(statistics.median(p99s), 3) if p99s else None,
            "runs": len(items), "req_per_s_each": rates,
            "spread_pct": (round(100.0 * (max(rates) - min(rates)) / rate, 1)
                           if rate and len(rates) > 1 else None),
            "server_cpu_pct": round(statistics.median(cpu), 1) if cpu else None,
            "errors": sum(i["result"].get("errors") or 0 for i in items),
        }
    return out


ROW_ORDER = ["GET timestamp.json", "GET targets.json", "POST update, 1 GUN sequential",
             "POST update, 4 GUNs parallel", "notary publish, 1 target",
             "notary publish, 1,000 targets"]


def comparison(summaries: dict[str, dict[tuple[str, int, str], dict[str, Any]]]
               ) -> list[dict[str, Any]]:
    ref = summaries.get("reference", {})
    keys = sorted({k for s in summaries.values() for k in s},
                  key=lambda k: (ROW_ORDER.index(k[0]) if k[0] in ROW_ORDER else 99, k[2], k[1]))
    table = []
    for key in keys:
        row: dict[str, Any] = {"row": key[0], "connections": key[1], "tool": key[2]}
        base = ref.get(key)
        for name, summ in summaries.items():
            cell = summ.get(key)
            row[name] = cell
            if name == "reference" or cell is None or base is None:
                continue
            ratio = (cell["req_per_s"] / base["req_per_s"]
                     if cell["req_per_s"] and base["req_per_s"] else None)
            p99_ok = (cell["p99_ms"] <= base["p99_ms"]
                      if cell["p99_ms"] is not None and base["p99_ms"] is not None else None)
            row[f"{name}_ratio"] = round(ratio, 2) if ratio else None
            row[f"{name}_p99_ratio"] = (round(cell["p99_ms"] / base["p99_ms"], 2)
                                        if cell["p99_ms"] and base["p99_ms"] else None)
            row[f"{name}_meets_goal"] = bool(ratio and ratio >= GOAL_RATIO and p99_ok)
        table.append(row)
    return table


def _cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "–"
    rate = cell["req_per_s"]
    rate_text = f"{rate:,.0f}" if rate and rate >= 100 else f"{rate}"
    return f"{rate_text} ({_ms(cell['p50_ms'])} / {_ms(cell['p99_ms'])})"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def markdown(table: Sequence[dict[str, Any]], servers: Sequence[str]) -> str:
    others = [s for s in servers if s != "reference"]
    head = ["row", "conc", "tool", "reference req/s (p50 / p99 ms)"]
    for name in others:
        head += [f"{name} req/s (p50 / p99 ms)", "ratio", "p99 ratio", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [row["row"], str(row["connections"]), row["tool"], _cell(row.get("reference"))]
        for name in others:
            ratio, p99r = row.get(f"{name}_ratio"), row.get(f"{name}_p99_ratio")
            goal = row.get(f"{name}_meets_goal")
            cells += [_cell(row.get(name)), f"{ratio:.2f}x" if ratio else "–",
                      f"{p99r:.2f}" if p99r else "–",
                      "–" if goal is None else ("meets" if goal else "misses")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------- meta


def run_meta() -> dict[str, Any]:
    pg = None
    with contextlib.suppress(Exception):
        binaries = pgserver.find_binaries()
        pg = binaries.version() if binaries else None
    return machine_meta(REPO, {
        "countersign": version("countersign"), "granian": version("granian"),
        "uvloop": version("uvloop"),
        "cryptography": version("cryptography"), "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"), "openssl": __import__("ssl").OPENSSL_VERSION,
        "notary": command(["dpkg-query", "-W", "-f", "${Version}", "notary"]),
        "wrk": command(["wrk", "--version"]) if shutil.which("wrk") else None,
        "postgresql": pg,
    })


# -------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    tools = [t for t in s.tools if t != "wrk" or shutil.which("wrk")]
    skipped: dict[str, str] = {}
    if "wrk" in s.tools and "wrk" not in tools:
        skipped["wrk"] = "wrk is not installed (Debian: apt-get install wrk)"
    missing = _notary.missing_binaries()
    servers = list(s.servers)
    if "reference" in servers and missing:
        skipped["reference"] = f"reference binaries missing: {missing}"
        servers.remove("reference")
    meta = run_meta()
    workdir = Path(tempfile.mkdtemp(prefix="countersign-bench-"))
    log(f"work directory {workdir}; servers {servers}; GET tools {tools}")
    all_runs: dict[str, list[dict[str, Any]]] = {}
    fixtures: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    started = time.monotonic()
    running: list[Running] = []
    try:
        for name in servers:
            log(f"starting {name}")
            try:
                run = start_server(name, workdir)
            except Skip as exc:
                skipped[name] = str(exc)
                log(f"skipping {name}: {exc}")
                continue
            running.append(run)
            notes[name] = run.notes
            try:
                fixtures[name] = build_get_fixture(run)
            except Exception as exc:  # report the others; say why this one is missing
                skipped[name] = f"failed: {type(exc).__name__}: {exc}"[:2000]
                log(f"{name} failed: {exc}")
                running.remove(run)
                run.stop()
        # All servers stay up (idle) while another is measured.
        all_runs: dict[str, list[dict[str, Any]]] = {r.name: [] for r in running}
        if "get" in s.rows:
            all_runs = get_rows(running, s, tools)
        for run in running:
            if "post" in s.rows:
                all_runs[run.name] += post_rows(run, s)
        for run in running:
            if "cli" in s.rows:
                all_runs[run.name] += cli_rows(run, s, workdir)
        for run in running:
            notes[run.name]["tls_negotiated"] = next(
                (r["result"]["tls"] for r in all_runs[run.name] if r["result"].get("tls")), None)
    finally:
        for run in running:
            with contextlib.suppress(Exception):
                run.stop()
        if not s.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summaries = {name: summarise(runs) for name, runs in all_runs.items()}
    table = comparison(summaries)
    text = markdown(table, list(all_runs))
    print(text)
    for name, why in skipped.items():
        print(f"\nskipped {name}: {why}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}
    result = {
        **meta, "settings": settings, "elapsed_s": round(time.monotonic() - started, 1),
        "servers": notes, "fixtures": fixtures, "skipped": skipped, "goal_ratio": GOAL_RATIO,
        "table": table,
        "markdown": text,
        "runs": all_runs,
    }
    out = s.out or HERE / "results" / f"server-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {out} after {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
