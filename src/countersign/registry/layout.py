"""OCI image layout directories: read an image by tag, write one only when all of it verified.

A layout is ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``. Reading
streams blobs and hashes while reading; writing stages every blob in a sibling
directory, verified, and only then moves the blobs in and replaces
``index.json`` atomically, so a failed pull leaves the destination as it was.

Durability: a :class:`LayoutWriter` (``durable=True``, the default) has every
staged blob fsynced before it is moved in, then the blob directories, then
``index.json`` (written beside, fsynced, renamed over) and its directory, so
once :meth:`LayoutWriter.commit` returns, a crash cannot leave an
``index.json`` that names missing or partial blobs. Each blob is fsynced in a
background thread while it is written (every :data:`SYNC_EVERY` bytes, then at
its end), so the disk takes the bytes while the network brings more; only the
last few MiB are waited for at the commit. ``durable=False`` skips
every fsync (a cache that can be thrown away); the index is still replaced
atomically.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countersign.errors import CountersignError
from countersign.registry.oci import parse_digest

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_INDEX = 4 << 20
CHUNK = 1 << 20
#: A durable blob being written is flushed to disk (in the background) every this many bytes.
SYNC_EVERY = 32 << 20
#: Most bytes given to one ``write()``. On VMs that report free pages to the host, large
#: writes into new page-cache pages are slow once the memory has been free for a few
#: seconds: 500 MB took 0.36-1.4 s in writes of 512 KiB or 1 MiB, 0.16-0.20 s in writes
#: of 256 KiB, which cost nothing on warm memory (BENCHMARKS.md, the pull section).
WRITE_SIZE = 256 << 10


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
    """A file being written whose bytes are hashed on the way, so nothing is read twice.

    The file is unbuffered: each ``write`` goes straight to the kernel, from the
    caller's buffer, without a copy, in writes of at most :data:`WRITE_SIZE`.
    """

    def __init__(self, raw: io.FileIO, path: Path, *, hashing: bool = True,
                 syncer: _Syncer | None = None) -> None:
        self._raw = raw
        self._path = path
        self._hashing = hashing
        self._syncer = syncer
        self._synced = 0
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._hashing:
            self.hasher.update(data)
        view = memoryview(data).cast("B")
        count = view.nbytes
        try:
            while view:
                written = self._raw.write(view[:WRITE_SIZE])
                view = view[written or 0:]
        except OSError as exc:
            raise LayoutError(f"cannot write {self._path}: {exc.strerror or exc}",
                              advice="check the free space and permissions there") from None
        self.size += count
        if self._syncer is not None and self.size - self._synced >= SYNC_EVERY:
            self._syncer.early(self._raw, self._path)
            self._synced = self.size
        return count


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LayoutError(f"cannot write the directory {path} to disk: "
                          f"{exc.strerror or exc}",
                          advice="check the disk and the permissions there") from None


_EARLY, _LAST, _DROP = "early", "last", "drop"


class _Syncer:
    """fsyncs files on a background thread, in the order given; it closes each file
    once told it is the last time (so no file is closed while it is being synced)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[io.FileIO, Path, str] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # _put runs on several threads at once (blob writers, a pull's fetches): one
        # consumer thread is started, and wait() never misses an item put meanwhile
        self._lock = threading.Lock()
        self._error: tuple[Path, OSError] | None = None
        self._skip = False

    def _put(self, handle: io.FileIO, path: Path, what: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="countersign-fsync",
                                                daemon=True)
                self._thread.start()
            self._queue.put((handle, path, what))

    def early(self, handle: io.FileIO, path: Path) -> None:
        """Flush what ``handle`` holds so far, unless the thread is still busy."""
        if self._queue.qsize() == 0:
            self._put(handle, path, _EARLY)

    def submit(self, handle: io.FileIO, path: Path) -> None:
        """fsync and close ``handle`` (now owned here)."""
        self._put(handle, path, _LAST)

    def drop(self, handle: io.FileIO, path: Path) -> None:
        """Close ``handle`` (now owned here) without syncing it: it is being deleted."""
        self._put(handle, path, _DROP)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            handle, path, what = item
            try:
                if what == _EARLY and self._error is None and not self._skip:
                    os.fdatasync(handle.fileno())
                elif what == _LAST and self._error is None and not self._skip:
                    os.fsync(handle.fileno())
            except OSError as exc:
                self._error = (path, exc)
            finally:
                if what != _EARLY:
                    handle.close()

    def wait(self, *, skip: bool = False) -> None:
        """Every submitted file is on disk (or the first failure is raised); ``skip``:
        only close the files still waiting (they are about to be deleted)."""
        if skip:
            self._skip = True
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None
        if self._error is not None:
            path, exc = self._error
            raise LayoutError(f"cannot write {path} to disk: {exc.strerror or exc}",
                              advice="check the disk and the free space there")


class LayoutWriter:
    """Stage blobs beside ``dest``; :meth:`commit` moves them in and tags the manifest.

    ``durable``: fsync everything before :meth:`commit` returns (see the module).
    """

    def __init__(self, dest: Path, *, durable: bool = True) -> None:
        self.dest = Path(dest)
        self.durable = durable
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", dir=self.dest.parent))
        (self.staging / "blobs" / "sha256").mkdir(parents=True)
        self._blobs: list[str] = []
        self._syncer = _Syncer()

    def has(self, digest: str) -> bool:
        return OCILayout(self.dest).blob_path(digest).exists() or digest in self._blobs

    @contextmanager
    def blob(self, digest: str, size: int, *,
             verified_stream: bool = False) -> Iterator[_HashingFile]:
        """A file to write the blob into, hashed as it is written; verified on close.

        ``verified_stream``: the bytes come from a stream that hashes them itself and
        raises before its last piece on a mismatch (``RegistryClient.stream_blob`` and
        ``fetch_blob``), so hashing them a second time is skipped; the size is still
        checked.
        """
        hexdigest = check_digest(digest)
        path = self.staging / "blobs" / "sha256" / hexdigest
        raw = io.FileIO(path, "w")
        try:
            handle = _HashingFile(raw, path, hashing=not verified_stream,
                                  syncer=self._syncer if self.durable else None)
            yield handle
            actual_size = handle.size
            actual_hex = None if verified_stream else handle.hasher.hexdigest()
            if actual_size != size or (actual_hex is not None and not hmac.compare_digest(
                    actual_hex, hexdigest)):
                # a verified stream was not hashed here: no digest to name
                got = f"{actual_size} bytes" + (f", sha256:{actual_hex}" if actual_hex else "")
                raise BlobMismatchError(digest, f"blob {digest} did not verify ({got})")
        except BaseException:
            if self.durable:  # the syncer may be flushing it: it closes it when done
                self._syncer.drop(raw, path)
            else:
                raw.close()
            path.unlink(missing_ok=True)
            raise
        if self.durable:
            self._syncer.submit(raw, path)
        else:
            raw.close()
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
        self._syncer.wait()
        blob_dir = self.dest / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        for digest in self._blobs:
            target = OCILayout(self.dest).blob_path(digest)
            if not target.exists():
                os.replace(self.staging / "blobs" / "sha256" / check_digest(digest), target)
        layout_file = self.dest / "oci-layout"
        if not layout_file.exists():
            self._write(layout_file, b'{"imageLayoutVersion":"1.0.0"}')
        if self.durable:  # the blobs' names, and the directories, before the index names them
            for directory in (blob_dir, blob_dir.parent, self.dest, self.dest.parent):
                _fsync_dir(directory)
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
                 "manifests": [d.to_dict() for d in [*existing, entry]]}
        tmp = self.staging / "index.json"
        self._write(tmp, json.dumps(index, separators=(",", ":")).encode())
        os.replace(tmp, self.dest / "index.json")
        if self.durable:
            _fsync_dir(self.dest)
        self.discard()

    def _write(self, path: Path, data: bytes) -> None:
        try:
            with path.open("wb") as handle:
                handle.write(data)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            raise LayoutError(f"cannot write {path}: {exc.strerror or exc}",
                              advice="check the free space and permissions there") from None

    def discard(self) -> None:
        with suppress(LayoutError):
            self._syncer.wait(skip=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
