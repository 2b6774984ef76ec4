"""What every CLI command shares: bounded file reads and text-or-JSON output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from countersign.errors import CountersignError


def read_file(path: Path, limit: int) -> bytes:
    """Read at most ``limit`` bytes of ``path``, with errors that name the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise CountersignError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CountersignError(f"{path} is a directory, not a file") from None
    except PermissionError:
        raise CountersignError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CountersignError(f"{path}: {exc.strerror}") from None
    if len(data) > limit:
        raise CountersignError(f"{path} is larger than {limit} bytes")
    return data


TRUST_DIR_ENV = "COUNTERSIGN_TRUST_DIR"


def default_trust_dir() -> Path:
    """``$COUNTERSIGN_TRUST_DIR``, else ``~/.countersign/trust``."""
    value = os.environ.get(TRUST_DIR_ENV)
    return Path(value) if value else Path.home() / ".countersign" / "trust"


def trust_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-dir", type=Path, default=None,
        help=f"trust directory (env {TRUST_DIR_ENV}, default ~/.countersign/trust); "
        "a notary trust dir such as ~/.notary can be shared",
    )


def resolve_trust_dir(args: argparse.Namespace) -> Path:
    return args.trust_dir if args.trust_dir is not None else default_trust_dir()


def emit(info: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Write ``info`` as JSON (stable, sorted) or through its text formatter."""
    if as_json:
        json.dump(info, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text(info) + "\n")
