"""The trust server as a plain ASGI application: notary-server 0.7's routes.

No framework sits on the hot GET path: a route is found by splitting the path
(no regular expressions), current metadata is served from a per-GUN view that
lives at most ``cache_ttl`` seconds (and is dropped on every local write), and
content-addressed metadata (by checksum or version) from a bounded cache,
since it never changes. Database work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from countersign._lru import BoundedLRU
from countersign._web import BodyError, Request, Response, WebApp
from countersign.errors import CountersignError
from countersign.server import auth, multipart
from countersign.server.apierrors import APIError, ValidationFailure
from countersign.server.metrics import Metrics
from countersign.server.signer import SERVER_ROLES, KeyService
from countersign.server.storage import (
    UNSET,
    Storage,
    StorageError,
    StoredFile,
    VersionConflict,
)
from countersign.server.updates import (
    CurrentView,
    UpdateProcessor,
    Upload,
    advance_view,
    parse_upload,
    parsed,
)
from countersign.tuf import ROOT, Metadata, PublicKey, Root
from countersign.tuf.canonical import go_string
from countersign.tuf.metadata import is_role_name
from countersign.tuf.timefmt import GoTime

log = logging.getLogger("countersign.server")

CURRENT_CACHE = "public, max-age=300, s-maxage=300, must-revalidate"
CONSISTENT_CACHE = "public, max-age=2592000, s-maxage=2592000"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
_HEX = frozenset("0123456789abcdef")
MAX_CHANGE_RECORDS = 10_000


@dataclass
class ServerConfig:
    max_body: int = 64 * 1024 * 1024
    cache_ttl: float = 1.0
    gun_prefixes: tuple[str, ...] = ()
    immutable_cache_entries: int = 20_000
    immutable_cache_bytes: int = 256 << 20


@dataclass(frozen=True)
class Route:
    name: str
    gun: str | None = None
    role: str = ""
    checksum: str = ""
    version: int = 0


def route(method: str, path: str) -> Route:
    """Match a request as notary-server's router does, without regular expressions.

    Routes are immutable and a server sees the same few paths over and over, so
    the answers for short paths are remembered (at most 8,192 of at most 512
    characters: hostile paths can evict entries, never grow the memory).
    """
    if len(path) <= 512 and len(method) <= 16:
        return _remembered_route(method, path)
    return _match(method, path)


@functools.lru_cache(maxsize=8192)
def _remembered_route(method: str, path: str) -> Route:
    return _match(method, path)


def _match(method: str, path: str) -> Route:
    if path in ("/v2/", "/v2"):
        return Route("base")
    if path == "/_notary_server/health":
        return Route("health")
    if path == "/metrics":
        return Route("metrics")
    if path == "/v2/_trust/changefeed":
        return Route("changefeed")
    if not path.startswith("/v2/"):
        return Route("notfound")
    rest = path[4:]
    if rest.endswith("/_trust/changefeed"):
        gun = rest[: -len("/_trust/changefeed")]
        return Route("gun_changefeed", gun) if _gun_ok(gun) else Route("notfound")
    marker = rest.rfind("/_trust/tuf/")
    if marker <= 0:
        return Route("notfound")
    gun, file = rest[:marker], rest[marker + len("/_trust/tuf/"):]
    if not _gun_ok(gun):
        return Route("notfound")
    if file == "":
        return Route("update" if method == "POST" else "delete", gun)
    if file.endswith(".key"):
        role = file[:-4]
        return Route("key", gun, role) if role in SERVER_ROLES else Route("notfound")
    if not file.endswith(".json"):
        return Route("notfound")
    base = file[:-5]
    head, dot, tail = base.partition(".")
    if dot and head.isdigit() and head.isascii() and is_role_name(tail) and len(head) < 10:
        return Route("get", gun, tail, version=int(head))
    head, dot, tail = base.rpartition(".")
    if dot and len(tail) in (64, 96, 128) and set(tail) <= _HEX and is_role_name(head):
        return Route("get", gun, head, checksum=tail)
    if is_role_name(base):
        return Route("get", gun, base)
    return Route("notfound")


def _gun_ok(gun: str) -> bool:
    return bool(gun) and "*" not in gun and len(gun) <= 255


@functools.lru_cache(maxsize=4096)
def _http_date(when: _dt.datetime) -> str:
    """Go's ``time.RFC1123`` in UTC, as notary-server writes ``Last-Modified``."""
    return when.astimezone(_dt.UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")


class _CachedView:
    """A GUN's current view, the change mark it stands for, and its responses, built once."""

    __slots__ = ("mark", "responses", "slot", "until", "view")

    def __init__(self, view: CurrentView, until: float, mark: int, slot: int) -> None:
        self.view = view
        self.until = until
        self.mark = mark
        self.slot = slot
        self.responses: dict[str, Response] = {}

    def response(self, role: str) -> Response | None:
        """The response for ``role`` (the same object for every request on this view)."""
        found = self.responses.get(role)
        if found is None:
            file = self.view.get(role)
            if file is None:
                return None
            found = self.responses[role] = Response(200, file.data, [
                ("content-type", TEXT), ("cache-control", CURRENT_CACHE),
                ("last-modified", _http_date(file.updated_at))])
        return found


class TrustServer(WebApp):
    """notary's HTTP API from :class:`Storage`, as an ASGI and an RSGI application."""

    def __init__(self, storage: Storage, keys: KeyService, *,
                 authorizer: auth.Authorizer | None = None,
                 config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        self.storage = storage
        self.keys = keys
        self.processor = UpdateProcessor(storage, keys)
        self.authorizer = authorizer
        self.config = config or ServerConfig()
        self.metrics = metrics or Metrics()
        self._views: dict[str, _CachedView] = {}
        self._immutable = BoundedLRU(max_entries=self.config.immutable_cache_entries,
                                     max_bytes=self.config.immutable_cache_bytes)
        self._gun_locks: dict[str, asyncio.Lock] = {}
        self._reloads: dict[str, asyncio.Future[_CachedView | None]] = {}

    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        method = request.method
        matched = route(method, request.path)
        try:
            response = await self._dispatch(matched, method, request)
        except APIError as exc:
            response = self._error(exc)
        except ValidationFailure as exc:
            response = self._error(exc.api_error())
        except StorageError as exc:
            log.error("storage failure", extra={"route": matched.name, "error": exc.message})
            response = self._error(APIError("UNAVAILABLE"))
        except _Unauthorized as exc:
            response = Response(exc.status, exc.body, [
                ("content-type", JSON), ("www-authenticate", exc.challenge)])
        except Exception:
            log.exception("unexpected failure", extra={"route": matched.name})
            response = self._error(APIError("UNKNOWN"))
        self.metrics.observe(matched.name, method, response.status, time.perf_counter() - start)
        return response

    def close(self) -> None:
        self.storage.close()

    @staticmethod
    def _error(error: APIError) -> Response:
        return Response(error.status, error.body(), [("content-type", JSON)])

    # --- dispatch --------------------------------------------------------------
    async def _dispatch(self, matched: Route, method: str, request: Request) -> Response:
        name = matched.name
        if name == "health":
            problem = await asyncio.to_thread(self.storage.healthy)
            if problem:
                return Response(503, ('{"storage":' + go_string(problem).decode() + "}")
                                 .encode(), [("content-type", JSON)])
            return Response(200, b"{}", [("content-type", JSON)])
        if name == "metrics":
            return Response(200, self.metrics.render(),
                             [("content-type", "text/plain; version=0.0.4")])
        gun = matched.gun
        if gun is not None and self.config.gun_prefixes and not any(
                gun.startswith(p) for p in self.config.gun_prefixes):
            if name == "update":
                raise APIError("INVALID_GUN", f"gun {gun} is not allowed by this server")
            raise APIError("METADATA_NOT_FOUND")
        await self._authorize(matched, method, request)
        if name == "base" and method == "GET":
            return Response(200, b"{}", [("content-type", TEXT)])
        if name == "get" and method in ("GET", "HEAD"):
            return await self._get(matched)
        if name == "update" and method == "POST":
            return await self._update(matched.gun or "", request)
        if name == "delete" and method == "DELETE":
            return await self._delete(matched.gun or "")
        if name == "key" and method in ("GET", "POST"):
            return await self._key(matched.gun or "", matched.role, rotate=method == "POST")
        if name in ("changefeed", "gun_changefeed") and method == "GET":
            return await self._changefeed(matched.gun, request)
        raise APIError("METADATA_NOT_FOUND")

    async def _authorize(self, matched: Route, method: str, request: Request) -> None:
        if self.authorizer is None:
            return
        authorization = request.header("authorization")
        operation = _operation(matched, method)
        required = auth.required_access(operation, matched.gun if operation != "NotFound"
                                        else None)
        if not required:
            return
        try:
            await asyncio.to_thread(self.authorizer.authorize, authorization, required)
        except auth.AuthenticationRequired as exc:
            raise _Unauthorized(exc.status, exc.body, exc.challenge) from None

    # --- reads -----------------------------------------------------------------
    async def _view(self, gun: str) -> _CachedView | None:
        """The GUN's current view: cached, and reloaded by one request at a time.

        When the cached view expires, the first request reloads it and the ones
        that arrive meanwhile wait for that reload instead of starting their own.
        """
        cached = self._views.get(gun)
        now = time.monotonic()
        if cached is not None and cached.until > now and \
                cached.mark == self.storage.marks.at(cached.slot):
            return cached
        pending = self._reloads.get(gun)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(self._reload(gun, now))
        self._reloads[gun] = task
        return await asyncio.shield(task)

    async def _reload(self, gun: str, now: float) -> _CachedView | None:
        marks = self.storage.marks
        slot = marks.slot(gun)
        mark = marks.at(slot)  # before reading: a write committed after it changes it
        try:
            view = await asyncio.to_thread(self.processor.fresh_view, gun)
            if view is None:
                if marks.at(slot) == mark:
                    self._views.pop(gun, None)
                return None
            cached = _CachedView(view, now + self.config.cache_ttl, mark, slot)
            if marks.at(slot) == mark:  # no write meanwhile, here or in another worker
                self._views[gun] = cached
            return cached
        finally:
            if self._reloads.get(gun) is asyncio.current_task():
                self._reloads.pop(gun, None)

    async def _get(self, matched: Route) -> Response:
        gun, role = matched.gun or "", matched.role
        if matched.checksum or matched.version:
            file = await self._immutable_file(gun, role, matched.checksum, matched.version)
            if file is None:
                raise APIError("METADATA_NOT_FOUND", {})  # notary's detail: its empty error
            return Response(200, file.data, [
                ("content-type", TEXT), ("cache-control", CONSISTENT_CACHE),
                ("last-modified", _http_date(file.created_at))])
        cached = await self._view(gun)
        response = cached.response(role) if cached is not None else None
        if response is None:
            raise APIError("METADATA_NOT_FOUND", {})
        return response

    async def _immutable_file(self, gun: str, role: str, checksum: str,
                              version: int) -> StoredFile | None:
        key = (gun, role, checksum or f"v{version}")
        cached: StoredFile | None = self._immutable.get(key)
        if cached is not None:
            return cached
        if checksum:
            if len(checksum) != 64:
                return None  # only sha256 is indexed, as in notary
            file = await asyncio.to_thread(self.storage.by_checksum, gun, role, checksum)
        else:
            file = await asyncio.to_thread(self.storage.by_version, gun, role, version)
        if file is not None:
            self._immutable.put(key, file, len(file.data))
        return file

    def _forget(self, gun: str) -> None:
        """After a local write: drop the view and the reload in flight (the write changed the
        GUN's mark, so that reload will not cache what it read)."""
        self._views.pop(gun, None)
        self._reloads.pop(gun, None)

    # --- writes ----------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body
        try:
            return await request.body(limit)
        except BodyError as exc:
            if exc.too_large:
                raise APIError("TOO_LARGE", f"the limit is {limit} bytes") from None
            raise APIError("MALFORMED_UPLOAD") from None

    async def _update(self, gun: str, request: Request) -> Response:
        body = await self._read_body(request)
        content_type = request.header("content-type") or ""
        try:
            parts = multipart.parse(body, content_type)
        except multipart.MultipartError:
            raise APIError("MALFORMED_UPLOAD") from None
        uploads: list[Upload] = []
        for part in parts:
            if not part.disposition_ok or not part.filename:
                raise APIError("NO_FILENAME")
            role = part.filename.removesuffix(".json")
            if not role:
                raise APIError("NO_FILENAME")
            if not is_role_name(role):
                raise APIError("INVALID_ROLE", role)
            uploads.append(parse_upload(role, part.data))
        lock = self._gun_locks.setdefault(gun, asyncio.Lock())
        async with lock:
            cached = self._views.get(gun)
            held = cached.view if cached is not None and cached.until > time.monotonic() \
                else UNSET  # a stale one costs a retry, never a wrong write (apply)
            try:
                previous, written = await asyncio.to_thread(
                    self.processor.apply, gun, uploads, held)
            except VersionConflict:
                raise APIError("VERSION", {}) from None
            finally:
                self._forget(gun)
            view = advance_view(previous, written.files)
            if view is not None:  # what this instance just wrote is current: serve it
                self._views[gun] = _CachedView(
                    view, time.monotonic() + self.config.cache_ttl, written.mark,
                    self.storage.marks.slot(gun))
        for new in written.files:
            # clients fetch what was just written by checksum next (notary publish does)
            self._immutable.put((gun, new.role, new.sha256), new, len(new.data))
            self._immutable.put((gun, new.role, f"v{new.version}"), new, len(new.data))
            if new.role == "timestamp":
                log.info("update", extra={"gun": gun, "timestamp_version": new.version})
        return Response(200, b"", [])

    async def _delete(self, gun: str) -> Response:
        await asyncio.to_thread(self.storage.delete, gun)
        self._forget(gun)
        self._immutable.discard(lambda key: isinstance(key, tuple) and key[0] == gun)
        log.info("delete", extra={"gun": gun})
        return Response(200, b"", [])

    async def _key(self, gun: str, role: str, *, rotate: bool) -> Response:
        key = await asyncio.to_thread(self._server_key, gun, role, rotate)
        body = (b'{"keytype":' + go_string(key.keytype) + b',"keyval":{"public":'
                + go_string(key.public) + b',"private":null}}')
        return Response(200, body, [("content-type", TEXT)])

    def _server_key(self, gun: str, role: str, rotate: bool) -> PublicKey:
        """The key root lists and the signer holds; else the newest made; else a new one."""
        if rotate:
            return self.keys.create(gun, role)
        view = self.processor.fresh_view(gun)
        root_file = view.get(ROOT) if view else None
        if root_file is not None:
            keys: Mapping[str, PublicKey] = {}
            try:
                root: Metadata[Root] = parsed(root_file.data, ROOT)
                keys, _ = root.signed.role_keys(role)
            except CountersignError:
                pass
            held = {s.canonical_key_id for s in self.keys.signers(gun, role, keys.values())}
            for listed in keys.values():
                if listed.canonical_key_id in held:
                    return listed
        newest = self.keys.newest(gun, role)
        return newest if newest is not None else self.keys.create(gun, role)

    # --- change feed -----------------------------------------------------------
    async def _changefeed(self, gun: str | None, request: Request) -> Response:
        query = parse_qs(request.query, keep_blank_values=True)
        records_text = query.get("records", [""])[0]
        change_text = query.get("change_id", [""])[0]
        records = _go_int32(records_text)
        if isinstance(records, str):
            raise APIError("INVALID_PARAMETERS", f"invalid records parameter: {records}")
        change_id = _go_int32(change_text) if change_text else 0
        if isinstance(change_id, str):
            raise APIError("INVALID_PARAMETERS", {})  # notary's detail: its empty error
        records = records or 100
        reversed_order = change_id < 0 or records < 0
        count = min(abs(records), MAX_CHANGE_RECORDS)
        if reversed_order:
            changes = await asyncio.to_thread(self.storage.changes, gun,
                                              change_id if change_id > 0 else -1, -count)
        else:
            changes = await asyncio.to_thread(self.storage.changes, gun, change_id, count)
        items = [
            b'{"ID":' + go_string(str(c.id)) + b',"CreatedAt":'
            + go_string(GoTime.from_datetime(c.created_at).format()) + b',"GUN":'
            + go_string(c.gun) + b',"Version":' + str(c.version).encode() + b',"SHA256":'
            + go_string(c.sha256) + b',"Category":' + go_string(c.category) + b"}"
            for c in changes
        ]
        records_json = b"[" + b",".join(items) + b"]" if items else b"null"
        body = b'{"count":' + str(len(items)).encode() + b',"records":' + records_json + b"}"
        return Response(200, body, [("content-type", TEXT)])


def _operation(matched: Route, method: str) -> str:
    """notary-server's name for the operation, which fixes the access it needs."""
    name = matched.name
    if name == "get" and method in ("GET", "HEAD"):
        if matched.checksum:
            return "GetRoleByHash"
        return "GetRoleByVersion" if matched.version else "GetRole"
    table = {
        ("base", "GET"): "Main", ("update", "POST"): "UpdateTUF",
        ("delete", "DELETE"): "DeleteTUF", ("key", "GET"): "GetKey",
        ("key", "POST"): "RotateKey", ("gun_changefeed", "GET"): "Changefeed",
        ("changefeed", "GET"): "GlobalChangefeed",
    }
    return table.get((name, method), "NotFound")


def _go_int32(text: str) -> int | str:
    """``strconv.ParseInt(text, 10, 32)``: the number, or Go's error text."""
    quoted = json.dumps(text[:100])
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return f"strconv.ParseInt: parsing {quoted}: invalid syntax"
    value = int(text, 10)
    if not -(2**31) <= value < 2**31:
        return f"strconv.ParseInt: parsing {quoted}: value out of range"
    return value


class _Unauthorized(Exception):
    def __init__(self, status: int, body: bytes, challenge: str) -> None:
        super().__init__(challenge)
        self.status = status
        self.body = body
        self.challenge = challenge


__all__ = ["Route", "ServerConfig", "TrustServer", "route"]
