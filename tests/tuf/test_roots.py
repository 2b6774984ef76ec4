"""Root validation: certificates bound to the GUN, own threshold, rotation threshold."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tufrepo import GUN, Repo

from countersign.errors import CertificateError, VerificationError
from countersign.tuf import ROOT, Metadata, PrivateKey, PublicKey, Role, Root, validate_root
from countersign.tuf.x509 import (
    check_certificate,
    cn_matches_gun,
    make_certificate,
    root_certificate_key,
    root_leaf,
)


def _root_with(root_keys: list[PublicKey], signers: list[tuple[PrivateKey, PublicKey]],
               repo: Repo, threshold: int = 1, version: int = 1) -> Metadata[Root]:
    assert repo.root is not None
    base = repo.root.signed
    keys = dict(base.keys)
    keys.update({k.key_id: k for k in root_keys})
    roles = dict(base.roles)
    roles[ROOT] = Role(tuple(k.key_id for k in root_keys), threshold)
    from dataclasses import replace
    md: Metadata[Root] = Metadata(replace(base, keys=keys, roles=roles, version=version))
    for private, public in signers:
        md = md.sign(private, public)
    return md


def test_notary_certificate_shape() -> None:
    key = PrivateKey.generate("ecdsa")
    cert = make_certificate(key, GUN)
    assert cert.subject == cert.issuer
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    long_gun = "registry.example.com:5000/" + "team/" * 20 + "app"
    assert len(long_gun) > 64
    make_certificate(key, long_gun)


def test_cn_rules() -> None:
    assert cn_matches_gun("docker.io/library/alpine", "docker.io/library/alpine")
    assert cn_matches_gun("docker.io/library/*", "docker.io/library/alpine")
    assert not cn_matches_gun("docker.io/library/alpine", "docker.io/library/alpine2")
    assert not cn_matches_gun("docker.io/other/*", "docker.io/library/alpine")


def test_validate_own_root(repo: Repo) -> None:
    assert repo.root is not None
    result = validate_root(repo.root, GUN)
    assert result.own.verified and result.previous is None
    with pytest.raises(VerificationError, match="no valid root certificate"):
        validate_root(repo.root, "other/gun")


def test_bare_root_key_is_refused(repo: Repo) -> None:
    root_key = repo.keys[ROOT]
    md = _root_with([root_key.public_key], [(root_key, root_key.public_key)], repo)
    with pytest.raises(VerificationError, match="no valid root certificate"):
        validate_root(md, GUN)


def test_expired_and_future_certificates() -> None:
    key = PrivateKey.generate("ecdsa")
    old = make_certificate(key, GUN, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                           validity=dt.timedelta(days=10))
    with pytest.raises(CertificateError, match="expired"):
        check_certificate(old, check_expiry=True)
    check_certificate(old, check_expiry=False)
    future = make_certificate(key, GUN, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    with pytest.raises(CertificateError, match="not valid yet"):
        check_certificate(future, check_expiry=True)


def test_rotation_needs_old_threshold_and_own(repo: Repo) -> None:
    assert repo.root is not None
    old_private, old_public = repo.keys[ROOT], repo.public[ROOT]
    new_private = PrivateKey.generate("ecdsa")
    new_public = root_certificate_key(new_private, GUN)
    rotated = _root_with([new_public], [(old_private, old_public), (new_private, new_public)],
                         repo, version=2)
    result = validate_root(rotated, GUN, previous=repo.root)
    assert result.previous is not None and result.previous.verified
    only_new = _root_with([new_public], [(new_private, new_public)], repo, version=2)
    with pytest.raises(VerificationError, match="threshold of the trusted root"):
        validate_root(only_new, GUN, previous=repo.root)
    only_old = _root_with([new_public], [(old_private, old_public)], repo, version=2)
    with pytest.raises(VerificationError, match="own threshold"):
        validate_root(only_old, GUN, previous=repo.root)


def test_root_threshold_two_needs_two_distinct_certificates(repo: Repo) -> None:
    a, b = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    ca, cb = root_certificate_key(a, GUN), root_certificate_key(b, GUN)
    one = _root_with([ca, cb], [(a, ca)], repo, threshold=2)
    with pytest.raises(VerificationError, match="1 of 2"):
        validate_root(one, GUN)
    # a second certificate for the same key does not make a second signer
    ca2 = root_certificate_key(a, GUN)
    same = _root_with([ca, ca2], [(a, ca), (a, ca2)], repo, threshold=2)
    with pytest.raises(VerificationError, match="1 of 2"):
        validate_root(same, GUN)
    two = _root_with([ca, cb], [(a, ca), (b, cb)], repo, threshold=2)
    assert validate_root(two, GUN).own.distinct_signers == 2


def test_bundle_needs_one_leaf_first() -> None:
    key = PrivateKey.generate("ecdsa")
    leaf = make_certificate(key, GUN)
    two_leaves = PublicKey.from_certificates([leaf, make_certificate(key, GUN)])
    with pytest.raises(CertificateError, match="exactly one leaf"):
        root_leaf(two_leaves)
    root_leaf(PublicKey.from_certificates([leaf]))
