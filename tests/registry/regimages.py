"""Small, deterministic container images built in the tests (no docker daemon)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from countersign.registry import oci


def tar_of(files: dict[str, bytes]) -> bytes:
    """A reproducible tar: sorted members, mtime 0, root-owned."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def noise(seed: str, size: int) -> bytes:
    """``size`` incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not secrets


@dataclass(frozen=True)
class Image:
    config: bytes
    layers: tuple[bytes, ...]
    manifest: bytes
    media_type: str
    config_descriptor: oci.Descriptor
    layer_descriptors: tuple[oci.Descriptor, ...]

    @property
    def digest(self) -> oci.Digest:
        return oci.digest_of(self.manifest)

    def blobs(self) -> list[tuple[oci.Descriptor, bytes]]:
        return [(self.config_descriptor, self.config),
                *zip(self.layer_descriptors, self.layers, strict=True)]


def build_image(seed: str, *, docker: bool = False, sizes: tuple[int, ...] = (2000, 300_000),
                subject: oci.Descriptor | None = None) -> Image:
    """A config and one gzip layer per entry of ``sizes`` (file of that many random
    bytes), with an OCI manifest (or a Docker schema 2 one)."""
    raw_layers = [tar_of({f"data/{seed}-{i}.bin": noise(f"{seed}/{i}", size)})
                  for i, size in enumerate(sizes)]
    layers = tuple(gzip.compress(t, compresslevel=1, mtime=0) for t in raw_layers)
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in raw_layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"countersign test layer {i}"} for i in range(len(sizes))],
    }, sort_keys=True, separators=(",", ":")).encode()
    config_type = oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG
    layer_type = oci.DOCKER_LAYER_GZIP if docker else oci.OCI_LAYER_GZIP
    manifest_type = oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST
    config_descriptor = oci.Descriptor.of(config, config_type)
    layer_descriptors = tuple(oci.Descriptor.of(layer, layer_type) for layer in layers)
    manifest = oci.encode(oci.Manifest(manifest_type, config_descriptor, layer_descriptors,
                                       subject=subject), indent=3)
    return Image(config, layers, manifest, manifest_type, config_descriptor, layer_descriptors)


def build_artifact(subject: bytes, subject_type: str, artifact_type: str,
                   payload: bytes) -> tuple[bytes, list[tuple[oci.Descriptor, bytes]]]:
    """An OCI artifact manifest (empty config, one layer) whose subject is ``subject``."""
    empty = oci.Descriptor.of(oci.OCI_EMPTY_DATA, oci.OCI_EMPTY)
    layer = oci.Descriptor.of(payload, "application/octet-stream")
    manifest = oci.Manifest(oci.OCI_MANIFEST, empty, (layer,),
                            subject=oci.Descriptor.of(subject, subject_type),
                            artifact_type=artifact_type,
                            annotations={"org.example.kind": artifact_type})
    return oci.encode(manifest), [(empty, oci.OCI_EMPTY_DATA), (layer, payload)]


def write_layout(directory: Path, image: Image, tag: str) -> None:
    """``image`` as an OCI image layout directory (``oci:DIR:tag`` for skopeo)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (image.config, *image.layers, image.manifest):
        (blobs / oci.digest_of(data).hex).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = oci.Descriptor.of(image.manifest, image.media_type,
                              annotations={"org.opencontainers.image.ref.name": tag})
    (directory / "index.json").write_bytes(oci.encode(oci.Index(oci.OCI_INDEX, (entry,))))
