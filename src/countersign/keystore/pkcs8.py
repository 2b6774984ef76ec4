"""PKCS#8 private keys exactly as notary 0.7 writes and reads them.

Notary's ``PrivateKeyInfo`` differs from what most tools write:

- ECDSA uses ``version = 1`` (which ``cryptography`` refuses), an algorithm
  identifier ``SEQUENCE {ecPublicKey, curve}`` and a SEC1 ``ECPrivateKey``;
- RSA uses ``version = 0`` and ``SEQUENCE {rsaEncryption}`` with *no* NULL;
- Ed25519 uses the OID 1.3.6.1.4.1.11591.15.1 and a 96-byte blob.

Encryption is PBES2: PBKDF2 (8-byte salt, 2048 iterations, no PRF field, so
HMAC-SHA1) and AES-256-CBC with a 16-byte IV. Notary always uses SHA-1 when
reading, so keys written here for notary use exactly that. The reader also
accepts what openssl writes (version 0, NULL parameters, a PRF field such as
hmacWithSHA256, AES-128/192, RFC 8410 Ed25519) and refuses everything else
with a :class:`~countersign.errors.KeyFormatError`.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from countersign.errors import KeyFormatError, PassphraseError
from countersign.keystore import _cipher, _der, _rawkeys
from countersign.tuf.keys import PrivateKey

OID_RSA = "1.2.840.113549.1.1.1"
OID_EC = "1.2.840.10045.2.1"
OID_ED25519_NOTARY = "1.3.6.1.4.1.11591.15.1"
OID_ED25519 = "1.3.101.112"
OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
#: PBKDF2 PRFs by OID (the default, when the field is absent, is HMAC-SHA1).
PRFS = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
#: AES-CBC schemes accepted when reading, with their key sizes.
AES_CBC = {
    "2.16.840.1.101.3.4.1.2": 16,
    "2.16.840.1.101.3.4.1.22": 24,
    OID_AES256_CBC: 32,
}
_PBES1_PREFIXES = ("1.2.840.113549.1.5.", "1.2.840.113549.1.12.1.")

#: What notary writes: salt and IV sizes and the PBKDF2 iteration count.
SALT_BYTES = 8
IV_BYTES = 16
ITERATIONS = 2048
#: Iteration counts accepted when reading; more would let a key file stall us.
MAX_ITERATIONS = 10_000_000
_MAX_SALT_BYTES = 64

_REENCRYPT = "re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"


def _private_key_info(key: PrivateKey) -> bytes:
    crypto_key = key.crypto_key
    if isinstance(crypto_key, ec.EllipticCurvePrivateKey):
        algorithm = _der.sequence(_der.oid(OID_EC), _der.oid(_rawkeys.curve_oid(crypto_key)))
        return _der.sequence(
            _der.integer(1), algorithm, _der.octet_string(_rawkeys.encode_sec1(crypto_key))
        )
    if isinstance(crypto_key, rsa.RSAPrivateKey):
        body = _rawkeys.encode_pkcs1(crypto_key)
        algorithm = _der.sequence(_der.oid(OID_RSA))
    else:
        body = _rawkeys.encode_notary_ed25519(crypto_key)
        algorithm = _der.sequence(_der.oid(OID_ED25519_NOTARY))
    return _der.sequence(_der.integer(0), algorithm, _der.octet_string(body))


def encode_private_key(key: PrivateKey, passphrase: str) -> bytes:
    """DER as notary writes it: encrypted with ``passphrase``, or clear if it is empty."""
    info = _private_key_info(key)
    if passphrase == "":
        return info
    return _encrypt(info, passphrase, os.urandom(SALT_BYTES), os.urandom(IV_BYTES))


def _encrypt(info: bytes, passphrase: str, salt: bytes, iv: bytes) -> bytes:
    """notary's EncryptedPrivateKeyInfo for ``info`` with a given salt and IV."""
    secret = _cipher.pbkdf2("sha1", _cipher.passphrase_bytes(passphrase), salt, ITERATIONS, 32)
    encrypted = _cipher.encrypt_cbc(secret, iv, info)
    kdf = _der.sequence(
        _der.oid(OID_PBKDF2), _der.sequence(_der.octet_string(salt), _der.integer(ITERATIONS))
    )
    scheme = _der.sequence(_der.oid(OID_AES256_CBC), _der.octet_string(iv))
    algorithm = _der.sequence(_der.oid(OID_PBES2), _der.sequence(kdf, scheme))
    return _der.sequence(algorithm, _der.octet_string(encrypted))


def decode_private_key(der: bytes, passphrase: str | None, *, encrypted: bool) -> PrivateKey:
    """The key in a (possibly encrypted) PKCS#8 DER structure.

    ``encrypted`` says which structure to expect (the PEM type tells). A wrong
    passphrase is a :class:`PassphraseError`, so is a missing one for an
    encrypted key; malformed or unsupported input is a :class:`KeyFormatError`.
    """
    if not encrypted:
        return _decode_info(bytes(der), "PrivateKeyInfo")
    if passphrase is None:
        raise PassphraseError(
            "the private key is encrypted and no passphrase was given",
            advice="supply the key's passphrase",
        )
    plain = _decrypt(bytes(der), passphrase)
    try:
        return _decode_info(plain, "decrypted PrivateKeyInfo")
    except _der.DERError:
        raise _wrong_passphrase() from None


def _wrong_passphrase() -> PassphraseError:
    return PassphraseError(
        "wrong passphrase for the encrypted private key (or the key data is damaged)",
        advice="check the passphrase; notary reads its NOTARY_<ROLE>_PASSPHRASE variables",
    )


def _decode_info(der: bytes, what: str) -> PrivateKey:
    reader = _der.top_sequence(der, what)
    version = reader.integer("version")
    if version not in (0, 1):
        raise _der.DERError(f"{what}: unknown version {version}")
    algorithm = reader.sequence("privateKeyAlgorithm")
    oid = algorithm.oid("algorithm")
    curve: str | None = None
    if oid == OID_EC:
        if algorithm.peek_tag() != _der.OID:
            raise KeyFormatError(
                f"{what}: the EC key does not use a named curve",
                advice="use P-256, P-384 or P-521",
            )
        curve = algorithm.oid("namedCurve")
    elif oid in (OID_RSA, OID_ED25519_NOTARY) and not algorithm.at_end():
        algorithm.null("parameters")
    algorithm.done()
    body = reader.octet_string("privateKey")
    if reader.peek_tag() == _der.context(0):
        reader.read(_der.context(0), "attributes")
    public_tags = (_der.context(1, constructed=False), _der.context(1))
    next_tag = reader.peek_tag()
    if version == 1 and next_tag in public_tags:
        reader.read(next_tag or 0, "publicKey")
    reader.done()
    if oid == OID_EC:
        return _rawkeys.decode_sec1(body, curve, f"{what} (ECDSA)")
    if oid == OID_RSA:
        return _rawkeys.decode_pkcs1(body, f"{what} (RSA)")
    if oid == OID_ED25519_NOTARY:
        return _rawkeys.decode_notary_ed25519(body, f"{what} (Ed25519)")
    if oid == OID_ED25519:
        return _rawkeys.decode_rfc8410_ed25519(body, f"{what} (Ed25519)")
    raise KeyFormatError(
        f"{what}: private key algorithm {oid} is not supported",
        advice="notary keys are ECDSA, RSA or Ed25519",
    )


def _decrypt(der: bytes, passphrase: str) -> bytes:
    what = "EncryptedPrivateKeyInfo"
    reader = _der.top_sequence(der, what)
    algorithm = reader.sequence("encryptionAlgorithm")
    scheme = algorithm.oid("algorithm")
    if scheme != OID_PBES2:
        if scheme.startswith(_PBES1_PREFIXES):
            raise KeyFormatError(
                f"{what}: PBES1/PKCS#12 encryption ({scheme}) is not supported; only PBES2",
                advice=_REENCRYPT,
            )
        raise KeyFormatError(
            f"{what}: encryption scheme {scheme} is not supported", advice=_REENCRYPT
        )
    params = algorithm.sequence("PBES2-params")
    algorithm.done()

    kdf = params.sequence("keyDerivationFunc")
    kdf_oid = kdf.oid("algorithm")
    if kdf_oid != OID_PBKDF2:
        raise KeyFormatError(
            f"{what}: key derivation {kdf_oid} is not supported; only PBKDF2", advice=_REENCRYPT
        )
    kdf_params = kdf.sequence("PBKDF2-params")
    kdf.done()
    if kdf_params.peek_tag() != _der.OCTET_STRING:
        raise KeyFormatError(f"{what}: PBKDF2 salt must be given explicitly")
    salt = kdf_params.octet_string("salt")
    if not 1 <= len(salt) <= _MAX_SALT_BYTES:
        raise KeyFormatError(f"{what}: PBKDF2 salt of {len(salt)} bytes")
    iterations = kdf_params.unsigned("iterationCount", max_bytes=8)
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise KeyFormatError(
            f"{what}: PBKDF2 iteration count {iterations} is outside 1..{MAX_ITERATIONS}",
            advice=_REENCRYPT,
        )
    key_length: int | None = None
    if kdf_params.peek_tag() == _der.INTEGER:
        key_length = kdf_params.unsigned("keyLength", max_bytes=2)
    prf = "sha1"
    if kdf_params.peek_tag() == _der.SEQUENCE:
        prf_reader = kdf_params.sequence("prf")
        prf_oid = prf_reader.oid("algorithm")
        if not prf_reader.at_end():
            prf_reader.null("parameters")
        prf_reader.done()
        if prf_oid not in PRFS:
            raise KeyFormatError(
                f"{what}: PBKDF2 PRF {prf_oid} is not supported", advice=_REENCRYPT
            )
        prf = PRFS[prf_oid]
    kdf_params.done()

    cipher = params.sequence("encryptionScheme")
    cipher_oid = cipher.oid("algorithm")
    if cipher_oid not in AES_CBC:
        raise KeyFormatError(
            f"{what}: cipher {cipher_oid} is not supported; only AES-CBC", advice=_REENCRYPT
        )
    if cipher.peek_tag() != _der.OCTET_STRING:
        raise KeyFormatError(f"{what}: AES-CBC parameters must be a 16-byte IV")
    iv = cipher.octet_string("IV")
    cipher.done()
    params.done()
    if len(iv) != IV_BYTES:
        raise KeyFormatError(f"{what}: AES-CBC IV has {len(iv)} bytes, not {IV_BYTES}")
    size = AES_CBC[cipher_oid]
    if key_length is not None and key_length != size:
        raise KeyFormatError(f"{what}: PBKDF2 keyLength {key_length} does not fit the cipher")

    data = reader.octet_string("encryptedData")
    reader.done()
    if not data or len(data) % _cipher.BLOCK:
        raise KeyFormatError(f"{what}: encrypted data is not whole AES blocks (truncated?)")
    secret = _cipher.pbkdf2(prf, _cipher.passphrase_bytes(passphrase), salt, iterations, size)
    plain = _cipher.decrypt_cbc(secret, iv, data)
    if plain is None:
        raise _wrong_passphrase()
    return plain


def is_encrypted_info(der: bytes) -> bool:
    """Whether ``der`` looks like an EncryptedPrivateKeyInfo (first member a SEQUENCE)."""
    try:
        reader = _der.top_sequence(bytes(der), "PKCS#8")
        return reader.peek_tag() == _der.SEQUENCE
    except KeyFormatError:
        return False


__all__ = ["decode_private_key", "encode_private_key"]
