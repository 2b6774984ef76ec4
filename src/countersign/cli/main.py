"""Entry point of the ``countersign`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from countersign import __version__
from countersign.cli import assure, images, key, metadata, sandbox, serve, trust, webhook
from countersign.errors import CountersignError

# httpx imports its own command line (rich, click and pygments: about 60 ms) whenever
# they are installed; countersign never runs it, so that import is refused up front.
if "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="countersign",
        description="Security assurance of container images through TUF content trust.",
    )
    parser.add_argument("--version", action="version", version=f"countersign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    key.register(sub)
    metadata.register(sub)
    serve.register(sub)
    trust.register(sub)
    images.register(sub)
    assure.register(sub)
    sandbox.register(sub)
    webhook.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CountersignError as exc:
        print(f"countersign: error: {exc.render()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
