"""``countersign trust``: sign image tags, see who signed them, manage signers and keys.

Docker-trust-like commands on Notary v1 trust data; every reading command has
``--json``. Exit status: 0 success, 1 an error or a refusal (the message says
which check failed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from countersign.cli._common import emit, read_file, resolve_trust_dir, trust_dir_option
from countersign.errors import CountersignError, KeyFormatError

SERVER_ENV = "COUNTERSIGN_SERVER"
TLS_CA_ENV = "COUNTERSIGN_TLS_CA"
MAX_PENDING = 16 << 20


def split_tagged(text: str) -> tuple[str, str]:
    gun, tag = split_reference(text, tag=True)
    if tag is None:  # pragma: no cover - split_reference refuses it
        raise CountersignError(f"{text!r} names no tag")
    return gun, tag


def split_reference(text: str, *, tag: bool) -> tuple[str, str | None]:
    """``GUN[:TAG]``: the tag is after a ``:`` in the last path segment (ports stay)."""
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        gun, name = text[:colon], text[colon + 1:]
    else:
        gun, name = text, None
    if not gun or (name is not None and not name):
        raise CountersignError(f"{text!r} is not a repository reference",
                               advice="write GUN:TAG, e.g. registry.example.com/team/app:v1")
    if tag and name is None:
        raise CountersignError(f"{text!r} names no tag", advice="write GUN:TAG")
    return gun, name


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None,
                        help=f"trust server URL (env {SERVER_ENV}; default: https:// and the "
                        "registry host of the GUN, as docker does)")
    parser.add_argument("--tls-ca", type=Path, default=None,
                        help=f"CA certificate(s) to trust for the server (env {TLS_CA_ENV})")
    trust_dir_option(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("trust", help="sign tags and inspect signatures (Notary v1)")
    cmds = parser.add_subparsers(dest="trust_command", metavar="COMMAND", required=True)

    init = cmds.add_parser("init", help="create a repository's trust data")
    init.add_argument("gun")
    init.add_argument("--client-snapshot", action="store_true",
                      help="keep the snapshot key here instead of on the server")
    _common(init)
    init.set_defaults(func=_init)

    sign = cmds.add_parser("sign", help="sign a tag as a manifest digest and size")
    sign.add_argument("reference", metavar="GUN:TAG")
    sign.add_argument("--digest", required=True, help="sha256:HEX of the manifest")
    sign.add_argument("--size", required=True, type=int, help="manifest size in bytes")
    sign.add_argument("--role", action="append", default=[],
                      help="role to sign into (repeatable; default: as docker, every "
                      "delegation whose key is here, or targets)")
    _common(sign)
    sign.set_defaults(func=_sign)

    inspect = cmds.add_parser("inspect", help="show signed tags, signers and keys")
    inspect.add_argument("reference", metavar="GUN[:TAG]")
    inspect.add_argument("--json", action="store_true")
    _common(inspect)
    inspect.set_defaults(func=_inspect)

    revoke = cmds.add_parser("revoke", help="remove a tag's signature")
    revoke.add_argument("reference", metavar="GUN:TAG")
    revoke.add_argument("--role", action="append", default=[])
    _common(revoke)
    revoke.set_defaults(func=_revoke)

    signer = cmds.add_parser("signer", help="manage the signers (delegations) of a repository")
    signer_cmds = signer.add_subparsers(dest="signer_command", metavar="COMMAND", required=True)
    add = signer_cmds.add_parser("add", help="delegate targets/NAME to public keys")
    add.add_argument("name", help="signer name (role targets/NAME) or a delegation role")
    add.add_argument("gun")
    add.add_argument("--key", action="append", required=True, type=Path,
                     help="public key or certificate PEM (repeatable)")
    add.add_argument("--threshold", type=int, default=1,
                     help="distinct keys that must sign (default 1)")
    add.add_argument("--paths", default="", help="comma-separated tag prefixes (default all)")
    _common(add)
    add.set_defaults(func=_signer_add)
    remove = signer_cmds.add_parser("remove", help="remove a signer")
    remove.add_argument("name")
    remove.add_argument("gun")
    _common(remove)
    remove.set_defaults(func=_signer_remove)

    key = cmds.add_parser("key", help="signing keys")
    key_cmds = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    generate = key_cmds.add_parser("generate", help="a signer key, and NAME.pub to share")
    generate.add_argument("name")
    generate.add_argument("--dir", type=Path, default=Path.cwd(),
                          help="where NAME.pub is written (default: here)")
    generate.add_argument("--algorithm", choices=["ecdsa", "rsa", "ed25519"], default="ecdsa")
    trust_dir_option(generate)
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(func=_key_generate)
    rotate = key_cmds.add_parser("rotate", help="rotate targets, snapshot or timestamp")
    rotate.add_argument("gun")
    rotate.add_argument("role", choices=["targets", "snapshot", "timestamp"])
    rotate.add_argument("--server-managed", action="store_true",
                        help="the server makes and holds the new key")
    _common(rotate)
    rotate.set_defaults(func=_key_rotate)

    pending = cmds.add_parser("pending", help="threshold signing by several key holders")
    pending_cmds = pending.add_subparsers(dest="pending_command", metavar="COMMAND",
                                          required=True)
    create = pending_cmds.add_parser("create", help="prepare a signed tag for more signers")
    create.add_argument("reference", metavar="GUN:TAG")
    create.add_argument("--digest", required=True)
    create.add_argument("--size", required=True, type=int)
    create.add_argument("--role", required=True)
    create.add_argument("--output", "-o", type=Path, required=True)
    _common(create)
    create.set_defaults(func=_pending_create)
    cosign = pending_cmds.add_parser("sign", help="add this holder's signature")
    cosign.add_argument("file", type=Path)
    _common(cosign)
    cosign.set_defaults(func=_pending_sign)
    show = pending_cmds.add_parser("show", help="who signed, who is missing")
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true")
    _common(show)
    show.set_defaults(func=_pending_show)
    submit = pending_cmds.add_parser("publish", help="publish once the threshold is met")
    submit.add_argument("file", type=Path)
    _common(submit)
    submit.set_defaults(func=_pending_publish)


# --- wiring ---------------------------------------------------------------------------


def _server_for(args: argparse.Namespace, gun: str) -> str:
    server = args.server or os.environ.get(SERVER_ENV)
    if server:
        return str(server).rstrip("/")
    host = gun.split("/", 1)[0]
    if host == "docker.io":
        return "https://notary.docker.io"
    return f"https://{host}"


def repository_for(args: argparse.Namespace, gun: str, *, pinning: Any = None) -> Any:
    """The trust repository of ``gun`` for ``args``; with the trust dir's ``config.json``
    pinning unless ``pinning`` (a ``TrustPinning``) is given."""
    from countersign.client.cache import MetadataCache
    from countersign.client.http import Credentials, HTTPSFetcher
    from countersign.client.pinning import load_trust_pinning
    from countersign.client.remote import NotaryRemote
    from countersign.client.repository import TrustRepository
    from countersign.keystore import DefaultPassphrases, KeyStore

    trust_dir = resolve_trust_dir(args)
    ca = args.tls_ca or os.environ.get(TLS_CA_ENV) or None
    fetcher = HTTPSFetcher(_server_for(args, gun), ca_file=ca, credentials=Credentials())
    if pinning is None:
        pinning = load_trust_pinning(trust_dir / "config.json")
    return TrustRepository(gun, NotaryRemote(fetcher, gun), MetadataCache(trust_dir, gun),
                           KeyStore(trust_dir, DefaultPassphrases()), pinning)


def _meta(digest: str, size: int) -> Any:
    from countersign.tuf import FileMeta

    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(
            c in "0123456789abcdef" for c in hexdigest):
        raise CountersignError(f"--digest {digest!r} is not sha256:<64 lowercase hex>")
    if size < 0:
        raise CountersignError("--size must not be negative")
    return FileMeta(size, {"sha256": bytes.fromhex(hexdigest)})


def _tag_adder(tag: str, meta: Any) -> Callable[[Any], Any]:
    def add(targets: Any) -> Any:
        return replace(targets, targets={**targets.targets, tag: meta})

    return add


def _role_name(name: str) -> str:
    return name if name.startswith("targets/") else f"targets/{name}"


# --- commands -------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    repo = repository_for(args, args.gun)
    repo.init(server_managed_snapshot=not args.client_snapshot)
    print(f"initialized trust data for {args.gun}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    gun, tag = split_tagged(args.reference)
    repo = repository_for(args, gun)
    state = repo.sign_tag(tag, _meta(args.digest, args.size), roles=args.role)
    roles = sorted({t.role for t in state.report.targets if t.name == tag})
    print(f"signed {gun}:{tag} ({args.digest}) into {', '.join(roles)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    gun, tag = split_tagged(args.reference)
    repository_for(args, gun).revoke_tag(tag, roles=args.role)
    print(f"revoked {gun}:{tag}")
    return 0


def inspect_record(gun: str, refreshed: Any, tag: str | None = None) -> dict[str, Any]:
    """docker trust inspect's shape, plus thresholds and countersign's warnings."""
    report = refreshed.report
    state = refreshed.state
    top = [t for t in report.targets if t.role in ("targets", "targets/releases")]
    tags: dict[tuple[str, str], set[str]] = {}
    for target in top:
        if tag is not None and target.name != tag:
            continue
        digest = (target.meta.sha256 or b"").hex()
        signers = tags.setdefault((target.name, digest), set())
        for other in report.targets:
            if (other.name == target.name and other.role not in ("targets",
                                                                  "targets/releases")
                    and (other.meta.sha256 or b"").hex() == digest):
                signers.add(other.role.removeprefix("targets/"))
    signed_tags = [{"SignedTag": name, "Digest": digest,
                    "Signers": sorted(s) or ["Repo Admin"]}
                   for (name, digest), s in sorted(tags.items())]
    signer_list: list[dict[str, Any]] = []
    targets = state.roles.get("targets")
    if targets is not None:
        delegations = targets.metadata.signed.delegations
        for role in delegations.roles:
            if role.name == "targets/releases":
                continue
            signer_list.append({
                "Name": role.name.removeprefix("targets/"),
                "Keys": [{"ID": delegations.keys[k].canonical_key_id} for k in role.keyids],
                "Threshold": role.threshold,
            })
    root = state.root.signed
    admin = [
        {"Name": "Root", "Keys": [{"ID": k} for k in root.roles["root"].keyids]},
        {"Name": "Repository", "Keys": [{"ID": k} for k in root.roles["targets"].keyids]},
    ]
    return {"Name": gun, "SignedTags": signed_tags, "Signers": signer_list,
            "AdministrativeKeys": admin, "Warnings": report.warnings}


def _inspect_text(record: dict[str, Any]) -> str:
    lines = [f"Signatures for {record['Name']}", ""]
    if record["SignedTags"]:
        lines.append(f"{'SIGNED TAG':<24}{'DIGEST':<68}SIGNERS")
        lines.extend(f"{t['SignedTag']:<24}{t['Digest']:<68}{', '.join(t['Signers'])}"
                     for t in record["SignedTags"])
    else:
        lines.append("No signatures")
    lines += ["", f"List of signers and their keys for {record['Name']}", ""]
    if record["Signers"]:
        lines.append(f"{'SIGNER':<24}{'THRESHOLD':<11}KEYS")
        lines.extend(f"{s['Name']:<24}{s['Threshold']:<11}"
                     + ", ".join(k["ID"][:12] for k in s["Keys"]) for s in record["Signers"])
    else:
        lines.append("No signers")
    lines += ["", f"Administrative keys for {record['Name']}", ""]
    lines.extend(f"  {a['Name']} Key:\t" + ", ".join(k["ID"] for k in a["Keys"])
                 for a in record["AdministrativeKeys"])
    lines.extend(f"warning: {w}" for w in record["Warnings"])
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> int:
    gun, tag = split_reference(args.reference, tag=False)
    record = inspect_record(gun, repository_for(args, gun).refresh(), tag)
    if tag is not None and not record["SignedTags"]:
        raise CountersignError(f"no trust data for {gun}:{tag}",
                               advice="the tag is not signed in targets or targets/releases")
    emit([record] if args.json else record, args.json, _inspect_text)
    return 0


def _public_key(path: Path) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from countersign.keystore import decode_pem_blocks
    from countersign.tuf import PublicKey

    data = read_file(path, 1 << 20)
    try:
        blocks = decode_pem_blocks(data, str(path))
    except CountersignError as exc:
        raise KeyFormatError(f"{path}: {exc.message}") from None
    if blocks and blocks[0].type == "CERTIFICATE":
        certs = [x509.load_der_x509_certificate(b.der) for b in blocks
                 if b.type == "CERTIFICATE"]
        return PublicKey.from_certificates(certs)
    if blocks and blocks[0].type == "PUBLIC KEY":
        try:
            return PublicKey.from_crypto(load_der_public_key(blocks[0].der))
        except ValueError:
            raise KeyFormatError(f"{path}: not a usable public key") from None
    raise KeyFormatError(f"{path} holds no PUBLIC KEY or CERTIFICATE",
                         advice="use the NAME.pub that countersign trust key generate wrote")


def _signer_add(args: argparse.Namespace) -> int:
    keys = [_public_key(p) for p in args.key]
    paths = tuple(p for p in args.paths.split(",") if p) or ("",)
    role = _role_name(args.name)
    repository_for(args, args.gun).add_signer(role, keys, threshold=args.threshold, paths=paths)
    print(f"added signer {role} to {args.gun} ({len(keys)} key(s), threshold {args.threshold})")
    return 0


def _signer_remove(args: argparse.Namespace) -> int:
    role = _role_name(args.name)
    repository_for(args, args.gun).remove_signer(role)
    print(f"removed signer {role} from {args.gun}")
    return 0


def _key_generate(args: argparse.Namespace) -> int:
    from countersign.keystore import DefaultPassphrases, KeyStore
    from countersign.tuf import PrivateKey

    public_path = args.dir / f"{args.name}.pub"
    if public_path.exists():
        raise CountersignError(f"{public_path} already exists; not overwriting it")
    key = PrivateKey.generate(args.algorithm)
    store = KeyStore(resolve_trust_dir(args), DefaultPassphrases())
    store.add(key, role=args.name)
    public_path.write_bytes(key.public_pem())
    emit({"name": args.name, "key_id": key.canonical_key_id, "public": str(public_path)},
         args.json, lambda i: f"generated key {i['key_id']} for {i['name']}; public key in "
                              f"{i['public']}")
    return 0


def _key_rotate(args: argparse.Namespace) -> int:
    repository_for(args, args.gun).rotate_key(args.role, server_managed=args.server_managed)
    where = "the server" if args.server_managed else "this trust dir"
    print(f"rotated the {args.role} key of {args.gun}; the new key is held by {where}")
    return 0


def _load_pending(path: Path) -> Any:
    from countersign.client.repository import PendingUpdate

    return PendingUpdate.from_json(read_file(path, MAX_PENDING))


def _write_pending(path: Path, pending: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pending.to_json())
    tmp.replace(path)


def _pending_create(args: argparse.Namespace) -> int:
    gun, tag = split_tagged(args.reference)
    repo = repository_for(args, gun)
    pending = repo.prepare(_role_name(args.role), _tag_adder(tag, _meta(args.digest, args.size)))
    _write_pending(args.output, pending)
    result = repo.status(pending)
    print(f"pending update of {pending.role} written to {args.output}: "
          f"{result.distinct_signers} of {result.threshold} signatures")
    return 0


def _pending_sign(args: argparse.Namespace) -> int:
    pending = _load_pending(args.file)
    repo = repository_for(args, pending.gun)
    signed = repo.cosign(pending)
    _write_pending(args.file, signed)
    result = repo.status(signed)
    print(f"signed; {result.distinct_signers} of {result.threshold} signatures")
    return 0


def _pending_show(args: argparse.Namespace) -> int:
    pending = _load_pending(args.file)
    result = repository_for(args, pending.gun).status(pending)
    record = {"gun": pending.gun, "role": pending.role,
              "version": pending.metadata.signed.version,
              "targets": sorted(pending.metadata.signed.targets),
              "threshold": result.threshold, "signatures": result.distinct_signers,
              "signed_by": sorted(result.signed), "missing": sorted(result.unsigned),
              "ready": result.verified}
    emit(record, args.json, lambda r: (
        f"{r['gun']} {r['role']} version {r['version']}: {r['signatures']} of "
        f"{r['threshold']} signatures ({'ready' if r['ready'] else 'not ready'})"))
    return 0


def _pending_publish(args: argparse.Namespace) -> int:
    pending = _load_pending(args.file)
    repository_for(args, pending.gun).submit(pending)
    print(f"published {pending.role} of {pending.gun}")
    return 0
