"""Public and private keys as notary 0.7 names, encodes and uses them.

A key in metadata is ``{"keytype": T, "keyval": {"private": null, "public": B64}}``.
Its TUF key ID is the SHA-256 of that object's canonical JSON; its canonical
key ID is the TUF key ID of the bare key behind a certificate (the name of the
private key file). Signature encodings follow notary exactly: ECDSA as raw
``r||s`` over SHA-256, RSA-PSS with a 32-byte salt, Ed25519 as ``eddsa``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from countersign.errors import (
    KeyFormatError,
    SignatureError,
    UnsupportedAlgorithmError,
)
from countersign.tuf.canonical import encode_checked

ECDSA = "ecdsa"
ECDSA_X509 = "ecdsa-x509"
RSA = "rsa"
RSA_X509 = "rsa-x509"
ED25519 = "ed25519"
KEY_TYPES = (ECDSA, ECDSA_X509, RSA, RSA_X509, ED25519)
CERTIFICATE_TYPES = (ECDSA_X509, RSA_X509)

METHOD_ECDSA = "ecdsa"
METHOD_RSAPSS = "rsapss"
METHOD_EDDSA = "eddsa"
#: The signature methods notary produces, and the key types each verifies with.
METHODS: Mapping[str, tuple[str, ...]] = {
    METHOD_ECDSA: (ECDSA, ECDSA_X509),
    METHOD_RSAPSS: (RSA, RSA_X509),
    METHOD_EDDSA: (ED25519,),
}

_METHOD_OF: Mapping[str, str] = {ECDSA: METHOD_ECDSA, RSA: METHOD_RSAPSS, ED25519: METHOD_EDDSA}

MIN_RSA_BITS = 2048
PSS_SALT_LENGTH = 32
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

CryptoPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
CryptoPrivateKey = (
    ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as Go encodes ``[]byte``."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64; anything else is a :class:`KeyFormatError`."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise KeyFormatError(f"{what} is not valid base64") from None


def key_id_of(keytype: str, public_b64: str) -> str:
    """The TUF key ID: hex SHA-256 of the canonical key object, ``private`` null included."""
    obj = {"keytype": keytype, "keyval": {"private": None, "public": public_b64}}
    return hashlib.sha256(encode_checked(obj)).hexdigest()


def _check_crypto_public(key: Any, what: str) -> CryptoPublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise UnsupportedAlgorithmError(
                f"{what}: ECDSA curve {key.curve.name} is not supported"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFormatError(
                f"{what}: RSA key of {key.key_size} bits; notary requires at least {MIN_RSA_BITS}"
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise UnsupportedAlgorithmError(f"{what}: {type(key).__name__} keys are not supported")


def _spki_der(key: CryptoPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _bare_type(key: CryptoPublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECDSA
    if isinstance(key, rsa.RSAPublicKey):
        return RSA
    return ED25519


def _bare_public(key: CryptoPublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return b64encode(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    return b64encode(_spki_der(key))


@dataclass(frozen=True)
class PublicKey:
    """A public key or certificate bundle exactly as it appears in metadata."""

    keytype: str
    public: str  # base64, exactly as written: the key ID hashes this string

    def __post_init__(self) -> None:
        if self.keytype in KEY_TYPES:
            self.crypto_key  # noqa: B018  - decode eagerly so bad keys fail at parse

    # --- construction -----------------------------------------------------
    @classmethod
    def from_dict(cls, obj: Any, *, where: str = "key") -> PublicKey:
        """Parse a metadata key object, refusing any that carries private material."""
        if not isinstance(obj, dict):
            raise KeyFormatError(f"{where} is not a JSON object")
        keytype = obj.get("keytype")
        keyval = obj.get("keyval")
        if not isinstance(keytype, str) or not isinstance(keyval, dict):
            raise KeyFormatError(f"{where} needs a string keytype and a keyval object")
        public = keyval.get("public")
        if not isinstance(public, str):
            raise KeyFormatError(f"{where}: keyval.public is not a string")
        if keyval.get("private") is not None:
            raise KeyFormatError(f"{where} carries private key material")
        b64decode(public, f"{where} public value")
        return cls(keytype.lower() if keytype.lower() in KEY_TYPES else keytype, public)

    @classmethod
    def from_crypto(cls, key: Any) -> PublicKey:
        """The bare key (``ecdsa``, ``rsa`` or ``ed25519``) for a ``cryptography`` key."""
        key = _check_crypto_public(key, "public key")
        return cls(_bare_type(key), _bare_public(key))

    @classmethod
    def from_certificates(cls, certs: list[x509.Certificate]) -> PublicKey:
        """An ``ecdsa-x509``/``rsa-x509`` key from a leaf certificate and its chain.

        The PEM text is Go's encoding (64 columns, LF, no headers), which is the
        form notary's root validator rebuilds and matches signatures against.
        """
        if not certs:
            raise KeyFormatError("a certificate key needs at least one certificate")
        leaf = _check_crypto_public(certs[0].public_key(), "certificate")
        keytype = ECDSA_X509 if isinstance(leaf, ec.EllipticCurvePublicKey) else RSA_X509
        if isinstance(leaf, ed25519.Ed25519PublicKey):
            raise UnsupportedAlgorithmError("notary has no certificate key type for Ed25519")
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        return cls(keytype, b64encode(pem))

    def to_dict(self) -> dict[str, Any]:
        return {"keytype": self.keytype, "keyval": {"private": None, "public": self.public}}

    # --- identity ---------------------------------------------------------
    @cached_property
    def key_id(self) -> str:
        """The TUF key ID, used in roles and in signatures."""
        return key_id_of(self.keytype, self.public)

    @cached_property
    def canonical_key_id(self) -> str:
        """The ID of the bare key: for certificates, of the leaf's public key."""
        if self.keytype in CERTIFICATE_TYPES:
            return self.bare().key_id
        return self.key_id

    def bare(self) -> PublicKey:
        """The bare key behind this key (itself unless it is a certificate)."""
        if self.keytype not in CERTIFICATE_TYPES:
            return self
        return PublicKey.from_crypto(self.crypto_key)

    @property
    def is_certificate(self) -> bool:
        return self.keytype in CERTIFICATE_TYPES

    @property
    def algorithm(self) -> str:
        """``ecdsa``, ``rsa`` or ``ed25519`` (the bare type), or the unknown keytype."""
        return {ECDSA_X509: ECDSA, RSA_X509: RSA}.get(self.keytype, self.keytype)

    @property
    def method(self) -> str:
        """The signature method notary uses with this key ("" for an unknown type)."""
        return _METHOD_OF.get(self.algorithm, "")

    @cached_property
    def certificates(self) -> list[x509.Certificate]:
        """The certificates of an ``*-x509`` key, leaf first."""
        if self.keytype not in CERTIFICATE_TYPES:
            return []
        data = b64decode(self.public, "certificate key")
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise KeyFormatError(f"{self.keytype} key does not hold a PEM certificate")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise KeyFormatError(f"{self.keytype} key holds a bad certificate: {exc}") from None
        return certs

    @cached_property
    def crypto_key(self) -> CryptoPublicKey:
        """The ``cryptography`` public key, checked for type, curve and size."""
        what = f"{self.keytype} key"
        if self.keytype in CERTIFICATE_TYPES:
            try:
                key = self.certificates[0].public_key()
            except (ValueError, UnsupportedAlgorithm):
                raise KeyFormatError(f"{what}: the certificate's public key is invalid") from None
            expected: type = (
                ec.EllipticCurvePublicKey if self.keytype == ECDSA_X509 else rsa.RSAPublicKey
            )
            if not isinstance(key, expected):
                raise KeyFormatError(f"{what}: the certificate holds another kind of key")
            return _check_crypto_public(key, what)
        raw = b64decode(self.public, what)
        if self.keytype == ED25519:
            if len(raw) != 32:
                raise KeyFormatError(f"{what}: an Ed25519 public key has 32 bytes, not {len(raw)}")
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        if self.keytype in (ECDSA, RSA):
            try:
                loaded = serialization.load_der_public_key(raw)
            except (ValueError, UnsupportedAlgorithm):
                raise KeyFormatError(f"{what}: not a DER SubjectPublicKeyInfo") from None
            expected = ec.EllipticCurvePublicKey if self.keytype == ECDSA else rsa.RSAPublicKey
            if not isinstance(loaded, expected):
                raise KeyFormatError(f"{what}: the encoded key is of another kind")
            return _check_crypto_public(loaded, what)
        raise UnsupportedAlgorithmError(f"key type {self.keytype!r} is not supported")

    # --- verification -----------------------------------------------------
    def verify(self, method: str, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` by this key over ``message`` is valid for ``method``."""
        if self.keytype not in METHODS.get(method, ()):
            return False
        try:
            key = self.crypto_key
            if isinstance(key, ec.EllipticCurvePublicKey):
                width = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * width:
                    return False
                r = int.from_bytes(signature[:width], "big")
                s = int.from_bytes(signature[width:], "big")
                key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, message, _pss(), hashes.SHA256())
            else:
                key.verify(signature, message)
        except (InvalidSignature, ValueError, KeyFormatError, UnsupportedAlgorithmError):
            return False
        return True


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


class Signer(Protocol):
    """What signs metadata: a local key here, a KMS or HSM behind the same three members."""

    @property
    def method(self) -> str: ...

    @property
    def canonical_key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class PrivateKey:
    """A private key that signs as notary does. Its repr never shows key material."""

    def __init__(self, key: CryptoPrivateKey) -> None:
        _check_crypto_public(key.public_key(), "private key")
        self._key = key

    @classmethod
    def generate(cls, algorithm: str = ECDSA, *, rsa_bits: int = 4096) -> PrivateKey:
        """A new key: ECDSA P-256 as notary makes by default, or RSA or Ed25519."""
        if algorithm == ECDSA:
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == RSA:
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
        if algorithm == ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise UnsupportedAlgorithmError(
            f"cannot generate {algorithm!r} keys", advice="use ecdsa, rsa or ed25519"
        )

    @property
    def crypto_key(self) -> CryptoPrivateKey:
        return self._key

    @cached_property
    def public_key(self) -> PublicKey:
        return PublicKey.from_crypto(self._key.public_key())

    @property
    def algorithm(self) -> str:
        return self.public_key.keytype

    @property
    def method(self) -> str:
        return _METHOD_OF[self.algorithm]

    @property
    def canonical_key_id(self) -> str:
        return self.public_key.key_id

    def public_pem(self) -> bytes:
        """The public key as a ``PUBLIC KEY`` PEM (SubjectPublicKeyInfo), for sharing."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def matches(self, public: PublicKey) -> bool:
        """Whether ``public`` (bare or certificate) is this key's public half."""
        try:
            return public.canonical_key_id == self.canonical_key_id
        except (KeyFormatError, UnsupportedAlgorithmError):
            return False

    def sign(self, message: bytes) -> bytes:
        key = self._key
        try:
            if isinstance(key, ec.EllipticCurvePrivateKey):
                r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
                width = (key.curve.key_size + 7) // 8
                return r.to_bytes(width, "big") + s.to_bytes(width, "big")
            if isinstance(key, rsa.RSAPrivateKey):
                return key.sign(message, _pss(), hashes.SHA256())
            return key.sign(message)
        except ValueError as exc:  # pragma: no cover - cryptography refusing a valid key
            raise SignatureError(f"signing failed: {exc}") from None

    def __repr__(self) -> str:
        return f"PrivateKey({self.algorithm}, {self.canonical_key_id[:12]})"
