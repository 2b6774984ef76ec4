"""Private keys in a notary trust directory, in notary 0.7's own layout and format.

Keys live in ``<trust_dir>/private/<canonical key ID>.key`` (files 0600,
directories 0700) as PKCS#8 PEM with ``role`` and, for targets, snapshot and
timestamp keys, ``gun`` headers, so ``notary`` and ``countersign`` can share
one trust directory. Keys in notary's older layouts (``private/root_keys/``
and ``private/tuf_keys/<gun>/``, file names ``<id>.key`` or ``<id>_<role>.key``)
are listed and loaded too, never written; the role and GUN implied by their
path win over their headers, as in notary's own migration.

Rules worth knowing:

- A key file whose name is not its key's canonical ID is refused when
  loaded (:class:`KeystoreError`): signing with it would produce signatures
  under an ID nobody expects. The check needs the decrypted key, so
  :meth:`KeyStore.list` (which reads headers only) cannot make it.
- Root and delegation keys are not tied to a repository: a GUN is dropped
  for them (as notary does) and ignored when matching them.
- A key already stored under one role is not silently re-labelled: adding it
  under another role or GUN is a :class:`KeyRoleError`.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from countersign.errors import (
    CountersignError,
    FormatError,
    KeyRoleError,
    KeystoreError,
    PassphraseError,
)
from countersign.keystore import _keyfile
from countersign.keystore.passphrase import PassphraseProvider, as_source
from countersign.keystore.pem import MAX_PEM_BYTES
from countersign.tuf.keys import PrivateKey

log = logging.getLogger(__name__)

PRIVATE_DIR = "private"
ROOT_KEYS_DIR = "root_keys"
TUF_KEYS_DIR = "tuf_keys"
KEY_SUFFIX = ".key"
#: How deep GUN directories under ``tuf_keys`` are searched.
_MAX_GUN_DEPTH = 16


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as its file describes it (nothing decrypted)."""

    key_id: str
    role: str | None
    gun: str | None
    path: Path
    encrypted: bool
    legacy: bool = False


@dataclass(frozen=True)
class StoredKey:
    """A loaded private key with the role and GUN it is stored under."""

    key: PrivateKey
    role: str | None
    gun: str | None
    path: Path


@dataclass(frozen=True)
class _Location:
    key_id: str
    path: Path
    legacy: bool
    role: str | None = None
    gun: str | None = None


def _check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not _keyfile.is_key_id(key_id):
        raise KeystoreError(
            f"{key_id!r} is not a key ID", advice="a key ID is 64 lowercase hexadecimal digits"
        )
    return key_id


def _gun_matches(role: str | None, stored: str | None, wanted: str | None) -> bool:
    if wanted is None or role not in _keyfile.GUN_ROLES:
        return True
    return stored == wanted


def _os_error(action: str, path: Path, exc: OSError) -> KeystoreError:
    return KeystoreError(
        f"cannot {action} {path}: {exc.strerror or exc}",
        advice="check that the trust directory exists and is yours",
    )


def _read_file(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _os_error("read", path, exc) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise KeystoreError(f"{path} is not a regular file")
        try:
            data = handle.read(MAX_PEM_BYTES + 1)
        except OSError as exc:
            raise _os_error("read", path, exc) from None
    if len(data) > MAX_PEM_BYTES:
        raise FormatError(f"{path}: larger than {MAX_PEM_BYTES} bytes; not a key file")
    return data


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as exc:
        raise _os_error("write", path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _os_error("write", path, exc) from None
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _split_legacy_name(stem: str) -> tuple[str, str | None]:
    key_id, _, role = stem.partition("_")
    return key_id, role or None


def _regular_key_files(directory: Path) -> Iterator[Path]:
    """``*.key`` regular files (not symlinks) directly in ``directory``, sorted."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(KEY_SUFFIX) and entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


class KeyStore:
    """The private keys of one trust directory.

    ``passphrases`` (a :class:`~countersign.keystore.passphrase.PassphraseSource`
    or a callable) is asked for a key's passphrase when one is needed and none
    was passed explicitly.
    """

    def __init__(self, trust_dir: Path | str, passphrases: PassphraseProvider) -> None:
        self.trust_dir = Path(trust_dir)
        self._passphrases = as_source(passphrases)

    def __repr__(self) -> str:
        return f"KeyStore({str(self.trust_dir)!r})"

    @property
    def private_dir(self) -> Path:
        return self.trust_dir / PRIVATE_DIR

    # --- finding files ------------------------------------------------------
    def _locations(self) -> Iterator[_Location]:
        """Every key file, current layout first, then notary's legacy layouts."""
        for path in _regular_key_files(self.private_dir):
            key_id = path.name[: -len(KEY_SUFFIX)]
            if _keyfile.is_key_id(key_id):
                yield _Location(key_id, path, legacy=False)
            else:
                log.warning("ignoring %s: its name is not a key ID", path)
        yield from self._legacy_locations()

    def _legacy_locations(self) -> Iterator[_Location]:
        """Key files in ``private/root_keys`` and ``private/tuf_keys/<gun>``."""
        private = self.private_dir
        for path in _regular_key_files(private / ROOT_KEYS_DIR):
            key_id, role = _split_legacy_name(path.name[: -len(KEY_SUFFIX)])
            if _keyfile.is_key_id(key_id):
                yield _Location(key_id, path, legacy=True, role=role or "root")
        tuf_keys = private / TUF_KEYS_DIR
        for directory, subdirs, _files in os.walk(tuf_keys, followlinks=False):
            relative = Path(directory).relative_to(tuf_keys)
            if len(relative.parts) >= _MAX_GUN_DEPTH:
                subdirs.clear()
            subdirs.sort()
            gun = relative.as_posix() if relative.parts else None
            for path in _regular_key_files(Path(directory)):
                key_id, role = _split_legacy_name(path.name[: -len(KEY_SUFFIX)])
                if _keyfile.is_key_id(key_id):
                    yield _Location(key_id, path, legacy=True, role=role, gun=gun)

    def _locate(self, key_id: str) -> builtins.list[_Location]:
        current = self.private_dir / f"{key_id}{KEY_SUFFIX}"
        found: builtins.list[_Location] = []
        with contextlib.suppress(OSError):
            if stat.S_ISREG(current.lstat().st_mode):
                found.append(_Location(key_id, current, legacy=False))
        found.extend(loc for loc in self._legacy_locations() if loc.key_id == key_id)
        return found

    def _read(self, location: _Location) -> tuple[_keyfile.KeyFile, KeyInfo]:
        key_file = _keyfile.parse(_read_file(location.path), str(location.path))
        info = KeyInfo(
            key_id=location.key_id,
            role=location.role or key_file.role,
            gun=location.gun or key_file.gun,
            path=location.path,
            encrypted=key_file.encrypted,
            legacy=location.legacy,
        )
        return key_file, info

    # --- queries --------------------------------------------------------------
    def list(self) -> list[KeyInfo]:
        """Every key, read from headers only; unreadable files are skipped with a warning."""
        seen: set[str] = set()
        infos: builtins.list[KeyInfo] = []
        for location in self._locations():
            if location.key_id in seen:
                continue
            try:
                _, info = self._read(location)
            except CountersignError as exc:
                log.warning("ignoring key file %s: %s", location.path, exc.message)
                continue
            seen.add(location.key_id)
            infos.append(info)
        return sorted(infos, key=lambda i: (i.role or "", i.gun or "", i.key_id))

    def find(self, role: str, gun: str | None = None) -> builtins.list[KeyInfo]:
        """The keys of ``role`` (for repository-bound roles, of ``gun`` when given)."""
        return [
            info
            for info in self.list()
            if info.role == role and _gun_matches(info.role, info.gun, gun)
        ]

    def get(self, key_id: str, *, role: str | None = None, gun: str | None = None) -> StoredKey:
        """Load and decrypt a key, checking its role and GUN first when they are given."""
        _check_key_id(key_id)
        locations = self._locate(key_id)
        if not locations:
            raise KeystoreError(
                f"no private key {key_id} in {self.private_dir}",
                advice="check the key ID, or import the key into this trust directory",
            )
        key_file, info = self._read(locations[0])
        if role is not None and info.role != role:
            raise KeyRoleError(
                f"key {key_id} is a {info.role or 'role-less'} key, not a {role} key",
                advice="use a key of the role being signed",
            )
        if not _gun_matches(info.role, info.gun, gun):
            raise KeyRoleError(
                f"key {key_id} belongs to {info.gun or 'no repository'}, not to {gun}",
                advice="use the key made for this repository",
            )
        passphrase = None
        if key_file.encrypted:
            passphrase = self._passphrases.get(
                info.role or role or "", info.gun or gun, key_id, new=False
            )
        key = _keyfile.unlock(key_file, passphrase, str(info.path))
        if key.canonical_key_id != key_id:
            raise KeystoreError(
                f"key file {info.path} holds key {key.canonical_key_id}, not {key_id}",
                advice=f"rename it to {key.canonical_key_id}{KEY_SUFFIX} or import it again",
            )
        return StoredKey(key, info.role, info.gun, info.path)

    # --- changes ----------------------------------------------------------------
    def _existing(self, key_id: str) -> KeyInfo | None:
        for location in self._locate(key_id):
            try:
                return self._read(location)[1]
            except CountersignError:
                continue  # a damaged file for this ID may be replaced
        return None

    def _prepare(self, role: str, gun: str | None) -> tuple[str, str | None]:
        _keyfile.check_role(role)
        if role not in _keyfile.GUN_ROLES:
            return role, None
        if not gun:
            raise KeyRoleError(
                f"a {role} key belongs to one repository, and no GUN was given",
                advice="pass the repository's GUN (e.g. registry.example.com/org/app)",
            )
        return role, _keyfile.check_gun(gun)

    def _store(
        self, key: PrivateKey, role: str, gun: str | None, passphrase: str | None
    ) -> KeyInfo:
        key_id = key.canonical_key_id
        existing = self._existing(key_id)
        if existing is not None and (existing.role, existing.gun) != (role, gun):
            where = f" of {existing.gun}" if existing.gun else ""
            raise KeyRoleError(
                f"key {key_id} is already stored as a {existing.role or 'role-less'} key{where}",
                advice="remove it first to store it under another role or GUN",
            )
        if passphrase is None:
            passphrase = self._passphrases.get(role, gun, key_id, new=True)
        data = _keyfile.render(key, role, gun, passphrase)
        try:
            self.trust_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.private_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _os_error("create", self.private_dir, exc) from None
        path = self.private_dir / f"{key_id}{KEY_SUFFIX}"
        _write_atomically(path, data)
        return KeyInfo(key_id, role, gun, path, encrypted=passphrase != "")

    def add(
        self,
        key: PrivateKey,
        *,
        role: str,
        gun: str | None = None,
        passphrase: str | None = None,
    ) -> Path:
        """Store ``key`` (atomically, mode 0600); ``passphrase=""`` stores it unencrypted.

        Without ``passphrase`` the passphrase source is asked for a new one.
        Targets, snapshot and timestamp keys need the GUN of their repository.
        """
        role, gun = self._prepare(role, gun)
        return self._store(key, role, gun, passphrase).path

    def remove(self, key_id: str) -> None:
        """Delete every file holding ``key_id`` (current and legacy layouts)."""
        _check_key_id(key_id)
        locations = self._locate(key_id)
        if not locations:
            raise KeystoreError(f"no private key {key_id} in {self.private_dir}")
        for location in locations:
            try:
                location.path.unlink()
            except OSError as exc:
                raise _os_error("remove", location.path, exc) from None

    def export(self, key_id: str, passphrase_for_export: str) -> bytes:
        """The key as encrypted PKCS#8 PEM with ``gun``, ``path`` and ``role`` headers.

        :meth:`import_` reads it back, and so does ``notary key import`` (the
        ``path`` header is what lets notary import an encrypted key; it keeps
        the export passphrase on the imported file).
        """
        if not isinstance(passphrase_for_export, str) or not passphrase_for_export:
            raise PassphraseError(
                "an exported key must be encrypted, and the export passphrase is empty",
                advice="give a passphrase to protect the exported key",
            )
        stored = self.get(key_id)
        role = stored.role or _keyfile.DEFAULT_IMPORT_ROLE
        return _keyfile.render(
            stored.key, role, stored.gun, passphrase_for_export, extra={"path": key_id}
        )

    def import_(
        self,
        data: bytes,
        *,
        role: str | None = None,
        gun: str | None = None,
        passphrase: str | None = None,
    ) -> KeyInfo:
        """Store the one key in ``data``, re-encrypted with its role's passphrase.

        Reads clear or encrypted PKCS#8 (notary's ``key generate -o`` output,
        openssl's), notary's legacy blocks and :meth:`export` output.
        ``passphrase`` unlocks ``data`` (the source is asked otherwise); the
        stored copy is encrypted with a passphrase from the source. The file's
        ``role``/``gun`` headers win; ``role``/``gun`` fill in for missing ones
        and are refused if they contradict them. A key naming no role becomes
        a ``delegation`` key, as in notary.
        """
        what = "imported key"
        key_file = _keyfile.parse(data, what)
        path_header = key_file.block.headers.get("path", "")
        file_gun = key_file.gun or _gun_from_legacy_path(path_header)
        if role is not None:
            _keyfile.check_role(role)
            if key_file.role and key_file.role != role:
                raise KeyRoleError(
                    f"{what} is a {key_file.role} key, not a {role} key",
                    advice="import it without a role, or as the role its header names",
                )
        new_role = _keyfile.check_role(key_file.role or role or _keyfile.DEFAULT_IMPORT_ROLE)
        if gun is not None and file_gun and file_gun != gun and new_role in _keyfile.GUN_ROLES:
            raise KeyRoleError(
                f"{what} belongs to {file_gun}, not to {gun}",
                advice="import it for the repository its header names",
            )
        new_role, new_gun = self._prepare(new_role, file_gun or gun)
        secret = None
        if key_file.encrypted:
            hint = Path(path_header).name if path_header else ""
            secret = (
                passphrase
                if passphrase is not None
                else self._passphrases.get(
                    new_role, new_gun, hint if _keyfile.is_key_id(hint) else "", new=False
                )
            )
        key = _keyfile.unlock(key_file, secret, what)
        return self._store(key, new_role, new_gun, None)


def _gun_from_legacy_path(path: str) -> str | None:
    """The GUN in a pre-0.4 export's ``path`` header (``tuf_keys/<gun>/<id>``)."""
    parts = Path(path).parts
    if len(parts) > 2 and parts[0] == TUF_KEYS_DIR:
        return "/".join(parts[1:-1])
    return None


__all__ = ["KeyInfo", "KeyStore", "StoredKey"]
