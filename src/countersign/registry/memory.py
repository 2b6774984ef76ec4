"""An in-memory OCI distribution registry, as an ``httpx.MockTransport`` handler.

In the spirit of python-tuf's ``RepositorySimulator``: the registry's state is
plain dictionaries that a test can read and change, and hooks let a test make
the registry misbehave::

    registry = MemoryRegistry()
    client = registry.client()                  # a RegistryClient on this registry
    digest = registry.add_blob("demo/app", b"layer bytes")
    registry.tamper_blob(digest, b"other bytes")  # served under the old digest
    registry.fail_next(2, status=503)             # the next two requests fail

It implements what :class:`~countersign.registry.client.RegistryClient` uses:
``/v2/``; manifests (GET/HEAD/PUT/DELETE, ``Accept`` negotiation, checks that
referenced blobs and manifests exist, ``OCI-Subject``); blobs (HEAD/GET/DELETE,
optionally redirected to another host); uploads (POST, monolithic PUT,
chunked PATCH with ``Content-Range``, cross-repository mounts, status, cancel);
tag lists with ``n``/``last`` pagination and ``Link`` headers; the referrers
API (``artifactType`` filter, pagination), or none, to make clients fall back
to the referrers tag; and, optionally, Docker token authentication with a
token service on another host (:class:`TokenAuth`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

from countersign.client.http import Credentials
from countersign.registry.client import RegistryClient
from countersign.registry.oci import (
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
    parse,
    parse_digest,
)

__all__ = ["BLOB_HOST", "DEFAULT_HOST", "MemoryRegistry", "TokenAuth"]

DEFAULT_HOST: Final = "registry.memory.test"
#: Where blobs are redirected to when ``redirect_blobs`` is set.
BLOB_HOST: Final = "blobs.memory.test"

_ROUTE: Final = re.compile(
    r"/v2/(?P<name>.+?)/(?P<kind>manifests|blobs/uploads|blobs|tags/list|referrers)"
    r"(?:/(?P<rest>.*))?"
)
_NAME_RE: Final = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

Responder = Callable[[httpx.Request], httpx.Response]


@dataclass
class TokenAuth:
    """Docker token authentication for a :class:`MemoryRegistry`.

    ``users`` maps usernames to passwords; ``grants`` maps a username (``None``
    for anonymous requests) to repositories (``"*"`` for any) and the actions
    allowed there (``{"pull"}``, ``{"pull", "push"}``).
    """

    realm: str = "https://auth.memory.test/token"
    service: str = "memory-registry"
    users: Mapping[str, str] = field(default_factory=dict)
    grants: Mapping[str | None, Mapping[str, Collection[str]]] = field(default_factory=dict)
    expires_in: int = 300

    def allowed(self, user: str | None, repo: str) -> set[str]:
        rules = self.grants.get(user, {})
        return set(rules.get(repo, ())) | set(rules.get("*", ()))


@dataclass
class _Repo:
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Upload:
    repo: str
    data: bytearray = field(default_factory=bytearray)
    state: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class _Grant:
    user: str | None
    access: dict[str, set[str]]
    until: float


@dataclass
class _Fault:
    count: int
    status: int | None
    method: str | None
    path: str | None
    retry_after: str | None


def _errors(status: int, code: str, message: str, detail: object = None,
            headers: Mapping[str, str] | None = None) -> httpx.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return httpx.Response(status, json=body, headers=dict(headers or {}))


class MemoryRegistry:
    """An OCI distribution registry in memory; see the module docstring.

    ``host`` is the ``host[:port]`` clients use. ``page_size`` caps every tag
    and referrers page (``None``: no cap unless the client asks with ``n``).
    ``referrers_api=False`` answers the referrers endpoint with a plain 404, as
    registries without it do. ``redirect_blobs`` answers blob GET/HEAD with a
    307 to :data:`BLOB_HOST`, which refuses requests carrying ``Authorization``.
    ``auth`` turns on token authentication.
    """

    def __init__(self, *, host: str = DEFAULT_HOST, page_size: int | None = None,
                 referrers_api: bool = True, redirect_blobs: bool = False,
                 auth: TokenAuth | None = None) -> None:
        self.host = host
        self.page_size = page_size
        self.referrers_api = referrers_api
        self.redirect_blobs = redirect_blobs
        self.auth = auth
        #: Every blob's (possibly tampered) bytes, by digest.
        self.blobs: dict[str, bytes] = {}
        self.repos: dict[str, _Repo] = {}
        self.uploads: dict[str, _Upload] = {}
        #: Every request seen, in order (token requests included).
        self.requests: list[httpx.Request] = []
        #: ``(user, scopes)`` of every token asked for.
        self.token_requests: list[tuple[str | None, tuple[str, ...]]] = []
        #: Requests to :data:`BLOB_HOST` that carried an ``Authorization`` header.
        self.leaked_authorization = 0
        self._tags_override: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._intercepts: list[tuple[Callable[[httpx.Request], bool], Responder]] = []
        self._faults: list[_Fault] = []
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.RLock()

    # -- clients ------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, **options: Any) -> RegistryClient:
        """A :class:`~countersign.registry.client.RegistryClient` for this registry
        (no backoff, no docker config unless ``credentials`` is given)."""
        options.setdefault("backoff", 0.0)
        options.setdefault("credentials", Credentials(notary_auth=False, docker_config=False))
        return RegistryClient(self.host, transport=self.transport(), **options)

    # -- seeding and inspection ----------------------------------------------------

    def _repo(self, name: str) -> _Repo:
        return self.repos.setdefault(name, _Repo())

    def add_blob(self, repo: str, data: bytes) -> Digest:
        """Store ``data`` as a blob of ``repo``; its digest."""
        digest = digest_of(data)
        with self._lock:
            self.blobs[digest] = bytes(data)
            self._repo(repo).blobs.add(digest)
        return digest

    def add_manifest(self, repo: str, data: bytes, media_type: str,
                     tag: str | None = None) -> Digest:
        """Store a manifest without any check (tests of broken content use this)."""
        digest = digest_of(data)
        with self._lock:
            stored = self._repo(repo)
            stored.manifests[digest] = (media_type, bytes(data))
            if tag is not None:
                stored.tags[tag] = digest
        return digest

    def manifest(self, repo: str, reference: str) -> tuple[str, bytes] | None:
        """The stored ``(media_type, data)`` at a tag or digest."""
        with self._lock:
            stored = self.repos.get(repo)
            if stored is None:
                return None
            digest = stored.tags.get(reference, reference)
            return stored.manifests.get(digest)

    # -- tampering hooks ------------------------------------------------------------

    def tamper_blob(self, digest: str, data: bytes) -> None:
        """Serve ``data`` as blob ``digest`` from now on (every repository)."""
        with self._lock:
            if digest not in self.blobs:
                raise KeyError(f"no blob {digest}")
            self.blobs[digest] = bytes(data)

    def tamper_manifest(self, repo: str, digest: str, data: bytes) -> None:
        """Serve ``data`` as manifest ``digest`` of ``repo`` (and its tags) from now on."""
        with self._lock:
            stored = self.repos[repo]
            media_type, _ = stored.manifests[digest]
            stored.manifests[digest] = (media_type, bytes(data))

    def answer_tag(self, repo: str, tag: str, data: bytes, media_type: str) -> None:
        """Answer ``repo:tag`` with ``data`` (another manifest), whatever is stored."""
        with self._lock:
            self._tags_override[(repo, tag)] = (media_type, bytes(data))

    def retag(self, repo: str, tag: str, digest: str) -> None:
        """Point ``tag`` at another stored manifest."""
        with self._lock:
            stored = self.repos[repo]
            if digest not in stored.manifests:
                raise KeyError(f"no manifest {digest} in {repo}")
            stored.tags[tag] = digest

    def fail_next(self, count: int = 1, status: int | None = 503, *, method: str | None = None,
                  path: str | None = None, retry_after: str | None = None) -> None:
        """Make the next ``count`` matching requests fail: with ``status``, or with a
        dropped connection (``httpx.ConnectError``) when ``status`` is ``None``.
        ``method`` and ``path`` (a substring of the path) narrow the match."""
        with self._lock:
            self._faults.append(_Fault(count, status, method, path, retry_after))

    def intercept(self, match: Callable[[httpx.Request], bool], responder: Responder) -> None:
        """Answer requests for which ``match`` is true with ``responder`` instead (it may
        end with :meth:`respond` to pass the request on)."""
        with self._lock:
            self._intercepts.append((match, responder))

    # -- the handler ------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.requests.append(request)
            fault = self._fault(request)
            intercept = next((r for m, r in self._intercepts if m(request)), None)
        if fault is not None:
            if fault.status is None:
                raise httpx.ConnectError("connection dropped (injected)", request=request)
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return _errors(fault.status, "UNAVAILABLE", "injected failure", headers=headers)
        if intercept is not None:
            return intercept(request)
        return self.respond(request)

    def respond(self, request: httpx.Request) -> httpx.Response:
        """The registry's own answer to ``request`` (not recorded again, no fault or
        intercept applied): for an interceptor that delays a request and then lets it
        through."""
        host = request.url.netloc.decode("ascii")
        if self.auth is not None and host == urlsplit(self.auth.realm).netloc:
            return self._token(request, self.auth)
        if host == BLOB_HOST:
            return self._redirected_blob(request)
        if host != self.host:
            return httpx.Response(502, text=f"no such host {host}")
        with self._lock:
            return self._route(request)

    def _fault(self, request: httpx.Request) -> _Fault | None:
        for fault in self._faults:
            if fault.method is not None and fault.method != request.method:
                continue
            if fault.path is not None and fault.path not in request.url.path:
                continue
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in ("/v2", "/v2/"):
            denied = self._authorize(request, None, set())
            return denied or httpx.Response(200, json={},
                                            headers={"docker-distribution-api-version":
                                                     "registry/2.0"})
        match = _ROUTE.fullmatch(path)
        if match is None:
            return httpx.Response(404, text="404 page not found")
        name, kind, rest = match["name"], match["kind"], match["rest"]
        if not _NAME_RE.fullmatch(name):
            return _errors(400, "NAME_INVALID", "invalid repository name", {"name": name})
        method = request.method
        action = {"pull"} if method in ("GET", "HEAD") else {"pull", "push"}
        denied = self._authorize(request, name, action)
        if denied is not None:
            return denied
        if kind == "manifests" and rest:
            return self._manifests(request, name, rest)
        if kind == "blobs/uploads":
            return self._uploads(request, name, rest or "")
        if kind == "blobs" and rest:
            return self._blobs(request, name, rest)
        if kind == "tags/list" and not rest and method == "GET":
            return self._tags(request, name)
        if kind == "referrers" and rest and method == "GET" and self.referrers_api:
            return self._referrers(request, name, rest)
        return httpx.Response(404, text="404 page not found")

    # -- auth -------------------------------------------------------------------------

    def _challenge(self, auth: TokenAuth, scope: str | None,
                   error: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{auth.realm}",service="{auth.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return {"www-authenticate": value}

    def _authorize(self, request: httpx.Request, repo: str | None,
                   actions: set[str]) -> httpx.Response | None:
        if self.auth is None:
            return None
        scope = f"repository:{repo}:{','.join(sorted(actions))}" if repo else None
        header = request.headers.get("authorization", "")
        grant = None
        if header.startswith("Bearer "):
            grant = self._grants.get(header[7:])
            if grant is not None and grant.until < time.monotonic():
                grant = None
        if grant is not None and (repo is None or actions <= grant.access.get(repo, set())):
            return None
        error = "insufficient_scope" if grant is not None else ("invalid_token" if header
                                                               else None)
        return _errors(401, "UNAUTHORIZED", "authentication required",
                       [{"Type": "repository", "Name": repo, "Action": a}
                        for a in sorted(actions)] if repo else None,
                       headers=self._challenge(self.auth, scope, error))

    def _token(self, request: httpx.Request, auth: TokenAuth) -> httpx.Response:
        user: str | None = None
        header = request.headers.get("authorization", "")
        if header:
            if not header.startswith("Basic "):
                return httpx.Response(401, json={"details": "basic auth expected"})
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeError):
                return httpx.Response(400, json={"details": "bad basic auth"})
            name, _, password = decoded.partition(":")
            if auth.users.get(name) != password:
                return httpx.Response(401, json={"details": "wrong username or password"})
            user = name
        if request.url.params.get("service") != auth.service:
            return httpx.Response(400, json={"details": "wrong service"})
        scopes = tuple(request.url.params.get_list("scope"))
        access: dict[str, set[str]] = {}
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, wanted = rest.rpartition(":")
            if kind != "repository" or not repo:
                continue
            granted = set(wanted.split(",")) & auth.allowed(user, repo)
            access.setdefault(repo, set()).update(granted)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.token_requests.append((user, scopes))
            self._grants[token] = _Grant(user, access, time.monotonic() + auth.expires_in)
        return httpx.Response(200, json={"token": token, "access_token": token,
                                         "expires_in": auth.expires_in})

    # -- manifests --------------------------------------------------------------------

    @staticmethod
    def _accepts(request: httpx.Request, media_type: str) -> bool:
        accepted = [base_media_type(v) for v in
                    ",".join(request.headers.get_list("accept")).split(",") if v.strip()]
        return not accepted or media_type in accepted or "*/*" in accepted

    def _manifests(self, request: httpx.Request, name: str, reference: str) -> httpx.Response:
        method = request.method
        if method == "PUT":
            return self._put_manifest(request, name, reference)
        is_digest = ":" in reference
        if is_digest:
            try:
                parse_digest(reference)
            except OCIFormatError:
                return _errors(400, "DIGEST_INVALID", "invalid digest", reference)
        elif not _TAG_RE.fullmatch(reference):
            return _errors(400, "TAG_INVALID", "invalid tag", reference)
        stored = self.repos.get(name)
        if stored is None and (name, reference) not in self._tags_override:
            return _errors(404, "NAME_UNKNOWN", "repository name not known to registry",
                           {"name": name})
        if method == "DELETE":
            if stored is None or not is_digest or reference not in stored.manifests:
                return _errors(404, "MANIFEST_UNKNOWN", "manifest unknown", reference)
            del stored.manifests[reference]
            for tag in [t for t, d in stored.tags.items() if d == reference]:
                del stored.tags[tag]
            return httpx.Response(202)
        if method not in ("GET", "HEAD"):
            return _errors(405, "UNSUPPORTED", "the operation is unsupported")
        found: tuple[str, bytes] | None
        digest: str
        override = self._tags_override.get((name, reference))
        if override is not None:
            found, digest = override, digest_of(override[1])
        elif stored is not None:
            digest = stored.tags.get(reference, reference)
            found = stored.manifests.get(digest)
        else:
            found, digest = None, reference
        if found is None:
            return _errors(404, "MANIFEST_UNKNOWN", "manifest unknown",
                           f"unknown tag={reference}" if not is_digest else reference)
        media_type, data = found
        if not self._accepts(request, media_type):
            return _errors(404, "MANIFEST_UNKNOWN",
                           f"{media_type} found, but the accept header does not allow it")
        headers = {"content-type": media_type, "docker-content-digest": digest,
                   "content-length": str(len(data))}
        return httpx.Response(200, headers=headers,
                              content=b"" if method == "HEAD" else data)

    def _put_manifest(self, request: httpx.Request, name: str,
                      reference: str) -> httpx.Response:
        data = request.content
        media_type = base_media_type(request.headers.get("content-type", ""))
        if len(data) > MAX_MANIFEST_SIZE:
            return _errors(400, "MANIFEST_INVALID", "manifest too big")
        digest = digest_of(data)
        if ":" in reference:
            try:
                parse_digest(reference)
            except OCIFormatError:
                return _errors(400, "DIGEST_INVALID", "invalid digest", reference)
            if reference != digest:
                return _errors(400, "DIGEST_INVALID", "provided digest did not match content",
                               reference)
        elif not _TAG_RE.fullmatch(reference):
            return _errors(400, "TAG_INVALID", "invalid tag", reference)
        try:
            document = parse(data, media_type or None)
        except OCIFormatError as exc:
            return _errors(400, "MANIFEST_INVALID", "manifest invalid", exc.message)
        stored = self._repo(name)
        if isinstance(document, Manifest):
            for blob in document.blobs:
                if not blob.urls and blob.digest not in stored.blobs:
                    return _errors(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry",
                                   str(blob.digest))
        else:
            for entry in document.manifests:
                if entry.digest not in stored.manifests:
                    return _errors(400, "MANIFEST_BLOB_UNKNOWN", "manifest unknown to registry",
                                   str(entry.digest))
        stored.manifests[digest] = (media_type or document.media_type,
                                    bytes(data))
        if ":" not in reference:
            stored.tags[reference] = digest
        headers = {"location": f"/v2/{name}/manifests/{digest}",
                   "docker-content-digest": digest}
        if document.subject is not None and self.referrers_api:
            headers["oci-subject"] = str(document.subject.digest)
        return httpx.Response(201, headers=headers)

    # -- blobs ------------------------------------------------------------------------

    def _blob_headers(self, digest: str, data: bytes) -> dict[str, str]:
        return {"content-type": "application/octet-stream", "docker-content-digest": digest,
                "content-length": str(len(data))}

    def _blobs(self, request: httpx.Request, name: str, reference: str) -> httpx.Response:
        try:
            digest = parse_digest(reference)
        except OCIFormatError:
            return _errors(400, "DIGEST_INVALID", "invalid digest", reference)
        stored = self.repos.get(name)
        if stored is None or digest not in stored.blobs:
            return _errors(404, "BLOB_UNKNOWN", "blob unknown to registry", str(digest))
        if request.method == "DELETE":
            stored.blobs.discard(digest)
            return httpx.Response(202)
        if request.method not in ("GET", "HEAD"):
            return _errors(405, "UNSUPPORTED", "the operation is unsupported")
        if self.redirect_blobs:
            return httpx.Response(307, headers={
                "location": f"https://{BLOB_HOST}/{digest}?signature={secrets.token_hex(4)}"})
        data = self.blobs[digest]
        return httpx.Response(200, headers=self._blob_headers(digest, data),
                              content=b"" if request.method == "HEAD" else data)

    def _redirected_blob(self, request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:
            with self._lock:
                self.leaked_authorization += 1
            return httpx.Response(400, text="only one auth mechanism allowed")
        digest = request.url.path.lstrip("/")
        with self._lock:
            data = self.blobs.get(digest)
        if data is None:
            return httpx.Response(404, text="NoSuchKey")
        return httpx.Response(200, headers=self._blob_headers(digest, data),
                              content=b"" if request.method == "HEAD" else data)

    # -- uploads ----------------------------------------------------------------------

    def _upload_location(self, name: str, upload_id: str, upload: _Upload) -> dict[str, str]:
        upload.state = secrets.token_hex(8)
        end = len(upload.data) - 1
        return {"location": f"/v2/{name}/blobs/uploads/{upload_id}?_state={upload.state}",
                "range": f"0-{max(end, 0)}", "docker-upload-uuid": upload_id,
                "content-length": "0"}

    def _uploads(self, request: httpx.Request, name: str, upload_id: str) -> httpx.Response:
        method = request.method
        if not upload_id:
            if method != "POST":
                return _errors(405, "UNSUPPORTED", "the operation is unsupported")
            return self._start_upload(request, name)
        upload = self.uploads.get(upload_id)
        if upload is None or upload.repo != name:
            return _errors(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry",
                           upload_id)
        if method == "DELETE":
            del self.uploads[upload_id]
            return httpx.Response(204)
        if request.url.params.get("_state") != upload.state:
            return _errors(400, "BLOB_UPLOAD_INVALID", "stale upload state (use the latest "
                           "Location)", upload_id)
        if method == "GET":
            return httpx.Response(204, headers=self._upload_location(name, upload_id, upload))
        if method == "PATCH":
            content_range = request.headers.get("content-range")
            if content_range is not None:
                match = re.fullmatch(r"(?:bytes=)?(\d+)-(\d+)", content_range.strip())
                if (match is None or int(match[1]) != len(upload.data)
                        or int(match[2]) - int(match[1]) + 1 != len(request.content)):
                    return httpx.Response(416, headers=self._upload_location(name, upload_id,
                                                                             upload))
            upload.data += request.content
            return httpx.Response(202, headers=self._upload_location(name, upload_id, upload))
        if method == "PUT":
            upload.data += request.content
            wanted = request.url.params.get("digest", "")
            try:
                digest = parse_digest(wanted)
            except OCIFormatError:
                return _errors(400, "DIGEST_INVALID", "invalid digest", wanted)
            data = bytes(upload.data)
            if digest_of(data) != digest:
                return _errors(400, "DIGEST_INVALID", "provided digest did not match "
                               "uploaded content", wanted)
            del self.uploads[upload_id]
            self.blobs[digest] = data
            self._repo(name).blobs.add(digest)
            return httpx.Response(201, headers={"location": f"/v2/{name}/blobs/{digest}",
                                                "docker-content-digest": digest,
                                                "content-length": "0"})
        return _errors(405, "UNSUPPORTED", "the operation is unsupported")

    def _start_upload(self, request: httpx.Request, name: str) -> httpx.Response:
        params = request.url.params
        mount, source = params.get("mount"), params.get("from")
        if mount and source:
            try:
                digest = parse_digest(mount)
            except OCIFormatError:
                return _errors(400, "DIGEST_INVALID", "invalid digest", mount)
            readable = self._authorize(request, source, {"pull"}) is None
            origin = self.repos.get(source)
            if readable and origin is not None and digest in origin.blobs:
                self._repo(name).blobs.add(digest)
                return httpx.Response(201, headers={"location": f"/v2/{name}/blobs/{digest}",
                                                    "docker-content-digest": digest,
                                                    "content-length": "0"})
        wanted = params.get("digest")
        if wanted:  # a single-request monolithic upload
            try:
                digest = parse_digest(wanted)
            except OCIFormatError:
                return _errors(400, "DIGEST_INVALID", "invalid digest", wanted)
            if digest_of(request.content) != digest:
                return _errors(400, "DIGEST_INVALID", "provided digest did not match "
                               "uploaded content", wanted)
            self.blobs[digest] = bytes(request.content)
            self._repo(name).blobs.add(digest)
            return httpx.Response(201, headers={"location": f"/v2/{name}/blobs/{digest}",
                                                "docker-content-digest": digest})
        upload_id = secrets.token_hex(16)
        upload = _Upload(name)
        self.uploads[upload_id] = upload
        return httpx.Response(202, headers=self._upload_location(name, upload_id, upload))

    # -- listings ---------------------------------------------------------------------

    def _page(self, request: httpx.Request, items: list[str],
              key: Callable[[str], str] = lambda s: s) -> tuple[list[str], int | None]:
        """``items`` after ``last``, at most ``n`` (and ``page_size``); and the ``n`` to
        put in a next link, when there are more."""
        params = request.url.params
        last = params.get("last")
        if last is not None:
            items = [i for i in items if key(i) > last]
        limit = self.page_size
        text = params.get("n")
        if text is not None and text.isdigit():
            limit = int(text) if limit is None else min(limit, int(text))
        if limit is None or len(items) <= limit:
            return items, None
        return items[:limit], limit

    def _tags(self, request: httpx.Request, name: str) -> httpx.Response:
        stored = self.repos.get(name)
        if stored is None:
            return _errors(404, "NAME_UNKNOWN", "repository name not known to registry",
                           {"name": name})
        page, more = self._page(request, sorted(stored.tags))
        headers = {}
        if more is not None:
            headers["link"] = (f'</v2/{name}/tags/list?last={quote(page[-1])}&n={more}>; '
                               'rel="next"')
        return httpx.Response(200, json={"name": name, "tags": page}, headers=headers)

    def _referrers(self, request: httpx.Request, name: str, reference: str) -> httpx.Response:
        try:
            subject = parse_digest(reference)
        except OCIFormatError:
            return _errors(400, "DIGEST_INVALID", "invalid digest", reference)
        stored = self.repos.get(name)
        found: dict[str, Descriptor] = {}
        for digest, (media_type, data) in sorted((stored.manifests if stored else {}).items()):
            try:
                document = parse(data, media_type)
            except OCIFormatError:
                continue
            if document.subject is None or document.subject.digest != subject:
                continue
            artifact_type = document.artifact_type
            if artifact_type is None and isinstance(document, Manifest):
                artifact_type = document.config.media_type
            found[digest] = Descriptor(media_type, parse_digest(digest), len(data),
                                       annotations=dict(document.annotations),
                                       artifact_type=artifact_type)
        headers = {"content-type": OCI_INDEX}
        wanted = request.url.params.get("artifactType")
        if wanted:
            found = {d: e for d, e in found.items() if e.artifact_type == wanted}
            headers["oci-filters-applied"] = "artifactType"
        page, more = self._page(request, sorted(found))
        if more is not None:
            query = f"last={page[-1]}&n={more}"
            if wanted:
                query += f"&artifactType={quote(wanted, safe='')}"
            headers["link"] = f'</v2/{name}/referrers/{subject}?{query}>; rel="next"'
        body = encode(Index(OCI_INDEX, tuple(found[d] for d in page)))
        return httpx.Response(200, headers=headers, content=body)

