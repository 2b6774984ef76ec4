"""PEM blocks with RFC 1421 headers, written exactly as Go's ``pem.Encode`` writes them.

Go writes ``Proc-Type`` first, then the other headers sorted by name, a blank
line, and the base64 body in 64-column lines. notary keeps a key's role and
GUN in those headers, so they are part of the key file format.

The reader is strict where Go is lax: the block must be well formed (matching
BEGIN/END labels, no duplicate headers, a blank line after headers, only
canonical base64) and input is capped at :data:`MAX_PEM_BYTES`. Text outside
the blocks is ignored, as RFC 7468 allows. Every failure is a
:class:`~countersign.errors.FormatError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from countersign.errors import FormatError

#: Largest input accepted; a key file is a few kilobytes.
MAX_PEM_BYTES = 1 << 20
_LINE = 64
_PROC_TYPE = "Proc-Type"
_LABEL = re.compile(r"[A-Z0-9]+(?:[ -][A-Z0-9]+)*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII, no space or colon
_B64_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_BEGIN = b"-----BEGIN "
_END = b"-----END "


@dataclass(frozen=True, repr=False)
class PemBlock:
    """One PEM block. The repr never shows the body, which may be a clear private key."""

    type: str
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    der: bytes = b""

    def __repr__(self) -> str:
        return (
            f"PemBlock(type={self.type!r}, headers={dict(self.headers)!r}, "
            f"der=<{len(self.der)} bytes>)"
        )


def _check_value(name: str, value: str) -> None:
    if (
        not isinstance(value, str)
        or value != value.strip()
        or not value.isascii()
        or not value.isprintable()
    ):
        raise FormatError(
            f"PEM header {name!r} has a value that cannot be written "
            "(non-ASCII or control characters, or surrounding whitespace)"
        )


def encode_pem(block: PemBlock) -> bytes:
    """The block as Go's ``pem.Encode`` writes it."""
    if not _LABEL.fullmatch(block.type):
        raise FormatError(f"{block.type!r} is not a PEM type label")
    lines = [f"-----BEGIN {block.type}-----"]
    names = sorted(block.headers)
    for name in names:
        if not _HEADER_NAME.fullmatch(name):
            raise FormatError(f"{name!r} is not a PEM header name")
        _check_value(name, block.headers[name])
    if _PROC_TYPE in block.headers:
        names.remove(_PROC_TYPE)
        names.insert(0, _PROC_TYPE)
    lines.extend(f"{name}: {block.headers[name]}" for name in names)
    if names:
        lines.append("")
    body = base64.b64encode(block.der).decode("ascii")
    lines.extend(body[i : i + _LINE] for i in range(0, len(body), _LINE))
    lines.append(f"-----END {block.type}-----")
    return ("\n".join(lines) + "\n").encode("ascii")


def _line_text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: PEM block contains non-ASCII bytes") from None


def _parse_block(label: str, body: list[bytes], what: str) -> PemBlock:
    headers: dict[str, str] = {}
    index = 0
    while index < len(body) and b":" in body[index]:
        name, _, value = _line_text(body[index], what).partition(":")
        name = name.strip()
        if not _HEADER_NAME.fullmatch(name):
            raise FormatError(f"{what}: malformed PEM header line")
        if name in headers:
            raise FormatError(f"{what}: PEM header {name!r} appears twice")
        headers[name] = value.strip()
        index += 1
    if headers:
        if index >= len(body) or body[index]:
            raise FormatError(f"{what}: PEM headers must be followed by a blank line")
        index += 1
    chunks = body[index:]
    if not chunks:
        raise FormatError(f"{what}: PEM block {label!r} is empty")
    for number, chunk in enumerate(chunks):
        if not chunk:
            raise FormatError(f"{what}: blank line inside the base64 body of {label!r}")
        if not _B64_LINE.fullmatch(chunk) or (b"=" in chunk and number != len(chunks) - 1):
            raise FormatError(f"{what}: invalid base64 in PEM block {label!r}")
    text = b"".join(chunks)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what}: invalid base64 in PEM block {label!r} (truncated?)") from None
    if base64.b64encode(der) != text:
        raise FormatError(f"{what}: non-canonical base64 in PEM block {label!r}")
    return PemBlock(label, headers, der)


def decode_pem_blocks(data: bytes, what: str = "PEM data") -> list[PemBlock]:
    """Every PEM block in ``data``, in order."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(f"{what}: expected bytes")
    data = bytes(data)
    if len(data) > MAX_PEM_BYTES:
        raise FormatError(f"{what}: {len(data)} bytes is more than the {MAX_PEM_BYTES} allowed")
    lines = [line.rstrip(b" \t\r") for line in data.split(b"\n")]
    blocks: list[PemBlock] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith(_BEGIN):
            if _BEGIN in line:
                raise FormatError(f"{what}: PEM BEGIN line does not start a line")
            continue
        label = _line_text(line[len(_BEGIN) :], what)
        if not label.endswith("-----") or not _LABEL.fullmatch(label[:-5]):
            raise FormatError(f"{what}: malformed PEM BEGIN line")
        label = label[:-5]
        end = f"-----END {label}-----".encode("ascii")
        body: list[bytes] = []
        while index < len(lines) and not lines[index].startswith(_END):
            if lines[index].startswith(_BEGIN):
                raise FormatError(f"{what}: PEM block {label!r} has no END line")
            body.append(lines[index])
            index += 1
        if index >= len(lines):
            raise FormatError(f"{what}: PEM block {label!r} has no END line (truncated?)")
        if lines[index] != end:
            raise FormatError(f"{what}: PEM block {label!r} ends with a different label")
        index += 1
        blocks.append(_parse_block(label, body, what))
    if not blocks:
        hint = "this looks like binary DER, not PEM" if data[:1] == b"\x30" else None
        raise FormatError(f"{what}: no PEM block found", advice=hint)
    return blocks


def decode_pem(data: bytes, what: str = "PEM data") -> PemBlock:
    """The one PEM block in ``data``; several blocks are refused as ambiguous."""
    blocks = decode_pem_blocks(data, what)
    if len(blocks) != 1:
        raise FormatError(
            f"{what}: holds {len(blocks)} PEM blocks where one was expected",
            advice="split the file so that each holds one key",
        )
    return blocks[0]


__all__ = ["MAX_PEM_BYTES", "PemBlock", "decode_pem", "decode_pem_blocks", "encode_pem"]
