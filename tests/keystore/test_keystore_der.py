"""The strict DER reader/writer: encodings, refusals, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from countersign.errors import CountersignError, KeyFormatError
from countersign.keystore import _der

# --- writer -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (2048, "02020800"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
    ],
)
def test_integer_encoding_is_minimal(value: int, encoded: str) -> None:
    assert _der.integer(value).hex() == encoded
    assert _der.Reader(bytes.fromhex(encoded), "t").integer("i") == value


@pytest.mark.parametrize(
    ("dotted", "encoded"),
    [
        ("1.2.840.10045.2.1", "06072a8648ce3d0201"),
        ("1.2.840.113549.1.5.13", "06092a864886f70d01050d"),
        ("2.16.840.1.101.3.4.1.42", "060960864801650304012a"),
        ("1.3.6.1.4.1.11591.15.1", "06092b06010401da470f01"),
        ("1.3.101.112", "06032b6570"),
    ],
)
def test_oid_encoding(dotted: str, encoded: str) -> None:
    assert _der.oid(dotted).hex() == encoded
    assert _der.Reader(bytes.fromhex(encoded), "t").oid("o") == dotted


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536])
def test_lengths_round_trip(length: int) -> None:
    element = _der.octet_string(b"\x55" * length)
    tag, content = _der.element_of(element, "t")
    assert tag == _der.OCTET_STRING
    assert len(content) == length
    header = len(element) - length
    assert header == (2 if length < 128 else 3 if length < 256 else 4 if length < 65536 else 5)


def test_parse_tree() -> None:
    data = _der.sequence(
        _der.integer(1),
        _der.sequence(_der.oid("1.2.840.10045.2.1"), _der.null()),
        _der.explicit(0, _der.bit_string(b"\x04\x01")),
    )
    node = _der.parse(data)
    assert node.tag == _der.SEQUENCE and node.children is not None
    assert [c.tag for c in node.children] == [_der.INTEGER, _der.SEQUENCE, 0xA0]
    inner = node.children[2].children
    assert inner is not None and inner[0].content == b"\x00\x04\x01"


# --- refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [
        ("", "unexpected end"),
        ("30", "truncated"),
        ("3080", "indefinite length"),
        ("3005020101", "truncated"),
        ("04810100", "short length in long form"),
        ("0482000100", "leading zero"),
        ("0485ffffffffff", "too long"),
        ("1f0100", "high tag"),
        ("020100ff", "trailing"),
    ],
)
def test_structural_refusals(hex_data: str, message: str) -> None:
    with pytest.raises(_der.DERError, match=message):
        _der.parse(bytes.fromhex(hex_data))


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [("0200", "empty INTEGER"), ("02020001", "not minimally"), ("0202ff80", "not minimally")],
)
def test_integer_refusals(hex_data: str, message: str) -> None:
    with pytest.raises(_der.DERError, match=message):
        _der.Reader(bytes.fromhex(hex_data), "t").integer("i")


def test_integer_size_bound() -> None:
    with pytest.raises(_der.DERError, match="too large"):
        _der.Reader(_der.integer(2**80), "t").integer("i", max_bytes=8)
    with pytest.raises(_der.DERError, match="negative"):
        _der.Reader(_der.integer(-5), "t").unsigned("i")


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [("0600", "empty"), ("06022a86", "truncated"), ("06032a8001", "minimally")],
)
def test_oid_refusals(hex_data: str, message: str) -> None:
    with pytest.raises(_der.DERError, match=message):
        _der.Reader(bytes.fromhex(hex_data), "t").oid("o")


def test_wrong_tag_and_trailing_bytes() -> None:
    reader = _der.Reader(_der.integer(1) + _der.null(), "t")
    with pytest.raises(_der.DERError, match="expected tag 0x04"):
        reader.octet_string("o")
    reader = _der.Reader(_der.integer(1) + _der.null(), "t")
    reader.integer("i")
    with pytest.raises(_der.DERError, match="trailing"):
        reader.done()


def test_bit_string_refusals() -> None:
    with pytest.raises(_der.DERError, match="empty BIT STRING"):
        _der.Reader(bytes.fromhex("0300"), "t").bit_string("b")
    with pytest.raises(_der.DERError, match="whole bytes"):
        _der.Reader(bytes.fromhex("030201ff"), "t").bit_string("b")


def test_depth_is_bounded() -> None:
    data = _der.null()
    for _ in range(_der.MAX_DEPTH + 2):
        data = _der.sequence(data)
    with pytest.raises(_der.DERError, match="nested"):
        _der.parse(data)
    reader = _der.top_sequence(data, "t")
    with pytest.raises(_der.DERError, match="nested"):
        for _ in range(_der.MAX_DEPTH + 2):
            reader = reader.sequence("s")


def test_deep_nesting_does_not_recurse_unbounded() -> None:
    # 10 000 nested SEQUENCEs: refused by the depth limit, not by a RecursionError.
    headers = []
    size = 2
    for _ in range(10_000):
        header = _der.encode(_der.SEQUENCE, b"\x00" * size)[:-size]
        headers.append(header)
        size += len(header)
    data = b"".join(reversed(headers)) + _der.null()
    assert _der.element_of(data, "t")[0] == _der.SEQUENCE
    with pytest.raises(_der.DERError, match="nested"):
        _der.parse(data)


def test_der_error_is_a_key_format_error() -> None:
    assert issubclass(_der.DERError, KeyFormatError)


# --- properties ---------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes_only_raises_der_errors(data: bytes) -> None:
    try:
        node = _der.parse(data)
    except CountersignError as exc:
        assert isinstance(exc, _der.DERError)
    else:
        assert isinstance(node, _der.Node)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.lists(st.integers(0, 8), max_size=12))
def test_reader_operations_on_arbitrary_bytes(data: bytes, ops: list[int]) -> None:
    reader = _der.Reader(data, "fuzz")
    try:
        for op in ops:
            if op == 0:
                reader = reader.sequence("s")
            elif op == 1:
                reader.integer("i")
            elif op == 2:
                reader.octet_string("o")
            elif op == 3:
                reader.oid("oid")
            elif op == 4:
                reader.bit_string("b")
            elif op == 5:
                reader.null("n")
            elif op == 6:
                reader = reader.explicit(0, "e")
            elif op == 7:
                reader.unsigned("u", max_bytes=4)
            else:
                reader.done()
    except CountersignError as exc:
        assert isinstance(exc, _der.DERError)


_leaves = st.one_of(
    st.integers(-(2**70), 2**70).map(_der.integer),
    st.binary(max_size=40).map(_der.octet_string),
    st.binary(max_size=20).map(_der.bit_string),
    st.just(_der.null()),
    st.lists(st.integers(0, 2**40), min_size=0, max_size=6).map(
        lambda arcs: _der.oid(".".join(str(a) for a in [1, 2, *arcs]))
    ),
)
_trees = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4).map(lambda items: _der.sequence(*items)),
    max_leaves=20,
)


@settings(max_examples=300)
@given(_trees)
def test_written_structures_parse_back(data: bytes) -> None:
    node = _der.parse(data)

    def rebuild(n: _der.Node) -> bytes:
        if n.children is None:
            return _der.encode(n.tag, n.content)
        return _der.encode(n.tag, b"".join(rebuild(c) for c in n.children))

    assert rebuild(node) == data


@settings(max_examples=300)
@given(st.integers(-(2**300), 2**300))
def test_integers_round_trip(value: int) -> None:
    assert _der.Reader(_der.integer(value), "t").integer("i", max_bytes=64) == value


@settings(max_examples=300)
@given(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, 2**64), max_size=8))
def test_oids_round_trip(first: int, second: int, rest: list[int]) -> None:
    dotted = ".".join(str(a) for a in [first, second, *rest])
    assert _der.Reader(_der.oid(dotted), "t").oid("o") == dotted
