"""The trust client's update: notary's download order over the trusted-metadata state.

One refresh is: bootstrap a trusted root (cache, or first use checked against
the pinning); then timestamp (at most 1 MiB), snapshot and targets and every
delegation by the hashes and exact lengths their parents pin, each verified by
:class:`~countersign.tuf.trusted.TrustedState` and cached. If that attempt
fails verification, the root is updated (one rotation at a time through
``N.root.json``) and the attempt runs once more; a second failure is final.

A cached root that has expired is replaced by the server's newer root, checked
against the trust pinning as well as the old root (as notary does); if the
server has none, the update fails: an expired root is never trusted.

Files already verified in this process (the same bytes under the same parent)
are not parsed and verified again (:mod:`countersign.client.verified`); their
pinned hashes, rollback floors and expiry are checked on every refresh, and the
timestamp is always fetched. A cached file whose bytes did not change is not
rewritten.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from countersign.client.cache import MetadataCache
from countersign.client.pinning import TrustPinning
from countersign.client.remote import MAX_ROOT, MAX_TIMESTAMP, NotaryRemote
from countersign.client.verified import (
    PROCESS_MEMO,
    VerifiedMemo,
    report,
    trusted_root,
    update_delegation,
    update_snapshot,
    update_targets,
    update_timestamp,
    version_of,
)
from countersign.errors import (
    CountersignError,
    ExpiredMetadataError,
    FormatError,
    NotFoundError,
    ServerUnavailableError,
    VerificationError,
)
from countersign.tuf.metadata import (
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    FileMeta,
    Metadata,
    is_role_name,
)
from countersign.tuf.repository import RepositoryReport, SignedTarget
from countersign.tuf.timefmt import GoTime
from countersign.tuf.trusted import TrustedState

#: The roles docker accepts a tag from, in priority order.
RELEASE_ROLES = ("targets/releases", TARGETS)
MAX_ROOT_CHAIN = 1024


class NoTrustDataError(NotFoundError):
    """The server has no trust data for the repository (it was never signed)."""


@dataclass
class Refreshed:
    """The outcome of a refresh: the trusted state and the report read from it."""

    state: TrustedState
    report: RepositoryReport

    def lookup(self, name: str, roles: tuple[str, ...] = ()) -> SignedTarget | None:
        return self.report.lookup(name, roles)


class Updater:
    """Keeps one GUN's trusted metadata current, from one server, in one cache."""

    def __init__(self, gun: str, remote: NotaryRemote, cache: MetadataCache,
                 pinning: TrustPinning | None = None, *,
                 now: _dt.datetime | None = None, memo: VerifiedMemo | None = None) -> None:
        self.gun = gun
        self.remote = remote
        self.cache = cache
        self.pinning = pinning or TrustPinning()
        self.now = now
        self.memo = PROCESS_MEMO if memo is None else memo

    def _now(self) -> _dt.datetime:
        return self.now or _dt.datetime.now(_dt.UTC)

    # --- bootstrap -------------------------------------------------------------
    def _floors(self) -> dict[str, int]:
        floors: dict[str, int] = {}
        directory = self.cache.directory
        if not directory.is_dir():
            return floors
        for path in directory.rglob("*.json"):
            role = str(path.relative_to(directory).with_suffix(""))
            data = self.cache.load(role) if is_role_name(role) else None  # skip strays
            if not data:
                continue
            try:
                floors[role] = version_of(role, data, self.memo)
            except CountersignError:
                continue  # an unreadable cache entry sets no floor
        return floors

    def _bootstrap(self) -> tuple[TrustedState, bool]:
        """The trusted root and whether it came from the cache."""
        cached = self.cache.load(ROOT)
        if cached is not None:
            try:
                state = trusted_root(self.gun, cached, now=self._now(),
                                     floors=self._floors(), memo=self.memo)
            except CountersignError as exc:
                raise VerificationError(
                    f"the cached root of {self.gun} cannot be trusted: {exc.message}",
                    advice=f"remove {self.cache.path(ROOT)} to trust the server's root "
                    "again (on first use)") from None
            return state, True
        try:
            data = self.remote.metadata(ROOT, max_length=MAX_ROOT)
        except NotFoundError:
            raise NoTrustDataError(
                f"{self.remote.server} does not have trust data for {self.gun}",
                advice="the repository has never been signed on this trust server") from None
        pin = self.pinning.check_for(self.gun, now=self._now())
        state = TrustedState.from_new_root(self.gun, data, now=self._now(), pin=pin)
        self.cache.store(ROOT, data)
        return state, False

    # --- one attempt ---------------------------------------------------------------
    def _fetch_pinned(self, role: str, meta: FileMeta) -> bytes:
        """The cached file if it still matches ``meta``, else a download by hash."""
        cached = self.cache.load(role)
        if cached is not None:
            try:
                meta.check(cached, role)
                return cached
            except VerificationError:
                pass
        digest = meta.sha256
        if digest is None:
            raise VerificationError(f"{role} is pinned without a sha256 hash")
        return self.remote.metadata(role, max_length=meta.length, checksum=digest.hex())

    def _attempt(self, state: TrustedState) -> None:
        try:
            data = self.remote.metadata(TIMESTAMP, max_length=MAX_TIMESTAMP)
        except (ServerUnavailableError, NotFoundError) as exc:
            cached = self.cache.load(TIMESTAMP)
            if cached is None:
                raise
            state.warnings.append(f"error while downloading remote metadata ({exc.message}); "
                                  "using the cached timestamp")
            data = cached
        update_timestamp(state, data, self.memo)
        self.cache.store(TIMESTAMP, data)
        data = self._fetch_pinned(SNAPSHOT, state.snapshot_meta())
        update_snapshot(state, data, self.memo)
        self.cache.store(SNAPSHOT, data)
        meta = state.role_meta(TARGETS)
        if meta is None:
            raise VerificationError("the snapshot does not list targets")
        data = self._fetch_pinned(TARGETS, meta)
        update_targets(state, data, self.memo)
        self.cache.store(TARGETS, data)
        stack = list(reversed(state.children(TARGETS)))
        while stack:  # pre-order, as notary walks delegations
            role = stack.pop()
            meta = state.role_meta(role)
            if meta is None:
                continue
            data = self._fetch_pinned(role, meta)
            if update_delegation(state, role, data, self.memo) is None:
                continue
            self.cache.store(role, data)
            stack.extend(reversed(state.children(role)))

    # --- root rotation ---------------------------------------------------------
    def _update_root(self, state: TrustedState) -> bool:
        """Move to the server's newest root through every intermediate; False if unchanged."""
        # the root a verified snapshot pins (also when it pinned a root other than
        # the trusted one: that is how a rotation shows), fetched by hash, exact length
        hint = state.next_root
        if state.snapshot is not None:
            hint = state.snapshot.signed.meta.get(ROOT)
        if hint is not None and hint.sha256 is not None:
            newest = self.remote.metadata(ROOT, max_length=hint.length,
                                          checksum=hint.sha256.hex())
            hint.check(newest, "root.json")  # a mirror may answer with another root
        else:
            newest = self.remote.metadata(ROOT, max_length=MAX_ROOT)
        if newest == state.root_bytes:
            return False
        latest = Metadata.from_bytes(newest, what="root.json").signed.version
        trusted = state.root.signed.version
        if latest - trusted > MAX_ROOT_CHAIN:
            raise VerificationError(f"root version {latest} is more than {MAX_ROOT_CHAIN} "
                                    f"rotations ahead of the trusted {trusted}")
        for version in range(trusted + 1, latest):
            step = self.remote.metadata(ROOT, max_length=MAX_ROOT, version=version)
            state.update_root(step, final=False)
        state.update_root(newest, final=True)
        self.cache.store(ROOT, newest)
        for role in (TIMESTAMP, SNAPSHOT):
            if role not in state.floors:
                self.cache.remove(role)
        return True

    # --- the update --------------------------------------------------------------
    def refresh(self) -> Refreshed:
        """Bring the trusted metadata up to date, or raise why it cannot be trusted."""
        state, from_cache = self._bootstrap()
        now = GoTime.from_datetime(self._now())
        if from_cache and state.root.signed.is_expired(now):
            state.pin = self.pinning.check_for(self.gun, now=self._now(), first_use=False)
            self._update_root(state)
            if state.root.signed.is_expired(now):  # the server has nothing newer: a freeze
                raise ExpiredMetadataError(
                    f"the trusted root of {self.gun} expired at {state.root.signed.expires} "
                    f"and {self.remote.server} offers no newer root",
                    advice="the repository owner must sign a new root")
        try:
            self._attempt(state)
        except (VerificationError, FormatError, NotFoundError) as first:
            if not self._update_root(state):
                raise first from None
            self._attempt(state)
        return Refreshed(state, report(state, self.memo))
