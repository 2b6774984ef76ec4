"""The one bounded LRU: entries, bytes, recency, and dropping by key."""

from __future__ import annotations

from countersign._lru import BoundedLRU


def test_bounds_by_entries_and_bytes_least_recent_first() -> None:
    lru = BoundedLRU(max_entries=3, max_bytes=400)
    for key in "abc":
        lru.put(key, key.upper(), 10)
    assert lru.get("a") == "A"  # now the most recent
    lru.put("d", "D", 10)
    assert "b" not in lru and len(lru) == 3
    lru.put("big", "X", 101)  # over a quarter of max_bytes: not kept
    assert lru.get("big") is None and len(lru) == 3
    lru.put("e", "E", 100)
    lru.put("f", "F", 100)
    lru.put("g", "G", 100)
    assert len(lru) == 3 and lru.get("a") is None  # bytes and entries both bound it


def test_discard_drops_only_what_matches_and_frees_its_bytes() -> None:
    lru = BoundedLRU(max_entries=10, max_bytes=100)
    lru.put(("g1", "root"), 1, 25)
    lru.put(("g1", "targets"), 2, 25)
    lru.put(("g2", "root"), 3, 25)
    assert lru.discard(lambda key: isinstance(key, tuple) and key[0] == "g1") == 2
    assert lru.get(("g2", "root")) == 3 and len(lru) == 1
    for n in range(3):  # the freed bytes are usable again
        lru.put(("g3", n), n, 25)
    assert len(lru) == 4
