"""``countersign push``, ``pull`` and ``copy``: images between layouts, archives and registries.

``pull`` resolves the tag through the trust data and checks every byte; it
writes the destination only when all of it verified.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from countersign.cli._common import emit, resolve_trust_dir, trust_dir_option
from countersign.cli.trust import SERVER_ENV, TLS_CA_ENV
from countersign.errors import CountersignError


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry-ca", type=Path, default=None,
                        help="CA certificate(s) to trust for the registry")
    parser.add_argument("--registry-insecure", action="store_true",
                        help="plain HTTP to the registry (loopback registries only)")


def _trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None,
                        help=f"trust server URL (env {SERVER_ENV}; else the trust dir's "
                        "config.json trust_servers entry for the registry; else https:// "
                        "and the registry host, as docker does)")
    parser.add_argument("--tls-ca", type=Path, default=None,
                        help=f"CA certificate(s) to trust for the trust server (env {TLS_CA_ENV})")
    trust_dir_option(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    push = sub.add_parser("push", help="push an image to a registry, and sign it")
    push.add_argument("source", metavar="SRC", help="oci:DIR[:TAG] or docker-archive:FILE[:TAG]")
    push.add_argument("reference", metavar="REF", help="REGISTRY/REPOSITORY:TAG")
    push.add_argument("--sign", action="store_true",
                      help="sign the manifest's digest and size as the tag")
    push.add_argument("--role", action="append", default=[],
                      help="role to sign into (repeatable; default as `trust sign`)")
    push.add_argument("--chunked", action="store_true", help="upload blobs in chunks")
    push.add_argument("--json", action="store_true")
    _registry_options(push)
    _trust_options(push)
    push.set_defaults(func=_push)

    pull = sub.add_parser("pull", help="pull a signed image, verified, into an OCI layout")
    pull.add_argument("reference", metavar="REF", help="REGISTRY/REPOSITORY:TAG")
    pull.add_argument("--to", required=True, metavar="oci:DIR[:TAG]",
                      help="the OCI layout to write (only once everything verified)")
    pull.add_argument("--no-verify", action="store_true",
                      help="believe the registry's tag (blobs are still checked)")
    pull.add_argument("--platform", default=None, help="os/arch[/variant] (default linux/amd64)")
    pull.add_argument("--no-fsync", action="store_true",
                      help="do not wait for the layout to reach the disk (for a cache that can "
                      "be thrown away; by default it is on disk when pull returns)")
    pull.add_argument("--json", action="store_true")
    _registry_options(pull)
    _trust_options(pull)
    pull.set_defaults(func=_pull)

    copy = sub.add_parser("copy", help="copy an image: layout or archive or registry to another")
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DST")
    copy.add_argument("--verify", action="store_true",
                      help="for a registry source, pull through trust first")
    _registry_options(copy)
    _trust_options(copy)
    copy.set_defaults(func=_copy)


def registry_client(args: argparse.Namespace, registry: str) -> Any:
    """The registry client the --registry-* options describe."""
    from countersign.registry.client import RegistryClient

    return RegistryClient(registry, ca_file=args.registry_ca, insecure=args.registry_insecure)


def trust_server_for(args: argparse.Namespace, registry: str) -> str:
    """``--server``, the environment, the trust dir's ``trust_servers``, else docker's default."""
    if args.server:
        return str(args.server).rstrip("/")
    if os.environ.get(SERVER_ENV):
        return os.environ[SERVER_ENV].rstrip("/")
    config = resolve_trust_dir(args) / "config.json"
    try:
        servers = json.loads(config.read_text()).get("trust_servers", {})
    except FileNotFoundError:
        servers = {}
    except (OSError, ValueError, AttributeError) as exc:
        raise CountersignError(f"{config}: not a usable config ({exc})") from None
    if isinstance(servers, dict) and isinstance(servers.get(registry), str):
        return str(servers[registry]).rstrip("/")
    return "https://notary.docker.io" if registry == "docker.io" else f"https://{registry}"


def _trust(args: argparse.Namespace, gun: str, registry: str) -> Any:
    from countersign.cli.trust import repository_for

    args.server = trust_server_for(args, registry)
    return repository_for(args, gun)


def _push(args: argparse.Namespace) -> int:
    from countersign.registry.transfer import (
        ImageReference,
        Location,
        push,
        terminal_progress,
    )

    source = Location.parse(args.source)
    ref = ImageReference.parse(args.reference)
    pushed = push(source, registry_client(args, ref.registry), ref, progress=terminal_progress(),
                  chunked=args.chunked)
    record: dict[str, Any] = {"reference": str(ref), "digest": pushed.digest,
                              "size": pushed.size, "signed": False}
    if args.sign:
        trust = _trust(args, ref.gun, ref.registry)
        state = trust.sign_tag(ref.tag or "latest", pushed.file_meta(), roles=args.role)
        record["signed"] = True
        record["roles"] = sorted({t.role for t in state.report.targets
                                  if t.name == (ref.tag or "latest")})
    emit(record, args.json, lambda r: f"pushed {r['reference']} {r['digest']} "
                                      f"({r['size']} bytes)"
                                      + (f", signed in {', '.join(r['roles'])}"
                                         if r["signed"] else ""))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from countersign.registry.transfer import (
        ImageReference,
        Location,
        pull,
        terminal_progress,
    )

    ref = ImageReference.parse(args.reference)
    dest = Location.parse(args.to)
    if dest.kind != "oci" or dest.path is None:
        raise CountersignError(f"--to {args.to!r}: pull writes an OCI layout, oci:DIR[:TAG]")
    updater = None if args.no_verify else _trust(args, ref.gun, ref.registry).updater
    pulled = pull(ref, registry_client(args, ref.registry), dest.path, updater=updater,
                  dest_tag=dest.tag, platform=args.platform, progress=terminal_progress(),
                  durable=not args.no_fsync)
    record = {"reference": str(ref), "digest": pulled.digest, "size": pulled.size,
              "verified": updater is not None, "signed_by": pulled.signed_by,
              "destination": str(dest.path)}
    emit(record, args.json, lambda r: (
        f"pulled {r['reference']} {r['digest']} into {r['destination']}"
        + (f" (verified: signed in {r['signed_by']})" if r["verified"]
           else " (NOT verified through trust)")))
    return 0


def _copy(args: argparse.Namespace) -> int:
    import tempfile

    from countersign.registry.transfer import Location, pull, push

    source, destination = Location.parse(args.source), Location.parse(args.destination)
    if destination.kind == "docker-archive":
        raise CountersignError("copy writes to a registry or oci:DIR, not a docker-archive")
    with tempfile.TemporaryDirectory(prefix="countersign-copy-") as tmp:
        if source.kind == "registry":
            ref = source.reference
            if ref is None:  # pragma: no cover - parse always sets it for registries
                raise CountersignError("copy: no source reference")
            updater = _trust(args, ref.gun, ref.registry).updater if args.verify else None
            layout = destination.path if destination.kind == "oci" else None
            staged = layout or Path(tmp) / "image"
            # staged in the temporary directory, the layout is deleted after the push: no fsync
            pull(ref, registry_client(args, ref.registry), staged, updater=updater,
                 dest_tag=destination.tag or ref.tag, durable=layout is not None)
            source = Location("oci", staged, destination.tag or ref.tag)
            if destination.kind == "oci":
                print(f"copied {args.source} to {args.destination}")
                return 0
        if destination.kind == "registry" and destination.reference is not None:
            target = destination.reference
            pushed = push(source, registry_client(args, target.registry), target)
            print(f"copied {args.source} to {target} ({pushed.digest})")
            return 0
        if destination.kind == "oci" and destination.path is not None:
            raise CountersignError("copy from a layout or archive to a layout: use a registry "
                                   "in between, or cp -r")
    raise CountersignError(f"cannot copy {args.source} to {args.destination}")
