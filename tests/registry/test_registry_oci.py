"""countersign.registry.oci: digests, descriptors, manifests, indexes, platforms."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.errors import CountersignError, FormatError
from countersign.registry import oci

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"


def descriptor(media_type: str = oci.OCI_LAYER_GZIP, data: bytes = b"layer",
               **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": oci.digest_of(data), "size": len(data), **extra}


def manifest_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": descriptor(oci.OCI_CONFIG, b"{}"),
        "layers": [descriptor(), descriptor(oci.OCI_LAYER_ZSTD, b"other")],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def index_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            descriptor(oci.OCI_MANIFEST, b"arm", platform={"os": "linux",
                                                          "architecture": "arm64",
                                                          "variant": "v8"}),
            descriptor(oci.OCI_MANIFEST, b"amd", platform={"os": "linux",
                                                          "architecture": "amd64"}),
            descriptor(oci.OCI_MANIFEST, b"att", platform={"os": "unknown",
                                                          "architecture": "unknown"}),
        ],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- digests


def test_digest_of_and_parse_digest() -> None:
    digest = oci.digest_of(b"")
    assert digest == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert oci.parse_digest(str(digest)) == digest
    assert digest.algorithm == "sha256"
    assert digest.hex == digest[7:]
    assert digest.tag == "sha256-" + digest.hex
    assert isinstance(oci.parse_digest(DIGEST), oci.Digest)


@pytest.mark.parametrize("text", [
    "", "sha256", "sha256:", f"sha256:{HEX}\n", f" sha256:{HEX}", f"SHA256:{HEX}",
    f"sha256:{HEX.upper()}", f"sha256:{HEX[:-1]}", f"sha256:{HEX}a", "sha256:" + "g" * 64,
    f"sha256::{HEX}", "md5", ":" + HEX, f"sha256:{HEX}/x", "sha256:" + "٣" * 64,
])
def test_invalid_digests(text: str) -> None:
    with pytest.raises(oci.InvalidDigestError):
        oci.parse_digest(text)


@pytest.mark.parametrize("text", ["sha512:" + "a" * 128, "blake3:" + HEX, "sha384:abc",
                                  "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"])
def test_other_algorithms_are_refused_clearly(text: str) -> None:
    with pytest.raises(oci.UnsupportedDigestError, match="sha256 digests only"):
        oci.parse_digest(text)


def test_non_string_digest() -> None:
    with pytest.raises(oci.InvalidDigestError, match="must be a string"):
        oci.parse_digest(12)


# --------------------------------------------------------------------------- media types


def test_layer_compressions() -> None:
    assert oci.layer_compression(oci.OCI_LAYER) is oci.Compression.NONE
    assert oci.layer_compression(oci.OCI_LAYER_GZIP) is oci.Compression.GZIP
    assert oci.layer_compression(oci.OCI_LAYER_ZSTD) is oci.Compression.ZSTD
    assert oci.layer_compression(oci.DOCKER_LAYER_GZIP) is oci.Compression.GZIP
    assert oci.layer_compression(oci.DOCKER_LAYER_ZSTD) is oci.Compression.ZSTD
    assert oci.layer_compression(oci.DOCKER_LAYER) is oci.Compression.NONE
    assert oci.layer_compression(oci.DOCKER_FOREIGN_LAYER_GZIP) is oci.Compression.GZIP
    assert oci.is_layer(oci.OCI_LAYER_NONDISTRIBUTABLE_ZSTD)
    assert not oci.is_layer(oci.OCI_CONFIG)
    with pytest.raises(oci.UnsupportedMediaTypeError):
        oci.layer_compression(oci.DOCKER_CONFIG)


def test_base_media_type() -> None:
    assert oci.base_media_type("Application/JSON; charset=utf-8") == "application/json"


# --------------------------------------------------------------------------- manifests


def test_parse_oci_manifest() -> None:
    doc = manifest_doc(annotations={"a": "b"}, artifactType="application/vnd.example+json",
                       subject=descriptor(oci.OCI_MANIFEST, b"subject"), unknown={"x": 1})
    manifest = oci.parse_manifest(dumps(doc), oci.OCI_MANIFEST)
    assert manifest.media_type == oci.OCI_MANIFEST
    assert manifest.config.media_type == oci.OCI_CONFIG
    assert [d.media_type for d in manifest.layers] == [oci.OCI_LAYER_GZIP, oci.OCI_LAYER_ZSTD]
    assert manifest.blobs == (manifest.config, *manifest.layers)
    assert manifest.subject is not None and manifest.subject.digest == oci.digest_of(b"subject")
    assert manifest.artifact_type == "application/vnd.example+json"
    assert manifest.annotations == {"a": "b"}
    assert oci.parse(dumps(doc)) == manifest


def test_manifest_round_trip() -> None:
    manifest = oci.parse_manifest(dumps(manifest_doc()))
    assert oci.parse_manifest(oci.encode(manifest)) == manifest
    assert oci.parse_manifest(oci.encode(manifest, indent=2)) == manifest


def test_media_type_from_content_type_when_the_field_is_absent() -> None:
    manifest = oci.parse_manifest(dumps(manifest_doc(mediaType=None)),
                                  "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
    assert manifest.media_type == oci.OCI_MANIFEST
    assert oci.parse_manifest(dumps(manifest_doc(mediaType=None))).media_type == oci.OCI_MANIFEST


def test_docker_manifest_needs_its_media_type_field() -> None:
    doc = manifest_doc(mediaType=oci.DOCKER_MANIFEST)
    assert oci.parse_manifest(dumps(doc)).media_type == oci.DOCKER_MANIFEST
    with pytest.raises(oci.OCIFormatError, match="must state its mediaType"):
        oci.parse_manifest(dumps(manifest_doc(mediaType=None)), oci.DOCKER_MANIFEST)


def test_served_type_must_agree_with_the_field() -> None:
    with pytest.raises(oci.OCIFormatError, match="served as"):
        oci.parse_manifest(dumps(manifest_doc()), oci.DOCKER_MANIFEST)


def test_schema1_is_refused() -> None:
    with pytest.raises(oci.UnsupportedMediaTypeError, match="schema 1"):
        oci.parse(dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST_V1_SIGNED}))
    with pytest.raises(oci.OCIFormatError):
        oci.parse(b'{"schemaVersion": 1, "name": "x", "fsLayers": []}')


@pytest.mark.parametrize(("doc", "message"), [
    (manifest_doc(schemaVersion=1), "schemaVersion"),
    (manifest_doc(schemaVersion=True), "schemaVersion"),
    (manifest_doc(schemaVersion=2.0), "schemaVersion"),
    (manifest_doc(config=None), "no config"),
    (manifest_doc(layers=None), "layers"),
    (manifest_doc(layers={}), "layers"),
    (manifest_doc(manifests=[]), "ambiguous"),
    (manifest_doc(mediaType=oci.OCI_INDEX), "not an image manifest"),
    (manifest_doc(mediaType="not a type"), "not a media type"),
    (manifest_doc(config=descriptor(size=-1)), "size"),
    (manifest_doc(config={**descriptor(), "size": True}), "size"),
    (manifest_doc(config={**descriptor(), "size": 1.0}), "size"),
    (manifest_doc(config={**descriptor(), "size": 2**63}), "size"),
    (manifest_doc(config={**descriptor(), "digest": "sha256:abc"}), "sha256"),
    (manifest_doc(config={**descriptor(), "digest": "sha512:" + "a" * 128}), "sha256"),
    (manifest_doc(config={**descriptor(), "mediaType": 3}), "media type"),
    (manifest_doc(config={**descriptor(), "urls": "http://x"}), "urls"),
    (manifest_doc(config={**descriptor(), "annotations": {"a": 1}}), "annotations"),
    (manifest_doc(config={**descriptor(), "data": "!!"}), "base64"),
    (manifest_doc(config={**descriptor(data=b"abc"), "data": base64.b64encode(b"abd").decode()}),
     "does not match"),
    (manifest_doc(config={**descriptor(), "platform": {"os": "linux"}}), "platform"),
    (manifest_doc(config=[]), "not a JSON object"),
    (manifest_doc(MediaType=oci.DOCKER_MANIFEST), "only in case"),
    (manifest_doc(config={**descriptor(), "Digest": DIGEST}), "only in case"),
    (manifest_doc(mediaType=oci.DOCKER_MANIFEST,
                  subject=descriptor(oci.OCI_MANIFEST)), "cannot have a subject"),
])
def test_malformed_manifests(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(oci.OCIFormatError, match=message):
        oci.parse_manifest(dumps(doc))


@pytest.mark.parametrize("data", [
    b"", b"null", b"[]", b"\xff", b"{", b'{"schemaVersion": NaN}',
    b'{"schemaVersion": 2, "schemaVersion": 2}', b"\xef\xbb\xbf{}", b"[" * 100_000,
])
def test_not_json_objects(data: bytes) -> None:
    with pytest.raises(oci.OCIFormatError):
        oci.parse(data)


def test_lone_surrogates_are_refused() -> None:
    text = dumps(manifest_doc(annotations={"a": "b"})).replace(b'"b"', b'"\\ud800"')
    with pytest.raises(oci.OCIFormatError, match="lone surrogate"):
        oci.parse_manifest(text)
    key = dumps(manifest_doc(annotations={"a": "b"})).replace(b'"a"', b'"\\udfff"')
    with pytest.raises(oci.OCIFormatError, match="lone surrogate"):
        oci.parse(key)
    paired = dumps(manifest_doc(annotations={"a": "\U0001F600"}))
    assert oci.parse_manifest(paired).annotations == {"a": "\U0001F600"}


def test_duplicate_keys_in_a_descriptor() -> None:
    text = dumps(manifest_doc()).replace(b'"size": 2', b'"size": 2, "size": 3', 1)
    with pytest.raises(oci.OCIFormatError, match="strict"):
        oci.parse_manifest(text)


def test_size_bound() -> None:
    doc = manifest_doc(annotations={"pad": "x" * oci.MAX_MANIFEST_SIZE})
    with pytest.raises(oci.ManifestSizeError, match="more than the 4194304"):
        oci.parse_manifest(dumps(doc))
    exact = dumps(manifest_doc(annotations={"pad": ""}))
    padded = exact.replace(b'"pad": ""', b'"pad": "' + b"x" * (oci.MAX_MANIFEST_SIZE
                                                                - len(exact)) + b'"')
    assert len(padded) == oci.MAX_MANIFEST_SIZE
    oci.parse_manifest(padded)


def test_embedded_data_is_checked() -> None:
    doc = manifest_doc(config={**descriptor(oci.OCI_EMPTY, b"{}"), "data": "e30="})
    assert oci.parse_manifest(dumps(doc)).config.data == b"{}"
    assert oci.parse_manifest(oci.encode(oci.parse_manifest(dumps(doc)))).config.data == b"{}"


def test_empty_layers_allowed_for_artifacts() -> None:
    assert oci.parse_manifest(dumps(manifest_doc(layers=[]))).layers == ()


# --------------------------------------------------------------------------- indexes


def test_parse_index() -> None:
    index = oci.parse_index(dumps(index_doc()), oci.OCI_INDEX)
    assert index.media_type == oci.OCI_INDEX
    assert [str(d.platform) for d in index.manifests] == ["linux/arm64/v8", "linux/amd64",
                                                           "unknown/unknown"]
    assert oci.parse(dumps(index_doc())) == index
    assert oci.parse_index(oci.encode(index)) == index
    docker = oci.parse_index(dumps(index_doc(mediaType=oci.DOCKER_MANIFEST_LIST)))
    assert docker.media_type == oci.DOCKER_MANIFEST_LIST


@pytest.mark.parametrize(("doc", "message"), [
    (index_doc(manifests=None), "not an array"),
    (index_doc(layers=[]), "ambiguous"),
    (index_doc(mediaType=oci.OCI_MANIFEST), "not an index"),
    (index_doc(manifests=[descriptor(platform={"architecture": "amd64"})]), "os"),
    (index_doc(manifests=[descriptor(platform={"os": "linux", "architecture": ""})]),
     "architecture"),
    (index_doc(manifests=[descriptor(platform={"os": "l", "architecture": "a",
                                               "os.features": "x"})]), "os.features"),
    (index_doc(mediaType=None), None),
])
def test_malformed_indexes(doc: dict[str, Any], message: str | None) -> None:
    if message is None:  # no mediaType: OCI by default
        assert oci.parse_index(dumps(doc)).media_type == oci.OCI_INDEX
        with pytest.raises(oci.OCIFormatError, match="must state"):
            oci.parse_index(dumps(doc), oci.DOCKER_MANIFEST_LIST)
        return
    with pytest.raises(oci.OCIFormatError, match=message):
        oci.parse_index(dumps(doc))


def test_shape_decides_without_a_media_type() -> None:
    both = {**manifest_doc(mediaType=None), "manifests": []}
    with pytest.raises(oci.OCIFormatError, match="ambiguous"):
        oci.parse(dumps(both))
    with pytest.raises(oci.OCIFormatError, match="neither"):
        oci.parse(dumps({"schemaVersion": 2}))
    with pytest.raises(oci.UnsupportedMediaTypeError):
        oci.parse(dumps({"schemaVersion": 2, "mediaType": "application/json"}))


# --------------------------------------------------------------------------- platforms


def test_select_platform_defaults_to_linux_amd64() -> None:
    index = oci.parse_index(dumps(index_doc()))
    assert oci.select_platform(index).digest == oci.digest_of(b"amd")
    assert oci.select_platform(index, "linux/arm64").digest == oci.digest_of(b"arm")
    assert oci.select_platform(index, "linux/aarch64/v8").digest == oci.digest_of(b"arm")
    assert oci.select_platform(index, oci.Platform("linux", "x86_64")).digest == \
        oci.digest_of(b"amd")


def test_select_platform_missing() -> None:
    index = oci.parse_index(dumps(index_doc()))
    with pytest.raises(oci.PlatformNotFoundError, match=r"linux/s390x .*linux/amd64"):
        oci.select_platform(index, "linux/s390x")
    with pytest.raises(oci.PlatformNotFoundError, match="linux/arm64/v9"):
        oci.select_platform(index, "linux/arm64/v9")


def test_platform_variants_of_arm() -> None:
    entries = [descriptor(oci.OCI_MANIFEST, v.encode(),
                          platform={"os": "linux", "architecture": "arm", "variant": v})
               for v in ("v6", "v7")]
    index = oci.parse_index(dumps(index_doc(manifests=entries)))
    assert oci.select_platform(index, "linux/arm").digest == oci.digest_of(b"v7")
    assert oci.select_platform(index, "linux/arm/v6").digest == oci.digest_of(b"v6")
    assert oci.select_platform(index, "linux/armhf").digest == oci.digest_of(b"v7")


def test_select_skips_non_manifests() -> None:
    entries = [descriptor("application/vnd.example", b"x",
                          platform={"os": "linux", "architecture": "amd64"})]
    index = oci.parse_index(dumps(index_doc(manifests=entries)))
    with pytest.raises(oci.PlatformNotFoundError):
        oci.select_platform(index)


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"])
def test_bad_platform_strings(text: str) -> None:
    with pytest.raises(oci.OCIFormatError, match="os/arch"):
        oci.parse_platform(text)


# --------------------------------------------------------------------------- properties

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
_KEYS = st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests",
                         "subject", "artifactType", "annotations", "digest", "size", "urls",
                         "data", "platform", "os", "architecture", "variant", "MediaType"])
_VALUES = st.one_of(_JSON, st.text(st.characters(codec=None), max_size=5),
                    st.sampled_from([2, DIGEST, oci.OCI_MANIFEST, oci.OCI_INDEX,
                                     oci.DOCKER_MANIFEST, oci.OCI_LAYER_GZIP,
                                     "sha512:" + "a" * 128, "e30=", "\ud800"]))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid manifest or index with some values replaced, removed or added."""
    doc = draw(st.sampled_from([manifest_doc, index_doc]))()

    def mutate(node: Any, depth: int) -> Any:
        if isinstance(node, dict) and depth < 4:
            out = {}
            for key, value in node.items():
                choice = draw(st.integers(0, 39))
                if choice == 0:
                    continue
                out[key] = draw(_VALUES) if choice == 1 else mutate(value, depth + 1)
            if draw(st.integers(0, 9)) == 0:
                out[draw(_KEYS)] = draw(_VALUES)
            return out
        if isinstance(node, list) and depth < 4:
            return [mutate(v, depth + 1) for v in node]
        return node

    return dumps(mutate(doc, 0))


_INPUTS = st.one_of(st.binary(max_size=300), _JSON.map(dumps), _mutated(),
                    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
_MEDIA = st.one_of(st.none(), st.sampled_from([*oci.ALL_MANIFEST_MEDIA_TYPES,
                                               oci.DOCKER_MANIFEST_V1, "application/json",
                                               "", "x"]), st.text(max_size=30))


def _either(call: Any, *args: Any) -> object:
    try:
        return call(*args)
    except CountersignError as exc:
        assert isinstance(exc, FormatError)
        assert exc.message
        return exc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_INPUTS, media_type=_MEDIA)
def test_parsers_never_raise_anything_else(data: bytes, media_type: str | None) -> None:
    for parser in (oci.parse, oci.parse_manifest, oci.parse_index):
        result = _either(parser, data, media_type)
        if isinstance(result, (oci.Manifest, oci.Index)):
            # what parses re-encodes to something that parses to the same
            assert oci.parse(oci.encode(result), result.media_type) == result


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=80),
                      st.from_regex(r"[a-z0-9]{1,8}(\+[a-z]{1,4})?:[a-fA-F0-9=_-]{0,70}",
                                    fullmatch=True),
                      st.binary(min_size=0, max_size=64).map(lambda b: "sha256:" + b.hex()),
                      st.integers(), st.none()))
def test_digest_parser_never_raises_anything_else(text: object) -> None:
    result = _either(oci.parse_digest, text)
    if isinstance(result, oci.Digest):
        assert result.algorithm == "sha256" and len(result.hex) == 64
        assert oci.parse_digest(str(result)) == result


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40))
def test_platform_parser_never_raises_anything_else(text: str) -> None:
    result = _either(oci.parse_platform, text)
    if isinstance(result, oci.Platform):
        assert str(result.normalized())
