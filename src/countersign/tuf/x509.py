"""Root and delegation certificates as notary makes and checks them.

Notary's root keys are self-signed X.509 certificates whose Common Name is the
GUN (or a prefix ending in ``*``); this module makes them exactly as
``notary init`` does and applies notary's ``ValidateCertificate`` rules.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from countersign.errors import CertificateError
from countersign.tuf.keys import MIN_RSA_BITS, PrivateKey, PublicKey

#: ``notary init`` certificates last ten years of 365 days.
ROOT_CERT_VALIDITY = _dt.timedelta(days=3650)
_SHA1_OIDS = {"1.2.840.113549.1.1.5", "1.2.840.10045.4.1", "1.2.840.10040.4.3"}


def make_certificate(
    key: PrivateKey,
    common_name: str,
    *,
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = ROOT_CERT_VALIDITY,
) -> x509.Certificate:
    """A self-signed certificate as notary's ``NewCertificate`` makes it.

    Subject and issuer ``CN=<name>``, a random serial below 2**128, key usage
    digitalSignature+keyEncipherment (critical), extended key usage codeSigning,
    basic constraints CA=false (critical). Long names (over the 64 characters of
    RFC 5280) are allowed, as Go allows them.
    """
    crypto = key.crypto_key
    if not isinstance(crypto, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateError("notary certificates hold ECDSA or RSA keys, not Ed25519")
    start = (now or _dt.datetime.now(_dt.UTC)).replace(microsecond=0)
    with warnings.catch_warnings():  # RFC 5280's 64-character limit, which Go ignores
        warnings.simplefilter("ignore", UserWarning)
        attribute = x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)
    name = x509.Name([attribute])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(crypto.public_key())
        .serial_number(secrets.randbelow(2**128 - 1) + 1)
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return builder.sign(crypto, hashes.SHA256())


def root_certificate_key(
    key: PrivateKey, gun: str, *, now: _dt.datetime | None = None
) -> PublicKey:
    """The ``ecdsa-x509``/``rsa-x509`` root key for ``gun`` wrapping ``key``."""
    return PublicKey.from_certificates([make_certificate(key, gun, now=now)])


def common_name(cert: x509.Certificate) -> str:
    try:
        with warnings.catch_warnings():  # long CNs are fine for notary
            warnings.simplefilter("ignore", UserWarning)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def cn_matches_gun(name: str, gun: str) -> bool:
    """notary's ``MatchCNToGun``: equal, or a prefix when the CN ends in ``*``."""
    if name.endswith("*"):
        return gun.startswith(name.rstrip("*"))
    return name == gun


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError as exc:  # malformed or duplicated extensions
        raise CertificateError(f"certificate {common_name(cert)!r}: {exc}") from None


def check_certificate(
    cert: x509.Certificate, *, check_expiry: bool, now: _dt.datetime | None = None
) -> None:
    """notary's ``ValidateCertificate``: sane validity, no SHA-1, RSA >= 2048, optionally fresh."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    cn = common_name(cert)
    if start > end:
        raise CertificateError(f"certificate {cn!r} is valid from after its end")
    if cert.signature_algorithm_oid.dotted_string in _SHA1_OIDS:
        raise CertificateError(f"certificate {cn!r} is signed with SHA-1, which notary refuses")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"certificate {cn!r} holds an unusable public key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CertificateError(f"certificate {cn!r} holds an RSA key below {MIN_RSA_BITS} bits")
    if check_expiry:
        now = now or _dt.datetime.now(_dt.UTC)
        if start > now + _dt.timedelta(days=1):
            raise CertificateError(f"certificate with CN {cn} is not valid yet")
        if now > end:
            raise CertificateError(f"certificate with CN {cn} is expired")


def root_leaf(key: PublicKey) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf and intermediates of a root key's bundle: one non-CA leaf, first."""
    certs = key.certificates
    if not certs:
        raise CertificateError(f"root key {key.key_id[:12]} is not a certificate")
    leaves = [c for c in certs if not is_ca(c)]
    if len(leaves) != 1 or is_ca(certs[0]):
        raise CertificateError(
            f"root key {key.key_id[:12]} needs exactly one leaf certificate, first in its bundle"
        )
    return certs[0], certs[1:]
