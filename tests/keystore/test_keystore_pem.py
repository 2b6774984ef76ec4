"""Go-compatible PEM: exact layout, strict reading, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from countersign.errors import CountersignError, FormatError
from countersign.keystore import PemBlock, decode_pem, decode_pem_blocks, encode_pem
from countersign.keystore.pem import MAX_PEM_BYTES

# Written by Go's pem.EncodeToMemory (notary 0.7 `key generate -o`), body shortened.
GO_LAYOUT = b"""-----BEGIN ENCRYPTED PRIVATE KEY-----
gun: example.com/app
role: targets

MIHuMEkGCSqGSIb3DQEFDTA8MBsGCSqGSIb3DQEFDDAOBAif3afZIQGUhgICCAAw
HQYJYIZIAWUDBAEqBBDZg7xwcFu3cf+oqKShAaoABIGguoq4bg++riyYhJWJHA5p
rQ==
-----END ENCRYPTED PRIVATE KEY-----
"""


def test_go_layout_round_trips_byte_for_byte() -> None:
    block = decode_pem(GO_LAYOUT)
    assert block.type == "ENCRYPTED PRIVATE KEY"
    assert dict(block.headers) == {"gun": "example.com/app", "role": "targets"}
    assert encode_pem(block) == GO_LAYOUT


def test_headers_sorted_with_proc_type_first() -> None:
    block = PemBlock(
        "EC PRIVATE KEY",
        {"role": "root", "DEK-Info": "AES-256-CBC,00", "Proc-Type": "4,ENCRYPTED", "gun": "g"},
        b"\x01" * 5,
    )
    lines = encode_pem(block).decode().splitlines()
    assert lines[:6] == [
        "-----BEGIN EC PRIVATE KEY-----",
        "Proc-Type: 4,ENCRYPTED",
        "DEK-Info: AES-256-CBC,00",
        "gun: g",
        "role: root",
        "",
    ]


def test_body_in_64_columns_and_no_blank_line_without_headers() -> None:
    der = bytes(range(256)) * 2
    text = encode_pem(PemBlock("PRIVATE KEY", {}, der)).decode()
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN PRIVATE KEY-----"
    assert lines[-1] == "-----END PRIVATE KEY-----"
    body = lines[1:-1]
    assert all(len(line) == 64 for line in body[:-1])
    assert 0 < len(body[-1]) <= 64
    assert "".join(body) == base64.b64encode(der).decode()
    assert text.endswith("-----\n")


def test_exactly_64_columns_has_no_short_line() -> None:
    text = encode_pem(PemBlock("PRIVATE KEY", {}, b"\x00" * 48)).decode()
    assert text.splitlines()[1:-1] == ["A" * 64]


def test_text_around_blocks_and_crlf_are_accepted() -> None:
    data = b"comment line\r\n" + GO_LAYOUT.replace(b"\n", b"\r\n") + b"trailing words\n"
    assert decode_pem(data) == decode_pem(GO_LAYOUT)


def test_several_blocks() -> None:
    one = encode_pem(PemBlock("PRIVATE KEY", {"role": "a"}, b"1"))
    two = encode_pem(PemBlock("PRIVATE KEY", {"role": "b"}, b"2"))
    blocks = decode_pem_blocks(one + two)
    assert [b.headers["role"] for b in blocks] == ["a", "b"]
    with pytest.raises(FormatError, match="2 PEM blocks"):
        decode_pem(one + two)


def test_repr_hides_the_body() -> None:
    block = PemBlock("PRIVATE KEY", {"role": "root"}, b"secret key bytes")
    assert "secret" not in repr(block)
    assert "16 bytes" in repr(block)


def _swap(old: bytes, new: bytes) -> bytes:
    assert old in GO_LAYOUT
    return GO_LAYOUT.replace(old, new, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PEM block"),
        (b"\x30\x82\x01\x00", "no PEM block"),
        (b"just text\n", "no PEM block"),
        (GO_LAYOUT[:-40], "no END line"),
        (_swap(b"-----END ENCRYPTED", b"-----END"), "different label"),
        (_swap(b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"-----BEGIN encrypted-----"), "BEGIN"),
        (_swap(b"role: targets\n\n", b"role: targets\n"), "blank line"),
        (_swap(b"gun: example.com/app\n", b"role: x\n"), "appears twice"),
        (_swap(b"rQ==", b"rQ="), "base64"),
        (_swap(b"rQ==", b"rR=="), "non-canonical"),
        (_swap(b"HQYJ", b"HQ*J"), "invalid base64"),
        (_swap(b"HQYJ", b"H=YJ"), "invalid base64"),
        (_swap(b"rQ==\n", b"\nrQ==\n"), "blank line inside"),
        (_swap(b"role: targets", "role: tärgets".encode()), "non-ASCII"),
        (_swap(b"gun: example.com/app", b": nameless"), "malformed PEM header"),
        (b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n", "empty"),
        (b"-----BEGIN A-----\n-----BEGIN B-----\nAA==\n-----END B-----\n", "no END"),
        (b"x -----BEGIN PRIVATE KEY-----\n", "does not start a line"),
    ],
)
def test_malformed_pem_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_pem(data)


def test_der_input_gets_a_hint() -> None:
    with pytest.raises(FormatError) as caught:
        decode_pem(b"\x30\x03\x02\x01\x00")
    assert caught.value.advice and "DER" in caught.value.advice


def test_size_is_bounded() -> None:
    big = GO_LAYOUT + b"#" * MAX_PEM_BYTES
    with pytest.raises(FormatError, match="allowed"):
        decode_pem(big)


@pytest.mark.parametrize(
    "block",
    [
        PemBlock("private key", {}, b"1"),
        PemBlock("PRIVATE KEY", {"a:b": "x"}, b"1"),
        PemBlock("PRIVATE KEY", {"role": "two\nlines"}, b"1"),
        PemBlock("PRIVATE KEY", {"role": " padded "}, b"1"),
        PemBlock("PRIVATE KEY", {"role": "naïve"}, b"1"),
    ],
)
def test_unwritable_blocks_are_refused(block: PemBlock) -> None:
    with pytest.raises(FormatError):
        encode_pem(block)


# --- properties -------------------------------------------------------------

_header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True)
_header_values = st.from_regex(r"[!-~]([ -~]{0,30}[!-~])?", fullmatch=True)


@settings(max_examples=300)
@given(
    st.sampled_from(["PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY", "X-Y Z"]),
    st.dictionaries(_header_names, _header_values, max_size=5),
    st.binary(min_size=1, max_size=500),
)
def test_encode_decode_round_trip(label: str, headers: dict[str, str], der: bytes) -> None:
    block = PemBlock(label, headers, der)
    data = encode_pem(block)
    assert decode_pem(data) == block
    assert encode_pem(decode_pem(data)) == data


def _only_format_errors(data: bytes) -> None:
    try:
        blocks = decode_pem_blocks(data)
    except CountersignError as exc:
        assert isinstance(exc, FormatError)
    else:
        assert blocks and all(isinstance(b, PemBlock) for b in blocks)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_format_errors(data: bytes) -> None:
    _only_format_errors(data)


@settings(max_examples=500)
@given(st.text(alphabet="-BEGINDPRVATKYE :\n\r=+/abcQ0", max_size=300))
def test_pem_like_text_only_raises_format_errors(text: str) -> None:
    _only_format_errors(text.encode())


@settings(max_examples=500)
@given(st.data())
def test_mutated_pem_only_raises_format_errors(data: st.DataObject) -> None:
    raw = bytearray(GO_LAYOUT)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "delete" and raw:
            del raw[pos]
        elif action == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        else:
            del raw[pos:]
    _only_format_errors(bytes(raw))
