"""Trust pinning: how a first root is accepted (notary's ``trust_pinning``).

First match wins: pinned root certificate key IDs for the GUN (or the longest
``prefix*``); else a CA for the longest GUN prefix, which some root leaf must
chain to; else trust on first use, unless it is disabled.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from countersign.errors import CountersignError
from countersign.tuf.keys import PublicKey
from countersign.tuf.roots import PinCheck


class TrustPinningError(CountersignError):
    """The first root of a repository is not one the pinning allows."""


def _longest(mapping: Mapping[str, object], gun: str) -> str | None:
    """The key for ``gun``: itself, else the ``prefix*`` with the longest prefix of it."""
    if gun in mapping:
        return gun
    best, best_length = None, -1
    for key in mapping:
        if key.endswith("*") and gun.startswith(key[:-1]) and len(key) - 1 > best_length:
            best, best_length = key, len(key) - 1
    return best


@dataclass(frozen=True)
class TrustPinning:
    """``certs``: GUN or ``prefix*`` -> allowed root key IDs; ``ca``: GUN prefix -> CA bundle."""

    certs: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ca: Mapping[str, Path] = field(default_factory=dict)
    disable_tofu: bool = False

    def check_for(self, gun: str, *, now: _dt.datetime | None = None,
                  first_use: bool = True) -> PinCheck | None:
        """The check a new root of ``gun`` must pass (None: any root the chain allows).

        ``first_use``: there is no trusted root at all, so without pinning the root is
        trusted on first use, which ``disable_tofu`` forbids. Otherwise (a cached root
        that expired, as notary) pins apply but ``disable_tofu`` does not.
        """
        pinned = _longest(self.certs, gun)
        if pinned is not None:
            allowed = set(self.certs[pinned])

            def by_key_id(leaf: x509.Certificate, chain: list[x509.Certificate]) -> bool:
                return PublicKey.from_certificates([leaf, *chain]).key_id in allowed

            return by_key_id
        prefixes = [p for p in self.ca if gun.startswith(p)]
        if prefixes:
            bundle = self.ca[max(prefixes, key=len)]
            roots = _load_bundle(bundle)
            when = now or _dt.datetime.now(_dt.UTC)

            def by_ca(leaf: x509.Certificate, chain: list[x509.Certificate]) -> bool:
                return _chains_to(leaf, chain, roots, when)

            return by_ca
        if self.disable_tofu and first_use:
            raise TrustPinningError(
                f"no trust pinning for {gun} and trust on first use is disabled",
                advice="pin the root certificate IDs or a CA for this repository")
        return None


def _load_bundle(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise TrustPinningError(f"cannot read the pinned CA bundle {path}: {exc}") from None


def _valid(cert: x509.Certificate, when: _dt.datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def _chains_to(leaf: x509.Certificate, chain: list[x509.Certificate],
               roots: list[x509.Certificate], when: _dt.datetime) -> bool:
    """Whether ``leaf`` is issued, through ``chain``, by one of ``roots``, all valid now."""
    current = leaf
    pool = list(chain)
    for _depth in range(len(chain) + 1):
        if not _valid(current, when):
            return False
        for root in roots:
            if _issued_by(current, root) and _valid(root, when):
                return True
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None:
            return False
        pool.remove(parent)
        current = parent
    return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_trust_pinning(config: Path) -> TrustPinning:
    """The ``trust_pinning`` section of a notary client config (``<trust_dir>/config.json``).

    ``{"trust_pinning": {"certs": {GUN or "prefix*": [root key IDs]}, "ca": {GUN prefix:
    CA bundle path}, "disable_tofu": bool}}``; CA paths are relative to the config file.
    A missing file or section means trust on first use.
    """
    try:
        data = config.read_bytes()
    except FileNotFoundError:
        return TrustPinning()
    except OSError as exc:
        raise TrustPinningError(f"cannot read {config}: {exc.strerror}") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("the file is not a JSON object")
        section = doc.get("trust_pinning")
        section = {} if section is None else section
        if not isinstance(section, dict):
            raise ValueError("trust_pinning is not an object")
        # a misspelt key (notary reads keys case-insensitively) would silently leave
        # trust on first use on: refused
        unknown = sorted(set(section) - {"certs", "ca", "disable_tofu"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0][:40]!r} (the keys are certs, ca and "
                             "disable_tofu)")
        certs = {} if section.get("certs") is None else section["certs"]
        ca = {} if section.get("ca") is None else section["ca"]
        disable = section.get("disable_tofu", False)
        if not isinstance(certs, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(i, str) for i in v)
                for k, v in certs.items()):
            raise ValueError("certs must map names to lists of key IDs")
        if not isinstance(ca, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in ca.items()):
            raise ValueError("ca must map GUN prefixes to file paths")
        if not isinstance(disable, bool):
            raise ValueError("disable_tofu must be true or false")
    except ValueError as exc:
        raise TrustPinningError(f"{config}: bad trust_pinning ({exc})",
                                advice="see notary's client configuration") from None
    return TrustPinning(
        certs={k: tuple(v) for k, v in certs.items()},
        ca={k: (config.parent / v) for k, v in ca.items()},
        disable_tofu=disable,
    )

