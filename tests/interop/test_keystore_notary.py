"""countersign's key store against the real notary 0.7 CLI (no server needed for keys).

What is checked, in both directions:

1. keys ``notary key generate`` writes (into a trust dir, and with ``-o``) are
   listed and loaded by countersign; notary refuses to generate RSA/Ed25519;
2. keys countersign writes (ECDSA, RSA, Ed25519; encrypted and clear) are
   listed by ``notary key list`` with the same role/GUN, unlocked and
   rewritten by ``notary key passwd`` (whose output countersign reproduces
   byte for byte) and exported by ``notary key export``;
3. ``notary key import`` accepts a countersign export (thanks to its ``path``
   header), but refuses its own ``key generate -o`` output, which countersign
   imports;
4. notary ignores the PBKDF2 PRF field, so it cannot open keys encrypted with
   hmacWithSHA256 (as ``cryptography``/openssl write them); countersign can;
5. notary's migration of the legacy ``root_keys``/``tuf_keys`` layouts yields
   the roles and GUNs countersign reads from those layouts.

Every notary run gets an argument list (no shell), a timeout, stdin from
/dev/null, a temporary HOME and a temporary ``-c`` config file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from countersign.keystore import (
    KeyStore,
    PemBlock,
    StaticPassphrases,
    _der,
    decode_pem,
    decode_private_key,
    encode_pem,
    pkcs8,
)
from countersign.tuf.keys import PrivateKey

NOTARY = shutil.which("notary")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        NOTARY is None, reason="the notary 0.7 CLI is not on PATH (apt-get install notary)"
    ),
]

PASSPHRASES = {
    "root": "interop-root-passphrase",
    "targets": "interop-targets-passphrase",
    "snapshot": "interop-snapshot-passphrase",
    "delegation": "interop-delegation-passphrase",
}
#: At most 25 characters: `notary key list` truncates longer GUNs.
GUN = "example.com/org/app"
_KEY_ID = re.compile(r"\b[0-9a-f]{64}\b")


class Notary:
    """The notary CLI bound to one trust directory, isolated from the real HOME."""

    def __init__(self, base: Path, name: str = "notary") -> None:
        self.base = base / name
        self.trust_dir = self.base / "trust"
        self.home = self.base / "home"
        self.home.mkdir(parents=True)
        self.config = self.base / "config.json"
        self.config.write_text(json.dumps({"trust_dir": str(self.trust_dir)}))

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert NOTARY is not None
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            **{f"NOTARY_{role.upper()}_PASSPHRASE": p for role, p in PASSPHRASES.items()},
            **(env or {}),
        }
        result = subprocess.run(
            [NOTARY, "-c", str(self.config), "-d", str(self.trust_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=environment,
            cwd=self.base,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"notary {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def key_list(self) -> dict[str, tuple[str, str | None]]:
        """``notary key list`` as {key ID: (role, GUN or None)}."""
        lines = self.run("key", "list").stdout.splitlines()
        header = next((line for line in lines if line.startswith("ROLE")), None)
        if header is None:
            return {}
        gun_at, id_at = header.index("GUN"), header.index("KEY ID")
        rows: dict[str, tuple[str, str | None]] = {}
        for line in lines:
            match = _KEY_ID.search(line)
            if match:
                role = line[:gun_at].strip()
                gun = line[gun_at:id_at].strip() or None
                rows[match.group()] = (role, gun)
        return rows


def _store(trust_dir: Path, passphrases: dict[str, str] | str = PASSPHRASES) -> KeyStore:
    return KeyStore(trust_dir, StaticPassphrases(passphrases))


def _view(store: KeyStore) -> dict[str, tuple[str, str | None]]:
    return {i.key_id: (i.role or "", i.gun) for i in store.list()}


def _salt_and_iv(der: bytes) -> tuple[bytes, bytes]:
    reader = _der.top_sequence(der, "t")
    params = reader.sequence("alg")
    params.oid("pbes2")
    pbes2 = params.sequence("params")
    kdf = pbes2.sequence("kdf")
    kdf.oid("pbkdf2")
    salt = kdf.sequence("p").octet_string("salt")
    scheme = pbes2.sequence("scheme")
    scheme.oid("aes")
    return salt, scheme.octet_string("iv")


# --- 1. notary writes, countersign reads ------------------------------------------


def test_keys_notary_generates_are_listed_and_loaded(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    notary.run("key", "generate")  # root, ECDSA
    notary.run("key", "generate", "ecdsa", "--role", "targets")
    expected = notary.key_list()
    assert sorted(role for role, _ in expected.values()) == ["root", "targets"]
    store = _store(notary.trust_dir)
    assert _view(store) == expected
    for key_id, (role, _gun) in expected.items():
        stored = store.get(key_id, role=role)
        assert stored.key.canonical_key_id == key_id
        assert stored.key.algorithm == "ecdsa"
        assert stored.key.public_key.verify("ecdsa", stored.key.sign(b"m"), b"m")


def test_notary_generates_only_ecdsa(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    for algorithm in ("rsa", "ed25519"):
        result = notary.run("key", "generate", algorithm, check=False)
        assert result.returncode != 0
        assert "ECDSA" in result.stdout + result.stderr


def test_generate_output_file_is_imported_by_countersign_not_by_notary(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    prefix = notary.base / "generated"
    # With -o, notary asks for the passphrase with an empty role alias, so
    # only NOTARY_DELEGATION_PASSPHRASE serves.
    notary.run("key", "generate", "ecdsa", "--role", "targets", "-o", str(prefix))
    private_file = Path(f"{prefix}-key.pem")
    public_file = Path(f"{prefix}.pem")
    assert dict(decode_pem(private_file.read_bytes()).headers) == {"role": "targets"}

    refused = notary.run("key", "import", str(private_file), "--gun", GUN, check=False)
    assert refused.returncode != 0
    assert notary.key_list() == {}

    store = _store(tmp_path / "countersign", "countersign store passphrase")
    info = store.import_(private_file.read_bytes(), gun=GUN, passphrase=PASSPHRASES["delegation"])
    assert (info.role, info.gun) == ("targets", GUN)
    key = store.get(info.key_id, role="targets", gun=GUN).key
    spki = key.crypto_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert decode_pem(public_file.read_bytes()).der == spki


# --- 2. countersign writes, notary reads ----------------------------------------------


def _countersign_keys(store: KeyStore) -> dict[str, str]:
    """Keys of every algorithm and kind of role; returns {key ID: role}."""
    plan = [
        ("ecdsa", "root", None, None),
        ("rsa", "targets", GUN, None),
        ("ed25519", "snapshot", GUN, None),
        ("ecdsa", "targets/releases", None, None),
        ("ed25519", "alice", None, None),
        ("ecdsa", "targets", "example.com/org/other", ""),  # unencrypted
    ]
    roles = {}
    for algorithm, role, gun, passphrase in plan:
        key = (
            PrivateKey.generate("rsa", rsa_bits=2048)
            if algorithm == "rsa"
            else PrivateKey.generate(algorithm)
        )
        store.add(key, role=role, gun=gun, passphrase=passphrase)
        roles[key.canonical_key_id] = role
    return roles


def test_notary_lists_and_rewrites_countersign_keys(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    store = _store(notary.trust_dir)
    roles = _countersign_keys(store)
    assert notary.key_list() == _view(store)

    for key_id, role in roles.items():
        before = store.get(key_id).key
        notary.run("key", "passwd", key_id)  # notary must decrypt and parse our file
        path = store.private_dir / f"{key_id}.key"
        rewritten = path.read_bytes()
        block = decode_pem(rewritten)
        assert block.type == "ENCRYPTED PRIVATE KEY"
        passphrase = PASSPHRASES.get(role, PASSPHRASES["delegation"])
        after = decode_private_key(block.der, passphrase, encrypted=True)
        assert after.canonical_key_id == before.canonical_key_id == key_id
        # notary's file, reproduced byte for byte with its salt and IV.
        salt, iv = _salt_and_iv(block.der)
        ours = pkcs8._encrypt(pkcs8._private_key_info(after), passphrase, salt, iv)
        assert encode_pem(PemBlock(block.type, dict(block.headers), ours)) == rewritten
    assert notary.key_list() == _view(store)


def test_notary_exports_countersign_keys(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    store = _store(notary.trust_dir)
    roles = _countersign_keys(store)
    other = _store(tmp_path / "other")
    for key_id in roles:
        out = notary.base / f"{key_id}.pem"
        notary.run("key", "export", "--key", key_id, "-o", str(out))
        block = decode_pem(out.read_bytes())
        assert block.headers["path"] == key_id
        info = other.import_(out.read_bytes())
        assert info.key_id == key_id
    assert _view(other) == _view(store)


# --- 3. countersign exports, notary imports -------------------------------------------


def test_notary_imports_countersign_exports(tmp_path: Path) -> None:
    export_passphrase = "countersign export passphrase"
    store = _store(tmp_path / "countersign")
    root = PrivateKey.generate("ecdsa")
    targets = PrivateKey.generate("ed25519")
    store.add(root, role="root")
    store.add(targets, role="targets", gun=GUN)

    notary = Notary(tmp_path)
    for key in (root, targets):
        exported = notary.base / f"{key.canonical_key_id}.pem"
        exported.write_bytes(store.export(key.canonical_key_id, export_passphrase))
        notary.run("key", "import", str(exported))
    assert notary.key_list() == {
        root.canonical_key_id: ("root", None),
        targets.canonical_key_id: ("targets", GUN),
    }
    # notary keeps the export passphrase on the imported files and can open them.
    same = {"NOTARY_ROOT_PASSPHRASE": export_passphrase}
    same["NOTARY_TARGETS_PASSPHRASE"] = export_passphrase
    for key in (root, targets):
        notary.run("key", "passwd", key.canonical_key_id, env=same)
    imported = _store(notary.trust_dir, export_passphrase)
    assert imported.get(targets.canonical_key_id, role="targets", gun=GUN).key.algorithm == (
        "ed25519"
    )


# --- 4. what notary cannot read ----------------------------------------------------------


def test_notary_ignores_the_pbkdf2_prf(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    key = PrivateKey.generate("ecdsa")
    der = key.crypto_key.private_bytes(  # PBES2 with hmacWithSHA256
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASES["root"].encode()),
    )
    private = notary.trust_dir / "private"
    private.mkdir(parents=True, mode=0o700)
    path = private / f"{key.canonical_key_id}.key"
    path.write_bytes(encode_pem(PemBlock("ENCRYPTED PRIVATE KEY", {"role": "root"}, der)))
    assert notary.key_list() == {key.canonical_key_id: ("root", None)}
    refused = notary.run("key", "passwd", key.canonical_key_id, check=False)
    assert refused.returncode != 0
    assert _store(notary.trust_dir).get(key.canonical_key_id, role="root").key.algorithm == "ecdsa"


# --- 5. legacy layouts ---------------------------------------------------------------------


def _legacy_block(key: PrivateKey, passphrase: str, role: str) -> bytes:
    body = key.crypto_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    iv = os.urandom(16)
    secret, block = b"", b""
    while len(secret) < 32:
        block = hashlib.md5(block + passphrase.encode() + iv[:8], usedforsecurity=False).digest()
        secret += block
    pad = 16 - len(body) % 16
    encryptor = Cipher(algorithms.AES(secret[:32]), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(body + bytes([pad]) * pad) + encryptor.finalize()
    label = "EC PRIVATE KEY" if key.algorithm == "ecdsa" else "RSA PRIVATE KEY"
    headers = {"Proc-Type": "4,ENCRYPTED", "DEK-Info": f"AES-256-CBC,{iv.hex().upper()}"}
    headers["role"] = role
    return encode_pem(PemBlock(label, headers, encrypted))


def test_legacy_layout_matches_notary_migration(tmp_path: Path) -> None:
    notary = Notary(tmp_path)
    private = notary.trust_dir / "private"
    root = PrivateKey.generate("ecdsa")
    targets = PrivateKey.generate("rsa", rsa_bits=2048)
    snapshot = PrivateKey.generate("ecdsa")
    (private / "root_keys").mkdir(parents=True)
    (private / "root_keys" / f"{root.canonical_key_id}_root.key").write_bytes(
        _legacy_block(root, PASSPHRASES["root"], "root")
    )
    gun_dir = private / "tuf_keys" / "docker.io" / "library" / "alpine"
    gun_dir.mkdir(parents=True)
    for key, role in ((targets, "targets"), (snapshot, "snapshot")):
        (gun_dir / f"{key.canonical_key_id}_{role}.key").write_bytes(
            _legacy_block(key, PASSPHRASES[role], role)
        )
    store = _store(notary.trust_dir)
    before = _view(store)
    assert all(info.legacy for info in store.list())
    assert before[targets.canonical_key_id] == ("targets", "docker.io/library/alpine")

    assert notary.key_list() == before  # notary migrates the files while listing
    assert not (private / "root_keys").exists()
    assert _view(store) == before
    assert not any(info.legacy for info in store.list())
    for key in (root, targets, snapshot):
        assert store.get(key.canonical_key_id).key.canonical_key_id == key.canonical_key_id
        notary.run("key", "passwd", key.canonical_key_id)
