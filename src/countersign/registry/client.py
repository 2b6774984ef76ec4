"""A typed client for the OCI Distribution API (Docker registry v2) on ``httpx``.

:class:`RegistryClient` talks to one registry (``host[:port]``) over HTTPS,
or plain HTTP only for a loopback registry when asked (``insecure=True``).

What it guarantees:

* **Bounds.** Manifests, tag pages, referrers lists and token answers are read
  up to fixed limits (a ``Content-Length`` above the limit is refused before
  the body is read); every request has ``timeout`` seconds per socket
  operation; tag and referrers pagination stops after :data:`MAX_PAGES`.
* **Blobs are verified while streamed.** :meth:`RegistryClient.stream_blob`
  and :meth:`RegistryClient.fetch_blob` hash as they read, refuse a body longer
  than the expected size (never asking the socket for more than one byte past
  it), and hold the last piece back until the sha256 and the size have been
  checked, so a corrupt blob never reaches the caller complete: they raise
  :class:`DigestMismatchError` (naming the digest) instead. Blob bodies from a
  real registry are read by :class:`~countersign.registry.blobhttp.BlobTransport`
  straight into reused buffers; :meth:`~RegistryClient.fetch_blob` hashes and
  hands them on in a second thread, so the network, the hash and the caller's
  writes overlap.
* **Manifests are returned exactly as served** (:class:`RawManifest`): the
  caller verifies them against the digest it trusts (:meth:`RawManifest.verify`).
* **Pushes are checked too**: a blob's content is hashed while it is sent and
  the last bytes are withheld if it does not match the digest given.
* **Typed errors**: the registry's ``{"errors": [{"code": ...}]}`` bodies
  become :class:`RegistryError` subclasses carrying the code, naming the
  repository, reference or digest, with advice where there is some.
* **Retries**: connection errors and HTTP 429/502/503/504 are retried up to
  ``retries`` times with exponential backoff (``Retry-After`` honoured, up to
  :data:`MAX_RETRY_AFTER` seconds); no other status is retried.
* **Auth**: a ``Bearer`` challenge starts the Docker token flow for the
  operation's scope (``repository:<repo>:pull``, ``…:pull,push``, plus
  ``repository:<from>:pull`` for a cross-repository mount); tokens are cached
  per scope until they expire. A ``Basic`` challenge is answered with the
  username and password. Credentials come from :class:`Credentials` (default:
  the docker ``config.json`` and its credential helpers). Credentials are
  never sent over plain HTTP except to a loopback host, nor in a redirect to
  another host.

The challenge parser, :class:`Credentials` (docker config and credential
helpers), the token-answer parser and the TLS context are those of
:mod:`countersign.client.http`.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
import hashlib
import http.cookiejar
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from countersign.client.http import (
    DEFAULT_USER_AGENT,
    MAX_TOKEN_RESPONSE,
    BearerChallenge,
    Credentials,
    is_bearer_challenge,
    is_loopback,
    os_reason,
    parse_challenge,
    parse_token_response,
    ssl_cause,
    ssl_context,
    strict_json,
)
from countersign.errors import AuthenticationError, CountersignError
from countersign.registry.blobhttp import READINTO, BlobTransport
from countersign.registry.oci import (
    ALL_MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    Descriptor,
    Digest,
    Index,
    Manifest,
    OCIFormatError,
    base_media_type,
    digest_of,
    encode,
    is_media_type,
    parse,
    parse_digest,
    parse_index,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PIECE_SIZE",
    "BlobUnknownError",
    "DigestMismatchError",
    "InvalidReferenceError",
    "ManifestHead",
    "ManifestUnknownError",
    "PushResult",
    "RawManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryLimitError",
    "RegistryProtocolError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
    "RepositoryUnknownError",
]

#: Size of the chunks :meth:`RegistryClient.stream_blob` yields and chunked uploads send.
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
#: Size of the pieces :meth:`RegistryClient.fetch_blob` reads and hands on. Larger
#: pieces gain nothing: each is filled by C code, with no Python per socket read.
PIECE_SIZE: Final = 512 * 1024
#: Pieces in flight between the network and the caller's ``write`` (one is held back,
#: so at least 2).
PIECE_DEPTH: Final = 8
#: Default timeout of each socket operation, in seconds.
DEFAULT_TIMEOUT: Final = 30.0
#: Longest a manifest, page, token or error body may take to arrive, in seconds
#: (checked between reads, each of which ``timeout`` bounds).
DEFAULT_DEADLINE: Final = 120.0
#: Largest blob :meth:`RegistryClient.get_blob` reads into memory by default.
DEFAULT_MAX_BLOB: Final = 16 * 1024 * 1024
#: Largest page of tags or referrers read.
MAX_PAGE: Final = 4 * 1024 * 1024
#: Most bytes read over all the pages of one listing.
MAX_LISTING: Final = 64 * 1024 * 1024
#: Most pages followed for one listing.
MAX_PAGES: Final = 1000
#: Largest error body read.
MAX_ERROR_BODY: Final = 64 * 1024
#: Most redirects followed for one blob.
MAX_REDIRECTS: Final = 5
#: Longest ``Retry-After`` honoured (and longest backoff), in seconds.
MAX_RETRY_AFTER: Final = 30.0
#: Statuses retried.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})

_REPOSITORY_RE: Final = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*",
    re.ASCII,
)
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
_MAX_REPOSITORY: Final = 255
_DOCKER_HUB: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


# --------------------------------------------------------------------------- errors


class RegistryError(CountersignError):
    """A registry did not do what was asked; ``code`` is its error code (or ``""``)."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None,
                 repository: str | None = None, reference: str | None = None,
                 detail: object = None, advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.code = code
        self.status = status
        self.repository = repository
        self.reference = reference
        self.detail = detail


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached, timed out, or kept answering 429/5xx."""


class RegistryAuthError(RegistryError):
    """Credentials are missing or were refused (HTTP 401/403, ``UNAUTHORIZED``, ``DENIED``)."""


class RepositoryUnknownError(RegistryError):
    """The repository does not exist (``NAME_UNKNOWN``)."""


class ManifestUnknownError(RegistryError):
    """No manifest for that tag or digest (``MANIFEST_UNKNOWN``)."""


class BlobUnknownError(RegistryError):
    """No blob with that digest (``BLOB_UNKNOWN``, ``MANIFEST_BLOB_UNKNOWN``)."""


class DigestMismatchError(RegistryError):
    """Content whose sha256 or size is not what its digest (or descriptor) says."""


class RegistryRejectedError(RegistryError):
    """The registry refused a request as invalid (HTTP 4xx other than 401/403/404)."""


class RegistryLimitError(RegistryError):
    """An answer larger than countersign reads (a manifest over 4 MiB, endless pages)."""


class RegistryProtocolError(RegistryError):
    """An answer that breaks the distribution protocol (bad header, status or body)."""


class InvalidReferenceError(RegistryError):
    """A registry, repository name or tag that is not valid."""


_CODES: Final[Mapping[str, type[RegistryError]]] = {
    "MANIFEST_UNKNOWN": ManifestUnknownError,
    "BLOB_UNKNOWN": BlobUnknownError,
    "MANIFEST_BLOB_UNKNOWN": BlobUnknownError,
    "NAME_UNKNOWN": RepositoryUnknownError,
    "UNAUTHORIZED": RegistryAuthError,
    "DENIED": RegistryAuthError,
    "DIGEST_INVALID": DigestMismatchError,
    "TOOMANYREQUESTS": RegistryUnavailableError,
}

_ADVICE: Final[Mapping[type[RegistryError], str]] = {
    ManifestUnknownError: "check the repository name and the tag or digest",
    BlobUnknownError: "push the blob (or the whole image) first, or check the digest",
    RepositoryUnknownError: "check the repository name; it exists once something is pushed",
    RegistryAuthError: "log in (docker login) or check that the account may use the "
                       "repository",
    RegistryUnavailableError: "try again later",
}


def _clean(text: object, limit: int = 200) -> str:
    """Untrusted text from a registry, printable and short."""
    value = text if isinstance(text, str) else repr(text)
    value = "".join(c if c.isprintable() else "?" for c in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RawManifest:
    """A manifest's bytes exactly as served, with the served media type (parameters
    dropped) and the registry's ``Docker-Content-Digest`` header (unverified)."""

    media_type: str
    data: bytes
    digest_header: str | None
    #: What was asked for, ``registry/repo:tag`` or ``registry/repo@digest``.
    reference: str = ""

    @property
    def digest(self) -> Digest:
        """The sha256 of :attr:`data` (computed here, not the header)."""
        return digest_of(self.data)

    def verify(self, expected: str) -> RawManifest:
        """``self`` when :attr:`data` has the ``expected`` digest, else a
        :class:`DigestMismatchError`."""
        wanted = parse_digest(expected)
        actual = self.digest
        if actual != wanted:
            raise DigestMismatchError(
                f"manifest {self.reference or wanted} does not match the digest {wanted}: "
                f"the registry served content with digest {actual}",
                reference=str(wanted),
                advice="the registry (or something between it and you) served other bytes; "
                "do not use them",
            )
        return self

    def parse(self) -> Manifest | Index:
        """:attr:`data` as a manifest or index (see :func:`countersign.registry.oci.parse`)."""
        return parse(self.data, self.media_type or None)


@dataclass(frozen=True)
class ManifestHead:
    """What a ``HEAD`` of a manifest tells: media type, size and digest header."""

    media_type: str
    size: int | None
    digest_header: str | None


class PushResult(enum.Enum):
    """What :meth:`RegistryClient.push_blob` had to do."""

    EXISTS = "exists"
    MOUNTED = "mounted"
    UPLOADED = "uploaded"


Source = bytes | Callable[[], Iterable[bytes]]


@dataclass
class _Token:
    value: str
    until: float


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` re-cut into pieces of exactly ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


ReadInto = Callable[[memoryview], int]


def _reader(response: httpx.Response) -> ReadInto:
    """``readinto`` for a streamed body: the socket's own with :class:`BlobTransport`,
    else one over ``iter_bytes`` (a test transport). It fills the buffer unless the
    body ends, and returns 0 at the end."""
    direct = response.extensions.get(READINTO)
    if direct is not None:
        return direct  # type: ignore[no-any-return]
    pieces = response.iter_bytes()
    leftover = memoryview(b"")

    def readinto(view: memoryview) -> int:
        nonlocal leftover
        filled = 0
        while filled < len(view):
            if not leftover:
                piece = next(pieces, None)
                if piece is None:
                    break
                leftover = memoryview(piece)
                continue
            count = min(len(leftover), len(view) - filled)
            view[filled:filled + count] = leftover[:count]
            leftover = leftover[count:]
            filled += count
        return filled

    return readinto


class _BlobCheck:
    """The bounds and the digest of one blob body, checked as it is read."""

    def __init__(self, source: str, repo: str, digest: Digest, expected_size: int | None,
                 max_size: int | None, what: str) -> None:
        self.source, self.repo, self.digest, self.what = source, repo, digest, what
        self.expected_size = expected_size
        self.limit = expected_size if expected_size is not None else max_size
        self.received = 0

    def room(self, size: int) -> int:
        """How much to ask of the socket next: never more than one byte past the limit."""
        if self.limit is None:
            return size
        return min(size, self.limit - self.received + 1)

    def read(self, readinto: ReadInto, view: memoryview) -> int:
        """One read into ``view``, counted and bounded; 0 at the end of the body."""
        try:
            count = readinto(view)
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"{self.what}: the body was cut short after {self.received} bytes: "
                f"{os_reason(exc)}", repository=self.repo, reference=self.digest,
                advice="try again") from None
        self.received += count
        if self.expected_size is not None and self.received > self.expected_size:
            raise DigestMismatchError(
                f"{self.source} is longer than the {self.expected_size} bytes expected",
                repository=self.repo, reference=self.digest,
                advice="the registry's copy is corrupt or tampered with; do not use it")
        if self.limit is not None and self.received > self.limit:
            raise RegistryLimitError(
                f"{self.source} is longer than the {self.limit} bytes allowed",
                repository=self.repo, reference=self.digest)
        return count

    def complete(self) -> None:
        """At the end of the body: it has the expected size."""
        if self.expected_size is not None and self.received != self.expected_size:
            raise DigestMismatchError(
                f"{self.source} has {self.received} bytes, not the {self.expected_size} "
                "expected", repository=self.repo, reference=self.digest,
                advice="the registry's copy is corrupt or truncated; do not use it")

    def verify(self, hexdigest: str) -> None:
        """The sha256 of everything read is the digest."""
        actual = "sha256:" + hexdigest
        if actual != self.digest:
            raise DigestMismatchError(
                f"{self.source} does not match its digest: the registry sent "
                f"{self.received} bytes with digest {actual}", repository=self.repo,
                reference=self.digest,
                advice="the registry's copy is corrupt or tampered with; do not use it")


_END: Final = object()
_ABORT: Final = object()


def _pump(readinto: ReadInto, write: Callable[[memoryview], object], check: _BlobCheck,
          ) -> None:
    """Read pieces (:data:`PIECE_SIZE`, :data:`PIECE_DEPTH` of them in flight) on this
    thread; hash and ``write`` them, in order, on a second one.

    The last piece is written only after :meth:`_BlobCheck.verify` passed. A failure
    on either side stops both: the reader stops reading, the writer stops writing
    (it keeps handing buffers back, so the reader never waits on it forever).
    """
    free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    for _ in range(PIECE_DEPTH):
        free.put(memoryview(bytearray(PIECE_SIZE)))
    full: queue.SimpleQueue[Any] = queue.SimpleQueue()
    failure: list[BaseException] = []

    def work() -> None:
        hasher = hashlib.sha256()
        held: tuple[memoryview, memoryview] | None = None
        failed = False
        while True:
            item = full.get()
            if item is _ABORT:
                return
            if item is _END:
                if not failed:
                    try:
                        check.verify(hasher.hexdigest())
                        if held is not None:
                            write(held[1])
                    except BaseException as exc:  # handed to the reader's thread
                        failure.append(exc)
                return
            buffer, piece = item
            if failed:
                free.put(buffer)
                continue
            try:
                hasher.update(piece)
                if held is not None:
                    write(held[1])
                    free.put(held[0])
                held = (buffer, piece)
            except BaseException as exc:  # handed to the reader's thread
                failure.append(exc)
                failed = True
                free.put(buffer)

    worker = threading.Thread(target=work, name="countersign-blob-writer", daemon=True)
    worker.start()
    ended = False
    try:
        while not failure:
            buffer = free.get()
            count = check.read(readinto, buffer[:check.room(PIECE_SIZE)])
            if not count:
                free.put(buffer)
                check.complete()
                full.put(_END)
                ended = True
                break
            full.put((buffer, buffer[:count]))
    finally:
        if not ended:
            full.put(_ABORT)
        worker.join()
    if failure:
        raise failure[0]


def _accept(accept: str | Sequence[str]) -> str:
    """An ``Accept`` header of media types (a single type may be given as a string)."""
    types = (accept,) if isinstance(accept, str) else tuple(accept)
    if not types or not all(is_media_type(t) for t in types):
        raise ValueError(f"invalid accepted media types {accept!r}")
    return ", ".join(types)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    return int(value)


def _parse_registry(registry: str) -> str:
    text = registry.strip() if isinstance(registry, str) else ""
    problem = ""
    if not text or "://" in text or any(c in text for c in "/?#@ \t") or not text.isascii():
        problem = "it must be host[:port], without a scheme or path"
    else:
        try:
            parts = urlsplit("//" + text)
            port = parts.port
        except ValueError:
            problem = "the port is not a number from 0 to 65535"
        else:
            if not parts.hostname:
                problem = "there is no host"
            elif port == 0:
                problem = "port 0"
            elif not _resolvable(parts.hostname):
                problem = "a dot-separated part of the host is empty or over 63 characters"
    if problem:
        raise InvalidReferenceError(
            f"invalid registry {_clean(registry)!s}: {problem}",
            advice="give the registry as host[:port], e.g. registry.example.com or "
            "127.0.0.1:5000",
        )
    return text.lower()


def _resolvable(host: str) -> bool:
    """Whether the resolver can encode ``host`` (IDNA: no label empty or over 63 characters);
    ``getaddrinfo`` raises ``UnicodeError`` otherwise, before any connection is tried."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _registry_tls(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    try:
        return ssl_context(ca_file)
    except CountersignError as exc:
        raise RegistryError(exc.message, advice=exc.advice) from None


class _SharedTLS:
    """The client's TLS context, built on first use and then shared by both transports
    (the CA store is loaded once)."""

    def __init__(self, ca_file: str | os.PathLike[str] | None) -> None:
        self._ca_file = ca_file
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = _registry_tls(self._ca_file)
            return self._context


def _https_transport(context: ssl.SSLContext) -> httpx.HTTPTransport:
    return httpx.HTTPTransport(verify=context, trust_env=False, retries=0)


class _SchemeTransport(httpx.BaseTransport):
    """Plain HTTP now, HTTPS (with a context built on first use) only when asked for.

    The plain transport's own context trusts nothing, so it can never complete a
    TLS handshake should a request for HTTPS ever reach it.
    """

    def __init__(self, tls: Callable[[], ssl.SSLContext]) -> None:
        self._tls = tls
        self._plain = httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
                                          trust_env=False, retries=0)
        self._secure: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        with self._lock:
            if self._secure is None:
                self._secure = _https_transport(self._tls())
            secure = self._secure
        return secure.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        with self._lock:
            if self._secure is not None:
                self._secure.close()


# --------------------------------------------------------------------------- the client


class RegistryClient:
    """One registry's distribution API; see the module docstring.

    ``registry`` is ``host[:port]``. ``ca_file`` is a PEM bundle trusted instead
    of the system store. ``insecure=True`` uses plain HTTP, allowed only for a
    loopback host unless ``allow_insecure_remote=True``. ``credentials``
    default to the docker ``config.json`` and its credential helpers (not
    ``NOTARY_AUTH``). ``timeout`` bounds each socket operation; ``retries`` is
    how often a connection error or 429/502/503/504 is retried, after
    ``backoff * 2**n`` seconds (waited with ``sleep``). A manifest, tag page,
    token or error body must arrive within ``deadline`` seconds (blobs have
    no overall deadline, only ``timeout`` per read). ``transport`` replaces
    the network (tests use :class:`~countersign.registry.memory.MemoryRegistry`).
    """

    def __init__(
        self,
        registry: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        allow_insecure_remote: bool = False,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        if not timeout > 0 or not deadline > 0:
            raise ValueError("timeout and deadline must be positive")
        if retries < 0 or not backoff >= 0:
            raise ValueError("retries and backoff must not be negative")
        self.registry = _parse_registry(registry)
        host = urlsplit("//" + self.registry).hostname
        self.loopback = is_loopback(host)
        if insecure and not self.loopback and not allow_insecure_remote:
            raise RegistryError(
                f"refusing plain HTTP to {self.registry}: only a loopback registry may be "
                "reached without TLS",
                advice="use HTTPS (give the registry's CA with ca_file), or allow an insecure "
                "remote registry explicitly",
            )
        self.insecure = insecure
        scheme = "http" if insecure else "https"
        api_host = "registry-1.docker.io" if self.registry in _DOCKER_HUB else self.registry
        self.base_url = httpx.URL(f"{scheme}://{api_host}")
        self._credential_host = "index.docker.io" if self.registry in _DOCKER_HUB \
            else self.registry
        self.credentials = credentials if credentials is not None \
            else Credentials(notary_auth=False)
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._blob_client: httpx.Client | None = None
        if transport is None:
            tls = _SharedTLS(ca_file)
            # Plain HTTP (a loopback registry) only needs TLS if it redirects to HTTPS:
            # loading the CA store is left until then.
            transport = _SchemeTransport(tls) if insecure else _https_transport(tls())
            self._blob_client = self._http_client(BlobTransport(tls, self.timeout),
                                                  user_agent)
        self._client = self._http_client(transport, user_agent)
        self._lock = threading.Lock()
        self._bearer: BearerChallenge | None = None
        self._basic = False
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._sleep = sleep

    def _http_client(self, transport: httpx.BaseTransport, user_agent: str) -> httpx.Client:
        return httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self.timeout),
            headers={"user-agent": user_agent, "accept-encoding": "identity"},
            cookies=http.cookiejar.CookieJar(
                policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and forget every token."""
        self._client.close()
        if self._blob_client is not None:
            self._blob_client.close()
        with self._lock:
            self._tokens.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- names ------------------------------------------------------------------

    @staticmethod
    def _repository(repo: str) -> str:
        if (not isinstance(repo, str) or len(repo) > _MAX_REPOSITORY
                or not _REPOSITORY_RE.fullmatch(repo)):
            raise InvalidReferenceError(
                f"invalid repository name {_clean(repo)}",
                advice="a repository is lowercase letters and digits in /-separated "
                "components, joined by '.', '_', '__' or dashes (at most 255 characters)",
            )
        return repo

    @staticmethod
    def _reference(reference: str) -> str:
        if isinstance(reference, str) and ":" in reference:
            return parse_digest(reference)
        if not isinstance(reference, str) or not _TAG_RE.fullmatch(reference):
            raise InvalidReferenceError(
                f"invalid tag {_clean(reference)}",
                advice="a tag is up to 128 letters, digits, '_', '.' and '-', not starting "
                "with '.' or '-'; or give a sha256:<hex> digest",
            )
        return reference

    def _name(self, repo: str, reference: str | None = None) -> str:
        if reference is None:
            return f"{self.registry}/{repo}"
        joiner = "@" if ":" in reference else ":"
        return f"{self.registry}/{repo}{joiner}{reference}"

    @staticmethod
    def _scope(repo: str, actions: str = "pull") -> str:
        return f"repository:{repo}:{actions}"

    def _url(self, path: str) -> httpx.URL:
        return self.base_url.copy_with(raw_path=path.encode("ascii"))

    # -- public API ---------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry speaks the v2 API (``GET /v2/``); a 401 is fine
        (its challenge is remembered for later requests)."""
        what = f"checking the registry {self.registry}"
        with self._open("GET", self._url("/v2/"), what=what, authenticate=False) as response:
            status = response.status_code
            if status == 200:
                return
            if status == 401 and response.headers.get_list("www-authenticate"):
                self._learn(response, what, required=False)
                return
            if status == 404:
                raise RegistryProtocolError(
                    f"{what}: GET /v2/ answered 404; this is not an OCI distribution registry",
                    status=404, advice="check the host and port",
                )
            raise self._error(response, what)

    def get_manifest(self, repo: str, reference: str, *,
                     accept: str | Sequence[str] = ALL_MANIFEST_MEDIA_TYPES) -> RawManifest:
        """The manifest at ``reference`` (a tag or a digest), exactly as served.

        At most :data:`~countersign.registry.oci.MAX_MANIFEST_SIZE` bytes are read;
        the caller verifies the bytes (:meth:`RawManifest.verify`).
        """
        repo, reference = self._repository(repo), self._reference(reference)
        name = self._name(repo, reference)
        what = f"pulling manifest {name}"
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        headers = {"accept": _accept(accept)}
        with self._open("GET", url, what=what, scopes=(self._scope(repo),),
                        headers=headers) as response:
            if response.status_code != 200:
                raise self._error(response, what, repository=repo, reference=reference,
                                  missing=ManifestUnknownError, name=name)
            data = self._read(response, MAX_MANIFEST_SIZE, what, kind="manifest")
            media_type = base_media_type(response.headers.get("content-type", ""))
            digest_header = response.headers.get("docker-content-digest")
        return RawManifest(media_type, data, digest_header, name)

    def head_manifest(
        self, repo: str, reference: str, *,
        accept: str | Sequence[str] = ALL_MANIFEST_MEDIA_TYPES,
    ) -> ManifestHead | None:
        """``HEAD`` of a manifest: ``None`` when there is none."""
        repo, reference = self._repository(repo), self._reference(reference)
        name = self._name(repo, reference)
        what = f"checking manifest {name}"
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        with self._open("HEAD", url, what=what, scopes=(self._scope(repo),),
                        headers={"accept": _accept(accept)}) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._error(response, what, repository=repo, reference=reference,
                                  missing=ManifestUnknownError, name=name)
            return ManifestHead(base_media_type(response.headers.get("content-type", "")),
                                _content_length(response),
                                response.headers.get("docker-content-digest"))

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str, *,
                     referrers_fallback: bool = True) -> Digest:
        """Push ``data`` as the manifest at ``reference`` (a tag, or its own digest);
        returns its digest.

        When the manifest has a ``subject`` and the registry does not say it
        handled it (no ``OCI-Subject`` header: it has no referrers API), the
        referrers tag ``sha256-<subject hex>`` is updated, as the distribution
        spec asks of clients (``referrers_fallback=False`` turns that off).
        """
        repo, reference = self._repository(repo), self._reference(reference)
        data = bytes(data)
        name = self._name(repo, reference)
        if not is_media_type(media_type):
            raise ValueError(f"invalid media type {media_type!r}")
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryLimitError(
                f"manifest for {name} is {len(data)} bytes, more than the "
                f"{MAX_MANIFEST_SIZE} registries accept", repository=repo, reference=reference)
        digest = digest_of(data)
        if ":" in reference and reference != digest:
            raise DigestMismatchError(
                f"manifest for {name} has digest {digest}, not the {reference} it is pushed as",
                repository=repo, reference=reference)
        what = f"pushing manifest {name}"
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        with self._open("PUT", url, what=what, scopes=(self._scope(repo, "pull,push"),),
                        headers={"content-type": media_type}, body=data) as response:
            if response.status_code not in (200, 201, 202):
                # the digest was checked here: DIGEST_INVALID means a bad descriptor
                raise self._error(response, what, repository=repo, reference=reference,
                                  missing=RepositoryUnknownError, name=name,
                                  remap={"DIGEST_INVALID": RegistryRejectedError})
            stored = response.headers.get("docker-content-digest")
            handled_subject = "oci-subject" in response.headers
        if stored is not None and stored.strip() != digest:
            raise DigestMismatchError(
                f"{what}: the registry stored it as {_clean(stored.strip())}, not as its "
                f"digest {digest}", repository=repo, reference=reference,
                advice="the registry rewrote the manifest; do not rely on its copy")
        if referrers_fallback and not handled_subject:
            self._update_referrers_tag(repo, data, media_type, digest)
        return digest

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The size of blob ``digest`` in ``repo`` (``HEAD``), or ``None`` when it has none."""
        repo, wanted = self._repository(repo), parse_digest(digest)
        what = f"checking blob {wanted} in {self._name(repo)}"
        return self._blob_size(repo, wanted, what, (self._scope(repo),))

    def _blob_size(self, repo: str, digest: Digest, what: str,
                   scopes: tuple[str, ...]) -> int | None:
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        with self._open("HEAD", url, what=what, scopes=scopes, follow=True) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._error(response, what, repository=repo, reference=digest,
                                  missing=BlobUnknownError)
            size = _content_length(response)
        if size is None:
            raise RegistryProtocolError(f"{what}: the registry gave no Content-Length",
                                        repository=repo, reference=digest)
        return size

    @contextlib.contextmanager
    def stream_blob(self, repo: str, digest: str, *, expected_size: int | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE,
                    max_size: int | None = None) -> Iterator[Iterator[bytes]]:
        """A context manager giving an iterator over blob ``digest``'s bytes, verified.

        The iterator yields chunks of ``chunk_size`` bytes (the last may be
        shorter) and ends only when the content's sha256 is ``digest`` and its
        size is ``expected_size`` (when given); otherwise it raises
        :class:`DigestMismatchError` before yielding the last chunk. A body
        longer than ``expected_size`` is refused as soon as it passes it;
        without ``expected_size``, one longer than ``max_size`` (if given) is a
        :class:`RegistryLimitError`. To write a large blob to a file,
        :meth:`fetch_blob` is faster.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        with self._blob_body(repo, digest, expected_size, max_size) as (response, check):
            yield self._verified(_reader(response), check, chunk_size)

    def fetch_blob(self, repo: str, digest: str, write: Callable[[memoryview], object], *,
                   expected_size: int | None = None, max_size: int | None = None) -> int:
        """Blob ``digest`` handed to ``write`` piece by piece, verified; returns its size.

        ``write`` is called from a second thread, in order, with a
        :class:`memoryview` of at most :data:`PIECE_SIZE` bytes that is valid only
        during the call (a file's ``write`` is right). It is never given the last
        piece unless the content's sha256 is ``digest`` and its size is
        ``expected_size`` (when given): a mismatch raises
        :class:`DigestMismatchError` instead, so what was written is an
        incomplete, unverified prefix the caller must discard (the layout writer
        stages it). Bounds are those of :meth:`stream_blob`; an exception raised
        by ``write`` stops the download and is raised here.
        """
        with self._blob_body(repo, digest, expected_size, max_size) as (response, check):
            _pump(_reader(response), write, check)
            return check.received

    @contextlib.contextmanager
    def _blob_body(self, repo: str, digest: str, expected_size: int | None,
                   max_size: int | None) -> Iterator[tuple[httpx.Response, _BlobCheck]]:
        """The checked ``200`` answer to ``GET`` of a blob, and the checks for its body."""
        repo, wanted = self._repository(repo), parse_digest(digest)
        if expected_size is not None and expected_size < 0:
            raise ValueError("expected_size must not be negative")
        what = f"pulling blob {wanted} from {self._name(repo)}"
        url = self._url(f"/v2/{repo}/blobs/{wanted}")
        with self._open("GET", url, what=what, scopes=(self._scope(repo),),
                        follow=True, lean=True) as response:
            if response.status_code != 200:
                raise self._error(response, what, repository=repo, reference=wanted,
                                  missing=BlobUnknownError)
            self._identity(response, what)
            announced = _content_length(response)
            if expected_size is not None and announced is not None and announced != expected_size:
                raise DigestMismatchError(
                    f"blob {wanted} from {self._name(repo)} is announced as {announced} bytes, "
                    f"not the {expected_size} expected", repository=repo, reference=wanted,
                    advice="the registry's copy or the manifest is wrong; do not use it")
            if expected_size is None and max_size is not None and announced is not None \
                    and announced > max_size:
                raise RegistryLimitError(
                    f"blob {wanted} from {self._name(repo)} is {announced} bytes, more than the "
                    f"{max_size} allowed", repository=repo, reference=wanted)
            source = f"blob {wanted} from {self._name(repo)}"
            yield response, _BlobCheck(source, repo, wanted, expected_size, max_size, what)

    def get_blob(self, repo: str, digest: str, *, expected_size: int | None = None,
                 max_size: int = DEFAULT_MAX_BLOB) -> bytes:
        """A whole (small) blob, verified: a config, say. At most ``max_size`` bytes."""
        with self.stream_blob(repo, digest, expected_size=expected_size,
                              max_size=max_size) as chunks:
            return b"".join(chunks)

    def push_blob(self, repo: str, digest: str, size: int, source: Source, *,
                  mount_from: str | None = None, chunked: bool = False,
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> PushResult:
        """Upload a blob unless ``repo`` already has it.

        ``source`` is the content, or a function giving an iterator over it
        (called again for each attempt). ``mount_from`` names a repository of
        the same registry to mount the blob from; a registry that cannot mount
        it answers with an upload session, which is then used. The upload is
        monolithic (POST, then one PUT) or ``chunked`` (POST, a PATCH per
        ``chunk_size`` bytes with ``Content-Range``, then PUT). The content is
        hashed while sent; if it does not have ``digest`` and ``size``, the
        last bytes are withheld and a :class:`DigestMismatchError` raised.
        """
        repo, wanted = self._repository(repo), parse_digest(digest)
        if mount_from is not None:
            mount_from = self._repository(mount_from)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError("size must be a non-negative integer")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        name = self._name(repo)
        produce: Callable[[], Iterable[bytes]]
        if isinstance(source, (bytes, bytearray, memoryview)):
            content = bytes(source)
            actual = digest_of(content)
            if len(content) != size or actual != wanted:
                raise DigestMismatchError(
                    f"the content given for blob {wanted} ({len(content)} bytes, digest "
                    f"{actual}) does not match its digest and size ({size} bytes)",
                    repository=repo, reference=wanted)
            produce = functools.partial(tuple, (content,))
        elif callable(source):
            produce = source
        else:
            raise TypeError("source must be bytes or a function returning an iterable of bytes")
        scopes: tuple[str, ...] = (self._scope(repo, "pull,push"),)
        what = f"pushing blob {wanted} to {name}"
        present = self._blob_size(repo, wanted, what, scopes)
        if present is not None:
            if present != size:
                raise DigestMismatchError(
                    f"{name} already has blob {wanted} with {present} bytes, not {size}",
                    repository=repo, reference=wanted,
                    advice="the size given (or the registry's copy) is wrong")
            return PushResult.EXISTS
        if mount_from is not None and mount_from != repo:
            scopes = (*scopes, self._scope(mount_from, "pull"))
        attempt = 0
        while True:
            try:
                return self._upload(repo, wanted, size, produce, mount_from, chunked,
                                    chunk_size, scopes, what)
            except RegistryUnavailableError:
                if attempt >= self.retries:
                    raise
            self._sleep(self._backoff_delay(attempt, None))
            attempt += 1

    def tags(self, repo: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repo``, following ``Link: <...>; rel="next"`` pages
        (``page_size`` asks for ``n`` tags a page)."""
        repo = self._repository(repo)
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be positive")
        what = f"listing the tags of {self._name(repo)}"
        url = self._url(f"/v2/{repo}/tags/list")
        if page_size is not None:
            url = url.copy_add_param("n", str(page_size))
        tags: list[str] = []
        for document, _headers in self._pages(url, what, repo, RepositoryUnknownError):
            if not isinstance(document, dict):
                raise RegistryProtocolError(f"{what}: a page is not a JSON object",
                                            repository=repo)
            page = document.get("tags")
            if page is None:
                continue
            if not isinstance(page, list):
                raise RegistryProtocolError(f"{what}: 'tags' is not an array", repository=repo)
            for tag in page:
                if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
                    raise RegistryProtocolError(
                        f"{what}: the registry listed an invalid tag {_clean(tag, 60)}",
                        repository=repo)
                tags.append(tag)
        return tags

    def referrers(self, repo: str, digest: str,
                  artifact_type: str | None = None) -> list[Descriptor]:
        """The manifests whose ``subject`` is ``digest`` (optionally of one ``artifact_type``).

        Uses the referrers API (``GET /v2/<repo>/referrers/<digest>``); a
        registry without it (404) is asked for the referrers tag
        ``sha256-<hex>`` instead. Descriptors are filtered here too, whatever
        the registry says it filtered.
        """
        repo, wanted = self._repository(repo), parse_digest(digest)
        found = self._referrers_api(repo, wanted, artifact_type)
        if found is None:
            try:
                raw = self.get_manifest(repo, wanted.tag, accept=(OCI_INDEX,))
            except ManifestUnknownError:
                return []
            try:
                index = parse_index(raw.data, raw.media_type or None)
            except OCIFormatError as exc:
                raise RegistryProtocolError(
                    f"the referrers tag {self._name(repo, wanted.tag)} is not an OCI index: "
                    f"{exc.message}", repository=repo, reference=wanted.tag) from None
            found = list(index.manifests)
        if artifact_type is not None:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    # -- blobs: verification and upload ---------------------------------------------

    @staticmethod
    def _verified(readinto: ReadInto, check: _BlobCheck, chunk_size: int) -> Iterator[bytes]:
        """The body in ``chunk_size`` pieces, each read straight into one buffer; bounds
        are checked on every read, and the last piece is held back until the digest has
        been checked."""
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(chunk_size))
        pending: bytes | None = None
        while count := check.read(readinto, buffer[:check.room(chunk_size)]):
            piece = bytes(buffer[:count])
            hasher.update(piece)
            if pending is not None:
                yield pending
            pending = piece
        check.complete()
        check.verify(hasher.hexdigest())
        if pending is not None:
            yield pending

    @staticmethod
    def _checked(chunks: Iterable[bytes], digest: Digest, size: int, repo: str,
                 ) -> Iterator[bytes]:
        """``chunks`` passed on, hashed; the last withheld unless digest and size match."""
        hasher = hashlib.sha256()
        total = 0
        pending: bytes | None = None
        for chunk in chunks:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError("a blob source must yield bytes")
            if not chunk:
                continue
            piece = bytes(chunk)
            total += len(piece)
            if total > size:
                raise DigestMismatchError(
                    f"the content given for blob {digest} is longer than its size, {size} bytes",
                    repository=repo, reference=digest)
            hasher.update(piece)
            if pending is not None:
                yield pending
            pending = piece
        actual = "sha256:" + hasher.hexdigest()
        if total != size or actual != digest:
            raise DigestMismatchError(
                f"the content given for blob {digest} ({total} bytes, digest {actual}) does "
                f"not match its digest and size ({size} bytes)",
                repository=repo, reference=digest)
        if pending is not None:
            yield pending

    def _upload(self, repo: str, digest: Digest, size: int,
                produce: Callable[[], Iterable[bytes]], mount_from: str | None, chunked: bool,
                chunk_size: int, scopes: tuple[str, ...], what: str) -> PushResult:
        url = self._url(f"/v2/{repo}/blobs/uploads/")
        if mount_from is not None and mount_from != repo:
            url = url.copy_merge_params({"mount": str(digest), "from": mount_from})
        with self._open("POST", url, what=what, scopes=scopes, body=b"",
                        retries=0) as response:
            status = response.status_code
            if status == 201 and mount_from is not None:
                self._check_stored(response, digest, what, repo)
                return PushResult.MOUNTED
            if status != 202:
                raise self._error(response, what, repository=repo, reference=digest,
                                  missing=RepositoryUnknownError)
            location = self._location(response, url, what)
        try:
            body: bytes | Callable[[], Iterable[bytes]]
            if chunked:
                location = self._patch_all(location, produce, digest, size, chunk_size,
                                           scopes, repo, what)
                body = b""
                headers = {"content-type": "application/octet-stream"}
            else:
                body = functools.partial(self._checked, _Replay(produce), digest, size, repo)
                headers = {"content-type": "application/octet-stream",
                           "content-length": str(size)}
            final = location.copy_add_param("digest", str(digest))
            with self._open("PUT", final, what=what, scopes=self._scopes_for(final, scopes),
                            headers=headers, body=body, retries=0) as response:
                if response.status_code not in (201, 204):
                    raise self._error(response, what, repository=repo, reference=digest,
                                      missing=BlobUnknownError)
                self._check_stored(response, digest, what, repo)
        except BaseException:
            self._cancel(location, scopes)
            raise
        return PushResult.UPLOADED

    def _patch_all(self, location: httpx.URL, produce: Callable[[], Iterable[bytes]],
                   digest: Digest, size: int, chunk_size: int, scopes: tuple[str, ...],
                   repo: str, what: str) -> httpx.URL:
        offset = 0
        for chunk in self._checked(_rechunk(produce(), chunk_size), digest, size, repo):
            end = offset + len(chunk) - 1
            headers = {"content-type": "application/octet-stream",
                       "content-range": f"{offset}-{end}"}
            with self._open("PATCH", location, what=what,
                            scopes=self._scopes_for(location, scopes), headers=headers,
                            body=chunk, retries=0) as response:
                if response.status_code != 202:
                    raise self._error(response, what, repository=repo, reference=digest,
                                      missing=RegistryRejectedError)
                stored = response.headers.get("range")
                if stored is not None and stored.strip() not in (f"0-{end}", f"bytes=0-{end}"):
                    raise RegistryProtocolError(
                        f"{what}: after bytes {offset}-{end} the registry holds "
                        f"{_clean(stored, 40)}", repository=repo, reference=digest,
                        advice="the upload lost data; push again")
                location = self._location(response, location, what)
            offset = end + 1
        return location

    def _cancel(self, location: httpx.URL, scopes: tuple[str, ...]) -> None:
        """Best effort: abandon an upload session."""
        with contextlib.suppress(CountersignError, httpx.HTTPError), self._open(
                "DELETE", location, what="cancelling an upload",
                scopes=self._scopes_for(location, scopes), retries=0):
            pass

    def _check_stored(self, response: httpx.Response, digest: Digest, what: str,
                      repo: str) -> None:
        stored = response.headers.get("docker-content-digest")
        if stored is not None and stored.strip() != digest:
            raise DigestMismatchError(
                f"{what}: the registry stored it as {_clean(stored.strip())}",
                repository=repo, reference=digest)

    # -- referrers ------------------------------------------------------------------

    def _referrers_api(self, repo: str, digest: Digest,
                       artifact_type: str | None) -> list[Descriptor] | None:
        what = f"listing the referrers of {self._name(repo, digest)}"
        url = self._url(f"/v2/{repo}/referrers/{digest}")
        if artifact_type is not None:
            url = url.copy_add_param("artifactType", artifact_type)
        found: list[Descriptor] = []
        try:
            for document, headers in self._pages(url, what, repo, None, raw=True,
                                                 accept=OCI_INDEX):
                try:
                    index = parse_index(bytes(document), base_media_type(
                        headers.get("content-type", "")) or None)
                except OCIFormatError as exc:
                    raise RegistryProtocolError(
                        f"{what}: the registry answered with no OCI index: {exc.message}",
                        repository=repo, reference=digest) from None
                found.extend(index.manifests)
        except _NotFound:
            return None
        return found

    def _update_referrers_tag(self, repo: str, data: bytes, media_type: str,
                              digest: Digest) -> None:
        try:
            document = parse(data, media_type)
        except OCIFormatError:
            return
        if document.subject is None:
            return
        if document.artifact_type is not None:
            artifact_type: str | None = document.artifact_type
        elif isinstance(document, Manifest):
            artifact_type = document.config.media_type
        else:
            artifact_type = None
        entry = Descriptor(document.media_type, digest, len(data),
                           annotations=dict(document.annotations), artifact_type=artifact_type)
        tag = document.subject.digest.tag
        try:
            raw = self.get_manifest(repo, tag, accept=(OCI_INDEX,))
        except ManifestUnknownError:
            existing: tuple[Descriptor, ...] = ()
        else:
            try:
                existing = parse_index(raw.data, raw.media_type or None).manifests
            except OCIFormatError as exc:
                raise RegistryProtocolError(
                    f"the referrers tag {self._name(repo, tag)} is not an OCI index: "
                    f"{exc.message}", repository=repo, reference=tag,
                    advice="delete that tag, then push again") from None
        if any(d.digest == digest for d in existing):
            return
        index = Index(OCI_INDEX, (*existing, entry))
        self.put_manifest(repo, tag, encode(index), OCI_INDEX, referrers_fallback=False)

    # -- pagination -------------------------------------------------------------------

    def _pages(self, url: httpx.URL, what: str, repo: str,
               missing: type[RegistryError] | None, *, raw: bool = False,
               accept: str = "application/json") -> Iterator[tuple[Any, httpx.Headers]]:
        seen = {str(url)}
        total = 0
        for _page in range(MAX_PAGES):
            with self._open("GET", url, what=what, scopes=(self._scope(repo),),
                            headers={"accept": accept}) as response:
                if response.status_code == 404 and missing is None:
                    raise _NotFound
                if response.status_code != 200:
                    raise self._error(response, what, repository=repo,
                                      missing=missing or RepositoryUnknownError)
                body = self._read(response, MAX_PAGE, what, kind="page")
                headers = response.headers
                following = response.links.get("next", {}).get("url")
            total += len(body)
            if total > MAX_LISTING:
                raise RegistryLimitError(f"{what}: more than {MAX_LISTING} bytes of pages",
                                         repository=repo)
            if raw:
                yield body, headers
            else:
                try:
                    document = strict_json(body)
                except (ValueError, RecursionError):
                    raise RegistryProtocolError(f"{what}: a page is not JSON",
                                                repository=repo) from None
                yield document, headers
            if not following:
                return
            url = self._resolve(url, following, what, same_origin=True)
            if str(url) in seen:
                raise RegistryProtocolError(f"{what}: the pages loop back to {url}",
                                            repository=repo)
            seen.add(str(url))
        raise RegistryLimitError(f"{what}: more than {MAX_PAGES} pages", repository=repo)

    # -- HTTP -------------------------------------------------------------------------

    def _same_origin(self, url: httpx.URL) -> bool:
        base = self.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    def _scopes_for(self, url: httpx.URL, scopes: tuple[str, ...]) -> tuple[str, ...]:
        return scopes if self._same_origin(url) else ()

    def _resolve(self, current: httpx.URL, location: str, what: str, *,
                 same_origin: bool = False) -> httpx.URL:
        try:
            target = current.join(location.strip())
        except (httpx.InvalidURL, ValueError):
            raise RegistryProtocolError(f"{what}: invalid URL {_clean(location)}") from None
        if target.scheme not in ("http", "https") or not target.host \
                or not _resolvable(target.host):
            raise RegistryProtocolError(f"{what}: invalid URL {_clean(location)}")
        if self._same_origin(target):
            return target
        if same_origin:
            raise RegistryProtocolError(
                f"{what}: the registry points to another host, {_clean(str(target))}")
        if target.scheme != "https" and not (self.insecure and is_loopback(target.host)):
            raise RegistryProtocolError(
                f"{what}: refusing to follow the registry to plain HTTP at "
                f"{_clean(str(target))}")
        return target

    def _location(self, response: httpx.Response, current: httpx.URL, what: str) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryProtocolError(f"{what}: the registry gave no upload Location")
        return self._resolve(current, location, what)

    @contextlib.contextmanager
    def _open(self, method: str, url: httpx.URL, *, what: str, scopes: tuple[str, ...] = (),
              headers: Mapping[str, str] | None = None,
              body: bytes | Callable[[], Iterable[bytes]] | None = None,
              authenticate: bool = True, retries: int | None = None,
              follow: bool = False, lean: bool = False) -> Iterator[httpx.Response]:
        """A streamed response (closed on exit), after retries, auth and redirects;
        ``lean``: through :class:`BlobTransport` when the network is real."""
        response = self._send(method, url, what=what, scopes=scopes, headers=headers,
                              body=body, authenticate=authenticate, retries=retries,
                              follow=follow, lean=lean)
        try:
            yield response
        finally:
            response.close()

    def _send(self, method: str, url: httpx.URL, *, what: str, scopes: tuple[str, ...],
              headers: Mapping[str, str] | None,
              body: bytes | Callable[[], Iterable[bytes]] | None, authenticate: bool,
              retries: int | None, follow: bool, lean: bool = False) -> httpx.Response:
        hops = 0
        while True:
            same = self._same_origin(url)
            response = self._attempt(method, url, what=what, scopes=scopes if same else (),
                                     headers=headers, body=body,
                                     authenticate=authenticate and same,
                                     retries=self.retries if retries is None else retries,
                                     lean=lean)
            if not follow or response.status_code not in _REDIRECTS:
                return response
            location = response.headers.get("location", "")
            response.close()
            if not location:
                raise RegistryProtocolError(f"{what}: a redirect without a Location")
            hops += 1
            if hops > MAX_REDIRECTS:
                raise RegistryProtocolError(f"{what}: more than {MAX_REDIRECTS} redirects")
            url = self._resolve(url, location, what)

    def _attempt(self, method: str, url: httpx.URL, *, what: str, scopes: tuple[str, ...],
                 headers: Mapping[str, str] | None,
                 body: bytes | Callable[[], Iterable[bytes]] | None, authenticate: bool,
                 retries: int, lean: bool = False) -> httpx.Response:
        client = self._blob_client if lean and self._blob_client is not None else self._client
        attempt = 0
        answered_challenge = False
        while True:
            sent = dict(headers or {})
            if authenticate:
                authorization = self._authorization(scopes, what)
                if authorization is not None:
                    sent["authorization"] = authorization
            content = body() if callable(body) else body
            try:
                request = client.build_request(method, url, headers=sent, content=content)
                response = client.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt < retries:
                    self._sleep(self._backoff_delay(attempt, None))
                    attempt += 1
                    continue
                raise self._unavailable(exc, what) from None
            status = response.status_code
            if status in RETRY_STATUSES and attempt < retries:
                delay = self._backoff_delay(attempt, response)
                response.close()
                self._sleep(delay)
                attempt += 1
                continue
            if status == 401 and authenticate:
                if answered_challenge:
                    reason = self._challenge_error(response)
                    response.close()
                    scope = " ".join(scopes) or "(no scope)"
                    raise RegistryAuthError(
                        f"{what}: the registry refused the credentials for {scope}"
                        + (f" ({_clean(reason, 60)})" if reason else ""),
                        code="UNAUTHORIZED", status=401,
                        advice="check the credentials (docker login) and that the account "
                        "may pull (or push) that repository")
                try:
                    learned = self._learn(response, what, required=True, scopes=scopes)
                finally:
                    response.close()
                if learned:
                    answered_challenge = True
                    continue
                raise RegistryAuthError(f"{what}: the registry wants authentication it did "
                                        "not describe (HTTP 401 without a challenge)",
                                        status=401)
            return response

    def _backoff_delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff * (2.0**attempt)
        if response is not None:
            after: str = response.headers.get("retry-after", "").strip()
            if after.isascii() and after.isdigit() and len(after) < 10:
                delay = max(delay, float(after))
        return min(delay, MAX_RETRY_AFTER)

    def _unavailable(self, exc: httpx.TransportError, what: str) -> RegistryUnavailableError:
        tls = ssl_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return RegistryUnavailableError(
                f"{what}: the TLS certificate of {self.registry} is not trusted: "
                f"{tls.verify_message or tls.reason or tls}",
                advice="give the CA certificate that issued the registry's certificate "
                "(ca_file), or use the host name the certificate was issued for")
        if tls is not None:
            return RegistryUnavailableError(
                f"{what}: TLS with {self.registry} failed: {tls.reason or tls}",
                advice="check that the registry speaks HTTPS on that port"
                + (" (or use insecure=True: it is a loopback registry)" if self.loopback
                   else ""))
        if isinstance(exc, httpx.TimeoutException):
            return RegistryUnavailableError(
                f"{what}: timed out after {self.timeout:g} s", advice="try again later")
        if isinstance(exc, httpx.ConnectError):
            return RegistryUnavailableError(
                f"{what}: cannot connect to {self.registry}: {os_reason(exc)}",
                advice="check the registry address and that it is running")
        return RegistryUnavailableError(f"{what}: {os_reason(exc)}", advice="try again later")

    def _identity(self, response: httpx.Response, what: str) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RegistryProtocolError(
                f"{what}: the body is {_clean(encoding, 30)}-encoded although only identity "
                "was accepted")

    def _read(self, response: httpx.Response, limit: int, what: str, *,
              kind: str = "answer") -> bytes:
        announced = _content_length(response)
        if announced is not None and announced > limit:
            raise RegistryLimitError(
                f"{what}: the {kind} is {announced} bytes, more than the {limit} allowed")
        self._identity(response, what)
        body = bytearray()
        until = time.monotonic() + self.deadline
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise RegistryLimitError(
                        f"{what}: the {kind} is longer than the {limit} bytes allowed")
                if time.monotonic() > until:
                    raise RegistryUnavailableError(
                        f"{what}: the {kind} took longer than {self.deadline:g} s "
                        f"({len(body)} bytes so far)", advice="try again later")
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"{what}: the answer was cut short after {len(body)} bytes: {os_reason(exc)}",
                advice="try again") from None
        return bytes(body)

    def _error(self, response: httpx.Response, what: str, *, repository: str | None = None,
               reference: str | None = None,
               missing: type[RegistryError] = RegistryRejectedError,
               name: str | None = None,
               remap: Mapping[str, type[RegistryError]] | None = None) -> RegistryError:
        """The typed error for an unwanted answer (the body is read, bounded).

        The class follows the first error code the registry gave (``remap``
        overrides :data:`_CODES`), else the status; the message names every code.
        """
        status = response.status_code
        errors: list[tuple[str, str, object]] = []
        if response.request.method != "HEAD":
            with contextlib.suppress(CountersignError, httpx.HTTPError):
                errors = self._error_body(self._read(response, MAX_ERROR_BODY, what))
        code, _message, detail = errors[0] if errors else ("", "", None)
        codes = {**_CODES, **(remap or {})}
        cls: type[RegistryError] | None = codes.get(code)
        if cls is None:
            if status in (401, 403):
                cls = RegistryAuthError
            elif status == 404:
                cls = missing
            elif status in RETRY_STATUSES or status >= 500:
                cls = RegistryUnavailableError
            elif 400 <= status < 500:
                cls = RegistryRejectedError
            else:
                cls = RegistryProtocolError
        said = f"HTTP {status}"
        if errors:
            said += " " + "; ".join(
                (c or "?") + (f": {m}" if m else "") for c, m, _ in errors)
        if cls is ManifestUnknownError:
            text = f"manifest {name or reference} is unknown to the registry ({said})"
        elif cls is BlobUnknownError and status == 404:
            text = f"blob {reference} is unknown in {self._name(repository or '')} ({said})"
        elif cls is RepositoryUnknownError:
            text = f"repository {self._name(repository or '')} is unknown to the registry " \
                   f"({said})"
        else:
            text = f"{what}: the registry answered {said}"
        return cls(text, code=code, status=status, repository=repository, reference=reference,
                   detail=detail, advice=_ADVICE.get(cls))

    @staticmethod
    def _error_body(body: bytes) -> list[tuple[str, str, object]]:
        """``(code, message, detail)`` of the first few ``errors`` of a registry's answer."""
        try:
            document = strict_json(body)
        except (ValueError, RecursionError):
            return []
        errors = document.get("errors") if isinstance(document, dict) else None
        if not isinstance(errors, list):
            return []
        found = []
        for entry in errors[:5]:
            if not isinstance(entry, dict):
                continue
            code, message = entry.get("code"), entry.get("message")
            code = code.upper() if isinstance(code, str) and re.fullmatch(
                r"[A-Za-z_]{1,64}", code) else ""
            found.append((code, _clean(message) if isinstance(message, str) else "",
                          entry.get("detail")))
        return found

    # -- authentication -------------------------------------------------------------

    def _user(self, what: str) -> tuple[str, str] | None:
        try:
            return self.credentials.for_host(self._credential_host)
        except AuthenticationError as exc:
            raise RegistryAuthError(f"{what}: {exc.message}", advice=exc.advice) from None

    @staticmethod
    def _challenge_error(response: httpx.Response) -> str:
        for value in response.headers.get_list("www-authenticate"):
            if is_bearer_challenge(value):
                with contextlib.suppress(CountersignError):
                    return parse_challenge(value).error
        return ""

    def _learn(self, response: httpx.Response, what: str, *, required: bool,
               scopes: tuple[str, ...] = ()) -> bool:
        """Remember the challenge of a 401; whether a retry can now authenticate."""
        challenges = response.headers.get_list("www-authenticate")
        for value in challenges:
            if is_bearer_challenge(value):
                try:
                    challenge = parse_challenge(value)
                except AuthenticationError as exc:
                    raise RegistryAuthError(f"{what}: {exc.message}", advice=exc.advice,
                                            status=401) from None
                with self._lock:
                    self._bearer = challenge
                    self._basic = False
                    for key in [k for k in self._tokens if k[2] == scopes]:
                        del self._tokens[key]
                if required:
                    self._token(scopes, challenge.scopes, what)
                return True
        for value in challenges:
            if value.strip().split(" ", 1)[0].lower() == "basic":
                if not required:
                    with self._lock:
                        self._basic = True
                    return True
                if self._user(what) is None:
                    raise RegistryAuthError(
                        f"{what}: the registry wants a username and password",
                        code="UNAUTHORIZED", status=401,
                        advice=f"log in with: docker login {self.registry}")
                if self.base_url.scheme != "https" and not self.loopback:
                    raise RegistryAuthError(
                        f"{what}: the registry wants a password, which is not sent over "
                        "plain HTTP", status=401, advice="use HTTPS")
                with self._lock:
                    self._basic = True
                return True
        return False

    def _authorization(self, scopes: tuple[str, ...], what: str) -> str | None:
        with self._lock:
            basic, bearer = self._basic, self._bearer
        if basic:
            user = self._user(what)
            if user is None:
                return None
            if self.base_url.scheme != "https" and not self.loopback:
                return None
            pair = f"{user[0]}:{user[1]}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if bearer is None:
            return None
        return "Bearer " + self._token(scopes, (), what)

    def _token(self, scopes: tuple[str, ...], extra: Sequence[str], what: str) -> str:
        with self._lock:
            bearer = self._bearer
        if bearer is None:
            raise RegistryAuthError(f"{what}: no token service is known")
        key = (bearer.realm, bearer.service, scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.until > time.monotonic():
                return token.value
        wanted = tuple(dict.fromkeys((*scopes, *extra)))
        value, lifetime = self._fetch_token(bearer, wanted, what)
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + lifetime)
        return value

    def _fetch_token(self, challenge: BearerChallenge, scopes: tuple[str, ...],
                     what: str) -> tuple[str, int]:
        scope = " ".join(scopes) or "(no scope)"
        realm = urlsplit(challenge.realm)
        if realm.scheme != "https" and not is_loopback(realm.hostname):
            raise RegistryAuthError(
                f"{what}: the token service {_clean(challenge.realm)} is not HTTPS; "
                "no credentials are sent to it", status=401,
                advice="the registry's token realm must be an https:// URL")
        user = self._user(what)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params += [("scope", s) for s in scopes]
        try:
            url = httpx.URL(challenge.realm).copy_merge_params(params)
        except (httpx.InvalidURL, ValueError):
            raise RegistryAuthError(f"{what}: invalid token realm {_clean(challenge.realm)}",
                                    status=401) from None
        headers: dict[str, str] = {"accept": "application/json"}
        if user is not None:
            pair = f"{user[0]}:{user[1]}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        token_what = f"{what}: asking {_clean(challenge.realm)} for a token for {scope}"
        with self._open("GET", url, what=token_what, headers=headers,
                        authenticate=False) as answer:
            status = answer.status_code
            if status in (401, 403):
                who = f"the credentials for {self.registry}" if user else "an anonymous request"
                raise RegistryAuthError(
                    f"{what}: the token service {_clean(challenge.realm)} refused {who} "
                    f"(HTTP {status}) for {scope}", code="UNAUTHORIZED", status=status,
                    advice="check the username and password (docker login)" if user
                    else f"log in with: docker login {self.registry}")
            if status != 200:
                raise RegistryUnavailableError(
                    f"{what}: the token service {_clean(challenge.realm)} answered HTTP "
                    f"{status}", status=status, advice="try again later")
            body = self._read(answer, MAX_TOKEN_RESPONSE, token_what, kind="token answer")
        try:
            return parse_token_response(body, f"{what}: the token service")
        except AuthenticationError as exc:
            raise RegistryAuthError(exc.message, status=401) from None


class _Replay:
    """An iterable that asks ``produce`` for a fresh iterable each time it is iterated."""

    def __init__(self, produce: Callable[[], Iterable[bytes]]) -> None:
        self._produce = produce

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._produce())


class _NotFound(Exception):
    """Internal: a listing endpoint the registry does not have (HTTP 404)."""
