"""Fixtures for the registry client tests.

- ``memory_registry`` (function): a fresh :class:`MemoryRegistry`.
- ``docker_registry`` (session): a real CNCF distribution 2.8 (Debian's
  ``docker-registry``) on 127.0.0.1 (tests/support/registryserver.py); skips
  when the binary is missing.
- ``skopeo`` (session): the path of ``skopeo``; skips when it is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from countersign.registry.memory import MemoryRegistry

if TYPE_CHECKING:
    from registryserver import DockerRegistry


@pytest.fixture
def memory_registry() -> MemoryRegistry:
    return MemoryRegistry()


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
