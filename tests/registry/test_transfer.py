"""Push and sign, verified pull, tamper detection: in-memory registry, in-process trust server.

The paper's Figures 5 to 7 at unit level (the real registry version is in
test_transfer_distribution.py): an unsigned tag is refused; pushed and signed,
the pull succeeds; a tampered layer, a tampered manifest and a tag answered
with another image's manifest are each refused naming the digest, and the
destination is left as it was.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
import pytest
from images import random_files, write_docker_archive, write_layout
from inprocess import ASGIFetcher

from countersign.client.cache import MetadataCache
from countersign.client.remote import NotaryRemote
from countersign.client.repository import TrustRepository
from countersign.client.updater import NoTrustDataError, Updater
from countersign.keystore import KeyStore, StaticPassphrases
from countersign.registry.client import DigestMismatchError
from countersign.registry.layout import OCILayout
from countersign.registry.memory import MemoryRegistry
from countersign.registry.transfer import (
    ImageReference,
    Location,
    UntrustedImageError,
    pull,
    push,
)
from countersign.server.app import TrustServer

LAYERS = [random_files(3, 4096), {"app/run": b"#!/bin/sh\necho hi\n"}]


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry(host="registry.test")


def _trust(app: TrustServer, directory: Path, gun: str) -> TrustRepository:
    return TrustRepository(gun, NotaryRemote(ASGIFetcher(app), gun),
                           MetadataCache(directory, gun),
                           KeyStore(directory, StaticPassphrases("test-passphrase")))


def _updater(app: TrustServer, directory: Path, gun: str) -> Updater:
    return Updater(gun, NotaryRemote(ASGIFetcher(app), gun), MetadataCache(directory, gun))


def test_references() -> None:
    ref = ImageReference.parse("localhost:5000/test/trusttest:v1")
    assert (ref.registry, ref.repository, ref.tag, ref.gun) == (
        "localhost:5000", "test/trusttest", "v1", "localhost:5000/test/trusttest")
    assert ImageReference.parse("alpine").gun == "docker.io/library/alpine"
    assert ImageReference.parse("docker://registry.test/a/b@sha256:" + "a" * 64).digest
    assert Location.parse("oci:/tmp/x:v1") == Location("oci", Path("/tmp/x"), "v1")
    assert Location.parse("docker-archive:/tmp/i.tar").kind == "docker-archive"


def test_figures_5_to_7(trust_app: TrustServer, registry: MemoryRegistry,
                        tmp_path: Path) -> None:
    ref = ImageReference.parse("registry.test/test/trusttest:latest")
    client = registry.client()
    write_layout(tmp_path / "src", "latest", LAYERS)
    reader = _updater(trust_app, tmp_path / "reader", ref.gun)
    dest = tmp_path / "dest"

    # Figure 5: no trust data yet
    pushed = push(Location("oci", tmp_path / "src", "latest"), client, ref)
    with pytest.raises(NoTrustDataError, match="does not have trust data"):
        pull(ref, client, dest, updater=reader)
    assert not dest.exists()

    # Figure 6: signed, the verified pull succeeds and is byte-identical
    owner = _trust(trust_app, tmp_path / "owner", ref.gun)
    owner.init()
    owner.sign_tag("latest", pushed.file_meta())
    pulled = pull(ref, client, dest, updater=reader)
    assert pulled.digest == pushed.digest and pulled.signed_by == "targets"
    source = OCILayout(tmp_path / "src")
    copy = OCILayout(dest)
    assert copy.resolve("latest").digest == source.resolve("latest").digest
    for blob in (tmp_path / "src" / "blobs" / "sha256").iterdir():
        assert (dest / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()

    # Figure 7: a layer tampered on the registry is refused, naming it; nothing written
    manifest = json.loads(source.read_blob(pushed.digest))
    layer = manifest["layers"][0]["digest"]
    data = bytearray(source.read_blob(layer))
    data[10] ^= 0xFF
    registry.tamper_blob(layer, bytes(data))
    fresh = tmp_path / "fresh"
    with pytest.raises(DigestMismatchError, match=layer):
        pull(ref, client, fresh, updater=reader)
    assert not fresh.exists()
    # an existing layout that lacks the layer is left exactly as it was
    existing = tmp_path / "existing"
    write_layout(existing, "other", [{"other": b"image"}], seed="other")
    before = {p.name: p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    with pytest.raises(DigestMismatchError, match=layer):
        pull(ref, client, existing, updater=reader)
    assert {p.name: p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before
    assert not any(p.name.startswith(".existing.") for p in tmp_path.iterdir())


def test_a_manifest_changed_by_one_space_is_refused(trust_app: TrustServer,
                                                    registry: MemoryRegistry,
                                                    tmp_path: Path) -> None:
    ref = ImageReference.parse("registry.test/test/manifest:v1")
    client = registry.client()
    write_layout(tmp_path / "src", "v1", LAYERS)
    pushed = push(Location("oci", tmp_path / "src", "v1"), client, ref)
    owner = _trust(trust_app, tmp_path / "owner", ref.gun)
    owner.init()
    owner.sign_tag("v1", pushed.file_meta())
    original = OCILayout(tmp_path / "src").read_blob(pushed.digest)
    registry.tamper_manifest(ref.repository, pushed.digest, original + b" ")
    with pytest.raises(UntrustedImageError, match=pushed.digest) as caught:
        pull(ref, client, tmp_path / "dest", updater=_updater(trust_app, tmp_path / "r",
                                                                ref.gun))
    assert caught.value.digest == pushed.digest
    assert not (tmp_path / "dest").exists()


def test_a_tag_answered_with_another_image_is_refused(trust_app: TrustServer,
                                                      registry: MemoryRegistry,
                                                      tmp_path: Path) -> None:
    ref = ImageReference.parse("registry.test/test/swap:v1")
    client = registry.client()
    write_layout(tmp_path / "good", "v1", LAYERS)
    write_layout(tmp_path / "evil", "v1", [{"evil": b"payload"}], seed="evil")
    pushed = push(Location("oci", tmp_path / "good", "v1"), client, ref)
    evil = push(Location("oci", tmp_path / "evil", "v1"), client,
                ImageReference.parse("registry.test/test/swap:evil"))
    owner = _trust(trust_app, tmp_path / "owner", ref.gun)
    owner.init()
    owner.sign_tag("v1", pushed.file_meta())
    evil_manifest = OCILayout(tmp_path / "evil").read_blob(evil.digest)
    # the registry's tag points at the other image: ignored, the signed digest is pulled
    registry.answer_tag(ref.repository, "v1", evil_manifest,
                        "application/vnd.oci.image.manifest.v1+json")
    pulled = pull(ref, client, tmp_path / "dest", updater=_updater(trust_app, tmp_path / "r",
                                                                     ref.gun))
    assert pulled.digest == pushed.digest
    # and a registry answering the signed digest with the other manifest is refused
    registry.tamper_manifest(ref.repository, pushed.digest, evil_manifest)
    with pytest.raises(UntrustedImageError, match="not the signed one"):
        pull(ref, client, tmp_path / "dest2", updater=_updater(trust_app, tmp_path / "r2",
                                                                 ref.gun))
    # without verification the registry's tag is believed (and blobs still checked)
    unverified = pull(ref, client, tmp_path / "dest3", updater=None)
    assert unverified.digest == evil.digest and unverified.signed_by is None


def test_push_a_docker_archive(registry: MemoryRegistry, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, "registry.test/test/app:v1", LAYERS)
    client = registry.client()
    ref = ImageReference.parse("registry.test/test/app:v1")
    pushed = push(Location("docker-archive", archive), client, ref)
    pulled = pull(ref, client, tmp_path / "dest", updater=None)
    assert pulled.digest == pushed.digest


def test_blobs_are_fetched_concurrently_and_one_failure_stops_the_pull(
        trust_app: TrustServer, registry: MemoryRegistry, tmp_path: Path) -> None:
    """Two blob GETs must be in flight at once (a sequential pull never passes the
    barrier); a tampered layer among them still fails the pull naming it, with the
    destination never made and no staging directory left."""
    ref = ImageReference.parse("registry.test/test/concurrent:v1")
    client = registry.client()
    layers = [random_files(2, 4096) for _ in range(4)]
    write_layout(tmp_path / "src", "v1", layers)
    pushed = push(Location("oci", tmp_path / "src", "v1"), client, ref)
    owner = _trust(trust_app, tmp_path / "owner", ref.gun)
    owner.init()
    owner.sign_tag("v1", pushed.file_meta())

    barrier = threading.Barrier(2, timeout=10)
    lock = threading.Lock()
    gets: list[str] = []

    def is_blob_get(request: httpx.Request) -> bool:
        return request.method == "GET" and "/blobs/sha256:" in request.url.path

    def meeting(request: httpx.Request) -> httpx.Response:  # runs outside the registry's lock
        with lock:
            gets.append(request.url.path)
            first_two = len(gets) <= 2
        if first_two:
            barrier.wait()  # BrokenBarrierError (a failed pull) unless two meet here
        return registry.respond(request)

    registry.intercept(is_blob_get, meeting)
    pulled = pull(ref, client, tmp_path / "dest", updater=_updater(trust_app, tmp_path / "r",
                                                                     ref.gun))
    assert pulled.digest == pushed.digest
    assert len(gets) == 5  # the config and four layers, each once

    manifest = json.loads(OCILayout(tmp_path / "src").read_blob(pushed.digest))
    layer = manifest["layers"][2]["digest"]
    data = bytearray(OCILayout(tmp_path / "src").read_blob(layer))
    data[0] ^= 0xFF
    registry.tamper_blob(layer, bytes(data))
    gets.clear()
    barrier.reset()
    with pytest.raises(DigestMismatchError, match=layer):
        pull(ref, client, tmp_path / "fresh", updater=_updater(trust_app, tmp_path / "r2",
                                                               ref.gun))
    assert not (tmp_path / "fresh").exists()
    assert not any(p.name.startswith(".fresh.") for p in tmp_path.iterdir())


@pytest.mark.parametrize("to_layout", [False, True])
def test_copy_from_a_registry_fsyncs_only_a_layout_it_keeps(
        registry: MemoryRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        to_layout: bool) -> None:
    """``countersign copy`` stages a registry-to-registry copy in a temporary layout,
    deleted after the push: that one is not fsynced; a copy to oci:DIR is."""
    from countersign.cli import images as images_cli
    from countersign.cli.main import main

    source = ImageReference.parse("registry.test/test/copied:v1")
    write_layout(tmp_path / "src", "v1", LAYERS)
    push(Location("oci", tmp_path / "src", "v1"), registry.client(), source)
    monkeypatch.setattr(images_cli, "registry_client", lambda args, name: registry.client())
    synced: list[int] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    destination = f"oci:{tmp_path / 'copy'}:v2" if to_layout \
        else "registry.test/test/copy:v2"
    assert main(["copy", str(source), destination]) == 0
    assert bool(synced) == to_layout
    if to_layout:
        assert OCILayout(tmp_path / "copy").resolve("v2")
    else:
        assert registry.manifest("test/copy", "v2") is not None
