"""Report parsers: SARIF, JUnit XML, countersign JSON and ZAP JSON (fixtures in data/)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.assure import reports
from countersign.assure.reports import (
    Report,
    ReportError,
    Severity,
    parse_json_report,
    parse_junit,
    parse_report,
    parse_sarif,
)
from countersign.errors import FormatError

DATA = Path(__file__).parent / "data"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --------------------------------------------------------------------------- Severity


def test_severity_order_and_mappings() -> None:
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert [Severity.from_sarif_level(x) for x in ("none", "note", "warning", "error")] == [
        Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH]
    bands = {0.0: "info", 0.1: "low", 3.9: "low", 4.0: "medium", 6.9: "medium",
             7.0: "high", 8.9: "high", 9.0: "critical", 10.0: "critical"}
    for score, label in bands.items():
        assert Severity.from_score(score).label == label
    for bad in (-0.1, 10.1, float("nan")):
        with pytest.raises(ValueError):
            Severity.from_score(bad)
    assert Severity.parse("HIGH") is Severity.HIGH
    assert Severity.parse("informational") is Severity.INFO
    with pytest.raises(ValueError):
        Severity.parse("severe")


def test_report_error_is_a_format_error() -> None:
    assert issubclass(ReportError, FormatError)


# --------------------------------------------------------------------------- SARIF


def test_sarif_static_analysis() -> None:
    report = parse_sarif(read("sast.sarif"), source="sast.sarif")
    assert (report.tool, report.tool_version, report.format) == ("HandAnalyser", "3.2.1", "sarif")
    by_message = {f.message: f for f in report.findings}
    # kind=pass and baselineState=absent are not findings
    assert set(by_message) == {"SQL built from user input", "Reflected output",
                               "Consider a constant-time compare", "Accepted risk",
                               "Under review", "Informational"}
    sql = by_message["SQL built from user input"]
    assert sql.severity is Severity.CRITICAL  # security-severity 9.8 beats level error
    assert sql.cwe == (89,)
    assert sql.location == "app/db.py:42"
    assert sql.fingerprint == "primaryLocationLineHash:abc123:1"
    xss = by_message["Reflected output"]
    assert (xss.rule_id, xss.severity, xss.cwe) == ("HA002", Severity.LOW, (79,))
    assert xss.location == "app/views.py:7"
    advice = by_message["Consider a constant-time compare"]
    assert advice.severity is Severity.LOW  # problem.severity recommendation
    assert advice.location == "app/auth.py"
    assert by_message["Accepted risk"].tool_suppression == "inSource suppression: test-only code"
    assert by_message["Under review"].tool_suppression is None
    assert by_message["Informational"].severity is Severity.INFO
    assert by_message["Informational"].location == ""
    assert by_message["Informational"].fingerprint.startswith("sha256:")


def test_sarif_dast_urls_and_parameters() -> None:
    report = parse_sarif(read("dast.sarif"))
    assert report.tool_version == "1.0.0"
    got = [(f.location, f.parameter, f.severity) for f in report.findings]
    assert got == [
        ("https://shop.test/search?q=x", "q", Severity.HIGH),
        ("https://shop.test/profile", "User-Agent", Severity.MEDIUM),
        ("https://shop.test/about", "lang", Severity.LOW),
    ]
    assert all(f.cwe == (79,) for f in report.findings)


def _sarif(results: list[object], rules: list[object] | None = None) -> bytes:
    driver: dict[str, object] = {"name": "t"}
    if rules is not None:
        driver["rules"] = rules
    return json.dumps({"version": "2.1.0",
                       "runs": [{"tool": {"driver": driver}, "results": results}]}).encode()


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[]", "must be an object"),
    (b'{"version": "2.0.0", "runs": []}', "version is '2.0.0'"),
    (b'{"version": "2.1.0"}', "runs must be an array"),
    (b'{"version": "2.1.0", "runs": []}', "no runs"),
    (b'{"version": "2.1.0", "runs": [{"tool": {}}]}', "runs[0].tool.driver"),
    (b'{"version": "2.1.0", "version": "2.1.0", "runs": []}', "duplicate key"),
    (b'{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}, "results": null}]}',
     "did not complete"),
    (_sarif([{"message": {"text": "x"}}]), "neither ruleId nor ruleIndex"),
    (_sarif([{"ruleIndex": 3, "message": {"text": "x"}}], []), "past the 0 rules"),
    (_sarif([{"ruleId": "r", "level": "fatal", "message": {"text": "x"}}]), "unknown SARIF level"),
    (_sarif([{"ruleId": "r", "message": {}}]), "message.text must be a string"),
    (_sarif([{"ruleId": "r", "message": {"text": "x"}, "properties":
              {"security-severity": "high"}}]), "security-severity"),
    (_sarif([{"ruleId": "r", "message": {"text": "x"}, "properties":
              {"security-severity": 10**400}}]), "security-severity"),
    (_sarif([{"ruleId": "r", "message": {"text": "x"}, "suppressions": [{"status": "maybe"}]}]),
     "status 'maybe'"),
    (b'{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}, "x": NaN}]}', "NaN"),
])
def test_sarif_refuses_malformed(data: bytes, needle: str) -> None:
    with pytest.raises(ReportError) as info:
        parse_sarif(data, source="bad.sarif")
    assert str(info.value).startswith("bad.sarif: ")
    assert needle in str(info.value)


def test_sarif_refuses_other_formats() -> None:
    for name in ("zap.json", "countersign.json", "suite.junit.xml"):
        with pytest.raises(ReportError):
            parse_sarif(read(name), source=name)


def test_sarif_suppression_rejected_is_not_suppressed() -> None:
    data = _sarif([{"ruleId": "r", "message": {"text": "x"},
                    "suppressions": [{"status": "accepted"}, {"status": "rejected"}]}])
    assert parse_sarif(data).findings[0].tool_suppression is None


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = b"[" * (reports.MAX_DEPTH + 1) + b"]" * (reports.MAX_DEPTH + 1)
    with pytest.raises(ReportError, match="nests deeper"):
        parse_sarif(deep, source="deep.sarif")
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", 100)
    with pytest.raises(ReportError, match="more than the 100 allowed"):
        parse_json_report(b" " * 101, source="big.json")
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", 64 * 1024 * 1024)
    monkeypatch.setattr(reports, "MAX_FINDINGS", 2)
    with pytest.raises(ReportError, match="more than 2 findings"):
        parse_sarif(_sarif([{"ruleId": "r", "message": {"text": "x"}}] * 3))
    monkeypatch.setattr(reports, "MAX_XML_ELEMENTS", 3)
    with pytest.raises(ReportError, match="more than 3 elements"):
        parse_junit(b"<testsuite><testcase/><testcase/><testcase/></testsuite>")


def test_deep_xml_refused() -> None:
    deep = b"<testsuite>" + b"<a>" * 100 + b"</a>" * 100 + b"</testsuite>"
    with pytest.raises(ReportError, match="nests deeper"):
        parse_junit(deep)


@pytest.mark.skipif(shutil.which("bandit", path=str(Path(sys.executable).parent)) is None,
                    reason="bandit (with its sarif extra) is not installed in the venv")
def test_real_bandit_sarif_and_xml(tmp_path: Path) -> None:
    bandit = str(Path(sys.executable).parent / "bandit")
    (tmp_path / "vuln.py").write_text(
        "import subprocess\n\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n"
        "    return eval(cmd)\n")
    sarif_out = tmp_path / "out.sarif"
    done = subprocess.run([bandit, "-q", "-f", "sarif", "-o", str(sarif_out), "vuln.py"],
                          cwd=tmp_path, capture_output=True, check=False)
    if not sarif_out.exists():
        pytest.skip(f"bandit could not write SARIF: {done.stderr.decode()[:200]}")
    report = parse_sarif(sarif_out.read_bytes(), source=str(sarif_out))
    assert report.tool == "Bandit"
    rules = {f.rule_id: f for f in report.findings}
    assert {"B404", "B602", "B307"} <= set(rules)
    assert rules["B602"].severity is Severity.HIGH
    assert rules["B602"].location == "vuln.py:5"
    assert 78 in rules["B602"].cwe
    # bandit's XML output is JUnit-shaped
    xml_out = tmp_path / "out.xml"
    subprocess.run([bandit, "-q", "-f", "xml", "-o", str(xml_out), "vuln.py"],
                   cwd=tmp_path, capture_output=True, check=False)
    junit = parse_junit(xml_out.read_bytes(), source=str(xml_out))
    assert junit.errors == 3
    assert {f.severity for f in junit.findings} == {Severity.LOW, Severity.MEDIUM, Severity.HIGH}
    assert all(f.cwe == (78,) for f in junit.findings)


# --------------------------------------------------------------------------- JUnit


def test_junit_counts_and_findings() -> None:
    report = parse_junit(read("suite.junit.xml"), source="suite.junit.xml")
    assert (report.tool, report.format) == ("bdd-security", "junit")
    assert (report.tests_run, report.failures, report.errors, report.skipped) == (5, 1, 1, 1)
    lockout, hsts = report.findings
    assert lockout.rule_id == "authentication.lockout_after_failures"
    assert lockout.severity is Severity.HIGH
    assert lockout.cwe == (307,)
    assert lockout.message.startswith("account was not locked")
    assert hsts.severity is Severity.MEDIUM
    assert hsts.location == "features/transport.feature:12"


def test_junit_stated_counts_never_lower() -> None:
    report = parse_junit(b'<testsuite tests="9" failures="4"><testcase name="a"/></testsuite>')
    assert (report.tests_run, report.failures) == (9, 4)
    with pytest.raises(ReportError, match="not a non-negative integer"):
        parse_junit(b'<testsuite failures="-1"/>', source="x.xml")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<testsuite name="&lol3;"><testcase name="x"/></testsuite>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="x"><failure message="&secret;"/></testcase></testsuite>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite SYSTEM "http://127.0.0.1:9/junit.dtd">
<testsuite/>
"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, XXE, EXTERNAL_DTD])
def test_junit_refuses_entities_and_dtds(data: bytes) -> None:
    with pytest.raises(ReportError, match=re.escape("bomb.xml: JUnit XML must not contain a DTD")):
        parse_junit(data, source="bomb.xml")


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "not well-formed"),
    (b"<testsuite>", "not well-formed"),
    (b"<html><body/></html>", "root element is <html>"),
    (b'{"version": "2.1.0"}', "not well-formed"),
    (b'<?xml version="1.0" encoding="no-such"?><testsuite/>', "unknown encoding"),
])
def test_junit_refuses_malformed(data: bytes, needle: str) -> None:
    with pytest.raises(ReportError, match=re.escape(needle)) as info:
        parse_junit(data, source="x.xml")
    assert str(info.value).startswith("x.xml: ")


# --------------------------------------------------------------------------- JSON


def test_countersign_json() -> None:
    report = parse_json_report(read("countersign.json"), source="countersign.json")
    assert (report.tool, report.tool_version, report.format) == (
        "custom-probe", "0.4", "countersign-json")
    assert report.tests_run == 12
    redirect, md5, banner = report.findings
    assert (redirect.location, redirect.parameter, redirect.cwe) == (
        "https://shop.test/login", "next", (601,))
    assert (md5.severity, md5.cwe, md5.location) == (Severity.HIGH, (328,), "src/auth.c:88")
    assert (banner.severity, banner.cwe, banner.location) == (Severity.INFO, (), "")


@pytest.mark.parametrize(("document", "needle"), [
    ({"tool": {"name": "t"}, "findings": [], "extra": 1}, "unknown top-level keys"),
    ({"tool": {"name": ""}, "findings": []}, "tool.name is empty"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": "bad"}]}, "unknown severity"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": 11}]}, "from 0 to 10"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": True}]}, "severity must"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": 10**400}]}, "from 0 to 10"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": "low", "cwe": "XSS"}]},
     "CWE numbers"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": "low", "url": "u",
                                           "location": "l"}]}, "both url and location"),
    ({"tool": {"name": "t"}, "findings": [{"rule": "r", "severity": "low", "typo": 1}]},
     "unknown keys in findings[0]"),
    ({"tool": {"name": "t"}, "findings": [], "tests": {"run": -1}}, "tests.run"),
    ({"runs": []}, "not a countersign JSON report"),
    ({"site": []}, "no \"@version\""),
    ({"@version": "2", "site": [{"alerts": [{"riskcode": "7", "pluginid": "1"}]}]}, "riskcode"),
    ({"@version": "2", "site": [{"alerts": [{"riskcode": "1", "pluginid": "1",
                                             "cweid": "x"}]}]}, "cweid"),
])
def test_json_refuses_malformed(document: object, needle: str) -> None:
    with pytest.raises(ReportError, match=re.escape(needle)) as info:
        parse_json_report(json.dumps(document).encode(), source="r.json")
    assert str(info.value).startswith("r.json: ")


def test_zap_json() -> None:
    report = parse_json_report(read("zap.json"), source="zap.json")
    assert (report.tool, report.tool_version, report.format) == ("ZAP", "2.15.0", "zap-json")
    got = [(f.rule_id, f.severity.label, f.cwe, f.location, f.parameter, f.tool_suppression)
           for f in report.findings]
    assert got == [
        ("40012", "high", (79,), "https://shop.test/search?q=x", "q", None),
        ("40012", "high", (79,), "https://shop.test/comments", "body", None),
        ("10038", "medium", (693,), "https://shop.test/", None, None),
        ("10096", "info", (200,), "https://shop.test", None, None),
        ("10020", "medium", (1021,), "https://shop.test/", "x-frame-options",
         'ZAP confidence "False Positive"'),
    ]
    assert len({f.fingerprint for f in report.findings}) == 5


def test_parse_report_guesses() -> None:
    assert parse_report(read("sast.sarif")).format == "sarif"
    assert parse_report(read("suite.junit.xml")).format == "junit"
    assert parse_report(read("zap.json")).format == "zap-json"
    assert parse_report(read("countersign.json"), format="json").format == "countersign-json"
    with pytest.raises(ReportError, match="unknown report format"):
        parse_report(b"{}", format="csv", source="r")


# --------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["version", "runs", "tool", "driver", "name", "results",
                                       "ruleId", "message", "text", "level", "findings", "rule",
                                       "severity", "site", "@version", "alerts", "riskcode",
                                       "pluginid", "instances", "uri", "cwe", "tests",
                                       "properties", "security-severity", "suppressions",
                                       "status", "locations", "physicalLocation",
                                       "artifactLocation", "region", "startLine", "ruleIndex",
                                       "rules", "id", "cweid", "param", "confidence", "kind",
                                       "baselineState", "taxa", "fingerprints", "tags",
                                       "webRequest", "target", "url", "location"]),
                      children, max_size=5),
    max_leaves=30)


def _check(parser: object, data: bytes) -> None:
    try:
        result = parser(data, source="fuzz")  # type: ignore[operator]
    except ReportError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        assert isinstance(result, Report)


@SETTINGS
@given(st.binary(max_size=512))
def test_sarif_arbitrary_bytes(data: bytes) -> None:
    _check(parse_sarif, data)


@SETTINGS
@given(json_values)
def test_sarif_arbitrary_json(value: object) -> None:
    _check(parse_sarif, json.dumps({"version": "2.1.0", "runs": [value]}).encode())


@SETTINGS
@given(st.binary(max_size=512))
def test_junit_arbitrary_bytes(data: bytes) -> None:
    _check(parse_junit, data)


xml_docs = st.recursive(
    st.sampled_from(["", "text", "&amp;", "<skipped/>", '<failure message="m"/>', "<error/>"]),
    lambda inner: st.builds(
        lambda tag, attrs, body: f"<{tag}{attrs}>{''.join(body)}</{tag}>",
        st.sampled_from(["testsuites", "testsuite", "testcase", "failure", "error", "x"]),
        st.sampled_from(["", ' tests="3"', ' failures="x"', ' name="n" classname="c"',
                         ' type="low"', ' line="4" file="f"']),
        st.lists(inner, max_size=3)),
    max_leaves=12)


@SETTINGS
@given(xml_docs)
def test_junit_arbitrary_xml(doc: str) -> None:
    _check(parse_junit, doc.encode())


@SETTINGS
@given(st.binary(max_size=512))
def test_json_report_arbitrary_bytes(data: bytes) -> None:
    _check(parse_json_report, data)


@SETTINGS
@given(json_values, json_values)
def test_json_report_arbitrary_json(findings: object, site: object) -> None:
    _check(parse_json_report, json.dumps({"tool": {"name": "t"}, "findings": findings}).encode())
    _check(parse_json_report, json.dumps({"@version": "1", "site": site}).encode())
    _check(parse_json_report, json.dumps(
        {"@version": "1", "site": [{"alerts": [site]}]}).encode())


@SETTINGS
@given(st.binary(max_size=512))
def test_parse_report_arbitrary_bytes(data: bytes) -> None:
    _check(parse_report, data)
