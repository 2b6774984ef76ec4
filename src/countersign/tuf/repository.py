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

from countersign.errors import CountersignError, VerificationError
from countersign.tuf.metadata import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    FileMeta,
    VerificationResult,
)
from countersign.tuf.timefmt import GoTime
from countersign.tuf.trusted import TrustedState


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


def _file(files: Mapping[str, bytes], role: str) -> bytes:
    data = files.get(role)
    if data is None:
        raise VerificationError(f"{role}.json is missing")
    return data


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
    delegation's subtree, with a warning, as notary does. ``trusted_root`` is a
    root already trusted; the repository's root must then be a valid rotation of it.
    """
    when = now or _dt.datetime.now(_dt.UTC)
    if trusted_root is not None:
        state = TrustedState.from_trusted_root(gun, trusted_root, now=when)
        state.update_root(_file(files, ROOT))
    else:
        state = TrustedState.from_new_root(gun, _file(files, ROOT), now=when)
    state.update_timestamp(_file(files, TIMESTAMP))
    state.update_snapshot(files.get(SNAPSHOT, b""))
    state.update_targets(files.get(TARGETS, b""))
    queue = [TARGETS]
    while queue:
        for child in state.children(queue.pop(0)):
            data = files.get(child)
            if data is None:
                raise VerificationError(f"{child}.json is listed in the snapshot but missing")
            if state.update_delegation(child, data) is not None:
                queue.append(child)
    return report_of(state)


def report_of(state: TrustedState) -> RepositoryReport:
    """What a trusted state says: every role's signers, every target it may sign."""
    report = RepositoryReport(state.gun)
    root = state.root.signed
    if state.root_result is not None:
        report.roles[ROOT] = RoleReport(ROOT, root.version, root.expires, state.root_result)
    for role, base in ((TIMESTAMP, state.timestamp), (SNAPSHOT, state.snapshot)):
        if base is not None:
            keys, threshold = root.role_keys(role)
            report.roles[role] = RoleReport(role, base.signed.version, base.signed.expires,
                                            base.verify(keys, threshold, role))
    for name, trusted in state.roles.items():
        signed = trusted.metadata.signed
        report.roles[name] = RoleReport(name, signed.version, signed.expires,
                                        trusted.signatures)
        report.targets.extend(SignedTarget(t, name, meta)
                              for t, meta in state.targets_of(name).items())
    report.warnings = list(state.warnings)
    return report


__all__ = ["CountersignError", "RepositoryReport", "RoleReport", "SignedTarget",
           "report_of", "verify_repository"]
