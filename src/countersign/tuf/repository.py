"""Offline verification of a whole Notary repository: every file, every link.

Given the bytes of root, timestamp, snapshot, targets and any delegations
(a trust-dir cache, or what a server served), check the chain as notary's
client does: root certificates and thresholds, timestamp -> snapshot -> targets
-> delegations by hash and length, signatures by the keys each parent names,
expiry, and delegation path prefixes. Pure: bytes in, a report out.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from countersign.errors import CountersignError, FormatError, VerificationError
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
)
from countersign.tuf.roots import validate_root
from countersign.tuf.timefmt import GoTime


@dataclass(frozen=True)
class RoleReport:
    role: str
    version: int
    expires: GoTime
    signatures: VerificationResult


@dataclass(frozen=True)
class SignedTarget:
    name: str
    role: str
    meta: FileMeta


@dataclass
class RepositoryReport:
    """What verified: each role's signers, every target with the role that signed it."""

    gun: str
    roles: dict[str, RoleReport] = field(default_factory=dict)
    targets: list[SignedTarget] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def lookup(self, name: str, roles: tuple[str, ...] = ()) -> SignedTarget | None:
        """The target ``name`` from the first of ``roles`` that has it (any role if empty)."""
        order = roles or tuple(self.roles)
        for role in order:
            for target in self.targets:
                if target.role == role and target.name == name:
                    return target
        return None


def _parse(files: Mapping[str, bytes], role: str) -> Metadata:  # type: ignore[type-arg]
    data = files.get(role)
    if data is None:
        raise VerificationError(f"{role}.json is missing")
    return Metadata.from_bytes(data, role=role, what=f"{role}.json")


def verify_repository(
    files: Mapping[str, bytes],
    gun: str,
    *,
    now: _dt.datetime | None = None,
    trusted_root: bytes | None = None,
) -> RepositoryReport:
    """Verify ``files`` (role name -> exact bytes) as the repository of ``gun``.

    Raises :class:`VerificationError` for anything that would make notary's
    client refuse the repository; an invalid delegation only drops that
    delegation's subtree, with a warning, as notary does.
    """
    when = now or _dt.datetime.now(_dt.UTC)
    go_now = GoTime.from_datetime(when)
    report = RepositoryReport(gun)

    root_md: Metadata[Root] = _parse(files, ROOT)
    previous = (
        Metadata.from_bytes(trusted_root, Root, what="trusted root") if trusted_root else None
    )
    validation = validate_root(root_md, gun, previous=previous, now=when)
    root_md.check_expiry("root", go_now)
    if previous is not None:
        root_md.check_version("root", previous.signed.version)
    root = root_md.signed
    report.roles[ROOT] = RoleReport(ROOT, root.version, root.expires, validation.own)

    def base(md: Metadata, role: str) -> None:  # type: ignore[type-arg]
        keys, threshold = root.role_keys(role)
        result = md.check_signatures(keys, threshold, role)
        md.check_expiry(role, go_now)
        report.roles[role] = RoleReport(role, md.signed.version, md.signed.expires, result)

    timestamp: Metadata[Timestamp] = _parse(files, TIMESTAMP)
    base(timestamp, TIMESTAMP)
    snapshot_data = files.get(SNAPSHOT, b"")
    timestamp.signed.meta[SNAPSHOT].check(snapshot_data, "snapshot.json")
    snapshot: Metadata[Snapshot] = _parse(files, SNAPSHOT)
    base(snapshot, SNAPSHOT)
    meta = snapshot.signed.meta
    meta[ROOT].check(files[ROOT], "root.json")
    meta[TARGETS].check(files.get(TARGETS, b""), "targets.json")
    targets: Metadata[Targets] = _parse(files, TARGETS)
    base(targets, TARGETS)
    report.targets.extend(SignedTarget(n, TARGETS, m) for n, m in targets.signed.targets.items())

    # delegations, pre-order, as the client walks them
    queue: list[tuple[Metadata[Targets], tuple[str, ...]]] = [(targets, ("",))]
    while queue:
        parent, parent_paths = queue.pop(0)
        for delegated in parent.signed.delegations.roles:
            name = delegated.name
            if name not in meta:
                continue
            data = files.get(name)
            if data is None:
                raise VerificationError(f"{name}.json is listed in the snapshot but missing")
            meta[name].check(data, f"{name}.json")
            try:
                md: Metadata[Targets] = Metadata.from_bytes(data, Targets, role=name,
                                                            what=f"{name}.json")
                keys = {k: parent.signed.delegations.keys[k] for k in delegated.keyids}
                result = md.check_signatures(keys, delegated, name)
                md.check_expiry(name, go_now)
            except (VerificationError, FormatError) as exc:
                report.warnings.append(f"skipping {name}: {exc.message}")
                continue
            report.roles[name] = RoleReport(name, md.signed.version, md.signed.expires, result)
            paths = delegated.restrict(parent_paths)
            for target_name, target_meta in md.signed.targets.items():
                if any(target_name.startswith(p) for p in paths):
                    report.targets.append(SignedTarget(target_name, name, target_meta))
                else:
                    report.warnings.append(
                        f"{name} lists {target_name!r} outside its paths; ignored"
                    )
            queue.append((md, paths))
    return report


__all__ = ["CountersignError", "RepositoryReport", "RoleReport", "SignedTarget",
           "verify_repository"]
