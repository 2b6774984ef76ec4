"""``countersign metadata``: read, check and verify Notary metadata files offline."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from countersign.cli._common import emit, read_file
from countersign.errors import CountersignError, FormatError, VerificationError
from countersign.tuf import Metadata, Root, Snapshot, Targets, Timestamp
from countersign.tuf.metadata import MAX_METADATA_BYTES, is_role_name
from countersign.tuf.repository import RepositoryReport, verify_repository


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("metadata", help="read and verify Notary (TUF) metadata offline")
    cmds = parser.add_subparsers(dest="metadata_command", metavar="COMMAND", required=True)

    inspect = cmds.add_parser("inspect", help="parse one metadata file and show what it says")
    inspect.add_argument("file", type=Path, help="a root, targets, snapshot or timestamp file")
    inspect.add_argument("--role", help="the role the file is for (needed for delegations)")
    inspect.add_argument("--json", action="store_true", help="write JSON")
    inspect.set_defaults(func=_inspect)

    verify = cmds.add_parser(
        "verify",
        help="verify a whole repository: certificates, signatures, hashes, expiry",
        description="Verify the metadata of one GUN in DIR (root.json, timestamp.json, "
        "snapshot.json, targets.json and delegations under targets/), as notary's "
        "client would. A notary trust-dir cache is such a directory: "
        "<trust_dir>/tuf/<gun>/metadata. Exit 0 when it verifies, 1 when it does not.",
    )
    verify.add_argument("directory", type=Path, help="directory holding the metadata files")
    verify.add_argument("--gun", required=True, help="the repository's GUN (root certificate CN)")
    verify.add_argument("--json", action="store_true", help="write JSON")
    verify.set_defaults(func=_verify)


def _inspect(args: argparse.Namespace) -> int:
    data = read_file(args.file, MAX_METADATA_BYTES)
    if args.role is not None and not is_role_name(args.role):
        raise FormatError(f"{args.role!r} is not a role name")
    md = Metadata.from_bytes(data, role=args.role, what=str(args.file))
    signed = md.signed
    info: dict[str, Any] = {
        "type": signed.TYPE,
        "version": signed.version,
        "expires": signed.expires.format(),
        "expired": signed.is_expired(),
        "notary_file_form": md.to_bytes() == data,
        "signatures": [{"keyid": s.keyid, "method": s.method} for s in md.signatures],
    }
    if isinstance(signed, Root):
        info["keys"] = {k: v.keytype for k, v in signed.keys.items()}
        info["roles"] = {n: r.to_dict() for n, r in signed.roles.items()}
    elif isinstance(signed, Targets):
        info["targets"] = {n: m.to_dict() for n, m in signed.targets.items()}
        info["delegations"] = [r.to_dict() for r in signed.delegations.roles]
    elif isinstance(signed, Snapshot | Timestamp):
        info["meta"] = {n: m.to_dict() for n, m in signed.meta.items()}
    emit(info, args.json, _inspect_text)
    return 0


def _inspect_text(info: dict[str, Any]) -> str:
    lines = [
        f"{info['type']} version {info['version']}, expires {info['expires']}"
        + (" (EXPIRED)" if info["expired"] else ""),
        f"file form: {'notary (byte-exact)' if info['notary_file_form'] else 'not notary form'}",
        "signatures: " + (", ".join(f"{s['keyid'][:12]} ({s['method']})"
                                    for s in info["signatures"]) or "none"),
    ]
    for name, role in info.get("roles", {}).items():
        lines.append(f"role {name}: threshold {role['threshold']}, keys "
                     + ", ".join(k[:12] for k in role["keyids"]))
    for name, meta in {**info.get("targets", {}), **info.get("meta", {})}.items():
        sha = meta["hashes"].get("sha256", "")
        lines.append(f"  {name}  {meta['length']} bytes  sha256:{_hex(sha)}")
    for role in info.get("delegations", []):
        lines.append(f"delegation {role['name']}: threshold {role['threshold']}, "
                     f"paths {role.get('paths', [])}")
    return "\n".join(lines)


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex() if b64 else "-"


def _collect(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        raise CountersignError(f"{directory} is not a directory")
    files: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*.json")):
        role = str(path.relative_to(directory).with_suffix(""))
        if is_role_name(role):
            files[role] = read_file(path, MAX_METADATA_BYTES)
    if not files:
        raise CountersignError(
            f"{directory} holds no metadata files",
            advice="point at a directory with root.json, timestamp.json, snapshot.json, "
            "targets.json (a notary cache is <trust_dir>/tuf/<gun>/metadata)",
        )
    return files


def _verify(args: argparse.Namespace) -> int:
    files = _collect(args.directory)
    try:
        report = verify_repository(files, args.gun)
    except VerificationError as exc:
        if not args.json:
            raise
        emit({"gun": args.gun, "verified": False, "error": exc.message}, True, str)
        return 1
    emit(_report_dict(report), args.json, _report_text)
    return 0


def _report_dict(report: RepositoryReport) -> dict[str, Any]:
    return {
        "gun": report.gun,
        "verified": True,
        "roles": {
            name: {
                "version": r.version,
                "expires": r.expires.format(),
                "signed_by": sorted(r.signatures.signed),
                "threshold": r.signatures.threshold,
            }
            for name, r in report.roles.items()
        },
        "targets": [
            {"name": t.name, "role": t.role, "length": t.meta.length,
             "sha256": (t.meta.sha256 or b"").hex()}
            for t in report.targets
        ],
        "warnings": report.warnings,
    }


def _report_text(info: dict[str, Any]) -> str:
    lines = [f"{info['gun']}: verified"]
    for name, role in info["roles"].items():
        lines.append(f"  {name:<24} v{role['version']:<4} {len(role['signed_by'])}/"
                     f"{role['threshold']} signatures, expires {role['expires']}")
    for target in info["targets"]:
        lines.append(f"  target {target['name']} ({target['role']}): "
                     f"sha256:{target['sha256']} {target['length']} bytes")
    lines.extend(f"  warning: {w}" for w in info["warnings"])
    return "\n".join(lines)


__all__ = ["register"]
