"""The policy file: countersign's security stages and delivery gate (``docs/policy.md``).

A policy is a small YAML file. It is read with PyYAML's *safe* loader only, and
only as far as composing the node tree: the nodes are then walked here, so every
error names the file, the line, the field path and what was wrong, e.g.::

    policy.yaml:14: stages[1].pass.max_severity: 'hgh' is not one of info, low, medium, high,
    critical (or a SARIF level: none, note, warning, error)

Input is bounded: files over :data:`MAX_POLICY_BYTES` are refused before parsing,
YAML anchors and aliases are refused (no expansion bombs), and so are documents
with more than :data:`MAX_NODES` nodes or nesting deeper than :data:`MAX_DEPTH`,
duplicate keys, tab characters and explicit YAML tags.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast
from urllib.parse import urlsplit

import yaml

from countersign.assure import criteria as criteria_module
from countersign.assure import reports
from countersign.errors import FormatError
from countersign.tuf.metadata import is_delegation_name

__all__ = [
    "FORMATS",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_POLICY_BYTES",
    "PLACEHOLDERS",
    "SARIF_LEVELS",
    "SEVERITIES",
    "Check",
    "DeliveryRule",
    "EvidenceSettings",
    "PassSettings",
    "Policy",
    "PolicyError",
    "Stage",
    "TrustPinning",
    "TrustSettings",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "severity_rank",
]

MAX_POLICY_BYTES = 1024 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 32
MAX_STAGES = 64
MAX_DURATION = _dt.timedelta(days=3650)
DEFAULT_TIMEOUT = _dt.timedelta(hours=1)
DEFAULT_MAX_REPORT_BYTES = 16 * 1024 * 1024

SeverityName = Literal["info", "low", "medium", "high", "critical"]
ReportFormat = Literal["sarif", "junit", "json"]

SEVERITIES: tuple[SeverityName, ...] = ("info", "low", "medium", "high", "critical")
#: SARIF ``level`` values, accepted wherever a severity is, and what they mean.
SARIF_LEVELS: Mapping[str, SeverityName] = {
    "none": "info",
    "note": "low",
    "warning": "medium",
    "error": "high",
}
FORMATS: tuple[ReportFormat, ...] = ("sarif", "junit", "json")
#: The placeholders a check's command arguments may contain.
PLACEHOLDERS = ("report", "image")

ENV_SERVER = "COUNTERSIGN_SERVER"
ENV_TLS_CA = "COUNTERSIGN_TLS_CA"

_STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CERT_ID = re.compile(r"[0-9a-f]{64}")
_CWE = re.compile(r"(?:CWE-)?([1-9][0-9]{0,5})", re.IGNORECASE)
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhdw])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PLACEHOLDER_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"


class PolicyError(FormatError):
    """A policy file that cannot be used; ``line``/``column`` are 1-based where known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, field_path: str | None = None,
                 advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.file = file
        self.line = line
        self.column = column
        self.field_path = field_path


# --- the policy ------------------------------------------------------------------


@dataclass(frozen=True)
class TrustPinning:
    """notary's trust pinning: certificate IDs or CA files per GUN (prefix)."""

    certs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ca: tuple[tuple[str, Path], ...] = ()
    disable_tofu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "certs": {gun: list(ids) for gun, ids in self.certs},
            "ca": {prefix: str(path) for prefix, path in self.ca},
            "disable_tofu": self.disable_tofu,
        }


@dataclass(frozen=True)
class TrustSettings:
    server: str
    tls_ca: Path | None = None
    pinning: TrustPinning | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server": self.server}
        if self.tls_ca is not None:
            out["tls_ca"] = str(self.tls_ca)
        if self.pinning is not None:
            out["pinning"] = self.pinning.to_dict()
        return out


@dataclass(frozen=True)
class Check:
    """The command a stage runs and the report it reads."""

    command: tuple[str, ...]
    format: ReportFormat
    timeout: _dt.timedelta = DEFAULT_TIMEOUT
    env: tuple[tuple[str, str], ...] = ()
    cwd: Path | None = None

    def render(self, *, report: str, image: str) -> tuple[str, ...]:
        """The command with ``{report}``/``{image}`` filled in, ``{{``/``}}`` unescaped."""
        values = {"report": report, "image": image}

        def sub(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            return values[match.group(1)]

        return tuple(_PLACEHOLDER_TOKEN.sub(sub, arg) for arg in self.command)

    @property
    def report_on_stdout(self) -> bool:
        """True when no argument names ``{report}``: the report is the command's stdout."""
        return not any("report" in _placeholders(arg) for arg in self.command)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": list(self.command),
            "format": self.format,
            "timeout": format_duration(self.timeout),
        }
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd is not None:
            out["cwd"] = str(self.cwd)
        return out


@dataclass(frozen=True)
class PassSettings:
    """When a stage's report passes.

    For ``sarif``/``json`` reports: no finding above ``max_severity`` and no more
    findings of a severity than ``max_counts`` allows; with neither given, any
    finding fails. For ``junit``: at most ``max_failures`` failed or errored tests
    (default 0). Findings are first narrowed by the rule and CWE filters and the
    false-positive table and VEX document.
    """

    max_severity: SeverityName | None = None
    max_counts: tuple[tuple[SeverityName, int], ...] = ()
    max_failures: int | None = None
    rules_include: tuple[str, ...] = ()
    rules_exclude: tuple[str, ...] = ()
    cwes_include: tuple[int, ...] = ()
    cwes_exclude: tuple[int, ...] = ()
    false_positives: Path | None = None
    vex: Path | None = None

    def criteria(self) -> criteria_module.PassCriteria:
        """These settings as what :func:`countersign.assure.criteria.evaluate` applies."""
        level = reports.Severity.parse
        return criteria_module.PassCriteria(
            max_severity=level(self.max_severity) if self.max_severity else None,
            max_counts={level(name): count for name, count in self.max_counts},
            max_failures=self.max_failures,
            include_rules=frozenset(self.rules_include),
            exclude_rules=frozenset(self.rules_exclude),
            include_cwes=frozenset(self.cwes_include),
            exclude_cwes=frozenset(self.cwes_exclude),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_severity is not None:
            out["max_severity"] = self.max_severity
        if self.max_counts:
            out["max_counts"] = dict(self.max_counts)
        if self.max_failures is not None:
            out["max_failures"] = self.max_failures
        for name, include, exclude in (
            ("rules", self.rules_include, self.rules_exclude),
            ("cwes", self.cwes_include, self.cwes_exclude),
        ):
            part: dict[str, list[Any]] = {}
            if include:
                part["include"] = list(include)
            if exclude:
                part["exclude"] = list(exclude)
            if part:
                out[name] = part
        if self.false_positives is not None:
            out["false_positives"] = str(self.false_positives)
        if self.vex is not None:
            out["vex"] = str(self.vex)
        return out


@dataclass(frozen=True)
class EvidenceSettings:
    """What a stage keeps of its report as signed evidence."""

    attach_report: bool = True
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES

    def to_dict(self) -> dict[str, Any]:
        return {"attach_report": self.attach_report, "max_report_bytes": self.max_report_bytes}


@dataclass(frozen=True)
class Stage:
    """One signed pipeline stage.

    ``key`` is a key name in the trust directory, or (when it contains ``/`` or
    ends in ``.pem``/``.key``) the resolved absolute path of a key file, which is
    then also ``key_file``.
    """

    name: str
    role: str
    key: str
    check: Check
    passes: PassSettings
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    key_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "key": self.key,
            "check": self.check.to_dict(),
            "pass": self.passes.to_dict(),
            "evidence": self.evidence.to_dict(),
        }


@dataclass(frozen=True)
class DeliveryRule:
    """The gate: ``at_least`` of the stages ``require`` (all of them by default)."""

    require: tuple[str, ...]
    at_least: int
    max_age: _dt.timedelta
    min_distinct_signers: int = 1
    max_evidence_age: _dt.timedelta | None = None

    @property
    def all_required(self) -> bool:
        return self.at_least == len(self.require)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "require": list(self.require) if self.all_required
            else {"at_least": self.at_least, "of": list(self.require)},
            "min_distinct_signers": self.min_distinct_signers,
            "max_age": format_duration(self.max_age),
        }
        if self.max_evidence_age is not None:
            out["max_evidence_age"] = format_duration(self.max_evidence_age)
        return out


@dataclass(frozen=True)
class Policy:
    version: int
    trust: TrustSettings
    stages: tuple[Stage, ...]
    deliver: DeliveryRule
    source: Path

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data, in the policy file's own shape (paths absolute)."""
        return {
            "version": self.version,
            "trust": self.trust.to_dict(),
            "stages": [stage.to_dict() for stage in self.stages],
            "deliver": self.deliver.to_dict(),
        }


# --- helpers -----------------------------------------------------------------------


def severity_rank(severity: str) -> int:
    """0 (info) to 4 (critical); SARIF levels are mapped as in :data:`SARIF_LEVELS`."""
    return SEVERITIES.index(cast(SeverityName, SARIF_LEVELS.get(severity, severity)))


def parse_duration(text: str) -> _dt.timedelta:
    """``90m``, ``12h``, ``7d``, ``2w`` (also ``s``); raises ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(text)
    return _dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(delta: _dt.timedelta) -> str:
    """The shortest spelling of a whole number of seconds that :func:`parse_duration` reads."""
    seconds = int(delta.total_seconds())
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover - 's' always divides


def _placeholders(arg: str) -> list[str | None]:
    """The placeholder names in ``arg``; None for a lone brace."""
    names: list[str | None] = []
    for match in _PLACEHOLDER_TOKEN.finditer(arg):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        names.append(match.group(1) if token.startswith("{") and len(token) > 1 else None)
    return names


# --- the loader --------------------------------------------------------------------


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader composing nodes only: no aliases or anchors, bounded size and depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed in a policy", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused("YAML anchors (&name) are not allowed in a policy", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            raise _Refused(f"YAML tags ({tag}) are not allowed in a policy", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} YAML nodes", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _path_join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        _STR: "a string", _INT: "an integer", _BOOL: "a boolean", _NULL: "null",
        _FLOAT: "a number",
    }.get(node.tag, f"a {node.tag.rsplit(':', 1)[-1]}")


class _Reader:
    """Walks the composed node tree, reporting errors with file, line and field path."""

    def __init__(self, display: str, base_dir: Path, loader: _BoundedLoader) -> None:
        self.display = display
        self.base_dir = base_dir
        self.loader = loader

    def fail(self, node: yaml.Node | None, path: str, message: str,
             advice: str | None = None) -> NoReturn:
        line = column = None
        if node is not None:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        where = f"{self.display}:{line}" if line is not None else self.display
        text = f"{where}: {path}: {message}" if path else f"{where}: {message}"
        raise PolicyError(text, file=self.display, line=line, column=column,
                          field_path=path or None, advice=advice)

    # - structure -

    def mapping(self, node: yaml.Node, path: str, known: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.fail(key_node, path, f"field names must be strings, got {_kind(key_node)}")
            key = key_node.value
            where = _path_join(path, key)
            if key in fields:
                first = fields[key][0].start_mark.line + 1
                self.fail(key_node, where, f"duplicate field (first given on line {first})")
            if key.startswith("x-"):
                fields[key] = (key_node, value_node)
                continue
            if key not in known:
                self.fail(key_node, where,
                          f"unknown field {key!r} (known fields: {', '.join(known)}; "
                          "extensions must start with 'x-')")
            fields[key] = (key_node, value_node)
        for name in required:
            if name not in fields:
                self.fail(node, path, f"missing required field {name!r}")
        return {k: v for k, v in fields.items() if not k.startswith("x-")}

    def sequence(self, node: yaml.Node, path: str, *, min_items: int = 0) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list, got {_kind(node)}")
        items = list(node.value)
        if len(items) < min_items:
            self.fail(node, path, f"expected at least {min_items} item(s)")
        return items

    # - scalars -

    def string(self, node: yaml.Node, path: str, *, allow_empty: bool = False) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            self.fail(node, path, f"expected a string, got {_kind(node)}")
        value = cast(str, node.value)
        if not value and not allow_empty:
            self.fail(node, path, "must not be empty")
        return value

    def integer(self, node: yaml.Node, path: str, *, minimum: int = 0,
                maximum: int = 2**31 - 1) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            self.fail(node, path, f"expected an integer, got {_kind(node)}")
        try:
            value = int(self.loader.construct_yaml_int(node))
        except ValueError:
            self.fail(node, path, f"{node.value!r} is not an integer")
        if not minimum <= value <= maximum:
            self.fail(node, path, f"{value} is not between {minimum} and {maximum}")
        return value

    def boolean(self, node: yaml.Node, path: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            self.fail(node, path, f"expected true or false, got {_kind(node)}")
        return bool(self.loader.construct_yaml_bool(node))

    def duration(self, node: yaml.Node, path: str) -> _dt.timedelta:
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
            delta = _dt.timedelta(seconds=self.integer(node, path, minimum=1,
                                                       maximum=int(MAX_DURATION.total_seconds())))
        else:
            if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
                self.fail(node, path, f"expected a duration such as 90m, 12h, 7d or 2w, "
                                      f"got {_kind(node)}")
            try:
                delta = parse_duration(node.value)
            except ValueError:
                self.fail(node, path, f"{node.value!r} is not a duration "
                                      "(a number and one of s, m, h, d, w: 90m, 12h, 7d, 2w)")
        if delta > MAX_DURATION:
            self.fail(node, path, f"{node.value!r} is longer than {format_duration(MAX_DURATION)}")
        return delta

    def severity(self, node: yaml.Node, path: str) -> SeverityName:
        value = self.string(node, path)
        if value in SEVERITIES:
            return value
        if value in SARIF_LEVELS:
            return SARIF_LEVELS[value]
        self.fail(node, path, f"{value!r} is not one of {', '.join(SEVERITIES)} "
                              f"(or a SARIF level: {', '.join(SARIF_LEVELS)})")

    def file_path(self, node: yaml.Node, path: str) -> Path:
        value = self.string(node, path)
        if "\x00" in value:
            self.fail(node, path, "a path must not contain NUL")
        return self.resolve(value)

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    # - sections -

    def trust(self, node: yaml.Node | None, doc: yaml.Node,
              environ: Mapping[str, str]) -> TrustSettings:
        fields = {} if node is None else self.mapping(node, "trust",
                                                      ("server", "tls_ca", "pinning"))
        if "server" in fields:
            server_node = fields["server"][1]
            server = self.string(server_node, "trust.server")
            self.check_server(server, server_node, "trust.server")
        elif environ.get(ENV_SERVER):
            server = environ[ENV_SERVER]
            self.check_server(server, None, f"trust.server (from {ENV_SERVER})")
        else:
            self.fail(node or doc, "trust.server",
                      f"missing: give the trust server's URL here or in {ENV_SERVER}")
        tls_ca: Path | None = None
        if "tls_ca" in fields:
            tls_ca = self.file_path(fields["tls_ca"][1], "trust.tls_ca")
        elif environ.get(ENV_TLS_CA):
            tls_ca = Path(environ[ENV_TLS_CA]).expanduser()
        pinning = None
        if "pinning" in fields:
            pinning = self.pinning(fields["pinning"][1], "trust.pinning")
        return TrustSettings(server=server.rstrip("/"), tls_ca=tls_ca, pinning=pinning)

    def check_server(self, server: str, node: yaml.Node | None, path: str) -> None:
        try:
            parts = urlsplit(server)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            self.fail(node, path, f"{server!r} is not a URL")
        if parts.scheme != "https" or not parts.hostname:
            self.fail(node, path, f"{server!r} is not an https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            self.fail(node, path, f"{server!r} must not carry credentials, a query or a fragment")

    def pinning(self, node: yaml.Node, path: str) -> TrustPinning:
        fields = self.mapping(node, path, ("certs", "ca", "disable_tofu"))
        certs: list[tuple[str, tuple[str, ...]]] = []
        # certs/ca are keyed by GUN (prefix), so they are free-form mappings
        if "certs" in fields:
            for gun_node, ids_node in self.free_mapping(fields["certs"][1], f"{path}.certs"):
                gun = gun_node.value
                where = f"{path}.certs[{gun!r}]"
                ids = []
                for i, id_node in enumerate(self.sequence(ids_node, where, min_items=1)):
                    cert_id = self.string(id_node, f"{where}[{i}]")
                    if not _CERT_ID.fullmatch(cert_id):
                        self.fail(id_node, f"{where}[{i}]",
                                  f"{cert_id!r} is not a certificate ID (64 lowercase hex digits)")
                    ids.append(cert_id)
                certs.append((gun, tuple(ids)))
        ca: list[tuple[str, Path]] = []
        if "ca" in fields:
            for prefix_node, file_node in self.free_mapping(fields["ca"][1], f"{path}.ca"):
                ca.append((prefix_node.value,
                           self.file_path(file_node, f"{path}.ca[{prefix_node.value!r}]")))
        disable_tofu = False
        if "disable_tofu" in fields:
            disable_tofu = self.boolean(fields["disable_tofu"][1], f"{path}.disable_tofu")
        return TrustPinning(certs=tuple(certs), ca=tuple(ca), disable_tofu=disable_tofu)

    def free_mapping(self, node: yaml.Node, path: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        """A mapping with arbitrary (non-empty, unique) string keys."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        seen: dict[str, int] = {}
        out: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR \
                    or not key_node.value:
                self.fail(key_node, path, f"keys must be non-empty strings, got {_kind(key_node)}")
            if key_node.value in seen:
                self.fail(key_node, f"{path}[{key_node.value!r}]",
                          f"duplicate key (first given on line {seen[key_node.value]})")
            seen[key_node.value] = key_node.start_mark.line + 1
            out.append((key_node, value_node))
        return out

    def stage(self, node: yaml.Node, path: str) -> Stage:
        fields = self.mapping(node, path,
                              ("name", "role", "key", "check", "pass", "evidence"),
                              ("name", "role", "key", "check"))
        name_node = fields["name"][1]
        name = self.string(name_node, f"{path}.name")
        if not _STAGE_NAME.fullmatch(name) or len(name) > 64:
            self.fail(name_node, f"{path}.name",
                      f"{name!r} is not a stage name ([a-z0-9][a-z0-9_-]*, at most 64 characters)")
        role_node = fields["role"][1]
        role = self.string(role_node, f"{path}.role")
        if not is_delegation_name(role):
            self.fail(role_node, f"{path}.role",
                      f"{role!r} is not a delegation role name (targets/<name>, "
                      "lowercase letters, digits, '-', '_' and '/')")
        key_node = fields["key"][1]
        key = self.string(key_node, f"{path}.key")
        key_file: Path | None = None
        if "/" in key or key.endswith((".pem", ".key")):
            key_file = self.file_path(key_node, f"{path}.key")
            key = str(key_file)
        elif not _KEY_NAME.fullmatch(key):
            self.fail(key_node, f"{path}.key",
                      f"{key!r} is neither a key name ([A-Za-z0-9][A-Za-z0-9_.-]*) "
                      "nor a path to a key file")
        check = self.check(fields["check"][1], f"{path}.check")
        if "pass" in fields:
            passes = self.passes(fields["pass"][1], f"{path}.pass", check.format)
        else:
            passes = PassSettings(max_failures=0 if check.format == "junit" else None)
        evidence = EvidenceSettings()
        if "evidence" in fields:
            evidence = self.evidence(fields["evidence"][1], f"{path}.evidence")
        return Stage(name=name, role=role, key=key, check=check, passes=passes,
                     evidence=evidence, key_file=key_file)

    def check(self, node: yaml.Node, path: str) -> Check:
        fields = self.mapping(node, path, ("command", "format", "timeout", "env", "cwd"),
                              ("command", "format"))
        command: list[str] = []
        for i, arg_node in enumerate(self.sequence(fields["command"][1], f"{path}.command",
                                                   min_items=1)):
            where = f"{path}.command[{i}]"
            arg = self.string(arg_node, where, allow_empty=i > 0)
            for placeholder in _placeholders(arg):
                if placeholder is None:
                    self.fail(arg_node, where, f"{arg!r} has an unmatched brace "
                                               "(write {{ or }} for a literal one)")
                if placeholder not in PLACEHOLDERS:
                    self.fail(arg_node, where,
                              f"unknown placeholder {{{placeholder}}} (known: "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
            command.append(arg)
        format_node = fields["format"][1]
        fmt = self.string(format_node, f"{path}.format")
        if fmt not in FORMATS:
            self.fail(format_node, f"{path}.format",
                      f"{fmt!r} is not one of {', '.join(FORMATS)}")
        timeout = DEFAULT_TIMEOUT
        if "timeout" in fields:
            timeout = self.duration(fields["timeout"][1], f"{path}.timeout")
        env: list[tuple[str, str]] = []
        if "env" in fields:
            for key_node, value_node in self.free_mapping(fields["env"][1], f"{path}.env"):
                where = f"{path}.env.{key_node.value}"
                if not _ENV_NAME.fullmatch(key_node.value):
                    self.fail(key_node, where,
                              f"{key_node.value!r} is not an environment variable name")
                value = self.string(value_node, where, allow_empty=True)
                if "\x00" in value:
                    self.fail(value_node, where, "must not contain NUL")
                env.append((key_node.value, value))
        cwd = None
        if "cwd" in fields:
            cwd = self.file_path(fields["cwd"][1], f"{path}.cwd")
        return Check(command=tuple(command), format=fmt, timeout=timeout,
                     env=tuple(env), cwd=cwd)

    def passes(self, node: yaml.Node, path: str, fmt: ReportFormat) -> PassSettings:
        fields = self.mapping(node, path, (
            "max_severity", "max_counts", "max_failures", "rules", "cwes",
            "false_positives", "vex"))
        findings_only = ("max_severity", "max_counts", "rules", "cwes", "false_positives", "vex")
        if fmt == "junit":
            for name in findings_only:
                if name in fields:
                    self.fail(fields[name][0], f"{path}.{name}",
                              "does not apply to a junit report (use max_failures)")
        elif "max_failures" in fields:
            self.fail(fields["max_failures"][0], f"{path}.max_failures",
                      f"applies to junit reports only, not {fmt} (use max_severity or max_counts)")
        max_severity = None
        if "max_severity" in fields:
            max_severity = self.severity(fields["max_severity"][1], f"{path}.max_severity")
        counts: dict[SeverityName, int] = {}
        if "max_counts" in fields:
            cpath = f"{path}.max_counts"
            for key_node, value_node in self.free_mapping(fields["max_counts"][1], cpath):
                severity = self.severity(key_node, f"{cpath}.{key_node.value}")
                if severity in counts:
                    self.fail(key_node, f"{cpath}.{key_node.value}",
                              f"severity {severity} given twice")
                counts[severity] = self.integer(value_node, f"{cpath}.{key_node.value}")
        max_failures = 0 if fmt == "junit" else None
        if "max_failures" in fields:
            max_failures = self.integer(fields["max_failures"][1], f"{path}.max_failures")
        rules = self.filters(fields.get("rules"), f"{path}.rules", self.rule_id)
        cwes = self.filters(fields.get("cwes"), f"{path}.cwes", self.cwe)
        false_positives = vex = None
        if "false_positives" in fields:
            false_positives = self.file_path(fields["false_positives"][1],
                                             f"{path}.false_positives")
        if "vex" in fields:
            vex = self.file_path(fields["vex"][1], f"{path}.vex")
        return PassSettings(
            max_severity=max_severity,
            max_counts=tuple((s, counts[s]) for s in SEVERITIES if s in counts),
            max_failures=max_failures,
            rules_include=cast(tuple[str, ...], rules[0]),
            rules_exclude=cast(tuple[str, ...], rules[1]),
            cwes_include=cast(tuple[int, ...], cwes[0]),
            cwes_exclude=cast(tuple[int, ...], cwes[1]),
            false_positives=false_positives, vex=vex)

    def rule_id(self, node: yaml.Node, path: str) -> str:
        return self.string(node, path)

    def cwe(self, node: yaml.Node, path: str) -> int:
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
            return self.integer(node, path, minimum=1, maximum=999_999)
        value = self.string(node, path)
        match = _CWE.fullmatch(value)
        if not match:
            self.fail(node, path, f"{value!r} is not a CWE (79 or CWE-79)")
        return int(match.group(1))

    def filters(self, entry: tuple[yaml.Node, yaml.Node] | None, path: str,
                item: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        if entry is None:
            return (), ()
        fields = self.mapping(entry[1], path, ("include", "exclude"))
        out: list[tuple[Any, ...]] = []
        for name in ("include", "exclude"):
            values: list[Any] = []
            if name in fields:
                for i, n in enumerate(self.sequence(fields[name][1], f"{path}.{name}")):
                    value = item(n, f"{path}.{name}[{i}]")
                    if value not in values:
                        values.append(value)
            out.append(tuple(values))
        return out[0], out[1]

    def evidence(self, node: yaml.Node, path: str) -> EvidenceSettings:
        fields = self.mapping(node, path, ("attach_report", "max_report_bytes"))
        attach = True
        if "attach_report" in fields:
            attach = self.boolean(fields["attach_report"][1], f"{path}.attach_report")
        size = DEFAULT_MAX_REPORT_BYTES
        if "max_report_bytes" in fields:
            size = self.integer(fields["max_report_bytes"][1], f"{path}.max_report_bytes",
                                minimum=1, maximum=1 << 30)
        return EvidenceSettings(attach_report=attach, max_report_bytes=size)

    def deliver(self, node: yaml.Node, path: str, stages: tuple[Stage, ...]) -> DeliveryRule:
        fields = self.mapping(node, path, (
            "require", "min_distinct_signers", "max_age", "max_evidence_age"),
            ("require", "max_age"))
        names = {stage.name for stage in stages}
        require_node = fields["require"][1]
        rpath = f"{path}.require"
        if isinstance(require_node, yaml.MappingNode):
            rfields = self.mapping(require_node, rpath, ("at_least", "of"), ("at_least", "of"))
            of_node, opath = rfields["of"][1], f"{rpath}.of"
        else:
            rfields, of_node, opath = {}, require_node, rpath
        require: list[str] = []
        for i, name_node in enumerate(self.sequence(of_node, opath, min_items=1)):
            name = self.string(name_node, f"{opath}[{i}]")
            if name not in names:
                self.fail(name_node, f"{opath}[{i}]",
                          f"{name!r} is not a stage (stages: {', '.join(s.name for s in stages)})")
            if name in require:
                self.fail(name_node, f"{opath}[{i}]", f"{name!r} is listed twice")
            require.append(name)
        at_least = len(require)
        if rfields:
            at_least = self.integer(rfields["at_least"][1], f"{rpath}.at_least", minimum=1,
                                    maximum=len(require))
        signers = 1
        if "min_distinct_signers" in fields:
            snode = fields["min_distinct_signers"][1]
            signers = self.integer(snode, f"{path}.min_distinct_signers", minimum=1)
            if signers > at_least:
                self.fail(snode, f"{path}.min_distinct_signers",
                          f"{signers} can never be met: delivery needs only {at_least} stage(s)")
        max_age = self.duration(fields["max_age"][1], f"{path}.max_age")
        max_evidence_age = None
        if "max_evidence_age" in fields:
            max_evidence_age = self.duration(fields["max_evidence_age"][1],
                                             f"{path}.max_evidence_age")
        return DeliveryRule(require=tuple(require), at_least=at_least, max_age=max_age,
                            min_distinct_signers=signers, max_evidence_age=max_evidence_age)

    def policy(self, doc: yaml.Node, source: Path, environ: Mapping[str, str]) -> Policy:
        if not isinstance(doc, yaml.MappingNode):
            self.fail(doc, "", f"a policy must be a mapping, got {_kind(doc)}")
        fields = self.mapping(doc, "", ("version", "trust", "stages", "deliver"),
                              ("version",))
        version_node = fields["version"][1]
        if not (isinstance(version_node, yaml.ScalarNode) and version_node.tag == _INT
                and self.integer(version_node, "version", minimum=-(2**31)) == 1):
            shown = (version_node.value if isinstance(version_node, yaml.ScalarNode)
                     and version_node.tag != _STR else
                     repr(version_node.value) if isinstance(version_node, yaml.ScalarNode)
                     else _kind(version_node))
            self.fail(version_node, "version", f"{shown} is not a supported version (only 1)")
        for name in ("stages", "deliver"):
            if name not in fields:
                self.fail(doc, "", f"missing required field {name!r}")
        trust = self.trust(fields["trust"][1] if "trust" in fields else None, doc, environ)
        stage_nodes = self.sequence(fields["stages"][1], "stages", min_items=1)
        if len(stage_nodes) > MAX_STAGES:
            self.fail(fields["stages"][1], "stages", f"more than {MAX_STAGES} stages")
        stages: list[Stage] = []
        for i, stage_node in enumerate(stage_nodes):
            stage = self.stage(stage_node, f"stages[{i}]")
            for j, other in enumerate(stages):
                if other.name == stage.name:
                    self.fail(self.value_node(stage_node, "name"), f"stages[{i}].name",
                              f"{stage.name!r} is already the name of stages[{j}]")
                if other.role == stage.role:
                    self.fail(self.value_node(stage_node, "role"), f"stages[{i}].role",
                              f"{stage.role!r} is already the role of stages[{j}]")
            stages.append(stage)
        deliver = self.deliver(fields["deliver"][1], "deliver", tuple(stages))
        return Policy(version=1, trust=trust, stages=tuple(stages), deliver=deliver,
                      source=source)

    @staticmethod
    def value_node(mapping: yaml.Node, key: str) -> yaml.Node:
        for key_node, value_node in mapping.value:
            if key_node.value == key:
                return cast(yaml.Node, value_node)
        return mapping  # pragma: no cover - callers ask for keys already read


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def parse_policy(data: bytes | str, source: Path | str = "policy.yaml", *,
                 environ: Mapping[str, str] | None = None) -> Policy:
    """Parse policy text; relative paths resolve against ``source``'s directory.

    ``environ`` (default: ``os.environ``) supplies ``COUNTERSIGN_SERVER`` and
    ``COUNTERSIGN_TLS_CA`` when the policy does not give ``trust.server`` / ``trust.tls_ca``.
    """
    display = str(source)
    source = Path(source).absolute()
    if environ is None:
        environ = os.environ
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{display}: {len(raw)} bytes is more than a policy may have "
                          f"({MAX_POLICY_BYTES})", file=display)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = _line_of(data, exc.start)
            raise PolicyError(f"{display}:{line}: not UTF-8 text", file=display,
                              line=line) from None
    tab = text.find("\t")
    if tab >= 0:
        lineno = text.count("\n", 0, tab) + 1
        column = tab - (text.rfind("\n", 0, tab) + 1) + 1
        raise PolicyError(f"{display}:{lineno}: tab character (indent and separate "
                          "with spaces)", file=display, line=lineno, column=column)
    loader: _BoundedLoader | None = None
    try:
        try:
            loader = _BoundedLoader(text)
            doc = loader.get_single_node()
        except _Refused as exc:
            _raise_yaml(display, exc.message, exc.mark)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or exc.context or "not valid YAML"
            _raise_yaml(display, f"not valid YAML: {problem}", exc.problem_mark or exc.context_mark)
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            raise PolicyError(f"{display}:{line}: not valid YAML: character "
                              f"{exc.character!r} is not allowed", file=display,
                              line=line) from None
        except yaml.YAMLError as exc:
            _raise_yaml(display, f"not valid YAML: {exc}", None)
        if doc is None:
            raise PolicyError(f"{display}:1: the policy is empty", file=display, line=1)
        reader = _Reader(display, source.parent, loader)
        return reader.policy(doc, source, environ)
    finally:
        if loader is not None:
            loader.dispose()


def _raise_yaml(display: str, message: str, mark: yaml.Mark | None) -> NoReturn:
    if mark is None:
        raise PolicyError(f"{display}: {message}", file=display) from None
    line, column = mark.line + 1, mark.column + 1
    raise PolicyError(f"{display}:{line}: {message}", file=display, line=line,
                      column=column) from None


def load_policy(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Policy:
    """Read and validate the policy file at ``path`` (see :func:`parse_policy`)."""
    display = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{display}: cannot read the policy: {exc.strerror or exc}",
                          file=display) from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{display}: more than {MAX_POLICY_BYTES} bytes, too large for a policy",
                          file=display)
    return parse_policy(data, path, environ=environ)
