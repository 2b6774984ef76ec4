"""Harness for interoperability tests against the reference Notary 0.7 tools.

Runs the Debian-packaged ``notary-signer`` (gRPC over mutual TLS) and
``notary-server`` (HTTPS) on loopback with memory storage, drives the
``notary`` CLI through :class:`NotaryCLI`, and fetches raw TUF files from the
server with :func:`https_get`.

Everything here is written for tests: TLS material is generated on the fly
with ``cryptography``, ports are picked by binding port 0, every child process
is stopped by :meth:`ReferenceNotary.stop` (SIGTERM, then SIGKILL), and as a
safety net the children get ``PR_SET_PDEATHSIG`` so they die with the test
process even if teardown never runs.

This module is imported by ``tests/interop/conftest.py`` and the test modules
next to it as ``_notary`` (pytest's default ``prepend`` import mode puts
``tests/interop`` on ``sys.path`` because that directory has no
``__init__.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from procs import LiveSet, die_with_parent, free_port, tail

NOTARY_BIN = "notary"
NOTARY_SERVER_BIN = "notary-server"
NOTARY_SIGNER_BIN = "notary-signer"
REQUIRED_BINARIES = (NOTARY_BIN, NOTARY_SERVER_BIN, NOTARY_SIGNER_BIN)

#: Fixed passphrases handed to every ``notary`` CLI run, by environment variable.
ROOT_PASSPHRASE = "interop-root-passphrase"
TARGETS_PASSPHRASE = "interop-targets-passphrase"
SNAPSHOT_PASSPHRASE = "interop-snapshot-passphrase"
DELEGATION_PASSPHRASE = "interop-delegation-passphrase"
PASSPHRASE_ENV: Mapping[str, str] = {
    "NOTARY_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
    "NOTARY_TARGETS_PASSPHRASE": TARGETS_PASSPHRASE,
    "NOTARY_SNAPSHOT_PASSPHRASE": SNAPSHOT_PASSPHRASE,
    "NOTARY_DELEGATION_PASSPHRASE": DELEGATION_PASSPHRASE,
}

#: Default cap for :func:`https_get` bodies (the notary client caps root at 100 MiB,
#: timestamp at 1 MiB; test repositories are tiny).
DEFAULT_MAX_BODY = 16 * 1024 * 1024

TrustService = Literal["remote", "local"]


def missing_binaries() -> list[str]:
    """Names of the reference binaries that are not on ``PATH``."""
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files written by :func:`make_tls_material`."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    signer_cert: Path
    signer_key: Path


def _pkcs8_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _leaf(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(common_name),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_tls_material(directory: Path) -> TLSFiles:
    """Write a throwaway P-256 CA plus server and signer leaves into ``directory``.

    Both leaves carry SANs ``localhost``, their own CN and ``IP:127.0.0.1`` and
    the EKUs serverAuth + clientAuth: the server leaf is also the TLS client
    certificate notary-server presents to notary-signer (mutual TLS). Keys are
    unencrypted PKCS#8 PEM (mode 0600).
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(hours=1)
    not_after = now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("countersign interop CA"))
        .issuer_name(_name("countersign interop CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        signer_cert=directory / "signer.crt",
        signer_key=directory / "signer.key",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _pkcs8_pem(ca_key))
    for cn, cert_path, key_path in (
        ("notary-server", files.server_cert, files.server_key),
        ("notary-signer", files.signer_cert, files.signer_key),
    ):
        key, cert = _leaf(cn, ca_key, ca_cert, not_before, not_after)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _pkcs8_pem(key))
    return files


@dataclass(frozen=True)
class DelegationKey:
    """A delegation key pair: ``cert_path`` for ``notary delegation add``,
    ``key_path`` (unencrypted PKCS#8 ``PRIVATE KEY`` PEM) for ``notary key import``."""

    cert_path: Path
    key_path: Path
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def make_delegation_key(
    directory: Path, name: str = "delegation", *, common_name: str | None = None
) -> DelegationKey:
    """Make a self-signed ECDSA P-256 certificate (valid from an hour ago for a
    year) and its private key, written as ``<name>.crt`` and ``<name>.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name or name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, _pkcs8_pem(key))
    return DelegationKey(cert_path, key_path, key, cert)


# ---------------------------------------------------------------------- processes






def _probe(port: int, tls: ssl.SSLContext | None = None) -> str | None:
    """``None`` once 127.0.0.1:port accepts a connection (and, with ``tls``,
    completes a TLS handshake, so the Go servers do not log a "TLS handshake
    error"); otherwise the error text."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if tls is not None:
                with tls.wrap_socket(sock, server_hostname="localhost"):
                    pass
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_context(tls: TLSFiles) -> ssl.SSLContext:
    # The server leaf is also a valid client certificate for the signer's mTLS.
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    ctx.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    return ctx




class ProcessStartError(RuntimeError):
    """A reference process exited or never opened its port."""


class _Process:
    """One started child: its Popen, log file and port."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, port: int,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.port = port
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else dict(env),
                preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),  # noqa: PLW1509 - no threads use fork state here
                close_fds=True,
            )

    def wait_port(self, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.popen.poll()
            if rc is not None:
                raise ProcessStartError(
                    f"{self.name} exited with status {rc} before opening 127.0.0.1:{self.port}\n"
                    f"command: {self.argv}\n--- {self.log_path} ---\n{tail(self.log_path)}"
                )
            error = _probe(self.port, tls)
            if error is None:
                return
            if time.monotonic() > deadline:
                raise ProcessStartError(
                    f"{self.name} not ready on 127.0.0.1:{self.port} within {timeout:.0f}s "
                    f"(last probe: {error})\n"
                    f"command: {self.argv}\n--- {self.log_path} ---\n{tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout=grace)
        else:
            self.popen.wait()


_LIVE = LiveSet()


class ReferenceNotary:
    """notary-server (and, for ``trust="remote"``, notary-signer) on loopback.

    ``workdir`` receives ``pki/`` (TLS material), ``conf/`` (JSON configs) and
    ``logs/`` (``server.log``, ``signer.log``). Use as a context manager or
    call :meth:`start` / :meth:`stop`. Storage is memory, so all TUF data and
    server-held keys vanish on stop.

    ``trust="remote"``: the server asks notary-signer (gRPC, mutual TLS,
    ``key_algorithm`` ecdsa) for timestamp/snapshot keys.
    ``trust="local"``: in-process signing, no signer process.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        trust: TrustService = "remote",
        log_level: str = "warn",
        startup_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.trust: TrustService = trust
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.pki_dir = self.workdir / "pki"
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "logs"
        self.tls: TLSFiles | None = None
        self.server_port: int | None = None
        self.signer_port: int | None = None
        self._procs: list[_Process] = []

    # -- public API -------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of notary-server, e.g. ``https://127.0.0.1:41234``."""
        if self.server_port is None:
            raise RuntimeError("ReferenceNotary is not started")
        return f"https://127.0.0.1:{self.server_port}"

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that issued the server's TLS certificate."""
        if self.tls is None:
            raise RuntimeError("ReferenceNotary is not started")
        return self.tls.ca_cert

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def signer_log(self) -> Path:
        return self.log_dir / "signer.log"

    def logs(self) -> str:
        """Tails of all log files, for error messages."""
        parts = []
        for path in (self.signer_log, self.server_log):
            if path.exists():
                parts.append(f"--- {path} ---\n{tail(path)}")
        return "\n".join(parts)

    def running(self) -> bool:
        return bool(self._procs) and all(p.popen.poll() is None for p in self._procs)

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self._procs]

    def start(self) -> ReferenceNotary:
        if self._procs:
            raise RuntimeError("ReferenceNotary already started")
        missing = missing_binaries()
        if missing:
            raise FileNotFoundError(f"reference notary binaries not on PATH: {missing}")
        for d in (self.pki_dir, self.conf_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.tls = make_tls_material(self.pki_dir)
        _LIVE.add(self)
        try:
            if self.trust == "remote":
                self._start_with_retry(self._start_signer)
            self._start_with_retry(self._start_server)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every started process (server first), SIGKILL after 5 s."""
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        _LIVE.discard(self)

    def __enter__(self) -> ReferenceNotary:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str, *, max_bytes: int = DEFAULT_MAX_BODY) -> HTTPResult:
        """``GET <url><path>`` trusting only our CA; see :func:`https_get`."""
        return https_get(self.url, path, self.ca_path, max_bytes=max_bytes)

    def get_tuf(
        self,
        gun: str,
        role: str,
        *,
        sha256: str | None = None,
        version: int | None = None,
        max_bytes: int = DEFAULT_MAX_BODY,
    ) -> HTTPResult:
        """Fetch a TUF file: ``<role>.json``, ``<role>.<sha256>.json`` or ``<N>.<role>.json``."""
        return self.get(tuf_path(gun, role, sha256=sha256, version=version), max_bytes=max_bytes)

    def cli(
        self,
        trust_dir: Path,
        *,
        timeout: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> NotaryCLI:
        """A :class:`NotaryCLI` pointed at this server."""
        return NotaryCLI(trust_dir, self.url, self.ca_path, timeout=timeout, extra_env=extra_env)

    # -- internals --------------------------------------------------------------

    def _start_with_retry(self, starter: Callable[[], _Process], attempts: int = 3) -> None:
        # The port is free when chosen but could be taken before the child binds;
        # retry with a fresh port if the child dies early.
        assert self.tls is not None
        probe = _probe_context(self.tls)
        last: ProcessStartError | None = None
        for _ in range(attempts):
            proc = starter()
            try:
                proc.wait_port(self.startup_timeout, probe)
            except ProcessStartError as exc:
                proc.stop()
                self._procs.remove(proc)
                last = exc
                if "address already in use" not in tail(proc.log_path).lower():
                    raise
                continue
            return
        assert last is not None
        raise last

    def _spawn(self, name: str, argv: Sequence[str], port: int) -> _Process:
        proc = _Process(name, argv, self.log_dir / f"{name}.log", port)
        self._procs.append(proc)
        return proc

    def _start_signer(self) -> _Process:
        assert self.tls is not None
        self.signer_port = free_port()
        config = {
            "server": {
                "grpc_addr": f"127.0.0.1:{self.signer_port}",
                "tls_cert_file": str(self.tls.signer_cert),
                "tls_key_file": str(self.tls.signer_key),
                "client_ca_file": str(self.tls.ca_cert),
            },
            "logging": {"level": self.log_level},
            "storage": {"backend": "memory"},
        }
        path = self.conf_dir / "signer.json"
        path.write_text(json.dumps(config, indent=2))
        argv = [NOTARY_SIGNER_BIN, "-config", str(path), "-logf", "logfmt"]
        return self._spawn("signer", argv, self.signer_port)

    def _start_server(self) -> _Process:
        assert self.tls is not None
        self.server_port = free_port()
        trust_service: dict[str, object]
        if self.trust == "remote":
            trust_service = {
                "type": "remote",
                "hostname": "127.0.0.1",
                "port": str(self.signer_port),
                "tls_ca_file": str(self.tls.ca_cert),
                "key_algorithm": "ecdsa",
                "tls_client_cert": str(self.tls.server_cert),
                "tls_client_key": str(self.tls.server_key),
            }
        else:
            trust_service = {"type": "local"}
        config = {
            "server": {
                "http_addr": f"127.0.0.1:{self.server_port}",
                "tls_cert_file": str(self.tls.server_cert),
                "tls_key_file": str(self.tls.server_key),
            },
            "trust_service": trust_service,
            "logging": {"level": self.log_level},
            "storage": {"backend": "memory"},
        }
        path = self.conf_dir / "server.json"
        path.write_text(json.dumps(config, indent=2))
        argv = [NOTARY_SERVER_BIN, "-config", str(path), "-logf", "logfmt"]
        return self._spawn("server", argv, self.server_port)


# ---------------------------------------------------------------------------- CLI


class CLIResult(NamedTuple):
    """Outcome of one ``notary`` run (unpacks as ``rc, out, err``)."""

    returncode: int
    stdout: str
    stderr: str


class NotaryCLIError(AssertionError):
    """``notary`` exited non-zero in :meth:`NotaryCLI.run_ok`."""

    def __init__(self, argv: Sequence[str], result: CLIResult) -> None:
        self.argv = list(argv)
        self.result = result
        super().__init__(
            f"notary exited {result.returncode}: {self.argv}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


class NotaryCLI:
    """The reference ``notary`` CLI bound to one trust dir and one server.

    Writes ``<trust_dir>/config.json`` with an absolute ``trust_dir`` and
    ``remote_server {url, root_ca}`` (absolute CA path). Every run gets
    ``-c <config>``, ``stdin`` from ``/dev/null`` (or ``input``), a timeout, a
    private ``HOME`` (``<trust_dir>.home``), a minimal environment and the
    passphrases of :data:`PASSPHRASE_ENV`. ``cwd`` is the home dir, so stray
    relative paths cannot land in the project.
    """

    def __init__(
        self,
        trust_dir: Path,
        server_url: str,
        ca_path: Path,
        *,
        timeout: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.trust_dir = Path(trust_dir).resolve()
        self.server_url = server_url
        self.ca_path = Path(ca_path).resolve()
        self.timeout = timeout
        self.home = self.trust_dir.with_name(self.trust_dir.name + ".home")
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        self.trust_dir.chmod(0o700)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = self.trust_dir / "config.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "trust_dir": str(self.trust_dir),
                    "remote_server": {"url": server_url, "root_ca": str(self.ca_path)},
                },
                indent=2,
            )
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "TMPDIR": tempfile.gettempdir(),
            "LANG": "C.UTF-8",
        }
        env.update(PASSPHRASE_ENV)
        if extra_env:
            env.update(extra_env)
        self.env = env

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [NOTARY_BIN, "-c", str(self.config_path), *(os.fspath(a) for a in args)]

    def run(
        self,
        *args: str | os.PathLike[str],
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> CLIResult:
        """Run ``notary -c CONFIG *args``; never raises on a non-zero exit."""
        argv = self.argv(*args)
        proc = subprocess.run(
            argv,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            env=self.env,
            cwd=self.home,
            timeout=self.timeout if timeout is None else timeout,
            check=False,
        )
        return CLIResult(
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    def run_ok(
        self,
        *args: str | os.PathLike[str],
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> CLIResult:
        """Like :meth:`run` but raise :class:`NotaryCLIError` (with all output) on failure."""
        result = self.run(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            raise NotaryCLIError(self.argv(*args), result)
        return result

    # -- trust-dir inspection helpers ---------------------------------------------

    def metadata_dir(self, gun: str) -> Path:
        """``<trust_dir>/tuf/<gun>/metadata`` (the client's cache of downloaded files)."""
        return self.trust_dir / "tuf" / gun / "metadata"

    def changelist_dir(self, gun: str) -> Path:
        return self.trust_dir / "tuf" / gun / "changelist"

    def private_keys(self) -> list[Path]:
        """Key files under ``<trust_dir>/private``."""
        private = self.trust_dir / "private"
        return sorted(p for p in private.rglob("*.key")) if private.exists() else []


class NotaryCLIFactory(Protocol):
    """Type of the ``notary_cli`` fixture (see ``conftest.py``)."""

    def __call__(
        self,
        name: str = "client",
        *,
        server: ReferenceNotary | None = None,
        timeout: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> NotaryCLI: ...


_TARGET_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<digest>[0-9a-f]{64})\s+(?P<size>\d+)\s+(?P<role>\S+)\s*$"
)


def parse_list_output(stdout: str) -> dict[str, tuple[str, int, str]]:
    """Parse ``notary list`` output into ``{name: (sha256 hex, size, role)}``."""
    out: dict[str, tuple[str, int, str]] = {}
    for line in stdout.splitlines():
        m = _TARGET_LINE.match(line.strip())
        if m:
            out[m["name"]] = (m["digest"], int(m["size"]), m["role"])
    return out


# --------------------------------------------------------------------------- HTTP


class HTTPResult(NamedTuple):
    """Outcome of :func:`https_get` (unpacks as ``status, headers, body``)."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


class BodyTooLarge(RuntimeError):
    pass


def tuf_path(gun: str, role: str, *, sha256: str | None = None, version: int | None = None) -> str:
    """``/v2/<gun>/_trust/tuf/`` plus ``<role>.json``, ``<role>.<sha256>.json`` or
    ``<version>.<role>.json``. GUN and role slashes are not encoded, like notary."""
    if sha256 is not None and version is not None:
        raise ValueError("give sha256 or version, not both")
    if sha256 is not None:
        name = f"{role}.{sha256}.json"
    elif version is not None:
        name = f"{version}.{role}.json"
    else:
        name = f"{role}.json"
    return f"/v2/{gun}/_trust/tuf/{name}"


def https_get(
    base_url: str,
    path: str,
    ca_path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BODY,
    timeout: float = 10.0,
) -> HTTPResult:
    """GET ``base_url + path`` over HTTPS, trusting only ``ca_path``.

    Returns the status for any HTTP response (no raise on 4xx/5xx); raises
    :class:`BodyTooLarge` if the body exceeds ``max_bytes``.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"not an https URL: {base_url!r}")
    ctx = ssl.create_default_context(cafile=str(ca_path))
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=ctx, timeout=timeout
    )
    try:
        conn.request("GET", path, headers={"Accept": "*/*", "Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise BodyTooLarge(f"GET {path}: body larger than {max_bytes} bytes")
        return HTTPResult(resp.status, resp.headers, body)
    finally:
        conn.close()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
