"""The real tools of the dynamic and fuzz stages, as the gate tests run them.

- :func:`wapiti_command`: Wapiti scanning a loopback URL with its XSS and SQL
  injection modules only, a shallow crawl and its state kept in a directory of
  the test, so the scan takes about a second and sends nothing off the machine.
- :func:`fuzz_command`: countersign's atheris harness on a target of
  ``tests/assure/sample/records.py``.

``SAMPLE`` is that directory; ``webshop.serve(variant)`` runs the shop to scan.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

SAMPLE = Path(__file__).parents[1] / "assure" / "sample"


def find_wapiti() -> str | None:
    return shutil.which("wapiti")


def missing_reason() -> str | None:
    """Why the real-tool stages cannot run here, or None."""
    if find_wapiti() is None:
        return "wapiti is not installed (Debian: apt-get install wapiti, or scripts/system-deps.sh)"
    if importlib.util.find_spec("atheris") is None:
        return "atheris is not installed (pip install -e '.[dev]')"
    return None


def wapiti_command(url: str, state: Path) -> list[str]:
    """Wapiti 3.0.4 on ``url``, JSON report to ``{report}``, state under ``state``.

    An empty ``apps.json`` in the config directory keeps the ``wapp`` module,
    which Wapiti loads even when it is not run, from downloading its database.
    """
    binary = find_wapiti()
    if binary is None:
        raise RuntimeError("wapiti is not installed")
    config = state / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "apps.json").write_text("{}\n")
    return [binary, "-u", url, "-m", "xss,sql", "--scope", "folder", "-d", "2",
            "--max-scan-time", "60", "-t", "5", "-f", "json", "-o", "{report}",
            "--flush-session", "--store-session", str(state / "session"),
            "--store-config", str(config), "--no-bugreport", "-v", "0"]


def fuzz_command(function: str, *, runs: int) -> list[str]:
    """The atheris harness on ``records.py:FUNCTION``, refusals (RecordError) expected."""
    return [sys.executable, "-m", "countersign.assure.fuzzing", "--report", "{report}",
            "--runs", str(runs), "--max-time", "60", "--expect", "records:RecordError",
            f"{SAMPLE / 'records.py'}:{function}"]


def yaml_list(words: list[str]) -> str:
    """A YAML flow sequence of single-quoted strings (for policies written by tests)."""
    return "[" + ", ".join("'" + w.replace("'", "''") + "'" for w in words) + "]"
