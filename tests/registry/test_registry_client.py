"""RegistryClient against the in-memory registry: every method and error path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from regimages import Image, build_artifact, build_image, noise

from countersign.client.http import Credentials
from countersign.registry import oci
from countersign.registry.client import (
    BlobUnknownError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestUnknownError,
    PushResult,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryLimitError,
    RegistryProtocolError,
    RegistryRejectedError,
    RegistryUnavailableError,
    RepositoryUnknownError,
)
from countersign.registry.memory import MemoryRegistry, TokenAuth

REPO = "team/app"


def push_image(client: RegistryClient, repo: str, image: Image, tag: str = "1.0", *,
               chunked: bool = False, chunk_size: int = 64 * 1024) -> oci.Digest:
    for descriptor, data in image.blobs():
        client.push_blob(repo, descriptor.digest, descriptor.size, data, chunked=chunked,
                         chunk_size=chunk_size)
    return client.put_manifest(repo, tag, image.manifest, image.media_type)


def calls(registry: MemoryRegistry, method: str, part: str = "") -> int:
    return sum(1 for r in registry.requests if r.method == method and part in r.url.path)


@pytest.fixture
def client(memory_registry: MemoryRegistry) -> Iterator[RegistryClient]:
    with memory_registry.client() as made:
        yield made


@pytest.fixture
def image() -> Image:
    return build_image("client")


# --------------------------------------------------------------------------- construction


def test_ping(client: RegistryClient) -> None:
    client.ping()


def test_ping_of_something_else(memory_registry: MemoryRegistry,
                                client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: r.url.path == "/v2/",
                              lambda r: httpx.Response(404, text="nothing here"))
    with pytest.raises(RegistryProtocolError, match="not an OCI distribution registry"):
        client.ping()


@pytest.mark.parametrize("registry", ["", "https://r.example", "r.example/path", "r:99999",
                                      "user@r.example", "r.example:0", "r example",
                                      "a" * 64 + ".example", "r..example"])
def test_invalid_registry_names(registry: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid registry") as caught:
        RegistryClient(registry)
    assert "host[:port]" in caught.value.render()


def test_plain_http_only_for_loopback() -> None:
    with pytest.raises(RegistryError, match=r"refusing plain HTTP to registry\.example\.com"):
        RegistryClient("registry.example.com", insecure=True)
    remote = RegistryClient("registry.example.com", insecure=True, allow_insecure_remote=True)
    assert str(remote.base_url) == "http://registry.example.com"
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000"):
        assert RegistryClient(host, insecure=True).base_url.scheme == "http"
    assert RegistryClient("127.0.0.1:5000").base_url.scheme == "https"
    assert str(RegistryClient("docker.io").base_url) == "https://registry-1.docker.io"


def test_ca_file_problems(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(RegistryError, match="no usable PEM"):
        RegistryClient("registry.example.com", ca_file=bad)


def test_invalid_names_and_references(client: RegistryClient) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid repository name"):
        client.get_manifest("Team/App", "1.0")
    with pytest.raises(InvalidReferenceError, match="invalid repository name"):
        client.tags("a//b")
    with pytest.raises(InvalidReferenceError, match="invalid tag"):
        client.get_manifest(REPO, "-bad")
    with pytest.raises(oci.InvalidDigestError):
        client.get_manifest(REPO, "sha256:1234")
    with pytest.raises(oci.UnsupportedDigestError, match="sha256 digests only"):
        client.blob_size(REPO, "sha512:" + "a" * 128)
    with pytest.raises(oci.InvalidDigestError):
        client.get_blob(REPO, "sha256:" + "A" * 64)


# --------------------------------------------------------------------------- push and pull


def test_push_and_pull_an_image(memory_registry: MemoryRegistry, client: RegistryClient,
                                image: Image) -> None:
    for descriptor, data in image.blobs():
        assert client.push_blob(REPO, descriptor.digest, descriptor.size, data) is \
            PushResult.UPLOADED
        assert client.push_blob(REPO, descriptor.digest, descriptor.size, data) is \
            PushResult.EXISTS
    digest = client.put_manifest(REPO, "1.0", image.manifest, image.media_type)
    assert digest == image.digest
    raw = client.get_manifest(REPO, "1.0")
    assert raw.data == image.manifest
    assert raw.media_type == oci.OCI_MANIFEST
    assert raw.digest_header == digest
    assert raw.digest == digest
    assert raw.reference == f"{memory_registry.host}/{REPO}:1.0"
    assert raw.verify(digest) is raw
    manifest = raw.parse()
    assert isinstance(manifest, oci.Manifest)
    for descriptor, data in image.blobs():
        assert client.blob_size(REPO, descriptor.digest) == descriptor.size
        assert client.get_blob(REPO, descriptor.digest, expected_size=descriptor.size) == data
    by_digest = client.get_manifest(REPO, digest)
    assert by_digest.data == image.manifest
    assert by_digest.reference.endswith(f"{REPO}@{digest}")
    head = client.head_manifest(REPO, "1.0")
    assert head is not None
    assert (head.media_type, head.size, head.digest_header) == (
        oci.OCI_MANIFEST, len(image.manifest), digest)
    assert client.head_manifest(REPO, "2.0") is None


def test_monolithic_upload_is_post_then_put(memory_registry: MemoryRegistry,
                                            client: RegistryClient) -> None:
    data = noise("mono", 5000)
    client.push_blob(REPO, oci.digest_of(data), len(data), data)
    assert calls(memory_registry, "POST", "/uploads") == 1
    assert calls(memory_registry, "PATCH") == 0
    put = next(r for r in memory_registry.requests if r.method == "PUT")
    assert put.headers["content-length"] == "5000"
    assert put.url.params["digest"] == oci.digest_of(data)
    assert "_state" in put.url.params  # the Location's query is kept
    assert memory_registry.blobs[oci.digest_of(data)] == data


def test_chunked_upload(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    data = noise("chunks", 10_000)
    digest = oci.digest_of(data)

    def source() -> Iterator[bytes]:  # uneven pieces: the client re-cuts them
        yield data[:1]
        yield data[1:7000]
        yield data[7000:]

    result = client.push_blob(REPO, digest, len(data), source, chunked=True, chunk_size=4096)
    assert result is PushResult.UPLOADED
    patches = [r for r in memory_registry.requests if r.method == "PATCH"]
    assert [r.headers["content-range"] for r in patches] == ["0-4095", "4096-8191",
                                                             "8192-9999"]
    assert all(r.headers["content-type"] == "application/octet-stream" for r in patches)
    final = next(r for r in memory_registry.requests if r.method == "PUT")
    assert final.content == b""
    assert memory_registry.blobs[digest] == data
    assert memory_registry.uploads == {}


def test_empty_blob_chunked(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    digest = oci.digest_of(b"")
    assert client.push_blob(REPO, digest, 0, b"", chunked=True) is PushResult.UPLOADED
    assert memory_registry.blobs[digest] == b""


def test_stale_upload_location_is_refused(memory_registry: MemoryRegistry) -> None:
    # the registry changes _state at every step; a client reusing an old Location fails
    data = noise("stale", 300)
    upload = httpx.Client(transport=memory_registry.transport(),
                          base_url=f"https://{memory_registry.host}")
    first = upload.post(f"/v2/{REPO}/blobs/uploads/")
    location = first.headers["location"]
    assert upload.patch(location, content=data[:100]).status_code == 202
    stale = upload.put(location, params={"digest": oci.digest_of(data)}, content=data[100:])
    assert stale.status_code == 400


def test_source_that_lies_is_stopped_before_its_last_bytes(memory_registry: MemoryRegistry,
                                                           client: RegistryClient) -> None:
    data = noise("liar", 9000)
    digest = oci.digest_of(data)
    other = noise("other", 9000)
    with pytest.raises(DigestMismatchError, match=f"content given for blob {digest}"):
        client.push_blob(REPO, digest, len(data), lambda: iter([other]), chunked=True,
                         chunk_size=4096)
    # 2 of 3 chunks were sent, the last withheld; the session was cancelled
    assert calls(memory_registry, "PATCH") == 2
    assert calls(memory_registry, "DELETE", "/uploads/") == 1
    assert digest not in memory_registry.blobs
    assert memory_registry.uploads == {}
    with pytest.raises(DigestMismatchError, match="does not match its digest and size"):
        client.push_blob(REPO, digest, len(data), lambda: iter([other]))
    assert digest not in memory_registry.blobs
    with pytest.raises(DigestMismatchError, match="longer than its size"):
        client.push_blob(REPO, digest, len(data), lambda: iter([data, b"x"]))


def test_bytes_source_is_checked_before_sending(memory_registry: MemoryRegistry,
                                                client: RegistryClient) -> None:
    with pytest.raises(DigestMismatchError, match="does not match"):
        client.push_blob(REPO, oci.digest_of(b"a"), 1, b"b")
    with pytest.raises(DigestMismatchError):
        client.push_blob(REPO, oci.digest_of(b"a"), 2, b"a")
    assert memory_registry.requests == []


def test_existing_blob_of_another_size(memory_registry: MemoryRegistry,
                                       client: RegistryClient) -> None:
    digest = memory_registry.add_blob(REPO, b"12345")
    with pytest.raises(DigestMismatchError, match="already has blob"):
        client.push_blob(REPO, digest, 4, lambda: iter([b"1234"]))


def test_cross_repository_mount(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    data = noise("mount", 3000)
    digest = memory_registry.add_blob("team/base", data)
    assert client.push_blob(REPO, digest, len(data), data, mount_from="team/base") is \
        PushResult.MOUNTED
    post = next(r for r in memory_registry.requests if r.method == "POST")
    assert post.url.params["mount"] == digest
    assert post.url.params["from"] == "team/base"
    assert calls(memory_registry, "PUT") == 0
    assert client.blob_size(REPO, digest) == len(data)


def test_mount_from_a_repository_without_the_blob_uploads(memory_registry: MemoryRegistry,
                                                          client: RegistryClient) -> None:
    data = noise("nomount", 3000)
    memory_registry.add_blob("team/base", b"something else")
    result = client.push_blob(REPO, oci.digest_of(data), len(data), data,
                              mount_from="team/base")
    assert result is PushResult.UPLOADED
    assert memory_registry.blobs[oci.digest_of(data)] == data


def test_manifest_referencing_a_missing_blob(client: RegistryClient, image: Image) -> None:
    with pytest.raises(BlobUnknownError, match="MANIFEST_BLOB_UNKNOWN") as caught:
        client.put_manifest(REPO, "1.0", image.manifest, image.media_type)
    assert caught.value.code == "MANIFEST_BLOB_UNKNOWN"


def test_put_manifest_by_digest(memory_registry: MemoryRegistry, client: RegistryClient,
                                image: Image) -> None:
    for _descriptor, data in image.blobs():
        memory_registry.add_blob(REPO, data)
    assert client.put_manifest(REPO, image.digest, image.manifest, image.media_type) == \
        image.digest
    assert client.tags(REPO) == []
    with pytest.raises(DigestMismatchError, match="not the sha256:"):
        client.put_manifest(REPO, oci.digest_of(b"x"), image.manifest, image.media_type)


def test_put_manifest_too_large(client: RegistryClient) -> None:
    with pytest.raises(RegistryLimitError, match="more than the 4194304"):
        client.put_manifest(REPO, "big", b" " * (oci.MAX_MANIFEST_SIZE + 1), oci.OCI_MANIFEST)


def test_registry_that_rewrites_a_manifest(memory_registry: MemoryRegistry,
                                           client: RegistryClient) -> None:
    memory_registry.intercept(
        lambda r: r.method == "PUT" and "/manifests/" in r.url.path,
        lambda r: httpx.Response(201, headers={"docker-content-digest": oci.digest_of(b"x")}))
    with pytest.raises(DigestMismatchError, match="stored it as sha256:"):
        client.put_manifest(REPO, "1.0", b"{}", oci.OCI_MANIFEST)


def test_invalid_manifest_is_rejected_with_its_code(client: RegistryClient) -> None:
    with pytest.raises(RegistryRejectedError, match="MANIFEST_INVALID") as caught:
        client.put_manifest(REPO, "1.0", b'{"schemaVersion": 1}', oci.OCI_MANIFEST)
    assert caught.value.code == "MANIFEST_INVALID"
    assert caught.value.status == 400
    assert caught.value.repository == REPO


# --------------------------------------------------------------------------- unknown things


def test_unknown_manifest(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    memory_registry.add_blob(REPO, b"x")
    with pytest.raises(ManifestUnknownError, match=f"{REPO}:nope is unknown") as caught:
        client.get_manifest(REPO, "nope")
    assert caught.value.code == "MANIFEST_UNKNOWN"
    assert caught.value.reference == "nope"
    assert "hint:" in caught.value.render()
    digest = oci.digest_of(b"none")
    with pytest.raises(ManifestUnknownError, match=f"{REPO}@{digest}"):
        client.get_manifest(REPO, digest)


def test_unknown_repository(client: RegistryClient) -> None:
    with pytest.raises(RepositoryUnknownError, match=r"repository .*/nobody/here is unknown"):
        client.get_manifest("nobody/here", "1.0")
    with pytest.raises(RepositoryUnknownError, match="NAME_UNKNOWN"):
        client.tags("nobody/here")


def test_unknown_blob(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    memory_registry.add_blob(REPO, b"x")
    digest = oci.digest_of(b"missing")
    assert client.blob_size(REPO, digest) is None
    with pytest.raises(BlobUnknownError, match=f"blob {digest} is unknown") as caught:
        client.get_blob(REPO, digest)
    assert caught.value.code == "BLOB_UNKNOWN"
    with pytest.raises(BlobUnknownError), client.stream_blob(REPO, digest):
        pass


def test_accept_header_is_honoured(memory_registry: MemoryRegistry,
                                   client: RegistryClient) -> None:
    index = oci.encode(oci.Index(oci.OCI_INDEX, ()))
    memory_registry.add_manifest(REPO, index, oci.OCI_INDEX, tag="multi")
    assert client.get_manifest(REPO, "multi").media_type == oci.OCI_INDEX
    with pytest.raises(ManifestUnknownError, match="accept header"):
        client.get_manifest(REPO, "multi", accept=(oci.DOCKER_MANIFEST,))
    sent = memory_registry.requests[0].headers["accept"]
    assert sent.split(", ") == list(oci.ALL_MANIFEST_MEDIA_TYPES)


# --------------------------------------------------------------------------- tampering


def test_tampered_blob_is_detected_and_never_complete(memory_registry: MemoryRegistry,
                                                      client: RegistryClient) -> None:
    data = noise("tamper", 5 * 1024)
    digest = memory_registry.add_blob(REPO, data)
    memory_registry.tamper_blob(digest, noise("evil", 5 * 1024))
    received: list[bytes] = []
    with pytest.raises(DigestMismatchError, match=f"blob {digest} .* does not match") as caught, \
            client.stream_blob(REPO, digest, expected_size=len(data),
                               chunk_size=1024) as chunks:
        received.extend(chunks)
    assert caught.value.reference == digest
    assert sum(map(len, received)) == 4 * 1024  # the last chunk was held back
    with pytest.raises(DigestMismatchError, match=digest):
        client.get_blob(REPO, digest)


def test_tampered_blob_of_another_size(memory_registry: MemoryRegistry,
                                       client: RegistryClient) -> None:
    data = noise("size", 4096)
    digest = memory_registry.add_blob(REPO, data)
    memory_registry.tamper_blob(digest, data + b"more")
    with pytest.raises(DigestMismatchError, match="announced as 4100 bytes, not the 4096"):
        client.get_blob(REPO, digest, expected_size=4096)
    memory_registry.tamper_blob(digest, data[:-1])
    with pytest.raises(DigestMismatchError, match="announced as 4095"):
        client.get_blob(REPO, digest, expected_size=4096)
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        client.get_blob(REPO, digest)


def test_body_longer_than_expected_without_content_length(memory_registry: MemoryRegistry,
                                                          client: RegistryClient) -> None:
    data = noise("endless", 2048)
    digest = memory_registry.add_blob(REPO, data)
    served: list[int] = []

    def endless() -> Iterator[bytes]:
        for _ in range(1000):
            served.append(1)
            yield b"x" * 1024

    memory_registry.intercept(lambda r: r.url.path.endswith(digest) and r.method == "GET",
                              lambda r: httpx.Response(200, content=endless()))
    with pytest.raises(DigestMismatchError, match="longer than the 2048 bytes expected"):
        client.get_blob(REPO, digest, expected_size=2048)
    assert len(served) < 10
    with pytest.raises(RegistryLimitError, match="longer than the 4096 bytes allowed"):
        client.get_blob(REPO, digest, max_size=4096)


def test_encoded_blob_is_refused(memory_registry: MemoryRegistry,
                                 client: RegistryClient) -> None:
    digest = memory_registry.add_blob(REPO, b"data")
    memory_registry.intercept(
        lambda r: r.url.path.endswith(digest),
        lambda r: httpx.Response(200, content=iter([b"data"]),
                                 headers={"content-encoding": "gzip"}))
    with pytest.raises(RegistryProtocolError, match="gzip-encoded"):
        client.get_blob(REPO, digest)


def test_tampered_manifest_is_returned_as_served(memory_registry: MemoryRegistry,
                                                 client: RegistryClient, image: Image) -> None:
    digest = push_image(client, REPO, image)
    evil = image.manifest.replace(b'"layers"', b'"layers" ', 1)
    assert evil != image.manifest
    memory_registry.tamper_manifest(REPO, digest, evil)
    raw = client.get_manifest(REPO, digest)
    assert raw.data == evil
    assert raw.digest_header == digest  # the header lies; the bytes tell
    with pytest.raises(DigestMismatchError, match=f"does not match the digest {digest}"):
        raw.verify(digest)


def test_tag_answered_with_another_manifest(memory_registry: MemoryRegistry,
                                            client: RegistryClient, image: Image) -> None:
    digest = push_image(client, REPO, image)
    other = build_image("other")
    memory_registry.answer_tag(REPO, "1.0", other.manifest, other.media_type)
    raw = client.get_manifest(REPO, "1.0")
    assert raw.data == other.manifest
    with pytest.raises(DigestMismatchError):
        raw.verify(digest)


def test_oversize_manifest(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    big = b"{" + b" " * oci.MAX_MANIFEST_SIZE + b"}"
    memory_registry.answer_tag(REPO, "big", big, oci.OCI_MANIFEST)
    with pytest.raises(RegistryLimitError, match="manifest is 4194306 bytes"):
        client.get_manifest(REPO, "big")

    def streamed() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * (1 << 20)

    memory_registry.intercept(lambda r: r.url.path.endswith("/stream"),
                              lambda r: httpx.Response(200, content=streamed()))
    with pytest.raises(RegistryLimitError, match="longer than the 4194304 bytes"):
        client.get_manifest(REPO, "stream")


# --------------------------------------------------------------------------- tags


def test_tags_follow_pagination(client: RegistryClient, image: Image) -> None:
    registry = MemoryRegistry(page_size=2)
    with registry.client() as paged:
        push_image(paged, REPO, image, "a")
        for tag in ("e", "b", "d", "c"):
            paged.put_manifest(REPO, tag, image.manifest, image.media_type)
        registry.requests.clear()
        assert paged.tags(REPO) == ["a", "b", "c", "d", "e"]
        assert calls(registry, "GET", "/tags/list") == 3
        registry.requests.clear()
        assert paged.tags(REPO, page_size=1) == ["a", "b", "c", "d", "e"]
        assert calls(registry, "GET", "/tags/list") == 5
        assert registry.requests[0].url.params["n"] == "1"


def test_tags_without_pagination(memory_registry: MemoryRegistry, client: RegistryClient,
                                 image: Image) -> None:
    push_image(client, REPO, image, "only")
    assert client.tags(REPO) == ["only"]


def _link(target: str) -> httpx.Response:
    return httpx.Response(200, json={"name": REPO, "tags": ["x"]},
                          headers={"link": f'<{target}>; rel="next"'})


def test_tags_pagination_loop(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: "/tags/list" in r.url.path,
                              lambda r: _link(f"/v2/{REPO}/tags/list?last=x"))
    with pytest.raises(RegistryProtocolError, match="loop"):
        client.tags(REPO)


def test_tags_pagination_to_another_host(memory_registry: MemoryRegistry,
                                         client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: "/tags/list" in r.url.path,
                              lambda r: _link("https://evil.example/v2/x/tags/list"))
    with pytest.raises(RegistryProtocolError, match="another host"):
        client.tags(REPO)


@pytest.mark.parametrize("body", [{"tags": "x"}, {"tags": [1]}, {"tags": ["bad tag"]}, []])
def test_bad_tag_lists(memory_registry: MemoryRegistry, client: RegistryClient,
                       body: object) -> None:
    memory_registry.intercept(lambda r: "/tags/list" in r.url.path,
                              lambda r: httpx.Response(200, json=body))
    with pytest.raises(RegistryProtocolError):
        client.tags(REPO)


def test_null_tags(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: "/tags/list" in r.url.path,
                              lambda r: httpx.Response(200, json={"name": REPO, "tags": None}))
    assert client.tags(REPO) == []


# --------------------------------------------------------------------------- referrers


def _push_referrers(client: RegistryClient, image: Image) -> list[oci.Digest]:
    push_image(client, REPO, image)
    pushed = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig",
                 "application/vnd.example.sbom"):
        manifest, blobs = build_artifact(image.manifest, image.media_type, kind,
                                         f"{kind} {len(pushed)}".encode())
        for descriptor, data in blobs:
            client.push_blob(REPO, descriptor.digest, descriptor.size, data)
        pushed.append(client.put_manifest(REPO, oci.digest_of(manifest), manifest,
                                          oci.OCI_MANIFEST))
    return pushed


@pytest.mark.parametrize("api", [True, False])
def test_referrers(api: bool, image: Image) -> None:
    registry = MemoryRegistry(referrers_api=api)
    with registry.client() as client:
        pushed = _push_referrers(client, image)
        found = client.referrers(REPO, image.digest)
        assert sorted(d.digest for d in found) == sorted(pushed)
        assert {d.artifact_type for d in found} == {"application/vnd.example.sbom",
                                                    "application/vnd.example.sig"}
        assert all(d.media_type == oci.OCI_MANIFEST for d in found)
        assert all(d.annotations.get("org.example.kind") == d.artifact_type for d in found)
        sboms = client.referrers(REPO, image.digest, "application/vnd.example.sbom")
        assert sorted(d.digest for d in sboms) == sorted([pushed[0], pushed[2]])
        assert client.referrers(REPO, oci.digest_of(b"no subject")) == []
        tags = client.tags(REPO)
        if api:  # the registry said OCI-Subject: no fallback tag was written
            assert tags == ["1.0"]
        else:
            assert tags == ["1.0", image.digest.tag]
            raw = client.get_manifest(REPO, image.digest.tag)
            assert raw.media_type == oci.OCI_INDEX


def test_referrers_pagination(image: Image) -> None:
    registry = MemoryRegistry(page_size=1)
    with registry.client() as client:
        pushed = _push_referrers(client, image)
        registry.requests.clear()
        assert sorted(d.digest for d in client.referrers(REPO, image.digest)) == sorted(pushed)
        assert calls(registry, "GET", "/referrers/") == 3


def test_referrers_answer_must_be_an_index(memory_registry: MemoryRegistry,
                                           client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: "/referrers/" in r.url.path,
                              lambda r: httpx.Response(200, json={"manifests": []},
                                                       headers={"content-type":
                                                                "application/json"}))
    with pytest.raises(RegistryProtocolError, match="no OCI index"):
        client.referrers(REPO, oci.digest_of(b"x"))


# --------------------------------------------------------------------------- retries


def test_retries_on_503_then_success(memory_registry: MemoryRegistry, image: Image) -> None:
    waits: list[float] = []
    with memory_registry.client(sleep=waits.append, backoff=0.25) as client:
        push_image(client, REPO, image)
        memory_registry.requests.clear()
        memory_registry.fail_next(2, 503)
        assert client.get_manifest(REPO, "1.0").data == image.manifest
    assert len(memory_registry.requests) == 3
    assert waits == [0.25, 0.5]


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_retried_statuses(memory_registry: MemoryRegistry, client: RegistryClient,
                                image: Image, status: int) -> None:
    push_image(client, REPO, image)
    memory_registry.requests.clear()
    memory_registry.fail_next(1, status)
    client.get_manifest(REPO, "1.0")
    assert len(memory_registry.requests) == 2


def test_retry_after_is_honoured(memory_registry: MemoryRegistry, image: Image) -> None:
    waits: list[float] = []
    with memory_registry.client(sleep=waits.append) as client:
        push_image(client, REPO, image)
        memory_registry.fail_next(1, 429, retry_after="7")
        client.get_manifest(REPO, "1.0")
        memory_registry.fail_next(1, 429, retry_after="100000")
        client.get_manifest(REPO, "1.0")
    assert waits == [7.0, 30.0]


def test_retries_run_out(memory_registry: MemoryRegistry, client: RegistryClient,
                         image: Image) -> None:
    push_image(client, REPO, image)
    memory_registry.requests.clear()
    memory_registry.fail_next(3, 503)
    with pytest.raises(RegistryUnavailableError, match="HTTP 503") as caught:
        client.get_manifest(REPO, "1.0")
    assert caught.value.status == 503
    assert len(memory_registry.requests) == 3


def test_dropped_connections_are_retried(memory_registry: MemoryRegistry,
                                         client: RegistryClient, image: Image) -> None:
    push_image(client, REPO, image)
    memory_registry.fail_next(2, None)
    assert client.get_manifest(REPO, "1.0").data == image.manifest
    memory_registry.fail_next(3, None)
    with pytest.raises(RegistryUnavailableError, match="cannot connect"):
        client.get_manifest(REPO, "1.0")


@pytest.mark.parametrize(("status", "error"), [(404, ManifestUnknownError),
                                               (400, RegistryRejectedError),
                                               (403, RegistryAuthError),
                                               (500, RegistryUnavailableError)])
def test_no_retry_on_other_statuses(memory_registry: MemoryRegistry, client: RegistryClient,
                                    status: int, error: type[RegistryError]) -> None:
    memory_registry.fail_next(1, status)
    with pytest.raises(error):
        client.get_manifest(REPO, "1.0")
    assert len(memory_registry.requests) == 1


def test_no_retries_when_asked(memory_registry: MemoryRegistry) -> None:
    with memory_registry.client(retries=0) as client:
        memory_registry.fail_next(1, 503)
        with pytest.raises(RegistryUnavailableError):
            client.tags(REPO)
    assert len(memory_registry.requests) == 1


def test_failed_upload_step_restarts_the_upload(memory_registry: MemoryRegistry,
                                                client: RegistryClient) -> None:
    data = noise("restart", 10_000)
    digest = oci.digest_of(data)
    memory_registry.fail_next(1, 503, method="PATCH")
    assert client.push_blob(REPO, digest, len(data), data, chunked=True, chunk_size=4096) is \
        PushResult.UPLOADED
    assert calls(memory_registry, "POST", "/uploads") == 2
    assert memory_registry.blobs[digest] == data
    memory_registry.fail_next(1, 502, method="PUT")
    other = noise("restart2", 100)
    client.push_blob(REPO, oci.digest_of(other), len(other), other)
    assert memory_registry.blobs[oci.digest_of(other)] == other


def test_registry_error_body_codes(memory_registry: MemoryRegistry,
                                   client: RegistryClient) -> None:
    body = {"errors": [{"code": "DENIED", "message": "requested access to the resource is "
                        "denied\x1b[31m", "detail": None}]}
    memory_registry.intercept(lambda r: True, lambda r: httpx.Response(403, json=body))
    with pytest.raises(RegistryAuthError, match="DENIED: requested access") as caught:
        client.tags(REPO)
    assert caught.value.code == "DENIED"
    assert "\x1b" not in caught.value.message


# --------------------------------------------------------------------------- auth


def _auth_registry(**grants: object) -> MemoryRegistry:
    return MemoryRegistry(auth=TokenAuth(
        users={"alice": "secret"},
        grants={"alice": {"*": {"pull", "push"}}, None: {"public/app": {"pull"}},
                "bob": {"team/app": {"pull"}}, **grants}))  # type: ignore[dict-item]


def test_token_flow_pull_and_push(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "secret")) as client:
        client.ping()
        push_image(client, REPO, image)
        assert client.get_manifest(REPO, "1.0").data == image.manifest
        assert client.tags(REPO) == ["1.0"]
    scopes = [s for _, s in registry.token_requests]
    assert scopes == [(f"repository:{REPO}:pull,push",), (f"repository:{REPO}:pull",)]
    assert all(user == "alice" for user, _ in registry.token_requests)
    token_call = next(r for r in registry.requests if r.url.host == "auth.memory.test")
    assert token_call.url.params["service"] == "memory-registry"
    assert token_call.headers["authorization"].startswith("Basic ")


def test_token_flow_without_ping(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "secret")) as client:
        push_image(client, REPO, image)
    first = registry.requests[0]
    assert "authorization" not in first.headers  # the 401 taught the realm
    assert registry.requests[1].url.host == "auth.memory.test"
    assert len(registry.token_requests) == 1


def test_anonymous_pull_of_a_public_repository(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "secret")) as alice:
        push_image(alice, "public/app", image)
    with registry.client() as anonymous:
        assert anonymous.get_manifest("public/app", "1.0").data == image.manifest
        with pytest.raises(RegistryAuthError, match="refused the credentials"):
            anonymous.push_blob("public/app", oci.digest_of(b"x"), 1, b"x")
        with pytest.raises(RegistryAuthError):
            anonymous.get_manifest(REPO, "1.0")
    assert registry.token_requests[-1][0] is None


def test_insufficient_scope(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "secret")) as alice:
        push_image(alice, REPO, image)
    with registry.client(credentials=Credentials("bob", "")) as bob, \
            pytest.raises(RegistryAuthError, match=r"token service .* refused"):
        bob.get_manifest(REPO, "1.0")


def test_wrong_password(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "wrong")) as client, \
            pytest.raises(RegistryAuthError, match="refused the credentials for "
                          f"{registry.host} \\(HTTP 401\\)") as caught:
        client.tags(REPO)
    assert "docker login" in caught.value.render()


def test_push_without_push_grant(image: Image) -> None:
    registry = _auth_registry(carol={"team/app": {"pull"}})
    registry.auth.users = {"alice": "secret", "carol": "pw"}  # type: ignore[union-attr]
    with registry.client(credentials=Credentials("carol", "pw")) as client, \
            pytest.raises(RegistryAuthError, match="insufficient_scope"):
        client.push_blob(REPO, oci.digest_of(b"x"), 1, b"x")


def test_mount_asks_for_both_scopes(image: Image) -> None:
    registry = _auth_registry()
    data = noise("mount-auth", 100)
    digest = registry.add_blob("team/base", data)
    with registry.client(credentials=Credentials("alice", "secret")) as client:
        assert client.push_blob(REPO, digest, len(data), data, mount_from="team/base") is \
            PushResult.MOUNTED
    assert registry.token_requests[-1][1] == (f"repository:{REPO}:pull,push",
                                              "repository:team/base:pull")


def test_credentials_from_the_docker_config(tmp_path: Path, image: Image) -> None:
    registry = _auth_registry()
    import base64
    auth = base64.b64encode(b"alice:secret").decode()
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {f"https://{registry.host}": {"auth": auth}}}))
    credentials = Credentials(environ={"DOCKER_CONFIG": str(tmp_path)}, notary_auth=False)
    with registry.client(credentials=credentials) as client:
        push_image(client, REPO, image)
    assert registry.token_requests[0][0] == "alice"


def test_token_is_reused_until_it_expires(image: Image) -> None:
    registry = _auth_registry()
    with registry.client(credentials=Credentials("alice", "secret")) as client:
        push_image(client, REPO, image)
        for _ in range(3):
            client.get_manifest(REPO, "1.0")
        assert len(registry.token_requests) == 2
        registry._grants.clear()  # the registry forgets every token: a 401 again
        client.get_manifest(REPO, "1.0")
        assert len(registry.token_requests) == 3


def test_plain_http_token_realm_is_refused() -> None:
    registry = MemoryRegistry(auth=TokenAuth(realm="http://auth.example.com/token"))
    with registry.client(credentials=Credentials("alice", "secret")) as client, \
            pytest.raises(RegistryAuthError, match="not HTTPS"):
        client.tags(REPO)


def test_malformed_challenge(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: True, lambda r: httpx.Response(
        401, headers={"www-authenticate": 'Bearer realm=unquoted'}))
    with pytest.raises(RegistryAuthError, match="malformed WWW-Authenticate"):
        client.tags(REPO)


def test_401_without_a_challenge(memory_registry: MemoryRegistry,
                                 client: RegistryClient) -> None:
    memory_registry.intercept(lambda r: True, lambda r: httpx.Response(401))
    with pytest.raises(RegistryAuthError, match="without a challenge"):
        client.tags(REPO)


def test_basic_auth_registry(memory_registry: MemoryRegistry) -> None:
    seen: list[str | None] = []

    def basic(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") == "Basic YWxpY2U6c2VjcmV0":
            return httpx.Response(200, json={"name": REPO, "tags": ["v1"]})
        return httpx.Response(401, headers={"www-authenticate": 'Basic realm="registry"'})

    memory_registry.intercept(lambda r: True, basic)
    with memory_registry.client(credentials=Credentials("alice", "secret")) as client:
        assert client.tags(REPO) == ["v1"]
        assert client.tags(REPO) == ["v1"]
    assert seen == [None, "Basic YWxpY2U6c2VjcmV0", "Basic YWxpY2U6c2VjcmV0"]
    with memory_registry.client() as anonymous, \
            pytest.raises(RegistryAuthError, match="wants a username and password"):
        anonymous.tags(REPO)


def test_redirected_blobs_get_no_credentials(image: Image) -> None:
    registry = _auth_registry()
    registry.redirect_blobs = True
    with registry.client(credentials=Credentials("alice", "secret")) as client:
        push_image(client, REPO, image)
        for descriptor, data in image.blobs():
            assert client.blob_size(REPO, descriptor.digest) == descriptor.size
            assert client.get_blob(REPO, descriptor.digest, expected_size=descriptor.size) == \
                data
    assert registry.leaked_authorization == 0


def test_redirect_to_plain_http_is_refused(memory_registry: MemoryRegistry,
                                           client: RegistryClient) -> None:
    digest = memory_registry.add_blob(REPO, b"x")
    memory_registry.intercept(
        lambda r: r.url.path.endswith(digest),
        lambda r: httpx.Response(307, headers={"location": "http://cdn.example/blob"}))
    with pytest.raises(RegistryProtocolError, match="plain HTTP"):
        client.get_blob(REPO, digest)


def test_redirect_loop(memory_registry: MemoryRegistry, client: RegistryClient) -> None:
    digest = memory_registry.add_blob(REPO, b"x")
    memory_registry.intercept(
        lambda r: r.url.path.endswith(digest),
        lambda r: httpx.Response(302, headers={"location": r.url.path}))
    with pytest.raises(RegistryProtocolError, match="more than 5 redirects"):
        client.get_blob(REPO, digest)


def test_slow_manifest_hits_the_deadline(memory_registry: MemoryRegistry) -> None:
    import time

    def trickle() -> Iterator[bytes]:
        for _ in range(50):
            time.sleep(0.02)
            yield b" "

    memory_registry.intercept(lambda r: "/manifests/" in r.url.path,
                              lambda r: httpx.Response(200, content=trickle()))
    with memory_registry.client(deadline=0.1) as client, \
            pytest.raises(RegistryUnavailableError, match=r"took longer than 0\.1 s"):
        client.get_manifest(REPO, "slow")


def test_put_manifest_needs_a_media_type(client: RegistryClient) -> None:
    with pytest.raises(ValueError, match="invalid media type"):
        client.put_manifest(REPO, "1.0", b"{}", "application/json\r\nX-Evil: 1")
