"""``countersign serve``: the trust server, a drop-in for notary-server."""

from __future__ import annotations

import argparse
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from countersign.errors import CountersignError

if TYPE_CHECKING:
    from countersign.server.app import TrustServer


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve", help="run the trust server (notary-server's API, built-in signer)",
        description="Serve Notary v1's HTTP API. The server signs timestamps, and snapshots "
        "when it holds the snapshot key, with keys it keeps encrypted in its database.")
    parser.add_argument("--db", default="",
                        help="database URL: sqlite:///PATH (default: countersign.db in "
                        "--data-dir) or postgresql://USER:PASS@HOST:PORT/DB for several "
                        "instances behind one load balancer")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory for the default SQLite database (default: the "
                        "current directory)")
    parser.add_argument("--listen", default="127.0.0.1:4443", metavar="HOST:PORT",
                        help="address to listen on (default 127.0.0.1:4443)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain for HTTPS")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    parser.add_argument("--auth", choices=["none", "token"], default="none",
                        help="none (every request allowed: for sandboxes) or token (Docker "
                        "registry token authentication, as notary-server)")
    parser.add_argument("--token-realm", help="token issuer URL sent in challenges")
    parser.add_argument("--token-service", help="the service name tokens must be issued for")
    parser.add_argument("--token-issuer", help="the issuer name tokens must carry")
    parser.add_argument("--token-rootcerts", type=Path,
                        help="PEM bundle of the certificates that sign tokens")
    parser.add_argument("--signer-passphrase-file", type=Path,
                        help="file whose first line is the passphrase protecting the server's "
                        "keys (default: the COUNTERSIGN_SIGNER_PASSPHRASE variable)")
    parser.add_argument("--key-algorithm", choices=["ecdsa", "ed25519", "rsa"],
                        default="ecdsa", help="algorithm of new server keys (default ecdsa)")
    parser.add_argument("--gun-prefix", action="append", default=[], metavar="PREFIX",
                        help="accept only GUNs starting with PREFIX (repeatable)")
    parser.add_argument("--max-body", type=int, default=64 * 1024 * 1024, metavar="BYTES",
                        help="largest update accepted (default 64 MiB)")
    parser.add_argument("--cache-ttl", type=float, default=1.0, metavar="SECONDS",
                        help="how long a server instance serves current metadata from memory "
                        "before looking at the database again (default 1 s)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default="info", help="log level (JSON lines on stderr)")
    parser.set_defaults(func=_serve)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CountersignError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_server(args: argparse.Namespace) -> TrustServer:
    """The ASGI application for ``args`` (separate from running it, for tests)."""
    from countersign.server.app import ServerConfig, TrustServer
    from countersign.server.signer import DatabaseKeyService, load_passphrase
    from countersign.server.storage import Storage, database_url

    authorizer = None
    if args.auth == "token":
        from countersign.server.auth import TokenAuth, TokenAuthConfig

        missing = [f"--token-{n}" for n in ("realm", "service", "issuer", "rootcerts")
                   if getattr(args, f"token_{n}") is None]
        if missing:
            raise CountersignError(f"--auth token needs {', '.join(missing)}")
        authorizer = TokenAuth(TokenAuthConfig.load(
            args.token_realm, args.token_service, args.token_issuer, args.token_rootcerts))
    passphrase = load_passphrase(args.signer_passphrase_file)
    storage = Storage(database_url(args.db, args.data_dir))
    keys = DatabaseKeyService(storage, passphrase, args.key_algorithm)
    config = ServerConfig(max_body=args.max_body, cache_ttl=args.cache_ttl,
                          gun_prefixes=tuple(args.gun_prefix))
    return TrustServer(storage, keys, authorizer=authorizer, config=config)


def _serve(args: argparse.Namespace) -> int:
    from countersign.server import logs

    if (args.tls_cert is None) != (args.tls_key is None):
        raise CountersignError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise CountersignError(f"{path}: no such file")
    listener = bind(args.listen)
    logs.configure(args.log_level)
    app = build_server(args)
    os.environ.pop("COUNTERSIGN_SIGNER_PASSPHRASE", None)  # not inherited by anything later
    run_asgi(app, listener, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0


def run_asgi(app: Any, listener: socket.socket, *, tls_cert: Path | None,
             tls_key: Path | None) -> None:
    """Serve ``app`` on ``listener`` until SIGTERM/SIGINT, then shut down gracefully.

    The one serving loop of every countersign service (``serve``, ``webhook``):
    granian, whose HTTP and TLS run in Rust outside the interpreter, embedded in
    this process so the application object (and the signer's keys) never has to
    be rebuilt from an import string in another process.
    """
    import asyncio

    import uvloop
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    host, port = listener.getsockname()[:2]
    listener.close()  # granian binds the address itself, with SO_REUSEPORT
    server = Server(app, address=host, port=port, interface=Interfaces.ASGI,
                    http=HTTPModes.http1, websockets=False, backlog=2048,
                    http1_settings=HTTP1Settings(header_read_timeout=30_000),
                    log_enabled=False, log_level=LogLevels.error,
                    ssl_cert=tls_cert, ssl_key=tls_key, ssl_protocol_min=SSLProtocols.tls12)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.stop)
        await server.serve()

    uvloop.run(main())


def bind(listen: str) -> socket.socket:
    """Bind ``HOST:PORT`` before anything else, so a taken port is a clear error and not
    a late exit."""
    host, port = _listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise CountersignError(f"cannot listen on {host}:{port}: {exc.strerror}",
                               advice="choose another --listen address") from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
