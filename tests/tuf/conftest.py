"""Fixtures of the TUF tests."""

from __future__ import annotations

import pytest
from tufrepo import Repo


@pytest.fixture
def repo() -> Repo:
    return Repo.create()
