"""The trust directory key store: layout, lookups, errors, legacy layouts, import/export."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.errors import (
    CountersignError,
    FormatError,
    KeyFormatError,
    KeyRoleError,
    KeystoreError,
    PassphraseError,
)
from countersign.keystore import (
    EnvPassphrases,
    KeyInfo,
    KeyStore,
    PemBlock,
    StaticPassphrases,
    decode_pem,
    decode_private_key,
    encode_pem,
)
from countersign.tuf.keys import PrivateKey

KeyOf = Callable[[str], PrivateKey]
GUN = "registry.example.com/org/app"


class Recording:
    """A passphrase source that records what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str | None, str, bool]] = []

    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        self.calls.append((role, gun, key_id, new))
        return self.answer


class Refusing:
    def get(self, role: str, gun: str | None, key_id: str, *, new: bool) -> str:
        raise AssertionError("no passphrase should be needed")


def _evp_md5(password: bytes, salt: bytes, length: int) -> bytes:
    out, block = b"", b""
    while len(out) < length:
        block = hashlib.md5(block + password + salt, usedforsecurity=False).digest()
        out += block
    return out[:length]


def legacy_pem(key: PrivateKey, passphrase: str | None = None, **headers: str) -> bytes:
    """A block as notary 0.1-0.3 wrote it (x509.EncryptPEMBlock with AES-256-CBC)."""
    crypto = key.crypto_key
    if isinstance(crypto, ed25519.Ed25519PrivateKey):
        public = crypto.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        seed = crypto.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        body, label = public + seed + public, "ED25519 PRIVATE KEY"
    else:
        body = crypto.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        label = "EC PRIVATE KEY" if key.algorithm == "ecdsa" else "RSA PRIVATE KEY"
    all_headers = dict(headers)
    if passphrase is not None:
        iv = os.urandom(16)
        secret = _evp_md5(passphrase.encode(), iv[:8], 32)
        pad = 16 - len(body) % 16
        encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
        body = encryptor.update(body + bytes([pad]) * pad) + encryptor.finalize()
        all_headers["Proc-Type"] = "4,ENCRYPTED"
        all_headers["DEK-Info"] = "AES-256-CBC," + iv.hex().upper()
    return encode_pem(PemBlock(label, all_headers, body))


# --- add / get ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "gun"),
    [("root", None), ("targets", GUN), ("snapshot", GUN), ("targets/releases", None)],
)
def test_add_and_get(store: KeyStore, any_key: PrivateKey, role: str, gun: str | None) -> None:
    path = store.add(any_key, role=role, gun=gun)
    assert path == store.private_dir / f"{any_key.canonical_key_id}.key"
    stored = store.get(any_key.canonical_key_id, role=role, gun=gun)
    assert stored.key.canonical_key_id == any_key.canonical_key_id
    assert (stored.role, stored.gun, stored.path) == (role, gun, path)
    assert stored.key.public_key.verify(stored.key.method, stored.key.sign(b"m"), b"m")


def test_file_layout(
    store: KeyStore, key_of: KeyOf, passphrases: dict[str, str], trust_dir: Path
) -> None:
    key = key_of("ecdsa")
    path = store.add(key, role="targets", gun=GUN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.private_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(trust_dir.stat().st_mode) == 0o700
    text = path.read_text()
    assert text.startswith(f"-----BEGIN ENCRYPTED PRIVATE KEY-----\ngun: {GUN}\nrole: targets\n\n")
    block = decode_pem(path.read_bytes())
    key_back = decode_private_key(block.der, passphrases["targets"], encrypted=True)
    assert key_back.canonical_key_id == key.canonical_key_id
    assert os.listdir(store.private_dir) == [path.name]  # no temporary files left


def test_gun_is_dropped_for_root_and_delegation_keys(store: KeyStore, key_of: KeyOf) -> None:
    path = store.add(key_of("ed25519"), role="root", gun=GUN)
    assert dict(decode_pem(path.read_bytes()).headers) == {"role": "root"}
    # ... and ignored when matching them.
    assert store.get(key_of("ed25519").canonical_key_id, role="root", gun="other/repo")


def test_unencrypted_key(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("rsa")
    KeyStore(trust_dir, Refusing()).add(key, role="snapshot", gun=GUN, passphrase="")
    path = trust_dir / "private" / f"{key.canonical_key_id}.key"
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----\ngun: ")
    stored = KeyStore(trust_dir, Refusing()).get(key.canonical_key_id)
    assert stored.key.canonical_key_id == key.canonical_key_id
    assert KeyStore(trust_dir, Refusing()).list()[0].encrypted is False


def test_passphrase_source_is_asked_with_context(trust_dir: Path, key_of: KeyOf) -> None:
    source = Recording("recorded passphrase")
    store = KeyStore(trust_dir, source)
    key = key_of("ecdsa")
    store.add(key, role="targets", gun=GUN)
    store.get(key.canonical_key_id)
    assert source.calls == [
        ("targets", GUN, key.canonical_key_id, True),
        ("targets", GUN, key.canonical_key_id, False),
    ]


def test_callable_source(trust_dir: Path, key_of: KeyOf) -> None:
    store = KeyStore(trust_dir, lambda role, gun, key_id, *, new: f"pass-{role}")
    key = key_of("ecdsa")
    store.add(key, role="root")
    block = decode_pem(store.get(key.canonical_key_id).path.read_bytes())
    assert decode_private_key(block.der, "pass-root", encrypted=True)


def test_re_adding_replaces_but_other_role_is_refused(store: KeyStore, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    store.add(key, role="targets", gun=GUN)
    store.add(key, role="targets", gun=GUN, passphrase="changed passphrase")
    with pytest.raises(KeyRoleError, match="already stored as a targets key"):
        store.add(key, role="root")
    with pytest.raises(KeyRoleError, match="already stored"):
        store.add(key, role="targets", gun="other/repo")


@pytest.mark.parametrize(
    ("role", "gun", "message"),
    [
        ("targets", None, "no GUN"),
        ("snapshot", "", "no GUN"),
        ("", None, "not a usable role"),
        ("root\nrole: x", None, "not a usable role"),
        ("targets/../root", None, "not a usable role"),
        ("targets", "bad gun", "not a usable GUN"),
    ],
)
def test_bad_roles_and_guns(
    store: KeyStore, key_of: KeyOf, role: str, gun: str | None, message: str
) -> None:
    with pytest.raises(KeyRoleError, match=message):
        store.add(key_of("ecdsa"), role=role, gun=gun)


# --- lookups and their errors ------------------------------------------------------


def test_list_and_find(store: KeyStore, key_of: KeyOf) -> None:
    ids = {
        "root": store.add(key_of("ecdsa"), role="root").stem,
        "targets": store.add(key_of("rsa"), role="targets", gun=GUN).stem,
        "alice": store.add(key_of("ed25519"), role="alice", passphrase="").stem,
    }
    infos = store.list()
    assert {i.key_id: (i.role, i.gun, i.encrypted, i.legacy) for i in infos} == {
        ids["root"]: ("root", None, True, False),
        ids["targets"]: ("targets", GUN, True, False),
        ids["alice"]: ("alice", None, False, False),
    }
    assert [i.key_id for i in store.find("targets", GUN)] == [ids["targets"]]
    assert store.find("targets", "other/repo") == []
    assert [i.key_id for i in store.find("targets")] == [ids["targets"]]
    assert [i.key_id for i in store.find("root", "any/gun")] == [ids["root"]]


def test_empty_store(store: KeyStore) -> None:
    assert store.list() == []
    assert store.find("root") == []


def test_wrong_role_or_gun(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    store = KeyStore(trust_dir, Recording("passphrase1"))
    store.add(key, role="targets", gun=GUN)
    with pytest.raises(KeyRoleError, match="is a targets key, not a root key"):
        store.get(key.canonical_key_id, role="root")
    with pytest.raises(KeyRoleError, match=f"belongs to {GUN}, not to other/repo"):
        store.get(key.canonical_key_id, role="targets", gun="other/repo")


def test_role_is_checked_before_asking_for_a_passphrase(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    KeyStore(trust_dir, Recording("passphrase1")).add(key, role="root")
    with pytest.raises(KeyRoleError):
        KeyStore(trust_dir, Refusing()).get(key.canonical_key_id, role="snapshot")


def test_not_found_and_bad_ids(store: KeyStore) -> None:
    with pytest.raises(KeystoreError, match="no private key") as caught:
        store.get("0" * 64)
    assert caught.value.advice
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, ""):
        with pytest.raises(KeystoreError, match="not a key ID"):
            store.get(bad)
    with pytest.raises(KeystoreError, match="no private key"):
        store.remove("0" * 64)


def test_wrong_passphrase(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    KeyStore(trust_dir, Recording("the right one")).add(key, role="root")
    with pytest.raises(PassphraseError, match="wrong passphrase") as caught:
        KeyStore(trust_dir, Recording("the wrong one")).get(key.canonical_key_id)
    rendered = caught.value.render()
    assert "the wrong one" not in rendered and "the right one" not in rendered
    assert str(trust_dir) in rendered


def test_no_passphrase_available(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    KeyStore(trust_dir, Recording("passphrase1")).add(key, role="snapshot", gun=GUN)
    with pytest.raises(PassphraseError, match="no passphrase available") as caught:
        KeyStore(trust_dir, EnvPassphrases({})).get(key.canonical_key_id)
    assert "COUNTERSIGN_SNAPSHOT_PASSPHRASE" in (caught.value.advice or "")


def _stored(store: KeyStore, key: PrivateKey) -> Path:
    return store.add(key, role="root")


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda data: b"not a key at all", FormatError, "no PEM block"),
        (lambda data: data.replace(b"role: root\n\n", b"role: root\n\n!!"), FormatError, "base64"),
        (lambda data: data[: len(data) // 2], FormatError, "no END line"),
        (
            lambda data: encode_pem(
                PemBlock("ENCRYPTED PRIVATE KEY", {"role": "root"}, decode_pem(data).der[:-20])
            ),
            KeyFormatError,
            "truncated",
        ),
        (
            lambda data: encode_pem(PemBlock("CERTIFICATE", {}, b"x")),
            KeyFormatError,
            "not a private key",
        ),
        (
            lambda data: encode_pem(
                PemBlock("PRIVATE KEY", {"role": "root"}, decode_pem(data).der)
            ),
            KeyFormatError,
            "holds an encrypted key",
        ),
    ],
)
def test_corrupt_key_files(
    store: KeyStore,
    key_of: KeyOf,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
    error: type[CountersignError],
    message: str,
) -> None:
    key = key_of("ecdsa")
    path = _stored(store, key)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(error, match=message) as caught:
        store.get(key.canonical_key_id)
    assert str(path) in caught.value.message
    with caplog.at_level(logging.WARNING, logger="countersign.keystore.store"):
        listed = store.list()
    if error is FormatError or "private key" in message:
        assert listed == []
        assert str(path) in caplog.text


def test_oversized_key_file(store: KeyStore, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    path = _stored(store, key)
    path.write_bytes(path.read_bytes() + b"#" * (1 << 20))
    with pytest.raises(FormatError, match="not a key file"):
        store.get(key.canonical_key_id)


def test_file_name_must_match_the_key(store: KeyStore, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    path = _stored(store, key)
    wrong_id = "f" * 64
    path.rename(path.with_name(f"{wrong_id}.key"))
    assert [i.key_id for i in store.list()] == [wrong_id]  # list() reads headers only
    with pytest.raises(KeystoreError, match=f"holds key {key.canonical_key_id}") as caught:
        store.get(wrong_id)
    assert caught.value.advice and key.canonical_key_id in caught.value.advice


def test_odd_files_are_ignored(store: KeyStore, key_of: KeyOf, tmp_path: Path) -> None:
    key = key_of("ecdsa")
    path = _stored(store, key)
    (store.private_dir / "notes.txt").write_text("x")
    (store.private_dir / "not-an-id.key").write_bytes(path.read_bytes())
    outside = tmp_path / "outside.key"
    outside.write_bytes(path.read_bytes())
    (store.private_dir / f"{'e' * 64}.key").symlink_to(outside)
    assert [i.key_id for i in store.list()] == [key.canonical_key_id]
    with pytest.raises(KeystoreError, match="no private key"):
        store.get("e" * 64)


def test_remove(store: KeyStore, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    path = _stored(store, key)
    store.remove(key.canonical_key_id)
    assert not path.exists()
    assert store.list() == []


# --- legacy layouts -----------------------------------------------------------------


def test_legacy_layouts(trust_dir: Path, key_of: KeyOf) -> None:
    private = trust_dir / "private"
    root, targets, snapshot = key_of("ecdsa"), key_of("rsa"), key_of("ed25519")
    (private / "root_keys").mkdir(parents=True)
    (private / "root_keys" / f"{root.canonical_key_id}_root.key").write_bytes(
        legacy_pem(root, "rootpass", role="root")
    )
    gun_dir = private / "tuf_keys" / "docker.io" / "library" / "alpine"
    gun_dir.mkdir(parents=True)
    (gun_dir / f"{targets.canonical_key_id}_targets.key").write_bytes(legacy_pem(targets))
    (gun_dir / f"{snapshot.canonical_key_id}.key").write_bytes(
        legacy_pem(snapshot, "snappass", role="snapshot", gun="ignored/by-path")
    )
    store = KeyStore(trust_dir, StaticPassphrases({"root": "rootpass", "snapshot": "snappass"}))
    infos = {i.key_id: i for i in store.list()}
    gun = "docker.io/library/alpine"
    assert {k: (i.role, i.gun, i.encrypted, i.legacy) for k, i in infos.items()} == {
        root.canonical_key_id: ("root", None, True, True),
        targets.canonical_key_id: ("targets", gun, False, True),
        snapshot.canonical_key_id: ("snapshot", gun, True, True),
    }
    for key, role in ((root, "root"), (targets, "targets"), (snapshot, "snapshot")):
        stored = store.get(key.canonical_key_id, role=role, gun=gun)
        assert stored.key.canonical_key_id == key.canonical_key_id
    assert [i.key_id for i in store.find("targets", gun)] == [targets.canonical_key_id]
    store.remove(targets.canonical_key_id)
    assert targets.canonical_key_id not in {i.key_id for i in store.list()}


def test_current_layout_wins_over_legacy(store: KeyStore, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    legacy_dir = store.private_dir / "root_keys"
    legacy_dir.mkdir(parents=True)
    (legacy_dir / f"{key.canonical_key_id}_root.key").write_bytes(legacy_pem(key))
    store.add(key, role="root")
    [info] = store.list()
    assert info.legacy is False
    store.remove(key.canonical_key_id)
    assert store.list() == []  # both copies removed


def test_legacy_wrong_passphrase(trust_dir: Path, key_of: KeyOf) -> None:
    key = key_of("ed25519")
    legacy_dir = trust_dir / "private" / "root_keys"
    legacy_dir.mkdir(parents=True)
    (legacy_dir / f"{key.canonical_key_id}_root.key").write_bytes(legacy_pem(key, "right"))
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        KeyStore(trust_dir, StaticPassphrases("wrong")).get(key.canonical_key_id)


# --- export / import -----------------------------------------------------------------


def test_export_import_round_trip(store: KeyStore, any_key: PrivateKey, tmp_path: Path) -> None:
    store.add(any_key, role="targets", gun=GUN)
    exported = store.export(any_key.canonical_key_id, "export passphrase")
    block = decode_pem(exported)
    assert block.type == "ENCRYPTED PRIVATE KEY"
    assert dict(block.headers) == {
        "gun": GUN,
        "path": any_key.canonical_key_id,
        "role": "targets",
    }
    other = KeyStore(tmp_path / "other", Recording("other store passphrase"))
    info = other.import_(exported, passphrase="export passphrase")
    assert info == KeyInfo(
        any_key.canonical_key_id,
        "targets",
        GUN,
        other.private_dir / f"{any_key.canonical_key_id}.key",
        True,
    )
    assert other.get(info.key_id, role="targets", gun=GUN).key.algorithm == any_key.algorithm


def test_export_needs_a_passphrase(store: KeyStore, key_of: KeyOf) -> None:
    store.add(key_of("ecdsa"), role="root")
    with pytest.raises(PassphraseError, match="empty"):
        store.export(key_of("ecdsa").canonical_key_id, "")


def test_import_asks_the_source_to_unlock_and_to_store(tmp_path: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    source = Recording("same passphrase")
    first = KeyStore(tmp_path / "a", source)
    first.add(key, role="root")
    exported = first.export(key.canonical_key_id, "same passphrase")
    source.calls.clear()
    KeyStore(tmp_path / "b", source).import_(exported)
    assert source.calls == [
        ("root", None, key.canonical_key_id, False),
        ("root", None, key.canonical_key_id, True),
    ]


@pytest.mark.parametrize("encrypted", [False, True])
def test_import_legacy_and_foreign_formats(
    tmp_path: Path, any_key: PrivateKey, encrypted: bool
) -> None:
    store = KeyStore(tmp_path, StaticPassphrases("store passphrase"))
    legacy = legacy_pem(any_key, "file passphrase" if encrypted else None, role="root")
    assert store.import_(legacy, passphrase="file passphrase").role == "root"
    crypto_pem = any_key.crypto_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"file passphrase")
        if encrypted
        else serialization.NoEncryption(),
    )
    info = store.import_(crypto_pem, role="root", passphrase="file passphrase")
    assert info.key_id == any_key.canonical_key_id
    assert store.get(info.key_id, role="root").key.canonical_key_id == any_key.canonical_key_id


def test_import_defaults_and_conflicts(tmp_path: Path, key_of: KeyOf) -> None:
    store = KeyStore(tmp_path, StaticPassphrases("store passphrase"))
    key = key_of("ecdsa")
    clear = key.crypto_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert store.import_(clear).role == "delegation"  # notary's default import role
    store.remove(key.canonical_key_id)
    with pytest.raises(KeyRoleError, match="no GUN"):
        store.import_(clear, role="targets")
    tagged = legacy_pem(key, role="targets", gun=GUN)
    with pytest.raises(KeyRoleError, match="is a targets key, not a root key"):
        store.import_(tagged, role="root")
    with pytest.raises(KeyRoleError, match=f"belongs to {GUN}"):
        store.import_(tagged, gun="other/repo")
    assert store.import_(tagged, role="targets", gun=GUN).gun == GUN


def test_import_gun_from_legacy_path_header(tmp_path: Path, key_of: KeyOf) -> None:
    key = key_of("ecdsa")
    data = legacy_pem(key, role="snapshot", path=f"tuf_keys/example.com/app/{key.canonical_key_id}")
    info = KeyStore(tmp_path, StaticPassphrases("pp")).import_(data)
    assert (info.role, info.gun) == ("snapshot", "example.com/app")


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"garbage", FormatError, "no PEM block"),
        (encode_pem(PemBlock("PUBLIC KEY", {}, b"x")), KeyFormatError, "not a private key"),
        (
            encode_pem(PemBlock("PRIVATE KEY", {}, b"1")) * 2,
            FormatError,
            "2 PEM blocks",
        ),
    ],
)
def test_import_refusals(
    tmp_path: Path, data: bytes, error: type[CountersignError], message: str
) -> None:
    with pytest.raises(error, match=message):
        KeyStore(tmp_path, StaticPassphrases("pp")).import_(data)


def test_import_encrypted_without_passphrase(tmp_path: Path, key_of: KeyOf) -> None:
    data = legacy_pem(key_of("ecdsa"), "file passphrase", role="root")
    with pytest.raises(PassphraseError, match="no passphrase available") as caught:
        KeyStore(tmp_path, EnvPassphrases({})).import_(data)
    assert "COUNTERSIGN_ROOT_PASSPHRASE" in (caught.value.advice or "")


# --- properties ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("fuzz"), StaticPassphrases("fuzz passphrase"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_import_of_mutated_files_only_raises_countersign_errors(
    fuzz_store: KeyStore, key_of: KeyOf, data: st.DataObject
) -> None:
    key = key_of(data.draw(st.sampled_from(["ecdsa", "ed25519"])))
    kind = data.draw(st.sampled_from(["legacy", "legacy-enc", "pkcs8"]))
    if kind == "pkcs8":
        raw = bytearray(
            encode_pem(
                PemBlock(
                    "PRIVATE KEY",
                    {"role": "root"},
                    key.crypto_key.private_bytes(
                        serialization.Encoding.DER,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                )
            )
        )
    else:
        raw = bytearray(legacy_pem(key, "fuzz passphrase" if kind == "legacy-enc" else None))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del raw[pos]
        else:
            raw.insert(pos, data.draw(st.sampled_from(list(b"A/+=:\n -"))))
    try:
        info = fuzz_store.import_(bytes(raw))
    except CountersignError:
        return
    assert isinstance(info, KeyInfo)
