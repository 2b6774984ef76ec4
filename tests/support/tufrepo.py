"""A small in-memory Notary repository for tests: real keys, real signatures, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    Snapshot,
    Targets,
    Timestamp,
    new_root,
    new_snapshot,
    new_targets,
    new_timestamp,
    root_certificate_key,
)

GUN = "localhost:5000/test/trusttest"


@dataclass
class Repo:
    """Keys and signed metadata of one GUN, with the root key as a certificate."""

    gun: str
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    public: dict[str, PublicKey] = field(default_factory=dict)
    root: Metadata[Root] | None = None
    targets: Metadata[Targets] | None = None
    delegations: dict[str, Metadata[Targets]] = field(default_factory=dict)
    snapshot: Metadata[Snapshot] | None = None
    timestamp: Metadata[Timestamp] | None = None

    @classmethod
    def create(cls, gun: str = GUN) -> Repo:
        repo = cls(gun)
        for role in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP):
            repo.keys[role] = PrivateKey.generate("ecdsa")
        repo.public[ROOT] = root_certificate_key(repo.keys[ROOT], gun)
        for role in (TARGETS, SNAPSHOT, TIMESTAMP):
            repo.public[role] = repo.keys[role].public_key
        keys = {k.key_id: k for k in repo.public.values()}
        roles = {role: Role((repo.public[role].key_id,), 1) for role in repo.public}
        repo.root = new_root(keys, roles).sign(repo.keys[ROOT], repo.public[ROOT])
        repo.targets = new_targets()
        repo.sign_all()
        return repo

    def delegate(self, name: str, key: PrivateKey, paths: tuple[str, ...] = ("",),
                 threshold: int = 1, extra_keys: tuple[PublicKey, ...] = ()) -> None:
        assert self.targets is not None
        current = self.targets.signed.delegations
        pubs = (key.public_key, *extra_keys)
        role = DelegatedRole(name, tuple(p.key_id for p in pubs), threshold, paths)
        keys = dict(current.keys)
        keys.update({p.key_id: p for p in pubs})
        roles = (*(r for r in current.roles if r.name != name), role)
        signed = self.targets.signed.bump(role=TARGETS)
        self.targets = Metadata(_replace(signed, delegations=Delegations(keys, roles)))
        self.delegations.setdefault(name, new_targets())

    def sign_all(self, delegation_signers: dict[str, list[PrivateKey]] | None = None) -> None:
        assert self.targets is not None and self.root is not None
        self.targets = self.targets.sign(self.keys[TARGETS], self.public[TARGETS])
        for name, current in list(self.delegations.items()):
            md = current
            for signer in (delegation_signers or {}).get(name, []):
                md = md.sign(signer, signer.public_key)
            self.delegations[name] = md
        meta = {ROOT: self.root.file_meta(), TARGETS: self.targets.file_meta()}
        meta.update({n: md.file_meta() for n, md in self.delegations.items()})
        version = self.snapshot.signed.version + 1 if self.snapshot else 1
        self.snapshot = new_snapshot(meta, version=version).sign(
            self.keys[SNAPSHOT], self.public[SNAPSHOT])
        version = self.timestamp.signed.version + 1 if self.timestamp else 1
        self.timestamp = new_timestamp(self.snapshot.file_meta(), version=version).sign(
            self.keys[TIMESTAMP], self.public[TIMESTAMP])

    def add_target(self, name: str, data: bytes, role: str = TARGETS) -> None:
        md = self.targets if role == TARGETS else self.delegations[role]
        assert md is not None
        targets = dict(md.signed.targets)
        targets[name] = FileMeta.for_bytes(data, algorithms=("sha256",))
        new = Metadata(_replace(md.signed.bump(role=TARGETS), targets=targets))
        if role == TARGETS:
            self.targets = new
        else:
            self.delegations[role] = new


def _replace(obj, **changes):  # type: ignore[no-untyped-def]
    from dataclasses import replace
    return replace(obj, **changes)
