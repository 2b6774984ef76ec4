"""The built-in signer: the server's timestamp and snapshot keys.

Keys are made on demand, one set per GUN, and stored in the database encrypted
with AES-256-GCM under a key derived (scrypt) from the operator's passphrase,
which never reaches the database. Routes and update logic only see the
:class:`KeyService` protocol, so a KMS or HSM backend can replace this one.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from countersign.errors import CountersignError
from countersign.server.storage import KeyRecord, Storage
from countersign.tuf import PrivateKey, PublicKey, Signer
from countersign.tuf.canonical import encode_canonical, parse_json

PASSPHRASE_ENV = "COUNTERSIGN_SIGNER_PASSPHRASE"  # noqa: S105 - a variable name
SERVER_ROLES = ("timestamp", "snapshot")
_MAGIC = b"CSK1"
_SCRYPT_N = 2**14


class SignerError(CountersignError):
    """The signer cannot make, unlock or use a key."""


class KeyService(Protocol):
    """What the server needs of a signer, whatever holds the private keys."""

    algorithm: str

    def create(self, gun: str, role: str) -> PublicKey:
        """Make a new key for ``gun``/``role`` and return its public half."""
        ...

    def newest(self, gun: str, role: str) -> PublicKey | None:
        """The most recently made key for ``gun``/``role``, if any."""
        ...

    def signers(self, gun: str, role: str, keys: Iterable[PublicKey]) -> list[Signer]:
        """Signers for those of ``keys`` whose private halves this service holds."""
        ...


def load_passphrase(file: Path | None = None) -> str:
    """The key-encryption passphrase: from ``file`` (first line) or the environment."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SignerError(f"signer passphrase file {file}: {exc.strerror}") from None
        value = text[0].strip() if text else ""
    else:
        value = os.environ.get(PASSPHRASE_ENV, "")
    if len(value) < 8:
        raise SignerError(
            "the signer needs a key-encryption passphrase of at least 8 characters",
            advice=f"set {PASSPHRASE_ENV} or pass --signer-passphrase-file FILE",
        )
    return value


class DatabaseKeyService:
    """Keys in the ``server_keys`` table, encrypted at rest; unlocked keys cached in memory."""

    def __init__(self, storage: Storage, passphrase: str, algorithm: str = "ecdsa",
                 cache_size: int = 4096) -> None:
        if algorithm not in ("ecdsa", "rsa", "ed25519"):
            raise SignerError(f"key algorithm {algorithm!r} is not supported",
                              advice="use ecdsa, rsa or ed25519")
        self.algorithm = algorithm
        self._storage = storage
        self._passphrase = passphrase.encode("utf-8")
        self._cache: OrderedDict[str, PrivateKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DatabaseKeyService({self.algorithm})"

    def _kdf(self, salt: bytes) -> bytes:
        return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(self._passphrase)

    def _seal(self, key: PrivateKey, key_id: str) -> bytes:
        der = key.crypto_key.private_bytes(serialization.Encoding.DER,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        salt, nonce = os.urandom(16), os.urandom(12)
        sealed = AESGCM(self._kdf(salt)).encrypt(nonce, der, key_id.encode())
        return _MAGIC + salt + nonce + sealed

    def _open(self, record: KeyRecord) -> PrivateKey:
        blob = record.private
        if not blob.startswith(_MAGIC) or len(blob) < 4 + 16 + 12 + 16:
            raise SignerError(f"server key {record.key_id[:12]} is not in a known format")
        salt, nonce, sealed = blob[4:20], blob[20:32], blob[32:]
        try:
            der = AESGCM(self._kdf(salt)).decrypt(nonce, sealed, record.key_id.encode())
        except InvalidTag:
            raise SignerError(
                f"cannot unlock server key {record.key_id[:12]}: wrong signer passphrase",
                advice=f"start the server with the passphrase it was set up with "
                f"({PASSPHRASE_ENV})",
            ) from None
        loaded = serialization.load_der_private_key(der, password=None)
        return PrivateKey(loaded)  # type: ignore[arg-type]

    def create(self, gun: str, role: str) -> PublicKey:
        key = PrivateKey.generate(self.algorithm, rsa_bits=3072)
        public = key.public_key
        record = KeyRecord(
            key_id=public.key_id, gun=gun, role=role, algorithm=self.algorithm,
            public=encode_canonical(public.to_dict()), private=self._seal(key, public.key_id),
            created_at=_dt.datetime.now(_dt.UTC),
        )
        self._storage.add_key(record)
        self._remember(public.key_id, key)
        return public

    def newest(self, gun: str, role: str) -> PublicKey | None:
        records = self._storage.keys(gun, role)
        return _public(records[0]) if records else None

    def signers(self, gun: str, role: str, keys: Iterable[PublicKey]) -> list[Signer]:
        wanted = {k.canonical_key_id for k in keys}
        found: list[Signer] = []
        for key_id in wanted:
            cached = self._cached(key_id)
            if cached is not None:
                found.append(cached)
        if len(found) == len(wanted):
            return found
        have = {s.canonical_key_id for s in found}
        for record in self._storage.keys(gun, role):
            if record.key_id in wanted and record.key_id not in have:
                key = self._open(record)
                self._remember(record.key_id, key)
                found.append(key)
                have.add(record.key_id)
        return found

    def _cached(self, key_id: str) -> PrivateKey | None:
        with self._lock:
            key = self._cache.get(key_id)
            if key is not None:
                self._cache.move_to_end(key_id)
            return key

    def _remember(self, key_id: str, key: PrivateKey) -> None:
        with self._lock:
            self._cache[key_id] = key
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _public(record: KeyRecord) -> PublicKey:
    return PublicKey.from_dict(parse_json(record.public, what="stored server key"))


__all__ = ["PASSPHRASE_ENV", "DatabaseKeyService", "KeyService", "SignerError",
           "load_passphrase"]
