"""What the benchmark scripts share: CPU times from /proc, and the description of
the machine, the source and the versions that every result file starts with."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

#: Clock ticks per second: the unit of the CPU times in /proc.
TICK = os.sysconf("SC_CLK_TCK")


def command(argv: Sequence[str]) -> str | None:
    """The first line ``argv`` prints (stdout, else stderr); ``None`` if it cannot run
    or prints nothing."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def version(dist: str) -> str | None:
    """The installed version of the distribution ``dist`` (``None``: not installed)."""
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def machine_ticks() -> list[int]:
    """The whole machine's CPU times so far, in ticks, from the first line of /proc/stat:
    user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def process_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: ``[0]`` is the state, ``[1]``
    the parent, ``[11]`` and ``[12]`` the user and system ticks. ``OSError`` once the
    process is gone."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process so far (``OSError`` once it is gone)."""
    fields = process_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def source_state(repo: Path) -> dict[str, Any]:
    """The commit, and whether src/ differs from it (others may commit while a run goes)."""
    commit = command(["git", "-C", str(repo), "rev-parse", "HEAD"])
    dirty = command(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no",
                     "--", "src"])
    return {"commit": commit, "src_modified": bool(dirty)}


def machine_meta(repo: Path, versions: Mapping[str, str | None], *, sha_ni: bool = False,
                 tmp_filesystem: bool = False) -> dict[str, Any]:
    """``date``, ``source``, ``machine`` and ``versions`` of a result file; ``sha_ni`` and
    ``tmp_filesystem`` add whether the CPU has SHA instructions and what the temporary
    directory is on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    machine: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count()}
    if sha_ni:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "")
        machine["sha_ni"] = " sha_ni" in flags
    machine.update({"mem_gib": round(int(mem) / 2**20, 1), "kernel": platform.release(),
                    "python": platform.python_version()})
    if tmp_filesystem:
        machine["tmp_filesystem"] = command(["findmnt", "-n", "-o", "FSTYPE,SOURCE",
                                             "--target", tempfile.gettempdir()])
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source_state(repo),
        "machine": machine,
        "versions": dict(versions),
    }
