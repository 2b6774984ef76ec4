"""A small manager for detached service processes, identified by more than their PID.

A service is started in its own session (so it outlives the command that
started it and no terminal signal reaches it), with its output going to a log
file. Its pid file records the PID, the process's start time in clock ticks
since boot (``/proc/PID/stat`` field 22) and its exact command line. A PID is
only ever signalled when all three still match: a PID reused by another
process after a crash or reboot is reported stale and left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from countersign.sandbox import SandboxError

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file holds: enough to recognise the process later."""

    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: str

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["argv"] = list(self.argv)
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def load(cls, path: Path) -> ProcessRecord:
        try:
            with path.open("rb") as handle:
                doc = json.loads(handle.read(1 << 20))
            return cls(str(doc["name"]), int(doc["pid"]), int(doc["start_ticks"]),
                       tuple(str(a) for a in doc["argv"]), str(doc["log"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"{path}: not a sandbox pid file ({exc})",
                               advice="remove it if no sandbox service runs") from None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def command_line(pid: int) -> tuple[str, ...] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1])


def is_running(record: ProcessRecord) -> bool:
    """Whether the process the record describes is still that same process."""
    return (start_ticks(record.pid) == record.start_ticks
            and command_line(record.pid) == record.argv)


def spawn(name: str, argv: Sequence[str], *, log: Path, cwd: Path,
          env: Mapping[str, str]) -> ProcessRecord:
    """Start ``argv`` detached (own session, stdin from /dev/null, output to ``log``)."""
    if not PROC.is_dir():
        raise SandboxError("the sandbox needs Linux's /proc to recognise its processes")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=cwd, env=dict(env), close_fds=True, start_new_session=True)
        except OSError as exc:
            raise SandboxError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    # the kernel has the final command line once exec has happened: wait for it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ticks, seen = start_ticks(popen.pid), command_line(popen.pid)
        if ticks is not None and seen == tuple(argv):
            return ProcessRecord(name, popen.pid, ticks, tuple(argv), str(log))
        if popen.poll() is not None:
            break
        time.sleep(0.01)
    reap(popen.pid)
    raise SandboxError(f"{name} exited at once; see {log}")


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process (no zombie left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, *, grace: float = 10.0) -> bool:
    """SIGTERM the recorded process (and any children in its group) if it is still that
    process, SIGKILL after ``grace``.

    Returns whether it was running. Nothing is signalled when the PID now
    belongs to another process.
    """
    if not is_running(record):
        reap(record.pid)
        return False
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not is_running(record):
            break
        _signal(record.pid, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap(record.pid)
            if not is_running(record):
                return True
            time.sleep(0.05)
    if is_running(record):
        raise SandboxError(f"{record.name} (pid {record.pid}) did not stop")
    return True


def _signal(pid: int, signum: int) -> None:
    """Signal ``pid``, and its process group when it leads one (it was started in its own
    session, so the group holds only what it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def write_record(path: Path, record: ProcessRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(record.to_json())
    tmp.replace(path)
