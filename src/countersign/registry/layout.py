"""OCI image layout directories: read an image by tag, write one only when all of it verified.

A layout is ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``. Reading
streams blobs and hashes while reading; writing stages every blob in a sibling
directory, verified, and only then moves the blobs in and replaces
``index.json`` atomically, so a failed pull leaves the destination as it was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from countersign.errors import CountersignError
from countersign.registry.oci import parse_digest

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_INDEX = 4 << 20
CHUNK = 1 << 20


class LayoutError(CountersignError):
    """An OCI layout that is missing, malformed, or lacks what was asked for."""


class BlobMismatchError(LayoutError):
    """A blob whose bytes are not those its digest names."""

    def __init__(self, digest: str, message: str) -> None:
        super().__init__(message)
        self.digest = digest


def check_digest(digest: str) -> str:
    """The hex of a ``sha256:<64 lowercase hex>`` digest (:func:`oci.parse_digest` decides)."""
    return parse_digest(digest).hex


@dataclass(frozen=True)
class LayoutDescriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def _descriptor(obj: Any, where: str) -> LayoutDescriptor:
    if not isinstance(obj, dict):
        raise LayoutError(f"{where} is not a descriptor object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or type(size) is not int \
            or size < 0:
        raise LayoutError(f"{where} needs mediaType, digest and a size")
    check_digest(digest)
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise LayoutError(f"{where} annotations must map strings to strings")
    return LayoutDescriptor(media_type, digest, size, dict(annotations))


class OCILayout:
    """An OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / check_digest(digest)

    def index(self) -> list[LayoutDescriptor]:
        """The descriptors of ``index.json`` (empty for a directory that is not a layout yet)."""
        index_path = self.path / "index.json"
        if not index_path.exists():
            return []
        try:
            with index_path.open("rb") as handle:
                data = handle.read(MAX_INDEX + 1)
            doc = json.loads(data)
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{index_path}: not a readable OCI index ({exc})") from None
        if len(data) > MAX_INDEX or not isinstance(doc, dict) or not isinstance(
                doc.get("manifests"), list):
            raise LayoutError(f"{index_path}: not an OCI image index")
        return [_descriptor(m, f"{index_path} manifest {i}")
                for i, m in enumerate(doc["manifests"])]

    def resolve(self, tag: str | None) -> LayoutDescriptor:
        """The manifest a tag names (or the only one when no tag is given)."""
        manifests = self.index()
        if not (self.path / "oci-layout").is_file():
            raise LayoutError(f"{self.path} is not an OCI image layout (no oci-layout file)")
        if tag is None:
            if len(manifests) != 1:
                raise LayoutError(f"{self.path} holds {len(manifests)} images; name one",
                                  advice="write oci:DIR:TAG")
            return manifests[0]
        for descriptor in manifests:
            if descriptor.annotations.get(REF_NAME) == tag:
                return descriptor
        raise LayoutError(f"{self.path} has no image tagged {tag!r}")

    def read_blob(self, digest: str, size: int | None = None, *, limit: int = 1 << 40) -> bytes:
        """A small blob (a manifest or config), verified against its digest."""
        return b"".join(self.stream_blob(digest, size, limit=limit))

    def stream_blob(self, digest: str, size: int | None = None, *,
                    limit: int = 1 << 40) -> Iterator[bytes]:
        """Chunks of a blob, hashed while read; a mismatch raises after the last chunk."""
        path = self.blob_path(digest)
        expected = check_digest(digest)
        hasher = hashlib.sha256()
        total = 0
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise LayoutError(f"{self.path} lacks blob {digest}") from None
        with handle:
            while chunk := handle.read(CHUNK):
                total += len(chunk)
                if total > limit or (size is not None and total > size):
                    raise BlobMismatchError(digest, f"blob {digest} is longer than expected")
                hasher.update(chunk)
                yield chunk
        if size is not None and total != size:
            raise BlobMismatchError(digest, f"blob {digest} has {total} bytes, not {size}")
        if not hmac.compare_digest(hasher.hexdigest(), expected):
            raise BlobMismatchError(digest, f"blob {digest} does not match its digest "
                                    f"(sha256:{hasher.hexdigest()})")


class _HashingFile:
    """A file being written whose bytes are hashed on the way, so nothing is read twice."""

    def __init__(self, raw: BinaryIO, *, hashing: bool = True) -> None:
        self._raw = raw
        self._hashing = hashing
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._hashing:
            self.hasher.update(data)
        self.size += len(data)
        return self._raw.write(data)


class LayoutWriter:
    """Stage blobs beside ``dest``; :meth:`commit` moves them in and tags the manifest."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", dir=self.dest.parent))
        (self.staging / "blobs" / "sha256").mkdir(parents=True)
        self._blobs: list[str] = []

    def has(self, digest: str) -> bool:
        return OCILayout(self.dest).blob_path(digest).exists() or digest in self._blobs

    @contextmanager
    def blob(self, digest: str, size: int, *,
             verified_stream: bool = False) -> Iterator[_HashingFile]:
        """A file to write the blob into, hashed as it is written; verified on close.

        ``verified_stream``: the bytes come from a stream that hashes them itself and
        raises before its last chunk on a mismatch (``RegistryClient.stream_blob``), so
        hashing them a second time is skipped; the size is still checked.
        """
        hexdigest = check_digest(digest)
        path = self.staging / "blobs" / "sha256" / hexdigest
        with path.open("wb") as raw:
            handle = _HashingFile(raw, hashing=not verified_stream)
            yield handle
        actual_size, hasher = handle.size, handle.hasher
        if actual_size != size or (not verified_stream and not hmac.compare_digest(
                hasher.hexdigest(), hexdigest)):
            path.unlink(missing_ok=True)
            raise BlobMismatchError(digest, f"blob {digest} did not verify "
                                    f"({actual_size} bytes, sha256:{hasher.hexdigest()})")
        self._blobs.append(digest)

    def write_blob(self, digest: str, data: bytes) -> None:
        with self.blob(digest, len(data)) as handle:
            handle.write(data)

    def commit(self, manifest: LayoutDescriptor, tag: str | None) -> None:
        """Move the staged blobs in and point ``tag`` at ``manifest``, atomically for the index."""
        existing = [d for d in OCILayout(self.dest).index()
                    if tag is None or d.annotations.get(REF_NAME) != tag]
        annotations = {REF_NAME: tag} if tag else {}
        entry = LayoutDescriptor(manifest.media_type, manifest.digest, manifest.size,
                                 annotations)
        (self.dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for digest in self._blobs:
            target = OCILayout(self.dest).blob_path(digest)
            if not target.exists():
                os.replace(self.staging / "blobs" / "sha256" / check_digest(digest), target)
        layout_file = self.dest / "oci-layout"
        if not layout_file.exists():
            layout_file.write_text('{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
                 "manifests": [d.to_dict() for d in [*existing, entry]]}
        tmp = self.staging / "index.json"
        tmp.write_text(json.dumps(index, separators=(",", ":")))
        os.replace(tmp, self.dest / "index.json")
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
