"""Metadata already verified in this process, remembered by content.

Whether a file's signatures meet its role's threshold depends only on the
file's bytes and on the keys and threshold that must sign it, and those come
from the bytes of the parent that lists them (root for the top-level roles,
the delegating role otherwise). So a result is remembered under the SHA-256
of the file and of its parent, and a later refresh that meets the same bytes
under the same parent takes the parsed, signature-checked object instead of
parsing and verifying again. Content-addressed results never go stale.

What depends on anything else is checked again every time, exactly as
:class:`~countersign.tuf.trusted.TrustedState` checks it: the hashes and
length the snapshot or timestamp pins, the rollback floor, expiry, and the
root the snapshot pins. Only successes are remembered; a file that failed is
verified again (and fails again) each time. The timestamp is still fetched
from the server on every refresh: only its signature check can be skipped.

A root taken from the cache also depends on the clock through its
certificates' validity windows, so it is remembered with the span of time in
which none of its certificates changes state, and verified again outside it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from collections.abc import Mapping
from typing import Any

from countersign._lru import BoundedLRU
from countersign.errors import CountersignError, RollbackError, VerificationError
from countersign.tuf.metadata import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    VerificationResult,
    parent_role,
)
from countersign.tuf.repository import RepositoryReport, RoleReport, report_of
from countersign.tuf.timefmt import GoTime
from countersign.tuf.trusted import RootChangedError, TrustedRole, TrustedState

#: how far ahead of ``not_valid_before`` notary already accepts a certificate
_EARLY = _dt.timedelta(days=1)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class VerifiedMemo(BoundedLRU):
    """Verified results by content key, bounded by entries and by their files' bytes.

    ``max_entries=0`` keeps nothing: every refresh verifies everything.
    """

    def __init__(self, *, max_entries: int = 4096, max_bytes: int = 32 << 20) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes)


#: the memo every :class:`~countersign.client.updater.Updater` shares unless given its own
PROCESS_MEMO = VerifiedMemo()


# --- the checks that are never remembered ------------------------------------------


def _recheck(state: TrustedState, md: Metadata[Any], role: str) -> None:
    """The rollback floor, then expiry: as ``TrustedState`` checks them after signatures."""
    floor = state.floors.get(role)
    if floor is not None:
        md.check_version(role, floor)
    md.check_expiry(role, GoTime.from_datetime(state.now))


def _seen(state: TrustedState, role: str, version: int) -> None:
    state.floors[role] = max(version, state.floors.get(role, version))


# --- the root from the cache ---------------------------------------------------------


def _certificate_window(root: Metadata[Root],
                        now: _dt.datetime) -> tuple[_dt.datetime, _dt.datetime] | None:
    """The open span around ``now`` in which no root certificate starts or stops being
    valid (its edges: ``not_valid_before``, a day before it, and ``not_valid_after``)."""
    low, high = _dt.datetime.min.replace(tzinfo=_dt.UTC), _dt.datetime.max.replace(tzinfo=_dt.UTC)
    try:
        for keyid in root.signed.roles[ROOT].keyids:
            key = root.signed.keys.get(keyid)
            for cert in key.certificates if key is not None else ():
                for edge in (cert.not_valid_before_utc - _EARLY, cert.not_valid_before_utc,
                             cert.not_valid_after_utc):
                    if edge < now:
                        low = max(low, edge)
                    else:
                        high = min(high, edge)
    except (CountersignError, ValueError, KeyError, OverflowError):
        return None
    return low, high


def trusted_root(gun: str, data: bytes, *, now: _dt.datetime, floors: Mapping[str, int],
                 memo: VerifiedMemo) -> TrustedState:
    """:meth:`TrustedState.from_trusted_root`, remembered while its certificates hold still."""
    key = ("root", gun, digest(data))
    hit = memo.get(key)
    if hit is not None:
        root, result, low, high = hit
        if low < now < high:
            return TrustedState(gun, root, data, now, dict(floors), root_result=result)
    state = TrustedState.from_trusted_root(gun, data, now=now, floors=floors)
    window = _certificate_window(state.root, now)
    if window is not None:
        memo.put(key, (state.root, state.root_result, *window), len(data))
    return state


def version_of(role: str, data: bytes, memo: VerifiedMemo) -> int:
    """The version a cached file declares (a rollback floor); raises if it is unreadable."""
    key = ("version", role, digest(data))
    hit = memo.get(key)
    if isinstance(hit, int):
        return hit
    version: int = Metadata.from_bytes(data, role=role).signed.version
    memo.put(key, version, len(data))
    return version


# --- one attempt's files -------------------------------------------------------------


def update_timestamp(state: TrustedState, data: bytes,
                     memo: VerifiedMemo) -> Metadata[Timestamp]:
    key = (TIMESTAMP, state.gun, digest(data), digest(state.root_bytes))
    hit: Metadata[Timestamp] | None = memo.get(key)
    if hit is None:
        md = state.update_timestamp(data)
        memo.put(key, md, len(data))
        return md
    _recheck(state, hit, TIMESTAMP)
    state.timestamp = hit
    _seen(state, TIMESTAMP, hit.signed.version)
    return hit


def update_snapshot(state: TrustedState, data: bytes, memo: VerifiedMemo) -> Metadata[Snapshot]:
    key = (SNAPSHOT, state.gun, digest(data), digest(state.root_bytes))
    hit: Metadata[Snapshot] | None = memo.get(key)
    if hit is None:
        md = state.update_snapshot(data)
        memo.put(key, md, len(data))
        return md
    state.snapshot_meta().check(data, "snapshot.json")
    _recheck(state, hit, SNAPSHOT)
    root_meta = hit.signed.meta[ROOT]
    try:
        root_meta.check(state.root_bytes, "root.json")
    except VerificationError:
        state.next_root = root_meta
        raise RootChangedError("the snapshot pins a newer root than the trusted one") from None
    state.snapshot, state.snapshot_bytes = hit, data
    _seen(state, SNAPSHOT, hit.signed.version)
    return hit


def update_targets(state: TrustedState, data: bytes, memo: VerifiedMemo) -> TrustedRole:
    key = (TARGETS, state.gun, digest(data), digest(state.root_bytes))
    hit: tuple[Metadata[Targets], VerificationResult] | None = memo.get(key)
    if hit is None:
        trusted = state.update_targets(data)
        memo.put(key, (trusted.metadata, trusted.signatures), len(data))
        return trusted
    meta = state.role_meta(TARGETS)
    if meta is None:
        raise VerificationError("the snapshot does not list targets")
    meta.check(data, "targets.json")
    md, result = hit
    _recheck(state, md, TARGETS)
    trusted = TrustedRole(TARGETS, md, ("",), result)
    state.roles[TARGETS] = trusted
    _seen(state, TARGETS, md.signed.version)
    return trusted


def update_delegation(state: TrustedState, role: str, data: bytes,
                      memo: VerifiedMemo) -> TrustedRole | None:
    parent = state.roles.get(parent_role(role))
    if parent is None:
        return state.update_delegation(role, data)  # raises why
    key = ("delegation", state.gun, role, digest(data), digest(parent.metadata.signed_bytes))
    hit: tuple[Metadata[Targets], VerificationResult] | None = memo.get(key)
    if hit is None:
        trusted = state.update_delegation(role, data)
        if trusted is not None:
            memo.put(key, (trusted.metadata, trusted.signatures), len(data))
        return trusted
    delegated = parent.metadata.signed.delegations.get(role)
    meta = state.role_meta(role)
    if delegated is None or meta is None:
        return state.update_delegation(role, data)  # raises why
    meta.check(data, f"{role}.json")
    md, result = hit
    try:
        _recheck(state, md, role)
    except RollbackError:
        raise
    except CountersignError as exc:
        state.warnings.append(f"skipping {role}: {exc.message}")
        return None
    trusted = TrustedRole(role, md, delegated.restrict(parent.paths), result)
    state.roles[role] = trusted
    _seen(state, role, md.signed.version)
    return trusted


# --- the report ------------------------------------------------------------------------


def _signatures(state: TrustedState, md: Metadata[Any], role: str,
                memo: VerifiedMemo) -> VerificationResult:
    """Which of root's ``role`` keys signed ``md`` (the report lists them), remembered."""
    key = ("signatures", role, digest(state.root_bytes), digest(md.signed_bytes),
           digest(b",".join(s.to_bytes() for s in md.signatures)))
    hit: VerificationResult | None = memo.get(key)
    if hit is None:
        keys, threshold = state.root.signed.role_keys(role)
        hit = md.verify(keys, threshold, role)
        memo.put(key, hit, len(md.signed_bytes))
    return hit


def report(state: TrustedState, memo: VerifiedMemo) -> RepositoryReport:
    """:func:`~countersign.tuf.repository.report_of`, without checking the timestamp's and
    snapshot's signatures again when the same bytes were checked under the same root."""
    bare = report_of(dataclasses.replace(state, timestamp=None, snapshot=None))
    roles: dict[str, RoleReport] = {}
    if ROOT in bare.roles:
        roles[ROOT] = bare.roles[ROOT]
    for role, base in ((TIMESTAMP, state.timestamp), (SNAPSHOT, state.snapshot)):
        if base is not None:
            roles[role] = RoleReport(role, base.signed.version, base.signed.expires,
                                     _signatures(state, base, role, memo))
    roles.update(bare.roles)
    bare.roles = roles
    return bare
