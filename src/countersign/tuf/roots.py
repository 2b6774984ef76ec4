"""Validation of a root: its certificates, its own threshold, and the previous root's.

This is notary's ``ValidateRoot`` (without trust pinning, which the client
layers on through ``pin``): the root role's keys must be certificates for the
GUN; a new root must be signed by a threshold of the previously trusted root's
certificates and by a threshold of its own.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from countersign.errors import CertificateError, KeyFormatError, VerificationError
from countersign.tuf.keys import PublicKey
from countersign.tuf.metadata import ROOT, Metadata, Role, Root, VerificationResult
from countersign.tuf.x509 import check_certificate, cn_matches_gun, common_name, root_leaf

#: Decides whether a root certificate is acceptable to the user's trust pinning.
PinCheck = Callable[[x509.Certificate, list[x509.Certificate]], bool]


@dataclass(frozen=True)
class RootValidation:
    """The outcome of :func:`validate_root`: both threshold checks and the usable keys."""

    own: VerificationResult
    previous: VerificationResult | None
    keys: Mapping[str, PublicKey]  # root certificate keys as rebuilt from valid certificates


def root_certificate_keys(
    root: Root, gun: str, *, check_expiry: bool, now: _dt.datetime | None = None,
    pin: PinCheck | None = None,
) -> tuple[dict[str, PublicKey], list[str]]:
    """Valid root-role certificates for ``gun``, rebuilt as notary rebuilds them.

    Returns the keys (by the ID of the rebuilt PEM, which signatures must carry)
    and the reasons other root keys were not usable.
    """
    keys: dict[str, PublicKey] = {}
    problems: list[str] = []
    for keyid in root.roles[ROOT].keyids:
        key = root.keys[keyid]
        try:
            leaf, chain = root_leaf(key)
        except (CertificateError, KeyFormatError) as exc:
            problems.append(exc.message)
            continue
        cn = common_name(leaf)
        if not cn_matches_gun(cn, gun):
            problems.append(f"root certificate CN {cn!r} does not match the GUN {gun!r}")
            continue
        try:
            check_certificate(leaf, check_expiry=check_expiry, now=now)
        except CertificateError as exc:
            problems.append(exc.message)
            continue
        valid_chain = []
        for cert in chain:
            try:
                check_certificate(cert, check_expiry=True, now=now)
            except CertificateError:
                continue
            valid_chain.append(cert)
        if pin is not None and not pin(leaf, valid_chain):
            problems.append(f"root certificate {keyid[:12]} does not match the trust pinning")
            continue
        rebuilt = PublicKey.from_certificates([leaf, *valid_chain])
        keys[rebuilt.key_id] = rebuilt
    return keys, problems


def validate_root(
    new: Metadata[Root],
    gun: str,
    *,
    previous: Metadata[Root] | None = None,
    now: _dt.datetime | None = None,
    pin: PinCheck | None = None,
    check_expiry: bool = True,
) -> RootValidation:
    """Accept ``new`` as the root of ``gun`` or raise :class:`VerificationError`.

    ``check_expiry=False`` accepts expired root certificates: for a root already
    trusted (a cache) and for the intermediate roots of a rotation chain.

    Metadata expiry and version ordering are the caller's rules (a client
    ignores the expiry of intermediate roots in a rotation chain).
    """
    root = new.signed
    own_keys, problems = root_certificate_keys(root, gun, check_expiry=check_expiry, now=now,
                                               pin=pin)
    if not own_keys:
        raise VerificationError(
            f"root of {gun} has no valid root certificate",
            advice="; ".join(problems[:3]) or None,
        )
    previous_result = None
    if previous is not None:
        old_keys, _ = root_certificate_keys(previous.signed, gun, check_expiry=False, now=now)
        old_role = Role(tuple(old_keys), previous.signed.roles[ROOT].threshold)
        previous_result = new.verify(old_keys, old_role, "root (previous root's keys)")
        if not previous_result.verified:
            raise VerificationError(
                f"new root of {gun} is not signed by the threshold of the trusted root: "
                f"{previous_result.distinct_signers} of {old_role.threshold}",
                advice="a root rotation must be signed by the old root keys as well as the new",
            )
    own_role = Role(tuple(own_keys), root.roles[ROOT].threshold)
    own = new.verify(own_keys, own_role, "root")
    if not own.verified:
        raise VerificationError(
            f"root of {gun} does not meet its own threshold: "
            f"{own.distinct_signers} of {own_role.threshold} valid signatures",
            advice="; ".join(own.rejected[:3]) or None,
        )
    return RootValidation(own, previous_result, own_keys)
