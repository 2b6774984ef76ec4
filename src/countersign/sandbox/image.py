"""The sample image, built from real files without a container daemon.

Debian packages are fetched with ``apt-get download`` into a cache directory,
their file trees read straight out of the ``.deb`` (an ``ar`` archive holding
``data.tar.*``) and re-packed as layers: tar entries sorted, owned by root,
timestamps kept from the package, so the same packages always give the same
layer digests. Each layer is a gzip tar; the config lists the uncompressed
tars' digests as ``rootfs.diff_ids``; the manifest and the layout's
``index.json`` are written by :class:`countersign.registry.layout.LayoutWriter`,
which checks every blob against its digest.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from countersign.registry.layout import LayoutDescriptor, LayoutWriter
from countersign.registry.oci import Descriptor, Manifest, digest_of, encode
from countersign.sandbox import SandboxError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MAX_DEB = 64 << 20
MAX_LAYER = 256 << 20
AR_MAGIC = b"!<arch>\n"
APT_ARCHIVES = Path("/var/cache/apt/archives")
#: small and statically linked: a whole userland in one file, runnable without a libc layer
DEFAULT_PACKAGES = ("busybox-static",)
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
#: Debian architecture names -> OCI ``architecture`` (and ``variant``)
_ARCH = {"amd64": ("amd64", None), "arm64": ("arm64", "v8"), "armhf": ("arm", "v7"),
         "armel": ("arm", "v5"), "i386": ("386", None), "ppc64el": ("ppc64le", None),
         "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


class ImageBuildError(SandboxError):
    """The sample image cannot be built (no package, an unreadable .deb, a bad tree)."""


@dataclass(frozen=True)
class Layer:
    """One layer: its uncompressed tar (for ``diff_ids``) and the gzip blob pushed."""

    tar: bytes
    blob: bytes
    comment: str

    @property
    def diff_id(self) -> str:
        return str(digest_of(self.tar))

    @property
    def digest(self) -> str:
        return str(digest_of(self.blob))


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    digest: str
    size: int
    layers: tuple[Layer, ...]


# --- Debian packages --------------------------------------------------------------------


def fetch_debs(packages: Sequence[str], cache: Path) -> list[Path]:
    """The ``.deb`` of each package: from ``cache``, else apt's archive, else ``apt-get download``.

    Whatever is found is kept in ``cache``, so later builds need no network.
    """
    cache.mkdir(parents=True, exist_ok=True)
    found = []
    for package in packages:
        if not _PACKAGE.match(package):
            raise ImageBuildError(f"{package!r} is not a Debian package name")
        cached = sorted(cache.glob(f"{package}_*.deb"))
        if not cached:
            archived = sorted(APT_ARCHIVES.glob(f"{package}_*.deb"))
            if archived:  # apt fetched it once already (an install keeps the .deb here)
                shutil.copy2(archived[-1], cache / archived[-1].name)
            else:
                _apt_download(package, cache)
            cached = sorted(cache.glob(f"{package}_*.deb"))
        if not cached:
            raise ImageBuildError(f"apt-get download {package} wrote no .deb into {cache}")
        found.append(cached[-1])
    return found


def _apt_download(package: str, cache: Path) -> None:
    advice = (f"run apt-get update (as root) and try again, or put a {package}_*.deb "
              f"into {cache} yourself (apt-get download {package} on any Debian machine)")
    apt = shutil.which("apt-get")
    if apt is None:
        raise ImageBuildError(f"cannot fetch {package}: apt-get is not installed",
                              advice=advice)
    try:
        done = subprocess.run([apt, "download", "-q", package], cwd=cache,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"apt-get download {package} did not finish in 5 minutes",
                              advice=advice) from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ImageBuildError(
            f"apt-get download {package} failed: {detail[-1] if detail else done.returncode}",
            advice=advice)


def _ar_members(data: bytes, source: str) -> dict[str, bytes]:
    """The members of an ``ar`` archive (the container format of a ``.deb``)."""
    if not data.startswith(AR_MAGIC):
        raise ImageBuildError(f"{source} is not a Debian package (no ar header)")
    members: dict[str, bytes] = {}
    offset = len(AR_MAGIC)
    while offset < len(data):
        header = data[offset:offset + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise ImageBuildError(f"{source}: a damaged ar member header at byte {offset}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise ImageBuildError(f"{source}: a bad ar member size at byte {offset}") from None
        start = offset + 60
        if start + size > len(data):
            raise ImageBuildError(f"{source}: the ar member {name} is cut short")
        members[name] = data[start:start + size]
        offset = start + size + (size % 2)
    return members


def _decompress(name: str, data: bytes, source: str) -> bytes:
    """A member tar of the .deb, uncompressed (``control.tar.*`` or ``data.tar.*``)."""
    try:
        if name.endswith(".xz"):
            return lzma.decompress(data)
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if name.endswith(".bz2"):
            return bz2.decompress(data)
    except (OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        raise ImageBuildError(f"{source}: {name} does not decompress ({exc})") from None
    if name.endswith(".tar"):
        return data
    return _dpkg_deb_tar(name, source)


def _dpkg_deb_tar(name: str, source: str) -> bytes:
    """Compressions Python cannot read (zstd) are left to ``dpkg-deb``, which can."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise ImageBuildError(f"{source}: {name} needs dpkg-deb to unpack",
                              advice="apt-get install dpkg")
    option = "--ctrl-tarfile" if name.startswith("control.") else "--fsys-tarfile"
    done = subprocess.run([dpkg_deb, option, source], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120, check=False)
    if done.returncode != 0 or len(done.stdout) > MAX_LAYER:
        raise ImageBuildError(f"dpkg-deb {option} {source} failed: "
                              f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return done.stdout


def deb_contents(deb: Path) -> tuple[bytes, dict[str, str]]:
    """The package's file tree as an uncompressed tar, and its control fields."""
    with deb.open("rb") as handle:
        data = handle.read(MAX_DEB + 1)
    if len(data) > MAX_DEB:
        raise ImageBuildError(f"{deb} is larger than {MAX_DEB >> 20} MiB; pick a smaller package")
    members = _ar_members(data, str(deb))
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    if data_name is None or control_name is None:
        raise ImageBuildError(f"{deb} has no data.tar or control.tar member")
    tree = _decompress(data_name, members[data_name], str(deb))
    control = _decompress(control_name, members[control_name], str(deb))
    fields: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(control), mode="r:") as tar:
        for member in tar:
            if member.isfile() and PurePosixPath(member.name).name == "control":
                extracted = tar.extractfile(member)
                text = extracted.read(1 << 20).decode("utf-8", "replace") if extracted else ""
                for line in text.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not key.startswith((" ", "\t")):
                        fields[key.strip()] = value.strip()
    return tree, fields


# --- layers -----------------------------------------------------------------------------


def _clean_name(name: str, source: str) -> str | None:
    """A tar entry name relative to ``/``; None for the root itself; refuses escapes."""
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "/")]
    if any(p == ".." for p in parts):
        raise ImageBuildError(f"{source}: the entry {name!r} leaves the tree")
    return "/".join(parts) or None


def repack(tree: bytes, source: str) -> bytes:
    """A package's tar re-written as a layer tar: sorted, root-owned, no device files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tree), mode="r:") as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        members = sorted(src.getmembers(), key=lambda m: _clean_name(m.name, source) or "")
        for member in members:
            name = _clean_name(member.name, source)
            if name is None or not (member.isfile() or member.isdir() or member.issym()
                                    or member.islnk()):
                continue
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = member.type, member.mode, int(member.mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if member.islnk():
                info.linkname = _clean_name(member.linkname, source) or ""
            elif member.issym():
                info.linkname = member.linkname
            if member.isfile():
                info.size = member.size
                dst.addfile(info, src.extractfile(member))
            else:
                dst.addfile(info)
    if out.tell() > MAX_LAYER:
        raise ImageBuildError(f"{source}: the layer is larger than {MAX_LAYER >> 20} MiB")
    return out.getvalue()


def files_tar(files: Mapping[str, bytes], *, mtime: int = 1_700_000_000) -> bytes:
    """A layer tar of ``files`` (path -> bytes), with their parent directories."""
    directories = {str(p) for name in files for p in PurePosixPath(name).parents
                   if str(p) != "."}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = mtime, "root", "root"
            if name in directories:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(files[name])
                tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def layer(tar: bytes, comment: str) -> Layer:
    """``tar`` gzip-compressed with a zero timestamp, so equal tars give equal blobs."""
    return Layer(tar, gzip.compress(tar, compresslevel=6, mtime=0), comment)


# --- the image --------------------------------------------------------------------------


def write_image(layers: Sequence[Layer], dest: Path, tag: str, *, architecture: str = "amd64",
                variant: str | None = None, config: Mapping[str, object] | None = None,
                labels: Mapping[str, str] | None = None) -> BuiltImage:
    """An OCI image layout at ``dest`` holding one image tagged ``tag``."""
    doc: dict[str, object] = {
        "architecture": architecture, "os": "linux",
        "config": {**(config or {}), "Labels": dict(labels or {})},
        "rootfs": {"type": "layers", "diff_ids": [entry.diff_id for entry in layers]},
        "history": [{"created_by": entry.comment} for entry in layers],
    }
    if variant:
        doc["variant"] = variant
    config_bytes = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    manifest = Manifest(MANIFEST_TYPE, Descriptor.of(config_bytes, CONFIG_TYPE),
                        tuple(Descriptor.of(entry.blob, LAYER_TYPE) for entry in layers))
    data = encode(manifest)
    digest = str(digest_of(data))
    with LayoutWriter(dest, durable=False) as writer:  # a scratch layout, pushed next
        writer.write_blob(str(digest_of(config_bytes)), config_bytes)
        for entry in layers:
            writer.write_blob(entry.digest, entry.blob)
        writer.write_blob(digest, data)
        writer.commit(LayoutDescriptor(MANIFEST_TYPE, digest, len(data), {}), tag)
    return BuiltImage(dest, digest, len(data), tuple(layers))


def build_from_debs(debs: Sequence[Path], extra: Mapping[str, bytes], dest: Path, tag: str, *,
                    config: Mapping[str, object] | None = None) -> BuiltImage:
    """One layer per package, then one layer of ``extra`` files; see the module docstring."""
    layers = []
    architecture, variant = "amd64", None
    names = []
    for deb in debs:
        tree, fields = deb_contents(deb)
        package = fields.get("Package", deb.name)
        version = fields.get("Version", "?")
        names.append(f"{package}={version}")
        layers.append(layer(repack(tree, str(deb)), f"{package} {version} (from {deb.name})"))
        arch = fields.get("Architecture", "all")
        if arch in _ARCH:
            architecture, variant = _ARCH[arch]
    if extra:
        layers.append(layer(files_tar(extra), "sample application"))
    return write_image(layers, dest, tag, architecture=architecture, variant=variant,
                       config=config, labels={"org.opencontainers.image.description":
                                              "countersign sandbox sample image",
                                              "dev.countersign.packages": " ".join(names)})
