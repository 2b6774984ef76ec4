"""Golden vectors: key files written by the real notary 0.7 (see data/README.md).

These need no notary binary: they pin that countersign reads what notary
wrote and, given notary's salt and IV, writes the very same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from countersign.errors import PassphraseError
from countersign.keystore import (
    KeyStore,
    StaticPassphrases,
    _der,
    decode_pem,
    decode_private_key,
    encode_pem,
    pkcs8,
)
from countersign.keystore.pem import PemBlock
from countersign.tuf.keys import PublicKey

DATA = Path(__file__).parent / "data"

VECTORS = [
    # file, passphrase, key ID, algorithm, headers
    (
        "notary_generate_targets-key.pem",
        "delegpass1",
        "37ef95740073dc45c68ad5eeda32a8d403d33725770e20bd66d948f955f41d04",
        "ecdsa",
        {"role": "targets"},
    ),
    (
        "notary_ecdsa_root.key",
        "rootpass1",
        "6912fe61aae034f376b078b4dda6a2c0c8152a75eccfbed4af7bd9abcbce50b9",
        "ecdsa",
        {"role": "root"},
    ),
    (
        "notary_rsa_targets.key",
        "targetspass",
        "516b4b200a6c5f3c7688aeeb425818ee3bf78a25abef12df64377212f649a615",
        "rsa",
        {"gun": "example.com/a", "role": "targets"},
    ),
    (
        "notary_ed25519_snapshot.key",
        "snappass1",
        "7ba0bc2fac2c730acdefd66907451e623f48ed5febac098689b3f6543d70b4d4",
        "ed25519",
        {"gun": "example.com/a", "role": "snapshot"},
    ),
]


def _salt_and_iv(der: bytes) -> tuple[bytes, bytes]:
    root = _der.parse(der)
    assert root.children is not None
    algorithm = root.children[0].children
    assert algorithm is not None
    params = algorithm[1].children
    assert params is not None
    kdf, scheme = params
    assert kdf.children is not None and scheme.children is not None
    kdf_params = kdf.children[1].children
    assert kdf_params is not None
    return kdf_params[0].content, scheme.children[1].content


@pytest.mark.parametrize(("name", "passphrase", "key_id", "algorithm", "headers"), VECTORS)
def test_notary_files_decode(
    name: str, passphrase: str, key_id: str, algorithm: str, headers: dict[str, str]
) -> None:
    block = decode_pem((DATA / name).read_bytes())
    assert block.type == "ENCRYPTED PRIVATE KEY"
    assert dict(block.headers) == headers
    key = decode_private_key(block.der, passphrase, encrypted=True)
    assert key.algorithm == algorithm
    assert key.canonical_key_id == key_id
    with pytest.raises(PassphraseError):
        decode_private_key(block.der, passphrase + "x", encrypted=True)


@pytest.mark.parametrize(("name", "passphrase", "key_id", "algorithm", "headers"), VECTORS)
def test_countersign_reproduces_notary_files_byte_for_byte(
    name: str, passphrase: str, key_id: str, algorithm: str, headers: dict[str, str]
) -> None:
    original = (DATA / name).read_bytes()
    block = decode_pem(original)
    key = decode_private_key(block.der, passphrase, encrypted=True)
    salt, iv = _salt_and_iv(block.der)
    der = pkcs8._encrypt(pkcs8._private_key_info(key), passphrase, salt, iv)
    assert der == block.der
    assert encode_pem(PemBlock(block.type, headers, der)) == original


def test_generate_output_public_key_matches() -> None:
    public = decode_pem((DATA / "notary_generate_targets.pem").read_bytes())
    assert public.type == "PUBLIC KEY" and dict(public.headers) == {"role": "targets"}
    private = decode_pem((DATA / "notary_generate_targets-key.pem").read_bytes())
    key = decode_private_key(private.der, "delegpass1", encrypted=True)
    spki = key.crypto_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.der == spki
    assert PublicKey.from_crypto(key.crypto_key.public_key()).key_id == key.canonical_key_id


def test_store_imports_notary_generate_output(tmp_path: Path) -> None:
    # notary's own `key import` refuses this file (encrypted, no `path` header).
    store = KeyStore(tmp_path, StaticPassphrases("new store passphrase"))
    data = (DATA / "notary_generate_targets-key.pem").read_bytes()
    info = store.import_(data, gun="example.com/app", passphrase="delegpass1")
    assert info.key_id == VECTORS[0][2]
    assert (info.role, info.gun, info.encrypted) == ("targets", "example.com/app", True)
    assert store.get(info.key_id, role="targets", gun="example.com/app").key.algorithm == "ecdsa"
