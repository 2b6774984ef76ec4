"""Hostile input: every parser answers arbitrary or mutated bytes with a countersign error.

Each property states its number of examples; together they feed a few thousand
inputs through the canonical JSON reader and encoder, the time parser, the key
parser and the metadata parser.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tufrepo import GUN, Repo

from countersign.errors import CanonicalJSONError, CountersignError
from countersign.tuf import (
    Metadata,
    PrivateKey,
    PublicKey,
    Role,
    Root,
    encode_canonical,
    go_compact,
    parse_json,
    validate_root,
)
from countersign.tuf.canonical import MAX_SAFE_INTEGER
from countersign.tuf.timefmt import GoTime

SAFE_INT = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
JSON = st.recursive(
    st.none() | st.booleans() | SAFE_INT | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)
PRINTABLE_JSON = st.recursive(
    st.none() | st.booleans() | SAFE_INT | st.text(
        st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10),
        children, max_size=5),
    max_leaves=30,
)


def _repo_files() -> list[tuple[str, bytes]]:
    repo = Repo.create()
    rel = PrivateKey.generate("ecdsa")
    repo.delegate("targets/releases", rel, paths=("v",))
    repo.add_target("v1", b"manifest", role="targets/releases")
    repo.sign_all({"targets/releases": [rel]})
    files = [("root", repo.root), ("targets", repo.targets), ("snapshot", repo.snapshot),
             ("timestamp", repo.timestamp),
             ("targets/releases", repo.delegations["targets/releases"])]
    return [(role, md.to_bytes()) for role, md in files if md is not None]


FILES = _repo_files()


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_parse_json_arbitrary_bytes(data: bytes) -> None:
    try:
        value = parse_json(data)
    except CanonicalJSONError:
        return
    encode_canonical(value)  # anything the reader accepts, the encoder can write


@settings(max_examples=500)
@given(JSON)
def test_canonical_is_stable_through_any_json_text(value: Any) -> None:
    canonical = encode_canonical(value)
    reparsed = parse_json(json.dumps(value, indent=1, ensure_ascii=True))
    assert encode_canonical(reparsed) == canonical
    assert encode_canonical(parse_json(json.dumps(value, sort_keys=False))) == canonical


@settings(max_examples=500)
@given(PRINTABLE_JSON)
def test_go_file_form_parses_back_to_the_same_value(value: Any) -> None:
    compact = go_compact(encode_canonical(value))
    assert parse_json(compact) == value
    assert encode_canonical(parse_json(compact)) == encode_canonical(value)


@settings(max_examples=500)
@given(st.text(max_size=45))
def test_time_parser_arbitrary_text(text: str) -> None:
    try:
        parsed = GoTime.parse(text)
    except CountersignError:
        return
    assert GoTime.parse(parsed.format()) == parsed


@settings(max_examples=300)
@given(st.datetimes(timezones=st.timezones()), st.integers(0, 999))
def test_time_round_trip(when: Any, nanos: int) -> None:
    base = GoTime.from_datetime(when)
    t = GoTime(base.seconds, base.nanos + nanos, base.offset_minutes)
    assert GoTime.parse(t.format()) == t


@settings(max_examples=500)
@given(st.fixed_dictionaries({"keytype": st.sampled_from(
    ["ecdsa", "rsa", "ed25519", "ecdsa-x509", "rsa-x509", "x"]) | TEXT,
    "keyval": st.fixed_dictionaries({"public": st.binary(max_size=80).map(
        lambda b: __import__("base64").b64encode(b).decode()) | TEXT,
        "private": st.none()})}) | JSON)
def test_key_parser_arbitrary_objects(obj: Any) -> None:
    try:
        key = PublicKey.from_dict(obj)
    except CountersignError:
        return
    key.verify("ecdsa", b"\0" * 64, b"m")
    _ = key.key_id


def _mutations() -> st.SearchStrategy[tuple[str, bytes]]:
    def flip(args: tuple[tuple[str, bytes], int, int]) -> tuple[str, bytes]:
        (role, data), index, byte = args
        index %= len(data)
        return role, data[:index] + bytes([byte]) + data[index + 1:]

    def cut(args: tuple[tuple[str, bytes], int]) -> tuple[str, bytes]:
        (role, data), index = args
        return role, data[: index % len(data)]

    base = st.sampled_from(FILES)
    return st.one_of(
        st.tuples(base, st.integers(0, 10**6), st.integers(0, 255)).map(flip),
        st.tuples(base, st.integers(0, 10**6)).map(cut),
    )


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_metadata_parser_mutated_files(item: tuple[str, bytes]) -> None:
    role, data = item
    try:
        md = Metadata.from_bytes(data, role=role)
    except CountersignError:
        return
    md.to_bytes()
    for key in getattr(md.signed, "keys", {}).values():
        md.verify({key.key_id: key}, Role((key.key_id,), 1))
    if isinstance(md.signed, Root):
        with contextlib.suppress(CountersignError):
            validate_root(md, GUN)


@settings(max_examples=500)
@given(JSON)
def test_metadata_parser_arbitrary_json(value: Any) -> None:
    for wrapped in (value, {"signed": value, "signatures": []}):
        try:
            Metadata.from_bytes(json.dumps(wrapped).encode())
        except CountersignError:
            continue


@settings(max_examples=500)
@given(JSON)
def test_fast_encoder_equals_the_exact_one(value: Any) -> None:
    from countersign.tuf.canonical import _encode_slow, encode_checked

    out: list[str] = []
    _encode_slow(value, out)
    assert encode_checked(value) == "".join(out).encode() == encode_canonical(value)
