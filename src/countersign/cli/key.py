"""``countersign key``: private keys in a trust dir, in notary's own format."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from countersign.cli._common import emit, read_file, resolve_trust_dir, trust_dir_option
from countersign.errors import CountersignError, PassphraseError
from countersign.keystore import DefaultPassphrases, KeyInfo, KeyStore
from countersign.tuf import PrivateKey

#: A key file is small; anything larger than this is not one.
MAX_KEY_FILE = 1 << 20
EXPORT_PASSPHRASE_ENV = "COUNTERSIGN_EXPORT_PASSPHRASE"  # noqa: S105 - a variable name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("key", help="manage private keys (shared with notary's trust dir)")
    cmds = parser.add_subparsers(dest="key_command", metavar="COMMAND", required=True)

    generate = cmds.add_parser("generate", help="make a new key and store it encrypted")
    generate.add_argument("--role", required=True,
                          help="root, targets, snapshot, or a delegation role or signer name")
    generate.add_argument("--gun", help="the repository, needed for targets and snapshot keys")
    generate.add_argument("--algorithm", choices=["ecdsa", "rsa", "ed25519"], default="ecdsa",
                          help="key algorithm (default: ecdsa P-256, as notary)")
    generate.add_argument("--public-out", type=Path,
                          help="also write the public key as PEM to this file")
    _common(generate)
    generate.set_defaults(func=_generate)

    listing = cmds.add_parser("list", help="list stored keys (nothing is decrypted)")
    _common(listing)
    listing.set_defaults(func=_list)

    importing = cmds.add_parser(
        "import", help="store a key from a PEM file (clear or encrypted PKCS#8, notary's "
        "exports and legacy files)")
    importing.add_argument("file", type=Path)
    importing.add_argument("--role", help="role for a key whose file names none")
    importing.add_argument("--gun", help="repository for a key whose file names none")
    _common(importing)
    importing.set_defaults(func=_import)

    export = cmds.add_parser(
        "export", help="write a key as encrypted PEM that countersign and notary import",
        description=f"The export passphrase comes from {EXPORT_PASSPHRASE_ENV} or a prompt; "
        "`countersign key import` reads it from the same variable.")
    export.add_argument("key_id")
    export.add_argument("--output", "-o", type=Path, required=True)
    _common(export)
    export.set_defaults(func=_export)

    remove = cmds.add_parser("remove", help="delete a stored key")
    remove.add_argument("key_id")
    _common(remove)
    remove.set_defaults(func=_remove)


def _common(parser: argparse.ArgumentParser) -> None:
    trust_dir_option(parser)
    parser.add_argument("--json", action="store_true", help="write JSON")


def _store(args: argparse.Namespace) -> KeyStore:
    return KeyStore(resolve_trust_dir(args), DefaultPassphrases())


def _info(info: KeyInfo) -> dict[str, Any]:
    return {"key_id": info.key_id, "role": info.role, "gun": info.gun,
            "path": str(info.path), "encrypted": info.encrypted}


def _generate(args: argparse.Namespace) -> int:
    store = _store(args)
    key = PrivateKey.generate(args.algorithm)
    path = store.add(key, role=args.role, gun=args.gun)
    out = {"key_id": key.canonical_key_id, "role": args.role, "gun": args.gun,
           "algorithm": key.algorithm, "path": str(path)}
    if args.public_out is not None:
        _write_private_file(args.public_out, key.public_pem(), mode=0o644)
        out["public"] = str(args.public_out)
    emit(out, args.json, lambda i: f"generated {i['algorithm']} key {i['key_id']} "
                                   f"for {i['role']} in {i['path']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = [_info(k) for k in _store(args).list()]

    def text(items: list[dict[str, Any]]) -> str:
        if not items:
            return f"no keys in {resolve_trust_dir(args)}"
        return "\n".join(f"{k['key_id']}  {k['role'] or '-':<24} {k['gun'] or ''}"
                         for k in items)

    emit(keys, args.json, text)
    return 0


def _import(args: argparse.Namespace) -> int:
    data = read_file(args.file, MAX_KEY_FILE)
    # an export is unlocked with the export passphrase when one is set
    secret = os.environ.get(EXPORT_PASSPHRASE_ENV) or None
    info = _store(args).import_(data, role=args.role, gun=args.gun, passphrase=secret)
    emit(_info(info), args.json, lambda i: f"imported key {i['key_id']} as {i['role']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    store = _store(args)
    secret = os.environ.get(EXPORT_PASSPHRASE_ENV) or DefaultPassphrases(environ={}).get(
        "export", None, args.key_id, new=True)
    if not secret:
        raise PassphraseError("the export passphrase is empty",
                              advice=f"set {EXPORT_PASSPHRASE_ENV}")
    _write_private_file(args.output, store.export(args.key_id, secret), mode=0o600)
    emit({"key_id": args.key_id, "path": str(args.output)}, args.json,
         lambda i: f"exported key {i['key_id']} to {i['path']}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.key_id)
    emit({"key_id": args.key_id, "removed": True}, args.json,
         lambda i: f"removed key {i['key_id']}")
    return 0


def _write_private_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` exclusively with ``mode``: never overwrite, never widen permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CountersignError(f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise CountersignError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


__all__ = ["register"]
