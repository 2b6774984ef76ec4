"""A small, strict DER reader and writer for private key structures.

Only what PKCS#8, PBES2, SEC1 and PKCS#1 need: low tag numbers, definite
minimal lengths, INTEGER, OCTET STRING, BIT STRING, NULL, OBJECT IDENTIFIER,
SEQUENCE and context tags. Every length is checked against the bytes that
remain, nesting is bounded by :data:`MAX_DEPTH`, and anything that is not
DER (BER indefinite lengths, non-minimal encodings, trailing bytes) is a
:class:`DERError`, so hostile key files cannot make the parser misbehave.
"""

from __future__ import annotations

from dataclasses import dataclass

from countersign.errors import KeyFormatError

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
SEQUENCE = 0x30

#: Deepest nesting accepted; the structures read here are at most 6 levels deep.
MAX_DEPTH = 16
#: Longest length field accepted (4 bytes: up to 4 GiB, far above any key file).
_MAX_LENGTH_OCTETS = 4
#: Longest OBJECT IDENTIFIER content accepted.
_MAX_OID_BYTES = 64


class DERError(KeyFormatError):
    """Bytes that are not the DER structure a private key needs."""


def context(number: int, *, constructed: bool = True) -> int:
    """The tag byte of ``[number]`` (context class)."""
    if not 0 <= number < 31:
        raise ValueError("context tag numbers must be below 31")
    return 0x80 | (0x20 if constructed else 0) | number


@dataclass(frozen=True)
class Node:
    """One decoded element: its tag, its content and, if constructed, its children."""

    tag: int
    content: bytes
    children: tuple[Node, ...] | None = None

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _read_header(data: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """Parse tag and length at ``pos``; return (tag, content start, content end)."""
    if pos >= end:
        raise DERError(f"{what}: unexpected end of data")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError(f"{what}: high tag numbers are not used in key files")
    pos += 1
    if pos >= end:
        raise DERError(f"{what}: truncated (no length after tag 0x{tag:02x})")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DERError(f"{what}: indefinite length is BER, not DER")
        if count > _MAX_LENGTH_OCTETS:
            raise DERError(f"{what}: length field of {count} bytes is too long")
        if pos + count > end:
            raise DERError(f"{what}: truncated length field")
        raw = data[pos : pos + count]
        pos += count
        if raw[0] == 0:
            raise DERError(f"{what}: length has a leading zero byte (not DER)")
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise DERError(f"{what}: short length in long form (not DER)")
    if length > end - pos:
        raise DERError(f"{what}: element of {length} bytes but only {end - pos} remain (truncated)")
    return tag, pos, pos + length


class Reader:
    """Sequential reader over the content of one constructed element."""

    def __init__(self, data: bytes, what: str, *, _depth: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)
        self._what = what
        self._depth = _depth

    # --- generic ----------------------------------------------------------
    def at_end(self) -> bool:
        return self._pos >= self._end

    def peek_tag(self) -> int | None:
        """The next element's tag, or None at the end."""
        return None if self.at_end() else self._data[self._pos]

    def read(self, tag: int, what: str) -> bytes:
        """The content of the next element, which must carry ``tag``."""
        label = f"{self._what}: {what}"
        got, start, stop = _read_header(self._data, self._pos, self._end, label)
        if got != tag:
            raise DERError(f"{label}: expected tag 0x{tag:02x}, found 0x{got:02x}")
        self._pos = stop
        return self._data[start:stop]

    def done(self) -> None:
        """Refuse anything left after the last expected element."""
        if not self.at_end():
            raise DERError(f"{self._what}: {self._end - self._pos} unexpected trailing bytes")

    def _nested(self, content: bytes, what: str) -> Reader:
        if self._depth + 1 > MAX_DEPTH:
            raise DERError(f"{self._what}: nested more than {MAX_DEPTH} levels deep")
        return Reader(content, f"{self._what}/{what}", _depth=self._depth + 1)

    # --- typed ------------------------------------------------------------
    def sequence(self, what: str) -> Reader:
        return self._nested(self.read(SEQUENCE, what), what)

    def explicit(self, number: int, what: str) -> Reader:
        return self._nested(self.read(context(number), what), what)

    def integer(self, what: str, *, max_bytes: int = 8) -> int:
        """A signed INTEGER of at most ``max_bytes`` content bytes, minimally encoded."""
        content = self.read(INTEGER, what)
        if not content:
            raise DERError(f"{self._what}: {what} is an empty INTEGER")
        if len(content) > max_bytes:
            raise DERError(f"{self._what}: {what} is too large ({len(content)} bytes)")
        if len(content) > 1 and (
            (content[0] == 0x00 and not content[1] & 0x80)
            or (content[0] == 0xFF and content[1] & 0x80)
        ):
            raise DERError(f"{self._what}: {what} is not minimally encoded")
        return int.from_bytes(content, "big", signed=True)

    def unsigned(self, what: str, *, max_bytes: int = 8) -> int:
        value = self.integer(what, max_bytes=max_bytes + 1)
        if value < 0:
            raise DERError(f"{self._what}: {what} is negative")
        return value

    def octet_string(self, what: str) -> bytes:
        return self.read(OCTET_STRING, what)

    def bit_string(self, what: str) -> bytes:
        """The bytes of a BIT STRING whose length is a whole number of bytes."""
        content = self.read(BIT_STRING, what)
        if not content:
            raise DERError(f"{self._what}: {what} is an empty BIT STRING")
        if content[0] != 0:
            raise DERError(f"{self._what}: {what} does not hold whole bytes")
        return content[1:]

    def null(self, what: str) -> None:
        if self.read(NULL, what):
            raise DERError(f"{self._what}: {what} is a NULL with content")

    def oid(self, what: str) -> str:
        """An OBJECT IDENTIFIER in dotted form."""
        return decode_oid(self.read(OID, what), f"{self._what}: {what}")


def decode_oid(content: bytes, what: str) -> str:
    if not content:
        raise DERError(f"{what}: empty OBJECT IDENTIFIER")
    if len(content) > _MAX_OID_BYTES:
        raise DERError(f"{what}: OBJECT IDENTIFIER is too long")
    if content[-1] & 0x80:
        raise DERError(f"{what}: truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise DERError(f"{what}: OBJECT IDENTIFIER arc is not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def parse(data: bytes, what: str = "DER", *, max_depth: int = MAX_DEPTH) -> Node:
    """Decode one whole element (and nothing after it) into a tree of :class:`Node`.

    Constructed elements are decoded recursively, at most ``max_depth`` deep.
    Used where the layout itself is of interest (tests, diagnostics).
    """

    def element(pos: int, end: int, depth: int) -> tuple[Node, int]:
        if depth > max_depth:
            raise DERError(f"{what}: nested more than {max_depth} levels deep")
        tag, start, stop = _read_header(data, pos, end, what)
        content = data[start:stop]
        if not tag & 0x20:
            return Node(tag, content), stop
        children: list[Node] = []
        inner = start
        while inner < stop:
            child, inner = element(inner, stop, depth + 1)
            children.append(child)
        return Node(tag, content, tuple(children)), stop

    node, stop = element(0, len(data), 0)
    if stop != len(data):
        raise DERError(f"{what}: {len(data) - stop} unexpected trailing bytes")
    return node


# --- writer -----------------------------------------------------------------


def encode(tag: int, content: bytes) -> bytes:
    """One element with a minimal definite length."""
    length = len(content)
    if length < 0x80:
        header = bytes([tag, length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([tag, 0x80 | len(raw)]) + raw
    return header + content


def sequence(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))


def integer(value: int) -> bytes:
    size = (value + (value < 0)).bit_length() // 8 + 1
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return encode(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    return encode(BIT_STRING, b"\x00" + value)


def null() -> bytes:
    return encode(NULL, b"")


def explicit(number: int, inner: bytes) -> bytes:
    return encode(context(number), inner)


def oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not an OBJECT IDENTIFIER: {dotted}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out.extend(reversed(chunk))
    return encode(OID, bytes(out))


def element_of(data: bytes, what: str) -> tuple[int, bytes]:
    """The tag and content of ``data``, which must be exactly one element."""
    tag, start, stop = _read_header(data, 0, len(data), what)
    if stop != len(data):
        raise DERError(f"{what}: {len(data) - stop} unexpected trailing bytes")
    return tag, data[start:stop]


def top_sequence(data: bytes, what: str) -> Reader:
    """A reader over ``data``, which must be exactly one SEQUENCE."""
    tag, content = element_of(data, what)
    if tag != SEQUENCE:
        raise DERError(f"{what}: expected a SEQUENCE, found tag 0x{tag:02x}")
    return Reader(content, what, _depth=1)
