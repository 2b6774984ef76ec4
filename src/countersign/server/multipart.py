"""A strict, bounded ``multipart/form-data`` reader for the update POST.

Only what notary's client sends is needed: parts with a ``Content-Disposition``
naming a ``filename``. Everything is in memory and already size-capped by the
caller; no regular expressions touch untrusted input.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

MAX_PARTS = 1000
MAX_HEADER_BYTES = 8192


class MultipartError(ValueError):
    """The body is not well-formed multipart."""


@dataclass(frozen=True)
class Part:
    filename: str | None
    data: bytes
    disposition_ok: bool


def boundary_of(content_type: str) -> str:
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("not multipart/form-data")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise MultipartError("no usable boundary")
    return boundary


def _filename(disposition: str) -> tuple[str | None, bool]:
    message = Message()
    try:
        message["Content-Disposition"] = disposition
        value = message.get_param("filename", header="content-disposition")
        kind = message.get("Content-Disposition", "").split(";", 1)[0].strip().lower()
    except (ValueError, IndexError):
        return None, False
    if not kind:
        return None, False
    if isinstance(value, tuple):  # RFC 2231 encoded
        try:
            value = bytes(value[2], "latin-1").decode(value[0] or "utf-8")
        except (LookupError, UnicodeError):
            return None, False
    return (value if isinstance(value, str) else None), True


def parse(body: bytes, content_type: str) -> list[Part]:
    """The parts of ``body``; :class:`MultipartError` when it is not multipart."""
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("boundary not found")
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body[position:position + 2] == b"--":
            return parts
        if body[position:position + 2] != b"\r\n":
            raise MultipartError("malformed boundary line")
        position += 2
        header_end = body.find(b"\r\n\r\n", position, position + MAX_HEADER_BYTES)
        if header_end < 0:
            if body[position:position + 2] == b"\r\n":
                header_end = position - 2
            else:
                raise MultipartError("part headers missing or too long")
        raw_headers = body[position:header_end].decode("latin-1")
        next_delimiter = body.find(b"\r\n" + delimiter, header_end + 4)
        if next_delimiter < 0:
            raise MultipartError("unterminated part")
        data = body[header_end + 4:next_delimiter]
        disposition = ""
        for line in raw_headers.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        filename, ok = _filename(disposition) if disposition else (None, False)
        parts.append(Part(filename, data, ok))
        if len(parts) > MAX_PARTS:
            raise MultipartError("too many parts")
        position = next_delimiter + 2 + len(delimiter)
