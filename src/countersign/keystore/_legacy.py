"""Pre-PKCS#8 key blocks as notary 0.1-0.3 wrote them (and notary 0.7 still reads).

``EC PRIVATE KEY`` (SEC1), ``RSA PRIVATE KEY`` (PKCS#1) and notary's own
``ED25519 PRIVATE KEY`` (the 96-byte blob), optionally encrypted the old
OpenSSL way: ``Proc-Type: 4,ENCRYPTED`` and ``DEK-Info: AES-256-CBC,<IV hex>``,
key = EVP_BytesToKey(MD5, passphrase, first 8 IV bytes). Decoding is done
here, not by ``cryptography``, because the Ed25519 form is notary's own and
the extra ``role``/``gun`` headers are not OpenSSL's.
"""

from __future__ import annotations

import binascii

from countersign.errors import KeyFormatError, PassphraseError
from countersign.keystore import _cipher, _der, _rawkeys
from countersign.keystore.pem import PemBlock
from countersign.tuf.keys import PrivateKey

EC = "EC PRIVATE KEY"
RSA = "RSA PRIVATE KEY"
ED25519 = "ED25519 PRIVATE KEY"
TYPES = (EC, RSA, ED25519)
_DEK_CIPHERS = {"AES-128-CBC": 16, "AES-192-CBC": 24, "AES-256-CBC": 32}


def is_encrypted(block: PemBlock, what: str) -> bool:
    proc_type = block.headers.get("Proc-Type")
    if proc_type is None:
        if "DEK-Info" in block.headers:
            raise KeyFormatError(f"{what}: DEK-Info header without Proc-Type")
        return False
    if proc_type.replace(" ", "") != "4,ENCRYPTED":
        raise KeyFormatError(f"{what}: unsupported Proc-Type {proc_type!r}")
    return True


def _decrypt(block: PemBlock, passphrase: str, what: str) -> bytes:
    dek = block.headers.get("DEK-Info", "")
    name, _, iv_hex = dek.partition(",")
    name = name.strip().upper()
    if name not in _DEK_CIPHERS:
        raise KeyFormatError(
            f"{what}: legacy encryption {name or '(none)'} is not supported",
            advice="only AES-CBC encrypted legacy keys can be read",
        )
    try:
        iv = binascii.unhexlify(iv_hex.strip())
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what}: DEK-Info IV is not hexadecimal") from None
    if len(iv) != _cipher.BLOCK:
        raise KeyFormatError(f"{what}: DEK-Info IV has {len(iv)} bytes, not 16")
    if not block.der or len(block.der) % _cipher.BLOCK:
        raise KeyFormatError(f"{what}: encrypted data is not whole AES blocks (truncated?)")
    secret = _cipher.evp_bytes_to_key(
        _cipher.passphrase_bytes(passphrase), iv[:8], _DEK_CIPHERS[name]
    )
    plain = _cipher.decrypt_cbc(secret, iv, block.der)
    if plain is None:
        raise _wrong()
    return plain


def _wrong() -> PassphraseError:
    return PassphraseError(
        "wrong passphrase for the encrypted legacy private key (or the key data is damaged)",
        advice="check the passphrase",
    )


def decode(block: PemBlock, passphrase: str | None, what: str) -> PrivateKey:
    """The key in a legacy block; ``passphrase`` is needed only when it is encrypted."""
    encrypted = is_encrypted(block, what)
    body = block.der
    if encrypted:
        if passphrase is None:
            raise PassphraseError(
                f"{what}: the private key is encrypted and no passphrase was given",
                advice="supply the key's passphrase",
            )
        body = _decrypt(block, passphrase, what)
    try:
        if block.type == EC:
            return _rawkeys.decode_sec1(body, None, f"{what} (ECDSA)")
        if block.type == RSA:
            return _rawkeys.decode_pkcs1(body, f"{what} (RSA)")
        if block.type == ED25519:
            if encrypted and len(body) != _rawkeys.ED25519_BLOB:
                raise _wrong()
            return _rawkeys.decode_notary_ed25519(body, f"{what} (Ed25519)")
    except _der.DERError:
        if encrypted:
            raise _wrong() from None
        raise
    raise KeyFormatError(f"{what}: {block.type!r} is not a legacy private key type")
