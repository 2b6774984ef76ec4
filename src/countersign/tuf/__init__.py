"""Notary v1's TUF as a pure library: canonical JSON, keys, signatures, metadata.

No network and no files: everything here takes and returns bytes and objects,
so the client, the server and the tests share one implementation.
"""

from __future__ import annotations

from countersign.tuf.canonical import encode_canonical, go_compact, parse_json
from countersign.tuf.keys import PrivateKey, PublicKey, Signer, key_id_of
from countersign.tuf.metadata import (
    BASE_ROLES,
    DEFAULT_EXPIRY,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    DelegatedRole,
    Delegations,
    FileMeta,
    Metadata,
    Role,
    Root,
    Signature,
    Snapshot,
    Targets,
    Timestamp,
    VerificationResult,
    is_delegation_name,
    new_root,
    new_snapshot,
    new_targets,
    new_timestamp,
)
from countersign.tuf.roots import RootValidation, validate_root
from countersign.tuf.timefmt import GoTime
from countersign.tuf.x509 import make_certificate, root_certificate_key

__all__ = [
    "BASE_ROLES",
    "DEFAULT_EXPIRY",
    "ROOT",
    "SNAPSHOT",
    "TARGETS",
    "TIMESTAMP",
    "DelegatedRole",
    "Delegations",
    "FileMeta",
    "GoTime",
    "Metadata",
    "PrivateKey",
    "PublicKey",
    "Role",
    "Root",
    "RootValidation",
    "Signature",
    "Signer",
    "Snapshot",
    "Targets",
    "Timestamp",
    "VerificationResult",
    "encode_canonical",
    "go_compact",
    "is_delegation_name",
    "key_id_of",
    "make_certificate",
    "new_root",
    "new_snapshot",
    "new_targets",
    "new_timestamp",
    "parse_json",
    "root_certificate_key",
    "validate_root",
]
