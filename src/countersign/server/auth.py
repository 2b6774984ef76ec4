"""Token authentication for the trust server, as notary-server 0.7 does it.

notary-server has one authentication method, ``auth.type: token``: the Docker
registry token scheme of docker/distribution's ``registry/auth/token`` package
(notary 0.7 vendors distribution 2.7.1; Debian's ``notary 0.7.0+ds1`` builds
against distribution 2.8.2, whose token and errcode code is the same). This
module reproduces it, and was checked request by request against that
notary-server binary:

* **What each route needs** (notary ``server/server.go`` and ``utils/http.go``):
  :func:`required_access`. A route with a GUN needs ``repository:<gun>:<action>``
  for each of its actions; a route without one (``GET /v2/``, the global change
  feed, the catch-all) needs ``registry:catalog:*`` whatever its actions.
* **The token** (``token/token.go``): ``Authorization: Bearer <jwt>``, a JWS in
  compact form; ``iss`` must equal the issuer, ``aud`` the service, ``exp`` and
  ``nbf`` hold with 60 s of leeway, the signing key comes from the header's
  ``x5c`` chain (verified up to the root bundle), ``jwk`` (a root-bundle key, or
  carrying its own verified ``x5c``) or ``kid`` (the libtrust fingerprint of a
  root-bundle key), tried in that order. ES256/ES384/ES512 (each only with its
  curve, signature ``r||s``) and RS256/RS384/RS512 (PKCS #1 v1.5), as libtrust
  verifies; never ``none``, HMAC or PSS.
* **The access check** (``token/accesscontroller.go``): every required access
  must be in the token's ``access`` claim, by resource type and name; the
  action ``*`` in the token satisfies any action.
* **The 401** (``accesscontroller.go`` ``challengeParams``, ``utils/http.go``
  ``doAuth``, ``api/errcode``): :func:`challenge_header` and
  :func:`unauthorized_body`, byte for byte.

Where this module is stricter than Go, it only refuses tokens no sane issuer
mints: padded base64url segments, duplicate JSON keys, keys that Go would match
case-insensitively to a claim, tokens over :data:`MAX_TOKEN_BYTES`, a ``jwk``
holding ``d``, SHA-1 or MD5 signed certificates, CA certificates with name
constraints. It is more
lenient in one place, as the spec allows: ``aud`` may be a list holding the
service (distribution 2.7/2.8 rejects a list as a malformed token).

Every failure is an :class:`AuthenticationRequired` carrying the exact status,
challenge and body to send; nothing else escapes :meth:`TokenAuth.authorize`.
The token is never logged, echoed or kept.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtensionOID

from countersign.errors import CountersignError
from countersign.tuf.canonical import go_string

__all__ = [
    "ERROR_INSUFFICIENT_SCOPE",
    "ERROR_INVALID_TOKEN",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_BYTES",
    "PUBLIC_ROUTES",
    "ROUTE_ACTIONS",
    "Access",
    "AuthConfigError",
    "AuthenticationRequired",
    "Authorizer",
    "Identity",
    "NoAuth",
    "TokenAuth",
    "TokenAuthConfig",
    "catalog_access",
    "challenge_header",
    "libtrust_key_id",
    "repository_access",
    "required_access",
    "unauthorized_body",
]

_log = logging.getLogger(__name__)

#: Clock skew allowed on ``exp`` and ``nbf`` (distribution's ``token.Leeway``).
LEEWAY_SECONDS: Final = 60
#: Longest token accepted, in characters of its compact form.
MAX_TOKEN_BYTES: Final = 16 * 1024
#: Most certificates accepted in an ``x5c`` chain (leaf included).
MAX_CHAIN_CERTS: Final = 8
#: Most signature checks spent building one chain.
_CHAIN_BUDGET: Final = 32
#: Largest root certificate bundle read.
_MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
#: Largest RSA modulus accepted from a ``jwk`` header.
_MAX_RSA_BITS: Final = 16384

#: ``error`` parameter of the challenge when a token was sent but is not valid.
ERROR_INVALID_TOKEN: Final = "invalid_token"  # noqa: S105 - not a secret
#: ``error`` parameter of the challenge when a valid token lacks an access.
ERROR_INSUFFICIENT_SCOPE: Final = "insufficient_scope"


# --------------------------------------------------------------------------- errors


class AuthConfigError(CountersignError):
    """Token authentication configuration that cannot be used."""


class AuthenticationRequired(CountersignError):
    """The request is not authorized: send ``status``, ``headers()`` and ``body``.

    ``error`` is ``None`` (no usable bearer token was sent), ``"invalid_token"``
    or ``"insufficient_scope"``; ``reason`` is a fixed phrase for the server
    log (it never holds the token or any value taken from it).
    """

    def __init__(
        self,
        challenge: str,
        body: bytes,
        status: int = 401,
        *,
        error: str | None = None,
        reason: str = "authentication required",
    ) -> None:
        super().__init__("authentication required")
        self.challenge = challenge
        self.body = body
        self.status = status
        self.error = error
        self.reason = reason

    def headers(self) -> list[tuple[str, str]]:
        """Response headers as notary-server writes them.

        Go canonicalises the name to ``Www-Authenticate`` on the wire (names are
        case-insensitive). The challenge may hold non-ASCII characters of a
        GUN; Go writes header values as UTF-8 bytes.
        """
        return [
            ("Www-Authenticate", self.challenge),
            ("Content-Type", "application/json; charset=utf-8"),
        ]


# --------------------------------------------------------------------------- access


@dataclass(frozen=True)
class Access:
    """One action on one resource: ``Access("repository", "<gun>", "push")``."""

    type: str
    name: str
    action: str


def repository_access(gun: str, *actions: str) -> list[Access]:
    """``repository:<gun>:<action>`` for each action, in order (``buildAccessRecords``)."""
    return [Access("repository", gun, action) for action in actions]


def catalog_access() -> list[Access]:
    """The one access a route without a GUN needs: ``registry:catalog:*``."""
    return [Access("registry", "catalog", "*")]


#: Actions each route of notary-server needs, by notary's operation name (names
#: without one in ``server.go`` are countersign's: ``Main`` is ``GET /v2/``,
#: ``GlobalChangefeed`` is ``GET /v2/_trust/changefeed``, ``NotFound`` is the
#: catch-all). Routes without a GUN need the catalog access whatever is listed.
ROUTE_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "Main": (),
        "UpdateTUF": ("push", "pull"),
        "GetRoleByHash": ("pull",),
        "GetRoleByVersion": ("pull",),
        "GetRole": ("pull",),
        "GetKey": ("push", "pull"),
        "RotateKey": ("*",),
        "DeleteTUF": ("*",),
        "Changefeed": ("pull",),
        "GlobalChangefeed": ("*",),
        "NotFound": (),
    }
)

#: Routes notary-server does not put behind authentication at all.
PUBLIC_ROUTES: Final = frozenset({"Health", "Metrics"})


def required_access(route_name: str, gun: str | None) -> list[Access]:
    """What a request to ``route_name`` for ``gun`` must be granted.

    As notary's ``rootHandler.doAuth``: with no GUN (``None`` or ``""``) the
    answer is always ``[registry:catalog:*]``; with one it is
    ``repository:<gun>:<action>`` per action of the route. For the routes in
    :data:`PUBLIC_ROUTES` the answer is ``[]``, meaning "do not call
    :meth:`Authorizer.authorize`" (an empty list given to :class:`TokenAuth`
    still demands a valid token, as distribution does). An unknown route name
    is a programming error (:class:`ValueError`).
    """
    if route_name in PUBLIC_ROUTES:
        return []
    try:
        actions = ROUTE_ACTIONS[route_name]
    except KeyError:
        raise ValueError(f"unknown route name {route_name!r}") from None
    if not gun:
        return catalog_access()
    return repository_access(gun, *actions)


@dataclass(frozen=True)
class Identity:
    """Who a request was authorized as.

    ``subject`` is the token's ``sub`` (``""`` when absent or without auth);
    ``granted`` lists every access the token grants (for :class:`NoAuth`, the
    accesses that were required); ``authenticated`` says whether a token was
    verified.
    """

    subject: str
    granted: tuple[Access, ...] = ()
    authenticated: bool = False


class Authorizer(Protocol):
    """Decides whether a request may have the accesses its route requires."""

    def authorize(self, authorization_header: str | None, required: Sequence[Access]) -> Identity:
        """Return who is authorized, or raise :class:`AuthenticationRequired`."""
        ...


class NoAuth:
    """notary-server without ``auth``: every request is allowed."""

    def authorize(self, authorization_header: str | None, required: Sequence[Access]) -> Identity:
        return Identity(subject="", granted=tuple(required), authenticated=False)


# --------------------------------------------------------------------------- challenge

_QUOTE_SPECIALS: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` (``strconv.Quote``) writes it.

    Printable characters stay as they are; ``"`` and ``\\`` get a backslash;
    others become ``\\a``-style, ``\\xhh``, ``\\uhhhh`` or ``\\Uhhhhhhhh``.
    Surrogate-escaped bytes (U+DC80..U+DCFF) are the invalid UTF-8 bytes Go
    writes as ``\\xhh``; other lone surrogates are U+FFFD.
    """
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif ch in _QUOTE_SPECIALS:
            out.append(_QUOTE_SPECIALS[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _scope_param(required: Iterable[Access]) -> str:
    """distribution's ``accessSet.scopeParam``: ``type:name:a,b`` per resource, space-joined.

    Go iterates maps, so its order is unspecified; this keeps first-seen order
    (``push,pull`` for an upload), which is what clients are shown in the spec.
    """
    resources: dict[tuple[str, str], list[str]] = {}
    for access in required:
        actions = resources.setdefault((access.type, access.name), [])
        if access.action not in actions:
            actions.append(access.action)
    return " ".join(
        f"{rtype}:{name}:{','.join(actions)}" for (rtype, name), actions in resources.items()
    )


def challenge_header(
    realm: str, service: str, required: Sequence[Access], error: str | None = None
) -> str:
    """The ``WWW-Authenticate`` value distribution's ``authChallenge`` writes.

    ``Bearer realm="<realm>",service="<service>"``, then ``,scope="<scope>"``
    unless nothing is required, then ``,error="invalid_token"`` or
    ``,error="insufficient_scope"`` when ``error`` is given. Values are quoted
    with Go's ``%q``.
    """
    text = f"Bearer realm={_go_quote(realm)},service={_go_quote(service)}"
    scope = _scope_param(required)
    if scope:
        text += f",scope={_go_quote(scope)}"
    if error is not None:
        text += f",error={_go_quote(error)}"
    return text


def _json_string(text: str) -> bytes:
    # Go's encoder writes each invalid UTF-8 byte (a surrogate here) as U+FFFD.
    if not text.isascii():
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return go_string(text)


def unauthorized_body(required: Sequence[Access]) -> bytes:
    """The 401 body notary's ``doAuth`` serves: ``UNAUTHORIZED`` with the accesses as detail.

    ``{"errors":[{"code":"UNAUTHORIZED","message":"authentication required",
    "detail":[{"Type":..,"Class":"","Name":..,"Action":..},...]}]}`` and a
    newline, as Go's ``json.Encoder`` writes ``errcode.Errors`` holding
    ``ErrorCodeUnauthorized.WithDetail([]auth.Access)`` (HTML-escaped strings).
    """
    detail = b",".join(
        b'{"Type":'
        + _json_string(access.type)
        + b',"Class":"","Name":'
        + _json_string(access.name)
        + b',"Action":'
        + _json_string(access.action)
        + b"}"
        for access in required
    )
    return (
        b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":['
        + detail
        + b"]}]}\n"
    )


# --------------------------------------------------------------------------- keys

_EC_ALGS: Final[Mapping[str, tuple[str, type[hashes.HashAlgorithm], int]]] = MappingProxyType(
    {
        "secp256r1": ("ES256", hashes.SHA256, 32),
        "secp384r1": ("ES384", hashes.SHA384, 48),
        "secp521r1": ("ES512", hashes.SHA512, 66),
    }
)
_JWK_CURVES: Final[Mapping[str, ec.EllipticCurve]] = MappingProxyType(
    {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
)
_RSA_ALGS: Final[Mapping[str, type[hashes.HashAlgorithm]]] = MappingProxyType(
    {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
)

_TokenKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _usable_key(key: object) -> _TokenKey | None:
    """The key if libtrust can use it (``FromCryptoPublicKey``): RSA, or EC on P-256/384/521."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGS:
        return key
    if isinstance(key, rsa.RSAPublicKey):
        return key
    return None


def libtrust_key_id(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """The libtrust fingerprint distribution uses as ``kid``.

    libtrust ``keyIDFromCryptoKey``: SHA-256 of the DER SubjectPublicKeyInfo,
    first 30 bytes (240 bits), base32 (RFC 4648 alphabet, no padding), in
    twelve groups of four joined by ``:``.
    """
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


# --------------------------------------------------------------------------- config

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class TokenAuthConfig:
    """notary-server's ``auth.options`` for ``auth.type: token``.

    ``realm`` is the token service URL clients are sent to, ``service`` the
    name tokens must carry in ``aud``, ``issuer`` the ``iss`` they must carry,
    ``root_certs`` the certificates (the ``rootcertbundle``) that token signing
    keys must chain to or be. ``autoredirect`` is not supported.
    """

    realm: str
    service: str
    issuer: str
    root_certs: list[x509.Certificate]

    def __post_init__(self) -> None:
        for name in ("realm", "service", "issuer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise AuthConfigError(
                    f"token auth requires a non-empty string option {name!r}",
                    advice="set auth.options.realm, service and issuer",
                )
        certs = list(self.root_certs)
        if not certs:
            raise AuthConfigError(
                "token auth requires at least one token signing root certificate",
                advice="point auth.options.rootcertbundle at a PEM file of the token "
                "issuer's root certificate(s)",
            )
        for index, cert in enumerate(certs):
            if not isinstance(cert, x509.Certificate):
                raise AuthConfigError(f"root certificate {index} is not an X.509 certificate")
            try:
                key = cert.public_key()
            except (ValueError, UnsupportedAlgorithm):
                key = None
            if _usable_key(key) is None:
                raise AuthConfigError(
                    f"unable to get public key from token auth root certificate {index}: "
                    "only RSA and ECDSA P-256/P-384/P-521 keys can sign tokens"
                )
        object.__setattr__(self, "root_certs", certs)

    @classmethod
    def load(
        cls, realm: str, service: str, issuer: str, rootcertbundle_path: str | Path
    ) -> TokenAuthConfig:
        """Read the root bundle (every ``CERTIFICATE`` PEM block of the file)."""
        path = Path(rootcertbundle_path)
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise AuthConfigError(
                f"unable to read token auth root certificate bundle file {str(path)!r}: "
                f"{exc.strerror or exc}"
            ) from None
        if len(data) > _MAX_BUNDLE_BYTES:
            raise AuthConfigError(
                f"token auth root certificate bundle file {str(path)!r} is larger than "
                f"{_MAX_BUNDLE_BYTES} bytes"
            )
        certs: list[x509.Certificate] = []
        for match in _PEM_BLOCK.finditer(data):
            if match.group(1) != b"CERTIFICATE":
                continue
            try:
                certs.append(x509.load_pem_x509_certificate(match.group(0)))
            except ValueError as exc:
                raise AuthConfigError(
                    f"unable to parse token auth root certificate {len(certs)} in "
                    f"{str(path)!r}: {exc}"
                ) from None
        if not certs:
            raise AuthConfigError(
                f"token auth requires at least one token signing root certificate; "
                f"{str(path)!r} holds no PEM CERTIFICATE block"
            )
        return cls(realm, service, issuer, certs)

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> TokenAuthConfig:
        """From notary-server's ``auth.options`` map (``realm``, ``service``, ``issuer``,
        ``rootcertbundle``; ``autoredirect`` only if false)."""
        values: list[str] = []
        for key in ("realm", "service", "issuer", "rootcertbundle"):
            value = options.get(key)
            if not isinstance(value, str):
                raise AuthConfigError(f"token auth requires a valid option string: {key!r}")
            values.append(value)
        redirect = options.get("autoredirect", False)
        if not isinstance(redirect, bool):
            raise AuthConfigError("token auth requires a valid option bool: autoredirect")
        if redirect:
            raise AuthConfigError(
                "token auth option autoredirect is not supported",
                advice="set auth.options.realm to the token service URL instead",
            )
        return cls.load(values[0], values[1], values[2], values[3])


# --------------------------------------------------------------------------- token parsing


class _Rejected(Exception):
    """A token that is not valid; ``reason`` is a fixed phrase, never token content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url_decode(segment: str, what: str) -> bytes:
    """base64url without padding (distribution's ``joseBase64UrlDecode``, minus ``=``)."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _Rejected(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _Rejected(f"{what} is not base64url") from None


def _b64std_decode(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise _Rejected(f"{what} is not base64")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _Rejected(f"{what} is not base64") from None


class _Float(float):
    """A JSON number with a fraction or exponent: fine in an unknown field, not in a claim."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Rejected("duplicate key in token JSON")
    return obj


def _parse_float(text: str) -> _Float:
    return _Float(text)


def _parse_constant(name: str) -> None:
    raise _Rejected("non-JSON constant in token JSON")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
    strict=True,
)


def _parse_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
    except _Rejected:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Rejected(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise _Rejected(f"{what} is not a JSON object")
    return value


def _check_keys(obj: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """Refuse keys Go's decoder would fold onto a known field (``ISS`` for ``iss``)."""
    for key in obj:
        if key not in known and key.casefold() in known:
            raise _Rejected(f"{what} has an ambiguously cased field")


def _opt_str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Rejected(f"{what} field {key} is not a string")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Rejected(f"{what} field {key} is not an integer")
    if not -(2**63) <= value < 2**63:
        raise _Rejected(f"{what} field {key} is out of the int64 range")
    return value


def _opt_str_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Rejected(f"{what} is not a list of strings")
    return value


_HEADER_FIELDS: Final = frozenset({"typ", "alg", "kid", "x5c", "jwk"})
_CLAIM_FIELDS: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"})
_ACCESS_FIELDS: Final = frozenset({"type", "class", "name", "actions"})


@dataclass(frozen=True)
class _Header:
    alg: str
    kid: str
    x5c: list[str]
    jwk: object


@dataclass(frozen=True)
class _Claims:
    issuer: str
    subject: str
    audiences: list[str]
    expiration: int
    not_before: int
    access: dict[tuple[str, str], set[str]]


def _parse_header(obj: Mapping[str, Any]) -> _Header:
    _check_keys(obj, _HEADER_FIELDS, "header")
    _opt_str(obj, "typ", "header")
    return _Header(
        alg=_opt_str(obj, "alg", "header"),
        kid=_opt_str(obj, "kid", "header"),
        x5c=_opt_str_list(obj.get("x5c"), "header x5c"),
        jwk=obj.get("jwk"),
    )


def _parse_claims(obj: Mapping[str, Any]) -> _Claims:
    _check_keys(obj, _CLAIM_FIELDS, "claims")
    aud = obj.get("aud")
    audiences = [aud] if isinstance(aud, str) else _opt_str_list(aud, "claim aud")
    _opt_str(obj, "jti", "claims")
    _opt_int(obj, "iat", "claims")
    raw_access = obj.get("access")
    if raw_access is None:
        raw_access = []
    if not isinstance(raw_access, list):
        raise _Rejected("claim access is not a list")
    access: dict[tuple[str, str], set[str]] = {}
    for entry in raw_access:
        if not isinstance(entry, dict):
            raise _Rejected("claim access holds a non-object")
        _check_keys(entry, _ACCESS_FIELDS, "access entry")
        _opt_str(entry, "class", "access entry")
        resource = (
            _opt_str(entry, "type", "access entry"),
            _opt_str(entry, "name", "access entry"),
        )
        access.setdefault(resource, set()).update(
            _opt_str_list(entry.get("actions"), "access entry actions")
        )
    return _Claims(
        issuer=_opt_str(obj, "iss", "claims"),
        subject=_opt_str(obj, "sub", "claims"),
        audiences=audiences,
        expiration=_opt_int(obj, "exp", "claims"),
        not_before=_opt_int(obj, "nbf", "claims"),
        access=access,
    )


# --------------------------------------------------------------------------- certificates

#: Extensions Go's x509 parser handles; any other critical one fails verification.
_HANDLED_EXTENSIONS: Final = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
_WEAK_HASHES: Final = ("md5", "sha1")


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> Any:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _check_cert(cert: x509.Certificate, now: _dt.datetime) -> None:
    """Validity period and critical extensions (Go's ``isValid``, per certificate)."""
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise _Rejected("certificate outside its validity period")
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _HANDLED_EXTENSIONS:
            raise _Rejected("certificate has an unhandled critical extension")


def _check_issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Go's ``CheckSignatureFrom``: parent may sign, signature verifies, no weak hash."""
    constraints = _extension(parent, ExtensionOID.BASIC_CONSTRAINTS)
    if parent.version == x509.Version.v3 and (constraints is None or not constraints.ca):
        return False
    if constraints is not None and not constraints.ca:
        return False
    usage = _extension(parent, ExtensionOID.KEY_USAGE)
    if usage is not None and not usage.key_cert_sign:
        return False
    try:
        digest = child.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return False
    if digest is not None and digest.name in _WEAK_HASHES:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _ca_ok(cert: x509.Certificate, now: _dt.datetime, below: int, *, root: bool) -> bool:
    """``cert`` as a CA with ``below`` intermediates under it (path length, name constraints)."""
    try:
        _check_cert(cert, now)
    except _Rejected:
        return False
    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if not root and (constraints is None or not constraints.ca):
        return False
    if (
        constraints is not None
        and constraints.path_length is not None
        and below > constraints.path_length
    ):
        return False
    return _extension(cert, ExtensionOID.NAME_CONSTRAINTS) is None


# --------------------------------------------------------------------------- verifier


class TokenAuth:
    """distribution's token ``accessController`` over a :class:`TokenAuthConfig`.

    ``clock`` returns POSIX seconds; it decides ``exp``/``nbf`` and the
    validity of ``x5c`` certificates.
    """

    def __init__(self, config: TokenAuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._roots = list(config.root_certs)
        self._root_ders = {cert.public_bytes(serialization.Encoding.DER) for cert in self._roots}
        self._trusted: dict[str, _TokenKey] = {}
        for cert in self._roots:
            key = _usable_key(cert.public_key())
            if key is not None:
                self._trusted[libtrust_key_id(key)] = key

    # -- the AccessController ---------------------------------------------------

    def authorize(self, authorization_header: str | None, required: Sequence[Access]) -> Identity:
        """Check the ``Authorization`` header against ``required``.

        Returns the :class:`Identity` of a valid token granting every required
        access; otherwise raises :class:`AuthenticationRequired`.
        """
        required = list(required)
        # Go's header reader trims surrounding whitespace; distribution splits on " ".
        parts = (authorization_header or "").strip(" \t\r\n").split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise self._challenge(required, None, "no bearer token")
        try:
            claims = self._verify(parts[1])
        except _Rejected as exc:
            raise self._challenge(required, ERROR_INVALID_TOKEN, exc.reason) from None
        except Exception as exc:  # a verifier bug must still be a 401
            _log.warning("token verification failed unexpectedly (%s)", type(exc).__name__)
            raise self._challenge(required, ERROR_INVALID_TOKEN, "verification error") from None
        for access in required:
            actions = claims.access.get((access.type, access.name))
            if actions is None or ("*" not in actions and access.action not in actions):
                raise self._challenge(required, ERROR_INSUFFICIENT_SCOPE, "insufficient scope")
        granted = tuple(
            Access(rtype, name, action)
            for (rtype, name), actions in claims.access.items()
            for action in sorted(actions)
        )
        return Identity(subject=claims.subject, granted=granted, authenticated=True)

    def _challenge(
        self, required: Sequence[Access], error: str | None, reason: str
    ) -> AuthenticationRequired:
        _log.log(
            logging.DEBUG if error is None else logging.INFO, "authorization refused: %s", reason
        )
        return AuthenticationRequired(
            challenge_header(self.config.realm, self.config.service, required, error),
            unauthorized_body(required),
            401,
            error=error,
            reason=reason,
        )

    # -- the token --------------------------------------------------------------

    def _verify(self, raw: str) -> _Claims:
        if len(raw) > MAX_TOKEN_BYTES:
            raise _Rejected("token too large")
        parts = raw.split(".")
        if len(parts) != 3:
            raise _Rejected("token is not three dot-separated segments")
        header = _parse_header(_parse_object(_b64url_decode(parts[0], "header"), "header"))
        claims = _parse_claims(_parse_object(_b64url_decode(parts[1], "claims"), "claims"))
        signature = _b64url_decode(parts[2], "signature")

        config = self.config
        if claims.issuer != config.issuer:
            raise _Rejected("token from an untrusted issuer")
        if config.service not in claims.audiences:
            raise _Rejected("token intended for another audience")
        now = self._clock()
        if now > claims.expiration + LEEWAY_SECONDS:
            raise _Rejected("token expired")
        if now < claims.not_before - LEEWAY_SECONDS:
            raise _Rejected("token not yet valid")
        if not signature:
            raise _Rejected("token has no signature")
        key = self._signing_key(header, now)
        _verify_signature(key, header.alg, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
        return claims

    def _signing_key(self, header: _Header, now: float) -> _TokenKey:
        """distribution's ``VerifySigningKey``: ``x5c``, else ``jwk``, else ``kid``."""
        if header.x5c:
            return self._verify_chain(header.x5c, now)
        if header.jwk is not None:
            return self._jwk_key(header.jwk, now)
        if header.kid:
            key = self._trusted.get(header.kid)
            if key is None:
                raise _Rejected("token signed by an untrusted key ID")
            return key
        raise _Rejected("token names no signing key")

    def _verify_chain(self, x5c: Sequence[object], now_ts: float) -> _TokenKey:
        """The leaf key of ``x5c`` once the chain verifies up to a root (Go's ``Verify``)."""
        if len(x5c) > MAX_CHAIN_CERTS:
            raise _Rejected("certificate chain too long")
        certs: list[x509.Certificate] = []
        for item in x5c:
            try:
                certs.append(x509.load_der_x509_certificate(_b64std_decode(item, "x5c")))
            except ValueError:
                raise _Rejected("x5c holds an unparsable certificate") from None
        leaf, intermediates = certs[0], certs[1:]
        now = _dt.datetime.fromtimestamp(now_ts, _dt.UTC)
        _check_cert(leaf, now)
        if leaf.public_bytes(serialization.Encoding.DER) not in self._root_ders:
            budget = [_CHAIN_BUDGET]
            if not self._chains_to_root(leaf, [leaf], intermediates, now, budget):
                raise _Rejected("certificate chain does not verify to a trusted root")
        try:
            key = _usable_key(leaf.public_key())
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if key is None:
            raise _Rejected("leaf certificate key cannot sign tokens")
        return key

    def _chains_to_root(
        self,
        cert: x509.Certificate,
        chain: list[x509.Certificate],
        pool: list[x509.Certificate],
        now: _dt.datetime,
        budget: list[int],
    ) -> bool:
        issuer = cert.issuer.public_bytes()
        below = len(chain) - 1
        candidates = [(root, True) for root in self._roots]
        candidates += [(c, False) for c in pool if all(c is not link for link in chain)]
        for candidate, is_root in candidates:
            if candidate.subject.public_bytes() != issuer:
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return False
            if not _check_issued_by(cert, candidate):
                continue
            if not _ca_ok(candidate, now, below, root=is_root):
                continue
            if is_root:
                return True
            if len(chain) < MAX_CHAIN_CERTS and self._chains_to_root(
                candidate, [*chain, candidate], pool, now, budget
            ):
                return True
        return False

    def _jwk_key(self, jwk: object, now: float) -> _TokenKey:
        """libtrust ``UnmarshalPublicKeyJWK`` plus distribution's ``parseAndVerifyRawJWK``."""
        if not isinstance(jwk, dict):
            raise _Rejected("jwk is not an object")
        key = _jwk_public_key(jwk)
        key_id = libtrust_key_id(key)
        if "kid" in jwk and jwk["kid"] != key_id:
            raise _Rejected("jwk kid does not match its key")
        x5c = jwk.get("x5c")
        if not isinstance(x5c, list):
            if key_id not in self._trusted:
                raise _Rejected("untrusted jwk with no certificate chain")
            return key
        if not x5c:
            raise _Rejected("empty jwk certificate chain")
        leaf_key = self._verify_chain(x5c, now)
        if libtrust_key_id(leaf_key) != key_id:
            raise _Rejected("jwk does not match its leaf certificate")
        return key


def _jwk_public_key(jwk: Mapping[str, Any]) -> _TokenKey:
    kty = jwk.get("kty")
    if "d" in jwk:
        raise _Rejected("jwk holds a private key")
    try:
        if kty == "EC":
            crv = jwk.get("crv")
            curve = _JWK_CURVES.get(crv) if isinstance(crv, str) else None
            if curve is None:
                raise _Rejected("jwk curve not supported")
            size = _EC_ALGS[curve.name][2]
            x_bytes = _b64url_decode(_jwk_str(jwk, "x"), "jwk x")
            y_bytes = _b64url_decode(_jwk_str(jwk, "y"), "jwk y")
            if len(x_bytes) != size or len(y_bytes) != size:
                raise _Rejected("jwk coordinate of the wrong length")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x_bytes, "big"), int.from_bytes(y_bytes, "big"), curve
            ).public_key()
        if kty == "RSA":
            n_bytes = _b64url_decode(_jwk_str(jwk, "n"), "jwk n")
            e_bytes = _b64url_decode(_jwk_str(jwk, "e"), "jwk e")
            if not n_bytes or len(n_bytes) * 8 > _MAX_RSA_BITS or not 0 < len(e_bytes) <= 8:
                raise _Rejected("jwk RSA parameters out of range")
            return rsa.RSAPublicNumbers(
                int.from_bytes(e_bytes, "big"), int.from_bytes(n_bytes, "big")
            ).public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise _Rejected("jwk is not a valid public key") from None
    raise _Rejected("jwk key type not supported")


def _jwk_str(jwk: Mapping[str, Any], key: str) -> str:
    value = jwk.get(key)
    if not isinstance(value, str):
        raise _Rejected(f"jwk {key} is not a string")
    return value


def _verify_signature(key: _TokenKey, alg: str, data: bytes, signature: bytes) -> None:
    """libtrust's ``Verify``: EC keys take only their curve's ES alg; RSA takes RS256/384/512."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            expected, digest, size = _EC_ALGS[key.curve.name]
            if alg != expected:
                raise _Rejected("signature algorithm does not fit the key")
            if len(signature) != 2 * size:
                raise _Rejected("ECDSA signature of the wrong length")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest()))
            return
        rsa_digest = _RSA_ALGS.get(alg)
        if rsa_digest is None:
            raise _Rejected("signature algorithm does not fit the key")
        key.verify(signature, data, padding.PKCS1v15(), rsa_digest())
    except (InvalidSignature, ValueError):
        raise _Rejected("bad token signature") from None
