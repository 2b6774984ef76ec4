"""``countersign serve``: the trust server, a drop-in for notary-server."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from countersign.errors import CountersignError

if TYPE_CHECKING:
    from countersign._web import WebApp
    from countersign.server.app import TrustServer
    from countersign.server.coherence import ChangeMarks

MAX_WORKERS = 64


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
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="server processes sharing the address (default 1). They "
                        "share change marks, so each serves at once what another wrote")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default="info", help="log level (JSON lines on stderr)")
    parser.set_defaults(func=_serve)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CountersignError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_server(args: argparse.Namespace, *, marks: ChangeMarks | None = None,
                 passphrase: str | None = None) -> TrustServer:
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
    if passphrase is None:
        passphrase = load_passphrase(args.signer_passphrase_file)
    storage = Storage(database_url(args.db, args.data_dir), marks=marks)
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
    if not 1 <= args.workers <= MAX_WORKERS:
        raise CountersignError(f"--workers must be between 1 and {MAX_WORKERS}")
    address = bind(args.listen)
    logs.configure(args.log_level)
    if args.workers == 1:
        app = build_server(args)
        os.environ.pop("COUNTERSIGN_SIGNER_PASSPHRASE", None)  # not inherited by anything
        run_app(app, address, tls_cert=args.tls_cert, tls_key=args.tls_key)
        return 0
    return _run_workers(args, address)


def _run_workers(args: argparse.Namespace, address: tuple[str, int]) -> int:
    """Fork ``--workers`` servers on one address; stop them all on SIGTERM/SIGINT.

    Everything they share is made here, before the fork: the change marks and
    the signer's passphrase (read once; the environment variable is dropped).
    A worker that dies is started again, unless workers keep dying.
    """
    import time

    from countersign.server.coherence import ChangeMarks
    from countersign.server.signer import load_passphrase
    from countersign.server.storage import Storage, database_url

    log = logging.getLogger("countersign.server")
    passphrase = load_passphrase(args.signer_passphrase_file)
    os.environ.pop("COUNTERSIGN_SIGNER_PASSPHRASE", None)
    Storage(database_url(args.db, args.data_dir)).close()  # migrate once, up front
    marks = ChangeMarks()
    workers: dict[int, int] = {}
    stopping = False
    deaths: list[float] = []

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid:
            workers[pid] = index
            return
        code = 1
        try:
            _die_with_parent()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            app = build_server(args, marks=marks, passphrase=passphrase)
            run_app(app, address, tls_cert=args.tls_cert, tls_key=args.tls_key)
            code = 0
        except CountersignError as exc:
            log.error("worker failed", extra={"worker": index, "error": exc.render()})
        except BaseException:
            log.exception("worker failed", extra={"worker": index})
        finally:
            os._exit(code)

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(args.workers):
        spawn(index)
    failed = False
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in workers:
            continue
        index = workers.pop(pid)
        if stopping:
            continue
        log.error("worker exited", extra={"worker": index,
                                          "status": os.waitstatus_to_exitcode(status)})
        now = time.monotonic()
        deaths[:] = [t for t in deaths if now - t < 60] + [now]
        if len(deaths) > 2 * args.workers:
            log.error("workers keep exiting: stopping")
            failed = True
            stop()
            continue
        time.sleep(0.5)
        if not stopping:
            spawn(index)
    return 1 if failed else 0


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            os._exit(0)


def run_app(app: WebApp, address: tuple[str, int], *, tls_cert: Path | None,
            tls_key: Path | None) -> None:
    """Serve ``app`` on ``address`` until SIGTERM/SIGINT, then shut down gracefully.

    The one serving loop of every countersign service (``serve``, ``webhook``):
    granian, whose HTTP and TLS run in Rust outside the interpreter, embedded in
    this process so the application object (and the signer's keys) never has to
    be rebuilt from an import string in another process. It speaks RSGI, granian's
    own interface, where a response is one call into Rust (ASGI needs two messages).
    """
    import asyncio

    import uvloop
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    host, port = address
    server = Server(app, address=host, port=port, interface=Interfaces.RSGI,
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


def bind(listen: str) -> tuple[str, int]:
    """Check that ``HOST:PORT`` can be bound before anything else, so a taken port is
    a clear error and not a late exit; the server binds it again (SO_REUSEPORT)."""
    host, port = _listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CountersignError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                   advice="choose another --listen address") from None
    return host, port
