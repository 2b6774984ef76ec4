"""The policy file of the security stages and delivery gate (countersign.assure.policy)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countersign.assure.policy import (
    MAX_POLICY_BYTES,
    Check,
    Policy,
    PolicyError,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
    severity_rank,
)
from countersign.errors import FormatError

EXAMPLE = """\
version: 1
trust:
  server: https://127.0.0.1:4443      # or COUNTERSIGN_SERVER
  tls_ca: ca.pem                      # or COUNTERSIGN_TLS_CA
stages:
  - name: static-tested
    role: targets/static-tested
    key: static-tested                # a key name in the trust dir, or a path to a key file
    check:
      command: ["bandit", "-r", "app", "-f", "sarif", "-o", "{report}"]
      format: sarif
    pass:
      max_severity: medium            # a finding above this fails the stage
      false_positives: fp.table       # url | parameter | cweid, as in the paper
  - name: dynamic-tested
    role: targets/dynamic-tested
    key: dynamic-tested
    check: {command: ["./dast.sh", "{image}", "{report}"], format: sarif}
    pass: {max_severity: medium}
  - name: fuzz-tested
    role: targets/fuzz-tested
    key: fuzz-tested
    check: {command: ["./fuzz.sh", "{report}"], format: junit}
    pass: {max_failures: 0}
deliver:
  require: [static-tested, dynamic-tested, fuzz-tested]   # or {at_least: 2, of: [...]}
  min_distinct_signers: 3
  max_age: 7d
"""

FULL = """\
version: 1
x-owner: security team
trust:
  server: https://notary.example.com:4443/
  tls_ca: /etc/ssl/notary-ca.pem
  pinning:
    certs:
      registry.example.com/app: ["%s"]
    ca:
      "registry.example.com/": pins/root-ca.pem
    disable_tofu: true
stages:
  - name: sast
    role: targets/sast
    key: keys/sast.pem
    x-note: run on every push
    check:
      command: ["semgrep", "--sarif", "--output={report}", "--config", "{{rules}}"]
      format: json
      timeout: 90m
      env: {SEMGREP_SEND_METRICS: "off", EMPTY: ""}
      cwd: src
    pass:
      max_severity: warning
      max_counts: {high: 0, medium: 5, note: 10}
      rules: {include: [python.lang.security], exclude: [B101, B101]}
      cwes: {include: [79, CWE-89, cwe-22], exclude: ["200"]}
      false_positives: fp.table
      vex: /srv/vex.json
    evidence: {attach_report: false, max_report_bytes: 1048576}
  - name: dast_1
    role: targets/qa/dast
    key: dast
    check: {command: ["./dast.sh", "{image}"], format: sarif}
deliver:
  require: {at_least: 1, of: [sast, dast_1], x-why: either will do}
  max_age: 2w
  max_evidence_age: 36000
""" % ("ab" * 32)

NO_TRUST = """\
version: 1
stages:
  - name: fuzz
    role: targets/fuzz
    key: fuzz
    check: {command: [./fuzz.sh], format: junit}
deliver: {require: [fuzz], max_age: 12h}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Policy:
    return load_policy(write(tmp_path, text), environ=environ or {})


def mutate(old: str, new: str, base: str = EXAMPLE) -> tuple[str, int]:
    """``base`` with its one ``old`` replaced by ``new``, and the line ``new`` starts on."""
    assert base.count(old) == 1, old
    return base.replace(old, new), base[: base.index(old)].count("\n") + 1


# --- the example ---------------------------------------------------------------------


def test_example_loads_with_every_value(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    policy = load_policy(path, environ={"COUNTERSIGN_SERVER": "https://ignored:1"})
    assert policy.version == 1
    assert policy.source == path.absolute()
    assert policy.trust.server == "https://127.0.0.1:4443"
    assert policy.trust.tls_ca == tmp_path / "ca.pem"
    assert policy.trust.pinning is None
    assert [s.name for s in policy.stages] == ["static-tested", "dynamic-tested", "fuzz-tested"]

    static, dynamic, fuzz = policy.stages
    assert static.role == "targets/static-tested"
    assert static.key == "static-tested"
    assert static.key_file is None
    assert static.check.command == ("bandit", "-r", "app", "-f", "sarif", "-o", "{report}")
    assert static.check.format == "sarif"
    assert static.check.timeout == dt.timedelta(hours=1)
    assert static.check.env == ()
    assert static.check.cwd is None
    assert not static.check.report_on_stdout
    assert static.passes.max_severity == "medium"
    assert static.passes.max_counts == ()
    assert static.passes.max_failures is None
    assert static.passes.rules_include == static.passes.rules_exclude == ()
    assert static.passes.cwes_include == static.passes.cwes_exclude == ()
    assert static.passes.false_positives == tmp_path / "fp.table"
    assert static.passes.vex is None
    assert static.evidence.attach_report is True
    assert static.evidence.max_report_bytes == 16 * 1024 * 1024

    assert dynamic.role == "targets/dynamic-tested"
    assert dynamic.key == "dynamic-tested"
    assert dynamic.check.command == ("./dast.sh", "{image}", "{report}")
    assert dynamic.check.format == "sarif"
    assert dynamic.passes.max_severity == "medium"
    assert dynamic.passes.false_positives is None
    assert dynamic.check.render(report="/tmp/r.sarif", image="app@sha256:00") == (
        "./dast.sh", "app@sha256:00", "/tmp/r.sarif")

    assert fuzz.role == "targets/fuzz-tested"
    assert fuzz.key == "fuzz-tested"
    assert fuzz.check.command == ("./fuzz.sh", "{report}")
    assert fuzz.check.format == "junit"
    assert fuzz.passes.max_failures == 0
    assert fuzz.passes.max_severity is None

    assert policy.deliver.require == ("static-tested", "dynamic-tested", "fuzz-tested")
    assert policy.deliver.at_least == 3
    assert policy.deliver.all_required
    assert policy.deliver.min_distinct_signers == 3
    assert policy.deliver.max_age == dt.timedelta(days=7)
    assert policy.deliver.max_evidence_age is None
    assert policy.stage("fuzz-tested") is fuzz
    assert hash(policy) == hash(load_policy(path, environ={}))
    with pytest.raises(KeyError):
        policy.stage("nope")


def test_full_policy(tmp_path: Path) -> None:
    policy = load_text(tmp_path, FULL)
    assert policy.trust.server == "https://notary.example.com:4443"
    assert policy.trust.tls_ca == Path("/etc/ssl/notary-ca.pem")
    pinning = policy.trust.pinning
    assert pinning is not None
    assert pinning.certs == (("registry.example.com/app", ("ab" * 32,)),)
    assert pinning.ca == (("registry.example.com/", tmp_path / "pins/root-ca.pem"),)
    assert pinning.disable_tofu is True
    sast, dast = policy.stages
    assert sast.key_file == tmp_path / "keys/sast.pem"
    assert sast.key == str(tmp_path / "keys/sast.pem")
    assert sast.check.format == "json"
    assert sast.check.timeout == dt.timedelta(minutes=90)
    assert sast.check.env == (("SEMGREP_SEND_METRICS", "off"), ("EMPTY", ""))
    assert sast.check.cwd == tmp_path / "src"
    assert sast.check.render(report="r.json", image="i") == (
        "semgrep", "--sarif", "--output=r.json", "--config", "{rules}")
    assert sast.passes.max_severity == "medium"  # SARIF warning
    assert sast.passes.max_counts == (("low", 10), ("medium", 5), ("high", 0))
    assert sast.passes.rules_include == ("python.lang.security",)
    assert sast.passes.rules_exclude == ("B101",)
    assert sast.passes.cwes_include == (79, 89, 22)
    assert sast.passes.cwes_exclude == (200,)
    assert sast.passes.false_positives == tmp_path / "fp.table"
    assert sast.passes.vex == Path("/srv/vex.json")
    assert sast.evidence.attach_report is False
    assert sast.evidence.max_report_bytes == 1048576
    assert dast.role == "targets/qa/dast"
    assert dast.check.report_on_stdout
    assert dast.passes.max_severity is None and dast.passes.max_counts == ()
    assert policy.deliver.require == ("sast", "dast_1")
    assert policy.deliver.at_least == 1
    assert not policy.deliver.all_required
    assert policy.deliver.min_distinct_signers == 1
    assert policy.deliver.max_age == dt.timedelta(weeks=2)
    assert policy.deliver.max_evidence_age == dt.timedelta(hours=10)


def test_environment_fallbacks(tmp_path: Path) -> None:
    environ = {"COUNTERSIGN_SERVER": "https://notary.test:4443",
               "COUNTERSIGN_TLS_CA": "/etc/notary/ca.pem"}
    policy = load_text(tmp_path, NO_TRUST, environ)
    assert policy.trust.server == "https://notary.test:4443"
    assert policy.trust.tls_ca == Path("/etc/notary/ca.pem")
    # a fuzz stage without `pass` allows no failures
    assert policy.stages[0].passes.max_failures == 0
    # the file wins over the environment
    assert load_text(tmp_path, EXAMPLE, environ).trust.server == "https://127.0.0.1:4443"


def test_server_missing_everywhere(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(tmp_path, NO_TRUST, {})
    assert "trust.server: missing" in str(info.value)
    assert "COUNTERSIGN_SERVER" in str(info.value)
    with pytest.raises(PolicyError, match=r"COUNTERSIGN_SERVER.*not an https:// URL"):
        load_text(tmp_path, NO_TRUST, {"COUNTERSIGN_SERVER": "ftp://x"})


def test_policy_error_is_a_format_error(tmp_path: Path) -> None:
    text, line = mutate("max_severity: medium  ", "max_severity: hgh  ")
    path = write(tmp_path, text)
    with pytest.raises(FormatError) as info:
        load_policy(path, environ={})
    error = info.value
    assert isinstance(error, PolicyError)
    assert str(error).startswith(
        f"{path}:{line}: stages[0].pass.max_severity: "
        "'hgh' is not one of info, low, medium, high, critical")
    assert (error.line, error.column) == (line, 21)
    assert error.field_path == "stages[0].pass.max_severity"
    assert error.file == str(path)


# --- each validation error names its line and field ---------------------------------

ERRORS: list[tuple[str, str, str, str]] = [
    # (old, new, field path, message part)
    ("version: 1", "version: 2", "version", "2 is not a supported version"),
    ("version: 1", "version: '1'", "version", "not a supported version"),
    ("version: 1", "version: true", "version", "not a supported version"),
    ("name: dynamic-tested", "name: static-tested", "stages[1].name",
     "'static-tested' is already the name of stages[0]"),
    ("name: fuzz-tested", "name: Fuzz", "stages[2].name", "'Fuzz' is not a stage name"),
    ("name: fuzz-tested", "name: -fuzz", "stages[2].name", "is not a stage name"),
    ("name: fuzz-tested", "name: 7", "stages[2].name", "expected a string, got an integer"),
    ("role: targets/fuzz-tested", "role: targets/static-tested", "stages[2].role",
     "'targets/static-tested' is already the role of stages[0]"),
    ("role: targets/fuzz-tested", "role: releases/fuzz", "stages[2].role",
     "is not a delegation role name"),
    ("role: targets/fuzz-tested", "role: targets/../x", "stages[2].role",
     "is not a delegation role name"),
    ("role: targets/fuzz-tested", "role: targets/Fuzz", "stages[2].role",
     "is not a delegation role name"),
    ("key: fuzz-tested", "key: 'fuzz tested'", "stages[2].key",
     "neither a key name"),
    ('"-o", "{report}"', '"-o", "{reprt}"', "stages[0].check.command[6]",
     "unknown placeholder {reprt} (known: {report}, {image})"),
    ('"./dast.sh", "{image}"', '"./dast.sh", "{image}}"', "stages[1].check.command[1]",
     "unmatched brace"),
    ('"./dast.sh", "{image}"', '"./dast.sh", "{0}"', "stages[1].check.command[1]",
     "unknown placeholder {0}"),
    ('["./fuzz.sh", "{report}"]', "[]", "stages[2].check.command",
     "expected at least 1 item"),
    ('["./fuzz.sh", "{report}"]', '["./fuzz.sh", 3]', "stages[2].check.command[1]",
     "expected a string, got an integer"),
    ('["./fuzz.sh", "{report}"]', '"./fuzz.sh {report}"', "stages[2].check.command",
     "expected a list, got a string"),
    ('["./fuzz.sh", "{report}"]', '["", "{report}"]', "stages[2].check.command[0]",
     "must not be empty"),
    ("format: junit", "format: xml", "stages[2].check.format",
     "'xml' is not one of sarif, junit, json"),
    ("{max_failures: 0}", "{max_severity: high}", "stages[2].pass.max_severity",
     "does not apply to a junit report"),
    ("{max_severity: medium}", "{max_failures: 1}", "stages[1].pass.max_failures",
     "applies to junit reports only"),
    ("{max_severity: medium}", "{max_severity: HIGH}", "stages[1].pass.max_severity",
     "'HIGH' is not one of info, low, medium, high, critical"),
    ("{max_severity: medium}", "{max_counts: {severe: 1}}",
     "stages[1].pass.max_counts.severe", "'severe' is not one of"),
    ("{max_severity: medium}", "{max_counts: {high: -1}}",
     "stages[1].pass.max_counts.high", "-1 is not between 0"),
    ("{max_severity: medium}", "{max_counts: {error: 1, high: 2}}",
     "stages[1].pass.max_counts.high", "severity high given twice"),
    ("{max_severity: medium}", "{cwes: {include: [CWE-abc]}}",
     "stages[1].pass.cwes.include[0]", "is not a CWE"),
    ("{max_failures: 0}", "{max_failures: 0.5}", "stages[2].pass.max_failures",
     "expected an integer, got a number"),
    ("max_age: 7d", "max_age: 7x", "deliver.max_age", "'7x' is not a duration"),
    ("max_age: 7d", "max_age: 0d", "deliver.max_age", "is not a duration"),
    ("max_age: 7d", "max_age: 7 d", "deliver.max_age", "is not a duration"),
    ("max_age: 7d", "max_age: 9999w", "deliver.max_age", "longer than 3650d"),
    ("max_age: 7d", "max_age: 0", "deliver.max_age", "0 is not between 1"),
    ("max_age: 7d", "max_age: [7d]", "deliver.max_age", "got a list"),
    ("max_age: 7d", "max_ages: 7d", "deliver.max_ages", "unknown field 'max_ages'"),
    ("[static-tested, dynamic-tested, fuzz-tested]", "[static-tested, pentested]",
     "deliver.require[1]", "'pentested' is not a stage"),
    ("[static-tested, dynamic-tested, fuzz-tested]", "[fuzz-tested, fuzz-tested]",
     "deliver.require[1]", "listed twice"),
    ("[static-tested, dynamic-tested, fuzz-tested]", "[]", "deliver.require",
     "expected at least 1 item"),
    ("[static-tested, dynamic-tested, fuzz-tested]",
     "{at_least: 0, of: [static-tested, fuzz-tested]}", "deliver.require.at_least",
     "0 is not between 1 and 2"),
    ("[static-tested, dynamic-tested, fuzz-tested]",
     "{at_least: 3, of: [static-tested, fuzz-tested]}", "deliver.require.at_least",
     "3 is not between 1 and 2"),
    ("[static-tested, dynamic-tested, fuzz-tested]",
     "{at_least: 2, of: [static-tested, fuzz]}", "deliver.require.of[1]",
     "'fuzz' is not a stage"),
    ("[static-tested, dynamic-tested, fuzz-tested]",
     "{at_least: 2, ofs: [static-tested]}", "deliver.require.ofs",
     "unknown field 'ofs'"),
    ("[static-tested, dynamic-tested, fuzz-tested]",
     "{at_least: 2, off: [static-tested]}", "deliver.require",
     "field names must be strings, got a boolean"),
    ("min_distinct_signers: 3", "min_distinct_signers: 0", "deliver.min_distinct_signers",
     "0 is not between 1"),
    ("min_distinct_signers: 3", "min_distinct_signers: 4", "deliver.min_distinct_signers",
     "4 can never be met"),
    ("server: https://127.0.0.1:4443", "server: http://127.0.0.1:4443", "trust.server",
     "is not an https:// URL"),
    ("server: https://127.0.0.1:4443", "server: https://127.0.0.1:99999", "trust.server",
     "is not a URL"),
    ("server: https://127.0.0.1:4443", "server: https://u:p@127.0.0.1", "trust.server",
     "must not carry credentials"),
    ("tls_ca: ca.pem", "tls_ca: ''", "trust.tls_ca", "must not be empty"),
    ("tls_ca: ca.pem", "tls_cert: ca.pem", "trust.tls_cert",
     "unknown field 'tls_cert' (known fields: server, tls_ca, pinning"),
    ("    pass: {max_failures: 0}", "    passes: {max_failures: 0}", "stages[2].passes",
     "unknown field 'passes' (known fields: name, role, key, check, pass, evidence"),
    ("format: junit}", "format: junit, timeout: soon}", "stages[2].check.timeout",
     "'soon' is not a duration"),
    ("format: junit}", "format: junit, env: {1X: y}}", "stages[2].check.env.1X",
     "not an environment variable name"),
    ("format: junit}", "format: junit, env: {X: 1}}", "stages[2].check.env.X",
     "expected a string, got an integer"),
]


@pytest.mark.parametrize(("old", "new", "where", "message"), ERRORS,
                         ids=[f"{e[2]}:{e[1][:30]}" for e in ERRORS])
def test_validation_errors(tmp_path: Path, old: str, new: str, where: str,
                           message: str) -> None:
    text, line = mutate(old, new)
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, environ={})
    error = info.value
    assert str(error).startswith(f"{path}:{error.line}: {where}: ")
    assert message in str(error)
    assert error.line == line


def test_missing_fields_name_the_mapping(tmp_path: Path) -> None:
    text, _ = mutate("    key: dynamic-tested\n", "")
    with pytest.raises(PolicyError, match=r":15: stages\[1\]: missing required field 'key'"):
        load_text(tmp_path, text)
    text, _ = mutate("version: 1\n", "")
    with pytest.raises(PolicyError, match=r":1: missing required field 'version'"):
        load_text(tmp_path, text)
    text, _ = mutate("  max_age: 7d\n", "")
    with pytest.raises(PolicyError, match=r":26: deliver: missing required field 'max_age'"):
        load_text(tmp_path, text)


def test_unknown_top_level_field_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(tmp_path, EXAMPLE + "delivery: {}\n")
    assert str(info.value).endswith(
        ":29: delivery: unknown field 'delivery' (known fields: version, trust, stages, "
        "deliver; extensions must start with 'x-')")


def test_extension_fields_are_ignored(tmp_path: Path) -> None:
    text = EXAMPLE.replace("version: 1\n", "version: 1\nx-anything: {a: [1, 2]}\n")
    text = text.replace("    key: fuzz-tested\n", "    key: fuzz-tested\n    x-k: v\n")
    assert load_text(tmp_path, text) == load_text(tmp_path, EXAMPLE)


def test_relative_paths_resolve_against_the_policy_directory(tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    text, _ = mutate("key: static-tested ", "key: ../keys/static.pem ")
    write(sub, text)
    monkeypatch.chdir(tmp_path)
    policy = load_policy(Path("conf/policy.yaml"), environ={})
    assert policy.trust.tls_ca == sub / "ca.pem"
    assert policy.stages[0].key_file == sub / "../keys/static.pem"
    assert policy.stages[0].passes.false_positives == sub / "fp.table"
    assert policy.source == sub / "policy.yaml"


def test_sarif_levels_map_to_severities(tmp_path: Path) -> None:
    for level, severity in (("none", "info"), ("note", "low"), ("warning", "medium"),
                            ("error", "high"), ("critical", "critical")):
        text, _ = mutate("{max_severity: medium}", f"{{max_severity: {level}}}")
        assert load_text(tmp_path, text).stages[1].passes.max_severity == severity
    assert [severity_rank(s) for s in ("info", "note", "medium", "error", "critical")] == [
        0, 1, 2, 3, 4]


def test_durations() -> None:
    assert parse_duration("90m") == dt.timedelta(minutes=90)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("2w") == dt.timedelta(weeks=2)
    assert parse_duration("45s") == dt.timedelta(seconds=45)
    for bad in ("", "7", "d", "07d", "1.5h", "-1d", "1 d", "1D", "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for delta in (dt.timedelta(minutes=90), dt.timedelta(days=7), dt.timedelta(seconds=61)):
        assert parse_duration(format_duration(delta)) == delta
    assert format_duration(dt.timedelta(days=14)) == "2w"


def test_check_render_escapes() -> None:
    check = Check(command=("x", "{{", "}}", "{report}{image}", "a{{report}}"), format="json")
    assert check.render(report="R", image="I") == ("x", "{", "}", "RI", "a{report}")
    assert check.report_on_stdout is False


# --- hostile and malformed input -------------------------------------------------------

BILLION_LAUGHS = """\
version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.mark.parametrize(("text", "line", "message"), [
    (BILLION_LAUGHS, 2, "YAML anchors (&name) are not allowed"),
    ("version: 1\nstages: *x\n", 2, "YAML aliases (*name) are not allowed"),
    (EXAMPLE.replace("min_distinct_signers: 3", "min_distinct_signers: &n 3"), 27,
     "YAML anchors"),
    ("version: 1\n<<: {a: 1}\n", 2, "field names must be strings"),
    ("version: !!python/object/apply:os.system ['true']\n", 1, "YAML tags"),
    ("version: !custom 1\n", 1, "YAML tags"),
    ("- 1\n- 2\n", 1, "a policy must be a mapping, got a list"),
    ("just text\n", 1, "a policy must be a mapping, got a string"),
    ("42\n", 1, "a policy must be a mapping, got an integer"),
    ("", 1, "the policy is empty"),
    ("# only a comment\n", 1, "the policy is empty"),
    ("---\n...\n", 2, "a policy must be a mapping, got null"),
    ("version: 1\n---\nversion: 1\n", 2, "not valid YAML"),
    ("version: 1\nstages:\n\t- a\n", 3, "tab character"),
    ("version:\t1\n", 1, "tab character"),
    ("version: 1\nversion: 1\n", 2, "version: duplicate field (first given on line 1)"),
    (EXAMPLE.replace("    pass: {max_failures: 0}", "    pass: {max_failures: 0, max_failures: 1}"),
     24, "stages[2].pass.max_failures: duplicate field (first given on line 24)"),
    (EXAMPLE.replace("      format: sarif\n", "      format: sarif\n      format: json\n", 1),
     12, "stages[0].check.format: duplicate field (first given on line 11)"),
    (EXAMPLE.replace("{max_severity: medium}", "{max_counts: {high: 0, error: 1}}"), 19,
     "severity high given twice"),
    ("version: 1\nstages: [" + "[" * 100 + "]" * 100 + "]\n", 2, "nested deeper than"),
    ("version: 1\nstages: [\n", 3, "not valid YAML"),
    ("version: 1\n  stages: []\n", 2, "not valid YAML"),
    ("version: 1\nx: \x07\n", 2, "not valid YAML"),
    ("\x1f", 1, "not valid YAML"),
    ("{1: a}\n", 1, "field names must be strings, got an integer"),
    ("? [a]\n: b\n", 1, "field names must be strings, got a list"),
])
def test_hostile_or_malformed(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(tmp_path, text)
    assert message in str(info.value)
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'policy.yaml'}:{line}: ")


def test_too_many_nodes(tmp_path: Path) -> None:
    text = "version: 1\nx-big: [" + "1," * 30_000 + "1]\n"
    with pytest.raises(PolicyError, match="more than 20000 YAML nodes"):
        load_text(tmp_path, text)


def test_huge_file_refused_before_parsing(tmp_path: Path) -> None:
    huge = EXAMPLE + "#" * (MAX_POLICY_BYTES + 1) + "\n"
    with pytest.raises(PolicyError, match="too large for a policy"):
        load_text(tmp_path, huge)
    with pytest.raises(PolicyError, match="more than a policy may have"):
        parse_policy(huge, environ={})
    with pytest.raises(PolicyError, match="more than a policy may have"):
        parse_policy(huge.encode(), environ={})
    # just under the bound is fine
    fits = EXAMPLE + "#" * (MAX_POLICY_BYTES - len(EXAMPLE) - 2) + "\n"
    assert len(fits) <= MAX_POLICY_BYTES
    assert load_text(tmp_path, fits).version == 1


def test_not_utf8_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"policy.yaml:2: not UTF-8 text"):
        load_policy(write(tmp_path, b"version: 1\nx-a: \xff\xfe\n"), environ={})
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path / "absent.yaml", environ={})
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path, environ={})
    # a UTF-8 byte order mark is accepted
    assert load_policy(write(tmp_path, b"\xef\xbb\xbf" + EXAMPLE.encode()), environ={})


def test_parse_policy_display_name(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 3\n", "policy.yaml", environ={})
    assert str(info.value) == "policy.yaml:1: version: 3 is not a supported version (only 1)"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_arbitrary_text_is_a_policy_or_a_policy_error(text: str) -> None:
    try:
        result = parse_policy(text, "fuzz.yaml", environ={})
    except PolicyError as exc:
        assert exc.message.startswith("fuzz.yaml")
    else:
        assert isinstance(result, Policy)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(EXAMPLE)), st.integers(0, 8),
       st.text(alphabet=" \n-:[]{}&*!#'\"|>%@`,?0123456789abcdefx", max_size=8))
def test_mangled_example_is_a_policy_or_a_policy_error(start: int, cut: int,
                                                       insert: str) -> None:
    text = EXAMPLE[:start] + insert + EXAMPLE[start + cut:]
    try:
        result = parse_policy(text, "fuzz.yaml",
                              environ={"COUNTERSIGN_SERVER": "https://fallback"})
    except PolicyError as exc:
        assert exc.message.startswith("fuzz.yaml")
    else:
        assert isinstance(result, Policy)


# --- the JSON Schema agrees with the loader ---------------------------------------------

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "policy.schema.json"

VALID = {
    "example": EXAMPLE,
    "full": FULL,
    "no-trust": NO_TRUST,
    "sarif-level": EXAMPLE.replace("{max_severity: medium}", "{max_severity: warning}"),
    "at-least": EXAMPLE.replace("[static-tested, dynamic-tested, fuzz-tested]",
                                "{at_least: 2, of: [static-tested, dynamic-tested]}").replace(
        "min_distinct_signers: 3", "min_distinct_signers: 2"),
    "extensions": EXAMPLE.replace("version: 1\n", "version: 1\nx-a: 1\n"),
}

INVALID = {
    "version": EXAMPLE.replace("version: 1", "version: 2"),
    "unknown-field": EXAMPLE + "extra: 1\n",
    "stage-name": EXAMPLE.replace("name: fuzz-tested", "name: Fuzz"),
    "role": EXAMPLE.replace("role: targets/fuzz-tested", "role: fuzz"),
    "placeholder": EXAMPLE.replace('"{report}"]', '"{out}"]'),
    "empty-command": EXAMPLE.replace('["./fuzz.sh", "{report}"]', "[]"),
    "command-not-strings": EXAMPLE.replace('["./fuzz.sh", "{report}"]', "[1]"),
    "format": EXAMPLE.replace("format: junit", "format: xml"),
    "severity": EXAMPLE.replace("{max_severity: medium}", "{max_severity: hgh}"),
    "duration": EXAMPLE.replace("max_age: 7d", "max_age: 7days"),
    "signers": EXAMPLE.replace("min_distinct_signers: 3", "min_distinct_signers: 0"),
    "at-least-zero": EXAMPLE.replace("[static-tested, dynamic-tested, fuzz-tested]",
                                     "{at_least: 0, of: [static-tested]}"),
    "http-server": EXAMPLE.replace("https://127.0.0.1", "http://127.0.0.1"),
    "no-stages": EXAMPLE.split("stages:", 1)[0]
    + "stages: []\ndeliver: {require: [a], max_age: 1d}\n",
    "no-deliver": EXAMPLE.split("deliver:", 1)[0],
}


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_policies_validate_against_the_schema(tmp_path: Path, validator: Any,
                                                    name: str) -> None:
    text = VALID[name]
    policy = load_text(tmp_path, text, {"COUNTERSIGN_SERVER": "https://notary.test"})
    validator.validate(yaml.safe_load(text))
    # to_dict() is itself a valid policy, JSON is YAML, and it loads to the same policy
    data = policy.to_dict()
    validator.validate(data)
    again = load_text(tmp_path, json.dumps(data, indent=2), {})
    assert again == policy


@pytest.mark.parametrize("name", sorted(INVALID))
def test_schema_and_loader_agree_on_invalid_policies(tmp_path: Path, validator: Any,
                                                     name: str) -> None:
    text = INVALID[name]
    with pytest.raises(PolicyError):
        load_text(tmp_path, text)
    assert list(validator.iter_errors(yaml.safe_load(text))), name


def test_every_error_case_that_the_schema_can_see(tmp_path: Path, validator: Any) -> None:
    """The mutated examples of ERRORS the schema can judge alone are refused by it too."""
    whole_document_checks = ("already the", "not a stage", "listed twice", "not between 1 and",
                             "can never be met", "does not apply", "applies to junit",
                             "given twice", "longer than", "is not a URL", "./x",
                             "must not carry",
                             # YAML keys that are not strings cannot be JSON at all
                             "field names must be strings")
    for old, new, _where, message in ERRORS:
        text, _ = mutate(old, new)
        with pytest.raises(PolicyError):
            load_text(tmp_path, text)
        if any(part in message or part in new for part in whole_document_checks):
            continue
        assert list(validator.iter_errors(yaml.safe_load(text))), (old, new)


def test_pass_settings_become_the_criteria_evaluate_applies(tmp_path: Path) -> None:
    from countersign.assure.criteria import evaluate
    from countersign.assure.reports import Finding, Report, Severity

    source = tmp_path / "policy.yaml"
    source.write_text(EXAMPLE)
    stage = load_policy(source, environ={}).stage("static-tested")
    criteria = stage.passes.criteria()
    assert criteria.max_severity is Severity.MEDIUM

    def report(severity: Severity) -> Report:
        finding = Finding(rule_id="B101", message="m", severity=severity, cwe=(), location="a.py:1",
                          parameter=None, fingerprint="f")
        return Report(tool="bandit", tool_version="1", format="sarif", findings=(finding,),
                      tests_run=0, failures=0, errors=0, skipped=0)

    assert evaluate(report(Severity.MEDIUM), criteria).passed
    assert not evaluate(report(Severity.HIGH), criteria).passed
