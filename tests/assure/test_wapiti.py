"""The Wapiti JSON report parser, on reports Wapiti 3.0.4 wrote scanning tests/assure/sample.

``wapiti-vulnerable.json``: the vulnerable web shop scanned with Wapiti's common
modules; ``wapiti-fixed.json``: the fixed shop scanned with ``-m xss,sql``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.assure.criteria import PassCriteria, evaluate
from countersign.assure.reports import (
    Report,
    ReportError,
    Severity,
    parse_json_report,
    parse_report,
)

DATA = Path(__file__).parent / "data"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def document(name: str = "wapiti-vulnerable.json") -> dict[str, Any]:
    value: dict[str, Any] = json.loads(read(name))
    return value


def test_a_real_report_of_the_vulnerable_shop() -> None:
    report = parse_json_report(read("wapiti-vulnerable.json"), source="wapiti.json")
    assert (report.tool, report.tool_version, report.format) == ("Wapiti", "3.0.4",
                                                                 "wapiti-json")
    got = sorted({(f.rule_id, f.severity.label, f.cwe, f.location, f.parameter)
                  for f in report.findings})
    base = "http://127.0.0.1:8765"
    assert got == [
        ("Content Security Policy Configuration", "low", (), f"{base}/", None),
        ("Cross Site Scripting", "medium", (79,), f"{base}/search", "q"),
        ("HTTP Secure Headers", "low", (), f"{base}/", None),
        ("Internal Server Error", "high", (), f"{base}/item", "id"),
        ("SQL Injection", "critical", (89,), f"{base}/item", "id"),
    ]
    assert len(report.findings) == 11
    headers = [f for f in report.findings if f.rule_id == "HTTP Secure Headers"]
    assert {f.message for f in headers} == {
        "X-Frame-Options is not set", "X-XSS-Protection is not set",
        "X-Content-Type-Options is not set", "Strict-Transport-Security is not set"}
    # four distinct header findings keep four fingerprints
    assert len({f.fingerprint for f in headers}) == 4
    assert parse_report(read("wapiti-vulnerable.json")).format == "wapiti-json"
    assert parse_report(read("wapiti-vulnerable.json"), format="json").format == "wapiti-json"


def test_the_fixed_shop_has_no_findings_and_passes() -> None:
    report = parse_report(read("wapiti-fixed.json"), format="json", source="fixed.json")
    assert report.findings == ()
    criteria = PassCriteria(max_severity=Severity.LOW)
    assert evaluate(report, criteria, []).passed


def test_the_vulnerable_shop_fails_a_low_bar_naming_the_injections() -> None:
    report = parse_report(read("wapiti-vulnerable.json"), format="json")
    evaluation = evaluate(report, PassCriteria(max_severity=Severity.LOW), [])
    assert not evaluation.passed
    text = " ".join(evaluation.reasons)
    assert "SQL Injection" in text and "Cross Site Scripting" in text
    # headers (low) alone would pass
    assert "HTTP Secure Headers" not in text


@pytest.mark.parametrize(("level", "label"), [
    (0, "info"), (1, "low"), (2, "medium"), (3, "high"), (4, "critical"), ("4", "critical"),
])
def test_levels(level: object, label: str) -> None:
    doc = document()
    doc["vulnerabilities"]["SQL Injection"][0]["level"] = level
    report = parse_json_report(json.dumps(doc).encode())
    sql = [f for f in report.findings if f.rule_id == "SQL Injection"]
    assert sql[0].severity.label == label


def _with(change: Any) -> bytes:
    doc = document()
    change(doc)
    return json.dumps(doc).encode()


def _set(path: list[Any], value: object) -> Any:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


SQL = ["vulnerabilities", "SQL Injection", 0]


@pytest.mark.parametrize(("change", "needle"), [
    (_set([*SQL, "level"], 5), "level 5 is not 0, 1, 2, 3 or 4"),
    (_set([*SQL, "level"], True), "level True"),
    (_set([*SQL, "level"], None), "level None"),
    (_set([*SQL, "level"], "\u00b2"), "is not 0, 1, 2, 3 or 4"),  # isdigit, yet not int()
    (_set([*SQL, "level"], "9" * 5000), "is not 0, 1, 2, 3 or 4"),  # past int()'s limit
    (_set([*SQL, "path"], 7), "path must be a string"),
    (_set([*SQL, "parameter"], []), "parameter must be a string"),
    (_set(SQL, "x"), "[0] must be an object"),
    (_set(["vulnerabilities", "SQL Injection"], {}), "must be an array"),
    (_set(["vulnerabilities"], []), "vulnerabilities must be an object"),
    (_set(["anomalies"], "x"), "anomalies must be an object"),
    (_set(["infos", "version"], "Wapiti 3.0.3"), "another scale"),
    (_set(["infos", "version"], "2.3.0"), "another scale"),
    (_set(["infos", "version"], "latest"), "names no Wapiti version"),
    (_set(["infos", "version"], None), "infos.version must be a string"),
    (_set(["infos", "target"], "ftp://x/"), "not an http(s) URL"),
    (_set(["infos"], []), "infos must be an object"),
    (_set(["classifications", "SQL Injection", "ref"], "x"), "ref must be an object"),
])
def test_refuses_malformed(change: Any, needle: str) -> None:
    with pytest.raises(ReportError, match=re.escape(needle)) as info:
        parse_json_report(_with(change), source="w.json")
    assert str(info.value).startswith("w.json: ")


def test_newer_versions_and_extra_keys_are_read() -> None:
    doc = document()
    doc["infos"]["version"] = "Wapiti 3.1.8"
    doc["infos"]["crawled_pages_nbr"] = 6
    doc["vulnerabilities"]["SQL Injection"][0]["wstg"] = ["WSTG-INPV-05"]
    doc["vulnerabilities"]["SQL Injection"][0]["path"] = "http://127.0.0.1:8765/item"
    del doc["additionals"]
    report = parse_json_report(json.dumps(doc).encode())
    assert report.tool_version == "3.1.8"
    sql = next(f for f in report.findings if f.rule_id == "SQL Injection")
    assert sql.location == "http://127.0.0.1:8765/item"


def test_missing_classification_gives_no_cwe() -> None:
    doc = document()
    del doc["classifications"]
    report = parse_json_report(json.dumps(doc).encode())
    assert all(f.cwe == () for f in report.findings)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 6) | st.text(max_size=6)
    | st.sampled_from(["3.0.4", "Wapiti 3.0.4", "http://x/", "/p", "4"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["level", "path", "parameter", "method", "info", "ref",
                                       "version", "target", "SQL Injection", "x"]),
                      children, max_size=4),
    max_leaves=20)


@SETTINGS
@given(values, values, values)
def test_arbitrary_documents_give_a_report_or_a_report_error(infos: object, vulns: object,
                                                             classes: object) -> None:
    base = document()
    for key, value in (("infos", infos), ("vulnerabilities", vulns),
                       ("classifications", classes)):
        doc = copy.deepcopy(base)
        doc[key] = value
        try:
            result = parse_json_report(json.dumps(doc).encode(), source="fuzz")
        except ReportError as exc:
            assert str(exc).startswith("fuzz: ")
        else:
            assert isinstance(result, Report)
