"""``docker save`` tarballs as an image source.

Both forms docker writes are read: the classic one (``manifest.json`` naming a
config file and ``<id>/layer.tar`` files) and the newer one, which embeds an OCI
layout (``index.json``, ``blobs/sha256/...``) beside ``manifest.json``. The
image is presented as an OCI manifest over uncompressed layers, whose digests
are the sha256 of the layer tars.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countersign.errors import CountersignError
from countersign.registry.layout import CHUNK, LayoutError, check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MAX_JSON = 16 << 20


class ArchiveError(CountersignError):
    """A docker-archive that cannot be read as an image."""


@dataclass(frozen=True)
class ArchiveBlob:
    digest: str
    size: int
    media_type: str
    member: str


class DockerArchive:
    """One image of a ``docker save`` tarball."""

    def __init__(self, path: Path, tag: str | None = None) -> None:
        self.path = Path(path)
        try:
            self._tar = tarfile.open(self.path, "r:")  # noqa: SIM115 - closed by close()
        except (OSError, tarfile.TarError) as exc:
            raise ArchiveError(f"{self.path}: not a readable docker-archive tar ({exc})") from None
        try:
            self._load(tag)
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> DockerArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, name: str) -> Any:
        data = self._read(name, MAX_JSON)
        try:
            return json.loads(data)
        except ValueError:
            raise ArchiveError(f"{self.path}: {name} is not JSON") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        try:
            member = self._tar.getmember(name)
        except KeyError:
            raise ArchiveError(f"{self.path} lacks {name}") from None
        if not member.isfile():
            raise ArchiveError(f"{self.path}: {name} is not a regular file")
        return member

    def _read(self, name: str, limit: int) -> bytes:
        member = self._member(name)
        if member.size > limit:
            raise ArchiveError(f"{self.path}: {name} is larger than {limit} bytes")
        handle = self._tar.extractfile(member)
        if handle is None:  # pragma: no cover - regular files always extract
            raise ArchiveError(f"{self.path}: cannot read {name}")
        return handle.read()

    def _load(self, tag: str | None) -> None:
        entries = self._json("manifest.json")
        if not isinstance(entries, list) or not entries:
            raise ArchiveError(f"{self.path}: manifest.json lists no image")
        chosen = None
        for entry in entries:
            tags = entry.get("RepoTags") or [] if isinstance(entry, dict) else []
            if tag is None or any(t == tag or t.rsplit(":", 1)[-1] == tag for t in tags):
                chosen = entry
                break
        if chosen is None or (tag is None and len(entries) > 1):
            raise ArchiveError(f"{self.path}: no single image{f' tagged {tag}' if tag else ''}",
                               advice="write docker-archive:FILE:TAG")
        config_name, layer_names = chosen.get("Config"), chosen.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(
                isinstance(n, str) for n in layer_names):
            raise ArchiveError(f"{self.path}: manifest.json entry needs Config and Layers")
        config = self._read(config_name, MAX_JSON)
        self.config = config
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.config_blob = ArchiveBlob(config_digest, len(config), OCI_CONFIG, config_name)
        self.layers = [self._layer(name) for name in layer_names]

    def _layer(self, name: str) -> ArchiveBlob:
        member = self._member(name)
        if name.startswith("blobs/sha256/"):
            digest = "sha256:" + name.rsplit("/", 1)[1]
            check_digest(digest)
        else:
            hasher = hashlib.sha256()
            for chunk in self._chunks(name):
                hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
        return ArchiveBlob(digest, member.size, OCI_LAYER_TAR, name)

    def _chunks(self, name: str) -> Iterator[bytes]:
        handle = self._tar.extractfile(self._member(name))
        if handle is None:  # pragma: no cover
            raise ArchiveError(f"{self.path}: cannot read {name}")
        while chunk := handle.read(CHUNK):
            yield chunk

    def manifest(self) -> bytes:
        """The OCI manifest of this image (compact JSON, keys in a fixed order)."""
        doc = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config_blob.digest,
                       "size": self.config_blob.size},
            "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size}
                       for b in self.layers],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def blobs(self) -> list[ArchiveBlob]:
        return [self.config_blob, *self.layers]

    def stream(self, blob: ArchiveBlob) -> Iterator[bytes]:
        """The blob's bytes, hashed while read; a mismatch is an error naming the digest."""
        hasher = hashlib.sha256()
        for chunk in self._chunks(blob.member):
            hasher.update(chunk)
            yield chunk
        if "sha256:" + hasher.hexdigest() != blob.digest:
            raise LayoutError(f"{self.path}: {blob.member} does not match {blob.digest}")
