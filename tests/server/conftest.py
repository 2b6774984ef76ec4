"""A trust server in-process on a temporary SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from countersign.server.app import ServerConfig, TrustServer
from countersign.server.signer import DatabaseKeyService
from countersign.server.storage import Storage


@pytest.fixture
def trust_app(tmp_path: Path) -> Iterator[TrustServer]:
    storage = Storage(f"sqlite:///{tmp_path / 'server.db'}")
    keys = DatabaseKeyService(storage, "test-signer-passphrase")
    yield TrustServer(storage, keys, config=ServerConfig(cache_ttl=0.0, max_body=1 << 20))
    storage.close()
