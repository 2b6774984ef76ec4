"""The symmetric pieces of key-file encryption: KDFs, AES-CBC and PKCS#7 padding."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from countersign.errors import PassphraseError

BLOCK = 16


def passphrase_bytes(passphrase: str) -> bytes:
    """The bytes Go would use for ``passphrase``.

    ``surrogateescape`` gives back the raw bytes of an environment variable
    that is not UTF-8, which is what notary (reading the same variable) uses.
    """
    try:
        return passphrase.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise PassphraseError("the passphrase is not valid text (lone surrogate)") from None


def pbkdf2(hash_name: str, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, length)


def evp_bytes_to_key(password: bytes, salt: bytes, length: int) -> bytes:
    """OpenSSL's legacy one-round MD5 KDF, used by ``Proc-Type: 4,ENCRYPTED`` PEM."""
    out = b""
    block = b""
    while len(out) < length:
        block = hashlib.md5(block + password + salt, usedforsecurity=False).digest()
        out += block
    return out[:length]


def encrypt_cbc(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding (a full block when already aligned), as notary pads."""
    pad = BLOCK - len(plaintext) % BLOCK
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()


def decrypt_cbc(key: bytes, iv: bytes, ciphertext: bytes) -> bytes | None:
    """The unpadded plaintext, or None when the padding is wrong (a wrong passphrase)."""
    if not ciphertext or len(ciphertext) % BLOCK or len(iv) != BLOCK:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        return None
    return plain[:-pad]
