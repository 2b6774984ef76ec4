"""One private key file: its PEM block, the role and GUN headers, and how to unlock it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from countersign.errors import KeyFormatError, KeyRoleError, PassphraseError
from countersign.keystore import _legacy, pkcs8
from countersign.keystore.pem import PemBlock, decode_pem, encode_pem
from countersign.tuf.keys import PrivateKey

CLEAR = "PRIVATE KEY"
ENCRYPTED = "ENCRYPTED PRIVATE KEY"
#: Roles whose keys belong to one repository; only they carry a ``gun`` header.
GUN_ROLES = ("targets", "snapshot", "timestamp")
#: notary's role for an imported key that names none.
DEFAULT_IMPORT_ROLE = "delegation"
_ROLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,254}")
_GUN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:@]{0,254}")
_KEY_ID = re.compile(r"[0-9a-f]{64}")


def is_key_id(text: str) -> bool:
    return bool(_KEY_ID.fullmatch(text))


def check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE.fullmatch(role) or ".." in role.split("/"):
        raise KeyRoleError(
            f"{role!r} is not a usable role name",
            advice="use root, targets, snapshot, timestamp, targets/<name> or a signer name",
        )
    return role


def check_gun(gun: str) -> str:
    if not isinstance(gun, str) or not _GUN.fullmatch(gun):
        raise KeyRoleError(
            f"{gun!r} is not a usable GUN", advice="a GUN looks like registry.example.com/org/repo"
        )
    return gun


@dataclass(frozen=True)
class KeyFile:
    """What a key file says about itself without being decrypted."""

    block: PemBlock
    role: str | None
    gun: str | None
    encrypted: bool

    @property
    def legacy(self) -> bool:
        return self.block.type in _legacy.TYPES


def parse(data: bytes, what: str) -> KeyFile:
    """The key file's block and headers; refuses anything that is not a private key."""
    block = decode_pem(data, what)
    if block.type == ENCRYPTED:
        encrypted = True
    elif block.type == CLEAR:
        encrypted = False
    elif block.type in _legacy.TYPES:
        encrypted = _legacy.is_encrypted(block, what)
    else:
        advice = (
            "this is a public key; the private key is the *-key.pem file"
            if block.type == "PUBLIC KEY"
            else None
        )
        raise KeyFormatError(
            f"{what}: a {block.type!r} PEM block is not a private key", advice=advice
        )
    role = block.headers.get("role") or None
    gun = block.headers.get("gun") or None
    return KeyFile(block, role, gun, encrypted)


def unlock(key_file: KeyFile, passphrase: str | None, what: str) -> PrivateKey:
    """The private key; ``passphrase`` is used only when the file is encrypted."""
    block = key_file.block
    if key_file.legacy:
        return _legacy.decode(block, passphrase, what)
    if not key_file.encrypted and pkcs8.is_encrypted_info(block.der):
        raise KeyFormatError(
            f"{what}: labelled {CLEAR!r} but holds an encrypted key",
            advice=f"the PEM type should be {ENCRYPTED!r}",
        )
    try:
        return pkcs8.decode_private_key(
            block.der, passphrase if key_file.encrypted else None, encrypted=key_file.encrypted
        )
    except (KeyFormatError, PassphraseError) as exc:
        raise type(exc)(f"{what}: {exc.message}", advice=exc.advice) from None


def headers_for(role: str, gun: str | None) -> dict[str, str]:
    """notary's headers: ``role`` always, ``gun`` only for repository-bound roles."""
    headers = {"role": role}
    if gun and role in GUN_ROLES:
        headers["gun"] = gun
    return headers


def render(
    key: PrivateKey,
    role: str,
    gun: str | None,
    passphrase: str,
    *,
    extra: dict[str, str] | None = None,
) -> bytes:
    """The key file notary's ``ConvertPrivateKeyToPKCS8`` would write."""
    headers = headers_for(role, gun)
    headers.update(extra or {})
    block_type = CLEAR if passphrase == "" else ENCRYPTED
    return encode_pem(PemBlock(block_type, headers, pkcs8.encode_private_key(key, passphrase)))
