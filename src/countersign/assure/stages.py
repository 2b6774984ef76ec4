"""Running a stage's check and judging its report.

The check is an external command (a static analyser, a dynamic scanner, a
fuzzer) given ``{report}``, a path for its report, and ``{image}``, the image
pinned by digest. It runs with an argument list (never a shell), a timeout and
a bounded report; the report is parsed in the stage's format and judged by the
stage's pass criteria, after its false-positive table and VEX document.
Signing a passing stage and recording its evidence build on the result.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from countersign.assure.criteria import Evaluation, evaluate
from countersign.assure.policy import Stage
from countersign.assure.reports import Report, parse_report
from countersign.assure.suppressions import Suppression, parse_openvex, parse_table
from countersign.errors import CountersignError

MAX_REPORT = 64 << 20
MAX_OUTPUT = 64 << 10


class StageError(CountersignError):
    """A stage's check could not run, or gave no usable report."""


@dataclass(frozen=True)
class StageRun:
    """One run of a stage: the tool's report and its judgement."""

    stage: Stage
    image: str
    report: Report
    evaluation: Evaluation
    exit_status: int

    @property
    def passed(self) -> bool:
        return self.evaluation.passed


def load_suppressions(stage: Stage, image: str) -> list[Suppression]:
    """The stage's false-positive table and VEX statements (missing files are errors)."""
    found: list[Suppression] = []
    settings = stage.passes
    for path, reader in ((settings.false_positives, "table"), (settings.vex, "openvex")):
        if path is None:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StageError(f"stage {stage.name}: cannot read {path}: {exc.strerror}") from None
        if reader == "table":
            found.extend(parse_table(data, source=str(path)))
        else:
            found.extend(parse_openvex(data, source=str(path), product=image))
    return found


def check_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a check command inherits: everything but key passphrases.

    The stage's signing key is unlocked by countersign, never by the tool it runs
    (a scanner, a fuzzer, a script): ``*_PASSPHRASE`` variables (countersign's,
    notary's and docker's) stay out of its environment; ``check.env`` can still
    set one on purpose.
    """
    return {k: v for k, v in environ.items() if not k.upper().endswith("_PASSPHRASE")}


def run_check(stage: Stage, image: str, *, environ: Mapping[str, str] | None = None,
              workdir: Path | None = None) -> tuple[bytes, int]:
    """Run the check; the report's bytes and the command's exit status.

    A tool's non-zero exit does not by itself fail the stage (scanners exit 1
    when they find something); a missing or unreadable report does.
    """
    check = stage.check
    with tempfile.TemporaryDirectory(prefix=f"countersign-{stage.name}-") as tmp:
        report_path = Path(tmp) / f"report.{check.format}"
        argv = list(check.render(report=str(report_path), image=image))
        env = check_environment(os.environ if environ is None else environ)
        env.update(dict(check.env))
        cwd = check.cwd or workdir
        try:
            done = subprocess.run(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=check.timeout.total_seconds(), check=False)
        except FileNotFoundError:
            raise StageError(f"stage {stage.name}: command {argv[0]!r} not found",
                             advice="install the tool or fix check.command") from None
        except subprocess.TimeoutExpired:
            raise StageError(f"stage {stage.name}: the check did not finish within "
                             f"{check.timeout}") from None
        except OSError as exc:
            raise StageError(
                f"stage {stage.name}: cannot run {argv[0]!r}: {exc.strerror}") from None
        if check.report_on_stdout:
            data = done.stdout
        else:
            try:
                with report_path.open("rb") as handle:
                    data = handle.read(MAX_REPORT + 1)
            except FileNotFoundError:
                detail = done.stderr[-MAX_OUTPUT:].decode("utf-8", "replace").strip()
                raise StageError(
                    f"stage {stage.name}: the check wrote no report (exit status "
                    f"{done.returncode})", advice=detail[-400:] or None) from None
        if len(data) > MAX_REPORT:
            raise StageError(f"stage {stage.name}: the report is larger than {MAX_REPORT} bytes")
        return data, done.returncode


def run_stage(stage: Stage, image: str, *, now: _dt.datetime | None = None,
              environ: Mapping[str, str] | None = None,
              workdir: Path | None = None) -> StageRun:
    """Run the stage's check on ``image`` (pinned by digest) and judge its report."""
    when = now or _dt.datetime.now(_dt.UTC)
    data, status = run_check(stage, image, environ=environ, workdir=workdir)
    report = parse_report(data, format=stage.check.format, source=f"stage {stage.name} report")
    evaluation = evaluate(report, stage.passes.criteria(), load_suppressions(stage, image),
                          now=when)
    return StageRun(stage, image, report, evaluation, status)
