"""Container registries: the OCI image format (:mod:`.oci`), a typed OCI
Distribution client (:mod:`.client`) and an in-memory registry for tests
(:mod:`.memory`)."""

from __future__ import annotations

from countersign.registry.client import (
    BlobUnknownError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestHead,
    ManifestUnknownError,
    PushResult,
    RawManifest,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryLimitError,
    RegistryProtocolError,
    RegistryRejectedError,
    RegistryUnavailableError,
    RepositoryUnknownError,
)
from countersign.registry.oci import (
    Descriptor,
    Digest,
    Index,
    Manifest,
    OCIFormatError,
    Platform,
    digest_of,
    parse,
    parse_digest,
    parse_index,
    parse_manifest,
    select_platform,
)

__all__ = [
    "BlobUnknownError",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "Index",
    "InvalidReferenceError",
    "Manifest",
    "ManifestHead",
    "ManifestUnknownError",
    "OCIFormatError",
    "Platform",
    "PushResult",
    "RawManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryLimitError",
    "RegistryProtocolError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
    "RepositoryUnknownError",
    "digest_of",
    "parse",
    "parse_digest",
    "parse_index",
    "parse_manifest",
    "select_platform",
]
