"""The stage checks of the sandbox's policy: real tools on the image under test.

``python -m countersign.sandbox.checks STAGE IMAGE REPORT --registry-ca CA``
fetches ``IMAGE`` (pinned by digest; every blob checked against it), unpacks
its layers into a scratch directory and tests what is inside:

- ``static``: bandit on the image's ``/app`` sources, a SARIF report;
- ``dynamic``: the image's own ``busybox httpd`` serving ``/app/www`` on
  loopback, probed over HTTP (path traversal, an oversized request, response
  headers), a countersign JSON report of what it found;
- ``fuzz``: mutated inputs fed to the image's decoders (``gunzip``, ``unxz``,
  ``bunzip2``, ``base64 -d``, ``tar -t``), a JUnit report in which a crash (a
  signal) or a hang fails the test.

Each writes its report and exits; whether the stage passes is the policy's
decision, not the check's.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from countersign.errors import CountersignError
from countersign.registry.client import RegistryClient
from countersign.registry.layout import OCILayout
from countersign.registry.oci import parse_manifest
from countersign.registry.transfer import ImageReference, pull
from countersign.sandbox.services import free_port

MAX_RESPONSE = 1 << 20
FUZZ_ROUNDS = 60


def fetch_rootfs(image: str, ca: Path | None, work: Path) -> Path:
    """Pull ``image`` by digest into ``work`` and unpack its layers in order; the root dir."""
    ref = ImageReference.parse(image)
    if ref.digest is None:
        raise CountersignError(f"{image}: the check wants the image pinned by digest")
    layout_dir = work / "image"
    pull(ref, RegistryClient(ref.registry, ca_file=ca), layout_dir, updater=None)
    layout = OCILayout(layout_dir)
    top = layout.resolve(None)
    manifest = parse_manifest(layout.read_blob(top.digest, top.size, limit=4 << 20),
                              top.media_type)
    rootfs = work / "rootfs"
    rootfs.mkdir()
    for descriptor in manifest.layers:
        with tarfile.open(layout.blob_path(descriptor.digest), mode="r:*") as tar:
            for member in tar:
                # the "data" filter refuses links and paths that leave rootfs; skip those
                with contextlib.suppress(tarfile.FilterError):
                    tar.extract(member, rootfs, filter="data")
    return rootfs


# --- static: bandit -------------------------------------------------------------------


def static(rootfs: Path, report: Path) -> int:
    bandit = shutil.which("bandit") or str(Path(sys.executable).parent / "bandit")
    if not Path(bandit).exists():
        print("bandit is not installed (it is in countersign's dev extras: "
              "pip install -e '.[dev]')", file=sys.stderr)
        return 2
    if not (rootfs / "app").is_dir():
        print("the image has no /app to analyse", file=sys.stderr)
        return 2
    done = subprocess.run([bandit, "-q", "-r", "app", "-f", "sarif", "-o", str(report)],
                          cwd=rootfs, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=300, check=False)
    sys.stderr.write(done.stderr.decode("utf-8", "replace")[-2000:])
    return done.returncode


# --- dynamic: probing the image's web server ------------------------------------------


def http(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` as it is (no client-side path clean-up) and read a bounded answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        data = b""
        with contextlib.suppress(OSError):
            while len(data) <= MAX_RESPONSE and (chunk := sock.recv(65536)):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, body
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()


def dynamic(rootfs: Path, report: Path) -> int:
    busybox = rootfs / "bin" / "busybox"
    www = rootfs / "app" / "www"
    if not busybox.is_file() or not www.is_dir():
        print("the image has no /bin/busybox or no /app/www to serve", file=sys.stderr)
        return 2
    port = free_port()
    server = subprocess.Popen([str(busybox), "httpd", "-f", "-p", f"127.0.0.1:{port}",
                               "-h", str(www)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    findings: list[dict[str, object]] = []
    probes = 0
    failed: set[int] = set()  # the probes that found something

    def finding(rule: str, severity: str, message: str, cwe: int, url: str) -> None:
        failed.add(probes)
        findings.append({"rule": rule, "severity": severity, "message": message,
                         "cwe": cwe, "url": url})

    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("busybox httpd did not start", file=sys.stderr)
                    return 2
                time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        status, headers, body = http(port, _get("/"))
        probes += 1
        if status != 200 or b"countersign" not in body:
            finding("service-unavailable", "high", f"GET / answered {status}", 703, base + "/")
        probes += 1
        if "x-content-type-options" not in headers:
            finding("missing-x-content-type-options", "low",
                    "responses do not carry X-Content-Type-Options: nosniff", 693, base + "/")
        for path in ("/../../../../../../../../etc/passwd",
                     "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                     "/..%2f..%2f..%2f..%2f..%2f..%2fetc/passwd"):
            status, _, body = http(port, _get(path))
            probes += 1
            if status == 200 and b"root:" in body:
                finding("path-traversal", "critical", f"{path} served /etc/passwd", 22,
                        base + path)
        http(port, _get("/" + "A" * 65536))
        probes += 1
        status, _, _ = http(port, _get("/"))
        if server.poll() is not None or status != 200:
            finding("crash-on-long-request", "high",
                    "the server stopped answering after a 64 KiB request line", 400, base + "/")
        status, _, body = http(port, b"TRACE / HTTP/1.0\r\nX-Probe: reflected\r\n\r\n")
        probes += 1
        if status == 200 and b"X-Probe" in body:
            finding("trace-enabled", "medium", "TRACE reflects request headers", 693, base + "/")
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    report.write_text(json.dumps({"tool": {"name": "countersign-sandbox-http-probe",
                                           "version": "1"},
                                  "findings": findings,
                                  "tests": {"run": probes, "failures": len(failed)}},
                                 indent=2))
    return 1 if findings else 0


# --- fuzz: mutated inputs to the image's decoders -------------------------------------

_SAMPLE = b"countersign sandbox fuzz corpus\n" * 64


def _tar_seed() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("corpus.txt")
        info.size = len(_SAMPLE)
        tar.addfile(info, io.BytesIO(_SAMPLE))
    return out.getvalue()


FUZZ_TARGETS: tuple[tuple[str, tuple[str, ...], Callable[[], bytes]], ...] = (
    ("gunzip", ("gunzip", "-c"), lambda: gzip.compress(_SAMPLE, mtime=0)),
    ("unxz", ("unxz", "-c"), lambda: lzma.compress(_SAMPLE)),
    ("bunzip2", ("bunzip2", "-c"), lambda: bz2.compress(_SAMPLE)),
    ("base64", ("base64", "-d"), lambda: base64.b64encode(_SAMPLE)),
    ("tar", ("tar", "-tf", "-"), _tar_seed),
)


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """Flip, insert, delete or truncate a few bytes of ``seed``."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(4)
        at = rng.randrange(max(1, len(data)))
        if choice == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[at:at] = bytes([rng.randrange(256)]) * rng.randint(1, 16)
        elif choice == 2:
            del data[at:at + rng.randint(1, 16)]
        else:
            data = data[:at]
    return bytes(data)


def fuzz(rootfs: Path, report: Path, image: str, rounds: int = FUZZ_ROUNDS) -> int:
    busybox = rootfs / "bin" / "busybox"
    if not busybox.is_file():
        print("the image has no /bin/busybox to fuzz", file=sys.stderr)
        return 2
    # reproducible per image: the same digest gets the same inputs
    seed = int.from_bytes(hashlib.sha256(image.encode()).digest()[:8], "big")
    rng = random.Random(seed)  # noqa: S311 - fuzz inputs, not secrets
    cases = []
    failures = 0
    for name, argv, make_seed in FUZZ_TARGETS:
        corpus = make_seed()
        start = time.monotonic()
        crashes: list[str] = []
        for number in range(rounds):
            data = corpus if number == 0 else mutate(corpus, rng)
            try:
                done = subprocess.run([str(busybox), *argv], input=data, capture_output=True,
                                      timeout=5, check=False)
                if done.returncode < 0:
                    crashes.append(f"input {number}: killed by signal {-done.returncode} "
                                   f"(sha256 {hashlib.sha256(data).hexdigest()[:16]})")
            except subprocess.TimeoutExpired:
                crashes.append(f"input {number}: no answer within 5 s")
        elapsed = time.monotonic() - start
        failures += bool(crashes)
        body = (f"<failure message={quoteattr(f'{len(crashes)} of {rounds} inputs crashed')}>"
                f"{escape(chr(10).join(crashes))}</failure>" if crashes else "")
        label = quoteattr(f"{name} ({rounds} inputs)")
        cases.append(f'  <testcase classname="busybox" name={label} time="{elapsed:.3f}">'
                     f"{body}</testcase>")
    report.write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="fuzz-busybox" '
        f'tests="{len(cases)}" failures="{failures}" errors="0">\n'
        f'  <properties><property name="seed" value="{seed}"/></properties>\n'
        + "\n".join(cases) + "\n</testsuite>\n")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m countersign.sandbox.checks",
                                     description="the sandbox policy's stage checks")
    parser.add_argument("stage", choices=["static", "dynamic", "fuzz"])
    parser.add_argument("image", help="REGISTRY/REPOSITORY@sha256:...")
    parser.add_argument("report", type=Path, help="where to write the report")
    parser.add_argument("--registry-ca", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"countersign-{args.stage}-") as tmp:
        try:
            rootfs = fetch_rootfs(args.image, args.registry_ca, Path(tmp))
        except CountersignError as exc:
            print(f"cannot fetch {args.image}: {exc.render()}", file=sys.stderr)
            return 2
        if args.stage == "static":
            return static(rootfs, args.report)
        if args.stage == "dynamic":
            return dynamic(rootfs, args.report)
        return fuzz(rootfs, args.report, args.image)


if __name__ == "__main__":
    sys.exit(main())
