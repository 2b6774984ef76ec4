"""Benchmark ``countersign sandbox demo`` against its budget of two minutes after set-up.

    .venv/bin/python benchmarks/bench_sandbox_demo.py          # about a minute

Each repetition runs the console script as a user does, as a separate process:

1. ``fresh``: a new sandbox directory (whose ``debs/`` already holds busybox-static, as
   after the first run): the demo makes the TLS material, starts the trust server and
   the registry, replays the seven steps and stops both;
2. ``up``: the same directory with the services already running (``sandbox up`` first,
   not timed): the seven steps alone.

The wall time of the process is measured, and the per-step times the demo prints are
collected. With ``--download``, ``apt-get download busybox-static`` into an empty
directory is timed too (network: what a first run on a new machine adds). Prints a
Markdown table and writes ``benchmarks/results/sandbox-demo-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COUNTERSIGN = str(Path(sys.executable).parent / "countersign")
BUDGET = 120.0
STEP = re.compile(r"^\[(\d)/7\] (.*)$")
OK = re.compile(r"^  ok \((\d+\.\d)s\)")
TOTAL = re.compile(r"^all steps passed in (\d+\.\d)s")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("COUNTERSIGN_", "NOTARY_", "DOCKER_CONTENT_TRUST_"))}


def _run(argv: list[str], cwd: Path | None = None
         ) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=600,
                          stdin=subprocess.DEVNULL, check=False, cwd=cwd)
    return time.monotonic() - start, done


def _steps(output: str) -> dict[str, float]:
    steps, current = {}, None
    for line in output.splitlines():
        if match := STEP.match(line):
            current = f"{match.group(1)}. {match.group(2)}"
        elif (match := OK.match(line)) and current:
            steps[current] = float(match.group(1))
    return steps


def _deb(cache: Path) -> Path:
    """A busybox-static .deb: apt's archive, else one apt-get download into ``cache``."""
    archived = sorted(Path("/var/cache/apt/archives").glob("busybox-static_*.deb"))
    if archived:
        return archived[-1]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([shutil.which("apt-get") or "/usr/bin/apt-get", "download", "-q",
                    "busybox-static"], cwd=cache, check=True, capture_output=True)
    return sorted(cache.glob("busybox-static_*.deb"))[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--download", action="store_true",
                        help="also time apt-get download busybox-static (network)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="countersign-bench-sandbox-"))
    runs: list[dict[str, Any]] = []
    try:
        deb = _deb(work / "debs")
        download = None
        if args.download:
            target = work / "download"
            target.mkdir()
            apt = shutil.which("apt-get") or "/usr/bin/apt-get"
            seconds, done = _run([apt, "download", "-q", "busybox-static"], cwd=target)
            download = None if done.returncode else round(seconds, 2)
        for rep in range(args.reps):
            for mode in ("fresh", "up"):
                directory = work / f"{mode}-{rep}"
                (directory / "debs").mkdir(parents=True)
                shutil.copy2(deb, directory / "debs" / deb.name)
                if mode == "up":
                    _run([COUNTERSIGN, "sandbox", "up", "--dir", str(directory)])
                took, done = _run([COUNTERSIGN, "sandbox", "demo", "--dir", str(directory)])
                if mode == "up":
                    _run([COUNTERSIGN, "sandbox", "down", "--dir", str(directory)])
                total = TOTAL.search(done.stdout.splitlines()[-1] if done.stdout else "")
                if done.returncode != 0:
                    print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"the demo failed ({mode}, rep {rep})")
                runs.append({"mode": mode, "rep": rep, "wall_s": round(took, 2),
                             "steps_s": float(total.group(1)) if total else None,
                             "per_step_s": _steps(done.stdout)})
                print(f"{mode} rep {rep}: {took:.1f} s", file=sys.stderr)
    finally:
        for directory in work.glob("*-*"):
            if (directory / "run").exists():
                _run([COUNTERSIGN, "sandbox", "down", "--dir", str(directory)])
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for mode in ("fresh", "up"):
        walls = [r["wall_s"] for r in runs if r["mode"] == mode]
        median = statistics.median(walls)
        rows.append({"mode": mode, "median_wall_s": median, "min_wall_s": min(walls),
                     "max_wall_s": max(walls), "budget_ratio": round(BUDGET / median, 1)})
    step_names = list(runs[0]["per_step_s"])
    per_step = {name: statistics.median(r["per_step_s"].get(name, 0.0) for r in runs)
                for name in step_names}
    print("| run | median wall time | min | max | budget 120 s / median |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['mode']} | {row['median_wall_s']:.1f} s | {row['min_wall_s']:.1f} s | "
              f"{row['max_wall_s']:.1f} s | {row['budget_ratio']}× |")
    print()
    print("| step (median over all runs) | seconds |")
    print("| --- | ---: |")
    for name, seconds in per_step.items():
        print(f"| {name} | {seconds:.1f} |")
    if download is not None:
        print(f"\napt-get download busybox-static: {download:.1f} s")
    sys.stdout.flush()
    date = dt.date.today().isoformat()
    out = args.out or HERE / "results" / f"sandbox-demo-{date}.json"
    commit = subprocess.run([shutil.which("git") or "/usr/bin/git", "rev-parse", "--short",
                             "HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout.strip()
    out.write_text(json.dumps({
        "date": date, "commit": commit, "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()},
        "budget_s": BUDGET, "summary": rows, "per_step_median_s": per_step,
        "apt_download_s": download, "runs": runs}, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
