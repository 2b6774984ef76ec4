"""Fuzz Python targets with atheris for a bounded time and write a JUnit report.

A fuzz stage needs a report the gate can judge. This harness runs each target
(a function taking ``bytes``) under atheris, libFuzzer's Python front end,
for at most ``--runs`` inputs and ``--max-time`` seconds, and writes one JUnit
``<testcase>`` per target: passed, a ``<failure>`` carrying the exception, its
traceback and the crashing input (base64 and ``repr``), or an ``<error>`` when
the target could not be fuzzed at all. A stage then reads it as
``format: junit``::

    python -m countersign.assure.fuzzing --report {report} --runs 50000 \\
        --max-time 60 --expect ValueError src/parsers.py:parse_header

Each target runs in its own child process, because libFuzzer exits the
process when it finishes or finds a crash. Exceptions named with ``--expect``
are the target's normal refusal of bad input and are not crashes. Modules the
target imports are instrumented for coverage (``atheris.instrument_imports``).

Exit status: 0 when every target passed, 1 when any failed or errored, 2 for
bad arguments or when atheris is not installed (no report is written then).
"""

from __future__ import annotations

import argparse
import base64
import builtins
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET  # writing only; the reader side uses defusedxml
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FuzzResult", "TargetSpec", "fuzz_target", "main", "write_junit"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
_EXIT_SETUP = 3
"""The child's exit status when the target cannot be loaded (not a crash)."""

MAX_LOG = 64 << 10
"""How much of the fuzzer's log is read back (its tail)."""
MAX_TRACEBACK = 16 << 10
MAX_SHOWN_INPUT = 1024
"""How many bytes of a crashing input go into the report as ``repr``."""
GRACE_SECONDS = 30.0
"""Time allowed beyond ``--max-time`` before a child is killed (start-up, last input)."""

# libFuzzer writes the input that stopped it as <prefix><kind>-<sha1>.
_ARTIFACT = re.compile(r"(crash|timeout|oom|leak)-[0-9a-f]{40}")
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_TARGET = re.compile(r"(?P<module>[^:]+):(?P<function>[A-Za-z_][A-Za-z0-9_.]*)")
# Characters XML 1.0 cannot carry (tracebacks and messages may hold any text).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class TargetSpec:
    """``module:function`` or ``path/to/file.py:function``."""

    text: str
    module: str
    function: str
    directory: Path | None

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        match = _TARGET.fullmatch(text)
        if not match:
            raise ValueError(f"target {text!r} is not MODULE:FUNCTION or FILE.py:FUNCTION")
        module, function = match.group("module"), match.group("function")
        if module.endswith(".py"):
            path = Path(module)
            return cls(text, path.stem, function, path.parent.resolve())
        if not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(f"target {text!r}: {module!r} is not a module name or a .py file")
        return cls(text, module, function, None)


@dataclass(frozen=True)
class FuzzResult:
    """What fuzzing one target found."""

    target: str
    outcome: str
    """``passed``, ``failure`` (a crash, timeout or out-of-memory) or ``error``."""
    kind: str
    """For a failure, libFuzzer's artifact kind (crash, timeout, oom, leak)."""
    message: str
    detail: str
    runs: int
    seconds: float
    artifact: Path | None = None


# --------------------------------------------------------------------------- the child


def _load_exception(name: str) -> type[BaseException]:
    """A builtin exception by name, or ``module:Name`` / ``module.Name``."""
    module_name, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    if module_name:
        value = getattr(importlib.import_module(module_name), attr)
    else:
        value = getattr(builtins, attr, None)
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise TypeError(f"--expect {name!r} is not an exception type")
    return value


def _child(spec: TargetSpec, expects: Sequence[str], paths: Sequence[str],
           traceback_file: Path, fuzzer_args: Sequence[str]) -> int:
    """Load the target under instrumentation and hand it to libFuzzer (never returns on success).

    Set-up problems are printed and end the process with ``_EXIT_SETUP`` so the
    parent reports an error, not a crash.
    """
    try:
        atheris: Any = importlib.import_module("atheris")
        sys.path[:0] = [str(Path(p).resolve()) for p in paths]
        if spec.directory is not None:
            sys.path.insert(0, str(spec.directory))
        with atheris.instrument_imports():
            module = importlib.import_module(spec.module)
        func: Any = module
        for part in spec.function.split("."):
            func = getattr(func, part)
        if not callable(func):
            raise TypeError(f"{spec.text} is not callable")
        expected = tuple(_load_exception(name) for name in expects)
    except Exception as exc:
        print(f"fuzzing: cannot load {spec.text}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return _EXIT_SETUP
    target: Callable[[bytes], object] = func

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except expected:
            return
        except BaseException as exc:
            # the traceback from the target down, without this wrapper's frame
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next
                                                      if exc.__traceback__ else None))
            traceback_file.write_text(text[-MAX_TRACEBACK:], encoding="utf-8")
            raise

    atheris.Setup([sys.argv[0], *fuzzer_args], one_input)
    atheris.Fuzz()
    return EXIT_OK  # pragma: no cover - libFuzzer exits the process itself


# --------------------------------------------------------------------------- the parent


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - MAX_LOG))
            return handle.read(MAX_LOG).decode("utf-8", "replace")
    except OSError:
        return ""


def _runs(log: str) -> int:
    found = _EXECUTED.findall(log)
    if found:
        return int(found[-1])
    progress = _PROGRESS.findall(log)
    return int(progress[-1]) if progress else 0


def _describe_input(data: bytes) -> str:
    shown = repr(data[:MAX_SHOWN_INPUT])
    more = f" (first {MAX_SHOWN_INPUT} of {len(data)} bytes)" if len(data) > MAX_SHOWN_INPUT \
        else ""
    encoded = base64.b64encode(data[:1 << 20]).decode("ascii")
    return f"input{more}: {shown}\ninput ({len(data)} bytes, base64): {encoded}"


def fuzz_target(spec: TargetSpec, *, runs: int, max_time: int, expects: Sequence[str] = (),
                paths: Sequence[str] = (), corpora: Sequence[Path] = (), seed: int = 1,
                max_len: int = 4096, input_timeout: int = 10, rss_limit_mb: int = 2048,
                artifacts: Path | None = None) -> FuzzResult:
    """Fuzz one target in a child process and say what happened.

    ``corpora`` are read as seed inputs but never written: new inputs go to a
    scratch directory. A crashing input is copied into ``artifacts`` when given.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="countersign-fuzz-") as tmp:
        work = Path(tmp)
        (work / "corpus").mkdir()
        (work / "out").mkdir()
        traceback_file = work / "traceback.txt"
        log_path = work / "fuzzer.log"
        fuzzer_args = [f"-runs={runs}", f"-max_total_time={max_time}", f"-seed={seed}",
                       f"-max_len={max_len}", f"-timeout={input_timeout}",
                       f"-rss_limit_mb={rss_limit_mb}", "-print_final_stats=1",
                       f"-artifact_prefix={work / 'out'}{os.sep}",
                       str(work / "corpus"), *(str(c) for c in corpora)]
        argv = [sys.executable, "-m", "countersign.assure.fuzzing", "--run-one", spec.text,
                "--traceback-file", str(traceback_file)]
        for name in expects:
            argv += ["--expect", name]
        for path in paths:
            argv += ["--path", path]
        argv += ["--", *fuzzer_args]
        try:
            with log_path.open("wb") as log:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      timeout=max_time + GRACE_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return FuzzResult(spec.text, "error", "", f"the fuzzer did not stop within "
                              f"{max_time + GRACE_SECONDS:.0f} s", _tail(log_path)[-4000:],
                              _runs(_tail(log_path)), time.monotonic() - started)
        log_text = _tail(log_path)
        seconds = time.monotonic() - started
        executed = _runs(log_text)
        found = sorted(p for p in (work / "out").iterdir() if _ARTIFACT.fullmatch(p.name))
        if found:
            artifact = found[0]
            kind = artifact.name.split("-", 1)[0]
            data = artifact.read_bytes()
            kept = None
            if artifacts is not None:
                artifacts.mkdir(parents=True, exist_ok=True)
                kept = artifacts / f"{spec.module}.{spec.function}.{artifact.name}"
                shutil.copyfile(artifact, kept)
            trace = traceback_file.read_text("utf-8", "replace") if traceback_file.exists() \
                else ""
            if trace:
                message = trace.strip().splitlines()[-1]
            elif kind == "timeout":
                message = f"an input ran longer than {input_timeout} s"
            elif kind == "oom":
                message = f"an input used more than {rss_limit_mb} MB"
            else:
                message = f"libFuzzer stopped with a {kind}"
            # libFuzzer's own account (a timeout's stack) starts at its " === " banner
            banner = log_text.find(" === ")
            account = log_text[banner:] if banner >= 0 else log_text
            detail = "\n".join(part for part in (
                f"{kind} after {executed} runs",
                _describe_input(data),
                f"kept as {kept}" if kept else "",
                trace.rstrip() or account[-4000:].rstrip()) if part)
            return FuzzResult(spec.text, "failure", kind, message, detail, executed, seconds,
                              kept)
        if done.returncode == 0:
            return FuzzResult(spec.text, "passed", "", "", f"{executed} runs, no crash",
                              executed, seconds)
        if done.returncode == _EXIT_SETUP:
            lines = [ln for ln in log_text.splitlines() if ln.startswith("fuzzing: ")]
            message = lines[-1].removeprefix("fuzzing: ") if lines else "the target did not load"
            return FuzzResult(spec.text, "error", "", message, log_text[-4000:], 0, seconds)
        return FuzzResult(spec.text, "error", "",
                          f"the fuzzer exited with status {done.returncode} and no crash input",
                          log_text[-4000:], executed, seconds)


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def write_junit(results: Sequence[FuzzResult], path: Path, *, suite: str = "atheris",
                settings: Sequence[tuple[str, str]] = ()) -> None:
    """One ``<testsuite>`` with a ``<testcase>`` per target, written atomically."""
    failures = sum(r.outcome == "failure" for r in results)
    errors = sum(r.outcome == "error" for r in results)
    root = ET.Element("testsuites", name=suite, tests=str(len(results)),
                      failures=str(failures), errors=str(errors))
    testsuite = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)),
                              failures=str(failures), errors=str(errors), skipped="0",
                              time=f"{sum(r.seconds for r in results):.3f}")
    properties = ET.SubElement(testsuite, "properties")
    for name, value in settings:
        ET.SubElement(properties, "property", name=name, value=_xml_text(value))
    for result in results:
        case = ET.SubElement(testsuite, "testcase", classname=suite, name=_xml_text(result.target),
                             time=f"{result.seconds:.3f}")
        if result.outcome in ("failure", "error"):
            element = ET.SubElement(case, result.outcome, message=_xml_text(result.message[:500]),
                                    type=result.kind or "error")
            element.text = _xml_text(result.detail)
        ET.SubElement(case, "system-out").text = _xml_text(f"{result.runs} runs")
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data + b"\n")
    partial.replace(path)


# --------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not from 0 to 4294967295")
    return value


def _target(text: str) -> TargetSpec:
    try:
        return TargetSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m countersign.assure.fuzzing",
        description="Fuzz Python targets with atheris for a bounded number of inputs and "
                    "time, and write a JUnit report (one test case per target).")
    parser.add_argument("targets", metavar="TARGET", nargs="*", type=_target,
                        help="MODULE:FUNCTION or FILE.py:FUNCTION; the function takes bytes")
    parser.add_argument("--report", type=Path, help="where to write the JUnit XML report")
    parser.add_argument("--runs", type=_positive, default=100_000,
                        help="inputs to try per target (default 100000)")
    parser.add_argument("--max-time", type=_positive, default=60, metavar="SECONDS",
                        help="time budget per target (default 60)")
    parser.add_argument("--expect", action="append", default=[], metavar="EXCEPTION",
                        help="an exception that means 'input refused', not a crash: a builtin "
                             "name or MODULE:NAME (repeatable)")
    parser.add_argument("--path", action="append", default=[], metavar="DIR",
                        help="a directory to import the targets from (repeatable)")
    parser.add_argument("--corpus", action="append", default=[], type=Path, metavar="DIR",
                        help="seed inputs, read but not written (repeatable)")
    parser.add_argument("--seed", type=_seed, default=1,
                        help="libFuzzer's random seed (default 1, so runs repeat)")
    parser.add_argument("--max-len", type=_positive, default=4096,
                        help="the longest input in bytes (default 4096)")
    parser.add_argument("--input-timeout", type=_positive, default=10, metavar="SECONDS",
                        help="an input running longer is a failure (default 10)")
    parser.add_argument("--rss-limit-mb", type=_positive, default=2048,
                        help="memory beyond this is a failure (default 2048)")
    parser.add_argument("--artifacts", type=Path, metavar="DIR",
                        help="keep crashing inputs here (default: only in the report)")
    parser.add_argument("--suite", default="atheris", help="the JUnit suite name")
    # the child process that fuzzes one target
    parser.add_argument("--run-one", type=_target, help=argparse.SUPPRESS)
    parser.add_argument("--traceback-file", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    fuzzer_args: list[str] = []
    if "--run-one" in words and "--" in words:  # the child: libFuzzer's flags follow "--"
        split = words.index("--")
        words, fuzzer_args = words[:split], words[split + 1:]
    args = parser.parse_args(words)
    if args.run_one is not None:
        if args.traceback_file is None:
            parser.error("--run-one needs --traceback-file")
        return _child(args.run_one, args.expect, args.path, args.traceback_file, fuzzer_args)
    if not args.targets:
        parser.error("give at least one TARGET (MODULE:FUNCTION or FILE.py:FUNCTION)")
    if args.report is None:
        parser.error("--report FILE is needed")
    if importlib.util.find_spec("atheris") is None:
        print("fuzzing: atheris is not installed in this Python "
              f"({sys.executable}); pip install atheris", file=sys.stderr)
        return EXIT_USAGE
    for corpus in args.corpus:
        if not corpus.is_dir():
            parser.error(f"--corpus {corpus}: not a directory")
    if args.artifacts is not None:  # now, not after a crash was found and would be lost
        try:
            args.artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--artifacts {args.artifacts}: {exc.strerror or exc}")
        if not os.access(args.artifacts, os.W_OK | os.X_OK):
            parser.error(f"--artifacts {args.artifacts}: not a writable directory")
    results = []
    for spec in args.targets:
        result = fuzz_target(spec, runs=args.runs, max_time=args.max_time, expects=args.expect,
                             paths=args.path, corpora=args.corpus, seed=args.seed,
                             max_len=args.max_len, input_timeout=args.input_timeout,
                             rss_limit_mb=args.rss_limit_mb, artifacts=args.artifacts)
        results.append(result)
        line = f"{spec.text}: {result.outcome} ({result.runs} runs, {result.seconds:.1f} s)"
        print(line + (f": {result.message}" if result.message else ""), file=sys.stderr)
    settings = [("runs", str(args.runs)), ("max_time", str(args.max_time)),
                ("seed", str(args.seed)), ("max_len", str(args.max_len))]
    try:
        write_junit(results, args.report, suite=args.suite, settings=settings)
    except OSError as exc:
        print(f"fuzzing: cannot write {args.report}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if all(r.outcome == "passed" for r in results) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
