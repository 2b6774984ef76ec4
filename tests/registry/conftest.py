"""Fixtures for the registry client tests.

- ``memory_registry`` (function): a fresh :class:`MemoryRegistry`.
- ``docker_registry`` and ``skopeo`` are shared fixtures in tests/conftest.py.
"""

from __future__ import annotations

import pytest

from countersign.registry.memory import MemoryRegistry


@pytest.fixture
def memory_registry() -> MemoryRegistry:
    return MemoryRegistry()
