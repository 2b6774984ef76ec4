"""Pass criteria and suppressions (BDD-Security tables, OpenVEX)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from countersign.assure.criteria import PassCriteria, evaluate
from countersign.assure.reports import (
    Finding,
    Report,
    ReportError,
    Severity,
    fingerprint_of,
    parse_json_report,
    parse_junit,
    parse_sarif,
)
from countersign.assure.suppressions import Suppression, parse_openvex, parse_table

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def finding(rule: str = "r", severity: Severity = Severity.MEDIUM, cwe: tuple[int, ...] = (),
            location: str = "a.py:1", parameter: str | None = None) -> Finding:
    return Finding(rule_id=rule, message=f"message of {rule}", severity=severity, cwe=cwe,
                   location=location, parameter=parameter,
                   fingerprint=fingerprint_of(rule, location, parameter))


def report(*findings: Finding, failures: int = 0, errors: int = 0, fmt: str = "sarif") -> Report:
    return Report(tool="t", tool_version="1", format=fmt, findings=tuple(findings),
                  tests_run=failures + errors, failures=failures, errors=errors)


# --------------------------------------------------------------------------- criteria


def test_default_criteria_pass_everything() -> None:
    result = evaluate(report(finding(severity=Severity.CRITICAL)), PassCriteria())
    assert result.passed
    assert result.reasons == []
    assert len(result.counted) == 1


def test_max_severity() -> None:
    high = finding("sqli", Severity.HIGH, location="db.py:3")
    low = finding("style", Severity.LOW)
    result = evaluate(report(high, low), PassCriteria(max_severity=Severity.MEDIUM))
    assert not result.passed
    assert result.reasons == [
        "1 finding above the highest allowed severity medium: sqli at db.py:3 (high)."]
    assert evaluate(report(high, low), PassCriteria(max_severity=Severity.HIGH)).passed


def test_max_counts_per_severity() -> None:
    mediums = [finding(f"m{i}", Severity.MEDIUM) for i in range(3)]
    criteria = PassCriteria(max_counts={Severity.MEDIUM: 2, Severity.HIGH: 0})
    result = evaluate(report(*mediums), criteria)
    assert not result.passed
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("3 medium findings, more than the 2 allowed: m0 at")
    assert evaluate(report(*mediums[:2]), criteria).passed


def test_many_findings_are_abbreviated() -> None:
    many = [finding(f"r{i}", Severity.HIGH) for i in range(15)]
    result = evaluate(report(*many), PassCriteria(max_severity=Severity.LOW))
    assert result.reasons[0].endswith("; and 5 more.")


def test_max_failures_names_failing_tests() -> None:
    junit = parse_junit(read("suite.junit.xml"), source="suite.junit.xml")
    result = evaluate(junit, PassCriteria(max_failures=1))
    assert not result.passed
    (reason,) = result.reasons
    assert reason.startswith("2 tests failed or errored (1 failures, 1 errors), more than the 1")
    assert "authentication.lockout_after_failures" in reason
    assert "transport.hsts_header" in reason
    assert evaluate(junit, PassCriteria(max_failures=2)).passed


def test_filters() -> None:
    xss = finding("xss", Severity.HIGH, cwe=(79,))
    sqli = finding("sqli", Severity.HIGH, cwe=(89,))
    other = finding("misc", Severity.HIGH)
    strict = Severity.LOW
    only_xss = evaluate(report(xss, sqli, other),
                        PassCriteria(max_severity=strict, include_cwes=frozenset({79})))
    assert [f.rule_id for f in only_xss.counted] == ["xss"]
    assert {f.rule_id for f in only_xss.excluded} == {"sqli", "misc"}
    rules = evaluate(report(xss, sqli, other), PassCriteria(
        include_rules=frozenset({"misc"}), include_cwes=frozenset({89})))
    assert {f.rule_id for f in rules.counted} == {"misc", "sqli"}
    excluded = evaluate(report(xss, sqli, other), PassCriteria(
        max_severity=strict, exclude_rules=frozenset({"misc"}), exclude_cwes=frozenset({79})))
    assert [f.rule_id for f in excluded.counted] == ["sqli"]
    # exclusion wins over inclusion
    both = evaluate(report(xss), PassCriteria(include_rules=frozenset({"xss"}),
                                              exclude_cwes=frozenset({79})))
    assert both.counted == []


def test_criteria_validation() -> None:
    with pytest.raises(ValueError):
        PassCriteria(max_counts={Severity.LOW: -1})
    with pytest.raises(ValueError):
        PassCriteria(max_failures=-1)
    with pytest.raises(ValueError):
        evaluate(report(), PassCriteria(), now=datetime(2026, 1, 1))


def test_sarif_tool_suppressions_are_honoured() -> None:
    sarif = parse_sarif(read("sast.sarif"), source="sast.sarif")
    result = evaluate(sarif, PassCriteria())
    (suppressed,) = result.suppressed
    assert suppressed[0].message == "Accepted risk"
    assert suppressed[1].kind == "tool"
    assert "test-only code" in suppressed[1].reason
    assert "Under review" in {f.message for f in result.counted}


def test_summary_is_deterministic_json() -> None:
    findings = [finding(f"r{i}", s, cwe=(i,)) for i, s in enumerate(Severity)]
    a = evaluate(report(*findings), PassCriteria(max_severity=Severity.HIGH), now=NOW)
    b = evaluate(report(*reversed(findings)), PassCriteria(max_severity=Severity.HIGH), now=NOW)
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)
    summary = json.loads(json.dumps(a.summary))
    assert summary["findings"]["counted"] == {
        "info": 1, "low": 1, "medium": 1, "high": 1, "critical": 1}
    assert summary["passed"] is False
    assert summary["tests"] == {"run": 0, "failures": 0, "errors": 0, "skipped": 0}
    assert summary["criteria"]["max_severity"] == "high"
    assert summary["evaluated_at"] == "2026-12-03T12:00:00+00:00"


# --------------------------------------------------------------------------- tables


def test_table_parsing() -> None:
    rows = parse_table(read("false-positives.table"), source="fp.table")
    assert [(r.url, r.parameter, r.cwe) for r in rows] == [
        ("https://shop.test/search?q=x", "q", 79),
        ("https://shop.test/comments", "*", 79),
        ("https://shop.test/static/*", None, 693),
        ("https://shop.test/", None, 693),
    ]
    assert rows[0].reason == "output encoded by view"
    assert rows[0].expires == datetime(2027, 7, 1, tzinfo=UTC)  # through 30 June
    assert rows[1].expires is None
    assert rows[2].reason == "listed as a false positive in fp.table"
    assert rows[0].origin == "fp.table:3"


def test_paper_format_without_extensions() -> None:
    rows = parse_table("url|parameter|cweid\nhttp://x/login|user|79\n")
    assert rows[0].url == "http://x/login"
    assert rows[0].matches(finding(cwe=(79,), location="http://x/login", parameter="user"))
    assert not rows[0].matches(finding(cwe=(79,), location="http://x/login", parameter="pw"))
    assert not rows[0].matches(finding(cwe=(80,), location="http://x/login", parameter="user"))
    assert not rows[0].matches(finding(cwe=(79,), location="http://x/login2", parameter="user"))


def test_table_wildcards() -> None:
    (row,) = parse_table("url | parameter | cweid\nhttps://s/static/* | * | CWE-693\n")
    assert row.matches(finding(cwe=(693,), location="https://s/static/app.js", parameter="p"))
    assert row.matches(finding(cwe=(693,), location="https://s/static/", parameter=None))
    assert not row.matches(finding(cwe=(693,), location="https://s/other", parameter=None))


@pytest.mark.parametrize(("text", "needle"), [
    ("", "no header row"),
    ("# only a comment\n", "no header row"),
    ("url | cweid\n", "the header must be"),
    ("url | parameter | cweid\nhttp://x | p\n", "fp:2: a row needs url | parameter | cweid"),
    ("url | parameter | cweid\nhttp://x | p | 79 | why\n", "fp:2: 4 cells"),
    ("url | parameter | cweid\nhttp://x | p | xss\n", "cweid 'xss'"),
    ("url | parameter | cweid\n* | p | 79\n", "the url cell"),
    ("url | parameter | cweid\n|  | p | 79 |\n", "the url cell"),
    ("url|parameter|cweid|reason|expires\nhttp://x|p|79|r|soon\n", "expiry 'soon'"),
    ("url|parameter|cweid|reason|expires\nhttp://x|p|79|r|2026-12-01T00:00\n", "time zone"),
    ("url|parameter|cweid|reason|expires\nhttp://x|p|79|r|2026-02-30\n", "not a valid date"),
])
def test_table_refuses_malformed(text: str, needle: str) -> None:
    with pytest.raises(ReportError, match=re.escape(needle)):
        parse_table(text, source="fp")


def test_table_suppresses_zap_findings() -> None:
    zap = parse_json_report(read("zap.json"), source="zap.json")
    rows = parse_table(read("false-positives.table"), source="fp.table")
    result = evaluate(zap, PassCriteria(max_severity=Severity.LOW,
                                        fail_on_expired=False), rows, NOW)
    by = {(f.location, f.parameter): s.origin for f, s in result.suppressed}
    assert by[("https://shop.test/search?q=x", "q")] == "fp.table:3"
    assert by[("https://shop.test/comments", "body")] == "fp.table:4"
    # ZAP's own false-positive flag
    assert ("https://shop.test/", "x-frame-options") in by
    # the CSP finding on / is covered only by the expired row 7, so it counts again
    assert [f.rule_id for f in result.counted] == ["10038", "10096"]
    assert [s.origin for s in result.expired_suppressions] == ["fp.table:7"]
    assert not result.passed
    assert "10038" in result.reasons[0]


def test_expired_suppression_fails_the_stage_naming_it() -> None:
    rows = parse_table(read("false-positives.table"), source="fp.table")
    zap = parse_json_report(read("zap.json"), source="zap.json")
    result = evaluate(zap, PassCriteria(), rows, NOW)
    assert not result.passed
    (reason,) = result.reasons
    assert "fp.table:7" in reason
    assert "old triage" in reason
    assert "expired at 2026-02-01T00:00:00+00:00" in reason
    assert "10038 at https://shop.test/" in reason
    assert result.summary["expired_suppressions"] == [{
        "kind": "table", "origin": "fp.table:7", "reason": "old triage",
        "expires": "2026-02-01T00:00:00+00:00"}]
    # before it expired, the same table passes
    earlier = evaluate(zap, PassCriteria(), rows, datetime(2026, 1, 1, tzinfo=UTC))
    assert earlier.passed
    assert earlier.expired_suppressions == []


def test_expired_unused_suppression_recorded_but_not_failing() -> None:
    stale = Suppression(kind="table", origin="fp:9", reason="gone", url="http://gone/",
                        cwe=1, expires=datetime(2026, 1, 1, tzinfo=UTC))
    result = evaluate(report(finding()), PassCriteria(), [stale], NOW)
    assert result.passed
    assert result.expired_suppressions == [stale]


def test_expiring_suppressions_need_now() -> None:
    rows = parse_table(read("false-positives.table"))
    with pytest.raises(ValueError, match="now is required"):
        evaluate(report(), PassCriteria(), rows)


# --------------------------------------------------------------------------- OpenVEX


def test_openvex() -> None:
    vex = parse_openvex(read("shop.openvex.json"), source="shop.vex",
                        product="pkg:oci/shop@sha256:aaaa")
    # HA003's later "affected" statement overrides the earlier not_affected; HA004 is
    # for another product.
    assert [s.vulnerability for s in vex] == ["HA002", "CWE-89"]
    assert vex[0].reason == ("vulnerable_code_not_in_execute_path; "
                             "the template is never rendered")
    assert vex[0].expires == datetime(2027, 3, 1, tzinfo=UTC)
    everything = parse_openvex(read("shop.openvex.json"))
    assert [s.vulnerability for s in everything] == ["HA002", "CWE-89", "HA004"]

    sarif = parse_sarif(read("sast.sarif"), source="sast.sarif")
    result = evaluate(sarif, PassCriteria(max_severity=Severity.CRITICAL), vex, NOW)
    suppressed = {f.rule_id: s.kind for f, s in result.suppressed}
    assert suppressed == {"HA002": "openvex", "HA004": "tool"}
    # the CWE-89 statement expired on 30 November: the SQL finding counts and the stage fails
    assert "HA001" in {f.rule_id for f in result.counted}
    assert not result.passed
    assert "shop.vex statements[1]" in result.reasons[0]
    assert "HA001 at app/db.py:42 (critical)" in result.reasons[0]


def _vex(**statement: object) -> bytes:
    base: dict[str, object] = {"vulnerability": {"name": "R1"}, "products": ["p"],
                               "status": "not_affected", "justification": "component_not_present"}
    base.update(statement)
    return json.dumps({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "x",
                       "statements": [base]}).encode()


@pytest.mark.parametrize(("data", "needle"), [
    (b"{}", "not an OpenVEX document"),
    (b'{"@context": "https://example.com", "statements": []}', "not an OpenVEX document"),
    (b'{"@context": "https://openvex.dev/ns/v0.2.0"}', "statements must be an array"),
    (_vex(status="ignored"), "status 'ignored'"),
    (_vex(products=[]), "products must be a non-empty array"),
    (_vex(vulnerability=7), "must name a vulnerability"),
    (_vex(justification=None), "needs a justification or an impact_statement"),
    (_vex(**{"x-countersign-expires": "tomorrow"}), "expiry 'tomorrow'"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_openvex_refuses_malformed(data: bytes, needle: str) -> None:
    with pytest.raises(ReportError, match=re.escape(needle)):
        parse_openvex(data, source="v.json")


def test_openvex_document_expiry_and_aliases() -> None:
    doc = json.loads(_vex(vulnerability={"name": "CVE-2026-1", "aliases": ["R7"]}))
    doc["x-countersign-expires"] = "2026-12-01T00:00:00Z"
    (s,) = parse_openvex(json.dumps(doc).encode())
    assert s.expires == datetime(2026, 12, 1, tzinfo=UTC)
    assert s.matches(finding("R7"))
    assert s.is_expired(NOW)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_openvex_arbitrary_bytes(data: bytes) -> None:
    try:
        result = parse_openvex(data, source="fuzz")
    except ReportError as exc:
        assert str(exc).startswith("fuzz")
    else:
        assert all(isinstance(s, Suppression) for s in result)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab|* #\n79-:T0Z.", max_size=200))
def test_table_arbitrary_text(body: str) -> None:
    try:
        rows = parse_table("url | parameter | cweid | reason | expires\n" + body, source="fuzz")
    except ReportError as exc:
        assert str(exc).startswith("fuzz")
    else:
        assert all(r.kind == "table" for r in rows)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Severity)), st.integers(1, 5)), max_size=20),
       st.sampled_from(list(Severity)))
def test_max_severity_property(items: list[tuple[Severity, int]], limit: Severity) -> None:
    findings = [finding(f"r{i}", s, cwe=(c,)) for i, (s, c) in enumerate(items)]
    result = evaluate(report(*findings), PassCriteria(max_severity=limit))
    assert result.passed == all(s <= limit for s, _ in items)
    assert sum(result.summary["findings"]["counted"].values()) == len(items)
