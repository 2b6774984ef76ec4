"""Keys, key IDs and signatures exactly as notary computes and encodes them."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from countersign.errors import CountersignError, KeyFormatError, UnsupportedAlgorithmError
from countersign.tuf.keys import PrivateKey, PublicKey, key_id_of
from countersign.tuf.x509 import root_certificate_key

MESSAGE = b'{"_type":"Targets"}'


def test_key_id_hashes_canonical_object_with_private_null() -> None:
    expected = hashlib.sha256(
        b'{"keytype":"ecdsa","keyval":{"private":null,"public":"QUJD"}}'
    ).hexdigest()
    assert key_id_of("ecdsa", "QUJD") == expected


@pytest.mark.parametrize("algorithm", ["ecdsa", "rsa", "ed25519"])
def test_sign_verify_each_algorithm(algorithm: str) -> None:
    key = PrivateKey.generate(algorithm, rsa_bits=2048)
    public = key.public_key
    assert public.keytype == algorithm
    sig = key.sign(MESSAGE)
    assert public.verify(key.method, sig, MESSAGE)
    assert not public.verify(key.method, sig, MESSAGE + b" ")
    assert {"ecdsa": "ecdsa", "rsa": "rsapss", "ed25519": "eddsa"}[algorithm] == key.method


def test_ecdsa_signature_is_raw_r_s_of_64_bytes_over_sha256() -> None:
    key = PrivateKey.generate("ecdsa")
    sig = key.sign(MESSAGE)
    assert len(sig) == 64
    crypto = key.public_key.crypto_key
    assert isinstance(crypto, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    crypto.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))
    # a DER signature (what other tools write) is refused
    assert not key.public_key.verify("ecdsa", der, MESSAGE)


def test_rsapss_uses_salt_length_32_exactly() -> None:
    key = PrivateKey.generate("rsa", rsa_bits=2048)
    sig = key.sign(MESSAGE)
    crypto = key.public_key.crypto_key
    assert isinstance(crypto, rsa.RSAPublicKey)
    crypto.verify(sig, MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    raw = key.crypto_key
    assert isinstance(raw, rsa.RSAPrivateKey)
    max_salt = raw.sign(MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()),
                                             padding.PSS.MAX_LENGTH), hashes.SHA256())
    assert not key.public_key.verify("rsapss", max_salt, MESSAGE)
    pkcs1 = raw.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    assert not key.public_key.verify("rsapkcs1v15", pkcs1, MESSAGE)


def test_methods_and_key_types_must_agree() -> None:
    ec_key = PrivateKey.generate("ecdsa")
    sig = ec_key.sign(MESSAGE)
    assert not ec_key.public_key.verify("eddsa", sig, MESSAGE)
    assert not ec_key.public_key.verify("ed25519", sig, MESSAGE)
    assert not ec_key.public_key.verify("ECDSA-SHA256", sig, MESSAGE)


def test_ed25519_public_is_raw_32_bytes() -> None:
    key = PrivateKey.generate("ed25519")
    assert len(base64.b64decode(key.public_key.public)) == 32


def test_certificate_key_ids_tuf_and_canonical() -> None:
    key = PrivateKey.generate("ecdsa")
    cert_key = root_certificate_key(key, "docker.io/library/alpine")
    assert cert_key.keytype == "ecdsa-x509"
    assert cert_key.key_id != cert_key.canonical_key_id
    assert cert_key.canonical_key_id == key.canonical_key_id == key.public_key.key_id
    pem = base64.b64decode(cert_key.public)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----\n") and pem.endswith(b"-----\n")
    sig = key.sign(MESSAGE)
    assert cert_key.verify("ecdsa", sig, MESSAGE)
    assert key.matches(cert_key)


def test_rsa_below_2048_bits_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    der = small.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="at least 2048"):
        PublicKey("rsa", base64.b64encode(der).decode())
    with pytest.raises(KeyFormatError):
        PrivateKey(small)


@pytest.mark.parametrize(
    "obj",
    [
        {"keytype": "ecdsa", "keyval": {"public": "!!!", "private": None}},
        {"keytype": "ecdsa", "keyval": {"public": "QUJD", "private": None}},
        {"keytype": "ed25519", "keyval": {"public": "QUJD", "private": None}},
        {"keytype": "ecdsa-x509", "keyval": {"public": "QUJD", "private": None}},
        {"keytype": "ecdsa", "keyval": {"public": "QUJD", "private": "c2VjcmV0"}},
        {"keytype": 1, "keyval": {}},
        [],
    ],
)
def test_bad_key_objects(obj: object) -> None:
    with pytest.raises(CountersignError):
        PublicKey.from_dict(obj)


def test_ecdsa_key_holding_an_rsa_key_is_refused() -> None:
    rsa_public = PrivateKey.generate("rsa", rsa_bits=2048).public_key
    with pytest.raises(KeyFormatError, match="another kind"):
        PublicKey("ecdsa", rsa_public.public)


def test_unknown_key_type_parses_but_never_verifies() -> None:
    key = PublicKey.from_dict({"keytype": "dsa", "keyval": {"public": "QUJD", "private": None}})
    assert not key.verify("ecdsa", b"x" * 64, MESSAGE)
    with pytest.raises(UnsupportedAlgorithmError):
        _ = key.crypto_key


def test_private_key_repr_hides_material() -> None:
    key = PrivateKey.generate("ecdsa")
    assert "PRIVATE" not in repr(key)
    assert key.canonical_key_id[:12] in repr(key)
