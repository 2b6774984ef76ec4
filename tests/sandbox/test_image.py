"""The sample-image builder: Debian packages (made here with the real dpkg-deb) to an OCI layout.

The layout is read back with countersign's own reader and, when installed, with
skopeo; every blob is hashed against its name, and each layer's diff_id is
checked against the layer decompressed here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from countersign.registry.layout import OCILayout
from countersign.registry.oci import parse_manifest
from countersign.sandbox import image
from countersign.sandbox.image import (
    ImageBuildError,
    build_from_debs,
    deb_contents,
    fetch_debs,
    repack,
)

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg-deb is not installed")


def make_deb(directory: Path, compression: str = "xz", *, package: str = "cs-hello") -> Path:
    """A real .deb with a script, a symlink, a hard link and a doc file."""
    root = directory / f"{package}-{compression}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.2-3\nArchitecture: arm64\n"
        "Maintainer: countersign tests <tests@example.invalid>\n"
        "Description: a package for the image builder tests\n")
    (root / "usr" / "bin").mkdir(parents=True)
    hello = root / "usr" / "bin" / "hello"
    hello.write_text("#!/bin/sh\necho hello\n")
    hello.chmod(0o755)
    (root / "usr" / "bin" / "hi").symlink_to("hello")
    (root / "usr" / "bin" / "hello-again").hardlink_to(hello)
    (root / "usr" / "share" / "doc" / package).mkdir(parents=True)
    (root / "usr" / "share" / "doc" / package / "README").write_text("docs\n")
    out = directory / f"{package}_1.2-3_arm64.deb"
    done = subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build",
                           str(root), str(out)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"dpkg-deb cannot build with -Z{compression}: {done.stderr.strip()}")
    return out


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@needs_dpkg
@pytest.mark.parametrize("compression", ["xz", "gzip", "none", "zstd"])
def test_the_layout_is_valid_and_every_digest_right(tmp_path: Path, compression: str) -> None:
    deb = make_deb(tmp_path, compression)
    built = build_from_debs([deb], {"app/main.py": b"print('hi')\n"}, tmp_path / "img", "1.0",
                            config={"Cmd": ["/usr/bin/hello"]})
    layout = OCILayout(tmp_path / "img")
    top = layout.resolve("1.0")
    assert top.digest == built.digest and top.size == built.size
    manifest_bytes = layout.read_blob(top.digest, top.size)
    manifest = parse_manifest(manifest_bytes, top.media_type)
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    # every blob on disk hashes to its name, and has the size its descriptor says
    for blob in (tmp_path / "img" / "blobs" / "sha256").iterdir():
        assert sha256(blob.read_bytes()) == f"sha256:{blob.name}"
    for descriptor in manifest.blobs:
        assert layout.blob_path(descriptor.digest).stat().st_size == descriptor.size
    config = json.loads(layout.read_blob(manifest.config.digest, manifest.config.size))
    assert config["architecture"] == "arm64" and config["variant"] == "v8"
    assert config["os"] == "linux" and config["config"]["Cmd"] == ["/usr/bin/hello"]
    assert config["rootfs"]["type"] == "layers"
    # diff_ids are the digests of the uncompressed layers, in order
    assert len(manifest.layers) == 2
    tars = [gzip.decompress(layout.read_blob(d.digest, d.size)) for d in manifest.layers]
    assert config["rootfs"]["diff_ids"] == [sha256(t) for t in tars]
    assert all(d.media_type.endswith(".tar+gzip") for d in manifest.layers)
    with tarfile.open(fileobj=io.BytesIO(tars[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["usr/bin/hello"]).read() == b"#!/bin/sh\necho hello\n"
    assert members["usr/bin/hello"].mode & 0o777 == 0o755
    assert members["usr/bin/hi"].issym() and members["usr/bin/hi"].linkname == "hello"
    assert members["usr/bin/hello-again"].islnk()
    assert members["usr/bin/hello-again"].linkname == "usr/bin/hello"
    assert all(m.uid == 0 and m.gid == 0 and not m.name.startswith(("/", "./"))
               for m in members.values())
    assert list(members) == sorted(members)
    with tarfile.open(fileobj=io.BytesIO(tars[1])) as tar:
        assert tar.getnames() == ["app", "app/main.py"]


@needs_dpkg
def test_the_same_packages_give_the_same_image(tmp_path: Path) -> None:
    deb = make_deb(tmp_path)
    first = build_from_debs([deb], {"a": b"1"}, tmp_path / "one", "t")
    second = build_from_debs([deb], {"a": b"1"}, tmp_path / "two", "t")
    assert first.digest == second.digest
    assert build_from_debs([deb], {"a": b"2"}, tmp_path / "three", "t").digest != first.digest


@needs_dpkg
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_the_layout(tmp_path: Path) -> None:
    built = build_from_debs([make_deb(tmp_path)], {}, tmp_path / "img", "2.0")
    done = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'img'}:2.0"],
                          capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sha256(done.stdout) == built.digest
    config = subprocess.run(["skopeo", "inspect", "--config", f"oci:{tmp_path / 'img'}:2.0"],
                            capture_output=True, check=True, timeout=60)
    assert json.loads(config.stdout)["rootfs"]["diff_ids"] == [
        layer.diff_id for layer in built.layers]


@needs_dpkg
def test_debs_come_from_the_cache_when_there(tmp_path: Path) -> None:
    cache = tmp_path / "debs"
    cache.mkdir()
    deb = make_deb(cache)
    assert fetch_debs(["cs-hello"], cache) == [deb]  # no apt-get run: it is cached
    tree, fields = deb_contents(deb)
    assert fields["Package"] == "cs-hello" and fields["Version"] == "1.2-3"
    with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
        assert tar.getmember("./usr/bin/hello").isfile()


@needs_dpkg
def test_debs_apt_already_has_are_copied_into_the_cache(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    deb = make_deb(archives)
    monkeypatch.setattr(image, "APT_ARCHIVES", archives)
    found = fetch_debs(["cs-hello"], tmp_path / "cache")
    assert found == [tmp_path / "cache" / deb.name]
    assert found[0].read_bytes() == deb.read_bytes()


def test_a_package_apt_cannot_download_is_a_clear_error(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed")
    with pytest.raises(ImageBuildError) as caught:
        fetch_debs(["countersign-no-such-package"], tmp_path / "debs")
    assert "countersign-no-such-package" in caught.value.message
    assert caught.value.advice is not None
    assert "apt-get update" in caught.value.advice and str(tmp_path / "debs") in caught.value.advice


def test_bad_package_names_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="not a Debian package name"):
        fetch_debs(["../etc"], tmp_path)
    fake = tmp_path / "fake_1_all.deb"
    fake.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(ImageBuildError, match="no ar header"):
        deb_contents(fake)
    fake.write_bytes(b"!<arch>\ndebian-binary   0           0     0     100644  99        `\n")
    with pytest.raises(ImageBuildError, match="cut short"):
        deb_contents(fake)


def test_a_tree_that_leaves_its_root_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("./usr/../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ImageBuildError, match="leaves the tree"):
        repack(out.getvalue(), "evil.deb")
