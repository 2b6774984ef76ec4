"""notary's PKCS#8: round trips, exact DER layout, the variants other tools write, refusals."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.errors import CountersignError, KeyFormatError, PassphraseError
from countersign.keystore import _der, decode_private_key, encode_private_key
from countersign.keystore.pkcs8 import MAX_ITERATIONS
from countersign.tuf.keys import PrivateKey

KeyOf = Callable[[str], PrivateKey]

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_AES256 = "2.16.840.1.101.3.4.1.42"
OID_AES128 = "2.16.840.1.101.3.4.1.2"
OID_SHA256_PRF = "1.2.840.113549.2.9"


def _oid_of(node: _der.Node) -> str:
    return _der.Reader(_der.encode(node.tag, node.content), "t").oid("o")


def _children(node: _der.Node) -> tuple[_der.Node, ...]:
    assert node.children is not None
    return node.children


def _same_key(a: PrivateKey, b: PrivateKey) -> bool:
    return a.canonical_key_id == b.canonical_key_id and a.algorithm == b.algorithm


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("passphrase", ["", "correct horse", "pässwörd ✓"])
def test_round_trip(any_key: PrivateKey, passphrase: str) -> None:
    der = encode_private_key(any_key, passphrase)
    decoded = decode_private_key(der, passphrase or None, encrypted=passphrase != "")
    assert _same_key(decoded, any_key)
    assert decoded.public_key.verify(decoded.method, decoded.sign(b"msg"), b"msg")


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_other_curves_round_trip(curve: ec.EllipticCurve) -> None:
    key = PrivateKey(ec.generate_private_key(curve))
    assert _same_key(decode_private_key(encode_private_key(key, "pw"), "pw", encrypted=True), key)


def test_encryption_is_salted(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    assert encode_private_key(key, "pw") != encode_private_key(key, "pw")
    assert encode_private_key(key, "") == encode_private_key(key, "")


# --- exact layout ------------------------------------------------------------


def test_ecdsa_layout(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    info = _der.parse(encode_private_key(key, ""))
    version, algorithm, body = _children(info)
    assert version.content == b"\x01"  # notary's (non-standard) version 1
    assert [_oid_of(n) for n in _children(algorithm)] == [
        "1.2.840.10045.2.1",
        "1.2.840.10045.3.1.7",
    ]
    assert body.tag == _der.OCTET_STRING
    sec1 = key.crypto_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert body.content == sec1  # SEC1 with [0] curve and [1] public point, as Go writes
    ver, scalar, params, public = _children(_der.parse(body.content))
    assert ver.content == b"\x01" and len(scalar.content) == 32
    assert (params.tag, public.tag) == (0xA0, 0xA1)


def test_rsa_layout_has_no_null_parameter(key_of: KeyOf) -> None:
    key = key_of("rsa")
    der = encode_private_key(key, "")
    version, algorithm, body = _children(_der.parse(der))
    assert version.content == b"\x00"
    assert _der.encode(algorithm.tag, algorithm.content) == _der.sequence(
        _der.oid("1.2.840.113549.1.1.1")
    )
    pkcs1 = key.crypto_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert body.content == pkcs1
    # The standard encoding differs only by the NULL parameter.
    standard = key.crypto_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert standard != der
    assert _same_key(decode_private_key(standard, None, encrypted=False), key)


def test_ed25519_layout(key_of: KeyOf) -> None:
    key = key_of("ed25519")
    version, algorithm, body = _children(_der.parse(encode_private_key(key, "")))
    assert version.content == b"\x00"
    assert [_oid_of(n) for n in _children(algorithm)] == ["1.3.6.1.4.1.11591.15.1"]
    crypto = key.crypto_key
    assert isinstance(crypto, ed25519.Ed25519PrivateKey)
    public = crypto.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    seed = crypto.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert body.content == public + seed + public


def test_pbes2_layout(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    der = encode_private_key(key, "passphrase")
    algorithm, encrypted = _children(_der.parse(der))
    pbes2_oid, pbes2_params = _children(algorithm)
    assert _oid_of(pbes2_oid) == OID_PBES2
    kdf, scheme = _children(pbes2_params)
    kdf_oid, kdf_params = _children(kdf)
    assert _oid_of(kdf_oid) == OID_PBKDF2
    salt, iterations = _children(kdf_params)  # no keyLength, no PRF: HMAC-SHA1
    assert salt.tag == _der.OCTET_STRING and len(salt.content) == 8
    assert iterations.content == (2048).to_bytes(2, "big")
    cipher_oid, iv = _children(scheme)
    assert _oid_of(cipher_oid) == OID_AES256
    assert iv.tag == _der.OCTET_STRING and len(iv.content) == 16
    # Decrypt independently: PBKDF2-HMAC-SHA1, AES-256-CBC, PKCS#7 padding.
    secret = hashlib.pbkdf2_hmac("sha1", b"passphrase", salt.content, 2048, 32)
    decryptor = Cipher(algorithms.AES(secret), modes.CBC(iv.content)).decryptor()
    plain = decryptor.update(encrypted.content) + decryptor.finalize()
    clear = encode_private_key(key, "")
    pad = 16 - len(clear) % 16
    assert plain == clear + bytes([pad]) * pad


def test_aligned_plaintext_gets_a_full_padding_block() -> None:
    from countersign.keystore import _cipher

    data = _cipher.encrypt_cbc(b"k" * 32, b"i" * 16, b"x" * 32)
    assert len(data) == 48
    assert _cipher.decrypt_cbc(b"k" * 32, b"i" * 16, data) == b"x" * 32


# --- what other tools write ----------------------------------------------------


def _pbes2(
    clear: bytes,
    passphrase: bytes,
    *,
    prf: str | None = None,
    hash_name: str = "sha1",
    key_length: int | None = None,
    cipher_oid: str = OID_AES256,
    iterations: int = 2048,
    salt: bytes = b"saltsalt",
    kdf_oid: str = OID_PBKDF2,
    scheme_oid: str = OID_PBES2,
    iv: bytes = b"\x07" * 16,
) -> bytes:
    size = {OID_AES256: 32, OID_AES128: 16}.get(cipher_oid, 32)
    secret = hashlib.pbkdf2_hmac(hash_name, passphrase, salt, max(1, min(iterations, 5000)), size)
    pad = 16 - len(clear) % 16
    cbc_iv = iv if len(iv) == 16 else b"\x07" * 16  # a bad IV is only written, not used
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(cbc_iv)).encryptor()
    ciphertext = encryptor.update(clear + bytes([pad]) * pad) + encryptor.finalize()
    params = [_der.octet_string(salt), _der.integer(iterations)]
    if key_length is not None:
        params.append(_der.integer(key_length))
    if prf is not None:
        params.append(_der.sequence(_der.oid(prf), _der.null()))
    kdf = _der.sequence(_der.oid(kdf_oid), _der.sequence(*params))
    scheme = _der.sequence(_der.oid(cipher_oid), _der.octet_string(iv))
    algorithm = _der.sequence(_der.oid(scheme_oid), _der.sequence(kdf, scheme))
    return _der.sequence(algorithm, _der.octet_string(ciphertext))


def test_prf_field_is_honoured(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    der = _pbes2(encode_private_key(key, ""), b"pw", prf=OID_SHA256_PRF, hash_name="sha256")
    assert _same_key(decode_private_key(der, "pw", encrypted=True), key)


def test_key_length_and_aes128(key_of: KeyOf) -> None:
    key = key_of("ed25519")
    der = _pbes2(encode_private_key(key, ""), b"pw", key_length=16, cipher_oid=OID_AES128)
    assert _same_key(decode_private_key(der, "pw", encrypted=True), key)


def test_cryptography_pkcs8_variants(any_key: PrivateKey) -> None:
    crypto = any_key.crypto_key
    clear = crypto.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert _same_key(decode_private_key(clear, None, encrypted=False), any_key)
    # cryptography encrypts with PBES2, hmacWithSHA256 and AES-256-CBC.
    encrypted = crypto.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    assert _same_key(decode_private_key(encrypted, "pw", encrypted=True), any_key)


def test_ec_version_0_with_attributes(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    crypto = key.crypto_key
    assert isinstance(crypto, ec.EllipticCurvePrivateKey)
    sec1 = crypto.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = _der.sequence(
        _der.integer(0),
        _der.sequence(_der.oid("1.2.840.10045.2.1"), _der.oid("1.2.840.10045.3.1.7")),
        _der.octet_string(sec1),
        _der.explicit(0, b""),
    )
    assert _same_key(decode_private_key(der, None, encrypted=False), key)


# --- refusals -------------------------------------------------------------------


def test_wrong_passphrase(any_key: PrivateKey) -> None:
    der = encode_private_key(any_key, "right passphrase")
    with pytest.raises(PassphraseError, match="wrong passphrase") as caught:
        decode_private_key(der, "wrong passphrase", encrypted=True)
    assert "right passphrase" not in caught.value.render()


def test_missing_passphrase(key_of: KeyOf) -> None:
    der = encode_private_key(key_of("ecdsa"), "pw")
    with pytest.raises(PassphraseError, match="no passphrase"):
        decode_private_key(der, None, encrypted=True)


def test_clear_key_read_as_encrypted_and_back(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    with pytest.raises(KeyFormatError):
        decode_private_key(encode_private_key(key, ""), "pw", encrypted=True)
    with pytest.raises(KeyFormatError):
        decode_private_key(encode_private_key(key, "pw"), None, encrypted=False)


@pytest.mark.parametrize("cut", [1, 10, 17, 50])
def test_truncated(any_key: PrivateKey, cut: int) -> None:
    for passphrase in ("", "pw"):
        der = encode_private_key(any_key, passphrase)
        with pytest.raises(KeyFormatError, match=r"truncated|unexpected end"):
            decode_private_key(der[:-cut], passphrase or None, encrypted=bool(passphrase))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iterations": 0}, "iteration count 0"),
        ({"iterations": MAX_ITERATIONS + 1}, "iteration count"),
        ({"prf": "1.2.840.113549.2.5"}, "PRF"),
        ({"cipher_oid": "1.2.840.113549.3.7"}, "cipher"),
        ({"kdf_oid": "1.3.6.1.4.1.11591.4.11"}, "key derivation"),
        ({"scheme_oid": "1.2.840.113549.1.12.1.3"}, "PBES1"),
        ({"scheme_oid": "1.2.3.4"}, "encryption scheme"),
        ({"key_length": 16}, "keyLength"),
        ({"salt": b""}, "salt"),
        ({"iv": b"\x00" * 8}, "IV"),
    ],
)
def test_unsupported_encryption_is_refused(
    key_of: KeyOf, options: dict[str, object], message: str
) -> None:
    der = _pbes2(encode_private_key(key_of("ecdsa"), ""), b"pw", **options)  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError, match=message) as caught:
        decode_private_key(der, "pw", encrypted=True)
    assert not isinstance(caught.value, PassphraseError)


def test_rfc8410_ed25519_and_bad_blobs(key_of: KeyOf) -> None:
    key = key_of("ed25519")
    blob = bytearray(_children(_der.parse(encode_private_key(key, "")))[2].content)

    def info(body: bytes) -> bytes:
        return _der.sequence(
            _der.integer(0),
            _der.sequence(_der.oid("1.3.6.1.4.1.11591.15.1")),
            _der.octet_string(body),
        )

    with pytest.raises(KeyFormatError, match="96 bytes"):
        decode_private_key(info(bytes(blob[:64])), None, encrypted=False)
    blob[0] ^= 1
    with pytest.raises(KeyFormatError, match="does not match"):
        decode_private_key(info(bytes(blob)), None, encrypted=False)


def test_mismatched_ec_public_key_is_refused(key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    other = ec.generate_private_key(ec.SECP256R1())
    point = other.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    crypto = key.crypto_key
    assert isinstance(crypto, ec.EllipticCurvePrivateKey)
    sec1 = _der.sequence(
        _der.integer(1),
        _der.octet_string(crypto.private_numbers().private_value.to_bytes(32, "big")),
        _der.explicit(0, _der.oid("1.2.840.10045.3.1.7")),
        _der.explicit(1, _der.bit_string(point)),
    )
    der = _der.sequence(
        _der.integer(1),
        _der.sequence(_der.oid("1.2.840.10045.2.1"), _der.oid("1.2.840.10045.3.1.7")),
        _der.octet_string(sec1),
    )
    with pytest.raises(KeyFormatError, match="does not match"):
        decode_private_key(der, None, encrypted=False)


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        (_der.sequence(_der.oid("1.2.840.10045.2.1"), _der.oid("1.3.132.0.10")), "curve"),
        (_der.sequence(_der.oid("1.2.840.10040.4.1")), "not supported"),
        (_der.sequence(_der.oid("1.2.840.10045.2.1")), "named curve"),
    ],
)
def test_unsupported_algorithms(algorithm: bytes, message: str) -> None:
    sec1 = _der.sequence(_der.integer(1), _der.octet_string(b"\x01" * 32))
    der = _der.sequence(_der.integer(1), algorithm, _der.octet_string(sec1))
    with pytest.raises(KeyFormatError, match=message):
        decode_private_key(der, None, encrypted=False)


def test_small_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    der = small.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match="2048"):
        decode_private_key(der, None, encrypted=False)


# --- properties ---------------------------------------------------------------------


def _only_countersign_errors(der: bytes, passphrase: str | None, encrypted: bool) -> None:
    try:
        key = decode_private_key(der, passphrase, encrypted=encrypted)
    except CountersignError:
        pass
    else:
        assert isinstance(key, PrivateKey)


@settings(max_examples=500)
@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes_only_raise_countersign_errors(data: bytes, encrypted: bool) -> None:
    _only_countersign_errors(data, "pw" if encrypted else None, encrypted)


def _mutate(data: st.DataObject, raw: bytearray) -> bytes:
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate", "length"]))
        pos = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
        if action == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "delete" and raw:
            del raw[pos]
        elif action == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif action == "truncate":
            del raw[pos:]
        elif raw:
            raw[pos] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF]))
    return bytes(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["ecdsa", "rsa", "ed25519"]), st.booleans())
def test_mutated_keys_only_raise_countersign_errors(
    key_of: KeyOf, data: st.DataObject, algorithm: str, encrypted: bool
) -> None:
    passphrase = "pw" if encrypted else ""
    raw = bytearray(encode_private_key(key_of(algorithm), passphrase))
    _only_countersign_errors(_mutate(data, raw), passphrase or None, encrypted)


_PLAIN: dict[str, bytes] = {}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["ecdsa", "ed25519"]))
def test_mutated_plaintext_under_valid_encryption(
    key_of: KeyOf, data: st.DataObject, algorithm: str
) -> None:
    # The inner PrivateKeyInfo mutated, then correctly encrypted: the decrypted
    # garbage must still only give countersign errors.
    if algorithm not in _PLAIN:
        _PLAIN[algorithm] = encode_private_key(key_of(algorithm), "")
    mutated = _mutate(data, bytearray(_PLAIN[algorithm]))
    if not mutated:
        return
    der = _pbes2(mutated, b"pw", salt=os.urandom(8))
    _only_countersign_errors(der, "pw", True)
