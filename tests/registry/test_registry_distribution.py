"""RegistryClient against the real CNCF distribution 2.8 (Debian's docker-registry),
and interoperability with skopeo."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from regimages import Image, build_artifact, build_image, write_layout

from countersign.client.http import Credentials
from countersign.registry import oci
from countersign.registry.client import (
    BlobUnknownError,
    DigestMismatchError,
    ManifestUnknownError,
    PushResult,
    RegistryClient,
    RegistryRejectedError,
    RegistryUnavailableError,
    RepositoryUnknownError,
)

if TYPE_CHECKING:
    from registryserver import DockerRegistry

_counter = itertools.count(1)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository unique to the test (the registry is shared by the session)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return f"countersign/t{next(_counter)}-{name[:40].strip('-')}"


@pytest.fixture
def client(docker_registry: DockerRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(docker_registry.registry, insecure=True, timeout=30,
                        credentials=Credentials(notary_auth=False,
                                                docker_config=False)) as made:
        yield made


def push(client: RegistryClient, repo: str, image: Image, tag: str, *,
         chunked: bool = False) -> oci.Digest:
    for descriptor, data in image.blobs():
        result = client.push_blob(repo, descriptor.digest, descriptor.size, data,
                                  chunked=chunked, chunk_size=64 * 1024)
        assert result is PushResult.UPLOADED
    return client.put_manifest(repo, tag, image.manifest, image.media_type)


def pull_blob(client: RegistryClient, repo: str, descriptor: oci.Descriptor) -> bytes:
    with client.stream_blob(repo, descriptor.digest, expected_size=descriptor.size,
                            chunk_size=32 * 1024) as chunks:
        return b"".join(chunks)


def assert_pulled(client: RegistryClient, repo: str, tag: str, image: Image) -> None:
    raw = client.get_manifest(repo, tag)
    assert raw.data == image.manifest
    assert raw.media_type == image.media_type
    assert raw.digest_header == image.digest
    manifest = raw.verify(image.digest).parse()
    assert isinstance(manifest, oci.Manifest)
    assert [b.digest for b in manifest.blobs] == [d.digest for d, _ in image.blobs()]
    for descriptor, data in image.blobs():
        assert client.blob_size(repo, descriptor.digest) == descriptor.size
        assert pull_blob(client, repo, descriptor) == data


def test_ping(client: RegistryClient) -> None:
    client.ping()


def test_push_and_pull_monolithic(client: RegistryClient, repo: str) -> None:
    image = build_image("mono")
    assert push(client, repo, image, "1.0") == image.digest
    assert_pulled(client, repo, "1.0", image)
    assert_pulled(client, repo, image.digest, image)
    assert client.tags(repo) == ["1.0"]
    head = client.head_manifest(repo, "1.0")
    assert head is not None and head.size == len(image.manifest)
    for descriptor, data in image.blobs():  # a second push finds every blob
        assert client.push_blob(repo, descriptor.digest, descriptor.size, data) is \
            PushResult.EXISTS


def test_push_and_pull_chunked_docker_image(client: RegistryClient, repo: str) -> None:
    image = build_image("chunked", docker=True, sizes=(1000, 200_000, 150_000))
    push(client, repo, image, "v2", chunked=True)
    assert_pulled(client, repo, "v2", image)


def test_push_from_a_generator(client: RegistryClient, repo: str) -> None:
    data = os.urandom(300_000)
    digest = oci.digest_of(data)

    def source() -> Iterator[bytes]:
        for start in range(0, len(data), 10_000):
            yield data[start:start + 10_000]

    assert client.push_blob(repo, digest, len(data), source) is PushResult.UPLOADED
    assert client.get_blob(repo, digest, expected_size=len(data)) == data


def test_tags(client: RegistryClient, repo: str) -> None:
    image = build_image("tags", sizes=(100,))
    push(client, repo, image, "a")
    for tag in ("c", "b", "latest"):
        client.put_manifest(repo, tag, image.manifest, image.media_type)
    # distribution 2.8 ignores n and last: every tag comes at once, in no set order
    assert sorted(client.tags(repo, page_size=2)) == ["a", "b", "c", "latest"]


def test_corrupted_blob_on_disk_is_detected(docker_registry: DockerRegistry,
                                            client: RegistryClient, repo: str) -> None:
    image = build_image("corrupt", sizes=(1000, 120_000))
    push(client, repo, image, "1.0")
    layer = image.layer_descriptors[1]
    path = docker_registry.blob_path(layer.digest)
    original = path.read_bytes()
    assert original == image.layers[1]
    try:
        corrupted = bytearray(original)
        corrupted[50_000] ^= 0xFF
        path.write_bytes(bytes(corrupted))
        received = 0
        with pytest.raises(DigestMismatchError, match=f"blob {layer.digest} ") as caught, \
                client.stream_blob(repo, layer.digest, expected_size=layer.size,
                                   chunk_size=16 * 1024) as chunks:
            for chunk in chunks:
                received += len(chunk)
        assert caught.value.reference == layer.digest
        assert received < layer.size
        path.write_bytes(original[:-10])
        with pytest.raises(DigestMismatchError, match=f"{layer.size - 10} bytes, not the"):
            client.get_blob(repo, layer.digest, expected_size=layer.size)
        with pytest.raises(DigestMismatchError, match="does not match its digest"):
            client.get_blob(repo, layer.digest)
    finally:
        path.write_bytes(original)
    assert pull_blob(client, repo, layer) == image.layers[1]


def test_errors_from_the_registry(client: RegistryClient, repo: str) -> None:
    image = build_image("errors", sizes=(100,))
    with pytest.raises(BlobUnknownError, match="MANIFEST_BLOB_UNKNOWN"):
        client.put_manifest(repo, "1.0", image.manifest, image.media_type)
    push(client, repo, image, "1.0")
    with pytest.raises(ManifestUnknownError, match=f"{repo}:missing is unknown") as caught:
        client.get_manifest(repo, "missing")
    assert caught.value.code == "MANIFEST_UNKNOWN"
    missing = oci.digest_of(b"missing")
    with pytest.raises(BlobUnknownError, match=f"blob {missing} is unknown") as blob:
        client.get_blob(repo, missing)
    assert blob.value.code == "BLOB_UNKNOWN"
    assert client.blob_size(repo, missing) is None
    assert client.head_manifest(repo, "missing") is None
    with pytest.raises(RepositoryUnknownError, match="NAME_UNKNOWN"):
        client.tags(f"{repo}-none")
    # served as a Docker manifest but saying it is OCI
    with pytest.raises(RegistryRejectedError, match="MANIFEST_INVALID") as invalid:
        client.put_manifest(repo, "bad", image.manifest, oci.DOCKER_MANIFEST)
    assert invalid.value.code == "MANIFEST_INVALID"
    # no config: 2.8 answers DIGEST_INVALID (of the empty config digest) and
    # MANIFEST_BLOB_UNKNOWN; for a manifest push that is a rejection, not a mismatch
    no_config = b'{"schemaVersion": 2, "mediaType": "' + oci.OCI_MANIFEST.encode() + b'"}'
    with pytest.raises(RegistryRejectedError,
                       match=r"DIGEST_INVALID: .*; MANIFEST_BLOB_UNKNOWN") as rejected:
        client.put_manifest(repo, "bad", no_config, oci.OCI_MANIFEST)
    assert rejected.value.code == "DIGEST_INVALID"


def test_unknown_repository_manifest(client: RegistryClient, repo: str) -> None:
    # distribution 2.8 says MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a repository it lacks
    with pytest.raises(ManifestUnknownError, match=f"{repo}-never:1.0 is unknown") as caught:
        client.get_manifest(f"{repo}-never", "1.0")
    assert caught.value.code == "MANIFEST_UNKNOWN"


def test_cross_repository_mount(client: RegistryClient, repo: str) -> None:
    image = build_image("mount", sizes=(5000,))
    push(client, repo, image, "1.0")
    target = f"{repo}-copy"
    for descriptor, data in image.blobs():
        assert client.push_blob(target, descriptor.digest, descriptor.size, data,
                                mount_from=repo) is PushResult.MOUNTED
    client.put_manifest(target, "1.0", image.manifest, image.media_type)
    assert_pulled(client, target, "1.0", image)


def test_referrers_through_the_tag_schema(client: RegistryClient, repo: str) -> None:
    image = build_image("referrers", sizes=(100,))
    push(client, repo, image, "1.0")
    pushed = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        manifest, blobs = build_artifact(image.manifest, image.media_type, kind, kind.encode())
        for descriptor, data in blobs:
            client.push_blob(repo, descriptor.digest, descriptor.size, data)
        pushed.append(client.put_manifest(repo, oci.digest_of(manifest), manifest,
                                          oci.OCI_MANIFEST))
    # distribution 2.8 has no referrers API (404) and ignores subject: the client
    # keeps the sha256-<hex> tag up to date
    found = client.referrers(repo, image.digest)
    assert [d.digest for d in found] == pushed
    assert [d.digest for d in client.referrers(repo, image.digest,
                                               "application/vnd.example.sig")] == pushed[1:]
    assert sorted(client.tags(repo)) == sorted(["1.0", image.digest.tag])
    assert client.referrers(repo, oci.digest_of(b"nothing")) == []


# --------------------------------------------------------------------------- skopeo


def run_skopeo(skopeo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_RUNTIME_DIR": str(home), "TMPDIR": str(tmp_path)}
    done = subprocess.run([str(skopeo), "--insecure-policy", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done


def test_skopeo_copies_what_we_pushed(skopeo: Path, docker_registry: DockerRegistry,
                                      client: RegistryClient, repo: str,
                                      tmp_path: Path) -> None:
    image = build_image("to-skopeo")
    push(client, repo, image, "1.0")
    layout = tmp_path / "layout"
    run_skopeo(skopeo, tmp_path, "copy", "--src-tls-verify=false", "--preserve-digests",
               f"docker://{docker_registry.registry}/{repo}:1.0", f"oci:{layout}:copied")
    index = oci.parse_index((layout / "index.json").read_bytes())
    assert [d.digest for d in index.manifests] == [image.digest]
    blobs = layout / "blobs" / "sha256"
    assert (blobs / image.digest.hex).read_bytes() == image.manifest
    for descriptor, data in image.blobs():
        assert (blobs / descriptor.digest.hex).read_bytes() == data
    inspected = run_skopeo(skopeo, tmp_path, "inspect", "--tls-verify=false", "--raw",
                           f"docker://{docker_registry.registry}/{repo}:1.0")
    assert inspected.stdout.encode() == image.manifest


def test_we_pull_what_skopeo_pushed(skopeo: Path, docker_registry: DockerRegistry,
                                    client: RegistryClient, repo: str,
                                    tmp_path: Path) -> None:
    image = build_image("from-skopeo", sizes=(3000, 90_000))
    layout = tmp_path / "layout"
    write_layout(layout, image, "2.0")
    run_skopeo(skopeo, tmp_path, "copy", "--dest-tls-verify=false", "--preserve-digests",
               f"oci:{layout}:2.0", f"docker://{docker_registry.registry}/{repo}:2.0")
    assert_pulled(client, repo, "2.0", image)
    assert client.tags(repo) == ["2.0"]
    tags = run_skopeo(skopeo, tmp_path, "list-tags", "--tls-verify=false",
                      f"docker://{docker_registry.registry}/{repo}")
    assert json.loads(tags.stdout)["Tags"] == ["2.0"]


# --------------------------------------------------------------------------- HTTPS


def _pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it issued for 127.0.0.1: (certificate, key, ca) PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("countersign test CA"))
          .issuer_name(name("countersign test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "registry.crt", directory / "registry.key", directory / "ca.crt")
    paths[0].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


@pytest.fixture(scope="module")
def tls_registry(docker_registry: DockerRegistry,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """A second docker-registry, serving HTTPS with a test CA's certificate."""
    import registryserver

    tls = _pki(tmp_path_factory.mktemp("registry-pki"))
    server = registryserver.DockerRegistry(docker_registry.binary, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_https_with_a_ca_file(tls_registry: DockerRegistry, repo: str) -> None:
    assert tls_registry.tls is not None
    image = build_image("https", sizes=(4000,))
    with RegistryClient(tls_registry.registry, ca_file=tls_registry.tls[2],
                        credentials=Credentials(notary_auth=False,
                                                docker_config=False)) as client:
        assert client.base_url.scheme == "https"
        client.ping()
        push(client, repo, image, "1.0", chunked=True)
        assert_pulled(client, repo, "1.0", image)


def test_https_with_an_unknown_ca(tls_registry: DockerRegistry) -> None:
    with RegistryClient(tls_registry.registry, retries=0) as client, \
            pytest.raises(RegistryUnavailableError, match=r"certificate of 127\.0\.0\.1:\d+ is not "
                          r"trusted") as caught:
        client.ping()
    assert "CA certificate" in caught.value.render()


def test_https_to_a_plain_http_registry(docker_registry: DockerRegistry) -> None:
    with RegistryClient(docker_registry.registry, retries=0) as client, \
            pytest.raises(RegistryUnavailableError, match=r"TLS with .* failed") as caught:
        client.ping()
    assert "insecure=True" in caught.value.render()
