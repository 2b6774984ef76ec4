"""Writing trust data: initialise a repository, sign and revoke tags, manage signers and keys.

Every change is computed from the freshly verified current state, signed with
the local keys of the role, and published as one update; nothing is staged on
disk, so a refused publish leaves nothing behind to block the next one (unlike
notary's changelist). A role whose threshold needs more keys than one party
holds is signed in turns through a :class:`PendingUpdate` that holders of
distinct keys pass along, and is published once the threshold is met.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from countersign.client.cache import MetadataCache
from countersign.client.pinning import TrustPinning
from countersign.client.remote import NotaryRemote
from countersign.client.updater import Refreshed, Updater
from countersign.errors import (
    CountersignError,
    FormatError,
    KeystoreError,
    ServerRejectedError,
    VerificationError,
)
from countersign.keystore import KeyStore
from countersign.tuf import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    DelegatedRole,
    Delegations,
    FileMeta,
    Metadata,
    PrivateKey,
    PublicKey,
    Role,
    Root,
    Targets,
    is_delegation_name,
    new_root,
    new_snapshot,
    new_targets,
    root_certificate_key,
)
from countersign.tuf.metadata import parent_role

TargetsEdit = Callable[[Targets], Targets]
MAX_RETRIES = 3


class SigningKeyError(KeystoreError):
    """No local key, or too few, for the role that must sign."""


class ThresholdPendingError(SigningKeyError):
    """More signatures are needed: pass the pending update to the other key holders."""


@dataclass(frozen=True)
class PendingUpdate:
    """A new version of one role, signed by some of its keys, waiting for the rest.

    It carries the exact file bytes, so every holder signs the same content, and
    travels as a small JSON document (``to_json``/``from_json``).
    """

    gun: str
    role: str
    metadata: Metadata[Targets]

    def to_json(self) -> bytes:
        return json.dumps({
            "countersign_pending_update": 1, "gun": self.gun, "role": self.role,
            "version": self.metadata.signed.version,
            "metadata": base64.b64encode(self.metadata.to_bytes()).decode(),
        }, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> PendingUpdate:
        try:
            doc = json.loads(data)
            if doc.get("countersign_pending_update") != 1:
                raise ValueError("not a pending update")
            gun, role = str(doc["gun"]), str(doc["role"])
            raw = base64.b64decode(doc["metadata"], validate=True)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"not a countersign pending update: {exc}") from None
        md: Metadata[Targets] = Metadata.from_bytes(raw, Targets, role=role, what=role)
        if md.to_bytes() != raw:
            raise FormatError("the pending update's metadata is not in notary's file form")
        return cls(gun, role, md)


@dataclass(frozen=True)
class RoleKeys:
    keys: Mapping[str, PublicKey]
    role: Role | DelegatedRole


class TrustRepository:
    """Read and write one GUN's trust data on one server with keys from one key store."""

    def __init__(self, gun: str, remote: NotaryRemote, cache: MetadataCache,
                 keystore: KeyStore, pinning: TrustPinning | None = None, *,
                 now: _dt.datetime | None = None) -> None:
        self.gun = gun
        self.remote = remote
        self.cache = cache
        self.keystore = keystore
        self.updater = Updater(gun, remote, cache, pinning, now=now)

    def refresh(self) -> Refreshed:
        return self.updater.refresh()

    # --- keys ---------------------------------------------------------------------
    def _private(self, key: PublicKey) -> PrivateKey | None:
        try:
            return self.keystore.get(key.canonical_key_id).key
        except KeystoreError as exc:
            if "no private key" in exc.message:
                return None
            raise

    def _signers(self, keys: Mapping[str, PublicKey]) -> list[tuple[PrivateKey, PublicKey]]:
        found: list[tuple[PrivateKey, PublicKey]] = []
        seen: set[str] = set()
        for key in keys.values():
            if key.canonical_key_id in seen:
                continue
            private = self._private(key)
            if private is not None:
                found.append((private, key))
                seen.add(key.canonical_key_id)
        return found

    def role_keys(self, state: Refreshed, role: str) -> RoleKeys:
        """The keys and threshold that sign ``role``, as its parent lists them."""
        root = state.state.root.signed
        if role in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP):
            keys, threshold = root.role_keys(role)
            return RoleKeys(keys, threshold)
        parent = state.state.roles.get(parent_role(role))
        if parent is None:
            raise VerificationError(f"{parent_role(role)} is not a trusted role of {self.gun}")
        delegated = parent.metadata.signed.delegations.get(role)
        if delegated is None:
            raise VerificationError(f"{role} is not a role of {self.gun}",
                                    advice="add it first: countersign trust signer add")
        return RoleKeys({k: parent.metadata.signed.delegations.keys[k]
                         for k in delegated.keyids}, delegated)

    def _sign(self, md: Metadata[Any], keys: RoleKeys, role: str, *,
              allow_partial: bool = False) -> Metadata[Any]:
        signers = self._signers(keys.keys)
        for private, public in signers:
            md = md.sign(private, public)
        result = md.verify(keys.keys, keys.role, role)
        if not result.verified and not allow_partial:
            if signers:
                raise ThresholdPendingError(
                    f"{role} needs {keys.role.threshold} signatures from distinct keys; the "
                    f"keys here give {result.distinct_signers}",
                    advice="prepare a pending update (countersign trust pending create) and "
                    "pass it to the other key holders")
            raise SigningKeyError(
                f"no signing key for {role} of {self.gun} in {self.keystore.private_dir}",
                advice="import the role's key (countersign key import) or ask its holder to "
                "sign")
        return md

    # --- publishing ----------------------------------------------------------------
    def _current(self, state: Refreshed, role: str) -> Metadata[Targets] | None:
        trusted = state.state.roles.get(role)
        return trusted.metadata if trusted is not None else None

    def _snapshot_if_held(self, state: Refreshed, files: dict[str, bytes],
                          root: Root | None = None) -> None:
        """Sign the snapshot when this client holds its key (else the server does).

        ``root`` is a new root being published, whose snapshot keys then count.
        """
        if root is not None:
            new_keys, threshold = root.role_keys(SNAPSHOT)
            keys = RoleKeys(new_keys, threshold)
        else:
            keys = self.role_keys(state, SNAPSHOT)
        if not self._signers(keys.keys):
            return
        snapshot = state.state.snapshot
        if snapshot is None:
            return
        meta = dict(snapshot.signed.meta)
        for role, data in files.items():
            if role != SNAPSHOT:
                meta[role] = FileMeta.for_bytes(data)
        new = Metadata(replace(snapshot.signed.bump(role=SNAPSHOT), meta=meta))
        files[SNAPSHOT] = self._sign(new, keys, SNAPSHOT).to_bytes()

    def publish_edits(self, edits: Mapping[str, TargetsEdit], *,
                      root: Callable[[Root], Root] | None = None) -> Refreshed:
        """Apply ``edits`` (role -> function of its current content) and publish them at once.

        A version conflict (another publisher was first) is retried on the new state.
        """
        for attempt in range(MAX_RETRIES):
            state = self.refresh()
            files: dict[str, bytes] = {}
            if root is not None:
                files[ROOT] = self._new_root(state, root).to_bytes()
            for role, edit in edits.items():
                current = self._current(state, role)
                base = current.signed if current is not None else new_targets().signed
                changed = edit(base)
                version = current.signed.version + 1 if current is not None else 1
                new: Metadata[Targets] = Metadata(replace(
                    changed.bump(role=TARGETS), version=version))
                files[role] = self._sign(new, self.role_keys(state, role), role).to_bytes()
            self._snapshot_if_held(state, files)
            try:
                self.remote.publish(files)
            except ServerRejectedError as exc:
                if exc.code == "VERSION" and attempt + 1 < MAX_RETRIES:
                    continue
                raise
            return self.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_root(self, state: Refreshed, change: Callable[[Root], Root]) -> Metadata[Root]:
        old = state.state.root
        signed = change(old.signed)
        new: Metadata[Root] = Metadata(replace(signed.bump(role=ROOT),
                                               version=old.signed.version + 1))
        keys = self.role_keys(state, ROOT)
        # signed by the old root's keys and by the new root's
        new_keys, new_threshold = signed.role_keys(ROOT)
        new = self._sign(new, keys, ROOT)
        return self._sign(new, RoleKeys(new_keys, new_threshold), ROOT)

    # --- init -----------------------------------------------------------------------
    def init(self, *, server_managed_snapshot: bool = True,
             root_key: PrivateKey | None = None) -> Refreshed:
        """Make the repository: root certificate for the GUN, targets key, server keys."""
        if root_key is None:
            existing = self.keystore.find("root")
            root_key = (self.keystore.get(existing[0].key_id).key if existing
                        else PrivateKey.generate())
            if not existing:
                self.keystore.add(root_key, role=ROOT)
        targets_key = PrivateKey.generate()
        self.keystore.add(targets_key, role=TARGETS, gun=self.gun)
        root_public = root_certificate_key(root_key, self.gun)
        timestamp = self.remote.server_key(TIMESTAMP)
        snapshot_key: PrivateKey | None = None
        if server_managed_snapshot:
            snapshot = self.remote.server_key(SNAPSHOT)
        else:
            snapshot_key = PrivateKey.generate()
            self.keystore.add(snapshot_key, role=SNAPSHOT, gun=self.gun)
            snapshot = snapshot_key.public_key
        keys = [root_public, targets_key.public_key, snapshot, timestamp]
        roles = {name: Role((key.key_id,)) for name, key in
                 zip((ROOT, TARGETS, SNAPSHOT, TIMESTAMP), keys, strict=True)}
        root = new_root({k.key_id: k for k in keys}, roles).sign(root_key, root_public)
        targets = new_targets().sign(targets_key, targets_key.public_key)
        files = {ROOT: root.to_bytes(), TARGETS: targets.to_bytes()}
        if snapshot_key is not None:
            snap = new_snapshot({ROOT: root.file_meta(), TARGETS: targets.file_meta()})
            files[SNAPSHOT] = snap.sign(snapshot_key, snapshot_key.public_key).to_bytes()
        self.remote.publish(files)
        return self.refresh()

    # --- tags -------------------------------------------------------------------------
    def signable_roles(self, state: Refreshed, tag: str) -> list[str]:
        """Where docker signs a tag: each direct delegation of targets whose paths admit it
        and whose key is here; ``targets`` when there are no delegations."""
        targets = self._current(state, TARGETS)
        if targets is None:
            return []
        delegations = targets.signed.delegations
        if not delegations.roles:
            return [TARGETS]
        found = []
        for role in delegations.roles:
            keys = {k: delegations.keys[k] for k in role.keyids}
            if role.allows(tag) and self._signers(keys):
                found.append(role.name)
        return found

    def sign_tag(self, tag: str, meta: FileMeta, *, roles: Iterable[str] = ()) -> Refreshed:
        """Sign ``tag`` as ``meta`` (the manifest's sha256 and size) into ``roles``."""
        state = self.refresh()
        chosen = list(roles) or self.signable_roles(state, tag)
        if not chosen:
            raise SigningKeyError(
                f"no valid signing keys for delegation roles of {self.gun}",
                advice="sign with --role, or import a key of targets/releases")
        for role in chosen:
            self._check_path(state, role, tag)

        def add(targets: Targets) -> Targets:
            entries = dict(targets.targets)
            entries[tag] = meta
            return replace(targets, targets=entries)

        return self.publish_edits(dict.fromkeys(chosen, add))

    def _check_path(self, state: Refreshed, role: str, tag: str) -> None:
        if role == TARGETS:
            return
        trusted = state.state.roles.get(parent_role(role))
        delegated = trusted.metadata.signed.delegations.get(role) if trusted else None
        if delegated is None:
            raise VerificationError(f"{role} is not a role of {self.gun}")
        if not delegated.allows(tag):
            raise VerificationError(f"{role} may not sign {tag!r}: its paths are "
                                    f"{list(delegated.paths)}")

    def revoke_tag(self, tag: str, *, roles: Iterable[str] = ()) -> Refreshed:
        state = self.refresh()
        chosen = list(roles) or [
            r for r in self.signable_roles(state, tag)
            if tag in (self._current(state, r) or new_targets()).signed.targets]
        if not chosen:
            raise CountersignError(f"{tag} is not signed in any role whose key is here")

        def remove(targets: Targets) -> Targets:
            entries = dict(targets.targets)
            if tag not in entries:
                raise CountersignError(f"{tag} is not signed in this role")
            del entries[tag]
            return replace(targets, targets=entries)

        return self.publish_edits(dict.fromkeys(chosen, remove))

    # --- signers (delegations) ---------------------------------------------------------
    def add_signer(self, role: str, keys: list[PublicKey], *, threshold: int = 1,
                   paths: tuple[str, ...] = ("",)) -> Refreshed:
        """Delegate ``role`` to ``keys`` (threshold over distinct keys), or add keys to it."""
        if not is_delegation_name(role):
            raise CountersignError(f"{role!r} is not a delegation name",
                                   advice="use targets/<name> with a-z, 0-9, - and _")
        if threshold < 1:
            raise CountersignError("a threshold is at least 1")

        def edit(targets: Targets) -> Targets:
            current = targets.delegations.get(role)
            all_keys = dict(targets.delegations.keys)
            ids = list(current.keyids) if current else []
            for key in keys:
                all_keys[key.key_id] = key
                if key.key_id not in ids:
                    ids.append(key.key_id)
            total = len({all_keys[i].canonical_key_id for i in ids})
            if threshold > total:
                raise CountersignError(
                    f"threshold {threshold} is more than the {total} distinct keys of {role}")
            entry = DelegatedRole(role, tuple(ids), threshold,
                                  current.paths if current else paths)
            roles = [r for r in targets.delegations.roles if r.name != role] + [entry]
            return replace(targets, delegations=Delegations(all_keys, tuple(roles)))

        return self.publish_edits({parent_role(role): edit})

    def remove_signer(self, role: str) -> Refreshed:
        def edit(targets: Targets) -> Targets:
            if targets.delegations.get(role) is None:
                raise CountersignError(f"{role} is not a role of {self.gun}")
            roles = tuple(r for r in targets.delegations.roles if r.name != role)
            used = {k for r in roles for k in r.keyids}
            keys = {k: v for k, v in targets.delegations.keys.items() if k in used}
            return replace(targets, delegations=Delegations(keys, roles))

        return self.publish_edits({parent_role(role): edit})

    # --- key rotation -----------------------------------------------------------------
    def rotate_key(self, role: str, *, server_managed: bool = False) -> Refreshed:
        """A new key for ``targets``, ``snapshot`` or ``timestamp``, published in a new root."""
        if role not in (TARGETS, SNAPSHOT, TIMESTAMP):
            raise CountersignError(f"cannot rotate {role!r} here",
                                   advice="rotate targets, snapshot or timestamp")
        if role == TIMESTAMP and not server_managed:
            raise CountersignError("the timestamp key is always held by the server",
                                   advice="use --server-managed")
        if server_managed:
            if role == TARGETS:
                raise CountersignError("the targets key cannot be held by the server")
            new_key = self.remote.server_key(role, rotate=True)
        else:
            private = PrivateKey.generate()
            self.keystore.add(private, role=role, gun=self.gun)
            new_key = private.public_key

        def change(root: Root) -> Root:
            old = set(root.roles[role].keyids)
            keys = dict(root.keys)
            keys[new_key.key_id] = new_key
            roles = dict(root.roles)
            roles[role] = Role((new_key.key_id,), 1)
            still = {k for name, r in roles.items() for k in r.keyids}
            for key_id in old - still:
                keys.pop(key_id, None)
            return replace(root, keys=keys, roles=roles)

        state = self.refresh()
        new_root_md = self._new_root(state, change)
        files: dict[str, bytes] = {ROOT: new_root_md.to_bytes()}
        if role == TARGETS:
            current = self._current(state, TARGETS)
            base = current.signed if current else new_targets().signed
            new: Metadata[Targets] = Metadata(base.bump(role=TARGETS))
            signer = self._private(new_key)
            if signer is None:  # pragma: no cover - just stored above
                raise SigningKeyError("the new targets key is not in the key store")
            files[TARGETS] = new.sign(signer, new_key).to_bytes()
        self._snapshot_if_held(state, files, root=new_root_md.signed)
        self.remote.publish(files)
        return self.refresh()

    # --- threshold signing ------------------------------------------------------------
    def prepare(self, role: str, edit: TargetsEdit) -> PendingUpdate:
        """The next version of ``role`` with ``edit`` applied, signed by the keys here."""
        state = self.refresh()
        current = self._current(state, role)
        base = current.signed if current is not None else new_targets().signed
        version = current.signed.version + 1 if current is not None else 1
        new: Metadata[Targets] = Metadata(replace(edit(base).bump(role=TARGETS),
                                                  version=version))
        signed = self._sign(new, self.role_keys(state, role), role, allow_partial=True)
        return PendingUpdate(self.gun, role, signed)

    def cosign(self, pending: PendingUpdate) -> PendingUpdate:
        """Add this holder's signature(s) to ``pending`` (keeping the others')."""
        self._check_pending(pending)
        state = self.refresh()
        signed = self._sign(pending.metadata, self.role_keys(state, pending.role),
                            pending.role, allow_partial=True)
        if len(signed.signatures) == len(pending.metadata.signatures):
            raise SigningKeyError(f"no key of {pending.role} here has not signed already")
        return replace(pending, metadata=signed)

    def status(self, pending: PendingUpdate) -> Any:
        self._check_pending(pending)
        keys = self.role_keys(self.refresh(), pending.role)
        return pending.metadata.verify(keys.keys, keys.role, pending.role)

    def submit(self, pending: PendingUpdate) -> Refreshed:
        """Publish ``pending`` once a threshold of distinct keys has signed it."""
        self._check_pending(pending)
        state = self.refresh()
        keys = self.role_keys(state, pending.role)
        result = pending.metadata.verify(keys.keys, keys.role, pending.role)
        if not result.verified:
            raise ThresholdPendingError(
                f"{pending.role} has {result.distinct_signers} of the {keys.role.threshold} "
                "signatures it needs", advice="pass the pending update to another key holder")
        current = self._current(state, pending.role)
        if current is not None and current.signed.version >= pending.metadata.signed.version:
            raise ServerRejectedError(
                f"{pending.role} changed since this update was prepared", code="VERSION",
                advice="prepare it again from the current state")
        files = {pending.role: pending.metadata.to_bytes()}
        self._snapshot_if_held(state, files)
        self.remote.publish(files)
        return self.refresh()

    def _check_pending(self, pending: PendingUpdate) -> None:
        if pending.gun != self.gun:
            raise CountersignError(f"the pending update is for {pending.gun}, not {self.gun}")
