"""What every test harness that runs a server process needs, in one place.

Free loopback ports, liveness of a PID, the tail of a log, a child that dies
with its parent (``PR_SET_PDEATHSIG``), and a set of running servers that an
``atexit`` hook stops if a test run ends without tearing them down.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Protocol

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:  # pragma: no cover
    """In a forked child: ask for ``signum`` when the parent dies (Linux); exit if it already has.

    Call it after any change of user: changing credentials clears the request.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class Stoppable(Protocol):
    def stop(self) -> None: ...


class LiveSet:
    """Servers started and not yet stopped; all of them are stopped at interpreter exit."""

    def __init__(self) -> None:
        self._items: set[Stoppable] = set()
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    def add(self, item: Stoppable) -> None:
        with self._lock:
            self._items.add(item)

    def discard(self, item: Stoppable) -> None:
        with self._lock:
            self._items.discard(item)

    def stop_all(self) -> None:  # pragma: no cover - safety net
        with self._lock:
            items = list(self._items)
        for item in items:
            item.stop()


COUNTERSIGN = str(Path(sys.executable).parent / "countersign")


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``countersign ARGS`` as a separate process, as a user runs it."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("COUNTERSIGN_", "NOTARY_", "DOCKER_CONTENT_TRUST_"))}
    return subprocess.run([COUNTERSIGN, *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Every live process whose command line contains ``text`` (zombies excluded).

    Command lines are the host's, any bytes: what is not UTF-8 is decoded as U+FFFD.
    """
    from countersign.sandbox.procs import start_ticks

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
        if text in cmdline and start_ticks(int(entry.name)) is not None:  # None: gone, zombie
            found.append((int(entry.name), cmdline.strip()))
    return found
