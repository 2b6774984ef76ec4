"""Change marks shared by the worker processes of one server, so none serves a stale view.

Each worker keeps the current metadata of a GUN in memory. When another worker
writes that GUN, the reader must notice at once (a notary client that just
published and then reads through another connection must not see an older
timestamp). The workers share one anonymous memory map, made before they are
forked: a writer stores a fresh mark in the GUN's slot after its transaction
commits; a reader notes the slot's mark before it loads a view from the
database and serves that view only while the mark is unchanged. Several GUNs
may share a slot, which costs a needless reload, never a stale read. With one
process the marks do the same job: a reload that began before a write does not
cache what it read.

A writer holds the slot's lock from before its transaction until its mark is
stored, so the mark it returns is the one that stands for exactly what it
committed: a view it keeps with that mark is never newer or older than the
database. The locks are POSIX record locks on the map's file (one byte per
slot), which the kernel releases when a worker dies, plus a thread lock per
slot within a worker. Marks are unique 64-bit values (the process ID and a
per-process counter), and an aligned 8-byte store is one instruction, so a
reader never sees a torn or a recycled value.
"""

from __future__ import annotations

import fcntl
import itertools
import mmap
import os
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

SLOTS = 4096


class ChangeMarks:
    """Per-GUN change marks and write locks; shared across ``fork`` when made before it."""

    def __init__(self, slots: int = SLOTS) -> None:
        self._file = tempfile.TemporaryFile(prefix="countersign-marks-")  # noqa: SIM115
        self._file.truncate(slots * 8)
        self._map = mmap.mmap(self._file.fileno(), slots * 8)  # MAP_SHARED
        self._marks = memoryview(self._map).cast("Q")
        self._slots = slots
        self._threads = [threading.Lock() for _ in range(64)]
        self._counter = itertools.count(1)
        self._pid = os.getpid()

    def slot(self, gun: str) -> int:
        """The GUN's slot (several GUNs may share one; a reader may keep it)."""
        # crc32, not hash(): the same slot in every process, whatever PYTHONHASHSEED
        return zlib.crc32(gun.encode("utf-8", "surrogatepass")) % self._slots

    def current(self, gun: str) -> int:
        """The GUN's mark now: note it before reading the database."""
        return int(self._marks[self.slot(gun)])

    def at(self, slot: int) -> int:
        """The mark of ``slot`` now (:meth:`current` for a reader that kept the slot)."""
        return int(self._marks[slot])

    @contextmanager
    def writing(self, gun: str) -> Iterator[None]:
        """Hold the GUN's slot against writers in every worker: commit, then :meth:`changed`."""
        slot = self.slot(gun)
        with self._threads[slot % len(self._threads)]:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX, 1, slot)
            try:
                yield
            finally:
                fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN, 1, slot)

    def changed(self, gun: str) -> int:
        """Record a committed write of ``gun`` (inside :meth:`writing`); the new mark."""
        pid = os.getpid()
        if pid != self._pid:  # a forked worker: its own counter, its own marks
            self._pid, self._counter = pid, itertools.count(1)
        mark = (pid << 40) | (next(self._counter) & ((1 << 40) - 1))
        self._marks[self.slot(gun)] = mark
        return mark


__all__ = ["SLOTS", "ChangeMarks"]
