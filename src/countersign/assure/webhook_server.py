"""The admission webhook over HTTP: a small ASGI layer over ``assure.webhook``.

Routes: ``POST /validate`` (and ``POST /mutate`` in mutating mode) take an
AdmissionReview; ``GET /healthz`` answers 200. A body is read up to
``max_body`` bytes and refused beyond it (413) before it is parsed; anything
that is not an AdmissionReview gets a 4xx with a JSON ``{"error": ...}``; a
review always gets a 200 AdmissionReview, denying on any failure (fail-closed).

Decisions run in worker threads (the gate's clients are synchronous); the same
image asked for by several reviews at once is decided once, and each review
waits at most ``timeout`` seconds for it, after which the image counts as
unreachable. :class:`PolicyGate` is the decide function over the real trust
server and registries the policy names.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from countersign._web import BodyError, Request, Response, WebApp
from countersign.assure.gate import Decision, decide, pinning_for
from countersign.assure.policy import Policy
from countersign.assure.webhook import (
    AdmissionError,
    Decide,
    DecisionCache,
    Outcome,
    answer,
    distinct_refs,
    outcome_of,
    parse_review,
    refuse,
    summary,
)
from countersign.client.cache import MetadataCache
from countersign.client.http import Credentials, HTTPSFetcher
from countersign.client.remote import NotaryRemote
from countersign.client.updater import Updater
from countersign.registry.client import RegistryClient
from countersign.registry.transfer import ImageReference

log = logging.getLogger("countersign.webhook")

JSON = "application/json"
DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_TIMEOUT = 8.0


class WebhookApp(WebApp):
    """The ASGI and RSGI application; see the module docstring."""

    def __init__(self, decide_image: Decide, *, mutate: bool = False, fail_open: bool = False,
                 cache: DecisionCache | None = None, max_body: int = DEFAULT_MAX_BODY,
                 timeout: float = DEFAULT_TIMEOUT, workers: int = 8,
                 on_close: Callable[[], None] | None = None) -> None:
        if max_body < 1 or not timeout > 0 or workers < 1:
            raise ValueError("max_body, timeout and workers must be positive")
        self.decide_image = decide_image
        self.mutate = mutate
        self.fail_open = fail_open
        self.cache = cache if cache is not None else DecisionCache(max_entries=0)
        self.max_body = max_body
        self.timeout = timeout
        self.on_close = on_close
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="countersign-gate")
        self._pending: dict[str, asyncio.Future[Outcome]] = {}

    async def handle(self, request: Request) -> Response:
        try:
            status, body = await self._dispatch(request)
        except AdmissionError as exc:
            status, body = exc.status, _error(exc.render())
        except Exception:  # never a 5xx with a traceback: a refusal that says so
            log.exception("unexpected failure handling a request")
            status, body = 400, _error("the request could not be handled")
        return Response(status, body, [("content-type", JSON), ("cache-control", "no-store")])

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.on_close is not None:
            self.on_close()

    async def _dispatch(self, request: Request) -> tuple[int, bytes]:
        path, method = request.path, request.method
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                raise AdmissionError(f"{method} /healthz: use GET", status=405)
            return 200, b'{"status":"ok"}'
        routes = {"/validate": False, **({"/mutate": True} if self.mutate else {})}
        if path not in routes:
            raise AdmissionError(f"no such endpoint {path[:200]!r} (POST an AdmissionReview "
                                 f"to {' or '.join(routes)})", status=404)
        if method != "POST":
            raise AdmissionError(f"{method} {path}: POST an AdmissionReview", status=405)
        content_type = request.header("content-type")
        if content_type is not None and content_type.split(";")[0].strip().lower() not in (
                "application/json", ""):
            raise AdmissionError(f"content type {content_type[:100]!r} is not application/json",
                                 status=415)
        body = await self._read_body(request)
        review = await self.review(body, mutate=routes[path])
        return 200, json.dumps(review, separators=(",", ":")).encode()

    async def _read_body(self, request: Request) -> bytes:
        try:
            return await request.body(self.max_body)
        except BodyError as exc:
            raise AdmissionError(str(exc), status=413 if exc.too_large else 400) from None

    # --- reviews ---------------------------------------------------------------
    async def review(self, body: bytes, *, mutate: bool) -> dict[str, Any]:
        """Answer one AdmissionReview body (an :class:`AdmissionError` if it is not one)."""
        started = time.perf_counter()
        request = parse_review(body)
        outcomes: dict[str, Outcome] = {}
        try:
            if request.checked and request.problem is None:
                refs = distinct_refs(request)
                found = await asyncio.gather(*(self._outcome(ref) for ref in refs))
                outcomes = {str(ref): outcome for ref, outcome in zip(refs, found, strict=True)}
            review = answer(request, outcomes, mutate=mutate, fail_open=self.fail_open)
        except Exception as exc:  # a well-formed review is answered, denying: a 4xx would
            # leave the outcome to the configuration's failurePolicy, which may be Ignore
            log.exception("unexpected failure answering a review", extra={"uid": request.uid})
            review = refuse(request, f"internal error ({type(exc).__name__}); nothing was "
                            "admitted")
        log.info("admission review", extra={
            **summary(request, review), "ms": round((time.perf_counter() - started) * 1000, 1)})
        return review

    async def _outcome(self, ref: ImageReference) -> Outcome:
        key = str(ref)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        pending = self._pending.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = asyncio.ensure_future(self._decide(loop, key, ref))
            self._pending[key] = pending
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self.timeout)
        except TimeoutError:
            return Outcome(None, f"no decision within {self.timeout:g} s", unavailable=True)

    async def _decide(self, loop: asyncio.AbstractEventLoop, key: str,
                      ref: ImageReference) -> Outcome:
        try:
            outcome = await loop.run_in_executor(self._executor, outcome_of,
                                                 self.decide_image, ref)
            self.cache.put(key, outcome)
            return outcome
        finally:
            self._pending.pop(key, None)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()


# --- the gate over the policy's servers ----------------------------------------------


class PolicyGate:
    """``decide`` for images, on the trust server the policy names and the images' registries.

    One HTTPS client for the trust server (keep-alive, shared by all threads), one
    registry client per registry (at most ``max_registries``, least recently used
    closed first), and one lock per GUN stripe so that two threads never update the
    same GUN's trust cache at once. Every network exchange is bounded by
    ``timeout`` seconds.
    """

    STRIPES = 64

    def __init__(self, policy: Policy, trust_dir: Path, *, registry_ca: Path | None = None,
                 registry_insecure: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 max_registries: int = 32) -> None:
        self.policy = policy
        self.trust_dir = trust_dir
        self.registry_ca = registry_ca
        self.registry_insecure = registry_insecure
        self.timeout = timeout
        self.max_registries = max_registries
        self.pinning = pinning_for(policy, trust_dir)
        self.fetcher = HTTPSFetcher(policy.trust.server, ca_file=policy.trust.tls_ca,
                                    timeout=min(timeout, 10.0), deadline=timeout,
                                    credentials=Credentials())
        self._registries: OrderedDict[str, RegistryClient] = OrderedDict()
        self._registry_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(self.STRIPES)]

    def __call__(self, ref: ImageReference) -> Decision:
        stripe = int.from_bytes(hashlib.sha256(ref.gun.encode()).digest()[:4], "big")
        with self._stripes[stripe % self.STRIPES]:
            updater = Updater(ref.gun, NotaryRemote(self.fetcher, ref.gun),
                              MetadataCache(self.trust_dir, ref.gun), self.pinning)
            return decide(self.policy, ref, updater=updater, client=self._registry(ref.registry),
                          now=_dt.datetime.now(_dt.UTC))

    def _registry(self, registry: str) -> RegistryClient:
        with self._registry_lock:
            client = self._registries.get(registry)
            if client is not None:
                self._registries.move_to_end(registry)
                return client
            client = RegistryClient(registry, ca_file=self.registry_ca,
                                    insecure=self.registry_insecure,
                                    timeout=min(self.timeout, 10.0), deadline=self.timeout,
                                    retries=1, backoff=0.2)
            self._registries[registry] = client
            while len(self._registries) > self.max_registries:
                _, old = self._registries.popitem(last=False)
                old.close()
            return client

    def close(self) -> None:
        self.fetcher.close()
        with self._registry_lock:
            for client in self._registries.values():
                client.close()
            self._registries.clear()

