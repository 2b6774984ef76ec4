"""The OCI image format as a registry serves it: media types, digests,
descriptors, image manifests and indexes (and their Docker schema 2 twins).

Everything here parses *bytes* strictly and refuses anything else with an
:class:`OCIFormatError` (a :class:`~countersign.errors.FormatError`):

* a manifest or index is at most :data:`MAX_MANIFEST_SIZE` bytes (4 MiB, as
  distribution and containerd bound them) of UTF-8 JSON with no duplicate
  keys, no ``NaN``/``Infinity``, and no key that differs from a known field
  only in case (Go's decoder, which registries use, would read it as that
  field: two parsers must not see two different documents);
* ``schemaVersion`` is exactly ``2``; a ``mediaType`` field, when present,
  must agree with the media type the document was served as; an image
  manifest may not carry ``manifests`` nor an index ``config``/``layers``;
* every descriptor has a valid media type, a ``sha256`` digest (the only
  algorithm countersign verifies), a size in ``0 .. 2**63-1`` and, when it
  embeds ``data``, data of exactly that size and digest.

Unknown fields are ignored, as the image spec asks of consumers.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from countersign.client.http import strict_json
from countersign.errors import CountersignError, FormatError

__all__ = [
    "ALL_MANIFEST_MEDIA_TYPES",
    "DEFAULT_PLATFORM",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V1",
    "DOCKER_MANIFEST_V1_SIGNED",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_EMPTY_DATA",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE",
    "OCI_LAYER_NONDISTRIBUTABLE_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_ZSTD",
    "OCI_LAYER_ZSTD",
    "Compression",
    "Descriptor",
    "Digest",
    "Index",
    "InvalidDigestError",
    "Manifest",
    "ManifestSizeError",
    "OCIFormatError",
    "Platform",
    "PlatformNotFoundError",
    "UnsupportedDigestError",
    "UnsupportedMediaTypeError",
    "base_media_type",
    "digest_of",
    "encode",
    "is_layer",
    "is_media_type",
    "layer_compression",
    "parse",
    "parse_digest",
    "parse_index",
    "parse_manifest",
    "parse_platform",
    "select_platform",
]

# --------------------------------------------------------------------------- media types

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
#: Docker schema 1 (deprecated, unverifiable layer list): refused.
DOCKER_MANIFEST_V1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
#: The empty descriptor's type (artifacts without a config); its content is ``{}``.
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DATA: Final = b"{}"

OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP: Final = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
)
OCI_LAYER_NONDISTRIBUTABLE_ZSTD: Final = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD: Final = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_MEDIA_TYPES: Final = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES: Final = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: What a client accepts for a manifest: both image manifests and both indexes.
ALL_MANIFEST_MEDIA_TYPES: Final = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
_SCHEMA1: Final = (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED)

#: Largest manifest or index accepted (distribution's and containerd's limit).
MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024
#: Largest size a descriptor may state (an int64, as Go reads it).
MAX_SIZE: Final = 2**63 - 1


class Compression(enum.Enum):
    """How a layer's tar stream is compressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


_LAYERS: Final[Mapping[str, Compression]] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_LAYER_NONDISTRIBUTABLE: Compression.NONE,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP: Compression.GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD: Compression.ZSTD,
    DOCKER_LAYER: Compression.NONE,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_LAYER_ZSTD: Compression.ZSTD,
    DOCKER_FOREIGN_LAYER: Compression.NONE,
    DOCKER_FOREIGN_LAYER_GZIP: Compression.GZIP,
}

# RFC 6838 as the image spec's schema writes it (no parameters).
_MEDIA_TYPE_RE: Final = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}", re.ASCII
)


# --------------------------------------------------------------------------- errors


class OCIFormatError(FormatError):
    """Bytes that are not a valid manifest, index, descriptor, digest or platform."""


class ManifestSizeError(OCIFormatError):
    """A manifest or index larger than :data:`MAX_MANIFEST_SIZE`."""


class InvalidDigestError(OCIFormatError):
    """Text that is not a digest (``algorithm:encoded``), or a malformed ``sha256`` one."""


class UnsupportedDigestError(OCIFormatError):
    """A well-formed digest of an algorithm countersign does not verify (not ``sha256``)."""


class UnsupportedMediaTypeError(OCIFormatError):
    """A media type that is not what the caller can use here (e.g. Docker schema 1)."""


class PlatformNotFoundError(CountersignError):
    """An index or manifest list with no manifest for the wanted platform."""


def _show(value: object, limit: int = 80) -> str:
    """A short, printable rendering of untrusted input for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def base_media_type(value: str) -> str:
    """A ``Content-Type`` without parameters, lower-cased: ``a/b; charset=x`` → ``a/b``."""
    return value.split(";", 1)[0].strip().lower()


def is_media_type(value: object) -> bool:
    """Whether ``value`` is a media type (``type/subtype``, no parameters)."""
    return isinstance(value, str) and _MEDIA_TYPE_RE.fullmatch(value) is not None


def _check_media_type(value: object, where: str) -> str:
    if not isinstance(value, str) or not _MEDIA_TYPE_RE.fullmatch(value):
        raise OCIFormatError(f"{where}: {_show(value)} is not a media type (type/subtype)")
    return value


def is_layer(media_type: str) -> bool:
    """Whether ``media_type`` is one of the OCI or Docker layer types."""
    return media_type in _LAYERS


def layer_compression(media_type: str) -> Compression:
    """The compression of a layer of ``media_type``; other types are refused."""
    try:
        return _LAYERS[media_type]
    except KeyError:
        raise UnsupportedMediaTypeError(
            f"{_show(media_type)} is not an OCI or Docker layer media type"
        ) from None


# --------------------------------------------------------------------------- digests

_DIGEST_RE: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_SHA256_HEX_RE: Final = re.compile(r"[a-f0-9]{64}", re.ASCII)
_MAX_DIGEST_LENGTH: Final = 1024


class Digest(str):
    """A verified-format ``sha256:<64 lowercase hex>`` digest (a ``str``).

    Made only by :func:`parse_digest` and :func:`digest_of`.
    """

    __slots__ = ()

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    @property
    def tag(self) -> str:
        """The referrers tag schema's tag for this digest: ``sha256-<hex>``."""
        return f"{self.algorithm}-{self.hex}"

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"


def parse_digest(text: object) -> Digest:
    """``text`` as a :class:`Digest`.

    Only ``sha256:`` followed by exactly 64 lowercase hex digits is accepted.
    Anything that is not a digest at all is an :class:`InvalidDigestError`;
    a well-formed digest of another algorithm (``sha512:...``) is an
    :class:`UnsupportedDigestError`, since it could not be verified.
    """
    if isinstance(text, Digest):
        return text
    if not isinstance(text, str):
        raise InvalidDigestError(f"a digest must be a string, not {type(text).__name__}")
    if len(text) > _MAX_DIGEST_LENGTH or not _DIGEST_RE.fullmatch(text):
        raise InvalidDigestError(
            f"{_show(text)} is not a digest",
            advice="a digest looks like sha256:<64 lowercase hex digits>",
        )
    algorithm, _, encoded = text.partition(":")
    if algorithm != "sha256":
        raise UnsupportedDigestError(
            f"digest algorithm {algorithm!r} is not supported ({_show(text)}): "
            "countersign verifies sha256 digests only",
            advice="push or reference the content by its sha256 digest",
        )
    if not _SHA256_HEX_RE.fullmatch(encoded):
        problem = (f"{len(encoded)} characters" if len(encoded) != 64
                   else "other characters")
        raise InvalidDigestError(
            f"{_show(text)} is not a valid sha256 digest: it needs exactly 64 lowercase "
            f"hex digits, not {problem}"
        )
    return Digest(text)


def digest_of(data: bytes) -> Digest:
    """The ``sha256`` digest of ``data``."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- platforms


@dataclass(frozen=True)
class Platform:
    """Where an image runs: ``os/architecture[/variant]`` (plus Windows' extras)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def normalized(self) -> Platform:
        """The platform as containerd compares it: ``x86_64`` is ``amd64``,
        ``aarch64`` is ``arm64`` (``v8`` its implied variant), ``arm`` defaults to ``v7``."""
        os_name = self.os.lower()
        if os_name == "macos":
            os_name = "darwin"
        arch, variant = self.architecture.lower(), self.variant.lower()
        if arch in ("x86_64", "x86-64", "amd64"):
            arch = "amd64"
            if variant == "v1":
                variant = ""
        elif arch in ("aarch64", "arm64"):
            arch = "arm64"
            if variant in ("8", "v8", "v8.0"):
                variant = ""
        elif arch == "armhf":
            arch, variant = "arm", "v7"
        elif arch == "armel":
            arch, variant = "arm", "v6"
        elif arch == "arm":
            if variant in ("", "7"):
                variant = "v7"
            elif variant in ("5", "6", "8"):
                variant = "v" + variant
        elif arch in ("i386", "i686", "x86"):
            arch = "386"
        return Platform(os_name, arch, variant, self.os_version, self.os_features, self.features)

    def matches(self, other: Platform) -> bool:
        """Same OS, architecture and variant once both are normalized."""
        a, b = self.normalized(), other.normalized()
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        if self.features:
            out["features"] = list(self.features)
        return out


#: What ``docker pull`` picks on a 64-bit x86 Linux host.
DEFAULT_PLATFORM: Final = Platform("linux", "amd64")

_PLATFORM_PART_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


def parse_platform(text: str) -> Platform:
    """``os/arch`` or ``os/arch/variant`` (as ``docker --platform`` takes it)."""
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(_PLATFORM_PART_RE.fullmatch(p) for p in parts):
        raise OCIFormatError(
            f"{_show(text)} is not a platform (os/arch[/variant])",
            advice="write it as e.g. linux/amd64 or linux/arm64/v8"
        )
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class Descriptor:
    """A reference to content: its media type, digest and size (and the optional rest)."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: bytes | None = None

    @classmethod
    def of(cls, content: bytes, media_type: str, *,
           annotations: Mapping[str, str] | None = None,
           platform: Platform | None = None,
           artifact_type: str | None = None) -> Descriptor:
        """The descriptor of ``content`` (digest and size computed)."""
        _check_media_type(media_type, "descriptor")
        return cls(media_type, digest_of(content), len(content),
                   annotations=dict(annotations or {}), platform=platform,
                   artifact_type=artifact_type)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["digest"] = str(self.digest)
        out["size"] = self.size
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest or a Docker schema 2 manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The config, then the layers: every blob the manifest needs."""
        return (self.config, *self.layers)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_json()
        out["layers"] = [d.to_json() for d in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [d.to_json() for d in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def encode(document: Manifest | Index, *, indent: int | None = None) -> bytes:
    """``document`` as the JSON bytes to push (compact unless ``indent``)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(document.to_json(), indent=indent, separators=separators,
                      ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- parsing

_MANIFEST_KEYS: Final = ("schemaVersion", "mediaType", "artifactType", "config", "layers",
                         "subject", "annotations", "manifests")
_DESCRIPTOR_KEYS: Final = ("mediaType", "digest", "size", "urls", "annotations", "data",
                           "platform", "artifactType")
_PLATFORM_KEYS: Final = ("architecture", "os", "os.version", "os.features", "variant",
                         "features")


def _object(value: object, where: str, known: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OCIFormatError(f"{where} is not a JSON object")
    folded = {k.lower(): k for k in known}
    seen: dict[str, str] = {}
    for key in value:
        low = key.lower()
        if low in folded and key != folded[low]:
            raise OCIFormatError(
                f"{where}: key {_show(key)} differs from {folded[low]!r} only in case "
                "(a Go decoder would read it as that field)"
            )
        if low in seen:
            raise OCIFormatError(
                f"{where}: keys {_show(seen[low])} and {_show(key)} differ only in case"
            )
        seen[low] = key
    return value


def _string(value: object, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise OCIFormatError(f"{where} is not a {'' if empty else 'non-empty '}string")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise OCIFormatError(f"{where} is not an array of strings")
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _annotations(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise OCIFormatError(f"{where} is not an object of strings")
    for key, item in value.items():
        _string(item, f"{where}[{_show(key, 40)}]")
    return dict(value)


def _platform(value: object, where: str) -> Platform:
    obj = _object(value, where, _PLATFORM_KEYS)
    return Platform(
        os=_string(obj.get("os"), f"{where}.os", empty=False),
        architecture=_string(obj.get("architecture"), f"{where}.architecture", empty=False),
        variant=_string(obj.get("variant", ""), f"{where}.variant"),
        os_version=_string(obj.get("os.version", ""), f"{where}.os.version"),
        os_features=_strings(obj.get("os.features", []), f"{where}.os.features"),
        features=_strings(obj.get("features", []), f"{where}.features"),
    )


def _descriptor(value: object, where: str, *, platform: bool = False) -> Descriptor:
    obj = _object(value, where, _DESCRIPTOR_KEYS)
    media_type = _check_media_type(obj.get("mediaType"), f"{where}.mediaType")
    try:
        digest = parse_digest(obj.get("digest"))
    except OCIFormatError as exc:
        raise type(exc)(f"{where}.digest: {exc.message}", advice=exc.advice) from None
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise OCIFormatError(f"{where}.size is not an integer from 0 to 2^63-1")
    urls = _strings(obj["urls"], f"{where}.urls") if "urls" in obj else ()
    annotations = _annotations(obj["annotations"], f"{where}.annotations") \
        if "annotations" in obj else {}
    artifact_type = _check_media_type(obj["artifactType"], f"{where}.artifactType") \
        if "artifactType" in obj else None
    data = None
    if "data" in obj:
        text = _string(obj["data"], f"{where}.data")
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeError, ValueError):
            raise OCIFormatError(f"{where}.data is not base64") from None
        if len(data) != size or digest_of(data) != digest:
            raise OCIFormatError(
                f"{where}.data does not match the descriptor's size and digest {digest}"
            )
    found = None
    if "platform" in obj:
        if not platform:
            raise OCIFormatError(f"{where}: only an index's manifests have a platform")
        found = _platform(obj["platform"], f"{where}.platform")
    return Descriptor(media_type, digest, size, urls, annotations, found, artifact_type, data)


def _valid_text(document: object) -> bool:
    """Whether every string (keys too) in a parsed JSON document is valid Unicode."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            strings: list[object] = [node]
        elif isinstance(node, dict):
            strings = list(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
            continue
        else:
            continue
        for text in strings:
            try:
                str(text).encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _load(data: bytes, what: str) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("a manifest is parsed from bytes")
    if len(data) > MAX_MANIFEST_SIZE:
        raise ManifestSizeError(
            f"the {what} is {len(data)} bytes, more than the {MAX_MANIFEST_SIZE} allowed"
        )
    try:
        document = strict_json(bytes(data))
    except (ValueError, RecursionError):
        raise OCIFormatError(
            f"the {what} is not strict UTF-8 JSON (no duplicate keys, no NaN)"
        ) from None
    if not _valid_text(document):
        raise OCIFormatError(
            f"the {what} has a string that is not valid Unicode (a lone surrogate escape); "
            "a Go decoder would read it as U+FFFD"
        )
    obj = _object(document, f"the {what}", _MANIFEST_KEYS)
    version = obj.get("schemaVersion")
    if isinstance(version, bool) or version != 2 or not isinstance(version, int):
        raise OCIFormatError(f"the {what} has schemaVersion {_show(version)}, not 2")
    return obj


def _declared(obj: Mapping[str, Any], served: str | None, what: str) -> str | None:
    """The document's media type: its ``mediaType`` field, which must agree with
    the type it was served as; else the served type; else ``None``."""
    declared = obj.get("mediaType")
    if declared is not None:
        _check_media_type(declared, f"the {what}'s mediaType")
    if served:
        served = base_media_type(served)
        if declared is not None and declared != served:
            raise OCIFormatError(
                f"the {what} was served as {_show(served)} but its mediaType is "
                f"{_show(declared)}"
            )
    kind = declared if declared is not None else (served or None)
    if kind in _SCHEMA1:
        raise UnsupportedMediaTypeError(
            f"Docker schema 1 manifests ({kind}) are not supported",
            advice="push the image again with a current client (schema 2 or OCI)",
        )
    return kind


def _common(obj: Mapping[str, Any], what: str) -> tuple[Descriptor | None, str | None,
                                                        dict[str, str]]:
    subject = _descriptor(obj["subject"], f"the {what}'s subject") if "subject" in obj else None
    artifact_type = _check_media_type(obj["artifactType"], f"the {what}'s artifactType") \
        if "artifactType" in obj else None
    annotations = _annotations(obj["annotations"], f"the {what}'s annotations") \
        if "annotations" in obj else {}
    return subject, artifact_type, annotations


def _as_manifest(obj: Mapping[str, Any], kind: str | None) -> Manifest:
    what = "manifest"
    if kind is None:
        kind = OCI_MANIFEST
    elif kind not in MANIFEST_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(f"{_show(kind)} is not an image manifest media type")
    if kind == DOCKER_MANIFEST and "mediaType" not in obj:
        raise OCIFormatError("a Docker schema 2 manifest must state its mediaType")
    if "manifests" in obj:
        raise OCIFormatError("the manifest has a 'manifests' field: it is ambiguous with an index")
    if "config" not in obj:
        raise OCIFormatError("the manifest has no config")
    config = _descriptor(obj["config"], "the manifest's config")
    layers_value = obj.get("layers")
    if not isinstance(layers_value, list):
        raise OCIFormatError("the manifest's layers are not an array")
    layers = tuple(_descriptor(v, f"the manifest's layers[{i}]")
                   for i, v in enumerate(layers_value))
    subject, artifact_type, annotations = _common(obj, what)
    if kind == DOCKER_MANIFEST and (subject is not None or artifact_type is not None):
        raise OCIFormatError("a Docker schema 2 manifest cannot have a subject or artifactType")
    return Manifest(kind, config, layers, subject, artifact_type, annotations)


def _as_index(obj: Mapping[str, Any], kind: str | None) -> Index:
    what = "index"
    if kind is None:
        kind = OCI_INDEX
    elif kind not in INDEX_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(f"{_show(kind)} is not an index media type")
    if kind == DOCKER_MANIFEST_LIST and "mediaType" not in obj:
        raise OCIFormatError("a Docker manifest list must state its mediaType")
    if "config" in obj or "layers" in obj:
        raise OCIFormatError("the index has a config or layers: it is ambiguous with a manifest")
    entries = obj.get("manifests")
    if not isinstance(entries, list):
        raise OCIFormatError("the index's manifests are not an array")
    manifests = tuple(_descriptor(v, f"the index's manifests[{i}]", platform=True)
                      for i, v in enumerate(entries))
    subject, artifact_type, annotations = _common(obj, what)
    if kind == DOCKER_MANIFEST_LIST and (subject is not None or artifact_type is not None):
        raise OCIFormatError("a Docker manifest list cannot have a subject or artifactType")
    return Index(kind, manifests, subject, artifact_type, annotations)


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest:
    """An image manifest from ``data``, served (or described) as ``media_type``."""
    obj = _load(data, "manifest")
    return _as_manifest(obj, _declared(obj, media_type, "manifest"))


def parse_index(data: bytes, media_type: str | None = None) -> Index:
    """An image index or manifest list from ``data``, served as ``media_type``."""
    obj = _load(data, "index")
    return _as_index(obj, _declared(obj, media_type, "index"))


def parse(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """A manifest or an index, whichever ``data`` is (by its media type, else its shape)."""
    obj = _load(data, "manifest")
    kind = _declared(obj, media_type, "manifest")
    if kind in MANIFEST_MEDIA_TYPES:
        return _as_manifest(obj, kind)
    if kind in INDEX_MEDIA_TYPES:
        return _as_index(obj, kind)
    if kind is not None:
        raise UnsupportedMediaTypeError(
            f"{_show(kind)} is neither an image manifest nor an index media type"
        )
    has_index = "manifests" in obj
    has_manifest = "config" in obj or "layers" in obj
    if has_index and has_manifest:
        raise OCIFormatError("the document has both manifests and config/layers: ambiguous")
    if has_index:
        return _as_index(obj, None)
    if has_manifest:
        return _as_manifest(obj, None)
    raise OCIFormatError("the document has neither a config and layers nor manifests")


# --------------------------------------------------------------------------- selection


def select_platform(index: Index, platform: Platform | str | None = None) -> Descriptor:
    """The first manifest of ``index`` for ``platform`` (default: linux/amd64, as docker).

    Entries are compared by :meth:`Platform.matches`; entries without a platform
    or whose media type is not an image manifest (attestations, say) are skipped.
    """
    wanted = DEFAULT_PLATFORM if platform is None else (
        parse_platform(platform) if isinstance(platform, str) else platform)
    for entry in index.manifests:
        if entry.platform is None:
            continue
        if entry.media_type not in MANIFEST_MEDIA_TYPES and entry.media_type not in \
                INDEX_MEDIA_TYPES:
            continue
        if entry.platform.matches(wanted):
            return entry
    available = sorted({str(e.platform) for e in index.manifests if e.platform is not None})
    raise PlatformNotFoundError(
        f"the index has no manifest for {wanted}"
        + (f" (it has: {', '.join(available)})" if available else " (no entry names a platform)"),
        advice="choose one of the platforms it has" if available else None,
    )
