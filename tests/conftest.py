"""Shared test set-up: the helpers in tests/support are importable from every test."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))

if TYPE_CHECKING:
    from pgserver import PostgresServer
    from registryserver import DockerRegistry

    from countersign.server.app import TrustServer


# --- a throwaway PostgreSQL (tests/support/pgserver.py) ---------------------------
#
# - ``postgres_server`` (session): the running :class:`pgserver.PostgresServer`
#   (127.0.0.1, free port, trust auth, fsync off), stopped at session end.
# - ``postgres_url`` (session): its admin URL, ``postgresql://postgres@127.0.0.1:PORT/postgres``.
# - ``pg_database_url`` (function): the URL of a fresh, empty database for one
#   test, ``postgresql://postgres@127.0.0.1:PORT/t<N>_<test name>``; dropped after it.
# All three skip the test when PostgreSQL is not installed.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skips when PostgreSQL is not installed)."""
    import pgserver

    binaries = pgserver.find_binaries()
    if binaries is None:
        pytest.skip(pgserver.missing_reason() or "PostgreSQL is not installed")
    server = pgserver.PostgresServer(binaries)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of the session's server."""
    return postgres_server.url()


@pytest.fixture
def pg_database_url(postgres_server: PostgresServer,
                    request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test; its ``postgresql://`` URL."""
    url = postgres_server.create_database(request.node.name)
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def trust_app(tmp_path: Path) -> Iterator[TrustServer]:
    """A trust server in-process on a temporary SQLite database (current views not cached)."""
    from countersign.server.app import ServerConfig, TrustServer
    from countersign.server.signer import DatabaseKeyService
    from countersign.server.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'server.db'}")
    keys = DatabaseKeyService(storage, "test-signer-passphrase")
    yield TrustServer(storage, keys, config=ServerConfig(cache_ttl=0.0, max_body=1 << 20))
    storage.close()


# --- a real CNCF distribution registry and skopeo (tests/support/registryserver.py) ---


@pytest.fixture(scope="session")
def docker_registry() -> Iterator[DockerRegistry]:
    """A running docker-registry, shared by the session (tests use their own repositories)."""
    import registryserver

    binary = registryserver.find_binary()
    if binary is None:
        pytest.skip(registryserver.missing_reason() or "docker-registry is not installed")
    server = registryserver.DockerRegistry(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def skopeo() -> Path:
    found = shutil.which("skopeo")
    if found is None:
        pytest.skip("skopeo is not installed (Debian: apt-get install skopeo, or "
                    "scripts/system-deps.sh)")
    return Path(found)
