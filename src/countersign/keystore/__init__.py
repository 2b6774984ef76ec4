"""Private keys on disk in notary 0.7's own format, so notary and countersign share them.

- :mod:`.pkcs8`: notary's PKCS#8 (and PBES2) encoding, byte for byte;
- :mod:`.pem`: Go-compatible PEM with RFC 1421 headers;
- :mod:`.passphrase`: where passphrases come from (environment, terminal);
- :mod:`.store`: the ``<trust_dir>/private`` directory.
"""

from __future__ import annotations

from countersign.keystore.passphrase import (
    DefaultPassphrases,
    EnvPassphrases,
    PassphraseCallback,
    PassphraseProvider,
    PassphraseSource,
    PromptPassphrases,
    StaticPassphrases,
)
from countersign.keystore.pem import PemBlock, decode_pem, decode_pem_blocks, encode_pem
from countersign.keystore.pkcs8 import decode_private_key, encode_private_key
from countersign.keystore.store import KeyInfo, KeyStore, StoredKey

__all__ = [
    "DefaultPassphrases",
    "EnvPassphrases",
    "KeyInfo",
    "KeyStore",
    "PassphraseCallback",
    "PassphraseProvider",
    "PassphraseSource",
    "PemBlock",
    "PromptPassphrases",
    "StaticPassphrases",
    "StoredKey",
    "decode_pem",
    "decode_pem_blocks",
    "decode_private_key",
    "encode_pem",
    "encode_private_key",
]
