"""The key bodies inside PKCS#8 and legacy PEM: SEC1, PKCS#1 and notary's Ed25519 blob.

The writers reproduce Go's ``x509.MarshalECPrivateKey`` and
``x509.MarshalPKCS1PrivateKey`` byte for byte; the readers are strict and
check that every public part present agrees with the private key.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from countersign.errors import KeyFormatError, UnsupportedAlgorithmError
from countersign.keystore import _der
from countersign.tuf.keys import CryptoPrivateKey, PrivateKey

#: Named curves notary supports, by OID: (curve class, private scalar bytes).
CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "1.2.840.10045.3.1.7": (ec.SECP256R1, 32),
    "1.3.132.0.34": (ec.SECP384R1, 48),
    "1.3.132.0.35": (ec.SECP521R1, 66),
}
#: Largest RSA component accepted (16384-bit moduli), in bytes.
_MAX_RSA_BYTES = 2048
ED25519_BLOB = 96


def make_key(crypto_key: CryptoPrivateKey, what: str) -> PrivateKey:
    """Wrap in :class:`PrivateKey`, turning its refusals into key format errors."""
    try:
        return PrivateKey(crypto_key)
    except UnsupportedAlgorithmError as exc:
        raise KeyFormatError(f"{what}: {exc.message}", advice=exc.advice) from None
    except KeyFormatError as exc:
        raise KeyFormatError(f"{what}: {exc.message}", advice=exc.advice) from None


# --- ECDSA (SEC1 ECPrivateKey) ----------------------------------------------


def curve_oid(key: ec.EllipticCurvePrivateKey) -> str:
    for oid, (curve_cls, _) in CURVES.items():
        if isinstance(key.curve, curve_cls):
            return oid
    raise KeyFormatError(f"ECDSA curve {key.curve.name} is not supported")


def encode_sec1(key: ec.EllipticCurvePrivateKey) -> bytes:
    """ECPrivateKey{1, d padded to the order size, [0] curve, [1] uncompressed point}."""
    oid = curve_oid(key)
    size = CURVES[oid][1]
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _der.sequence(
        _der.integer(1),
        _der.octet_string(key.private_numbers().private_value.to_bytes(size, "big")),
        _der.explicit(0, _der.oid(oid)),
        _der.explicit(1, _der.bit_string(point)),
    )


def decode_sec1(der: bytes, algorithm_curve: str | None, what: str) -> PrivateKey:
    """An ECPrivateKey; its curve comes from PKCS#8 parameters and/or its own ``[0]``."""
    reader = _der.top_sequence(der, what)
    if reader.integer("version") != 1:
        raise _der.DERError(f"{what}: ECPrivateKey version must be 1")
    scalar = reader.octet_string("privateKey")
    inner_curve: str | None = None
    point: bytes | None = None
    if reader.peek_tag() == _der.context(0):
        params = reader.explicit(0, "parameters")
        inner_curve = params.oid("namedCurve")
        params.done()
    if reader.peek_tag() == _der.context(1):
        public_part = reader.explicit(1, "publicKey")
        point = public_part.bit_string("publicKey")
        public_part.done()
    reader.done()
    if algorithm_curve and inner_curve and algorithm_curve != inner_curve:
        raise KeyFormatError(f"{what}: the key names two different curves")
    oid = algorithm_curve or inner_curve
    if oid is None:
        raise KeyFormatError(f"{what}: the EC key does not name its curve")
    if oid not in CURVES:
        raise KeyFormatError(
            f"{what}: EC curve {oid} is not supported", advice="use P-256, P-384 or P-521"
        )
    curve_cls, size = CURVES[oid]
    if not scalar or len(scalar) > size:
        raise KeyFormatError(f"{what}: EC private scalar has {len(scalar)} bytes")
    try:
        crypto_key = ec.derive_private_key(int.from_bytes(scalar, "big"), curve_cls())
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(f"{what}: EC private scalar is out of range") from None
    if point is not None:
        public = crypto_key.public_key()
        encodings = {
            public.public_bytes(serialization.Encoding.X962, fmt)
            for fmt in (
                serialization.PublicFormat.UncompressedPoint,
                serialization.PublicFormat.CompressedPoint,
            )
        }
        if point not in encodings:
            raise KeyFormatError(f"{what}: the stored public key does not match the private key")
    return make_key(crypto_key, what)


# --- RSA (PKCS#1 RSAPrivateKey) ---------------------------------------------


def encode_pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    """RSAPrivateKey{0, n, e, d, p, q, dP, dQ, qInv}, as Go's MarshalPKCS1PrivateKey."""
    priv = key.private_numbers()
    pub = priv.public_numbers
    values = (0, pub.n, pub.e, priv.d, priv.p, priv.q, priv.dmp1, priv.dmq1, priv.iqmp)
    return _der.sequence(*(_der.integer(v) for v in values))


def decode_pkcs1(der: bytes, what: str) -> PrivateKey:
    reader = _der.top_sequence(der, what)
    version = reader.integer("version")
    if version != 0:
        raise KeyFormatError(
            f"{what}: RSA key version {version} (multi-prime keys are not supported)"
        )
    names = (
        "modulus",
        "publicExponent",
        "privateExponent",
        "prime1",
        "prime2",
        "exponent1",
        "exponent2",
        "coefficient",
    )
    n, e, d, p, q, dmp1, dmq1, iqmp = (
        reader.unsigned(name, max_bytes=_MAX_RSA_BYTES) for name in names
    )
    reader.done()
    if min(n, e, d, p, q, dmp1, dmq1, iqmp) <= 0 or p * q != n or e >= n:
        raise KeyFormatError(f"{what}: the RSA key's numbers are inconsistent")
    numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
    try:
        crypto_key = numbers.private_key()
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(f"{what}: the RSA key's numbers are inconsistent") from None
    return make_key(crypto_key, what)


# --- Ed25519 ------------------------------------------------------------------


def _raw_public(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode_notary_ed25519(key: ed25519.Ed25519PrivateKey) -> bytes:
    """notary's 96 bytes: public key, then Go's private key (seed, public key)."""
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public = _raw_public(key)
    return public + seed + public


def _from_seed(seed: bytes, what: str) -> ed25519.Ed25519PrivateKey:
    try:
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(f"{what}: not a valid Ed25519 seed") from None


def decode_notary_ed25519(blob: bytes, what: str) -> PrivateKey:
    if len(blob) != ED25519_BLOB:
        raise KeyFormatError(
            f"{what}: notary's Ed25519 key has {ED25519_BLOB} bytes, not {len(blob)}"
        )
    crypto_key = _from_seed(blob[32:64], what)
    public = _raw_public(crypto_key)
    if blob[:32] != public or blob[64:] != public:
        raise KeyFormatError(f"{what}: the stored Ed25519 public key does not match the seed")
    return make_key(crypto_key, what)


def decode_rfc8410_ed25519(body: bytes, what: str) -> PrivateKey:
    """RFC 8410's CurvePrivateKey (an OCTET STRING holding the 32-byte seed)."""
    tag, seed = _der.element_of(body, what)
    if tag != _der.OCTET_STRING or len(seed) != 32:
        raise KeyFormatError(f"{what}: not an RFC 8410 Ed25519 private key")
    return make_key(_from_seed(seed, what), what)
