"""OCI layouts and docker-archive tarballs as image sources and sinks."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from images import digest, image, write_docker_archive, write_layout

from countersign.errors import CountersignError
from countersign.registry.archive import ArchiveError, DockerArchive
from countersign.registry.layout import (
    BlobMismatchError,
    LayoutDescriptor,
    LayoutError,
    LayoutWriter,
    OCILayout,
    _Syncer,
    check_digest,
)

LAYERS = [{"etc/os-release": b"ID=test\n"}, {"app/main": b"print('hi')\n"}]


def test_read_a_layout(tmp_path: Path) -> None:
    manifest_digest = write_layout(tmp_path / "img", "v1", LAYERS)
    layout = OCILayout(tmp_path / "img")
    descriptor = layout.resolve("v1")
    assert descriptor.digest == manifest_digest
    assert layout.resolve(None).digest == manifest_digest
    manifest = json.loads(layout.read_blob(descriptor.digest, descriptor.size))
    for layer in manifest["layers"]:
        assert b"".join(layout.stream_blob(layer["digest"], layer["size"]))
    with pytest.raises(LayoutError, match="no image tagged 'v2'"):
        layout.resolve("v2")


def test_a_tampered_blob_is_named(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", "v1", LAYERS)
    layout = OCILayout(tmp_path / "img")
    manifest = json.loads(layout.read_blob(layout.resolve("v1").digest))
    layer = manifest["layers"][0]["digest"]
    path = layout.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BlobMismatchError, match=layer) as caught:
        b"".join(layout.stream_blob(layer, manifest["layers"][0]["size"]))
    assert caught.value.digest == layer


def test_writer_stages_until_commit(tmp_path: Path) -> None:
    manifest, config, tars = image(LAYERS)
    dest = tmp_path / "out"
    with LayoutWriter(dest) as writer:
        writer.write_blob(digest(config), config)
        with pytest.raises(BlobMismatchError, match=digest(tars[0])):
            writer.write_blob(digest(tars[0]), tars[0] + b"x")
    assert not dest.exists()  # a failed write leaves nothing
    writer = LayoutWriter(dest)
    for blob in (manifest, config, *tars):
        writer.write_blob(digest(blob), blob)
    writer.commit(LayoutDescriptor("application/vnd.oci.image.manifest.v1+json",
                                   digest(manifest), len(manifest), {}), "v1")
    assert OCILayout(dest).resolve("v1").digest == digest(manifest)
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
    # a second image is added beside the first; retagging replaces only that tag
    other, other_config, other_tars = image([{"x": b"y"}], seed="2")
    writer = LayoutWriter(dest)
    for blob in (other, other_config, *other_tars):
        writer.write_blob(digest(blob), blob)
    writer.commit(LayoutDescriptor("application/vnd.oci.image.manifest.v1+json",
                                   digest(other), len(other), {}), "v2")
    assert {d.annotations["org.opencontainers.image.ref.name"]
            for d in OCILayout(dest).index()} == {"v1", "v2"}


def test_docker_archive(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    write_docker_archive(path, "registry.test/app:v1", LAYERS)
    with DockerArchive(path) as archive:
        manifest = json.loads(archive.manifest())
        assert [layer["digest"] for layer in manifest["layers"]] == [
            b.digest for b in archive.layers]
        for blob in archive.blobs():
            data = b"".join(archive.stream(blob))
            assert digest(data) == blob.digest and len(data) == blob.size
    with DockerArchive(path, "v1"):
        pass
    with pytest.raises(ArchiveError, match="no single image tagged v9"):
        DockerArchive(path, "v9")


@pytest.mark.parametrize("content", [b"", b"not a tar", b"\0" * 1024])
def test_bad_archives(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    with pytest.raises(CountersignError):
        DockerArchive(path)


@pytest.mark.parametrize("text", ["sha256:" + "A" * 64, "sha512:" + "a" * 128, "sha256:abc",
                                  "sha256:" + "a" * 63 + "/", "", "sha256"])
def test_digests_are_strict(text: str) -> None:
    with pytest.raises(CountersignError):
        check_digest(text)


def test_a_verified_stream_still_has_its_size_checked(tmp_path: Path) -> None:
    _, config, _ = image(LAYERS)
    with LayoutWriter(tmp_path / "out") as writer:
        with pytest.raises(BlobMismatchError, match="did not verify"), \
                writer.blob(digest(config), len(config) + 1, verified_stream=True) as handle:
            handle.write(config)
        with writer.blob(digest(config), len(config), verified_stream=True) as handle:
            handle.write(config)
        assert writer.has(digest(config))


def test_a_size_mismatch_of_a_verified_stream_names_no_digest(tmp_path: Path) -> None:
    """Nothing of a verified stream is hashed here, so no (empty-input) sha256 is shown."""
    _, config, _ = image(LAYERS)
    with LayoutWriter(tmp_path / "out") as writer, \
            pytest.raises(BlobMismatchError, match="did not verify") as caught, \
            writer.blob(digest(config), len(config) + 1, verified_stream=True) as handle:
        handle.write(config)
    assert caught.value.message.endswith(f"({len(config)} bytes)")
    assert "sha256:" + hashlib.sha256(b"").hexdigest() not in caught.value.message


def test_the_syncer_starts_one_thread_when_called_from_many_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blob writer threads and a pull's fetch threads hand files to one syncer at once:
    a single fsync thread is started (a second one would never be joined)."""
    real_thread = threading.Thread
    started: list[threading.Thread] = []

    class SlowToCreate(real_thread):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.05)  # widens the window between "no thread yet" and starting one
            super().__init__(*args, **kwargs)
            started.append(self)

    syncer = _Syncer()
    files = [io.FileIO(tmp_path / f"blob-{i}", "w") for i in range(4)]
    barrier = threading.Barrier(len(files), timeout=10)

    def submit(handle: io.FileIO) -> None:
        barrier.wait()
        syncer.submit(handle, Path(str(handle.name)))

    callers = [real_thread(target=submit, args=(f,)) for f in files]
    monkeypatch.setattr(threading, "Thread", SlowToCreate)
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    monkeypatch.undo()
    syncer.wait()
    assert len(started) == 1
    assert all(f.closed for f in files)
