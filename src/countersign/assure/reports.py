"""Reading the reports that security test tools write.

A security test stage runs a tool (a static analyser, a DAST scanner, a BDD
security suite) and reads what it wrote. This module turns five report
formats into one :class:`Report` of :class:`Finding` values:

- SARIF 2.1.0 (:func:`parse_sarif`), what most static analysers write;
- JUnit XML (:func:`parse_junit`), what test suites write, read with
  ``defusedxml`` so that no DTD, entity or external reference is processed;
- the countersign JSON report (:func:`parse_json_report`), documented in
  ``docs/reports.md``, for tools without a standard format;
- OWASP ZAP's JSON report (also :func:`parse_json_report`);
- Wapiti's JSON report, ``wapiti -f json`` (also :func:`parse_json_report`).

Every parser is bounded (at most :data:`MAX_REPORT_BYTES` of input, nesting
at most :data:`MAX_DEPTH` deep, at most :data:`MAX_FINDINGS` findings and
:data:`MAX_XML_ELEMENTS` XML elements) and refuses input that is not the
format it reads with a :class:`ReportError` naming the file and what was
wrong. No other exception escapes a parser.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import xml.etree.ElementTree as ET  # only for types and ParseError; parsing is defusedxml
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import defusedxml
import defusedxml.ElementTree as DET

from countersign.errors import FormatError

__all__ = [
    "MAX_DEPTH",
    "MAX_FINDINGS",
    "MAX_REPORT_BYTES",
    "MAX_XML_ELEMENTS",
    "Finding",
    "Report",
    "ReportError",
    "Severity",
    "parse_json_report",
    "parse_junit",
    "parse_report",
    "parse_sarif",
]

MAX_REPORT_BYTES = 64 * 1024 * 1024
"""The largest report read, in bytes."""
MAX_DEPTH = 64
"""The deepest nesting of JSON arrays/objects or XML elements accepted."""
MAX_FINDINGS = 200_000
"""The most findings (or test cases) one report may hold."""
MAX_XML_ELEMENTS = 1_000_000
"""The most XML elements one JUnit report may hold."""


class ReportError(FormatError):
    """A tool report that cannot be read: too big, malformed, or not the format."""


class Severity(enum.IntEnum):
    """How bad a finding is, ordered ``info < low < medium < high < critical``.

    From SARIF ``level``: ``none`` → info, ``note`` → low, ``warning`` →
    medium, ``error`` → high. From a CVSS-like score (SARIF
    ``security-severity``): 0.0 → info, 0.1–3.9 → low, 4.0–6.9 → medium,
    7.0–8.9 → high, 9.0–10.0 → critical.
    """

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The lower-case name used in reports, criteria and evidence."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity named ``text`` (case-insensitive; ``informational`` = info)."""
        name = text.strip().lower()
        if name in ("informational", "information", "none"):
            name = "info"
        try:
            return cls[name.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of {names})") from None

    @classmethod
    def from_score(cls, score: float) -> Severity:
        """The severity band of a CVSS-like score in [0, 10]."""
        if not (math.isfinite(score) and 0.0 <= score <= 10.0):
            raise ValueError(f"severity score {score!r} is not a number from 0 to 10")
        if score == 0.0:
            return cls.INFO
        if score < 4.0:
            return cls.LOW
        if score < 7.0:
            return cls.MEDIUM
        if score < 9.0:
            return cls.HIGH
        return cls.CRITICAL

    @classmethod
    def from_sarif_level(cls, level: str) -> Severity:
        """The severity of a SARIF ``level`` (none, note, warning, error)."""
        try:
            return _SARIF_LEVELS[level]
        except KeyError:
            raise ValueError(
                f"unknown SARIF level {level!r} (expected none, note, warning or error)"
            ) from None


_SARIF_LEVELS = {
    "none": Severity.INFO,
    "note": Severity.LOW,
    "warning": Severity.MEDIUM,
    "error": Severity.HIGH,
}
# CodeQL's ``problem.severity`` rule property.
_PROBLEM_SEVERITIES = {
    "recommendation": Severity.LOW,
    "warning": Severity.MEDIUM,
    "error": Severity.HIGH,
}


@dataclass(frozen=True)
class Finding:
    """One thing a tool reported.

    ``location`` is ``file:line`` (or just ``file``) for code, or a URL for a
    web finding; ``parameter`` is the request parameter of a web finding.
    ``fingerprint`` identifies the finding across runs: the tool's own when it
    gives one, otherwise a SHA-256 over rule, location and parameter.
    ``tool_suppression`` is set when the report itself marks the finding as
    suppressed (SARIF ``suppressions`` all accepted, ZAP confidence "False
    Positive"), to the justification given.
    """

    rule_id: str
    message: str
    severity: Severity
    cwe: tuple[int, ...]
    location: str
    parameter: str | None
    fingerprint: str
    tool_suppression: str | None = None

    def describe(self) -> str:
        """A short human description: ``rule at location [parameter] (severity)``."""
        where = self.location or "(no location)"
        param = f" parameter {self.parameter!r}" if self.parameter else ""
        return f"{self.rule_id} at {where}{param} ({self.severity.label})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for evidence."""
        return {
            "rule": self.rule_id,
            "message": self.message,
            "severity": self.severity.label,
            "cwe": list(self.cwe),
            "location": self.location,
            "parameter": self.parameter,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Report:
    """What one tool run reported: its findings and, for test suites, test counts."""

    tool: str
    tool_version: str | None
    format: str
    findings: tuple[Finding, ...]
    tests_run: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0


def fingerprint_of(rule_id: str, location: str, parameter: str | None) -> str:
    """The fingerprint countersign computes when a tool gives none."""
    blob = json.dumps([rule_id, location, parameter], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- helpers


def _fail(source: str, what: str) -> ReportError:
    return ReportError(f"{source}: {what}")


def _check_size(data: bytes, source: str) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail(source, f"report must be bytes, not {type(data).__name__}")
    if len(data) > MAX_REPORT_BYTES:
        raise _fail(source,
                    f"report is {len(data)} bytes, more than the {MAX_REPORT_BYTES} allowed")


_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _json_depth_ok(text: str) -> bool:
    """Whether JSON text nests arrays/objects at most MAX_DEPTH deep (strings skipped)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif token in ("]", "}"):
            depth -= 1
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(data: bytes, source: str, what: str = "report") -> Any:
    """Decode bounded, strict JSON (UTF-8, no duplicate keys, no NaN)."""
    _check_size(data, source)
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(source,
                    f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not _json_depth_ok(text):
        raise _fail(source, f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError, duplicates, NaN, huge integers
        raise _fail(source, f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - prevented by the depth check
        raise _fail(source, f"{what} nests too deeply") from None


def _obj(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, f"{where} must be an object, not {_kind(value)}")
    return value


def _list(value: Any, source: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(source, f"{where} must be an array, not {_kind(value)}")
    return value


def _str(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(source, f"{where} must be a string, not {_kind(value)}")
    return value


def _opt_str(value: Any, source: str, where: str) -> str | None:
    return None if value is None else _str(value, source, where)


def _count(value: Any, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(source, f"{where} must be a non-negative integer, not {value!r:.40}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _bound_findings(count: int, source: str) -> None:
    if count > MAX_FINDINGS:
        raise _fail(source, f"report holds more than {MAX_FINDINGS} findings")


_CWE_TAG = re.compile(r"(?:external/cwe/)?cwe-(\d{1,6})", re.IGNORECASE)
_CWE_IN_TEXT = re.compile(r"\bCWE-(\d{1,6})\b", re.IGNORECASE)


def _cwes_from_tags(tags: Sequence[Any]) -> list[int]:
    found = []
    for tag in tags:
        if isinstance(tag, str):
            match = _CWE_TAG.fullmatch(tag.strip())
            if match:
                found.append(int(match.group(1)))
    return found


def _sorted_unique(values: Iterator[int] | Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


# --------------------------------------------------------------------------- SARIF


def parse_sarif(data: bytes, *, source: str = "<sarif>") -> Report:
    """Read a SARIF 2.1.0 log.

    The tool is the ``driver`` of each run (names joined with ``+`` when runs
    differ); findings are the results of every run. A result's severity is,
    in order of preference: a ``security-severity`` score (result, then rule
    properties), the result's ``level``, the rule's
    ``defaultConfiguration.level``, the rule's ``problem.severity``, and
    finally SARIF's default level ``warning``. Results of ``kind`` ``pass`` or
    ``notApplicable`` and results with ``baselineState`` ``absent`` are not
    findings. A result whose ``suppressions`` array is non-empty and has no
    entry with status ``underReview`` or ``rejected`` is marked suppressed
    (:attr:`Finding.tool_suppression`).
    """
    log = _obj(load_json(data, source, "SARIF log"), source, "the SARIF log")
    version = log.get("version")
    if version != "2.1.0":
        raise _fail(source, f"not a SARIF 2.1.0 log: version is {version!r:.40}")
    runs = _list(log.get("runs"), source, "runs")
    tools: list[str] = []
    tool_version: str | None = None
    findings: list[Finding] = []
    for r, run_value in enumerate(runs):
        run = _obj(run_value, source, f"runs[{r}]")
        tool = _obj(run.get("tool"), source, f"runs[{r}].tool")
        driver = _obj(tool.get("driver"), source, f"runs[{r}].tool.driver")
        name = _str(driver.get("name"), source, f"runs[{r}].tool.driver.name")
        if not name:
            raise _fail(source, f"runs[{r}].tool.driver.name is empty")
        version_text = driver.get("semanticVersion", driver.get("version"))
        if version_text is not None:
            version_text = _str(version_text, source, f"runs[{r}].tool.driver.version")
        if name not in tools:
            tools.append(name)
        if tool_version is None:
            tool_version = version_text
        rules_value = _list(driver.get("rules", []), source, f"runs[{r}].tool.driver.rules")
        rules = [_obj(rule, source, f"runs[{r}].tool.driver.rules[{i}]")
                 for i, rule in enumerate(rules_value)]
        by_id: dict[str, dict[str, Any]] = {}
        for i, rule in enumerate(rules):
            rid = _str(rule.get("id"), source, f"runs[{r}].tool.driver.rules[{i}].id")
            by_id.setdefault(rid, rule)
        results_value = run.get("results", [])
        if results_value is None:
            raise _fail(source, f"runs[{r}].results is null: the tool did not complete its run")
        results = _list(results_value, source, f"runs[{r}].results")
        _bound_findings(len(findings) + len(results), source)
        for i, result_value in enumerate(results):
            where = f"runs[{r}].results[{i}]"
            finding = _sarif_result(_obj(result_value, source, where), rules, by_id, source, where)
            if finding is not None:
                findings.append(finding)
    if not tools:
        raise _fail(source, "SARIF log has no runs")
    return Report(tool="+".join(tools), tool_version=tool_version, format="sarif",
                  findings=tuple(findings))


def _sarif_result(result: dict[str, Any], rules: list[dict[str, Any]],
                  by_id: dict[str, dict[str, Any]], source: str, where: str) -> Finding | None:
    kind = _opt_str(result.get("kind"), source, f"{where}.kind") or "fail"
    baseline = _opt_str(result.get("baselineState"), source, f"{where}.baselineState")
    if kind in ("pass", "notApplicable") or baseline == "absent":
        return None
    rule: dict[str, Any] = {}
    rule_id = _opt_str(result.get("ruleId"), source, f"{where}.ruleId")
    index_value = result.get("ruleIndex")
    rule_ref = result.get("rule")
    if index_value is None and isinstance(rule_ref, dict):
        index_value = rule_ref.get("index")
        if rule_id is None:
            rule_id = _opt_str(rule_ref.get("id"), source, f"{where}.rule.id")
    if index_value is not None and index_value != -1:
        index = _count(index_value, source, f"{where}.ruleIndex")
        if index >= len(rules):
            raise _fail(source, f"{where}.ruleIndex {index} is past the {len(rules)} rules")
        rule = rules[index]
        if rule_id is None:
            rule_id = rule["id"]
    elif rule_id is not None:
        rule = by_id.get(rule_id) or by_id.get(rule_id.split("/")[0], {})
    if rule_id is None:
        raise _fail(source, f"{where} has neither ruleId nor ruleIndex")

    message = _obj(result.get("message"), source, f"{where}.message")
    text = message.get("text")
    if text is None and "id" in message:
        text = _sarif_rule_message(rule, _str(message["id"], source, f"{where}.message.id"))
    text = _str(text, source, f"{where}.message.text")

    result_props = _obj(result.get("properties", {}), source, f"{where}.properties")
    rule_props = _obj(rule.get("properties", {}), source, f"rule {rule_id}.properties")
    severity = _sarif_severity(result, rule, result_props, rule_props, source, where)

    tags = _list(rule_props.get("tags", []), source, f"rule {rule_id}.properties.tags")
    result_tags = _list(result_props.get("tags", []), source, f"{where}.properties.tags")
    cwes = _cwes_from_tags([*tags, *result_tags])
    taxa = _list(result.get("taxa", []), source, f"{where}.taxa")
    for t, taxon_value in enumerate(taxa):
        taxon = _obj(taxon_value, source, f"{where}.taxa[{t}]")
        component = taxon.get("toolComponent")
        if isinstance(component, dict) and str(component.get("name", "")).upper() == "CWE":
            tid = taxon.get("id")
            if isinstance(tid, str):
                tag = tid if tid.upper().startswith("CWE") else f"CWE-{tid}"
                cwes.extend(_cwes_from_tags([tag]))

    location, parameter = _sarif_location(result, result_props, source, where)

    fingerprint = None
    for key in ("fingerprints", "partialFingerprints"):
        prints = _obj(result.get(key, {}), source, f"{where}.{key}")
        for name in sorted(prints):
            value = _str(prints[name], source, f"{where}.{key}.{name}")
            fingerprint = f"{name}:{value}"
            break
        if fingerprint:
            break
    if fingerprint is None:
        fingerprint = fingerprint_of(rule_id, location, parameter)

    suppressed = _sarif_suppression(result, source, where)
    return Finding(rule_id=rule_id, message=text, severity=severity,
                   cwe=_sorted_unique(cwes), location=location, parameter=parameter,
                   fingerprint=fingerprint, tool_suppression=suppressed)


def _sarif_rule_message(rule: dict[str, Any], message_id: str) -> Any:
    strings = rule.get("messageStrings")
    if isinstance(strings, dict):
        entry = strings.get(message_id)
        if isinstance(entry, dict):
            return entry.get("text")
    return None


def _sarif_severity(result: dict[str, Any], rule: dict[str, Any],
                    result_props: Mapping[str, Any], rule_props: Mapping[str, Any],
                    source: str, where: str) -> Severity:
    for props, name in ((result_props, where), (rule_props, "its rule")):
        score = props.get("security-severity")
        if score is not None:
            try:
                number = float(score) if isinstance(score, str | int | float) and not isinstance(
                    score, bool) else math.nan
                return Severity.from_score(number)
            except (ValueError, OverflowError):
                raise _fail(source, f"{where}: security-severity of {name} is {score!r:.40}, "
                                    "not a number from 0 to 10") from None
    level = result.get("level")
    if level is None:
        config = rule.get("defaultConfiguration")
        if isinstance(config, dict):
            level = config.get("level")
    if level is not None:
        level = _str(level, source, f"{where}.level")
        try:
            return Severity.from_sarif_level(level)
        except ValueError as exc:
            raise _fail(source, f"{where}: {exc}") from None
    problem = rule_props.get("problem.severity")
    if isinstance(problem, str) and problem in _PROBLEM_SEVERITIES:
        return _PROBLEM_SEVERITIES[problem]
    return Severity.MEDIUM  # SARIF's default level is "warning"


def _sarif_location(result: dict[str, Any], props: Mapping[str, Any], source: str,
                    where: str) -> tuple[str, str | None]:
    location = ""
    locations = _list(result.get("locations", []), source, f"{where}.locations")
    if locations:
        first = _obj(locations[0], source, f"{where}.locations[0]")
        physical = first.get("physicalLocation")
        if physical is not None:
            physical = _obj(physical, source, f"{where}.locations[0].physicalLocation")
            artifact = physical.get("artifactLocation")
            if artifact is not None:
                artifact = _obj(artifact, source, f"{where}...artifactLocation")
                location = _opt_str(artifact.get("uri"), source,
                                    f"{where}...artifactLocation.uri") or ""
            region = physical.get("region")
            if region is not None and location and not _is_url(location):
                region = _obj(region, source, f"{where}...region")
                line = region.get("startLine")
                if line is not None:
                    location += f":{_count(line, source, f'{where}...region.startLine')}"
    web = result.get("webRequest")
    if not location and isinstance(web, dict) and isinstance(web.get("target"), str):
        location = web["target"]
    if not location:
        for key in ("url", "uri"):
            if isinstance(props.get(key), str):
                location = props[key]
                break
    parameter = None
    for key in ("parameter", "param"):
        value = props.get(key)
        if value is not None:
            parameter = _str(value, source, f"{where}.properties.{key}") or None
            break
    return location, parameter


def _sarif_suppression(result: dict[str, Any], source: str, where: str) -> str | None:
    suppressions = _list(result.get("suppressions", []), source, f"{where}.suppressions")
    if not suppressions:
        return None
    reasons = []
    for s, value in enumerate(suppressions):
        entry = _obj(value, source, f"{where}.suppressions[{s}]")
        status = _opt_str(entry.get("status"), source, f"{where}.suppressions[{s}].status")
        if status in ("underReview", "rejected"):
            return None
        if status not in (None, "accepted"):
            raise _fail(source, f"{where}.suppressions[{s}].status {status!r:.40} is not "
                                "accepted, underReview or rejected")
        kind = _opt_str(entry.get("kind"), source, f"{where}.suppressions[{s}].kind") or "external"
        why = _opt_str(entry.get("justification"), source,
                       f"{where}.suppressions[{s}].justification")
        reasons.append(f"{kind} suppression" + (f": {why}" if why else ""))
    return "; ".join(reasons)


# --------------------------------------------------------------------------- JUnit


def parse_junit(data: bytes, *, source: str = "<junit>") -> Report:
    """Read a JUnit XML report (``<testsuites>`` or a single ``<testsuite>``).

    The XML is parsed by ``defusedxml`` with DTDs, entities and external
    references forbidden, so a "billion laughs" bomb or an XXE probe is
    refused rather than expanded. Counts are taken from the ``<testcase>``
    elements; when the root element states larger ``tests``, ``failures``,
    ``errors`` or ``skipped`` totals, the larger number is kept (a report never
    counts fewer failures than it states). Every failed or errored test case
    is also a finding: its rule is ``classname.name``, its severity the
    ``type`` attribute when that names a severity, otherwise high.
    """
    _check_size(data, source)
    try:
        root = DET.fromstring(bytes(data), forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
    except defusedxml.DTDForbidden:
        raise _fail(source, "JUnit XML must not contain a DTD (entities are refused)") from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden,
            defusedxml.NotSupportedError) as exc:
        raise _fail(source, f"JUnit XML refused: {exc}") from None
    except ET.ParseError as exc:
        raise _fail(source, f"not well-formed XML: {exc}") from None
    except (ValueError, LookupError) as exc:  # bad characters, unknown encoding
        raise _fail(source, f"not well-formed XML: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise _fail(source, f"not a JUnit report: root element is <{root.tag:.60}>, "
                            "not <testsuites> or <testsuite>")
    _check_xml_shape(root, source)

    tests = failures = errors = skipped = 0
    findings: list[Finding] = []
    tool = root.get("name") or "junit"
    for case in root.iter("testcase"):
        tests += 1
        name = case.get("name") or ""
        classname = case.get("classname") or ""
        rule = f"{classname}.{name}" if classname and name else (classname or name or "testcase")
        outcome = None
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child
                break
            if child.tag == "skipped" and outcome is None:
                outcome = child
        if outcome is None:
            continue
        if outcome.tag == "skipped":
            skipped += 1
            continue
        if outcome.tag == "failure":
            failures += 1
        else:
            errors += 1
        text = (outcome.text or "").strip()
        message = outcome.get("message") or text.split("\n", 1)[0] or f"test {outcome.tag}"
        try:
            severity = Severity.parse(outcome.get("type") or "")
        except ValueError:
            severity = Severity.HIGH
        cwes = [int(m) for m in _CWE_IN_TEXT.findall(f"{message}\n{text[:65536]}")]
        file_name = case.get("file") or ""
        line = case.get("line") or ""
        location = f"{file_name}:{line}" if file_name and line.isascii() and line.isdigit() else (
            file_name or classname)
        findings.append(Finding(rule_id=rule, message=message, severity=severity,
                                cwe=_sorted_unique(cwes), location=location, parameter=None,
                                fingerprint=fingerprint_of(rule, location, None)))
    _bound_findings(tests, source)
    stated = {}
    for attr in ("tests", "failures", "errors", "skipped"):
        value = root.get(attr)
        if value is not None:
            if not (value.strip().isascii() and value.strip().isdigit()) or len(value) > 18:
                raise _fail(source, f"<{root.tag}> attribute {attr}={value!r:.40} "
                                    "is not a non-negative integer")
            stated[attr] = int(value.strip())
    return Report(tool=tool, tool_version=None, format="junit", findings=tuple(findings),
                  tests_run=max(tests, stated.get("tests", 0)),
                  failures=max(failures, stated.get("failures", 0)),
                  errors=max(errors, stated.get("errors", 0)),
                  skipped=max(skipped, stated.get("skipped", 0)))


def _check_xml_shape(root: ET.Element, source: str) -> None:
    count = 0
    stack: list[tuple[ET.Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if count > MAX_XML_ELEMENTS:
            raise _fail(source, f"JUnit XML has more than {MAX_XML_ELEMENTS} elements")
        if depth > MAX_DEPTH:
            raise _fail(source, f"JUnit XML nests deeper than {MAX_DEPTH} elements")
        stack.extend((child, depth + 1) for child in element)


# --------------------------------------------------------------------------- JSON


def parse_json_report(data: bytes, *, source: str = "<json report>") -> Report:
    """Read a countersign JSON report, an OWASP ZAP JSON report or a Wapiti JSON report.

    They are told apart by their top-level keys: ``tool`` + ``findings``
    is the countersign shape (``docs/reports.md``), ``site`` (with
    ``@version``) is ZAP's, ``vulnerabilities`` + ``infos`` is Wapiti's
    (``wapiti -f json``). Anything else is refused.
    """
    document = _obj(load_json(data, source, "JSON report"), source, "the JSON report")
    if "site" in document and "tool" not in document:
        return _parse_zap(document, source)
    if "tool" in document and "findings" in document:
        return _parse_countersign(document, source)
    if "vulnerabilities" in document and "infos" in document:
        return _parse_wapiti(document, source)
    raise _fail(source, "not a countersign JSON report (needs \"tool\" and \"findings\"), "
                        "a ZAP JSON report (needs \"site\") nor a Wapiti JSON report (needs "
                        "\"vulnerabilities\" and \"infos\")")


_CS_TOP = {"tool", "findings", "tests"}
_CS_FINDING = {"rule", "severity", "message", "cwe", "url", "parameter", "location", "fingerprint"}
_CS_TESTS = {"run", "failures", "errors", "skipped"}


def _parse_countersign(document: dict[str, Any], source: str) -> Report:
    extra = sorted(set(document) - _CS_TOP)
    if extra:
        raise _fail(source, f"unknown top-level keys {extra}")
    tool = _obj(document["tool"], source, "tool")
    unknown = sorted(set(tool) - {"name", "version"})
    if unknown:
        raise _fail(source, f"unknown keys in tool: {unknown}")
    name = _str(tool.get("name"), source, "tool.name")
    if not name:
        raise _fail(source, "tool.name is empty")
    version = _opt_str(tool.get("version"), source, "tool.version")
    items = _list(document["findings"], source, "findings")
    _bound_findings(len(items), source)
    findings = []
    for i, item_value in enumerate(items):
        where = f"findings[{i}]"
        item = _obj(item_value, source, where)
        unknown = sorted(set(item) - _CS_FINDING)
        if unknown:
            raise _fail(source, f"unknown keys in {where}: {unknown}")
        rule = _str(item.get("rule"), source, f"{where}.rule")
        if not rule:
            raise _fail(source, f"{where}.rule is empty")
        severity_value = item.get("severity")
        try:
            if isinstance(severity_value, str):
                severity = Severity.parse(severity_value)
            elif isinstance(severity_value, int | float) and not isinstance(severity_value, bool):
                severity = Severity.from_score(float(severity_value))
            else:
                raise ValueError(f"severity must be a name or a score, not {_kind(severity_value)}")
        except OverflowError:
            raise _fail(source, f"{where}: severity score is not a number from 0 to 10") from None
        except ValueError as exc:
            raise _fail(source, f"{where}: {exc}") from None
        message = _opt_str(item.get("message"), source, f"{where}.message") or ""
        cwes = _json_cwes(item.get("cwe"), source, f"{where}.cwe")
        url = _opt_str(item.get("url"), source, f"{where}.url")
        path = _opt_str(item.get("location"), source, f"{where}.location")
        if url is not None and path is not None:
            raise _fail(source, f"{where} gives both url and location; give url for a web "
                                "finding or location for a code finding")
        location = url if url is not None else (path or "")
        parameter = _opt_str(item.get("parameter"), source, f"{where}.parameter") or None
        fingerprint = _opt_str(item.get("fingerprint"), source, f"{where}.fingerprint")
        if not fingerprint:
            fingerprint = fingerprint_of(rule, location, parameter)
        findings.append(Finding(rule_id=rule, message=message, severity=severity, cwe=cwes,
                                location=location, parameter=parameter, fingerprint=fingerprint))
    counts = {"run": 0, "failures": 0, "errors": 0, "skipped": 0}
    if "tests" in document:
        tests = _obj(document["tests"], source, "tests")
        unknown = sorted(set(tests) - _CS_TESTS)
        if unknown:
            raise _fail(source, f"unknown keys in tests: {unknown}")
        for key in _CS_TESTS:
            if key in tests:
                counts[key] = _count(tests[key], source, f"tests.{key}")
    return Report(tool=name, tool_version=version, format="countersign-json",
                  findings=tuple(findings), tests_run=counts["run"], failures=counts["failures"],
                  errors=counts["errors"], skipped=counts["skipped"])


def _json_cwes(value: Any, source: str, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    cwes = []
    for item in values:
        if isinstance(item, int) and not isinstance(item, bool) and 0 < item < 10**6:
            cwes.append(item)
        elif isinstance(item, str) and _CWE_TAG.fullmatch(item.strip()):
            cwes.extend(_cwes_from_tags([item]))
        else:
            raise _fail(source, f"{where} must be CWE numbers or \"CWE-n\" strings, "
                                f"not {item!r:.40}")
    return _sorted_unique(cwes)


_ZAP_RISKS = {"0": Severity.INFO, "1": Severity.LOW, "2": Severity.MEDIUM, "3": Severity.HIGH}


def _zap_text(value: Any, source: str, where: str) -> str:
    # ZAP writes numbers as strings, but accept plain integers too.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _str(value, source, where)


def _parse_zap(document: dict[str, Any], source: str) -> Report:
    version = _opt_str(document.get("@version"), source, "@version")
    if version is None:
        raise _fail(source, "not a ZAP JSON report: no \"@version\"")
    sites = _list(document["site"], source, "site")
    findings: list[Finding] = []
    for s, site_value in enumerate(sites):
        site = _obj(site_value, source, f"site[{s}]")
        site_name = _opt_str(site.get("@name"), source, f"site[{s}].@name") or ""
        alerts = _list(site.get("alerts", []), source, f"site[{s}].alerts")
        for a, alert_value in enumerate(alerts):
            where = f"site[{s}].alerts[{a}]"
            alert = _obj(alert_value, source, where)
            risk = _zap_text(alert.get("riskcode"), source, f"{where}.riskcode")
            if risk not in _ZAP_RISKS:
                raise _fail(source, f"{where}.riskcode {risk!r:.20} is not 0, 1, 2 or 3")
            plugin = _zap_text(alert.get("pluginid"), source, f"{where}.pluginid")
            ref = alert.get("alertRef")
            rule = _zap_text(ref, source, f"{where}.alertRef") if ref is not None else plugin
            title = _opt_str(alert.get("alert", alert.get("name")), source, f"{where}.alert")
            cwe_text = _zap_text(alert.get("cweid", "-1"), source, f"{where}.cweid").strip()
            if not re.fullmatch(r"-?\d{1,6}", cwe_text):
                raise _fail(source, f"{where}.cweid {cwe_text!r:.20} is not a number")
            cwes = (int(cwe_text),) if int(cwe_text) > 0 else ()
            confidence = alert.get("confidence")
            suppressed = ("ZAP confidence \"False Positive\"" if confidence in ("0", 0) else None)
            instances = _list(alert.get("instances", []), source, f"{where}.instances")
            places: list[tuple[str, str | None, str]] = []
            for n, inst_value in enumerate(instances):
                inst = _obj(inst_value, source, f"{where}.instances[{n}]")
                uri = _str(inst.get("uri"), source, f"{where}.instances[{n}].uri")
                param = _opt_str(inst.get("param"), source, f"{where}.instances[{n}].param")
                method = _opt_str(inst.get("method"), source, f"{where}.instances[{n}].method")
                places.append((uri, param or None, method or ""))
            if not places:
                places.append((site_name, None, ""))
            _bound_findings(len(findings) + len(places), source)
            for uri, param, method in places:
                findings.append(Finding(
                    rule_id=rule, message=title or f"ZAP alert {rule}",
                    severity=_ZAP_RISKS[risk], cwe=cwes, location=uri, parameter=param,
                    fingerprint=fingerprint_of(f"{rule} {method}".strip(), uri, param),
                    tool_suppression=suppressed))
    return Report(tool="ZAP", tool_version=version, format="zap-json", findings=tuple(findings))


# --------------------------------------------------------------------------- Wapiti

# Wapiti 3.0.4 and later rate each finding with a level from 0 to 4
# (``wapitiCore.language.vulnerability``: INFO_LEVEL "0" ... CRITICAL_LEVEL "4").
_WAPITI_LEVELS = {0: Severity.INFO, 1: Severity.LOW, 2: Severity.MEDIUM, 3: Severity.HIGH,
                  4: Severity.CRITICAL}
_WAPITI_SECTIONS = ("vulnerabilities", "anomalies", "additionals")
_WAPITI_VERSION = re.compile(r"(?:wapiti[ -]?)?(\d{1,4})\.(\d{1,4})\.(\d{1,4})\S*",
                             re.IGNORECASE)
_WAPITI_FIRST = (3, 0, 4)


def _wapiti_level(value: Any, source: str, where: str) -> Severity:
    # 3.0.4 writes integers; its level constants are strings, so accept "0"-"4" too
    if isinstance(value, str) and value.strip() in ("0", "1", "2", "3", "4"):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in _WAPITI_LEVELS:
        raise _fail(source, f"{where}.level {value!r:.20} is not 0, 1, 2, 3 or 4")
    return _WAPITI_LEVELS[value]


def _parse_wapiti(document: dict[str, Any], source: str) -> Report:
    infos = _obj(document["infos"], source, "infos")
    version_text = _str(infos.get("version"), source, "infos.version")
    match = _WAPITI_VERSION.fullmatch(version_text.strip())
    if not match:
        raise _fail(source, f"not a Wapiti JSON report: infos.version {version_text!r:.40} "
                            "names no Wapiti version")
    version = tuple(int(part) for part in match.groups())
    if version < _WAPITI_FIRST:
        raise _fail(source, f"Wapiti {version_text.strip():.40} numbered its levels on another "
                            "scale; countersign reads the 0-4 levels of Wapiti 3.0.4 and later")
    target = _str(infos.get("target"), source, "infos.target")
    if not _is_url(target):
        raise _fail(source, f"infos.target {target!r:.60} is not an http(s) URL")
    parts = urlsplit(target)
    origin = f"{parts.scheme}://{parts.netloc}"
    classes = _obj(document.get("classifications", {}), source, "classifications")
    cwes_of: dict[str, tuple[int, ...]] = {}
    for name, value in classes.items():
        entry = _obj(value, source, f"classifications[{name!r:.40}]")
        refs = _obj(entry.get("ref") or {}, source, f"classifications[{name!r:.40}].ref")
        cwes_of[name] = _sorted_unique(
            int(m) for title in refs for m in _CWE_IN_TEXT.findall(str(title)))
    findings: list[Finding] = []
    for section in _WAPITI_SECTIONS:
        categories = _obj(document.get(section, {}), source, section)
        for category, items_value in categories.items():
            items = _list(items_value, source, f"{section}[{category!r:.40}]")
            _bound_findings(len(findings) + len(items), source)
            for i, item_value in enumerate(items):
                where = f"{section}[{category!r:.40}][{i}]"
                item = _obj(item_value, source, where)
                severity = _wapiti_level(item.get("level"), source, where)
                path = _opt_str(item.get("path"), source, f"{where}.path") or "/"
                location = path if _is_url(path) else origin + (
                    path if path.startswith("/") else "/" + path)
                parameter = _opt_str(item.get("parameter"), source, f"{where}.parameter") or None
                method = _opt_str(item.get("method"), source, f"{where}.method") or ""
                info = _opt_str(item.get("info"), source, f"{where}.info") or ""
                findings.append(Finding(
                    rule_id=category, message=info or category, severity=severity,
                    cwe=cwes_of.get(category, ()), location=location, parameter=parameter,
                    fingerprint=fingerprint_of(f"{category} {method} {info}".strip(), location,
                                               parameter)))
    return Report(tool="Wapiti", tool_version=".".join(map(str, version)), format="wapiti-json",
                  findings=tuple(findings))


# --------------------------------------------------------------------------- any


def parse_report(data: bytes, *, format: str | None = None, source: str = "<report>") -> Report:
    """Read a report of ``format`` (``sarif``, ``junit``, ``json``), or guess it.

    Guessing: XML (first non-blank byte ``<``) is JUnit; JSON with ``runs``
    is SARIF; other JSON goes to :func:`parse_json_report`.
    """
    if format == "sarif":
        return parse_sarif(data, source=source)
    if format == "junit":
        return parse_junit(data, source=source)
    if format in ("json", "countersign-json", "zap-json", "wapiti-json"):
        return parse_json_report(data, source=source)
    if format is not None:
        raise _fail(source, f"unknown report format {format!r} (expected sarif, junit or json)")
    _check_size(data, source)
    head = bytes(data[:4096]).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return parse_junit(data, source=source)
    document = load_json(data, source, "report")
    if isinstance(document, dict) and "runs" in document:
        return parse_sarif(data, source=source)
    return parse_json_report(data, source=source)
