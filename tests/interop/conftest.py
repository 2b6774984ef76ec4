"""Fixtures for interoperability tests against the reference Notary 0.7 tools.

- ``reference_notary`` (session): notary-signer + notary-server, remote trust
  service (ECDSA server keys), memory storage, loopback, free ports.
- ``reference_notary_local`` (session, started only if used): notary-server
  alone with ``trust_service: {type: local}`` (Ed25519 server keys).
- ``notary_cli`` (function): factory ``notary_cli(name="client", *, server=None)``
  returning a :class:`_notary.NotaryCLI` with its own trust dir
  ``tmp_path / name`` (``server`` defaults to ``reference_notary``).
- ``gun`` (function): a GUN unique to the test, ``localhost:5000/test/<name>``.

Both servers are shared by the whole session, so tests must use their own GUN.
They skip (not fail) when ``notary``, ``notary-server`` or ``notary-signer`` is
missing from ``PATH``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from _countersign import CountersignServer
from _notary import NotaryCLI, NotaryCLIFactory, ReferenceNotary, TrustService, missing_binaries

_gun_counter = itertools.count(1)


def _start(
    tmp_path_factory: pytest.TempPathFactory, trust: TrustService
) -> Iterator[ReferenceNotary]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"reference Notary 0.7 binaries not on PATH: {', '.join(missing)} "
            "(apt-get install notary)"
        )
    workdir = tmp_path_factory.mktemp(f"reference-notary-{trust}")
    notary = ReferenceNotary(workdir, trust=trust)
    notary.start()
    try:
        yield notary
    finally:
        notary.stop()


@pytest.fixture(scope="session")
def reference_notary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceNotary]:
    """notary-server + notary-signer (remote trust service, ECDSA), memory storage."""
    yield from _start(tmp_path_factory, "remote")


@pytest.fixture(scope="session")
def reference_notary_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceNotary]:
    """notary-server with the in-process (local, Ed25519) trust service, no signer."""
    yield from _start(tmp_path_factory, "local")


@pytest.fixture
def notary_cli(reference_notary: ReferenceNotary, tmp_path: Path) -> NotaryCLIFactory:
    """Factory ``notary_cli(name="client", *, server=None, timeout=60, extra_env=None)``.

    Each call returns a :class:`NotaryCLI` with its own trust dir ``tmp_path / name``
    (a name may be used once per test), talking to ``server`` (default: the
    session's ``reference_notary``).
    """
    used: set[str] = set()

    def make(
        name: str = "client",
        *,
        server: ReferenceNotary | None = None,
        timeout: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> NotaryCLI:
        if name in used:
            raise ValueError(f"trust dir {name!r} already made in this test")
        used.add(name)
        target = reference_notary if server is None else server
        return NotaryCLI(
            tmp_path / name, target.url, target.ca_path, timeout=timeout, extra_env=extra_env
        )

    return make


@pytest.fixture
def gun(request: pytest.FixtureRequest) -> str:
    """A GUN no other test in the session uses: ``localhost:5000/test/<test>-<n>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "t"
    return f"localhost:5000/test/{slug}-{next(_gun_counter)}"


@pytest.fixture(scope="session")
def countersign_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountersignServer]:
    """``countersign serve`` (SQLite, TLS, no auth) for the whole session."""
    server = CountersignServer(tmp_path_factory.mktemp("countersign-serve"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["reference", "countersign"])
def trust_server(request: pytest.FixtureRequest) -> object:
    """Each test using it runs twice: on the reference notary-server, then on countersign serve."""
    return request.getfixturevalue(
        "reference_notary" if request.param == "reference" else "countersign_server")
