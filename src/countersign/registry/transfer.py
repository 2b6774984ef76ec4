"""Moving images with trust: push and sign, verified pull, copy.

A verified pull never believes the registry about which image a tag names:
the tag is resolved through the trust data (``targets/releases``, then
``targets``, as docker does), the manifest is fetched by that digest and its
bytes checked against the signed hash and length, every blob is hashed while
it streams, and the destination is written only once everything verified.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from countersign.client.updater import RELEASE_ROLES, Updater
from countersign.errors import CountersignError, VerificationError
from countersign.registry.archive import ArchiveBlob, DockerArchive
from countersign.registry.client import RegistryClient
from countersign.registry.layout import LayoutDescriptor, LayoutWriter, OCILayout
from countersign.registry.oci import (
    Descriptor,
    Index,
    Manifest,
    Platform,
    digest_of,
    parse,
    parse_digest,
    select_platform,
)
from countersign.tuf import FileMeta

DOCKER_HUB = "docker.io"
MAX_MANIFEST = 4 << 20


class ImageReferenceError(CountersignError):
    """A text that is not an image reference or location."""


class UntrustedImageError(VerificationError):
    """The registry served something other than what the trust data signed."""

    def __init__(self, message: str, digest: str, *, advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.digest = digest


@dataclass(frozen=True)
class ImageReference:
    """``registry/repository[:tag][@digest]``, normalised as docker does."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        rest = text.removeprefix("docker://")
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            parse_digest(digest)
        tag = None
        slash, colon = rest.rfind("/"), rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not tag:
                raise ImageReferenceError(f"{text!r} has an empty tag")
        first, _, remainder = rest.partition("/")
        if not remainder or ("." not in first and ":" not in first and first != "localhost"):
            registry, repository = DOCKER_HUB, rest
        else:
            registry, repository = first, remainder
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        if not repository or repository != repository.lower() or any(
                part in ("", ".", "..") for part in repository.split("/")):
            raise ImageReferenceError(f"{text!r} is not an image reference",
                                  advice="write REGISTRY/REPOSITORY:TAG")
        return cls(registry, repository, tag, digest)

    @property
    def gun(self) -> str:
        """The trust collection's name: the fully qualified repository."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.gun + (f":{self.tag}" if self.tag else "")
        return text + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Location:
    """Where an image is: ``oci:DIR[:TAG]``, ``docker-archive:FILE[:TAG]`` or a registry."""

    kind: str  # "oci", "docker-archive" or "registry"
    path: Path | None = None
    tag: str | None = None
    reference: ImageReference | None = None

    @classmethod
    def parse(cls, text: str) -> Location:
        for kind in ("oci", "docker-archive"):
            if text.startswith(f"{kind}:"):
                body = text[len(kind) + 1:]
                path_text, _, tag = body.partition(":")
                if not path_text:
                    raise ImageReferenceError(f"{text!r} names no {kind} path")
                return cls(kind, Path(path_text), tag or None)
        return cls("registry", reference=ImageReference.parse(text))


@dataclass(frozen=True)
class PushedImage:
    reference: ImageReference
    digest: str
    size: int
    media_type: str

    def file_meta(self) -> FileMeta:
        """What the trust data signs for the tag: the manifest's sha256 and length."""
        return FileMeta(self.size, {"sha256": bytes.fromhex(parse_digest(self.digest).hex)})


Progress = Callable[[str, int], None]


def terminal_progress() -> Progress | None:
    """A one-line progress report on a terminal; nothing when stderr is not one (CI)."""
    if not sys.stderr.isatty():
        return None

    def report(what: str, done: int) -> None:
        sys.stderr.write(f"\r{what}: {done / 1e6:8.1f} MB")
        sys.stderr.flush()

    return report


def _counted(chunks: Iterator[bytes], what: str, progress: Progress | None) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        done += len(chunk)
        if progress is not None:
            progress(what, done)
        yield chunk
    if progress is not None:
        sys.stderr.write("\n")


# --- push -------------------------------------------------------------------------


def push(source: Location, client: RegistryClient, ref: ImageReference, *,
         progress: Progress | None = None, chunked: bool = False) -> PushedImage:
    """Upload an image from a layout or archive and tag it; returns what to sign."""
    tag = ref.tag or "latest"
    if source.path is None:
        raise ImageReferenceError("push reads from oci:DIR[:TAG] or docker-archive:FILE[:TAG]")
    if source.kind == "oci":
        layout = OCILayout(source.path)
        top = layout.resolve(source.tag)
        data = layout.read_blob(top.digest, top.size, limit=MAX_MANIFEST)
        _push_tree(client, ref.repository, layout, data, top.media_type, progress, chunked)
        digest = client.put_manifest(ref.repository, tag, data, top.media_type)
        return PushedImage(ref, str(digest), len(data), top.media_type)
    if source.kind == "docker-archive":
        with DockerArchive(source.path, source.tag) as archive:
            for blob in archive.blobs():
                def chunks(b: ArchiveBlob = blob) -> Iterator[bytes]:
                    return _counted(archive.stream(b), f"pushing {b.digest[:19]}", progress)

                client.push_blob(ref.repository, blob.digest, blob.size, chunks,
                                 chunked=chunked)
            data = archive.manifest()
            media_type = "application/vnd.oci.image.manifest.v1+json"
            digest = client.put_manifest(ref.repository, tag, data, media_type)
            return PushedImage(ref, str(digest), len(data), media_type)
    raise ImageReferenceError("push reads from oci:DIR[:TAG] or docker-archive:FILE[:TAG]")


def _push_tree(client: RegistryClient, repo: str, layout: OCILayout, data: bytes,
               media_type: str, progress: Progress | None, chunked: bool) -> None:
    document = parse(data, media_type)
    if isinstance(document, Index):
        for child in document.manifests:
            child_data = layout.read_blob(child.digest, child.size, limit=MAX_MANIFEST)
            _push_tree(client, repo, layout, child_data, child.media_type, progress, chunked)
            client.put_manifest(repo, child.digest, child_data, child.media_type)
        return
    for blob in _blobs(document):
        def chunks(b: Descriptor = blob) -> Iterator[bytes]:
            return _counted(layout.stream_blob(b.digest, b.size), f"pushing {b.digest[:19]}",
                            progress)

        client.push_blob(repo, blob.digest, blob.size, chunks, chunked=chunked)


def _blobs(manifest: Manifest) -> list[Descriptor]:
    return [d for d in (manifest.config, *manifest.layers) if d is not None]


# --- pull -------------------------------------------------------------------------

#: Blobs fetched at once by a pull, as containerd does by default: a layer's SHA-256
#: runs on one core, and a remote registry's latency is paid once for all of them.
PULL_CONCURRENCY = 3


class _Stopped(Exception):
    """Another blob of the same pull failed: this one stops at its next piece."""


def _fetch_blobs(client: RegistryClient, repository: str, blobs: Sequence[Descriptor],
                 writer: LayoutWriter, *, progress: Progress | None,
                 concurrency: int) -> None:
    """Every blob not in the layout yet into ``writer``, ``concurrency`` at a time.

    Each blob is verified as it streams (``fetch_blob``). The first failure stops
    the others at their next piece and is raised; their partial files are removed
    by the writer, so nothing unverified reaches the destination.
    """
    todo: list[Descriptor] = []
    seen: set[str] = set()
    for blob in blobs:
        if blob.digest not in seen and not writer.has(blob.digest):
            seen.add(blob.digest)
            todo.append(blob)
    if not todo:
        return
    stop = threading.Event()
    report = _shared_progress(f"pulling {len(todo)} blob{'s' if len(todo) > 1 else ''}",
                              progress)

    def fetch(blob: Descriptor) -> None:
        with writer.blob(blob.digest, blob.size, verified_stream=True) as handle:
            def write(piece: memoryview) -> None:
                if stop.is_set():
                    raise _Stopped
                handle.write(piece)
                report(piece.nbytes)

            client.fetch_blob(repository, blob.digest, write, expected_size=blob.size)

    try:
        if concurrency <= 1 or len(todo) == 1:
            for blob in todo:
                fetch(blob)
            return
        with ThreadPoolExecutor(max_workers=min(concurrency, len(todo)),
                                thread_name_prefix="countersign-pull") as pool:
            futures = [pool.submit(fetch, blob) for blob in todo]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                # The first failure (or Ctrl-C): ``stop`` is set only now, so no fetch
                # can have ended with _Stopped before it. The waiting fetches are
                # cancelled, the running ones stop at their next piece and the pool's
                # exit waits for them (the writer removes their partial files).
                stop.set()
                for waiting in futures:
                    waiting.cancel()
                raise
    finally:
        if progress is not None:
            sys.stderr.write("\n")


def _shared_progress(what: str, progress: Progress | None) -> Callable[[int], None]:
    """A counter of bytes received by every fetch of a pull, reported as one line."""
    if progress is None:
        return lambda count: None
    lock = threading.Lock()
    done = 0

    def report(count: int) -> None:
        nonlocal done
        with lock:
            done += count
            progress(what, done)

    return report


@dataclass(frozen=True)
class PulledImage:
    reference: ImageReference
    digest: str
    size: int
    signed_by: str | None  # the role whose signature resolved the tag (None: --no-verify)


def resolve_signed(updater: Updater, ref: ImageReference) -> tuple[FileMeta, str]:
    """The signed manifest hash and length for the tag, and the role that signed it."""
    tag = ref.tag or "latest"
    refreshed = updater.refresh()
    target = refreshed.lookup(tag, RELEASE_ROLES)
    if target is None:
        raise VerificationError(
            f"no trust data for {ref.gun}:{tag}",
            advice="the tag is not signed in targets/releases or targets; sign it first")
    if target.meta.sha256 is None:
        raise VerificationError(f"{ref.gun}:{tag} is signed without a sha256 hash")
    return target.meta, target.role


def pull(ref: ImageReference, client: RegistryClient, dest: Path, *,
         updater: Updater | None, dest_tag: str | None = None,
         platform: Platform | str | None = None,
         progress: Progress | None = None, durable: bool = True,
         concurrency: int = PULL_CONCURRENCY) -> PulledImage:
    """Fetch ``ref`` into the OCI layout ``dest``; with ``updater``, only what trust signed.

    Without ``updater`` (``--no-verify``) the registry's tag is believed, but every
    blob is still checked against the manifest's digests. ``concurrency`` blobs are
    fetched at once. When it returns, the layout is on disk (``durable=False``:
    left to the kernel to write back).
    """
    tag = ref.tag or "latest"
    signed_by = None
    with LayoutWriter(dest, durable=durable) as writer:
        if updater is not None:
            signed, signed_by = resolve_signed(updater, ref)
            wanted = "sha256:" + (signed.sha256 or b"").hex()
            raw = client.get_manifest(ref.repository, wanted)
            try:
                signed.check(raw.data, f"manifest {wanted}")
            except VerificationError:
                raise UntrustedImageError(
                    f"the registry's manifest for {ref} is not the signed one: expected "
                    f"{wanted} ({signed.length} bytes), got {digest_of(raw.data)} "
                    f"({len(raw.data)} bytes)", wanted,
                    advice="the registry's copy was altered or replaced; do not use it") from None
        else:
            raw = client.get_manifest(ref.repository, ref.digest or tag)
            if ref.digest is not None:
                raw.verify(ref.digest)
        top_digest = str(digest_of(raw.data))
        writer.write_blob(top_digest, raw.data)
        document = raw.parse()
        if isinstance(document, Index):
            child = select_platform(document, platform)
            child_raw = client.get_manifest(ref.repository, child.digest)
            child_raw.verify(child.digest)
            if len(child_raw.data) != child.size:
                raise UntrustedImageError(
                    f"manifest {child.digest} has {len(child_raw.data)} bytes, not "
                    f"{child.size}", str(child.digest))
            writer.write_blob(str(child.digest), child_raw.data)
            document = child_raw.parse()
        if not isinstance(document, Manifest):
            raise VerificationError(f"{ref}: an index inside an index is not supported")
        _fetch_blobs(client, ref.repository, _blobs(document), writer, progress=progress,
                     concurrency=concurrency)
        writer.commit(LayoutDescriptor(raw.media_type, top_digest, len(raw.data), {}),
                      dest_tag or tag)
    return PulledImage(ref, top_digest, len(raw.data), signed_by)
