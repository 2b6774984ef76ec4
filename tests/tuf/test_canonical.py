"""Canonical JSON: byte-exact with notary's encoder, strict on what it reads."""

from __future__ import annotations

import json

import pytest

from countersign.errors import CanonicalJSONError
from countersign.tuf.canonical import (
    MAX_DEPTH,
    FloatLiteral,
    encode_canonical,
    go_compact,
    go_string,
    parse_json,
)


def test_keys_sorted_and_no_whitespace() -> None:
    assert encode_canonical({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'


def test_sorting_is_bytewise_for_non_ascii() -> None:
    value = {"é": 1, "z": 2, "A": 3, "_": 4}
    assert encode_canonical(value) == '{"A":3,"_":4,"z":2,"é":1}'.encode()


def test_only_quote_and_backslash_are_escaped() -> None:
    value = {"k": 'a"b\\c\n\x01<>&\u2028é'}
    assert encode_canonical(value) == b'{"k":"a\\"b\\\\c\n\x01<>&\xe2\x80\xa8\xc3\xa9"}'


def test_integral_float_literal_is_written_as_integer() -> None:
    value = parse_json(b'{"a": 1.0, "b": 1e3, "c": -0.0}')
    assert encode_canonical(value) == b'{"a":1,"b":1000,"c":0}'
    assert isinstance(value["a"], FloatLiteral)


@pytest.mark.parametrize(
    "text",
    [b"1.5", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9007199254740993",
     b"123456789012345678901234567890"],
)
def test_numbers_notary_cannot_represent_are_refused(text: bytes) -> None:
    with pytest.raises(CanonicalJSONError):
        parse_json(text)


def test_python_floats_are_refused_or_made_integral() -> None:
    assert encode_canonical({"a": 2.0}) == b'{"a":2}'
    with pytest.raises(CanonicalJSONError):
        encode_canonical({"a": 2.5})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a":1,"a":2}', "duplicate key"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"a":"\xff"}', "not valid UTF-8"),
        (b'"\\ud800"', "surrogate"),
        (b'{"a":1} x', "not valid JSON"),
        (b'"a\x01"', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_strict_reader_names_the_problem(data: bytes, fragment: str) -> None:
    with pytest.raises(CanonicalJSONError, match=fragment):
        parse_json(data, what="doc")


def test_nesting_is_bounded() -> None:
    ok = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    parse_json(ok)
    with pytest.raises(CanonicalJSONError, match="nests deeper"):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(CanonicalJSONError):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


def test_go_compact_escapes_html_and_separators() -> None:
    canonical = encode_canonical({"n": "<a&b>\u2028\u2029"})
    assert go_compact(canonical) == b'{"n":"\\u003ca\\u0026b\\u003e\\u2028\\u2029"}'
    # the compacted form parses back to the same value
    assert parse_json(go_compact(canonical)) == {"n": "<a&b>\u2028\u2029"}


def test_go_compact_refuses_control_characters() -> None:
    with pytest.raises(CanonicalJSONError, match="control character"):
        go_compact(encode_canonical({"n": "a\nb"}))


def test_go_string_matches_go_marshal() -> None:
    assert go_string('a"\\\n\r\t\x08\x0c\x00<>&\u2028é') == (
        b'"a\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0000\\u003c\\u003e\\u0026\\u2028\xc3\xa9"'
    )
    # and it is JSON that decodes to the original
    assert json.loads(go_string("x<\x00y")) == "x<\x00y"


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical({"a": object()})
    with pytest.raises(CanonicalJSONError):
        encode_canonical({1: "a"})
