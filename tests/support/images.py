"""Small deterministic container images for tests: OCI layouts and docker-archive tarballs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer: sorted entries, fixed mtime, root-owned."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(layers: list[dict[str, bytes]], *, seed: str = "") -> tuple[bytes, bytes, list[bytes]]:
    """(manifest, config, layer tars) of an OCI image with these layers."""
    tars = [layer_tar(files) for files in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in tars]},
    }, separators=(",", ":"), sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(t), "size": len(t)} for t in tars],
    }, separators=(",", ":")).encode()
    return manifest, config, tars


def write_layout(directory: Path, tag: str, layers: list[dict[str, bytes]], *,
                 seed: str = "") -> str:
    """An OCI layout holding one tagged image; returns the manifest digest."""
    manifest, config, tars = image(layers, seed=seed)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (manifest, config, *tars):
        (blobs / digest(blob)[7:]).write_bytes(blob)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (directory / "index.json").write_text(json.dumps(index))
    return digest(manifest)


def write_docker_archive(path: Path, repo_tag: str, layers: list[dict[str, bytes]]) -> None:
    """A classic ``docker save`` tarball: manifest.json, <hex>.json, <id>/layer.tar."""
    _, config, tars = image(layers)
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = []
        for index, data in enumerate(tars):
            name = f"{index:064x}/layer.tar"
            add(name, data)
            names.append(name)
        add(f"{digest(config)[7:]}.json", config)
        add("manifest.json", json.dumps([{"Config": f"{digest(config)[7:]}.json",
                                          "RepoTags": [repo_tag], "Layers": names}]).encode())


def random_files(count: int, size: int) -> dict[str, bytes]:
    return {f"data/file-{i}": os.urandom(size) for i in range(count)}
