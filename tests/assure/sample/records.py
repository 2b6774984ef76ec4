"""A small binary record parser for the fuzz stage: one build with a planted bug, one fixed.

A record is ``b"REC"``, a version byte (1), a field count, then per field a
tag byte, a length byte and that many value bytes. Tag 7 is a price, a
big-endian unsigned 32-bit integer. Bad input raises :class:`RecordError`.

The planted bug (:func:`parse_unchecked`): the price is unpacked without
checking that its field is four bytes long, so a short price field raises
``struct.error`` instead of :class:`RecordError`, and a field running past the
end is cut short silently. A fuzzer finds it in seconds; :func:`parse` checks
both and passes.
"""

from __future__ import annotations

import struct

MAGIC = b"REC"
PRICE = 7


class RecordError(ValueError):
    """The input is not a well-formed record."""


def _parse(data: bytes, *, checked: bool) -> dict[int, bytes | int]:
    if data[:3] != MAGIC:
        raise RecordError("no REC magic")
    if len(data) < 5:
        raise RecordError("truncated header")
    if data[3] != 1:
        raise RecordError(f"unknown version {data[3]}")
    count = data[4]
    fields: dict[int, bytes | int] = {}
    at = 5
    for _ in range(count):
        if at + 2 > len(data):
            raise RecordError("truncated field header")
        tag, size = data[at], data[at + 1]
        at += 2
        if checked and at + size > len(data):
            raise RecordError(f"field {tag} runs past the end")
        value = data[at:at + size]
        at += size
        if tag == PRICE:
            if checked and size != 4:
                raise RecordError(f"price field is {size} bytes, not 4")
            (fields[tag],) = struct.unpack(">I", value)
        else:
            fields[tag] = value
    return fields


def parse(data: bytes) -> dict[int, bytes | int]:
    """The fixed parser: every malformed record is a RecordError."""
    return _parse(data, checked=True)


def parse_unchecked(data: bytes) -> dict[int, bytes | int]:
    """The parser with the planted bug (short price field -> struct.error)."""
    return _parse(data, checked=False)
