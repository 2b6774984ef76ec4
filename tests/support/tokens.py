"""A test token issuer for countersign's token authentication.

It plays the part of a Docker registry token service: a root CA and a leaf
certificate (optionally via an intermediate) made with ``cryptography``, the
root bundle as a PEM file, and JWTs signed as distribution-compatible issuers
sign them (ES256 with the leaf chain in ``x5c`` by default), plus the broken
variants the tests need: expired, wrong audience or issuer, ``kid``-only,
``jwk``, bad signature, ``alg: none``, HS256.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from countersign.server.auth import TokenAuth, TokenAuthConfig, libtrust_key_id

REALM = "https://auth.example.test/token"
SERVICE = "countersign-test"
ISSUER = "countersign test token issuer"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: One grant of the ``access`` claim: (type, name, actions).
Grant = tuple[str, str, Sequence[str]]

_EC_ALG = {"secp256r1": ("ES256", 32), "secp384r1": ("ES384", 48), "secp521r1": ("ES512", 66)}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    """A JWS segment: bytes as they are, anything else as compact JSON."""
    if isinstance(value, bytes):
        return b64url(value)
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def access(gun: str, *actions: str) -> Grant:
    """A repository grant: ``access("docker.io/x/y", "push", "pull")``."""
    return ("repository", gun, actions)


def catalog() -> Grant:
    """The admin grant ``registry:catalog:*``."""
    return ("registry", "catalog", ("*",))


def new_key(kind: str = "ec256") -> PrivateKey:
    """``ec256``/``ec384``/``ec521`` or ``rsa2048``."""
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curve: ec.EllipticCurve = {
        "ec256": ec.SECP256R1(),
        "ec384": ec.SECP384R1(),
        "ec521": ec.SECP521R1(),
    }[kind]
    return ec.generate_private_key(curve)


def default_alg(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC_ALG[key.curve.name][0]
    return "RS256"


def jws_sign(key: PrivateKey, alg: str, data: bytes) -> bytes:
    """The JWS signature of ``data``: ECDSA as raw ``r||s``, RSA as PKCS #1 v1.5."""
    digest = _HASHES[alg[2:]]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = _EC_ALG[key.curve.name][1]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data, padding.PKCS1v15(), digest)


def make_cert(
    key: PrivateKey,
    subject: str,
    *,
    issuer_key: PrivateKey | None = None,
    issuer_cert: x509.Certificate | None = None,
    ca: bool = False,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None = None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed unless an issuer is given."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(signer, hashes.SHA256())


def jwk_of(key: PrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> dict[str, Any]:
    """The public JWK of ``key`` with its libtrust ``kid``."""
    public = (
        key.public_key()
        if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
        else key
    )
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = _EC_ALG[public.curve.name][1]
        numbers = public.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return {
            "kty": "EC",
            "crv": crv[public.curve.name],
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
            "kid": libtrust_key_id(public),
        }
    rsa_numbers = public.public_numbers()
    return {
        "kty": "RSA",
        "n": b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        "kid": libtrust_key_id(public),
    }


def der_b64(cert: x509.Certificate) -> str:
    """A certificate as ``x5c`` holds it: standard base64 of the DER."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


@dataclass
class TokenIssuer:
    """A CA, a leaf signing key and a token minting function.

    ``now`` is the fixed POSIX time tokens and certificates are made around;
    give :meth:`auth` the same clock. With ``intermediate=True`` the leaf is
    issued by an intermediate CA that the root issued.
    """

    root_kind: str = "ec256"
    leaf_kind: str = "ec256"
    intermediate: bool = False
    now: float = field(default_factory=lambda: float(int(time.time())))
    realm: str = REALM
    service: str = SERVICE
    issuer: str = ISSUER

    def __post_init__(self) -> None:
        start = dt.datetime.fromtimestamp(self.now, dt.UTC) - dt.timedelta(days=1)
        end = start + dt.timedelta(days=365)
        self.root_key = new_key(self.root_kind)
        self.root_cert = make_cert(
            self.root_key, "test token root", ca=True, not_before=start, not_after=end
        )
        parent_key, parent_cert = self.root_key, self.root_cert
        self.chain_certs: list[x509.Certificate] = []
        if self.intermediate:
            self.intermediate_key = new_key("ec256")
            self.intermediate_cert = make_cert(
                self.intermediate_key,
                "test token intermediate",
                issuer_key=self.root_key,
                issuer_cert=self.root_cert,
                ca=True,
                not_before=start,
                not_after=end,
            )
            parent_key, parent_cert = self.intermediate_key, self.intermediate_cert
            self.chain_certs.append(self.intermediate_cert)
        self.leaf_key = new_key(self.leaf_kind)
        self.leaf_cert = make_cert(
            self.leaf_key,
            "test token signer",
            issuer_key=parent_key,
            issuer_cert=parent_cert,
            not_before=start,
            not_after=end,
        )

    # -- configuration ----------------------------------------------------------

    def bundle_pem(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    def write_bundle(self, path: Path) -> Path:
        """Write the root bundle (PEM) to ``path`` and return it."""
        path.write_bytes(self.bundle_pem())
        return path

    def config(self, bundle_path: Path) -> TokenAuthConfig:
        """A config loaded from a bundle written to ``bundle_path``."""
        self.write_bundle(bundle_path)
        return TokenAuthConfig.load(self.realm, self.service, self.issuer, bundle_path)

    def auth(self, config: TokenAuthConfig | None = None, *, at: float | None = None) -> TokenAuth:
        """A verifier trusting this issuer's root, with the clock fixed at ``at`` (or ``now``)."""
        cfg = config or TokenAuthConfig(self.realm, self.service, self.issuer, [self.root_cert])
        moment = self.now if at is None else at
        return TokenAuth(cfg, clock=lambda: moment)

    # -- tokens -----------------------------------------------------------------

    def x5c(self) -> list[str]:
        return [der_b64(self.leaf_cert), *(der_b64(c) for c in self.chain_certs)]

    def claims(
        self,
        grants: Sequence[Grant] = (),
        *,
        subject: str = "alice",
        audience: Any = None,
        issuer: str | None = None,
        expires_in: int | None = 300,
        not_before: int | None = None,
        issued_at: int | None = None,
    ) -> dict[str, Any]:
        """A claim set; ``expires_in``/``not_before`` are seconds relative to ``now``
        (``None`` omits the claim)."""
        now = int(self.now)
        claims: dict[str, Any] = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": subject,
            "aud": self.service if audience is None else audience,
            "iat": now if issued_at is None else issued_at,
            "jti": "test-token",
            "access": [
                {"type": rtype, "name": name, "actions": list(actions)}
                for rtype, name, actions in grants
            ],
        }
        if expires_in is not None:
            claims["exp"] = now + expires_in
        claims["nbf"] = now - 5 if not_before is None else now + not_before
        return claims

    def header(self, *, key_source: str = "x5c", alg: str | None = None) -> dict[str, Any]:
        """``key_source``: ``x5c`` (leaf chain), ``kid`` (root key ID), ``jwk`` (root key),
        ``jwk+x5c`` (leaf key with its chain), ``none`` (no key hint)."""
        signer = self.root_key if key_source in ("kid", "jwk") else self.leaf_key
        header: dict[str, Any] = {"typ": "JWT", "alg": alg or default_alg(signer)}
        if key_source == "x5c":
            header["x5c"] = self.x5c()
        elif key_source == "kid":
            header["kid"] = libtrust_key_id(self.root_key.public_key())
        elif key_source == "jwk":
            header["jwk"] = jwk_of(self.root_key)
        elif key_source == "jwk+x5c":
            header["jwk"] = {**jwk_of(self.leaf_key), "x5c": self.x5c()}
        elif key_source != "none":
            raise ValueError(key_source)
        return header

    def sign(
        self,
        header: Mapping[str, Any] | bytes,
        claims: Mapping[str, Any] | bytes,
        key: PrivateKey | None = None,
    ) -> str:
        """Sign arbitrary header and claims (JSON objects or raw bytes) with ``key``
        (default: the leaf key, or the root key when the header has no ``x5c``)."""
        if key is None:
            jwk = header.get("jwk") if isinstance(header, Mapping) else None
            uses_leaf = isinstance(header, Mapping) and (
                "x5c" in header or (isinstance(jwk, Mapping) and "x5c" in jwk)
            )
            key = self.leaf_key if uses_leaf else self.root_key
        alg = header.get("alg") if isinstance(header, Mapping) else None
        if not isinstance(alg, str) or alg[:2] not in ("ES", "RS") or alg[2:] not in _HASHES:
            alg = default_alg(key)
        head = segment(dict(header) if isinstance(header, Mapping) else header)
        body = segment(dict(claims) if isinstance(claims, Mapping) else claims)
        signing_input = f"{head}.{body}"
        return f"{signing_input}.{b64url(jws_sign(key, alg, signing_input.encode()))}"

    def mint(
        self,
        grants: Sequence[Grant] = (),
        *,
        key_source: str = "x5c",
        alg: str | None = None,
        **claim_options: Any,
    ) -> str:
        """A valid token granting ``grants`` (options as :meth:`claims` and :meth:`header`)."""
        header = self.header(key_source=key_source, alg=alg)
        return self.sign(header, self.claims(grants, **claim_options))

    # -- broken variants ----------------------------------------------------------

    def expired(self, grants: Sequence[Grant] = (), *, seconds_ago: int = 3600) -> str:
        return self.mint(grants, expires_in=-seconds_ago)

    def wrong_audience(self, grants: Sequence[Grant] = ()) -> str:
        return self.mint(grants, audience="some-other-service")

    def wrong_issuer(self, grants: Sequence[Grant] = ()) -> str:
        return self.mint(grants, issuer="some other issuer")

    def kid_only(self, grants: Sequence[Grant] = ()) -> str:
        return self.mint(grants, key_source="kid")

    def jwk(self, grants: Sequence[Grant] = ()) -> str:
        return self.mint(grants, key_source="jwk")

    def bad_signature(self, grants: Sequence[Grant] = ()) -> str:
        head, body, sig = self.mint(grants).split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[len(raw) // 2] ^= 0x01
        return f"{head}.{body}.{b64url(bytes(raw))}"

    def alg_none(self, grants: Sequence[Grant] = (), *, signature: bytes = b"") -> str:
        header = {"typ": "JWT", "alg": "none", "kid": libtrust_key_id(self.root_key.public_key())}
        return f"{segment(header)}.{segment(self.claims(grants))}.{b64url(signature)}"

    def hs256(self, grants: Sequence[Grant] = ()) -> str:
        """The key-confusion attack: HMAC keyed with the root's public key PEM."""
        public_pem = self.root_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"typ": "JWT", "alg": "HS256", "kid": libtrust_key_id(self.root_key.public_key())}
        signing_input = f"{segment(header)}.{segment(self.claims(grants))}"
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"
