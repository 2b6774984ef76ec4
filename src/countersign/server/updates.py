"""Validation of an update and the server's own snapshot and timestamp signing.

This is notary-server's ``validateUpdate`` and its on-demand freshness, on
countersign's TUF core: a new root needs the old root's threshold and its own;
targets and delegations are checked against the keys their parents name, in
order of depth; an uploaded snapshot must pin exactly the files being stored;
otherwise the server signs the snapshot if it holds that key; it always signs
the timestamp. Uploads must be in notary's exact file form, so the hashes the
server computes over stored bytes are the hashes every notary client computes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from countersign._lru import BoundedLRU
from countersign.errors import CountersignError
from countersign.server.apierrors import (
    APIError,
    ValidationFailure,
    bad_hierarchy,
    bad_root,
    bad_snapshot,
    bad_targets,
    invalid,
)
from countersign.server.signer import KeyService
from countersign.server.storage import (
    UNSET,
    NewFile,
    Storage,
    StoredFile,
    Unset,
    VersionConflict,
    Written,
)
from countersign.tuf import (
    DEFAULT_EXPIRY,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    FileMeta,
    GoTime,
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    validate_root,
)
from countersign.tuf.canonical import parse_json
from countersign.tuf.metadata import is_role_name, parent_role, role_depth
from countersign.tuf.timefmt import GoTime as _GoTime


@dataclass(frozen=True)
class Upload:
    role: str
    data: bytes
    version: int


@dataclass(frozen=True)
class CurrentView:
    """The consistent current state: the newest timestamp and what it pins."""

    timestamp: StoredFile
    snapshot: StoredFile | None
    files: Mapping[str, StoredFile]  # root, targets and delegations the snapshot lists

    def get(self, role: str) -> StoredFile | None:
        if role == TIMESTAMP:
            return self.timestamp
        if role == SNAPSHOT:
            return self.snapshot
        return self.files.get(role)


#: Parsed metadata by (sha256, role): at most 512 files of at most 64 MiB in all.
_PARSED = BoundedLRU(max_entries=512, max_bytes=64 << 20)


def parsed(data: bytes, role: str) -> Metadata[Any]:
    """``Metadata.from_bytes`` for stored or uploaded files, cached by content.

    Metadata objects are immutable and a file's meaning depends only on its
    bytes and role, so the same stored root or snapshot is parsed once, not on
    every update and every freshness check.
    """
    key = (hashlib.sha256(data).digest(), role)
    found: Metadata[Any] | None = _PARSED.get(key)
    if found is not None:
        return found
    md = Metadata.from_bytes(data, role=role, what=role)
    _PARSED.put(key, md, len(data))
    return md


def made(md: Metadata[Any], role: str) -> bytes:
    """The file of metadata this server made, remembered as :func:`parsed` would read it.

    The server reads what it signed back on the next update and view; the object
    it made already is that reading (``to_bytes`` is its exact file form).
    """
    data = md.to_bytes()
    _PARSED.put((hashlib.sha256(data).digest(), role), md, len(data))
    return data


def parse_upload(role: str, data: bytes) -> Upload:
    """notary's first pass: an envelope with ``signed._type/expires/version``.

    Anything else is MALFORMED_JSON, as notary-server answers it. A file that
    parses fully as metadata (the usual case) is parsed once, into the cache.
    """
    try:
        return Upload(role, data, parsed(data, role).signed.version)
    except CountersignError:
        pass
    try:
        doc = parse_json(data, what=role)
        signed = doc["signed"]
        if not isinstance(signed, dict) or not isinstance(signed.get("_type"), str):
            raise ValueError
        _GoTime.parse(signed["expires"])
        version = signed["version"]
        if type(version) is not int:
            raise ValueError
        if not isinstance(doc["signatures"], list | None):
            raise ValueError
    except (CountersignError, KeyError, TypeError, ValueError):
        raise APIError("MALFORMED_JSON") from None
    return Upload(role, data, version)


def load_current(storage: Storage, gun: str) -> CurrentView | None:
    """Resolve current files through the timestamp's and snapshot's hashes (notary 6.4)."""
    timestamp = storage.latest(gun, TIMESTAMP)
    if timestamp is None:
        return None
    try:
        ts = parsed(timestamp.data, TIMESTAMP)
        snap_hash = ts.signed.meta[SNAPSHOT].hashes.get("sha256")
    except CountersignError:
        return CurrentView(timestamp, None, {})
    snapshot = storage.by_checksum(gun, SNAPSHOT, snap_hash.hex()) if snap_hash else None
    if snapshot is None:
        return CurrentView(timestamp, None, {})
    try:
        snap = parsed(snapshot.data, SNAPSHOT)
    except CountersignError:
        return CurrentView(timestamp, snapshot, {})
    wanted = [(role, digest.hex()) for role, meta in snap.signed.meta.items()
              if (digest := meta.hashes.get("sha256")) is not None]
    return CurrentView(timestamp, snapshot, storage.by_checksums(gun, wanted))


def advance_view(previous: CurrentView | None, stored: Sequence[StoredFile]
                 ) -> CurrentView | None:
    """The view after ``stored`` was written on top of ``previous``, without reading back.

    None when the new snapshot names a file that neither holds (the caller then
    reloads from the database).
    """
    new = {f.role: f for f in stored}
    timestamp, snapshot = new.get(TIMESTAMP), new.get(SNAPSHOT)
    if timestamp is None or snapshot is None:
        return None
    try:
        snap = parsed(snapshot.data, SNAPSHOT)
    except CountersignError:
        return None
    files: dict[str, StoredFile] = {}
    for role, meta in snap.signed.meta.items():
        digest = meta.hashes.get("sha256")
        candidate = new.get(role) or (previous.files.get(role) if previous else None)
        if digest is None or candidate is None or candidate.sha256 != digest.hex():
            return None
        files[role] = candidate
    return CurrentView(timestamp, snapshot, files)


def _why(exc: CountersignError) -> str:
    """The error's message with its advice: the client sees only this text."""
    return f"{exc.message} ({exc.advice})" if exc.advice else exc.message


def _depth_order(role: str) -> tuple[int, str]:
    return (role_depth(role), role)


class UpdateProcessor:
    """Turns an upload into the files to store, or a notary-style refusal."""

    def __init__(self, storage: Storage, keys: KeyService) -> None:
        self.storage = storage
        self.keys = keys

    # --- the update -----------------------------------------------------------------
    def process(self, gun: str, uploads: Sequence[Upload], *, current: CurrentView | None,
                now: _dt.datetime | None = None) -> list[NewFile]:
        """The files to store for ``uploads``, validated against ``current``, the GUN's
        view the update is built on (:meth:`apply` then writes conditionally on its
        timestamp version, so a stale view fails the write instead of storing)."""
        when = now or _dt.datetime.now(_dt.UTC)
        go_now = GoTime.from_datetime(when)
        by_role = {u.role: u for u in uploads if u.role != TIMESTAMP}

        def stored(role: str) -> Metadata[Any] | None:
            file = current.get(role) if current else None
            if file is None:
                return None
            try:
                return parsed(file.data, role)
            except CountersignError as exc:
                raise invalid(f"stored {role} cannot be read: {exc.message}") from None

        to_store: list[NewFile] = []
        loaded: dict[str, bytes] = {}

        trusted_root = stored(ROOT)
        root_upload = by_role.get(ROOT)
        if root_upload is not None:
            current_version = trusted_root.signed.version if trusted_root else 1
            if root_upload.version not in (current_version, current_version + 1):
                raise bad_root(f"Root modifications must increment the version. Current "
                               f"{current_version}, new {root_upload.version}")
            root_md = self._typed(root_upload, bad_root)
            try:
                validate_root(root_md, gun, previous=trusted_root, now=when)
                root_md.check_expiry(ROOT, go_now)
            except CountersignError as exc:
                raise bad_root(_why(exc)) from None
            to_store.append(NewFile(ROOT, root_md.signed.version, root_upload.data))
            loaded[ROOT] = root_upload.data
        elif trusted_root is None:
            raise invalid("no pre-existing root and no root provided in update.")
        else:
            root_md = trusted_root
            loaded[ROOT] = current.get(ROOT).data  # type: ignore[union-attr]
        root: Root = root_md.signed

        targets_loaded: dict[str, Metadata[Targets]] = {}

        def load_stored_targets(role: str) -> None:
            md = stored(role)
            if md is None:
                return
            targets_loaded[role] = md
            loaded[role] = current.get(role).data  # type: ignore[union-attr]

        for role in sorted((r for r in by_role if r == TARGETS or r.startswith("targets/")),
                           key=_depth_order):
            ancestors = []
            name = role
            while name != TARGETS:
                name = parent_role(name)
                if name not in targets_loaded:
                    ancestors.append(name)
            for ancestor in reversed(ancestors):
                load_stored_targets(ancestor)
            upload = by_role[role]
            md = self._typed(upload, bad_targets)
            self._check_targets(role, md, root, targets_loaded, go_now)
            targets_loaded[role] = md
            loaded[role] = upload.data
            to_store.append(NewFile(role, md.signed.version, upload.data))

        snapshot_upload = by_role.get(SNAPSHOT)
        if snapshot_upload is not None:
            snap_md = self._typed(snapshot_upload, bad_snapshot)
            try:
                keys, role_def = root.role_keys(SNAPSHOT)
                snap_md.check_signatures(keys, role_def, SNAPSHOT)
                snap_md.check_expiry(SNAPSHOT, go_now)
            except CountersignError as exc:
                raise bad_snapshot(_why(exc)) from None
            for role, data in loaded.items():
                meta = snap_md.signed.meta.get(role)
                if meta is None:
                    raise bad_snapshot(f"snapshot does not list {role}")
                try:
                    meta.check(data, role)
                except CountersignError as exc:
                    raise bad_snapshot(_why(exc)) from None
            snapshot_bytes = snapshot_upload.data
            to_store.append(NewFile(SNAPSHOT, snap_md.signed.version, snapshot_bytes))
        else:
            snap_md = self._generate_snapshot(gun, root, stored(SNAPSHOT), loaded, go_now)
            snapshot_bytes = made(snap_md, SNAPSHOT)
            to_store.append(NewFile(SNAPSHOT, snap_md.signed.version, snapshot_bytes))

        ts_md = self._generate_timestamp(gun, root, stored(TIMESTAMP), snapshot_bytes, go_now)
        to_store.append(NewFile(TIMESTAMP, ts_md.signed.version, made(ts_md, TIMESTAMP)))
        return to_store

    def _typed(self, upload: Upload, failure: Any) -> Metadata[Any]:
        try:
            md = parsed(upload.data, upload.role)
        except CountersignError as exc:
            raise failure(_why(exc)) from None
        if md.to_bytes() != upload.data:
            raise invalid(
                f"{upload.role} is not in notary's canonical file form; the notary client "
                "could not read it back (send compact JSON exactly as notary writes it)")
        return md

    def _check_targets(self, role: str, md: Metadata[Targets], root: Root,
                       loaded: Mapping[str, Metadata[Targets]], now: GoTime) -> None:
        try:
            if role == TARGETS:
                keys, role_def = root.role_keys(TARGETS)
                md.check_signatures(keys, role_def, TARGETS)
            else:
                parent = loaded.get(parent_role(role))
                if parent is None:
                    raise bad_targets(f"{role} has no parent loaded: {parent_role(role)} "
                                      "does not exist")
                delegated = parent.signed.delegations.get(role)
                if delegated is None:
                    raise bad_targets(f"{role} is not delegated by {parent_role(role)}")
                keys = {k: parent.signed.delegations.keys[k] for k in delegated.keyids}
                md.check_signatures(keys, delegated, role)
            md.check_expiry(role, now)
        except ValidationFailure:
            raise
        except CountersignError as exc:
            raise bad_targets(_why(exc)) from None

    def _sign(self, gun: str, root: Root, role: str, md: Metadata[Any]) -> Metadata[Any] | None:
        """Sign with the root-listed keys of ``role`` this server holds, if enough of them."""
        keys, role_def = root.role_keys(role)
        signers = self.keys.signers(gun, role, keys.values())
        if not signers:
            return None
        by_canonical = {k.canonical_key_id: k for k in keys.values()}
        for signer in signers:
            md = md.sign(signer, by_canonical[signer.canonical_key_id])
        if not md.verify(keys, role_def, role).verified:
            return None
        return md

    def _generate_snapshot(self, gun: str, root: Root, previous: Metadata[Any] | None,
                           loaded: Mapping[str, bytes], now: GoTime) -> Metadata[Snapshot]:
        meta: dict[str, FileMeta] = dict(previous.signed.meta) if previous else {}
        for role, data in loaded.items():
            meta[role] = FileMeta.for_bytes(data)
        version = previous.signed.version + 1 if previous else 1
        new: Metadata[Snapshot] = Metadata(
            Snapshot(now.add(DEFAULT_EXPIRY[SNAPSHOT]), version, meta))
        signed = self._sign(gun, root, SNAPSHOT, new)
        if signed is None:
            raise bad_hierarchy(SNAPSHOT, "no snapshot was included in update and server "
                                "does not hold current snapshot key for repository")
        return signed

    def _generate_timestamp(self, gun: str, root: Root, previous: Metadata[Any] | None,
                            snapshot: bytes, now: GoTime) -> Metadata[Timestamp]:
        version = previous.signed.version + 1 if previous else 1
        new: Metadata[Timestamp] = Metadata(Timestamp(
            now.add(DEFAULT_EXPIRY[TIMESTAMP]), version, {SNAPSHOT: FileMeta.for_bytes(snapshot)}))
        signed = self._sign(gun, root, TIMESTAMP, new)
        if signed is None:
            raise bad_root("no timestamp keys exist on the server")
        return signed

    def apply(self, gun: str, uploads: Sequence[Upload], held: CurrentView | Unset | None
              ) -> tuple[CurrentView | None, Written]:
        """Validate and store an update: on ``held`` first, on a fresh read if it was stale.

        The write is conditional on the timestamp version the update was built on,
        so concurrent writers (other instances, a deletion) never interleave; a
        genuine conflict still surfaces as :class:`VersionConflict`.
        """
        while True:
            current = load_current(self.storage, gun) if isinstance(held, Unset) else held
            files = self.process(gun, uploads, current=current)
            try:
                stored = self.storage.write(
                    gun, files, after_timestamp=current.timestamp.version if current else None)
            except VersionConflict:
                if isinstance(held, Unset):
                    raise
                held = UNSET
                continue
            return current, stored

    # --- freshness on GET ----------------------------------------------------------
    def fresh_view(self, gun: str, *, now: _dt.datetime | None = None) -> CurrentView | None:
        """The current view, re-signing an expired server snapshot or timestamp first."""
        for _attempt in range(3):
            view = load_current(self.storage, gun)
            if view is None or view.snapshot is None or ROOT not in view.files:
                return view
            updates = self._refresh(gun, view, now or _dt.datetime.now(_dt.UTC))
            if not updates:
                return view
            try:
                self.storage.write(gun, updates, after_timestamp=view.timestamp.version)
            except VersionConflict:
                continue  # another instance refreshed first: read what it wrote
        return load_current(self.storage, gun)

    def _refresh(self, gun: str, view: CurrentView, when: _dt.datetime) -> list[NewFile]:
        now = GoTime.from_datetime(when)
        try:
            root: Root = parsed(view.files[ROOT].data, ROOT).signed
            ts: Metadata[Timestamp] = parsed(view.timestamp.data, TIMESTAMP)
            snap: Metadata[Snapshot] = parsed(view.snapshot.data, SNAPSHOT)  # type: ignore[union-attr]
        except CountersignError:
            return []
        updates: list[NewFile] = []
        snapshot_bytes = view.snapshot.data  # type: ignore[union-attr]
        if snap.signed.is_expired(now):
            renewed = self._sign(gun, root, SNAPSHOT, Metadata(replace(
                snap.signed, version=snap.signed.version + 1,
                expires=now.add(DEFAULT_EXPIRY[SNAPSHOT]))))
            if renewed is not None:
                snapshot_bytes = made(renewed, SNAPSHOT)
                updates.append(NewFile(SNAPSHOT, renewed.signed.version, snapshot_bytes))
        stale = not ts.signed.meta[SNAPSHOT].same_file(FileMeta.for_bytes(snapshot_bytes))
        if ts.signed.is_expired(now) or stale:
            new_ts = self._sign(gun, root, TIMESTAMP, Metadata(Timestamp(
                now.add(DEFAULT_EXPIRY[TIMESTAMP]), ts.signed.version + 1,
                {SNAPSHOT: FileMeta.for_bytes(snapshot_bytes)})))
            if new_ts is not None:
                updates.append(NewFile(TIMESTAMP, new_ts.signed.version,
                                       made(new_ts, TIMESTAMP)))
            elif updates:
                return []  # cannot point a timestamp at the renewed snapshot: keep what is
        return updates


__all__ = [
    "CurrentView",
    "UpdateProcessor",
    "Upload",
    "advance_view",
    "is_role_name",
    "load_current",
    "parse_upload",
]
