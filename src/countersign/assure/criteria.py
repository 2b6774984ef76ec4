"""Judging a tool report against a stage's pass criteria.

:func:`evaluate` sorts each finding of a :class:`Report` into one of three
piles, in this order:

1. *excluded*: out of scope of the criteria's rule and CWE filters. When
   ``include_rules`` or ``include_cwes`` is given, a finding is in scope only
   if its rule is in ``include_rules`` or one of its CWEs is in
   ``include_cwes``; a finding whose rule is in ``exclude_rules`` or with a
   CWE in ``exclude_cwes`` is out of scope even if included.
2. *suppressed*: the report itself marked it suppressed, or an unexpired
   suppression matches it (the first in the order given).
3. *counted*: everything else, including findings whose only matching
   suppressions have expired.

The stage passes when no counted finding is above ``max_severity``, no
severity has more counted findings than ``max_counts`` allows (counts are per
exact severity), the report's test failures plus errors are at most
``max_failures``, and (unless ``fail_on_expired`` is false) no expired
suppression matched a finding: an expired triage decision must be renewed or
removed, so the stage fails with a reason naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from countersign.assure.reports import Finding, Report, Severity
from countersign.assure.suppressions import Suppression

__all__ = ["Evaluation", "PassCriteria", "evaluate"]

_LISTED = 10  # findings named in one reason before "and N more"


@dataclass(frozen=True)
class PassCriteria:
    """What a stage's report must satisfy. The defaults accept everything."""

    max_severity: Severity | None = None
    max_counts: Mapping[Severity, int] = field(default_factory=dict)
    max_failures: int | None = None
    include_rules: frozenset[str] = frozenset()
    exclude_rules: frozenset[str] = frozenset()
    include_cwes: frozenset[int] = frozenset()
    exclude_cwes: frozenset[int] = frozenset()
    fail_on_expired: bool = True

    def __post_init__(self) -> None:
        for severity, limit in self.max_counts.items():
            if not isinstance(severity, Severity):
                raise ValueError(f"max_counts key {severity!r} is not a Severity")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"max_counts[{severity.label}] must be a non-negative integer")
        if self.max_failures is not None and (
                isinstance(self.max_failures, bool) or self.max_failures < 0):
            raise ValueError("max_failures must be a non-negative integer or None")
        for name in ("include_rules", "exclude_rules", "include_cwes", "exclude_cwes"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))

    def in_scope(self, finding: Finding) -> bool:
        """Whether ``finding`` is judged at all under the rule and CWE filters."""
        if finding.rule_id in self.exclude_rules:
            return False
        if self.exclude_cwes.intersection(finding.cwe):
            return False
        if self.include_rules or self.include_cwes:
            return finding.rule_id in self.include_rules or bool(
                self.include_cwes.intersection(finding.cwe))
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, deterministic form, for evidence."""
        return {
            "max_severity": self.max_severity.label if self.max_severity is not None else None,
            "max_counts": {s.label: self.max_counts[s] for s in sorted(self.max_counts)},
            "max_failures": self.max_failures,
            "include_rules": sorted(self.include_rules),
            "exclude_rules": sorted(self.exclude_rules),
            "include_cwes": sorted(self.include_cwes),
            "exclude_cwes": sorted(self.exclude_cwes),
            "fail_on_expired": self.fail_on_expired,
        }


@dataclass
class Evaluation:
    """The verdict on one report, and what went into it."""

    passed: bool
    reasons: list[str]
    counted: list[Finding]
    suppressed: list[tuple[Finding, Suppression]]
    expired_suppressions: list[Suppression]
    excluded: list[Finding]
    summary: dict[str, Any]


def _name(findings: Sequence[Finding]) -> str:
    shown = [f.describe() for f in findings[:_LISTED]]
    more = len(findings) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def evaluate(report: Report, criteria: PassCriteria, suppressions: Sequence[Suppression] = (),
             now: datetime | None = None) -> Evaluation:
    """Judge ``report`` against ``criteria``, setting aside what ``suppressions`` cover.

    ``now`` (an aware datetime) decides which suppressions have expired; it
    is required when any suppression has an expiry.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be an aware datetime (with a time zone)")
    if now is None and any(s.expires is not None for s in suppressions):
        raise ValueError("now is required to judge suppressions that expire")

    counted: list[Finding] = []
    suppressed: list[tuple[Finding, Suppression]] = []
    excluded: list[Finding] = []
    expired: dict[int, Suppression] = {}
    expired_hits: dict[int, list[Finding]] = {}
    for finding in report.findings:
        if not criteria.in_scope(finding):
            excluded.append(finding)
            continue
        if finding.tool_suppression is not None:
            suppressed.append((finding, Suppression(
                kind="tool", origin=f"in the {report.format} report of {report.tool}",
                reason=finding.tool_suppression)))
            continue
        live = None
        for index, suppression in enumerate(suppressions):
            if not suppression.matches(finding):
                continue
            if now is not None and suppression.is_expired(now):
                expired[index] = suppression
                expired_hits.setdefault(index, []).append(finding)
                continue
            live = suppression
            break
        if live is not None:
            suppressed.append((finding, live))
        else:
            counted.append(finding)
    # Expired suppressions that matched nothing are still recorded.
    if now is not None:
        for index, suppression in enumerate(suppressions):
            if index not in expired and suppression.is_expired(now):
                expired[index] = suppression

    reasons: list[str] = []
    if criteria.max_severity is not None:
        limit = criteria.max_severity
        above = [f for f in counted if f.severity > limit]
        if above:
            reasons.append(f"{_plural(len(above), 'finding')} above the highest allowed "
                           f"severity {limit.label}: {_name(above)}.")
    for severity in sorted(criteria.max_counts, reverse=True):
        limit_count = criteria.max_counts[severity]
        of_severity = [f for f in counted if f.severity == severity]
        if len(of_severity) > limit_count:
            reasons.append(f"{_plural(len(of_severity), f'{severity.label} finding')}, more "
                           f"than the {limit_count} allowed: {_name(of_severity)}.")
    failing = report.failures + report.errors
    if criteria.max_failures is not None and failing > criteria.max_failures:
        tests = list(report.findings) if report.format == "junit" else []
        named = f": {_name(tests)}" if tests else ""
        reasons.append(f"{_plural(failing, 'test')} failed or errored "
                       f"({report.failures} failures, {report.errors} errors), more than the "
                       f"{criteria.max_failures} allowed{named}.")
    if criteria.fail_on_expired:
        for index in sorted(expired_hits):
            suppression = expired[index]
            when = suppression.expires.isoformat() if suppression.expires else "?"
            reasons.append(f"the {suppression.describe()} expired at "
                           f"{when} and no longer suppresses "
                           f"{_name(expired_hits[index])}; renew or remove it.")

    passed = not reasons
    expired_list = [expired[i] for i in sorted(expired)]
    summary = _summary(report, criteria, passed, reasons, counted, suppressed, excluded,
                       expired_list, now)
    return Evaluation(passed=passed, reasons=reasons, counted=counted, suppressed=suppressed,
                      expired_suppressions=expired_list, excluded=excluded, summary=summary)


def _finding_key(finding: Finding) -> tuple[str, str, str, str]:
    return (finding.fingerprint, finding.rule_id, finding.location, finding.parameter or "")


def _summary(report: Report, criteria: PassCriteria, passed: bool, reasons: list[str],
             counted: list[Finding], suppressed: list[tuple[Finding, Suppression]],
             excluded: list[Finding], expired: list[Suppression],
             now: datetime | None) -> dict[str, Any]:
    """The deterministic, JSON-serialisable record that goes into signed evidence."""
    per_severity = {s.label: 0 for s in Severity}
    for finding in counted:
        per_severity[finding.severity.label] += 1
    return {
        "tool": {"name": report.tool, "version": report.tool_version},
        "format": report.format,
        "passed": passed,
        "reasons": list(reasons),
        "criteria": criteria.to_dict(),
        "evaluated_at": now.isoformat() if now is not None else None,
        "findings": {
            "total": len(report.findings),
            "counted": per_severity,
            "suppressed": len(suppressed),
            "excluded": len(excluded),
        },
        "counted": [f.to_dict() for f in sorted(counted, key=_finding_key)],
        "suppressed": sorted(
            ({"fingerprint": f.fingerprint, "rule": f.rule_id, "location": f.location,
              "parameter": f.parameter, "by": s.to_dict()} for f, s in suppressed),
            key=lambda d: (d["fingerprint"], d["rule"], d["location"], d["parameter"] or "",
                           d["by"]["origin"])),
        "expired_suppressions": sorted(
            (s.to_dict() for s in expired), key=lambda d: (d["origin"], d["reason"])),
        "tests": {"run": report.tests_run, "failures": report.failures,
                  "errors": report.errors, "skipped": report.skipped},
    }
