"""A bounded keep-alive HTTP(S) load generator for countersign's benchmarks.

Loopback only. Each of ``--connections`` workers holds one persistent
HTTP/1.1 connection and sends one GET at a time on it (closed loop, like
``wrk -c``); the run stops after ``--duration`` seconds or ``--max-requests``
requests, whichever comes first. ``--procs N`` splits the connections over N
processes, so the client is less likely to be the bottleneck. Latencies go
into a log-bucket histogram (about 1.6 % resolution), merged across processes.

The HTTP client is deliberately minimal: it writes a request, reads the head
up to the blank line and then exactly ``Content-Length`` body bytes. Chunked
or length-less responses are counted as errors (the servers benchmarked here
always send ``Content-Length``). :class:`Connection` is also used by
``bench_server.py`` for its POST rows.

    .venv/bin/python benchmarks/loadgen.py --cacert ca.crt -c 16 -d 10 --procs 2 \\
        https://127.0.0.1:4443/v2/example/_trust/tuf/timestamp.json

Prints one JSON object (requests, req_per_s, latency_ms percentiles, statuses).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import ipaddress
import json
import multiprocessing
import socket
import ssl
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_DURATION = 120.0
MAX_CONNECTIONS = 1024
MAX_PROCS = 8
MAX_BODY = 64 << 20
USER_AGENT = "countersign-bench"


class ProtocolError(Exception):
    """A response this minimal client does not understand."""


# --------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    tls: bool
    authority: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        require_loopback(parts.hostname)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, port, path, tls, parts.netloc)

    def get_request(self) -> bytes:
        return (f"GET {self.path} HTTP/1.1\r\nHost: {self.authority}\r\n"
                f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n").encode("latin-1")


def require_loopback(host: str) -> None:
    """Refuse any target that is not (or does not resolve only to) a loopback address."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or not all(a.is_loopback for a in addresses):
        raise ValueError(f"refusing non-loopback target {host!r}")


def client_tls(cafile: str | None, *, insecure: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------ histogram


class Histogram:
    """Microsecond latencies in log buckets: exact below 64 µs, then 64 buckets per octave."""

    SUB = 6  # 2**SUB buckets per power of two

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum_us = 0
        self.max_us = 0

    @classmethod
    def index(cls, us: int) -> int:
        if us < (1 << cls.SUB):
            return max(us, 0)
        shift = us.bit_length() - 1 - cls.SUB
        return (shift << cls.SUB) + (us >> shift)

    @classmethod
    def lower_bound(cls, index: int) -> int:
        if index < (2 << cls.SUB):
            return index
        shift = (index >> cls.SUB) - 1
        mantissa = index - (shift << cls.SUB)
        return mantissa << shift

    def record(self, us: int) -> None:
        i = self.index(us)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1
        self.sum_us += us
        self.max_us = max(self.max_us, us)

    def merge(self, other: Histogram) -> None:
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.total += other.total
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, p: float) -> float | None:
        """The value (µs) below which ``p`` % of the samples lie (bucket midpoint)."""
        if not self.total:
            return None
        rank = max(1, int(p / 100.0 * self.total + 0.999999))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                low, high = self.lower_bound(i), self.lower_bound(i + 1)
                return min((low + high) / 2.0, float(self.max_us))
        return float(self.max_us)

    def summary_ms(self) -> dict[str, float | None]:
        def ms(us: float | None) -> float | None:
            return None if us is None else round(us / 1000.0, 3)

        return {
            "p50": ms(self.percentile(50)), "p90": ms(self.percentile(90)),
            "p99": ms(self.percentile(99)), "p999": ms(self.percentile(99.9)),
            "max": ms(float(self.max_us)) if self.total else None,
            "mean": ms(self.sum_us / self.total) if self.total else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {"counts": [[i, n] for i, n in sorted(self.counts.items())],
                "total": self.total, "sum_us": self.sum_us, "max_us": self.max_us}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        h = cls()
        h.counts = {int(i): int(n) for i, n in data["counts"]}
        h.total, h.sum_us, h.max_us = data["total"], data["sum_us"], data["max_us"]
        return h


# --------------------------------------------------------------------- client


@dataclass
class Response:
    status: int
    body: bytes
    keep_alive: bool


class Connection:
    """One HTTP/1.1 connection: write a request, read a Content-Length response."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None,
                 server_hostname: str | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.server_hostname = server_hostname or (host if tls is not None else None)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    def for_target(cls, target: Target, tls: ssl.SSLContext | None) -> Connection:
        return cls(target.host, target.port, tls if target.tls else None)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.server_hostname,
            limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def is_open(self) -> bool:
        return self.writer is not None

    def tls_info(self) -> dict[str, Any] | None:
        obj = self.writer.get_extra_info("ssl_object") if self.writer else None
        if obj is None:
            return None
        name, _protocol, bits = obj.cipher()
        return {"version": obj.version(), "cipher": name, "bits": bits}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send_raw(self, request: bytes, *, head: bool = False) -> Response:
        if self.writer is None:
            await self.open()
        if self.reader is None or self.writer is None:
            raise ConnectionError("not connected")
        self.writer.write(request)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.close()
            raise ConnectionError("connection closed by server") from exc
        status, length, keep_alive = _parse_head(raw)
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif length is None:
            self.close()
            raise ProtocolError("response without Content-Length")
        else:
            body = await self.reader.readexactly(length) if length else b""
        if not keep_alive:
            self.close()
        return Response(status, body, keep_alive)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Iterable[tuple[str, str]] = ()) -> Response:
        host = self.server_hostname or self.host
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}",
                 f"User-Agent: {USER_AGENT}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        return await self.send_raw(raw, head=method == "HEAD")


def _parse_head(raw: bytes) -> tuple[int, int | None, bool]:
    lines = raw.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(rest[:3])
    keep_alive = version != b"HTTP/1.0"
    length: int | None = None
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
            if length > MAX_BODY:
                raise ProtocolError(f"body of {length} bytes is over the limit")
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked responses are not supported")
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    return status, length, keep_alive


# ------------------------------------------------------------------- the load


@dataclass
class _Tally:
    histogram: Histogram = field(default_factory=Histogram)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    body_bytes: int = 0
    tls: dict[str, Any] | None = None

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}")


async def _worker(number: int, targets: Sequence[Target], requests: Sequence[bytes],
                  conn: Connection, deadline: float, budget: list[int], tally: _Tally) -> None:
    turn = number
    clock = time.perf_counter_ns
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        which = turn % len(targets)
        turn += 1
        try:
            started = clock()
            response = await conn.send_raw(requests[which])
            tally.histogram.record((clock() - started) // 1000)
        except (OSError, ProtocolError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            tally.error(exc)
            conn.close()
            await asyncio.sleep(0.005)
            continue
        tally.statuses[response.status] = tally.statuses.get(response.status, 0) + 1
        tally.body_bytes += len(response.body)
    conn.close()


async def _one_process(urls: Sequence[str], connections: int, duration: float,
                       max_requests: int, cafile: str | None, insecure: bool,
                       start_at: float) -> dict[str, Any]:
    targets = [Target.parse(u) for u in urls]
    requests = [t.get_request() for t in targets]
    tls = client_tls(cafile, insecure=insecure)
    tally = _Tally()
    conns = [Connection.for_target(targets[i % len(targets)], tls) for i in range(connections)]
    # Connect (and finish the TLS handshakes) before the clock starts.
    opened = await asyncio.gather(*(c.open() for c in conns), return_exceptions=True)
    for result in opened:
        if isinstance(result, BaseException):
            tally.error(result)
    tally.tls = next((c.tls_info() for c in conns if c.is_open), None)
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    began = time.monotonic()
    budget = [max_requests]
    await asyncio.gather(*(_worker(i, targets, requests, c, began + duration, budget, tally)
                           for i, c in enumerate(conns)))
    elapsed = time.monotonic() - began
    return {"histogram": tally.histogram.to_json(), "errors": tally.errors,
            "error_samples": tally.error_samples, "statuses": tally.statuses,
            "bytes": tally.body_bytes, "elapsed": elapsed, "tls": tally.tls}


def _event_loop(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "uvloop":
        factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
            "uvloop").new_event_loop
        return factory
    return None


def loop_available(kind: str) -> bool:
    return kind != "uvloop" or importlib.util.find_spec("uvloop") is not None


def _run_coroutine(kind: str, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=_event_loop(kind)) as runner:
        return runner.run(coro)


def _child(pipe: Any, kind: str, args: tuple[Any, ...]) -> None:
    try:
        pipe.send(_run_coroutine(kind, _one_process(*args)))
    except BaseException as exc:
        pipe.send({"fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        pipe.close()


def run_load(urls: Sequence[str], *, connections: int = 16, duration: float = 10.0,
             procs: int = 1, cafile: str | None = None, insecure: bool = False,
             max_requests: int = 5_000_000, loop: str = "uvloop") -> dict[str, Any]:
    """Drive ``urls`` (round robin) for ``duration`` seconds; merged result as a dict."""
    if not urls:
        raise ValueError("no URL given")
    for url in urls:
        Target.parse(url)  # loopback check before anything starts
    duration = min(max(duration, 0.1), MAX_DURATION)
    connections = min(max(connections, 1), MAX_CONNECTIONS)
    procs = min(max(procs, 1), MAX_PROCS, connections)
    if not loop_available(loop):
        loop = "asyncio"
    start_at = time.time() + 0.3 + 0.01 * connections
    shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    budgets = [max_requests // procs + (1 if i < max_requests % procs else 0)
               for i in range(procs)]
    if procs == 1:
        parts = [_run_coroutine(loop, _one_process(list(urls), connections, duration,
                                                   max_requests, cafile, insecure, start_at))]
    else:
        ctx = multiprocessing.get_context("fork")
        children = []
        for share, budget in zip(shares, budgets, strict=True):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, daemon=True, args=(
                send, loop, (list(urls), share, duration, budget, cafile, insecure, start_at)))
            proc.start()
            send.close()
            children.append((proc, recv))
        parts = []
        for proc, recv in children:
            if recv.poll(duration + 60 + 0.05 * connections):
                parts.append(recv.recv())
            else:
                parts.append({"fatal": "client process did not report in time"})
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        fatal = [p["fatal"] for p in parts if "fatal" in p]
        if fatal:
            raise RuntimeError(f"load generator process failed: {fatal}")
    histogram = Histogram()
    statuses: dict[str, int] = {}
    for part in parts:
        histogram.merge(Histogram.from_json(part["histogram"]))
        for status, n in part["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    elapsed = max(p["elapsed"] for p in parts)
    return {
        "tool": "loadgen", "urls": list(urls), "connections": connections, "procs": procs,
        "loop": loop, "duration_s": round(elapsed, 3), "requests": histogram.total,
        "errors": sum(p["errors"] for p in parts),
        "req_per_s": round(histogram.total / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": histogram.summary_ms(), "status": statuses,
        "bytes": sum(p["bytes"] for p in parts),
        "error_samples": [e for p in parts for e in p["error_samples"]][:5],
        "tls": next((p["tls"] for p in parts if p.get("tls")), None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+", help="loopback http(s) URLs, taken round robin")
    parser.add_argument("-c", "--connections", type=int, default=16,
                        help="open connections = requests in flight (default 16)")
    parser.add_argument("-d", "--duration", type=float, default=10.0,
                        help=f"seconds (default 10, at most {MAX_DURATION:.0f})")
    parser.add_argument("-n", "--max-requests", type=int, default=5_000_000)
    parser.add_argument("--procs", type=int, default=1, help="client processes (default 1)")
    parser.add_argument("--cacert", help="CA bundle that issued the server's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="client event loop (default uvloop when installed)")
    args = parser.parse_args(argv)
    try:
        result = run_load(args.urls, connections=args.connections, duration=args.duration,
                          procs=args.procs, cafile=args.cacert, insecure=args.insecure,
                          max_requests=args.max_requests, loop=args.loop)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
