"""One bounded, thread-safe LRU for everything countersign remembers by content.

Verified TUF results (``client.verified``) and verified stage evidence
(``assure.evidence``) are immutable once their key is fixed, so they can be
kept; what they cost is memory, bounded here by entries and by bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class BoundedLRU:
    """At most ``max_entries`` values whose sizes total at most ``max_bytes``.

    A value over a quarter of ``max_bytes`` is not kept; ``max_entries=0`` keeps
    nothing. The least recently used values go first.
    """

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept (a use: it becomes the most recent)."""
        with self._lock:
            if key not in self._entries:
                return False
            self._entries.move_to_end(key)
            return True

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def admits(self, size: int) -> bool:
        """Whether a value of ``size`` would be kept at all."""
        return self.max_entries > 0 and size <= self.max_bytes // 4

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if not self.admits(size):
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._entries[key] = (value, size)
            self._size += size
            while len(self._entries) > self.max_entries or self._size > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._size -= dropped

    def discard(self, match: Callable[[Hashable], bool]) -> int:
        """Drop every value whose key ``match`` accepts (its source is gone); how many."""
        with self._lock:
            doomed = [key for key in self._entries if match(key)]
            for key in doomed:
                self._size -= self._entries.pop(key)[1]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0
