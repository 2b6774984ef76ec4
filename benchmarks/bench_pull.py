"""Benchmark the verified pull of a ~500 MB image beside ``skopeo copy`` and the floor.

One command runs everything and takes about four minutes:

    .venv/bin/python benchmarks/bench_pull.py

It builds one OCI image (``--layers`` uncompressed tar layers of random,
incompressible file contents, ``--size-mb`` MiB in all), starts a throwaway
CNCF distribution registry (``tests/support/registryserver.py``, plain HTTP on
127.0.0.1) and ``countersign serve`` (``tests/interop/_countersign.py``), then
pushes and signs the image with the ``countersign`` CLI. The rows, all on the
same machine, in one run, on the same bytes:

1. ``floor: read+sha256``: read every blob of the image (manifest, config,
   layers) from the registry's own storage directory and SHA-256 it, 1 MiB
   ``readinto`` into one buffer, in this process: the bytes a pull must
   receive and hash. ``+write`` and ``+write+fsync`` also write each blob to a
   new file (and fsync it), which a pull must do as well;
2. the same bytes over loopback HTTP from the registry, hashed, not written:
   Python ``http.client`` (1 MiB ``readinto``, one keep-alive connection) and
   ``httpx`` ``iter_bytes`` (the project's HTTP client);
3. ``countersign pull REF --to oci:DIR --registry-insecure``: the CLI's wall
   time, interpreter start and trust refresh included, and the fsync of the
   layout (a pull returns once the layout is on disk; skopeo fsyncs too);
4. ``countersign.registry.transfer.pull`` in this process (``repository_for`` +
   ``RegistryClient`` + ``pull``), trust refresh included; ``--no-fsync`` the
   same with ``durable=False``; ``trust refresh only`` times the trust part
   alone, ``countersign --version`` the CLI's start;
5. ``skopeo copy --preserve-digests docker://REF oci:DIR:TAG``;

and, as extra rows, the push of the same image into a new, empty registry:
``countersign push --sign`` and ``skopeo copy --preserve-digests oci:DIR:TAG
docker://REF``.

Each row runs once as a warm-up and then ``--reps`` times; the rows take turns
run by run (the order is reversed on every other repetition). Every
destination is new, and is removed (then ``sync``) outside the timing, so the
page cache holds the registry's blobs (checked with ``fincore`` before each
run) and no dirty pages of an earlier run. Before each run of a row that
writes the image, :func:`prime` is run (see there: on this VM, memory that was
free for a few seconds is slow to touch again); the ``cold`` rows instead
idle for ``--cold-idle`` seconds to measure that case. The machine may be
shared: a run during which other processes used more than
``--max-other-cpu`` CPU-seconds is repeated (``--retries``), and each run's
figure is kept in the JSON. After the timed runs, one library pull runs
under cProfile (every thread: the pull hashes and writes on a second one, and
fsyncs on a third), and with ``--py-spy BIN`` one CLI pull under py-spy, to
show where the time goes.

Prints a Markdown table and writes ``benchmarks/results/pull-<date>.json``.
Needs ``docker-registry`` (Debian ``docker-registry``) and ``skopeo``;
``fincore`` (util-linux) is optional. Nothing outside the repository is used
at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import hashlib
import http.client
import io
import json
import linecache
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _extra in (HERE, REPO / "tests" / "support", REPO / "tests" / "interop"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import httpx  # noqa: E402
from _common import (  # noqa: E402
    TICK,
    command,
    machine_meta,
    machine_ticks,
    process_cpu,
    source_state,
    version,
)
from _countersign import COUNTERSIGN, CountersignServer  # noqa: E402
from images import write_layout  # noqa: E402
from registryserver import DockerRegistry, find_binary  # noqa: E402

from countersign.cli.trust import repository_for  # noqa: E402
from countersign.registry.client import RegistryClient  # noqa: E402
from countersign.registry.transfer import ImageReference, pull, resolve_signed  # noqa: E402

CHUNK = 1 << 20
TAG = "latest"
PULL_REPO = "bench/pull"
PUSH_REPO = "bench/push"
PASSPHRASES = {
    "COUNTERSIGN_ROOT_PASSPHRASE": "bench-root-passphrase",
    "COUNTERSIGN_TARGETS_PASSPHRASE": "bench-targets-passphrase",
    "COUNTERSIGN_SNAPSHOT_PASSPHRASE": "bench-snapshot-passphrase",
}


# -------------------------------------------------------------------- helpers


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}\n"
                           f"{result.stderr}")
    return result.stdout


def resident(paths: Sequence[Path]) -> dict[str, int] | None:
    """Bytes of ``paths`` in the page cache, from ``fincore`` (None without it)."""
    fincore = shutil.which("fincore")
    if fincore is None:
        return None
    out = subprocess.run([fincore, "--bytes", "--noheadings", "--raw", "--output",
                          "RES,SIZE", *map(str, paths)],
                         capture_output=True, text=True, timeout=20, check=False)
    res = size = 0
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            res, size = res + int(parts[0]), size + int(parts[1])
    return {"resident_bytes": res, "size_bytes": size}


def prime(path: Path, megabytes: int) -> float:
    """Write ``megabytes`` of zeros to ``path`` in 1 MiB writes and delete it; returns
    the seconds taken.

    On this VM (Firecracker; its virtio-balloon has free page reporting) memory
    that has been free for a few seconds is slow to take again for large page-cache
    writes: 500 MB written in 1 MiB writes takes 0.5-1.3 s instead of 0.12 s (90 %
    of it in the kernel's copy into the new pages, so the host faults them in).
    Writes of 512 KiB or less are not affected (0.13-0.26 s either way). Writing
    and deleting a file just before the clock starts leaves enough recently freed
    memory for the run to write at page-cache speed, as on a machine without
    ballooning. The ``cold`` rows measure the other case.
    """
    started = time.perf_counter()
    block = bytes(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(megabytes):
            os.write(fd, block)
    finally:
        os.close(fd)
        path.unlink()
    return time.perf_counter() - started


@dataclass(frozen=True)
class CpuSample:
    """Busy CPU-seconds of the whole machine, and of this benchmark's own processes."""

    machine: float
    ours: float
    busy: float  # the machine's busy CPU-seconds, interrupts included (the CPU a row costs)

    @classmethod
    def take(cls, pids: Sequence[int]) -> CpuSample:
        fields = machine_ticks()
        user, nice, system = fields[:3]  # irq and softirq time left out: on loopback
        machine = (user + nice + system) / TICK  # it is this benchmark's own traffic
        busy = (user + nice + system + fields[5] + fields[6]) / TICK
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                ours += process_cpu(pid)
        return cls(machine, ours, busy)

    def other_since(self, earlier: CpuSample) -> float:
        """CPU-seconds that neither this process, its waited-for children nor the
        servers it started used since ``earlier`` (other work, kernel threads)."""
        return max(0.0, (self.machine - earlier.machine) - (self.ours - earlier.ours))


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    manifest: bool = False

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def path(self, repo: str) -> str:
        """Where the registry serves it: a manifest under manifests/, the rest under blobs/."""
        return f"/v2/{repo}/{'manifests' if self.manifest else 'blobs'}/{self.digest}"


ACCEPT = {"accept": "application/vnd.oci.image.manifest.v1+json"}


@dataclass
class Row:
    name: str
    group: str  # "floor", "pull", "push", "other"
    what: str
    run: Callable[[Path], None]  # given a fresh, not yet existing destination path
    setup: Callable[[Path], None] | None = None  # untimed, before each run
    teardown: Callable[[Path], None] | None = None  # untimed, after each run
    check: Callable[[Path], None] | None = None  # untimed, after each run
    writes: bool = False  # writes the image to new files (primed first, see prime())
    cold: bool = False  # idle first instead of priming
    warmup: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)
    cache: list[Any] = field(default_factory=list)
    before: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    busy_cpu: list[float] = field(default_factory=list)
    discarded: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"group": self.group, "what": self.what, "cold_guest_memory": self.cold,
                "runs_s": self.runs, "warmup_s": self.warmup,
                "median_s": statistics.median(self.runs), "min_s": min(self.runs),
                "max_s": max(self.runs), "other_cpu_s": self.other_cpu,
                "machine_busy_cpu_s": self.busy_cpu,
                "discarded_disturbed_runs": self.discarded, "source_page_cache": self.cache,
                "untimed_prime_or_idle_s": self.before}


# -------------------------------------------------------------------- the image


def build_image(directory: Path, size_mb: int, layers: int, files: int) -> tuple[str, float]:
    per_file = (size_mb << 20) // (layers * files)
    started = time.perf_counter()
    contents = [{f"data/layer{n}/file-{i:03d}": os.urandom(per_file) for i in range(files)}
                for n in range(layers)]
    digest = write_layout(directory, TAG, contents, seed="bench-pull")
    del contents
    os.sync()
    return digest, time.perf_counter() - started


def image_blobs(layout: Path, manifest_digest: str) -> list[Blob]:
    """The manifest, config and layers of the image, as the pull receives them."""
    blobs = layout / "blobs" / "sha256"
    data = (blobs / manifest_digest.split(":", 1)[1]).read_bytes()
    manifest = json.loads(data)
    out = [Blob(manifest_digest, len(data), manifest=True)]
    for d in (manifest["config"], *manifest["layers"]):
        out.append(Blob(d["digest"], d["size"]))
    return out


# -------------------------------------------------------------------- the floors


def hash_file(path: Path, view: memoryview) -> str:
    hasher = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while n := handle.readinto(view):
            hasher.update(view[:n])
    return hasher.hexdigest()


def copy_hash_file(path: Path, target: Path, view: memoryview, fsync: bool) -> str:
    hasher = hashlib.sha256()
    with path.open("rb", buffering=0) as src, target.open("wb", buffering=0) as dst:
        while n := src.readinto(view):
            hasher.update(view[:n])
            dst.write(view[:n])
        if fsync:
            os.fsync(dst.fileno())
    return hasher.hexdigest()


def http_client_get(host: str, port: int, repo: str, blobs: Sequence[Blob],
                    view: memoryview) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for blob in blobs:
            conn.request("GET", blob.path(repo), headers=ACCEPT)
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"GET {blob.digest}: HTTP {response.status}")
            hasher = hashlib.sha256()
            total = 0
            while n := response.readinto(view):
                hasher.update(view[:n])
                total += n
            if hasher.hexdigest() != blob.hex or total != blob.size:
                raise RuntimeError(f"GET {blob.digest}: wrong bytes")
    finally:
        conn.close()


def httpx_get(base: str, repo: str, blobs: Sequence[Blob]) -> None:
    with httpx.Client(base_url=base, timeout=60, trust_env=False,
                      headers={"accept-encoding": "identity"}) as client:
        for blob in blobs:
            hasher = hashlib.sha256()
            total = 0
            with client.stream("GET", blob.path(repo), headers=ACCEPT) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"GET {blob.digest}: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    hasher.update(chunk)
                    total += len(chunk)
            if hasher.hexdigest() != blob.hex or total != blob.size:
                raise RuntimeError(f"GET {blob.digest}: wrong bytes")


# -------------------------------------------------------------------- profiles


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    return f"{Path(filename).name}:{line}({name})"


def summarise_profile(main: pstats.Stats, wall: float,
                      threads: Sequence[tuple[str, pstats.Stats]]) -> dict[str, Any]:
    """Where the library pull's time goes, from cProfile (self time of C calls), thread by
    thread. The threads run at the same time, so their shares of the wall time add up to
    more than 1."""

    def self_time(stats: pstats.Stats, name_part: str) -> tuple[float, int]:
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        seconds, calls = 0.0, 0
        for func, (_cc, nc, tt, _ct, _callers) in raw.items():
            if name_part in _label(func):
                seconds, calls = seconds + tt, calls + nc
        return seconds, calls

    def cumulative(stats: pstats.Stats, name_part: str) -> float:
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        return float(sum(ct for func, (_cc, _nc, _tt, ct, _callers) in raw.items()
                         if name_part in _label(func)))

    def entry(seconds: float, calls: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"s": round(seconds, 4), "share_of_wall": round(seconds / wall, 3)}
        if calls is not None:
            out["calls"] = calls
        return out

    groups: dict[str, dict[str, tuple[str, ...]]] = {
        "main": {
            "socket reads into the buffer (recv_into)": ("'recv_into' of '_socket.socket'",),
            "waiting for a free buffer (the writer thread is behind)":
                ("'get' of '_queue.SimpleQueue'",),
            "waiting for the writer and the fsyncs to finish (join)":
                ("'acquire' of '_thread.lock'",),
            "sha256 (manifest, small blobs)": ("'update' of '_hashlib.HASH'",),
        },
        "countersign-blob-writer": {
            "sha256": ("'update' of '_hashlib.HASH'",),
            "file write (FileIO.write)": ("'write' of '_io.FileIO'",),
            "waiting for data (the network is behind)": ("'get' of '_queue.SimpleQueue'",),
        },
        "countersign-fsync": {
            "fsync at the end of each blob": ("posix.fsync",),
            "fdatasync while a blob grows (every 32 MiB)": ("posix.fdatasync",),
            "idle (waiting for the next file)": ("'get' of '_queue.SimpleQueue'",),
        },
    }
    out: dict[str, Any] = {"wall_s": round(wall, 4)}
    by_name: dict[str, list[pstats.Stats]] = {"main": [main]}
    for name, stats in threads:
        by_name.setdefault(name, []).append(stats)
    for name, all_stats in by_name.items():
        part: dict[str, Any] = {"threads": len(all_stats)}
        total = sum(max((ct for (_cc, _nc, _tt, ct, _c) in
                         s.stats.values()), default=0.0)  # type: ignore[attr-defined]
                    for s in all_stats)
        part["profiled_s"] = round(total, 4)
        accounted = 0.0
        for label, needles in groups.get(name, {}).items():
            seconds, calls = 0.0, 0
            for stats in all_stats:
                for needle in needles:
                    got = self_time(stats, needle)
                    seconds, calls = seconds + got[0], calls + got[1]
            part[label] = entry(seconds, calls)
            accounted += seconds
        if name == "main":
            refresh = cumulative(main, "(resolve_signed)")
            part["trust refresh (resolve_signed, cumulative)"] = entry(refresh)
            accounted += refresh
        part["everything else (Python)"] = entry(max(0.0, total - accounted))
        out[name] = part
    raw: dict[Any, Any] = main.stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:15]
    out["main"]["top_self_time"] = [
        {"function": _label(func), "calls": nc, "self_s": round(tt, 4)}
        for func, (_cc, nc, tt, _ct, _callers) in top]
    return out


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def _source_line(filename: str, line: int, roots: Sequence[Path]) -> str:
    """The source text of a py-spy frame; py-spy shortens file names, so try the roots."""
    for candidate in (Path(filename), *(root / filename for root in roots)):
        if candidate.is_file():
            return linecache.getline(str(candidate), line).strip()
    return ""


def summarise_py_spy(raw_file: Path, roots: Sequence[Path]) -> dict[str, Any]:
    """Samples of ``py-spy record --idle --format raw`` grouped by what the process did.

    A sample counts as start-up while any frame is an import; otherwise by the
    source line of its innermost frame (the line making the C call in which the
    time went: ``hasher.update``, ``.write(``, ``recv``) or by the function.
    """
    counts: dict[str, int] = {}
    leaves: dict[str, int] = {}
    samples = 0
    for text in raw_file.read_text().splitlines():
        stack_text, _, count_text = text.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack_text.split(";")
        leaf = frames[-1]
        leaves[leaf] = leaves.get(leaf, 0) + count
        match = _FRAME.match(leaf)
        source = _source_line(match["file"], int(match["line"]), roots) if match else ""
        func = (match["func"] if match else leaf).rsplit(".", 1)[-1]  # "Class.method"
        names = {(_FRAME.match(f) or {"func": f})["func"].rsplit(".", 1)[-1] for f in frames}
        if any("_find_and_load" in f or f.startswith("<module>") for f in frames[1:]):
            group = "interpreter start and imports"
        elif "resolve_signed" in names:
            group = "trust refresh (resolve_signed)"
        elif ".update(" in source and "hash" in source:
            group = f"sha256 ({Path(match['file']).name if match else '?'})"
        elif ".write(" in source:
            group = "file write"
        elif "recv" in source or "readinto" in source or leaf.startswith("SyncStream.read "):
            group = "socket read"
        elif func in ("_verified", "_pump", "work"):
            group = "blob pump (client._pump)"
        elif "commit" in names:
            group = "layout commit (rename, index.json)"
        else:
            group = "other Python (httpx, CLI)"
        counts[group] = counts.get(group, 0) + count
    out: dict[str, Any] = {"samples": samples}
    for group, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        out[group] = round(count / samples, 3) if samples else None
    out["top_leaves"] = [{"frame": leaf, "share": round(count / samples, 3)}
                         for leaf, count in sorted(leaves.items(), key=lambda kv: -kv[1])[:12]]
    return out


# -------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
        self.src = self.work / "src"
        self.dests = self.work / "dest"
        self.dests.mkdir()
        self.trust = self.work / "trust"
        self.home = self.work / "home"
        self.home.mkdir()
        self.registry: DockerRegistry | None = None
        self.server: CountersignServer | None = None
        self.view = memoryview(bytearray(CHUNK))
        self.meta: dict[str, Any] = {}
        self.waited = 0.0

    # -- setup ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        if self.server is None:
            raise RuntimeError("not set up")
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                "LC_ALL": "C.UTF-8", "COUNTERSIGN_SERVER": self.server.url,
                "COUNTERSIGN_TLS_CA": str(self.server.ca_path),
                "COUNTERSIGN_TRUST_DIR": str(self.trust), **PASSPHRASES}

    def cs(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([COUNTERSIGN, *argv], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)

    def skopeo(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.skopeo_bin, "--insecure-policy", "copy", "--quiet",
                               "--preserve-digests", *argv], capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                   "HOME": str(self.home)},
                              timeout=300, stdin=subprocess.DEVNULL, check=False)

    def setup(self) -> None:
        binary = find_binary()
        if binary is None:
            raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
        skopeo = shutil.which("skopeo")
        if skopeo is None:
            raise SystemExit("skopeo is not installed (apt-get install skopeo)")
        self.skopeo_bin = skopeo
        print(f"building a {self.args.size_mb} MB image in {self.src} ...", flush=True)
        self.digest, build_s = build_image(self.src, self.args.size_mb, self.args.layers,
                                           self.args.files_per_layer)
        self.blobs = image_blobs(self.src, self.digest)
        self.total = sum(b.size for b in self.blobs)
        self.meta["image"] = {"manifest_digest": self.digest, "bytes": self.total,
                              "blobs": [{"digest": b.digest, "size": b.size} for b in self.blobs],
                              "layers": self.args.layers,
                              "files_per_layer": self.args.files_per_layer,
                              "layer_media_type": "application/vnd.oci.image.layer.v1.tar",
                              "content": "os.urandom (incompressible)",
                              "build_s": round(build_s, 2)}
        self.binary = binary
        self.registry = DockerRegistry(binary, base_dir=self.work).start()
        self.server = CountersignServer(self.work / "server").start()
        self.ref = f"{self.registry.registry}/{PULL_REPO}:{TAG}"
        started = time.perf_counter()
        _check(self.cs("trust", "init", self.ref.rsplit(":", 1)[0]), "trust init")
        pushed = json.loads(_check(self.cs("push", f"oci:{self.src}:{TAG}", self.ref, "--sign",
                                           "--registry-insecure", "--json"), "push --sign"))
        if pushed["digest"] != self.digest:
            raise RuntimeError(f"pushed {pushed['digest']}, built {self.digest}")
        self.meta["setup_push_s"] = round(time.perf_counter() - started, 2)
        os.sync()
        self.registry_files = [self.registry.blob_path(b.digest) for b in self.blobs]
        for path, blob in zip(self.registry_files, self.blobs, strict=True):
            if path.stat().st_size != blob.size:
                raise RuntimeError(f"{path}: the registry holds another size")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.registry is not None:
            self.registry.stop()
        if self.args.keep:
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- checks ----------------------------------------------------------------

    def check_layout(self, dest: Path) -> None:
        """The layout at ``dest`` tags the signed manifest and holds every blob, sized."""
        index = json.loads((dest / "index.json").read_text())
        digests = [m["digest"] for m in index["manifests"]]
        if self.digest not in digests:
            raise RuntimeError(f"{dest}: index.json names {digests}, not {self.digest}")
        for blob in self.blobs:
            path = dest / "blobs" / "sha256" / blob.hex
            if path.stat().st_size != blob.size:
                raise RuntimeError(f"{path}: {path.stat().st_size} bytes, not {blob.size}")

    def check_floor_copy(self, dest: Path) -> None:
        for blob in self.blobs:
            if (dest / blob.hex).stat().st_size != blob.size:
                raise RuntimeError(f"{dest / blob.hex}: wrong size")

    # -- the rows --------------------------------------------------------------

    def floor(self, _dest: Path) -> None:
        for path, blob in zip(self.registry_files, self.blobs, strict=True):
            if hash_file(path, self.view) != blob.hex:
                raise RuntimeError(f"{path}: wrong digest")

    def floor_write(self, dest: Path, fsync: bool) -> None:
        dest.mkdir()
        for path, blob in zip(self.registry_files, self.blobs, strict=True):
            if copy_hash_file(path, dest / blob.hex, self.view, fsync) != blob.hex:
                raise RuntimeError(f"{path}: wrong digest")

    def http_floor(self, _dest: Path) -> None:
        if self.registry is None:
            raise RuntimeError("not set up")
        http_client_get("127.0.0.1", self.registry.port, PULL_REPO, self.blobs, self.view)

    def httpx_floor(self, _dest: Path) -> None:
        if self.registry is None:
            raise RuntimeError("not set up")
        httpx_get(f"http://{self.registry.registry}", PULL_REPO, self.blobs)

    def cli_pull(self, dest: Path) -> None:
        out = json.loads(_check(self.cs("pull", self.ref, "--to", f"oci:{dest}",
                                        "--registry-insecure", "--json"), "countersign pull"))
        if out["digest"] != self.digest or not out["verified"]:
            raise RuntimeError(f"countersign pull: {out}")

    def cli_start(self, _dest: Path) -> None:
        _check(self.cs("--version"), "countersign --version")

    def _repository(self) -> Any:
        if self.server is None:
            raise RuntimeError("not set up")
        ref = ImageReference.parse(self.ref)
        return ref, repository_for(argparse.Namespace(server=self.server.url,
                                                      tls_ca=str(self.server.ca_path),
                                                      trust_dir=self.trust), ref.gun)

    def library_pull(self, dest: Path) -> None:
        ref, repository = self._repository()
        with RegistryClient(ref.registry, insecure=True) as client:
            pulled = pull(ref, client, dest, updater=repository.updater)
        if pulled.digest != self.digest:
            raise RuntimeError(f"library pull: {pulled}")

    def library_pull_no_fsync(self, dest: Path) -> None:
        ref, repository = self._repository()
        with RegistryClient(ref.registry, insecure=True) as client:
            pulled = pull(ref, client, dest, updater=repository.updater, durable=False)
        if pulled.digest != self.digest:
            raise RuntimeError(f"library pull: {pulled}")

    def refresh_only(self, _dest: Path) -> None:
        ref, repository = self._repository()
        meta, _role = resolve_signed(repository.updater, ref)
        if meta.length <= 0:
            raise RuntimeError("refresh: no signed manifest")

    def skopeo_pull(self, dest: Path) -> None:
        _check(self.skopeo("--src-tls-verify=false", f"docker://{self.ref}",
                           f"oci:{dest}:{TAG}"), "skopeo copy (pull)")

    # push rows: each run pushes into a new registry (new port, empty storage), so no
    # blob exists there yet and skopeo's blob-info cache has no copy to mount from

    def push_setup(self, _dest: Path) -> None:
        if self.binary is None:
            raise RuntimeError("not set up")
        self.push_registry = DockerRegistry(self.binary, base_dir=self.work).start()
        self.push_ref = f"{self.push_registry.registry}/{PUSH_REPO}:{TAG}"

    def push_setup_signed(self, dest: Path) -> None:
        self.push_setup(dest)
        _check(self.cs("trust", "init", self.push_ref.rsplit(":", 1)[0]), "trust init")

    def push_teardown(self, _dest: Path) -> None:
        self.push_registry.stop()
        os.sync()

    def push_check(self, _dest: Path) -> None:
        blobs = [self.push_registry.blob_path(b.digest) for b in self.blobs]
        for path, blob in zip(blobs, self.blobs, strict=True):
            if path.stat().st_size != blob.size:
                raise RuntimeError(f"push: {path} is not {blob.size} bytes")

    def cs_push(self, _dest: Path) -> None:
        out = json.loads(_check(self.cs("push", f"oci:{self.src}:{TAG}", self.push_ref,
                                        "--sign", "--registry-insecure", "--json"),
                                "countersign push"))
        if out["digest"] != self.digest or not out["signed"]:
            raise RuntimeError(f"countersign push: {out}")

    def skopeo_push(self, dest: Path) -> None:
        digestfile = self.work / "skopeo-push-digest"
        _check(self.skopeo("--dest-tls-verify=false", "--digestfile", str(digestfile),
                           f"oci:{self.src}:{TAG}", f"docker://{self.push_ref}"),
               "skopeo copy (push)")
        if digestfile.read_text().strip() != self.digest:
            raise RuntimeError(f"skopeo push: digest {digestfile.read_text()!r}")

    def rows(self) -> list[Row]:
        pull_cli = ("wall time of `countersign pull REF --to oci:DIR --registry-insecure "
                    "--json`, trust refresh, interpreter start and fsync included")
        pull_lib = ("repository_for + RegistryClient + transfer.pull in this process, trust "
                    "refresh and fsync included")
        pull_skopeo = ("wall time of `skopeo copy --preserve-digests --src-tls-verify=false "
                       "docker://REF oci:DIR:TAG`")
        rows = [
            Row("floor: read+sha256", "floor",
                "read each blob file in the registry's storage (1 MiB readinto) and sha256 it",
                self.floor),
            Row("floor: read+sha256+write", "floor",
                "the floor, and write each blob to a new file (no fsync)",
                lambda d: self.floor_write(d, fsync=False), check=self.check_floor_copy,
                writes=True),
            Row("floor: read+sha256+write+fsync", "floor",
                "the floor, write each blob to a new file and fsync it",
                lambda d: self.floor_write(d, fsync=True), check=self.check_floor_copy,
                writes=True),
            Row("HTTP floor: http.client+sha256", "floor",
                "GET every blob from the registry on one keep-alive connection, 1 MiB "
                "readinto, sha256; no file written", self.http_floor),
            Row("HTTP floor: httpx iter_bytes+sha256", "floor",
                "GET every blob with httpx (client.stream, iter_bytes), sha256; no file written",
                self.httpx_floor),
            Row("countersign pull (CLI)", "pull", pull_cli, self.cli_pull,
                check=self.check_layout, writes=True),
            Row("countersign pull (library)", "pull", pull_lib, self.library_pull,
                check=self.check_layout, writes=True),
            Row("countersign pull (library, --no-fsync)", "pull",
                pull_lib + "; durable=False (nothing fsynced)", self.library_pull_no_fsync,
                check=self.check_layout, writes=True),
            Row("skopeo copy (pull)", "pull", pull_skopeo, self.skopeo_pull,
                check=self.check_layout, writes=True),
        ]
        if self.args.cold_idle > 0:
            cold = (f"; {self.args.cold_idle:g} s idle first, not primed, so the new pages "
                    "are cold guest memory")
            rows += [
                Row("floor: read+sha256+write, cold", "floor",
                    "the floor with writes (no fsync)" + cold,
                    lambda d: self.floor_write(d, fsync=False), check=self.check_floor_copy,
                    writes=True, cold=True),
                Row("countersign pull (CLI), cold", "pull", pull_cli + cold, self.cli_pull,
                    check=self.check_layout, writes=True, cold=True),
                Row("skopeo copy (pull), cold", "pull", pull_skopeo + cold, self.skopeo_pull,
                    check=self.check_layout, writes=True, cold=True),
            ]
        rows += [
            Row("trust refresh only (library)", "other",
                "repository_for + resolve_signed (the updater's refresh and the tag lookup)",
                self.refresh_only),
            Row("countersign --version (CLI start)", "other",
                "wall time of `countersign --version`", self.cli_start),
            Row("countersign push --sign (CLI)", "push",
                "wall time of `countersign push oci:SRC:TAG REF --sign --registry-insecure` "
                "into a new, empty registry", self.cs_push,
                setup=self.push_setup_signed, teardown=self.push_teardown,
                check=self.push_check, writes=True),
            Row("skopeo copy (push)", "push",
                "wall time of `skopeo copy --preserve-digests --dest-tls-verify=false "
                "oci:SRC:TAG docker://REF` into a new, empty registry", self.skopeo_push,
                setup=self.push_setup, teardown=self.push_teardown, check=self.push_check,
                writes=True),
        ]
        return rows

    def service_pids(self) -> list[int]:
        """The long-running processes this benchmark started (their CPU is ours)."""
        pids = []
        for registry in (self.registry, getattr(self, "push_registry", None)):
            if registry is not None and registry.popen is not None:
                pids.append(registry.popen.pid)
        if self.server is not None:
            pids += self.server.pids()
        return pids

    def wait_quiet(self, pids: Sequence[int]) -> float:
        """Wait (at most ``--quiet-wait`` s, and ``--quiet-budget`` s in all) until other
        processes use under a quarter of a core; returns the seconds waited."""
        waited = 0.0
        while self.waited + waited < self.args.quiet_budget:
            before = CpuSample.take(pids)
            time.sleep(0.25)
            if CpuSample.take(pids).other_since(before) < 0.25 * 0.25:
                break
            waited += 0.25
            if waited >= self.args.quiet_wait:
                break
            time.sleep(0.75)
            waited += 0.75
        self.waited += waited
        return waited

    def measure(self, row: Row, label: str, sink: list[float]) -> None:
        """One run of ``row``; repeated (up to ``--retries`` times) when something else
        on the machine took more than ``--max-other-cpu`` CPU-seconds during it."""
        for attempt in range(self.args.retries + 1):
            elapsed, other, busy = self._attempt(row, f"{label}-{attempt}")
            clean = other <= self.args.max_other_cpu
            print(f"  {row.name:40s} {elapsed:7.3f} s  (other CPU {other:.2f} s"
                  f"{'' if clean else ', disturbed'})", flush=True)
            if clean or attempt == self.args.retries:
                break
            row.discarded.append({"s": round(elapsed, 4), "other_cpu_s": round(other, 3)})
        sink.append(round(elapsed, 4))
        row.other_cpu.append(round(other, 3))
        if sink is row.runs:
            row.busy_cpu.append(round(busy, 3))

    def _attempt(self, row: Row, label: str) -> tuple[float, float, float]:
        dest = self.dests / label
        if row.setup is not None:
            row.setup(dest)
        state = resident(self.registry_files if row.group != "push"
                         else [self.src / "blobs" / "sha256" / b.hex for b in self.blobs])
        pids = self.service_pids()
        self.wait_quiet(pids)
        if row.cold:
            time.sleep(self.args.cold_idle)
            row.before.append(self.args.cold_idle)
        elif row.writes:  # directly before the clock: primed pages go cold after about 2 s
            row.before.append(round(prime(self.work / "prime", self.args.prime_mb), 3))
        before = CpuSample.take(pids)
        started = time.perf_counter()
        row.run(dest)
        elapsed = time.perf_counter() - started
        after = CpuSample.take(pids)
        other = after.other_since(before)
        row.cache.append(state)
        if row.check is not None:
            row.check(dest)
        if row.teardown is not None:
            row.teardown(dest)
        _rmtree(dest)
        return elapsed, other, after.busy - before.busy

    def run(self) -> list[Row]:
        rows = self.rows()
        print("warm-up", flush=True)
        for i, row in enumerate(rows):
            if not row.cold:
                self.measure(row, f"warmup-{i}", row.warmup)
        for rep in range(self.args.reps):
            print(f"repetition {rep + 1}", flush=True)
            order = rows if rep % 2 == 0 else rows[::-1]
            for i, row in enumerate(order):
                self.measure(row, f"rep{rep}-{i}", row.runs)
        return rows

    def profile(self) -> dict[str, Any]:
        """One library pull under cProfile, with every thread it starts profiled too
        (cProfile itself only follows the thread that enabled it)."""
        dest = self.dests / "profile"
        prime(self.work / "prime", self.args.prime_mb)
        threads: list[tuple[str, cProfile.Profile]] = []
        original_run = threading.Thread.run

        def profiled_run(thread: threading.Thread) -> None:
            own = cProfile.Profile()
            threads.append((thread.name, own))
            own.enable()
            try:
                original_run(thread)
            finally:
                own.disable()

        profiler = cProfile.Profile()
        threading.Thread.run = profiled_run  # type: ignore[method-assign]
        try:
            profiler.enable()
            started = time.perf_counter()
            self.library_pull(dest)
            elapsed = time.perf_counter() - started
            profiler.disable()
        finally:
            threading.Thread.run = original_run  # type: ignore[method-assign]
        self.check_layout(dest)
        _rmtree(dest)
        out = summarise_profile(pstats.Stats(profiler, stream=io.StringIO()), elapsed,
                                [(name, pstats.Stats(p, stream=io.StringIO()))
                                 for name, p in threads])
        out["wall_s_under_cprofile"] = round(elapsed, 4)
        return out

    def py_spy(self, binary: str) -> dict[str, Any]:
        """One CLI pull under ``py-spy record --idle``, summarised (see summarise_py_spy)."""
        dest = self.dests / "py-spy"
        raw = self.work / "py-spy.txt"
        options = ["--idle", "--rate", "200", "--format", "raw"]
        cmd = [binary, "record", *options, "--output", str(raw), "--", COUNTERSIGN, "pull",
               self.ref, "--to", f"oci:{dest}", "--registry-insecure", "--json"]
        prime(self.work / "prime", self.args.prime_mb)
        started = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, env=self.env(),
                                timeout=300, check=False)
        elapsed = time.perf_counter() - started
        _check(result, "py-spy record")
        self.check_layout(dest)
        _rmtree(dest)
        roots = [Path(p) for p in sys.path if p] + [REPO / "src"]
        out = summarise_py_spy(raw, roots)
        out["wall_s_under_py_spy"] = round(elapsed, 3)
        out["command"] = f"py-spy record {' '.join(options)} -- countersign pull ..."
        return out


# -------------------------------------------------------------------- report


def run_meta() -> dict[str, Any]:
    return machine_meta(REPO, {
        "countersign": version("countersign"), "httpx": version("httpx"),
        "httpcore": version("httpcore"), "h11": version("h11"),
        "openssl": __import__("ssl").OPENSSL_VERSION,
        "skopeo": command(["skopeo", "--version"]),
        "docker-registry": command([str(find_binary() or "docker-registry"), "--version"]),
        "curl": command(["curl", "--version"]) if shutil.which("curl") else None,
    }, sha_ni=True, tmp_filesystem=True)


def ratios(rows: list[Row]) -> dict[str, dict[str, Any]]:
    by_name = {row.name: row for row in rows}
    floor = statistics.median(by_name["floor: read+sha256"].runs)
    skopeo_pull = statistics.median(by_name["skopeo copy (pull)"].runs)
    skopeo_push = statistics.median(by_name["skopeo copy (push)"].runs)
    out = {}
    for row in rows:
        median = statistics.median(row.runs)
        entry: dict[str, Any] = {"to_floor": round(median / floor, 2)}
        if row.group == "pull" and row.cold:
            entry["to_skopeo"] = round(
                median / statistics.median(by_name["skopeo copy (pull), cold"].runs), 2)
        elif row.group == "pull":
            entry["to_skopeo"] = round(median / skopeo_pull, 2)
        if row.group == "push":
            entry["to_skopeo"] = round(median / skopeo_push, 2)
        if row.group == "pull" and row.name.startswith("countersign"):
            entry["within_1.2x_floor"] = median <= 1.2 * floor
            entry["faster_than_skopeo"] = entry["to_skopeo"] < 1
            entry["goal_met"] = entry["within_1.2x_floor"] and entry["faster_than_skopeo"]
        out[row.name] = entry
    return out


def table(rows: list[Row], total: int, rel: dict[str, dict[str, Any]]) -> str:
    lines = ["| row | median s | min–max s | MB/s | × floor | × skopeo | goal | machine CPU-s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        median = statistics.median(row.runs)
        entry = rel[row.name]
        mbps = f"{total / median / 1e6:,.0f}" if row.group != "other" else "–"
        goal = "–"
        if "goal_met" in entry:
            goal = "**meets**" if entry["goal_met"] else "misses"
        skopeo = f"{entry['to_skopeo']:.2f}x" if "to_skopeo" in entry else "–"
        cpu = f"{statistics.median(row.busy_cpu):.2f}" if row.busy_cpu else "–"
        lines.append(f"| {row.name} | {median:.3f} | {min(row.runs):.3f}–{max(row.runs):.3f} "
                     f"| {mbps} | {entry['to_floor']:.2f}x | {skopeo} | {goal} | {cpu} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="image size in MiB (500)")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--files-per-layer", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument("--prime-mb", type=int, default=640,
                        help="MiB written and deleted before each run (see prime(); 640)")
    parser.add_argument("--max-other-cpu", type=float, default=0.3,
                        help="CPU-seconds other processes may use during a run before it is "
                        "repeated (0.3)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="seconds to wait, before each run, for other processes to go "
                        "quiet (20)")
    parser.add_argument("--quiet-budget", type=float, default=60.0,
                        help="seconds of such waiting in all (60)")
    parser.add_argument("--retries", type=int, default=2,
                        help="repetitions of a disturbed run (2; the last one is kept)")
    parser.add_argument("--cold-idle", type=float, default=4.0,
                        help="seconds idle before each run of the cold rows (0: no cold rows)")
    parser.add_argument("--py-spy", default=None, metavar="BIN",
                        help="also profile one CLI pull with this py-spy binary")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    bench = Bench(args)
    result: dict[str, Any] = run_meta()
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    try:
        bench.setup()
        result.update(bench.meta)
        rows = bench.run()
        rel = ratios(rows)
        result["rows"] = {row.name: {**row.summary(), **rel[row.name]} for row in rows}
        if not args.no_profile:
            print("profiling one library pull (cProfile)", flush=True)
            result["profile_library_pull_cprofile"] = bench.profile()
        if args.py_spy:
            print("profiling one CLI pull (py-spy)", flush=True)
            result["profile_cli_pull_py_spy"] = bench.py_spy(args.py_spy)
    finally:
        bench.stop()
    result["source_at_end"] = source_state(REPO)
    if result["source_at_end"] != result["source"]:
        print(f"WARNING: the source changed during the run: {result['source']} -> "
              f"{result['source_at_end']}; the CLI rows may have run different code")
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    result["waited_for_quiet_s"] = round(bench.waited, 1)
    out = args.out or HERE / "results" / f"pull-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(rows, bench.total, rel))
    print(f"\n{bench.total:,} bytes in {len(bench.blobs)} blobs; wrote {out} "
          f"({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
