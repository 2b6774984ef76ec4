"""HTTPS to a trust server: the :class:`~countersign.client.fetcher.Fetcher` used for real.

:class:`HTTPSFetcher` speaks HTTP/1.1 over one keep-alive ``httpx`` client and
bounds every exchange, as TUF asks of a client facing a hostile mirror:

* **Length** ("endless data"): a ``Content-Length`` above the limit is refused
  before any body byte is read; without one, the body is streamed and refused
  as soon as it passes the limit. The socket is never asked for more than the
  bytes still allowed, so at most ``max_length + 1`` body bytes are read (for
  a limit under 4 KiB, up to 4 KiB may arrive in the same read as the headers)
  and no more than ``max_length`` are ever kept.
* **Time** ("slow retrieval"): each exchange has a total deadline, and once a
  short grace period has passed the body must keep arriving at an average of
  at least ``min_rate`` bytes a second. Both are enforced inside every socket
  operation (connect, TLS handshake, each read and write), so a server that
  sends nothing at all cannot hold the client past them either.

Status codes are the caller's business, with one exception: a 401 carrying a
``Bearer`` challenge starts the Docker registry token flow (the scheme of
notary-server's ``auth.type: token``): a token for the challenge's scopes is
asked of its realm, with HTTP basic credentials from :class:`Credentials` when
there are any, cached until it expires and sent with the request once more.

Tokens and passwords never appear in a message, a log record or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.cookiejar
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import SplitResult, quote, urlsplit

import httpcore
import httpx

from countersign import __version__
from countersign.client.fetcher import Response
from countersign.errors import (
    AuthenticationError,
    CountersignError,
    DownloadError,
    RemoteError,
    ServerUnavailableError,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_GRACE",
    "DEFAULT_MIN_RATE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_USER_AGENT",
    "BearerChallenge",
    "Credentials",
    "HTTPSFetcher",
    "credentials_for",
    "is_bearer_challenge",
    "is_loopback",
    "os_reason",
    "parse_challenge",
    "parse_token_response",
    "ssl_cause",
    "ssl_context",
    "strict_json",
]

#: Longest wait for any one socket operation, in seconds.
DEFAULT_TIMEOUT: Final = 10.0
#: Longest time one exchange (connect, request, whole body) may take, in seconds.
DEFAULT_DEADLINE: Final = 120.0
#: Slowest average body rate accepted once the grace period is over, in bytes a second.
DEFAULT_MIN_RATE: Final = 1024.0
#: Seconds from the first response byte during which the rate is not checked.
DEFAULT_GRACE: Final = 2.0
DEFAULT_USER_AGENT: Final = f"countersign/{__version__}"

#: Longest ``WWW-Authenticate`` value parsed.
MAX_CHALLENGE_LENGTH: Final = 8 * 1024
#: Largest token service answer read.
MAX_TOKEN_RESPONSE: Final = 256 * 1024
#: Longest token accepted (notary-server accepts 16 KiB).
MAX_TOKEN_LENGTH: Final = 64 * 1024
#: Token lifetime assumed when the token service gives none (the token spec's default).
DEFAULT_TOKEN_LIFETIME: Final = 60
#: Longest a token is kept, whatever ``expires_in`` says.
MAX_TOKEN_LIFETIME: Final = 24 * 3600
#: Largest 401 body read (and thrown away) before a retry with a token.
_DISCARD_LIMIT: Final = 64 * 1024
#: Most bytes one socket read asks for before the body starts (headers are
#: usually a few hundred bytes; body bytes read along with them are not yet
#: counted against the body limit).
_HEADER_READ: Final = 4096
#: Largest docker ``config.json`` read.
MAX_DOCKER_CONFIG: Final = 1024 * 1024
#: Largest answer read from a docker credential helper.
MAX_HELPER_OUTPUT: Final = 64 * 1024
#: Seconds a docker credential helper may take.
DEFAULT_HELPER_TIMEOUT: Final = 10.0

_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_OWS: Final = " \t"
_PATH_SAFE: Final = "/:@!$&'()*+,;=~"
_QUERY_SAFE: Final = "/:@!$&'()*+,;=~?%"


# --------------------------------------------------------------------------- challenge


@dataclass(frozen=True)
class BearerChallenge:
    """A parsed ``WWW-Authenticate: Bearer ...`` challenge.

    ``scopes`` are the space-separated entries of the ``scope`` parameter (a
    challenge for no scope has none); ``error`` is the ``error`` parameter
    (``invalid_token``, ``insufficient_scope``) or ``""``.
    """

    realm: str
    service: str = ""
    scopes: tuple[str, ...] = ()
    error: str = ""


def _malformed(what: str) -> AuthenticationError:
    return AuthenticationError(
        f"malformed WWW-Authenticate challenge: {what}",
        advice="the server (or a proxy before it) does not speak the Docker token scheme",
    )


def is_bearer_challenge(header: str) -> bool:
    """Whether ``header`` names the ``Bearer`` scheme (case-insensitive), however malformed."""
    text = header.lstrip(_OWS)
    return text[:6].lower() == "bearer" and (len(text) == 6 or text[6] in _OWS)


def _skip(header: str, pos: int) -> int:
    while pos < len(header) and header[pos] in _OWS:
        pos += 1
    return pos


def _token(header: str, pos: int) -> int:
    while pos < len(header) and header[pos] in _TCHAR:
        pos += 1
    return pos


def _quoted(header: str, pos: int) -> tuple[str, int]:
    """The quoted-string starting at ``pos`` (its opening ``"``) and the index after it."""
    out: list[str] = []
    pos += 1
    end = len(header)
    while pos < end:
        char = header[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            if pos + 1 >= end:
                break
            char = header[pos + 1]
            pos += 1
        if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            raise _malformed(f"control character in a quoted value at offset {pos}")
        out.append(char)
        pos += 1
    raise _malformed("unterminated quoted value")


def _valid_realm(realm: str) -> bool:
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in realm):
        return False
    try:
        parts = urlsplit(realm)
        port = parts.port
    except ValueError:
        return False
    del port
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def parse_challenge(header: str) -> BearerChallenge:
    """Parse one ``Bearer`` challenge: ``Bearer realm="...",service="...",scope="..."``.

    Strict and linear: after the scheme and at least one space come
    comma-separated ``key="quoted value"`` pairs (optional spaces around ``=``
    and ``,``; ``\\`` escapes the next character), with case-insensitive,
    unrepeated keys; ``realm`` must be an absolute ``http``/``https`` URL.
    Unknown keys are ignored. Anything else is an :class:`AuthenticationError`.
    """
    if len(header) > MAX_CHALLENGE_LENGTH:
        raise _malformed(f"longer than {MAX_CHALLENGE_LENGTH} characters")
    if not is_bearer_challenge(header):
        raise _malformed("not a Bearer challenge")
    pos = _skip(header, _skip(header, 0) + 6)
    params: dict[str, str] = {}
    end = len(header)
    while True:
        start = pos
        pos = _token(header, pos)
        if pos == start:
            raise _malformed(f"expected a parameter name at offset {pos}")
        key = header[start:pos].lower()
        pos = _skip(header, pos)
        if pos >= end or header[pos] != "=":
            raise _malformed(f"expected '=' after {key!r}")
        pos = _skip(header, pos + 1)
        if pos >= end or header[pos] != '"':
            raise _malformed(f"the value of {key!r} is not a quoted string")
        value, pos = _quoted(header, pos)
        if key in params:
            raise _malformed(f"parameter {key!r} given twice")
        params[key] = value
        pos = _skip(header, pos)
        if pos == end:
            break
        if header[pos] != ",":
            raise _malformed(f"expected ',' at offset {pos}")
        pos = _skip(header, pos + 1)
    realm = params.get("realm", "")
    if not realm:
        raise _malformed("no realm")
    if not _valid_realm(realm):
        raise _malformed("the realm is not an absolute http(s) URL")
    scopes = tuple(s for s in params.get("scope", "").split(" ") if s)
    return BearerChallenge(realm, params.get("service", ""), scopes, params.get("error", ""))


# --------------------------------------------------------------------------- credentials


def _decode_basic(text: str, source: str) -> tuple[str, str]:
    """``base64(user:password)`` as NOTARY_AUTH and docker's ``auth`` hold it."""
    try:
        decoded = base64.b64decode(text.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise AuthenticationError(
            f"{source} is not base64 of username:password",
            advice="encode it as: printf '%s' 'user:password' | base64",
        ) from None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        raise AuthenticationError(
            f"{source} does not decode to username:password",
            advice="encode it as: printf '%s' 'user:password' | base64",
        )
    return username, password


def _host_key(address: str) -> str:
    """docker's ``ConvertToHostname``: drop a scheme and anything from the first ``/``."""
    text = address.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    return text.split("/", 1)[0].lower()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """JSON as Go decodes it, stricter: UTF-8, no duplicate keys, no NaN/Infinity."""
    return json.loads(
        data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
    )


class Credentials:
    """Where the basic credentials for a token service come from.

    In order: an explicit ``username``/``password`` (for any server); the
    ``NOTARY_AUTH`` variable (base64 ``user:password``, as the notary CLI reads
    it); the docker client's ``config.json`` (``$DOCKER_CONFIG/config.json`` or
    ``~/.docker/config.json``): ``credHelpers[host]``, else ``credsStore``
    (``docker-credential-<name> get``), else ``auths[host].auth``. ``environ``
    replaces ``os.environ`` for every lookup (and for the helper's environment).

    Answers are kept per host, so a helper runs at most once per host.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        notary_auth: bool = True,
        docker_config: bool = True,
        helper_timeout: float = DEFAULT_HELPER_TIMEOUT,
    ) -> None:
        if (username is None) != (password is None):
            raise AuthenticationError("a username needs a password, and a password a username")
        if username is not None and not username:
            raise AuthenticationError("the username is empty")
        self._explicit = None if username is None or password is None else (username, password)
        self._environ = environ
        self._notary_auth = notary_auth
        self._docker_config = docker_config
        self._helper_timeout = helper_timeout
        self._found: dict[str, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        sources = [
            name
            for name, used in (
                ("explicit", self._explicit is not None),
                ("NOTARY_AUTH", self._notary_auth),
                ("docker config", self._docker_config),
            )
            if used
        ]
        return f"Credentials({', '.join(sources) or 'none'})"

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def for_host(self, host: str) -> tuple[str, str] | None:
        """``(username, password)`` for ``host`` (``name[:port]``), or ``None``."""
        if self._explicit is not None:
            return self._explicit
        key = _host_key(host)
        with self._lock:
            if key in self._found:
                return self._found[key]
        found = self._lookup(key)
        with self._lock:
            self._found[key] = found
        return found

    def _lookup(self, host: str) -> tuple[str, str] | None:
        if self._notary_auth:
            value = self.environ.get("NOTARY_AUTH", "")
            if value.strip():
                return _decode_basic(value, "NOTARY_AUTH")
        if self._docker_config:
            return self._from_docker_config(host)
        return None

    def docker_config_path(self) -> Path:
        """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
        directory = self.environ.get("DOCKER_CONFIG", "")
        if directory:
            return Path(directory) / "config.json"
        home = self.environ.get("HOME", "")
        base = Path(home) if home else Path.home()
        return base / ".docker" / "config.json"

    def _read_docker_config(self) -> Mapping[str, Any] | None:
        path = self.docker_config_path()
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_DOCKER_CONFIG + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuthenticationError(
                f"cannot read the docker config {path}: {exc.strerror or exc}"
            ) from None
        if len(data) > MAX_DOCKER_CONFIG:
            raise AuthenticationError(
                f"the docker config {path} is larger than {MAX_DOCKER_CONFIG} bytes"
            )
        try:
            config = strict_json(data)
        except (ValueError, RecursionError):
            raise AuthenticationError(
                f"the docker config {path} is not valid JSON",
                advice="fix or remove it, or give credentials with NOTARY_AUTH",
            ) from None
        if not isinstance(config, dict):
            raise AuthenticationError(f"the docker config {path} is not a JSON object")
        return config

    def _from_docker_config(self, host: str) -> tuple[str, str] | None:
        config = self._read_docker_config()
        if config is None:
            return None
        path = self.docker_config_path()
        auths = config.get("auths")
        entry_key, entry = None, None
        if isinstance(auths, dict):
            # The exact key first, then any that names the same host (docker's order).
            candidates = [(host, auths.get(host)), *auths.items()]
            for key, value in candidates:
                if isinstance(key, str) and _host_key(key) == host and isinstance(value, dict):
                    entry_key, entry = key, value
                    break
        helpers = config.get("credHelpers")
        helper = None
        if isinstance(helpers, dict):
            for key, value in helpers.items():
                if isinstance(key, str) and _host_key(key) == host and isinstance(value, str):
                    helper = value
                    break
        if helper is None and isinstance(config.get("credsStore"), str):
            helper = config["credsStore"]
        if helper:
            found = self._run_helper(helper, entry_key or host)
            if found is not None:
                return found
        if entry is None:
            return None
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            return _decode_basic(auth, f"auths[{entry_key!r}].auth in {path}")
        username, password = entry.get("username"), entry.get("password")
        if isinstance(username, str) and username and isinstance(password, str):
            return username, password
        return None

    def _run_helper(self, name: str, server: str) -> tuple[str, str] | None:
        """``docker-credential-<name> get`` with ``server`` on stdin: JSON
        ``{"ServerURL","Username","Secret"}``, or "credentials not found"."""
        program = f"docker-credential-{name}"
        if not name or any(c in name for c in "/\\\0") or name.startswith(("-", ".")):
            raise AuthenticationError(f"invalid docker credential helper name {name!r}")
        path_var = self.environ.get("PATH")
        executable = shutil.which(program, path=path_var)
        if executable is None:
            raise AuthenticationError(
                f"the docker credential helper {program} is not on PATH",
                advice=f"install {program}, or remove it from the docker config",
            )
        try:
            done = subprocess.run(
                [executable, "get"],
                input=server.encode("utf-8"),
                capture_output=True,
                timeout=self._helper_timeout,
                check=False,
                env=dict(self.environ),
            )
        except subprocess.TimeoutExpired:
            raise AuthenticationError(
                f"the docker credential helper {program} did not answer within "
                f"{self._helper_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AuthenticationError(
                f"cannot run the docker credential helper {program}: {exc.strerror or exc}"
            ) from None
        if done.returncode != 0:
            if b"credentials not found" in done.stdout.lower():
                return None
            raise AuthenticationError(
                f"the docker credential helper {program} failed for {server} "
                f"(exit status {done.returncode})",
                advice=f"run: echo {server} | {program} get",
            )
        if len(done.stdout) > MAX_HELPER_OUTPUT:
            raise AuthenticationError(f"the docker credential helper {program} said too much")
        try:
            answer = strict_json(done.stdout)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise AuthenticationError(
                f"the docker credential helper {program} did not answer with a JSON object"
            )
        username, secret = answer.get("Username"), answer.get("Secret")
        if not isinstance(username, str) or not isinstance(secret, str):
            raise AuthenticationError(
                f"the docker credential helper {program} answered without Username and Secret"
            )
        if not username or username == "<token>":
            # "<token>" marks an identity (OAuth refresh) token, not a password.
            return None
        return username, secret


def credentials_for(
    host: str, *, environ: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """Basic credentials for ``host`` from ``NOTARY_AUTH`` or the docker config, or ``None``."""
    return Credentials(environ=environ).for_host(host)


# --------------------------------------------------------------------------- bounded sockets


@dataclass
class _Limits:
    """The bounds of the exchange running on this thread.

    ``deadline`` ends the whole exchange; ``cutoff`` is the latest time the
    next body bytes may come while keeping the minimum rate; ``cap`` is the
    most bytes a socket read may ask for (``None``: no cap; until the body
    starts, :data:`_HEADER_READ`, so that little of a body can come in with the
    headers). Times are ``time.monotonic()`` values.
    """

    deadline: float
    cutoff: float = float("inf")
    cap: int | None = _HEADER_READ


class _Bounds(threading.local):
    limits: _Limits | None = None


def _remaining(bounds: _Bounds, timeout: float | None, kind: type[Exception],
               *, reading: bool = False) -> float | None:
    limits = bounds.limits
    if limits is None:
        return timeout
    until = min(limits.deadline, limits.cutoff) if reading else limits.deadline
    left = until - time.monotonic()
    if left <= 0:
        raise kind("time limit reached")
    return left if timeout is None else min(timeout, left)


class _BoundedStream(httpcore.NetworkStream):
    """A socket whose every operation ends by the exchange's deadline, and whose
    reads ask for no more than the exchange still allows."""

    def __init__(self, inner: httpcore.NetworkStream, bounds: _Bounds) -> None:
        self._inner = inner
        self._bounds = bounds

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wait = _remaining(self._bounds, timeout, httpcore.ReadTimeout, reading=True)
        limits = self._bounds.limits
        if limits is not None and limits.cap is not None:
            max_bytes = max(1, min(max_bytes, limits.cap))
        return self._inner.read(max_bytes, wait)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(self._bounds, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _remaining(self._bounds, timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, wait),
                              self._bounds)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, bounds: _Bounds) -> None:
        self._inner = httpcore.SyncBackend()
        self._bounds = bounds

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        wait = _remaining(self._bounds, timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        return _BoundedStream(stream, self._bounds)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not used")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_EXCEPTIONS: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's (what ``httpx.HTTPTransport`` does)."""
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class _Transport(httpx.BaseTransport):
    """``httpx.HTTPTransport`` on a connection pool whose sockets obey :class:`_Limits`."""

    def __init__(self, ssl_context: ssl.SSLContext, bounds: _Bounds) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=8,
            max_keepalive_connections=4,
            keepalive_expiry=30.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_BoundedBackend(bounds),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.stream
        if not isinstance(content, httpx.SyncByteStream):
            raise TypeError("a synchronous request stream is needed")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=content,
            extensions=request.extensions,
        )
        with _httpx_errors():
            core_response = self._pool.handle_request(core_request)
        stream = core_response.stream
        if not isinstance(stream, Iterable):
            raise TypeError("a synchronous response stream is needed")
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(stream),
            extensions=core_response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# --------------------------------------------------------------------------- the fetcher


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def ssl_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    if ca_file is None:
        context = ssl.create_default_context()
    else:
        path = os.fspath(ca_file)
        try:
            context = ssl.create_default_context(cafile=path)
        except ssl.SSLError:
            raise RemoteError(
                f"the CA file {path} holds no usable PEM certificate",
                advice="give --tls-ca a PEM file of the CA certificate(s) that issued the "
                "server's certificate",
            ) from None
        except OSError as exc:
            raise RemoteError(
                f"cannot read the CA file {path}: {exc.strerror or exc}",
                advice="give --tls-ca the path of a readable PEM file",
            ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _split_base_url(base_url: str) -> SplitResult:
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port
    except ValueError as exc:
        raise RemoteError(f"invalid server URL {base_url!r}: {exc}") from None
    del port
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise RemoteError(
            f"invalid server URL {base_url!r}: it must be https://HOST[:PORT][/PATH]"
        )
    if parts.username is not None or parts.password is not None:
        raise RemoteError(
            "the server URL must not hold credentials",
            advice="give them with NOTARY_AUTH (base64 of user:password) or docker login",
        )
    if parts.query or parts.fragment:
        raise RemoteError(f"invalid server URL {base_url!r}: no query or fragment allowed")
    if scheme == "http" and not is_loopback(parts.hostname):
        raise RemoteError(
            f"refusing plain HTTP to {parts.hostname}: only loopback servers may be reached "
            "without TLS",
            advice="use an https:// URL",
        )
    return parts


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def os_reason(exc: BaseException) -> str:
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _header_safe(value: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in value)


@dataclass
class _Token:
    value: str
    until: float


@dataclass
class _Exchange:
    response: Response
    challenges: list[str]


def parse_token_response(body: bytes, source: str) -> tuple[str, int]:
    """A token service's answer: the bearer token and its lifetime in seconds."""
    try:
        document = strict_json(body)
    except (ValueError, RecursionError):
        raise AuthenticationError(f"{source} did not answer with JSON") from None
    if not isinstance(document, dict):
        raise AuthenticationError(f"{source} did not answer with a JSON object")
    value = document.get("access_token") or document.get("token")
    if not isinstance(value, str) or not value:
        raise AuthenticationError(f"{source} gave no token")
    if len(value) > MAX_TOKEN_LENGTH or not _header_safe(value):
        raise AuthenticationError(f"{source} gave a token that cannot be sent in a header")
    lifetime = document.get("expires_in", 0)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0:
        raise AuthenticationError(f"{source} gave an invalid expires_in")
    if lifetime == 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return value, min(lifetime, MAX_TOKEN_LIFETIME)


class HTTPSFetcher:
    """A :class:`~countersign.client.fetcher.Fetcher` over HTTPS (HTTP/1.1, keep-alive).

    ``base_url`` is ``https://HOST[:PORT][/PREFIX]`` (``http://`` only for a
    loopback host). ``ca_file`` is a PEM bundle trusted instead of the system
    store. ``timeout`` bounds each socket operation, ``deadline`` each whole
    exchange; after ``grace`` seconds of body the average rate must stay at or
    above ``min_rate`` bytes a second (``0`` turns the check off).
    ``credentials`` supplies basic credentials for the token service (none:
    anonymous tokens). Use as a context manager, or call :meth:`close`.

    Paths are given decoded (a GUN's characters as they are) and are
    percent-encoded here; an optional ``?query`` is sent as given.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        min_rate: float = DEFAULT_MIN_RATE,
        deadline: float = DEFAULT_DEADLINE,
        grace: float = DEFAULT_GRACE,
        credentials: Credentials | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if not timeout > 0 or not deadline > 0:
            raise ValueError("timeout and deadline must be positive")
        if not min_rate >= 0 or not grace >= 0:
            raise ValueError("min_rate and grace must not be negative")
        if not _header_safe(user_agent.replace(" ", "!")):
            raise ValueError("the user agent must be printable ASCII")
        parts = _split_base_url(base_url)
        netloc = parts.netloc.lower()
        prefix = parts.path.rstrip("/")
        self.base_url = f"{parts.scheme.lower()}://{netloc}{quote(prefix, safe=_PATH_SAFE + '%')}"
        self.host = netloc
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.min_rate = float(min_rate)
        self.grace = float(grace)
        self.credentials = credentials
        self.user_agent = user_agent
        self._bounds = _Bounds()
        self._client = httpx.Client(
            transport=_Transport(ssl_context(ca_file), self._bounds),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": user_agent, "accept-encoding": "identity"},
            # A jar that keeps nothing: a trust client has no use for cookies.
            cookies=http.cookiejar.CookieJar(
                policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
        )
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._current: tuple[str, str, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HTTPSFetcher({self.base_url!r})"

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; the fetcher is not usable afterwards."""
        self._client.close()
        with self._lock:
            self._tokens.clear()
            self._current = None

    def __enter__(self) -> HTTPSFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- Fetcher ----------------------------------------------------------------

    def get(self, path: str, *, max_length: int) -> Response:
        """GET ``path``; a body longer than ``max_length`` bytes is a :class:`DownloadError`."""
        return self.request("GET", path, max_length=max_length)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        max_length: int = 1 << 20,
    ) -> Response:
        """Send ``method`` to ``path``; any status is returned except a Bearer 401,
        which is answered with a token (see the module docstring)."""
        if not method or any(c not in _TCHAR for c in method):
            raise ValueError(f"invalid HTTP method {method!r}")
        if max_length < 0:
            raise ValueError("max_length must not be negative")
        url = self._url(path)
        what = f"{method} {url}"
        extra = {k.lower(): v for k, v in (headers or {}).items()}
        preset = "authorization" in extra
        sent = None if preset else self._current_token()
        if sent is not None:
            extra["authorization"] = f"Bearer {sent}"
        exchange = self._exchange(
            method, url, body, extra, max_length, what, answer_bearer=not preset
        )
        challenge = self._bearer(exchange, what) if not preset else None
        if challenge is None:
            return exchange.response
        token = self._token_for(challenge, what, rejected=sent)
        extra["authorization"] = f"Bearer {token}"
        retry = self._exchange(method, url, body, extra, max_length, what, answer_bearer=True)
        if retry.response.status == 401:
            self._forget(challenge, token)
            scope = " ".join(challenge.scopes) or "(no scope)"
            reason = next((c.error for c in self._parsed(retry.challenges) if c.error), "")
            raise AuthenticationError(
                f"{what}: the server refused the token for scope {scope}"
                + (f" ({reason})" if reason else ""),
                advice="check that the account may do this (pull, push or *) on that "
                "repository, and the credentials given (NOTARY_AUTH, docker login)",
            )
        with self._lock:
            self._current = (challenge.realm, challenge.service, challenge.scopes)
        return retry.response

    # -- one exchange -----------------------------------------------------------

    def _url(self, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        raw, question, query = path.partition("?")
        target = quote(raw, safe=_PATH_SAFE)
        if question:
            target += "?" + quote(query, safe=_QUERY_SAFE)
        return self.base_url + target

    def _exchange(
        self,
        method: str,
        url: str | httpx.URL,
        body: bytes,
        headers: Mapping[str, str],
        max_length: int,
        what: str,
        *,
        answer_bearer: bool,
    ) -> _Exchange:
        limits = _Limits(deadline=time.monotonic() + self.deadline)
        self._bounds.limits = limits
        try:
            with_body = bool(body) or method in ("POST", "PUT", "PATCH")
            first = min(self.timeout, self.deadline)
            try:
                request = self._client.build_request(
                    method,
                    url,
                    content=body if with_body else None,
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, connect=first, pool=first),
                )
            except (httpx.InvalidURL, ValueError) as exc:
                raise RemoteError(f"{what}: cannot build the request: {exc}") from None
            try:
                response = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._unavailable(exc, what, limits) from None
            try:
                challenges = response.headers.get_list("www-authenticate")
                discard = (
                    answer_bearer
                    and response.status_code == 401
                    and any(is_bearer_challenge(c) for c in challenges)
                )
                if discard:
                    try:
                        data = self._read_body(response, _DISCARD_LIMIT, what, limits)
                    except DownloadError:
                        data = b""
                elif method == "HEAD":
                    data = b""
                else:
                    data = self._read_body(response, max_length, what, limits)
                lowered = {k.lower(): v for k, v in response.headers.items()}
                return _Exchange(Response(response.status_code, data, lowered), challenges)
            finally:
                response.close()
        finally:
            self._bounds.limits = None

    def _unavailable(self, exc: httpx.TransportError, what: str,
                     limits: _Limits) -> ServerUnavailableError:
        tls = ssl_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            reason = tls.verify_message or tls.reason or str(tls)
            if tls.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME / IP_ADDRESS_MISMATCH
                return ServerUnavailableError(
                    f"{what}: the server's TLS certificate was not trusted: {reason}",
                    advice="use the host name (or address) the certificate was issued for",
                )
            return ServerUnavailableError(
                f"{what}: the server's TLS certificate was not trusted: {reason}",
                advice="pass the CA certificate that issued it with --tls-ca",
            )
        if tls is not None:
            return ServerUnavailableError(
                f"{what}: the TLS handshake failed: {tls.reason or tls}",
                advice="check that the server speaks HTTPS on that port",
            )
        if isinstance(exc, httpx.TimeoutException):
            if time.monotonic() >= limits.deadline:
                return ServerUnavailableError(
                    f"{what}: no answer within the {self.deadline:g} s deadline"
                )
            phase = {
                httpx.ConnectTimeout: "connecting",
                httpx.WriteTimeout: "sending the request",
                httpx.PoolTimeout: "waiting for a free connection",
            }.get(type(exc), "waiting for the answer")
            return ServerUnavailableError(
                f"{what}: timed out after {self.timeout:g} s {phase}"
            )
        if isinstance(exc, httpx.ConnectError):
            return ServerUnavailableError(
                f"{what}: cannot connect to {self.host}: {os_reason(exc)}",
                advice="check the server URL and that the server is running",
            )
        if isinstance(exc, httpx.LocalProtocolError):
            return ServerUnavailableError(f"{what}: cannot send the request: {exc}")
        if isinstance(exc, httpx.ProtocolError):
            return ServerUnavailableError(f"{what}: the server broke HTTP/1.1: {exc}")
        return ServerUnavailableError(f"{what}: {os_reason(exc)}")

    def _read_body(self, response: httpx.Response, limit: int, what: str,
                   limits: _Limits) -> bytes:
        announced = response.headers.get("content-length")
        if (announced is not None and announced.strip().isascii() and announced.strip().isdigit()
                and int(announced) > limit):
            raise DownloadError(
                f"{what}: the server announced {int(announced)} bytes (Content-Length), "
                f"more than the {limit} allowed"
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DownloadError(
                f"{what}: the body is {encoding}-encoded although only identity was accepted"
            )
        body = bytearray()
        start = time.monotonic()
        limits.cap = limit + 1
        limits.cutoff = self._cutoff(start, 0, limits)
        chunks = response.iter_raw()
        while True:
            try:
                chunk = next(chunks, None)
            except httpx.TransportError as exc:
                raise self._broken(exc, what, start, len(body), limits) from None
            if chunk is None:
                return bytes(body)
            if len(body) + len(chunk) > limit:
                raise DownloadError(
                    f"{what}: the server sent more than the {limit} bytes allowed",
                    advice="a server sending endless data is either broken or attacking",
                )
            body += chunk
            now = time.monotonic()
            elapsed = now - start
            if now > limits.deadline:
                raise DownloadError(
                    f"{what}: the download took longer than the {self.deadline:g} s deadline"
                )
            if self.min_rate and elapsed > self.grace and len(body) < self.min_rate * elapsed:
                raise self._slow(what, len(body), elapsed)
            limits.cap = limit + 1 - len(body)
            limits.cutoff = self._cutoff(start, len(body), limits)

    def _cutoff(self, start: float, received: int, limits: _Limits) -> float:
        if not self.min_rate:
            return limits.deadline
        return min(limits.deadline, start + max(self.grace, received / self.min_rate))

    def _slow(self, what: str, received: int, elapsed: float) -> DownloadError:
        return DownloadError(
            f"{what}: slow retrieval: {received} bytes in {elapsed:.1f} s, below the "
            f"minimum of {self.min_rate:g} bytes/s",
            advice="a server trickling data is either overloaded or attacking; try again later",
        )

    def _broken(self, exc: httpx.TransportError, what: str, start: float, received: int,
                limits: _Limits) -> DownloadError:
        now = time.monotonic()
        if isinstance(exc, httpx.TimeoutException):
            if now >= limits.deadline:
                return DownloadError(
                    f"{what}: the download took longer than the {self.deadline:g} s deadline"
                )
            if now >= limits.cutoff:
                return self._slow(what, received, now - start)
            return DownloadError(f"{what}: no data for {self.timeout:g} s after {received} bytes")
        return DownloadError(f"{what}: the body was cut short after {received} bytes: "
                             f"{os_reason(exc)}")

    # -- tokens -----------------------------------------------------------------

    @staticmethod
    def _parsed(challenges: Iterable[str]) -> list[BearerChallenge]:
        parsed = []
        for value in challenges:
            if is_bearer_challenge(value):
                with contextlib.suppress(CountersignError):
                    parsed.append(parse_challenge(value))
        return parsed

    def _bearer(self, exchange: _Exchange, what: str) -> BearerChallenge | None:
        if exchange.response.status != 401:
            return None
        for value in exchange.challenges:
            if is_bearer_challenge(value):
                try:
                    return parse_challenge(value)
                except AuthenticationError as exc:
                    raise AuthenticationError(f"{what}: {exc.message}", advice=exc.advice) from None
        return None

    def _current_token(self) -> str | None:
        with self._lock:
            if self._current is None:
                return None
            token = self._tokens.get(self._current)
            if token is None or token.until <= time.monotonic():
                return None
            return token.value

    def _forget(self, challenge: BearerChallenge, value: str) -> None:
        key = (challenge.realm, challenge.service, challenge.scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.value == value:
                del self._tokens[key]
            if self._current == key:
                self._current = None

    def _token_for(self, challenge: BearerChallenge, what: str, *, rejected: str | None) -> str:
        key = (challenge.realm, challenge.service, challenge.scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.until > time.monotonic() and token.value != rejected:
                return token.value
            self._tokens.pop(key, None)
        value, lifetime = self._fetch_token(challenge, what)
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + lifetime)
        return value

    def _fetch_token(self, challenge: BearerChallenge, what: str) -> tuple[str, int]:
        scope = " ".join(challenge.scopes) or "(no scope)"
        realm = urlsplit(challenge.realm)
        if realm.scheme != "https" and not is_loopback(realm.hostname):
            raise AuthenticationError(
                f"{what}: the token service {challenge.realm} is not HTTPS; "
                "no credentials are sent to it",
                advice="configure the server's auth.options.realm with an https:// URL",
            )
        creds = self.credentials.for_host(self.host) if self.credentials is not None else None
        params: dict[str, str | list[str]] = {}
        if challenge.service:
            params["service"] = challenge.service
        if challenge.scopes:
            params["scope"] = list(challenge.scopes)
        url = httpx.URL(challenge.realm).copy_merge_params(params)
        headers: dict[str, str] = {}
        if creds is not None:
            pair = f"{creds[0]}:{creds[1]}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        token_what = f"GET {challenge.realm} (token for {scope})"
        answer = self._exchange(
            "GET", url, b"", headers, MAX_TOKEN_RESPONSE, token_what, answer_bearer=False
        ).response
        if answer.status in (401, 403):
            who = f"the credentials for {self.host}" if creds else "an anonymous request"
            raise AuthenticationError(
                f"{what}: the token service {challenge.realm} refused {who} "
                f"(HTTP {answer.status}) for scope {scope}",
                advice="check the username and password (NOTARY_AUTH, or docker login)"
                if creds
                else "give credentials with NOTARY_AUTH (base64 of user:password) or "
                "docker login",
            )
        if answer.status != 200:
            raise ServerUnavailableError(
                f"{what}: the token service {challenge.realm} answered HTTP {answer.status}"
            )
        return parse_token_response(answer.body, f"{what}: the token service {challenge.realm}")

