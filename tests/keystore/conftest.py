"""Shared keys and stores for the keystore tests.

Keys are generated once per session (RSA generation is slow); the store
fixtures use :class:`StaticPassphrases` so no test touches the environment
or a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from countersign.keystore import KeyStore, StaticPassphrases
from countersign.tuf.keys import PrivateKey

PASSPHRASES = {
    "root": "root-passphrase",
    "targets": "targets-passphrase",
    "snapshot": "snapshot-passphrase",
    "timestamp": "timestamp-passphrase",
    "delegation": "delegation-passphrase",
}

_KEYS: dict[str, PrivateKey] = {}


def session_key(algorithm: str) -> PrivateKey:
    """One key per algorithm for the whole session (usable inside hypothesis tests)."""
    if algorithm not in _KEYS:
        _KEYS[algorithm] = (
            PrivateKey.generate("rsa", rsa_bits=2048)
            if algorithm == "rsa"
            else PrivateKey.generate(algorithm)
        )
    return _KEYS[algorithm]


@pytest.fixture(scope="session")
def key_of() -> Callable[[str], PrivateKey]:
    """``key_of(algorithm)``: the session's key of that algorithm."""
    return session_key


@pytest.fixture(params=["ecdsa", "rsa", "ed25519"])
def any_key(request: pytest.FixtureRequest) -> PrivateKey:
    return session_key(request.param)


@pytest.fixture
def passphrases() -> dict[str, str]:
    """The passphrase of each role in :func:`store`."""
    return dict(PASSPHRASES)


@pytest.fixture
def trust_dir(tmp_path: Path) -> Path:
    return tmp_path / "trust"


@pytest.fixture
def store(trust_dir: Path) -> KeyStore:
    return KeyStore(trust_dir, StaticPassphrases(PASSPHRASES))
