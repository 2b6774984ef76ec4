"""The trusted-metadata state machine: what a client believes, and how it may change.

Pure (no I/O), after python-tuf's ``TrustedMetadataSet``, with notary's rules:
a trusted root (from a cache, a pin or first use) admits a timestamp signed by
its timestamp keys; the timestamp pins the snapshot by length and hashes; the
snapshot pins root, targets and every delegation; each role must be signed by a
threshold of distinct keys its parent names, unexpired, and not older than the
version this client saw before (in its cache, or earlier in this update). The
caller fetches bytes; this class decides.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from countersign.errors import CountersignError, RollbackError, VerificationError
from countersign.tuf.metadata import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    FileMeta,
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    VerificationResult,
    parent_role,
)
from countersign.tuf.roots import PinCheck, validate_root
from countersign.tuf.timefmt import GoTime


class RootChangedError(VerificationError):
    """The snapshot pins a root other than the trusted one: the root must be updated."""


@dataclass(frozen=True)
class TrustedRole:
    name: str
    metadata: Metadata[Targets]
    paths: tuple[str, ...]
    signatures: VerificationResult


@dataclass
class TrustedState:
    """What is trusted now for one GUN; each ``update_*`` either advances it or raises."""

    gun: str
    root: Metadata[Root]
    root_bytes: bytes
    now: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))
    #: versions seen before (from a cache, then every version accepted here): nothing
    #: older is accepted
    floors: dict[str, int] = field(default_factory=dict)
    timestamp: Metadata[Timestamp] | None = None
    snapshot: Metadata[Snapshot] | None = None
    snapshot_bytes: bytes = b""
    roles: dict[str, TrustedRole] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    root_result: VerificationResult | None = None
    #: the user's trust pinning, when it applies to the next root (first use, or a
    #: cached root that has expired)
    pin: PinCheck | None = None
    #: the root a verified snapshot pins when it is not the trusted one (a rotation)
    next_root: FileMeta | None = None

    # --- root --------------------------------------------------------------
    @classmethod
    def from_trusted_root(cls, gun: str, data: bytes, *, now: _dt.datetime | None = None,
                          floors: Mapping[str, int] | None = None) -> TrustedState:
        """A root already trusted (a cache): its certificates and signatures, not its expiry."""
        root: Metadata[Root] = Metadata.from_bytes(data, Root, what="trusted root.json")
        when = now or _dt.datetime.now(_dt.UTC)
        result = validate_root(root, gun, now=when, check_expiry=False)
        return cls(gun, root, data, when, dict(floors or {}), root_result=result.own)

    @classmethod
    def from_new_root(cls, gun: str, data: bytes, *, now: _dt.datetime | None = None,
                      pin: PinCheck | None = None) -> TrustedState:
        """A first root (trust on first use, or checked against the user's pinning)."""
        root: Metadata[Root] = Metadata.from_bytes(data, Root, what="root.json")
        when = now or _dt.datetime.now(_dt.UTC)
        result = validate_root(root, gun, now=when, pin=pin)
        root.check_expiry("root", GoTime.from_datetime(when))
        return cls(gun, root, data, when, root_result=result.own, pin=pin)

    @property
    def _go_now(self) -> GoTime:
        return GoTime.from_datetime(self.now)

    def update_root(self, data: bytes, *, final: bool = True) -> Metadata[Root]:
        """Rotate to a new root signed by the old root's threshold and its own.

        Intermediate roots of a chain (``final=False``) may have expired; the last
        may not, and must pass the trust pinning if one applies (:attr:`pin`). Keys
        that changed for timestamp or snapshot void the version floors of those
        roles (recovery from a fast-forward attack).
        """
        new: Metadata[Root] = Metadata.from_bytes(data, Root, what="root.json")
        if new.signed.version < self.root.signed.version:
            raise RollbackError(f"root version {new.signed.version} is older than the trusted "
                                f"version {self.root.signed.version}")
        result = validate_root(new, self.gun, previous=self.root, now=self.now,
                               check_expiry=final, pin=self.pin if final else None)
        if final:
            new.check_expiry("root", self._go_now)
        for role in (TIMESTAMP, SNAPSHOT, TARGETS):
            old_keys = set(self.root.signed.roles[role].keyids)
            if set(new.signed.roles[role].keyids) != old_keys:
                self.floors.pop(role, None)
                if role == SNAPSHOT:
                    self.floors.pop(TIMESTAMP, None)
        self.root, self.root_bytes, self.root_result = new, data, result.own
        self.timestamp = self.snapshot = None
        self.next_root = None
        self.roles.clear()
        return new

    # --- timestamp and snapshot --------------------------------------------
    def _base(self, md: Metadata, role: str) -> VerificationResult:  # type: ignore[type-arg]
        keys, threshold = self.root.signed.role_keys(role)
        result = md.check_signatures(keys, threshold, role)
        floor = self.floors.get(role)
        if floor is not None:
            md.check_version(role, floor)
        md.check_expiry(role, self._go_now)
        return result

    def _seen(self, role: str, version: int) -> None:
        """Raise ``role``'s floor to an accepted version: a second attempt of the same
        update (after a root rotation) must not go back below what this one trusted."""
        self.floors[role] = max(version, self.floors.get(role, version))

    def update_timestamp(self, data: bytes) -> Metadata[Timestamp]:
        md: Metadata[Timestamp] = Metadata.from_bytes(data, Timestamp, what="timestamp.json")
        self._base(md, TIMESTAMP)
        self.timestamp = md
        self._seen(TIMESTAMP, md.signed.version)
        return md

    def snapshot_meta(self) -> FileMeta:
        if self.timestamp is None:
            raise VerificationError("no trusted timestamp yet")
        return self.timestamp.signed.meta[SNAPSHOT]

    def update_snapshot(self, data: bytes) -> Metadata[Snapshot]:
        self.snapshot_meta().check(data, "snapshot.json")
        md: Metadata[Snapshot] = Metadata.from_bytes(data, Snapshot, what="snapshot.json")
        self._base(md, SNAPSHOT)
        root_meta = md.signed.meta[ROOT]
        try:
            root_meta.check(self.root_bytes, "root.json")
        except VerificationError:
            self.next_root = root_meta
            raise RootChangedError("the snapshot pins a newer root than the trusted one") from None
        self.snapshot, self.snapshot_bytes = md, data
        self._seen(SNAPSHOT, md.signed.version)
        return md

    # --- targets and delegations -------------------------------------------
    def role_meta(self, role: str) -> FileMeta | None:
        """What the snapshot pins for ``role`` (None: the role has no file)."""
        if self.snapshot is None:
            raise VerificationError("no trusted snapshot yet")
        return self.snapshot.signed.meta.get(role)

    def update_targets(self, data: bytes) -> TrustedRole:
        meta = self.role_meta(TARGETS)
        if meta is None:
            raise VerificationError("the snapshot does not list targets")
        meta.check(data, "targets.json")
        md: Metadata[Targets] = Metadata.from_bytes(data, Targets, role=TARGETS,
                                                    what="targets.json")
        result = self._base(md, TARGETS)
        trusted = TrustedRole(TARGETS, md, ("",), result)
        self.roles[TARGETS] = trusted
        self._seen(TARGETS, md.signed.version)
        return trusted

    def update_delegation(self, role: str, data: bytes) -> TrustedRole | None:
        """Trust a delegation its parent names; an invalid one is skipped (None) with a warning.

        A hash or length mismatch is an attack on the snapshot's integrity and is
        raised, not skipped, as in notary.
        """
        parent = self.roles.get(parent_role(role))
        if parent is None:
            raise VerificationError(f"{role}: its parent {parent_role(role)} is not trusted")
        delegated = parent.metadata.signed.delegations.get(role)
        if delegated is None:
            raise VerificationError(f"{role} is not delegated by {parent.name}")
        meta = self.role_meta(role)
        if meta is None:
            raise VerificationError(f"the snapshot does not list {role}")
        meta.check(data, f"{role}.json")
        try:
            md: Metadata[Targets] = Metadata.from_bytes(data, Targets, role=role,
                                                        what=f"{role}.json")
            keys = {k: parent.metadata.signed.delegations.keys[k] for k in delegated.keyids}
            result = md.check_signatures(keys, delegated, role)
            floor = self.floors.get(role)
            if floor is not None:
                md.check_version(role, floor)
            md.check_expiry(role, self._go_now)
        except RollbackError:
            raise
        except CountersignError as exc:
            self.warnings.append(f"skipping {role}: {exc.message}")
            return None
        trusted = TrustedRole(role, md, delegated.restrict(parent.paths), result)
        self.roles[role] = trusted
        self._seen(role, md.signed.version)
        return trusted

    def children(self, role: str) -> list[str]:
        """The delegations of a trusted role that the snapshot lists, in order."""
        trusted = self.roles.get(role)
        if trusted is None:
            return []
        return [d.name for d in trusted.metadata.signed.delegations.roles
                if self.snapshot is not None and d.name in self.snapshot.signed.meta]

    def targets_of(self, role: str) -> dict[str, FileMeta]:
        """The targets a trusted role may sign: those inside its effective paths."""
        trusted = self.roles[role]
        allowed: dict[str, FileMeta] = {}
        for name, meta in trusted.metadata.signed.targets.items():
            if any(name.startswith(p) for p in trusted.paths):
                allowed[name] = meta
            else:
                self.warnings.append(f"{role} lists {name!r} outside its paths; ignored")
        return allowed

    def versions(self) -> dict[str, int]:
        """The version of every trusted role, for the next client's rollback floors."""
        out = {ROOT: self.root.signed.version}
        if self.timestamp is not None:
            out[TIMESTAMP] = self.timestamp.signed.version
        if self.snapshot is not None:
            out[SNAPSHOT] = self.snapshot.signed.version
        out.update({name: r.metadata.signed.version for name, r in self.roles.items()})
        return out
