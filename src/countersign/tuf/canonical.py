"""Canonical JSON as notary 0.7 writes it, and a strict JSON reader.

Notary signs the canonical form of ``signed``: keys sorted, no whitespace,
only ``"`` and ``\\`` escaped, every other character written raw, integers
only. Files on disk are that canonical form passed through Go's compaction,
which escapes ``<``, ``>``, ``&``, U+2028 and U+2029 (see :func:`go_compact`).

The reader refuses what Go cannot represent or what makes two parsers
disagree: invalid UTF-8, NaN and infinities, fractional or unsafe numbers,
duplicate object keys, lone surrogates and excessive nesting.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from countersign.errors import CanonicalJSONError

JSONValue = None | bool | int | str | list[Any] | dict[str, Any]

#: Largest integer magnitude that survives Go's float64 round trip exactly.
MAX_SAFE_INTEGER = 2**53
#: Deepest nesting accepted; notary metadata is at most about six levels deep.
MAX_DEPTH = 64


class FloatLiteral(int):
    """An integral number written with a fraction or exponent (``1.0``, ``1e3``).

    It encodes canonically as the integer, as Go does for a float64 in a map, but
    typed fields (versions, lengths, thresholds) refuse it, as Go's decoder
    refuses ``1.0`` for an ``int`` field.
    """


def _parse_float(text: str) -> FloatLiteral:
    value = float(text)
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError(f"number {text[:40]} is not finite")
    if not value.is_integer():
        raise CanonicalJSONError(
            f"number {text[:40]} has a fraction; canonical JSON allows integers only"
        )
    if abs(value) > MAX_SAFE_INTEGER:
        raise CanonicalJSONError(f"number {text[:40]} is out of the safe integer range")
    return FloatLiteral(int(value))


def _parse_int(text: str) -> int:
    if len(text) > 20:
        raise CanonicalJSONError(f"number {text[:40]}... is out of the safe integer range")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise CanonicalJSONError(f"number {text} is out of the safe integer range")
    return value


def _parse_constant(name: str) -> None:
    raise CanonicalJSONError(f"{name} is not valid JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalJSONError(f"duplicate key {key[:60]!r} in a JSON object")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_parse_constant,
    strict=True,
)


def parse_json(data: bytes | str, *, what: str = "document") -> Any:
    """Parse ``data`` strictly; every refusal is a :class:`CanonicalJSONError`."""
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise CanonicalJSONError(f"{what} starts with a byte-order mark")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanonicalJSONError(
                f"{what} is not valid UTF-8 (byte {exc.start})"
            ) from None
    else:
        text = data
    try:
        value = _DECODER.decode(text)
    except CanonicalJSONError as exc:
        raise CanonicalJSONError(f"{what}: {exc.message}") from None
    except json.JSONDecodeError as exc:
        raise CanonicalJSONError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise CanonicalJSONError(f"{what} is not valid JSON: {str(exc)[:100]}") from None
    _check_depth(value, what)
    if "\\u" in text:  # only an escape can make a lone surrogate
        _check_tree(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` (the reader's hooks checked the rest)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= MAX_DEPTH:
            raise CanonicalJSONError(f"{what} nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))


def _check_tree(value: Any, what: str) -> bool:
    """Check depth and strings; return whether any string holds a control character."""
    has_control = False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            has_control |= _check_string(item, what)
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise CanonicalJSONError(f"{what} nests deeper than {MAX_DEPTH} levels")
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise CanonicalJSONError(f"{what} has a non-string object key")
                has_control |= _check_string(key, what)
                stack.append((sub, depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= MAX_DEPTH:
                raise CanonicalJSONError(f"{what} nests deeper than {MAX_DEPTH} levels")
            stack.extend((sub, depth + 1) for sub in item)
        elif item is None or isinstance(item, (bool, int)):
            if isinstance(item, int) and abs(item) > MAX_SAFE_INTEGER:
                raise CanonicalJSONError(f"{what}: integer out of the safe range")
        elif isinstance(item, float):
            if not item.is_integer() or abs(item) > MAX_SAFE_INTEGER:
                raise CanonicalJSONError(
                    f"{what}: {item!r} is not an integer; canonical JSON allows integers only"
                )
        else:
            raise CanonicalJSONError(
                f"{what}: a {type(item).__name__} cannot be written as JSON"
            )
    return has_control


def _check_string(text: str, what: str) -> bool:
    if text.isascii():
        return not text.isprintable() and any(ord(c) < 0x20 for c in text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError(f"{what} holds a lone UTF-16 surrogate") from None
    return any(ord(c) < 0x20 for c in text)


def _raw_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encode_slow(value: Any, out: list[str]) -> None:
    """Exact canonical encoder, used when a string holds control characters."""
    if isinstance(value, str):
        out.append(_raw_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, (int, float)):
        out.append(str(int(value)))
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if index:
                out.append(",")
            out.append(_raw_string(key))
            out.append(":")
            _encode_slow(value[key], out)
        out.append("}")
    else:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode_slow(item, out)
        out.append("]")


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


_ESCAPED_CONTROL = frozenset("nrtbfu")


def encode_checked(value: Any) -> bytes:
    """:func:`encode_canonical` for values known to hold no float (parsed or typed ones).

    The C encoder does the work; only when its output escapes a control
    character (which canonical JSON writes raw) is the exact slow encoder used.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, check_circular=False)
    position = text.find("\\")
    while position >= 0:
        following = text[position + 1]
        if following in _ESCAPED_CONTROL:
            out: list[str] = []
            _encode_slow(value, out)
            return "".join(out).encode("utf-8")
        position = text.find("\\", position + 2)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("value holds a lone UTF-16 surrogate") from None


def encode_canonical(value: Any) -> bytes:
    """Encode ``value`` exactly as notary's ``MarshalCanonical`` does."""
    has_control = _check_tree(value, "value")
    if not has_control and not _has_float(value):
        text = json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            check_circular=False,
        )
        return text.encode("utf-8")
    out: list[str] = []
    _encode_slow(value, out)
    return "".join(out).encode("utf-8")


_CONTROL_BYTE = re.compile(rb"[\x00-\x1f]")
_HTML_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def go_compact(canonical: bytes) -> bytes:
    """Apply Go's compaction to canonical bytes, as ``json.Marshal`` of a RawMessage does.

    Canonical bytes hold raw control characters, which are not valid JSON, so
    Go cannot write them into a file: they are refused here too.
    """
    if _CONTROL_BYTE.search(canonical):
        raise CanonicalJSONError(
            "a string holds a control character, which notary cannot write into a file"
        )
    for raw, escaped in _HTML_ESCAPES:
        if raw in canonical:
            canonical = canonical.replace(raw, escaped)
    return canonical


_GO_STRING_ESCAPES = {
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_GO_STRING_ESCAPES.update(
    {c: f"\\u{c:04x}" for c in range(0x20) if c not in _GO_STRING_ESCAPES}
)


def go_string(text: str) -> bytes:
    """A JSON string as Go's ``json.Marshal`` writes it (HTML-escaped)."""
    return ('"' + text.translate(_GO_STRING_ESCAPES) + '"').encode("utf-8")
