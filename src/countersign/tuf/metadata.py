"""Notary's TUF metadata: Root, Targets (with delegations), Snapshot, Timestamp.

Objects are immutable. :meth:`Metadata.from_bytes` keeps the canonical bytes
of the ``signed`` object exactly as read (unknown fields included), because
that is what notary verifies signatures over; :meth:`Metadata.to_bytes`
writes the byte-exact file form notary writes, which is also the form its
server hashes when it builds snapshots. For every file notary writes,
``Metadata.from_bytes(b).to_bytes() == b``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

from countersign.errors import (
    CanonicalJSONError,
    ExpiredMetadataError,
    FormatError,
    KeyFormatError,
    RollbackError,
    SignatureError,
    UnsupportedAlgorithmError,
    VerificationError,
)
from countersign.tuf.canonical import (
    FloatLiteral,
    encode_canonical,
    encode_checked,
    go_compact,
    go_string,
    parse_json,
)
from countersign.tuf.keys import PublicKey, Signer, b64decode, b64encode
from countersign.tuf.timefmt import GoTime

ROOT = "root"
TARGETS = "targets"
SNAPSHOT = "snapshot"
TIMESTAMP = "timestamp"
BASE_ROLES = (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)

SHA256 = "sha256"
SHA512 = "sha512"
_HASH_SIZES = {SHA256: 32, SHA512: 64}

_YEAR = _dt.timedelta(days=365)
#: notary's ``NotaryDefaultExpiries``: how long each role's signature lasts.
DEFAULT_EXPIRY: Mapping[str, _dt.timedelta] = MappingProxyType(
    {
        ROOT: 10 * _YEAR,
        TARGETS: 3 * _YEAR,
        SNAPSHOT: 3 * _YEAR,
        TIMESTAMP: _dt.timedelta(days=14),
    }
)

_DELEGATION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_/")
MAX_ROLE_NAME = 255


def is_delegation_name(name: object) -> bool:
    """notary's ``IsDelegation``: ``targets/...``, ``[-a-z0-9_/]``, clean path, < 256 chars."""
    if not isinstance(name, str) or len(name) > MAX_ROLE_NAME:
        return False
    if not name.startswith("targets/") or not set(name) <= _DELEGATION_CHARS:
        return False
    parts = name.split("/")
    return all(part and part not in (".", "..") for part in parts)


def is_role_name(name: object) -> bool:
    return name in BASE_ROLES or is_delegation_name(name)


def parent_role(name: str) -> str:
    """The role that delegates to ``name`` (``targets`` for a top-level delegation)."""
    return name.rsplit("/", 1)[0]


def role_depth(name: str) -> int:
    return name.count("/")


# --- field readers: strict, typed, each failure names the field ----------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} is not a JSON object")
    return value


def _field(obj: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise FormatError(f"{where} has no {name!r} field")
    return obj[name]


def _int(value: Any, where: str, minimum: int) -> int:
    if type(value) is not int:
        kind = "a number with a fraction or exponent" if isinstance(value, FloatLiteral) else (
            type(value).__name__
        )
        raise FormatError(f"{where} must be an integer, not {kind}")
    if value < minimum:
        raise FormatError(f"{where} must be at least {minimum}, not {value}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where} must be a string")
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise FormatError(f"{where} must be a list of strings")
    return tuple(_str(item, f"{where} entry") for item in value)


def _time(value: Any, where: str) -> GoTime:
    return GoTime.parse(_str(value, where))


def _freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


class _Absent:
    """Marks a ``custom`` field that is not there (as opposed to JSON null)."""

    _instance: ClassVar[_Absent | None] = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


# --- building blocks ------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    keyid: str
    method: str
    sig: bytes

    @classmethod
    def from_dict(cls, obj: Any, where: str = "signature") -> Signature:
        obj = _obj(obj, where)
        keyid = _str(_field(obj, "keyid", where), f"{where} keyid")
        method = _str(_field(obj, "method", where), f"{where} method").lower()
        try:
            sig = b64decode(_field(obj, "sig", where), f"{where} sig")
        except KeyFormatError as exc:
            raise FormatError(exc.message) from None
        return cls(keyid, method, sig)

    def to_dict(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "method": self.method, "sig": b64encode(self.sig)}

    def to_bytes(self) -> bytes:
        """Go struct order: keyid, method, sig."""
        return (
            b'{"keyid":' + go_string(self.keyid)
            + b',"method":' + go_string(self.method)
            + b',"sig":' + go_string(b64encode(self.sig)) + b"}"
        )


@dataclass(frozen=True)
class FileMeta:
    """Length and hashes of a file (a target, or a metadata file in snapshot/timestamp)."""

    length: int
    hashes: Mapping[str, bytes]
    custom: Any = ABSENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", _freeze(self.hashes))
        if self.custom is not ABSENT:
            # normalised once, so writing it later never meets a float or a bad string
            object.__setattr__(self, "custom", parse_json(encode_canonical(self.custom)))

    @classmethod
    def from_dict(cls, obj: Any, where: str = "file meta") -> FileMeta:
        obj = _obj(obj, where)
        length = _int(_field(obj, "length", where), f"{where} length", 0)
        raw_hashes = _obj(_field(obj, "hashes", where), f"{where} hashes")
        hashes: dict[str, bytes] = {}
        for name, value in raw_hashes.items():
            try:
                digest = b64decode(value, f"{where} {name} hash")
            except KeyFormatError as exc:
                raise FormatError(exc.message) from None
            if name in _HASH_SIZES and len(digest) != _HASH_SIZES[name]:
                raise FormatError(f"{where}: a {name} hash has {_HASH_SIZES[name]} bytes")
            hashes[name] = digest
        if not any(name in _HASH_SIZES for name in hashes):
            raise FormatError(f"{where} needs a sha256 or sha512 hash")
        custom = obj.get("custom", ABSENT)
        if custom is None:  # Go reads null into a nil pointer and omits it
            custom = ABSENT
        return cls(length, hashes, custom)

    @classmethod
    def for_bytes(
        cls, data: bytes, *, algorithms: Iterable[str] = (SHA256, SHA512), custom: Any = ABSENT
    ) -> FileMeta:
        """FileMeta describing ``data``: notary lists sha256 and sha512."""
        hashes = {name: hashlib.new(name, data).digest() for name in algorithms}
        return cls(len(data), hashes, custom)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hashes": {name: b64encode(value) for name, value in self.hashes.items()},
            "length": self.length,
        }
        if self.custom is not ABSENT:
            out["custom"] = self.custom
        return out

    @property
    def sha256(self) -> bytes | None:
        return self.hashes.get(SHA256)

    def check(self, data: bytes, name: str) -> None:
        """Raise unless ``data`` has this length and every known hash (constant-time)."""
        if len(data) != self.length:
            raise VerificationError(
                f"{name}: {len(data)} bytes where {self.length} were signed"
            )
        self.check_hashes(data, name)

    def check_hashes(self, data: bytes, name: str) -> None:
        checked = 0
        for algorithm, expected in self.hashes.items():
            if algorithm not in _HASH_SIZES:
                continue
            actual = hashlib.new(algorithm, data).digest()
            if not hmac.compare_digest(actual, expected):
                raise VerificationError(
                    f"{name}: {algorithm} checksum does not match the signed "
                    f"{expected.hex()}"
                )
            checked += 1
        if not checked:
            raise VerificationError(f"{name}: no sha256 or sha512 hash to check against")

    def same_file(self, other: FileMeta) -> bool:
        """Whether both describe the same bytes (length and every shared known hash)."""
        if self.length != other.length:
            return False
        shared = [a for a in _HASH_SIZES if a in self.hashes and a in other.hashes]
        return bool(shared) and all(
            hmac.compare_digest(self.hashes[a], other.hashes[a]) for a in shared
        )


def _threshold_role(
    obj: Any, where: str, keys: Mapping[str, PublicKey]
) -> tuple[tuple[str, ...], int]:
    obj = _obj(obj, where)
    keyids = _str_list(_field(obj, "keyids", where), f"{where} keyids")
    threshold = _int(_field(obj, "threshold", where), f"{where} threshold", 1)
    for keyid in keyids:
        if keyid not in keys:
            raise FormatError(f"{where} lists key {keyid[:16]} that is not among the keys")
    return keyids, threshold


def _keys(obj: Any, where: str) -> dict[str, PublicKey]:
    out: dict[str, PublicKey] = {}
    for keyid, value in _obj(obj, where).items():
        try:
            out[keyid] = PublicKey.from_dict(value, where=f"{where} {keyid[:16]}")
        except UnsupportedAlgorithmError as exc:
            raise FormatError(exc.message) from None
    return out


@dataclass(frozen=True)
class Role:
    """A role's keys and threshold, as root lists base roles."""

    keyids: tuple[str, ...]
    threshold: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}


@dataclass(frozen=True)
class DelegatedRole:
    """A delegation entry of a Targets file: name, keys, threshold, path prefixes."""

    name: str
    keyids: tuple[str, ...]
    threshold: int = 1
    paths: tuple[str, ...] = ("",)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "keyids": list(self.keyids),
            "name": self.name,
            "threshold": self.threshold,
        }
        if self.paths:
            out["paths"] = list(self.paths)
        return out

    def allows(self, target: str) -> bool:
        """notary's path rule: a plain string prefix; ``""`` admits every name."""
        return any(target.startswith(prefix) for prefix in self.paths)

    def restrict(self, parent_paths: Iterable[str]) -> tuple[str, ...]:
        """The effective paths under a parent: those of ours some parent path prefixes."""
        parents = tuple(parent_paths)
        return tuple(p for p in self.paths if any(p.startswith(q) for q in parents))

    @property
    def role(self) -> Role:
        return Role(self.keyids, self.threshold)


@dataclass(frozen=True)
class Delegations:
    keys: Mapping[str, PublicKey] = field(default_factory=dict)
    roles: tuple[DelegatedRole, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _freeze(self.keys))
        object.__setattr__(self, "roles", tuple(self.roles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": {keyid: key.to_dict() for keyid, key in self.keys.items()},
            "roles": [role.to_dict() for role in self.roles],
        }

    def get(self, name: str) -> DelegatedRole | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None


# --- the four kinds of signed document -----------------------------------------

_S = TypeVar("_S", bound="Signed")


@dataclass(frozen=True)
class Signed:
    """Fields every signed document has."""

    TYPE: ClassVar[str] = ""

    expires: GoTime
    version: int

    @classmethod
    def _common(cls, obj: dict[str, Any], where: str) -> tuple[GoTime, int]:
        kind = _field(obj, "_type", where)
        if kind != cls.TYPE:
            raise FormatError(f"{where}: _type is {str(kind)[:20]!r}, expected {cls.TYPE!r}")
        expires = _time(_field(obj, "expires", where), f"{where} expires")
        version = _int(_field(obj, "version", where), f"{where} version", 1)
        return expires, version

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> Signed:  # pragma: no cover - abstract
        raise NotImplementedError

    def _body(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out = {"_type": self.TYPE, "expires": self.expires.format(), "version": self.version}
        out.update(self._body())
        return out

    def is_expired(self, now: GoTime | None = None) -> bool:
        """Expired when ``now`` is past ``expires`` (no leeway, as notary)."""
        return (now or GoTime.now()) > self.expires

    def bump(self: _S, *, expires: GoTime | None = None, now: GoTime | None = None,
             role: str | None = None) -> _S:
        """The next version, with a new expiry (the role's default from ``now`` if not given)."""
        if expires is None:
            default = DEFAULT_EXPIRY[role or self.TYPE.lower()]
            expires = (now or GoTime.now()).add(default)
        return replace(self, version=self.version + 1, expires=expires)


@dataclass(frozen=True)
class Root(Signed):
    TYPE: ClassVar[str] = "Root"

    keys: Mapping[str, PublicKey] = field(default_factory=dict)
    roles: Mapping[str, Role] = field(default_factory=dict)
    consistent_snapshot: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _freeze(self.keys))
        object.__setattr__(self, "roles", _freeze(self.roles))

    @classmethod
    def from_dict(cls, obj: Any, where: str = "root") -> Root:
        obj = _obj(obj, where)
        expires, version = cls._common(obj, where)
        keys = _keys(_field(obj, "keys", where), f"{where} keys")
        roles: dict[str, Role] = {}
        for name, value in _obj(_field(obj, "roles", where), f"{where} roles").items():
            keyids, threshold = _threshold_role(value, f"{where} role {name[:40]!r}", keys)
            roles[name] = Role(keyids, threshold)
        for name in BASE_ROLES:
            if name not in roles:
                raise FormatError(f"{where} has no {name!r} role")
        consistent = obj.get("consistent_snapshot", False)
        if not isinstance(consistent, bool):
            raise FormatError(f"{where} consistent_snapshot must be true or false")
        return cls(expires, version, keys, roles, consistent)

    def _body(self) -> dict[str, Any]:
        return {
            "consistent_snapshot": self.consistent_snapshot,
            "keys": {keyid: key.to_dict() for keyid, key in self.keys.items()},
            "roles": {name: role.to_dict() for name, role in self.roles.items()},
        }

    def role_keys(self, name: str) -> tuple[Mapping[str, PublicKey], Role]:
        """The keys and threshold root gives a base role."""
        role = self.roles.get(name)
        if role is None:
            raise VerificationError(f"root defines no {name!r} role")
        return {k: self.keys[k] for k in role.keyids}, role


@dataclass(frozen=True)
class Targets(Signed):
    TYPE: ClassVar[str] = "Targets"

    targets: Mapping[str, FileMeta] = field(default_factory=dict)
    delegations: Delegations = field(default_factory=Delegations)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _freeze(self.targets))

    @classmethod
    def from_dict(cls, obj: Any, where: str = "targets", role: str = TARGETS) -> Targets:
        obj = _obj(obj, where)
        expires, version = cls._common(obj, where)
        raw_targets = obj.get("targets")
        targets = {
            name: FileMeta.from_dict(meta, f"{where} target {name[:60]!r}")
            for name, meta in (_obj(raw_targets, f"{where} targets") if raw_targets is not None
                               else {}).items()
        }
        raw_del = obj.get("delegations")
        delegations = Delegations()
        if raw_del is not None:
            raw_del = _obj(raw_del, f"{where} delegations")
            keys = _keys(raw_del.get("keys") or {}, f"{where} delegation keys")
            roles = []
            raw_roles = raw_del.get("roles") or []
            if not isinstance(raw_roles, list):
                raise FormatError(f"{where} delegation roles must be a list")
            names: set[str] = set()
            for raw_entry in raw_roles:
                entry = _obj(raw_entry, f"{where} delegation")
                name = _str(_field(entry, "name", f"{where} delegation"), "delegation name")
                rwhere = f"{where} delegation {name[:60]!r}"
                if not is_delegation_name(name) or parent_role(name) != role:
                    raise FormatError(f"{rwhere} is not a valid child of {role}")
                if name in names:
                    raise FormatError(f"{rwhere} appears twice")
                names.add(name)
                keyids, threshold = _threshold_role(entry, rwhere, keys)
                raw_paths = entry.get("paths")
                paths = _str_list(raw_paths, f"{rwhere} paths") if raw_paths is not None else ()
                roles.append(DelegatedRole(name, keyids, threshold, paths))
            delegations = Delegations(keys, tuple(roles))
        return cls(expires, version, targets, delegations)

    def _body(self) -> dict[str, Any]:
        return {
            "delegations": self.delegations.to_dict(),
            "targets": {name: meta.to_dict() for name, meta in self.targets.items()},
        }


@dataclass(frozen=True)
class _MetaFile(Signed):
    meta: Mapping[str, FileMeta] = field(default_factory=dict)

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _freeze(self.meta))

    @classmethod
    def from_dict(cls, obj: Any, where: str = "") -> _MetaFile:
        where = where or cls.TYPE.lower()
        obj = _obj(obj, where)
        expires, version = cls._common(obj, where)
        meta = {
            name: FileMeta.from_dict(value, f"{where} meta {name[:60]!r}")
            for name, value in _obj(_field(obj, "meta", where), f"{where} meta").items()
        }
        for name in cls.REQUIRED:
            if name not in meta or SHA256 not in meta[name].hashes:
                raise FormatError(f"{where} has no sha256 for {name!r}")
        return cls(expires, version, meta)

    def _body(self) -> dict[str, Any]:
        return {"meta": {name: meta.to_dict() for name, meta in self.meta.items()}}


@dataclass(frozen=True)
class Snapshot(_MetaFile):
    TYPE: ClassVar[str] = "Snapshot"
    REQUIRED: ClassVar[tuple[str, ...]] = (ROOT, TARGETS)


@dataclass(frozen=True)
class Timestamp(_MetaFile):
    TYPE: ClassVar[str] = "Timestamp"
    REQUIRED: ClassVar[tuple[str, ...]] = (SNAPSHOT,)


_TYPES: Mapping[str, type[Signed]] = {
    "Root": Root, "Targets": Targets, "Snapshot": Snapshot, "Timestamp": Timestamp,
}

_ROLE_TYPES: Mapping[str, type[Signed]] = {
    ROOT: Root, SNAPSHOT: Snapshot, TIMESTAMP: Timestamp, TARGETS: Targets,
}

T = TypeVar("T", bound=Signed)

#: The largest metadata file countersign parses (notary caps a root at 100 MiB).
MAX_METADATA_BYTES = 100 * 1024 * 1024


# --- verification result --------------------------------------------------------


@dataclass(frozen=True)
class VerificationResult:
    """Who signed a role, who did not, and whether the threshold of distinct keys is met.

    Distinctness is by the key itself (canonical key ID): a key listed twice,
    listed both bare and as a certificate, or a signature repeated, counts once.
    """

    role: str
    threshold: int
    signed: frozenset[str]  # role key IDs with a valid signature
    unsigned: frozenset[str]  # role key IDs without one
    distinct_signers: int
    rejected: tuple[str, ...] = ()  # why some signatures did not count

    @property
    def verified(self) -> bool:
        return self.distinct_signers >= self.threshold

    @property
    def missing(self) -> int:
        return max(0, self.threshold - self.distinct_signers)

    def __bool__(self) -> bool:
        return self.verified

    def describe(self) -> str:
        state = "met" if self.verified else "NOT met"
        return (
            f"{self.role}: {self.distinct_signers} of {self.threshold} required distinct "
            f"signatures ({state})"
        )


@dataclass(frozen=True)
class Metadata(Generic[T]):
    """A signed document: the typed ``signed`` part, its signatures, the bytes they cover."""

    signed: T
    signatures: tuple[Signature, ...] = ()
    signed_bytes: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", tuple(self.signatures))
        if not self.signed_bytes:
            object.__setattr__(self, "signed_bytes", encode_checked(self.signed.to_dict()))

    # --- reading and writing ------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, expected: type[T] | None = None, *,
                   role: str | None = None, what: str | None = None) -> Metadata[Any]:
        """Parse a metadata file; ``expected`` pins the type, ``role`` names a delegation."""
        what = what or (f"{role}.json" if role else "metadata")
        if len(data) > MAX_METADATA_BYTES:
            raise FormatError(f"{what} is larger than {MAX_METADATA_BYTES} bytes")
        doc = _obj(parse_json(data, what=what), what)
        raw_signed = _obj(_field(doc, "signed", what), f"{what} signed")
        raw_sigs = _field(doc, "signatures", what)
        if raw_sigs is None:
            raw_sigs = []
        if not isinstance(raw_sigs, list):
            raise FormatError(f"{what} signatures must be a list")
        kind = raw_signed.get("_type")
        cls_for = _TYPES.get(kind) if isinstance(kind, str) else None
        if cls_for is None:
            raise FormatError(f"{what}: unknown _type {str(kind)[:20]!r}")
        if expected is None and role is not None:
            expected = _ROLE_TYPES.get(role, Targets)  # type: ignore[assignment]
        if expected is not None and cls_for is not expected:
            raise FormatError(f"{what} is {kind} metadata, expected {expected.TYPE}")
        if cls_for is Targets:
            signed: Signed = Targets.from_dict(raw_signed, f"{what} signed", role or TARGETS)
        else:
            signed = cls_for.from_dict(raw_signed, f"{what} signed")
        signatures = tuple(
            Signature.from_dict(s, f"{what} signature {i}") for i, s in enumerate(raw_sigs)
        )
        return Metadata(signed, signatures, encode_checked(raw_signed))

    def to_bytes(self) -> bytes:
        """The exact file notary writes: compact envelope, Go-escaped, no newline."""
        signed = go_compact(encode_checked(self.signed.to_dict()))
        sigs = b",".join(s.to_bytes() for s in self.signatures)
        return b'{"signed":' + signed + b',"signatures":[' + sigs + b"]}"

    def file_meta(self) -> FileMeta:
        """Length and sha256/sha512 of :meth:`to_bytes`, for snapshot and timestamp."""
        return FileMeta.for_bytes(self.to_bytes())

    # --- signing ------------------------------------------------------------
    def sign(self, signer: Signer, key: PublicKey) -> Metadata[T]:
        """A copy with ``signer``'s signature as ``key`` (replacing one by that key ID).

        ``key`` is the public key as the role lists it (a certificate for root),
        whose TUF key ID goes into the signature.
        """
        if key.canonical_key_id != signer.canonical_key_id:
            raise SignatureError(
                f"the signing key {signer.canonical_key_id[:12]} is not the private half "
                f"of key {key.key_id[:12]}"
            )
        canonical = encode_checked(self.signed.to_dict())
        if canonical != self.signed_bytes:  # pragma: no cover - frozen objects cannot drift
            raise SignatureError("signed bytes are out of date")
        sig = Signature(key.key_id, signer.method, signer.sign(canonical))
        kept = tuple(s for s in self.signatures if s.keyid != key.key_id)
        return Metadata(self.signed, (*kept, sig), canonical)

    def with_signed(self, signed: T) -> Metadata[T]:
        """New content, keeping no signatures (they covered the old content)."""
        return Metadata(signed)

    def without_signatures(self, keep: Iterable[str] = ()) -> Metadata[T]:
        allowed = set(keep)
        return Metadata(
            self.signed, tuple(s for s in self.signatures if s.keyid in allowed), self.signed_bytes
        )

    # --- checking -----------------------------------------------------------
    def verify(self, keys: Mapping[str, PublicKey], role: Role | DelegatedRole,
               name: str = "") -> VerificationResult:
        """Check signatures against a role's keys and threshold (notary's ``VerifySignatures``)."""
        name = name or (role.name if isinstance(role, DelegatedRole) else self.signed.TYPE.lower())
        valid: set[str] = set()
        rejected: list[str] = []
        role_ids = set(role.keyids)
        for sig in self.signatures:
            if sig.keyid not in role_ids:
                rejected.append(f"{sig.keyid[:12]}: not a key of {name}")
                continue
            key = keys.get(sig.keyid)
            if key is None:
                rejected.append(f"{sig.keyid[:12]}: key not found")
                continue
            try:
                if key.key_id != sig.keyid:
                    rejected.append(f"{sig.keyid[:12]}: listed under an ID that is not its own")
                    continue
            except (KeyFormatError, UnsupportedAlgorithmError, CanonicalJSONError):
                rejected.append(f"{sig.keyid[:12]}: unusable key")
                continue
            if key.verify(sig.method, sig.sig, self.signed_bytes):
                valid.add(sig.keyid)
            else:
                rejected.append(f"{sig.keyid[:12]}: invalid {sig.method} signature")
        distinct: set[str] = set()
        for keyid in valid:
            try:
                distinct.add(keys[keyid].canonical_key_id)
            except (KeyFormatError, UnsupportedAlgorithmError):  # pragma: no cover
                continue
        return VerificationResult(
            role=name,
            threshold=role.threshold,
            signed=frozenset(valid),
            unsigned=frozenset(role_ids - valid),
            distinct_signers=len(distinct),
            rejected=tuple(rejected),
        )

    def check_signatures(self, keys: Mapping[str, PublicKey], role: Role | DelegatedRole,
                         name: str = "") -> VerificationResult:
        """:meth:`verify`, raising :class:`VerificationError` when the threshold is not met."""
        result = self.verify(keys, role, name)
        if not result.verified:
            raise VerificationError(
                f"valid signatures did not meet threshold for {result.role}: "
                f"{result.distinct_signers} of {result.threshold}",
                advice="; ".join(result.rejected[:4]) or None,
            )
        return result

    def check_expiry(self, name: str, now: GoTime | None = None) -> None:
        if self.signed.is_expired(now):
            raise ExpiredMetadataError(f"{name} expired at {self.signed.expires}")

    def check_version(self, name: str, trusted_version: int) -> None:
        """Refuse a version older than one already trusted (equal is accepted, as notary)."""
        if self.signed.version < trusted_version:
            raise RollbackError(
                f"{name} version {self.signed.version} is older than the trusted "
                f"version {trusted_version}"
            )


def new_root(keys: Mapping[str, PublicKey], roles: Mapping[str, Role], *,
             version: int = 1, expires: GoTime | None = None) -> Metadata[Root]:
    expires = expires or GoTime.now().add(DEFAULT_EXPIRY[ROOT])
    return Metadata(Root(expires, version, keys, roles, False))


def new_targets(*, version: int = 1, expires: GoTime | None = None,
                targets: Mapping[str, FileMeta] | None = None,
                delegations: Delegations | None = None) -> Metadata[Targets]:
    expires = expires or GoTime.now().add(DEFAULT_EXPIRY[TARGETS])
    return Metadata(Targets(expires, version, targets or {}, delegations or Delegations()))


def new_snapshot(meta: Mapping[str, FileMeta], *, version: int = 1,
                 expires: GoTime | None = None) -> Metadata[Snapshot]:
    expires = expires or GoTime.now().add(DEFAULT_EXPIRY[SNAPSHOT])
    return Metadata(Snapshot(expires, version, meta))


def new_timestamp(snapshot: FileMeta, *, version: int = 1,
                  expires: GoTime | None = None) -> Metadata[Timestamp]:
    expires = expires or GoTime.now().add(DEFAULT_EXPIRY[TIMESTAMP])
    return Metadata(Timestamp(expires, version, {SNAPSHOT: snapshot}))
