"""False-positive suppressions: BDD-Security tables and OpenVEX documents.

A :class:`Suppression` says that some findings are known not to matter, why,
and until when. Two sources are read:

- :func:`parse_table`, the BDD-Security false-positive table::

      # url | parameter | cweid | reason | expires
      url                          | parameter | cweid | reason            | expires
      https://app.example/login    | username  | 79    | encoded on output | 2027-01-31
      https://app.example/static/* |           | 525   | public assets

  The header row must start ``url | parameter | cweid``; ``reason`` and
  ``expires`` are countersign extensions and may be named after them (in that
  order). Surrounding pipes are optional, cells are trimmed, lines whose first
  non-blank character is ``#`` are comments, blank lines are skipped. There is
  no escaping: a ``|`` inside a URL must be percent-encoded (``%7C``). A row
  matches a finding whose location is the URL (exactly, or starting with
  the text before a trailing ``*``), whose parameter is the parameter (an
  empty cell or ``*`` matches any) and whose CWEs include the cweid.

- :func:`parse_openvex`, OpenVEX documents. A statement with status
  ``not_affected`` suppresses findings whose rule id is the vulnerability
  name (or one of its ``aliases``), or whose CWEs include it when the name is
  ``CWE-n``. Other statuses suppress nothing; where several statements name
  the same vulnerability, the latest (by ``timestamp``, then document order)
  decides. OpenVEX has no expiry, so countersign reads the extension field
  ``x-countersign-expires`` (RFC 3339) on a statement, or on the document for
  all its statements.

An expired suppression (``expires`` at or before ``now``) suppresses nothing;
:func:`countersign.assure.criteria.evaluate` records that it expired.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from countersign.assure.reports import Finding, ReportError, load_json

__all__ = ["Suppression", "parse_openvex", "parse_table"]

MAX_SUPPRESSIONS = 100_000


@dataclass(frozen=True)
class Suppression:
    """One reason to set findings aside.

    ``kind`` is ``table``, ``openvex`` or ``tool`` (the report itself marked
    the finding suppressed); ``origin`` names the file and line or statement.
    A table row sets ``url``, ``parameter`` and ``cwe``; an OpenVEX statement
    sets ``vulnerability`` (a rule id or ``CWE-n``) and ``aliases``.
    """

    kind: str
    origin: str
    reason: str
    expires: datetime | None = None
    url: str | None = None
    parameter: str | None = None
    cwe: int | None = None
    vulnerability: str | None = None
    aliases: tuple[str, ...] = ()
    products: tuple[str, ...] = ()

    def is_expired(self, now: datetime) -> bool:
        """Whether the suppression has expired at ``now`` (an aware datetime)."""
        return self.expires is not None and self.expires <= now

    def matches(self, finding: Finding) -> bool:
        """Whether this suppression covers ``finding`` (ignoring expiry)."""
        if self.kind == "table":
            return self._matches_row(finding)
        if self.kind == "openvex":
            return self._matches_vex(finding)
        return False

    def _matches_row(self, finding: Finding) -> bool:
        url = self.url or ""
        if url.endswith("*"):
            if not finding.location.startswith(url[:-1]):
                return False
        elif finding.location != url:
            return False
        if self.parameter not in (None, "", "*") and finding.parameter != self.parameter:
            return False
        return self.cwe in finding.cwe

    def _matches_vex(self, finding: Finding) -> bool:
        names = (self.vulnerability or "", *self.aliases)
        for name in names:
            if not name:
                continue
            if name == finding.rule_id:
                return True
            match = re.fullmatch(r"CWE-(\d{1,6})", name, re.IGNORECASE)
            if match and int(match.group(1)) in finding.cwe:
                return True
        return False

    def describe(self) -> str:
        """A short description naming where the suppression comes from."""
        if self.kind == "table":
            what = f"url {self.url} parameter {self.parameter or '*'} CWE-{self.cwe}"
        elif self.kind == "openvex":
            what = f"{self.vulnerability} not_affected"
        else:
            what = "suppressed in the report"
        until = f", expires {self.expires.isoformat()}" if self.expires else ""
        return f"{self.kind} suppression {self.origin} ({what}{until}): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for evidence."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "reason": self.reason,
            "expires": self.expires.isoformat() if self.expires else None,
        }


def _parse_expiry(text: str, where: str) -> datetime:
    """An RFC 3339 time (with zone), or a date meaning "through that day, UTC"."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ReportError(f"{where}: expiry {text!r} is not a valid date") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or not re.match(r"\d{4}-\d{2}-\d{2}[Tt ]", text):
        raise ReportError(f"{where}: expiry {text[:60]!r} is not YYYY-MM-DD or an RFC 3339 "
                          "time with a time zone")
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- table

_COLUMNS = ("url", "parameter", "cweid", "reason", "expires")


def _cells(line: str) -> list[str]:
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|"):
        text = text[:-1]
    return [cell.strip() for cell in text.split("|")]


def parse_table(data: bytes | str, *, source: str = "<false positives>") -> list[Suppression]:
    """Read a BDD-Security false-positive table (see the module documentation)."""
    if isinstance(data, bytes | bytearray):
        if len(data) > 16 * 1024 * 1024:
            raise ReportError(f"{source}: false-positive table is larger than 16 MiB")
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReportError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                              ) from None
    else:
        text = data
    header: list[str] | None = None
    rows: list[Suppression] = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = _cells(stripped)
        if header is None:
            names = [cell.lower() for cell in cells]
            if len(names) < 3 or tuple(names) != _COLUMNS[: len(names)]:
                raise ReportError(f"{where}: the header must be \"url | parameter | cweid\", "
                                  "optionally followed by \"| reason | expires\"; found "
                                  f"{stripped[:80]!r}")
            header = names
            continue
        if len(cells) > len(header):
            raise ReportError(f"{where}: {len(cells)} cells, but the header names only "
                              f"{len(header)} columns ({' | '.join(header)})")
        if len(cells) < 3:
            raise ReportError(f"{where}: a row needs url | parameter | cweid, found "
                              f"{stripped[:80]!r}")
        cells += [""] * (5 - len(cells))
        url, parameter, cwe_text, reason, expires = cells
        if not url or url == "*":
            raise ReportError(f"{where}: the url cell must name a URL or a URL prefix ending "
                              "in *, not " + (repr(url) if url else "be empty"))
        match = re.fullmatch(r"(?:CWE-)?(\d{1,6})", cwe_text, re.IGNORECASE)
        if not match or int(match.group(1)) == 0:
            raise ReportError(f"{where}: cweid {cwe_text[:40]!r} is not a CWE number")
        rows.append(Suppression(
            kind="table", origin=where,
            reason=reason or f"listed as a false positive in {source}",
            expires=_parse_expiry(expires, where) if expires else None,
            url=url, parameter=parameter or None, cwe=int(match.group(1))))
        if len(rows) > MAX_SUPPRESSIONS:
            raise ReportError(f"{source}: more than {MAX_SUPPRESSIONS} suppressions")
    if header is None:
        raise ReportError(f"{source}: no header row \"url | parameter | cweid\"")
    return rows


# --------------------------------------------------------------------------- OpenVEX

_SUPPRESSING = "not_affected"
_STATUSES = {"not_affected", "affected", "fixed", "under_investigation"}


def _product_ids(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ReportError(f"{where}.products must be a non-empty array")
    ids: list[str] = []
    for p, product in enumerate(value):
        if isinstance(product, str):
            ids.append(product)
        elif isinstance(product, dict):
            found: list[str] = []
            pid = product.get("@id")
            if isinstance(pid, str):
                found.append(pid)
            identifiers = product.get("identifiers")
            if isinstance(identifiers, dict):
                found.extend(v for _, v in sorted(identifiers.items()) if isinstance(v, str))
            ids.extend(found)
            if not found:
                raise ReportError(f"{where}.products[{p}] has no @id or identifiers")
        else:
            raise ReportError(f"{where}.products[{p}] must be a string or an object")
    return tuple(ids)


def _str_field(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ReportError(f"{where}.{key} must be a string")
    return value


def parse_openvex(data: bytes, *, source: str = "<openvex>",
                  product: str | None = None) -> list[Suppression]:
    """Read the ``not_affected`` statements of an OpenVEX document.

    With ``product``, only statements listing that product (by ``@id`` or an
    identifier such as a purl) are kept; without it, all are.
    """
    document = load_json(data, source, "OpenVEX document")
    if not isinstance(document, dict):
        raise ReportError(f"{source}: an OpenVEX document must be a JSON object")
    context = document.get("@context")
    if not isinstance(context, str) or not context.startswith("https://openvex.dev/ns"):
        raise ReportError(f"{source}: not an OpenVEX document: @context is "
                          f"{context!r:.60}, not https://openvex.dev/ns/...")
    doc_time = _str_field(document, "timestamp", source) or ""
    doc_expiry_text = _str_field(document, "x-countersign-expires", source)
    doc_expiry = _parse_expiry(doc_expiry_text, source) if doc_expiry_text else None
    statements = document.get("statements")
    if not isinstance(statements, list):
        raise ReportError(f"{source}: statements must be an array")
    if len(statements) > MAX_SUPPRESSIONS:
        raise ReportError(f"{source}: more than {MAX_SUPPRESSIONS} statements")
    latest: dict[tuple[str, ...], tuple[str, int, Suppression | None]] = {}
    for s, value in enumerate(statements):
        where = f"{source}: statements[{s}]"
        if not isinstance(value, dict):
            raise ReportError(f"{where} must be an object")
        vuln = value.get("vulnerability")
        if isinstance(vuln, str):  # OpenVEX 0.0.x wrote the name directly
            name, aliases = vuln, ()
        elif isinstance(vuln, dict):
            name_value = vuln.get("name", vuln.get("@id"))
            if not isinstance(name_value, str):
                raise ReportError(f"{where}.vulnerability.name must be a string")
            name = name_value
            alias_value = vuln.get("aliases", [])
            if not isinstance(alias_value, list) or not all(
                    isinstance(a, str) for a in alias_value):
                raise ReportError(f"{where}.vulnerability.aliases must be strings")
            aliases = tuple(alias_value)
        else:
            raise ReportError(f"{where}.vulnerability must name a vulnerability")
        if not name:
            raise ReportError(f"{where}.vulnerability.name is empty")
        products = _product_ids(value.get("products"), where)
        status = value.get("status")
        if status not in _STATUSES:
            raise ReportError(f"{where}.status {status!r:.40} is not one of "
                              f"{', '.join(sorted(_STATUSES))}")
        justification = _str_field(value, "justification", where)
        impact = _str_field(value, "impact_statement", where)
        notes = _str_field(value, "status_notes", where)
        stamp = _str_field(value, "timestamp", where) or doc_time
        expiry_text = _str_field(value, "x-countersign-expires", where)
        expires = _parse_expiry(expiry_text, where) if expiry_text else doc_expiry
        if product is not None and product not in products:
            continue
        suppression = None
        if status == _SUPPRESSING:
            if not justification and not impact:
                raise ReportError(f"{where}: a not_affected statement needs a justification "
                                  "or an impact_statement")
            reason = "; ".join(x for x in (justification, impact, notes) if x)
            suppression = Suppression(kind="openvex", origin=f"{source} statements[{s}]",
                                      reason=reason, expires=expires, vulnerability=name,
                                      aliases=aliases, products=products)
        key = (name, *sorted(products))
        previous = latest.get(key)
        if previous is None or (stamp, s) >= previous[:2]:
            latest[key] = (stamp, s, suppression)
    result = [entry[2] for entry in sorted(latest.values(), key=lambda e: e[1])
              if entry[2] is not None]
    return result


def all_matching(suppressions: Sequence[Suppression], finding: Finding) -> list[Suppression]:
    """The suppressions (expired or not) that cover ``finding``, in the given order."""
    return [s for s in suppressions if s.matches(finding)]
