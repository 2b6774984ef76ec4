"""Token authentication: route scopes, token verification, the exact 401.

The challenge and body literals below are what the real notary-server 0.7
(Debian build) sent for the same requests and tokens.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import string
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokens import (
    ISSUER,
    REALM,
    SERVICE,
    TokenIssuer,
    access,
    b64url,
    catalog,
    der_b64,
    jwk_of,
    make_cert,
    new_key,
    segment,
)

from countersign.errors import CountersignError
from countersign.server.auth import (
    MAX_TOKEN_BYTES,
    Access,
    AuthConfigError,
    AuthenticationRequired,
    Authorizer,
    Identity,
    NoAuth,
    TokenAuth,
    TokenAuthConfig,
    challenge_header,
    libtrust_key_id,
    required_access,
    unauthorized_body,
)

GUN = "localhost:5000/test/app"
OTHER = "localhost:5000/test/other"
PREFIX = f'Bearer realm="{REALM}",service="{SERVICE}"'


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture(scope="module")
def auth(issuer: TokenIssuer) -> TokenAuth:
    return issuer.auth()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(
    authorizer: Authorizer, header: str | None, required: list[Access]
) -> AuthenticationRequired:
    with pytest.raises(AuthenticationRequired) as info:
        authorizer.authorize(header, required)
    return info.value


def detail(gun: str, *actions: str) -> str:
    return ",".join(
        f'{{"Type":"repository","Class":"","Name":"{gun}","Action":"{a}"}}' for a in actions
    )


def body_of(detail_json: str) -> bytes:
    return (
        '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":['
        + detail_json
        + "]}]}\n"
    ).encode()


# --------------------------------------------------------------------------- routes


def test_route_scopes_follow_notary_server() -> None:
    def pairs(route: str, gun: str | None) -> list[tuple[str, str, str]]:
        return [(a.type, a.name, a.action) for a in required_access(route, gun)]

    assert pairs("UpdateTUF", GUN) == [("repository", GUN, "push"), ("repository", GUN, "pull")]
    for route in ("GetRole", "GetRoleByHash", "GetRoleByVersion", "Changefeed"):
        assert pairs(route, GUN) == [("repository", GUN, "pull")]
    assert pairs("GetKey", GUN) == [("repository", GUN, "push"), ("repository", GUN, "pull")]
    assert pairs("RotateKey", GUN) == [("repository", GUN, "*")]
    assert pairs("DeleteTUF", GUN) == [("repository", GUN, "*")]
    catalog_scope = [("registry", "catalog", "*")]
    for route in ("Main", "GlobalChangefeed", "NotFound", "Changefeed"):
        assert pairs(route, None) == catalog_scope
        assert pairs(route, "") == catalog_scope
    assert required_access("Health", None) == []
    assert required_access("Metrics", None) == []
    with pytest.raises(ValueError, match="unknown route"):
        required_access("Nope", GUN)


# --------------------------------------------------------------------------- access decisions


def test_push_pull_token_allows_update(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint([access(GUN, "push", "pull")], subject="bob")
    identity = auth.authorize(bearer(token), required_access("UpdateTUF", GUN))
    assert identity == Identity(
        subject="bob",
        granted=(Access("repository", GUN, "pull"), Access("repository", GUN, "push")),
        authenticated=True,
    )
    auth.authorize(bearer(token), required_access("GetKey", GUN))
    auth.authorize(bearer(token), required_access("GetRole", GUN))


def test_pull_only_token_cannot_push(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint([access(GUN, "pull")])
    auth.authorize(bearer(token), required_access("GetRole", GUN))
    auth.authorize(bearer(token), required_access("Changefeed", GUN))
    exc = refused(auth, bearer(token), required_access("UpdateTUF", GUN))
    assert exc.status == 401
    assert exc.error == "insufficient_scope"
    assert exc.challenge == (
        f'{PREFIX},scope="repository:{GUN}:push,pull",error="insufficient_scope"'
    )
    assert exc.body == body_of(detail(GUN, "push", "pull"))
    refused(auth, bearer(token), required_access("GetKey", GUN))


def test_token_for_one_gun_cannot_read_another(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint([access(GUN, "*")])
    exc = refused(auth, bearer(token), required_access("GetRole", OTHER))
    assert exc.challenge == f'{PREFIX},scope="repository:{OTHER}:pull",error="insufficient_scope"'
    assert exc.body == body_of(detail(OTHER, "pull"))


def test_star_satisfies_every_action(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint([access(GUN, "*")])
    for route in ("UpdateTUF", "GetRole", "GetKey", "RotateKey", "DeleteTUF", "Changefeed"):
        auth.authorize(bearer(token), required_access(route, GUN))


def test_star_is_required_for_rotation_and_delete(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint([access(GUN, "push", "pull")])
    for route in ("RotateKey", "DeleteTUF"):
        exc = refused(auth, bearer(token), required_access(route, GUN))
        assert exc.challenge == f'{PREFIX},scope="repository:{GUN}:*",error="insufficient_scope"'
        assert exc.body == body_of(detail(GUN, "*"))


def test_catalog_scope_for_routes_without_gun(issuer: TokenIssuer, auth: TokenAuth) -> None:
    admin = issuer.mint([catalog()])
    for route in ("Main", "GlobalChangefeed", "NotFound"):
        auth.authorize(bearer(admin), required_access(route, None))
    catalog_body = body_of('{"Type":"registry","Class":"","Name":"catalog","Action":"*"}')
    for token in (
        issuer.mint([access(GUN, "*")]),
        issuer.mint([("registry", "catalog", ["pull"])]),
    ):
        exc = refused(auth, bearer(token), required_access("Main", None))
        assert exc.challenge == f'{PREFIX},scope="registry:catalog:*",error="insufficient_scope"'
        assert exc.body == catalog_body
    # A catalog token is no repository token.
    refused(auth, bearer(admin), required_access("GetRole", GUN))


def test_resource_type_and_name_match_exactly(issuer: TokenIssuer, auth: TokenAuth) -> None:
    for grant in (
        ("Repository", GUN, ["pull"]),
        ("repository", GUN.upper(), ["pull"]),
        ("repository", GUN + "/", ["pull"]),
        ("repository", GUN, ["PULL"]),
    ):
        exc = refused(auth, bearer(issuer.mint([grant])), required_access("GetRole", GUN))
        assert exc.error == "insufficient_scope"


def test_class_is_ignored_and_grants_merge(issuer: TokenIssuer, auth: TokenAuth) -> None:
    claims = issuer.claims()
    claims["access"] = [
        {"type": "repository", "class": "image", "name": GUN, "actions": ["push"]},
        {"type": "repository", "name": GUN, "actions": ["pull"]},
    ]
    token = issuer.sign(issuer.header(), claims)
    auth.authorize(bearer(token), required_access("UpdateTUF", GUN))


def test_empty_requirement_still_needs_a_valid_token(issuer: TokenIssuer, auth: TokenAuth) -> None:
    exc = refused(auth, None, [])
    assert exc.challenge == PREFIX
    assert exc.body == body_of("")
    assert auth.authorize(bearer(issuer.mint()), []).authenticated


def test_no_auth_allows_everything() -> None:
    required = required_access("DeleteTUF", GUN)
    identity = NoAuth().authorize(None, required)
    assert identity == Identity(subject="", granted=tuple(required), authenticated=False)
    assert NoAuth().authorize("Bearer garbage", catalog_access_list()).authenticated is False


def catalog_access_list() -> list[Access]:
    return required_access("Main", None)


# --------------------------------------------------------------------------- the challenge


def test_challenge_without_token_has_no_error(auth: TokenAuth) -> None:
    required = required_access("GetRole", GUN)
    expected = f'{PREFIX},scope="repository:{GUN}:pull"'
    # "Bearer " trims to "Bearer"; a tab or two spaces do not split into two parts.
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer\tx", "Bearer  x"):
        exc = refused(auth, header, required)
        assert exc.challenge == expected, header
        assert exc.error is None
        assert exc.body == body_of(detail(GUN, "pull"))


def test_challenge_and_body_byte_exact(auth: TokenAuth) -> None:
    exc = refused(auth, "Bearer abc", required_access("UpdateTUF", GUN))
    assert exc.challenge == (
        'Bearer realm="https://auth.example.test/token",service="countersign-test",'
        'scope="repository:localhost:5000/test/app:push,pull",error="invalid_token"'
    )
    assert exc.body == (
        b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":['
        b'{"Type":"repository","Class":"","Name":"localhost:5000/test/app","Action":"push"},'
        b'{"Type":"repository","Class":"","Name":"localhost:5000/test/app","Action":"pull"}'
        b"]}]}\n"
    )
    assert exc.status == 401
    assert exc.headers() == [
        ("Www-Authenticate", exc.challenge),
        ("Content-Type", "application/json; charset=utf-8"),
    ]
    assert isinstance(exc, CountersignError)


def test_challenge_quotes_like_go() -> None:
    # As notary-server wrote them for these GUNs: Go's %q in the header, Go's
    # HTML-escaping JSON encoder in the body.
    cases = [
        (
            'a<b&c"d\\e',
            'scope="repository:a<b&c\\"d\\\\e:pull"',
            b'"Name":"a\\u003cb\\u0026c\\"d\\\\e"',
        ),
        ("x\x01y\x7fz", 'scope="repository:x\\x01y\\x7fz:pull"', b'"Name":"x\\u0001y\x7fz"'),
        ("t\u2028u", 'scope="repository:t\\u2028u:pull"', b'"Name":"t\\u2028u"'),
        ("tab\there", 'scope="repository:tab\\there:pull"', b'"Name":"tab\\there"'),
        ("nb\u00a0sp", 'scope="repository:nb\\u00a0sp:pull"', '"Name":"nb\u00a0sp"'.encode()),
        ("caf\u00e9/x", 'scope="repository:caf\u00e9/x:pull"', '"Name":"caf\u00e9/x"'.encode()),
        ("e\U0001f600", 'scope="repository:e\U0001f600:pull"', '"Name":"e\U0001f600"'.encode()),
    ]
    for gun, scope, name in cases:
        required = required_access("GetRole", gun)
        assert challenge_header(REALM, SERVICE, required) == f"{PREFIX},{scope}"
        assert name in unauthorized_body(required)


def test_challenge_helpers() -> None:
    required = [Access("repository", "a", "pull"), Access("repository", "a", "pull")]
    assert challenge_header("r", "s", required, "invalid_token") == (
        'Bearer realm="r",service="s",scope="repository:a:pull",error="invalid_token"'
    )
    two = [Access("repository", "a", "pull"), Access("registry", "catalog", "*")]
    assert challenge_header("r", "s", two).endswith('scope="repository:a:pull registry:catalog:*"')
    assert challenge_header("r", "s", []) == 'Bearer realm="r",service="s"'


# --------------------------------------------------------------------------- token validity


def assert_invalid(auth: TokenAuth, token: str, route: str = "GetRole") -> AuthenticationRequired:
    exc = refused(auth, bearer(token), required_access(route, GUN))
    assert exc.error == "invalid_token"
    assert exc.challenge == f'{PREFIX},scope="repository:{GUN}:pull",error="invalid_token"'
    assert exc.body == body_of(detail(GUN, "pull"))
    return exc


PULL = [access(GUN, "pull")]


def test_expiry_and_not_before_with_leeway(issuer: TokenIssuer, auth: TokenAuth) -> None:
    ok = required_access("GetRole", GUN)
    for expires_in in (1, 0, -59, -60):
        auth.authorize(bearer(issuer.mint(PULL, expires_in=expires_in)), ok)
    for expires_in in (-61, -3600):
        assert_invalid(auth, issuer.mint(PULL, expires_in=expires_in))
    assert_invalid(auth, issuer.expired(PULL))
    assert_invalid(auth, issuer.mint(PULL, expires_in=None))  # exp absent is exp 0
    for not_before in (0, 59, 60):
        auth.authorize(bearer(issuer.mint(PULL, not_before=not_before)), ok)
    assert_invalid(auth, issuer.mint(PULL, not_before=61))
    # The clock decides: the same token expires as time passes.
    token = issuer.mint(PULL, expires_in=10)
    issuer.auth(at=issuer.now + 70).authorize(bearer(token), ok)
    assert_invalid(issuer.auth(at=issuer.now + 71), token)


def test_audience(issuer: TokenIssuer, auth: TokenAuth) -> None:
    ok = required_access("GetRole", GUN)
    assert_invalid(auth, issuer.wrong_audience(PULL))
    assert_invalid(auth, issuer.sign(issuer.header(), {**issuer.claims(PULL), "aud": None}))
    assert_invalid(auth, issuer.sign(issuer.header(), {**issuer.claims(PULL), "aud": []}))
    assert_invalid(auth, issuer.mint(PULL, audience=["other"]))
    assert_invalid(auth, issuer.mint(PULL, audience=SERVICE.upper()))
    # A list holding the service is accepted (RFC 7519; distribution 2.7 refuses it).
    auth.authorize(bearer(issuer.mint(PULL, audience=["other", SERVICE])), ok)


def test_issuer(issuer: TokenIssuer, auth: TokenAuth) -> None:
    assert_invalid(auth, issuer.wrong_issuer(PULL))
    assert_invalid(auth, issuer.mint(PULL, issuer=""))
    assert_invalid(auth, issuer.mint(PULL, issuer=ISSUER + " "))


def test_signature_and_algorithm(issuer: TokenIssuer, auth: TokenAuth) -> None:
    assert_invalid(auth, issuer.bad_signature(PULL))
    assert_invalid(auth, issuer.alg_none(PULL))
    assert_invalid(auth, issuer.alg_none(PULL, signature=b"x" * 64))
    assert_invalid(auth, issuer.hs256(PULL))
    claims = issuer.claims(PULL)
    for alg in ("ES384", "ES512", "RS256", "PS256", "HS256", "none", "", "es256"):
        header = {**issuer.header(), "alg": alg}
        assert_invalid(auth, issuer.sign(header, claims))
    # The signature must be raw r||s, not DER.
    head, body, _ = issuer.mint(PULL).split(".")
    der = issuer.leaf_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert_invalid(auth, f"{head}.{body}.{b64url(der)}")
    # Claims changed after signing.
    token = issuer.mint(PULL)
    forged = issuer.mint([access(GUN, "*")]).split(".")[1]
    assert_invalid(auth, ".".join([token.split(".")[0], forged, token.split(".")[2]]))


def test_other_key_types_and_curves(auth: TokenAuth) -> None:
    ok = required_access("GetRole", GUN)
    for kinds in (("rsa2048", "rsa2048"), ("ec384", "ec521"), ("ec256", "rsa2048")):
        other = TokenIssuer(root_kind=kinds[0], leaf_kind=kinds[1])
        verifier = other.auth()
        for source in ("x5c", "kid", "jwk", "jwk+x5c"):
            verifier.authorize(bearer(other.mint(PULL, key_source=source)), ok)
        # Tokens from another root are not trusted.
        assert_invalid(auth, other.mint(PULL))
    rsa_issuer = TokenIssuer(root_kind="rsa2048", leaf_kind="rsa2048")
    for alg in ("RS384", "RS512"):
        rsa_issuer.auth().authorize(bearer(rsa_issuer.mint(PULL, alg=alg)), ok)
    assert_invalid(rsa_issuer.auth(), rsa_issuer.mint(PULL, alg="ES256"))


# --------------------------------------------------------------------------- signing keys


def test_kid_and_jwk(issuer: TokenIssuer, auth: TokenAuth) -> None:
    ok = required_access("GetRole", GUN)
    auth.authorize(bearer(issuer.kid_only(PULL)), ok)
    auth.authorize(bearer(issuer.jwk(PULL)), ok)
    auth.authorize(bearer(issuer.mint(PULL, key_source="jwk+x5c")), ok)
    claims = issuer.claims(PULL)
    leaf_kid = libtrust_key_id(issuer.leaf_key.public_key())
    # kid of a key that is not a root: refused.
    assert_invalid(auth, issuer.sign({"alg": "ES256", "kid": leaf_kid}, claims, issuer.leaf_key))
    assert_invalid(auth, issuer.sign({"alg": "ES256", "kid": "AAAA:BBBB"}, claims))
    # A jwk of a non-root key without a chain, a jwk whose kid lies, a jwk with "d".
    assert_invalid(auth, issuer.sign({"alg": "ES256", "jwk": jwk_of(issuer.leaf_key)}, claims))
    lying = {**jwk_of(issuer.root_key), "kid": leaf_kid}
    assert_invalid(auth, issuer.sign({"alg": "ES256", "jwk": lying}, claims))
    private = {**jwk_of(issuer.root_key), "d": "AAAA"}
    assert_invalid(auth, issuer.sign({"alg": "ES256", "jwk": private}, claims))
    # A jwk with a chain must be the chain's leaf key.
    mismatch = {**jwk_of(issuer.root_key), "x5c": issuer.x5c()}
    assert_invalid(auth, issuer.sign({"alg": "ES256", "jwk": mismatch}, claims, issuer.root_key))
    # Preference order: x5c first, then jwk, then kid; empty x5c / null jwk fall through.
    root_kid = libtrust_key_id(issuer.root_key.public_key())
    header = {"alg": "ES256", "x5c": [], "jwk": None, "kid": root_kid}
    auth.authorize(bearer(issuer.sign(header, claims, issuer.root_key)), ok)
    header = {"alg": "ES256", "x5c": issuer.x5c(), "kid": root_kid}
    assert_invalid(auth, issuer.sign(header, claims, issuer.root_key))
    # No key hint at all.
    assert_invalid(auth, issuer.sign({"alg": "ES256"}, claims, issuer.root_key))


def test_libtrust_key_id() -> None:
    # Vector confirmed by notary-server accepting a kid-only token signed by this key.
    key = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1()).public_key()
    assert libtrust_key_id(key) == "FIRK:SH6X:JLE3:T5FS:YH5Z:F4IQ:S2NQ:BDMK:GBHB:GRBM:VT5B:LGOS"
    for kind in ("ec256", "ec384", "rsa2048"):
        kid = libtrust_key_id(new_key(kind).public_key())
        assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", kid)


def _leaf(
    issuer: TokenIssuer,
    *,
    parent: tuple[Any, x509.Certificate] | None = None,
    ca: bool = False,
    path_length: int | None = None,
    days: tuple[int, int] = (-1, 30),
    critical_unknown: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    parent_key, parent_cert = parent or (issuer.root_key, issuer.root_cert)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.fromtimestamp(issuer.now, dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
            critical=True,
        )
    return key, builder.sign(parent_key, hashes.SHA256())


def _chain_token(issuer: TokenIssuer, certs: list[x509.Certificate], key: Any) -> str:
    header = {"alg": "ES256", "x5c": [der_b64(c) for c in certs]}
    return issuer.sign(header, issuer.claims(PULL), key)


def test_x5c_chains(issuer: TokenIssuer, auth: TokenAuth) -> None:
    ok = required_access("GetRole", GUN)
    # An intermediate CA in the chain.
    chained = TokenIssuer(intermediate=True)
    chained.auth().authorize(bearer(chained.mint(PULL)), ok)
    inter = chained.intermediate_cert
    leaf_only = [chained.leaf_cert]
    assert_invalid(chained.auth(), _chain_token(chained, leaf_only, chained.leaf_key))
    reversed_chain = [inter, chained.leaf_cert]
    assert_invalid(chained.auth(), _chain_token(chained, reversed_chain, chained.leaf_key))
    # The root itself may sign with x5c = [root].
    auth.authorize(bearer(_chain_token(issuer, [issuer.root_cert], issuer.root_key)), ok)
    # A self-signed stranger, or the right chain with the wrong signing key.
    rogue = new_key()
    rogue_cert = make_cert(
        rogue,
        "rogue",
        ca=True,
        not_before=issuer.root_cert.not_valid_before_utc,
        not_after=issuer.root_cert.not_valid_after_utc,
    )
    assert_invalid(auth, _chain_token(issuer, [rogue_cert], rogue))
    assert_invalid(auth, _chain_token(issuer, [issuer.leaf_cert], rogue))
    # Validity periods of the leaf.
    for days in ((-10, -1), (1, 10)):
        key, cert = _leaf(issuer, days=days)
        assert_invalid(auth, _chain_token(issuer, [cert], key))
    # An unknown critical extension.
    key, cert = _leaf(issuer, critical_unknown=True)
    assert_invalid(auth, _chain_token(issuer, [cert], key))
    # Issuers must be CAs, and path lengths hold.
    not_ca_key, not_ca = _leaf(issuer)
    key, cert = _leaf(issuer, parent=(not_ca_key, not_ca))
    assert_invalid(auth, _chain_token(issuer, [cert, not_ca], key))
    ca0_key, ca0 = _leaf(issuer, ca=True, path_length=0)
    ca1_key, ca1 = _leaf(issuer, parent=(ca0_key, ca0), ca=True)
    auth.authorize(bearer(_chain_token(issuer, [ca1, ca0], ca1_key)), ok)
    key, cert = _leaf(issuer, parent=(ca1_key, ca1))
    assert_invalid(auth, _chain_token(issuer, [cert, ca1, ca0], key))
    # The root's own validity counts too (clock before the root's notBefore).
    early = issuer.now - 2 * 86400
    token = issuer.mint(PULL, not_before=-3 * 86400)
    assert_invalid(issuer.auth(at=early), token)
    # Chains over the limit, and garbage certificates.
    long_chain = [issuer.leaf_cert] * 9
    assert_invalid(auth, _chain_token(issuer, long_chain, issuer.leaf_key))
    for x5c in (["!!"], [""], ["AAAA"], [5], "abc"):
        assert_invalid(auth, issuer.sign({"alg": "ES256", "x5c": x5c}, issuer.claims(PULL)))


# --------------------------------------------------------------------------- parsing


def test_malformed_tokens(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint(PULL)
    head, body, sig = token.split(".")
    padded = ".".join(part + "=" * (-len(part) % 4) for part in (head, body, sig))
    for bad in (
        "abc",
        f"{head}.{body}",
        f"{head}.{body}.{sig}.x",
        f"{head}.{body}.",
        padded,
        f"{head}.{body}.{sig[:-1]}",
        f"{head}.{body}.{sig}=",
        f"{head}+.{body}.{sig}",
        f"{head}.{body}.{sig}\u00e9",
        f"{segment(b'[1]')}.{body}.{sig}",
        f"{segment(b'{')}.{body}.{sig}",
        f"{segment(b'{}')}.{body}.{sig}",
    ):
        assert_invalid(auth, bad)


def test_strict_json(issuer: TokenIssuer, auth: TokenAuth) -> None:
    header = issuer.header()
    claims = issuer.claims(PULL)
    raw = json.dumps(claims)
    variants: list[bytes | dict[str, Any]] = [
        raw[:-1].encode() + b',"iss":"x"}',  # duplicate key
        {k: v for k, v in claims.items() if k != "iss"} | {"ISS": ISSUER},  # Go folds case
        {**claims, "exp": claims["exp"] + 0.5},
        raw.replace(f'"exp": {claims["exp"]}', '"exp": 1e10').encode(),
        {**claims, "exp": True},
        {**claims, "exp": str(claims["exp"])},
        {**claims, "exp": 2**63},
        {**claims, "iat": 1.5},
        {**claims, "sub": 5},
        {**claims, "access": {"type": "repository"}},
        {**claims, "access": [None]},
        {**claims, "access": [{"type": "repository", "name": GUN, "actions": "pull"}]},
        b'{"exp": NaN}',
        b"\xef\xbb\xbf" + raw.encode(),
        b"[" * 5000 + b"]" * 5000,
    ]
    for variant in variants:
        assert_invalid(auth, issuer.sign(header, variant))
    assert_invalid(auth, issuer.sign({**header, "typ": 1}, claims))
    # Unknown fields may hold anything, floats included.
    ok = required_access("GetRole", GUN)
    auth.authorize(bearer(issuer.sign({**header, "foo": [1.5]}, {**claims, "bar": 1e300})), ok)
    # actions: null grants nothing.
    nothing = {**claims, "access": [{"type": "repository", "name": GUN, "actions": None}]}
    exc = refused(auth, bearer(issuer.sign(header, nothing)), ok)
    assert exc.error == "insufficient_scope"


def test_size_limit(issuer: TokenIssuer, auth: TokenAuth) -> None:
    grants = [access(GUN, "pull")] + [access(f"repo/{i}", "pull") for i in range(400)]
    big = issuer.mint(grants)
    assert len(big) > MAX_TOKEN_BYTES
    assert_invalid(auth, big)
    assert_invalid(auth, "a" * (MAX_TOKEN_BYTES * 4))


def test_header_forms(issuer: TokenIssuer, auth: TokenAuth) -> None:
    token = issuer.mint(PULL)
    ok = required_access("GetRole", GUN)
    for header in (f"Bearer {token}", f"bearer {token}", f"BEARER {token}", f" Bearer {token}\t"):
        auth.authorize(header, ok)


def test_token_never_echoed_or_logged(
    issuer: TokenIssuer, auth: TokenAuth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="countersign.server.auth")
    for token in (issuer.expired(PULL), issuer.bad_signature(PULL), issuer.mint([catalog()])):
        exc = refused(auth, bearer(token), required_access("GetRole", GUN))
        signature = token.split(".")[2]
        for text in (exc.challenge, exc.body.decode(), str(exc), exc.reason, repr(exc.args)):
            assert signature not in text
    assert caplog.records
    for record in caplog.records:
        assert issuer.mint(PULL).split(".")[0] not in record.getMessage()
        for part in token.split("."):
            assert part not in record.getMessage()


# --------------------------------------------------------------------------- config


def test_config_load(issuer: TokenIssuer, tmp_path: Path) -> None:
    other = TokenIssuer(root_kind="rsa2048")
    key_pem = (
        new_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"comment\n" + issuer.bundle_pem() + key_pem + other.bundle_pem())
    config = TokenAuthConfig.load(REALM, SERVICE, ISSUER, bundle)
    assert [c.subject for c in config.root_certs] == [
        issuer.root_cert.subject,
        other.root_cert.subject,
    ]
    verifier = TokenAuth(config, clock=lambda: issuer.now)
    verifier.authorize(bearer(issuer.mint(PULL)), required_access("GetRole", GUN))
    verifier.authorize(bearer(other.kid_only(PULL)), required_access("GetRole", GUN))
    options = {"realm": REALM, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)}
    assert TokenAuthConfig.from_options(options) == config
    assert TokenAuthConfig.from_options({**options, "autoredirect": False}) == config


def test_config_errors(issuer: TokenIssuer, tmp_path: Path) -> None:
    bundle = issuer.write_bundle(tmp_path / "ok.pem")
    with pytest.raises(AuthConfigError, match="unable to read"):
        TokenAuthConfig.load(REALM, SERVICE, ISSUER, tmp_path / "missing.pem")
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"no certificates here\n")
    with pytest.raises(AuthConfigError, match="at least one"):
        TokenAuthConfig.load(REALM, SERVICE, ISSUER, empty)
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(AuthConfigError, match="unable to parse"):
        TokenAuthConfig.load(REALM, SERVICE, ISSUER, broken)
    for realm, service, iss in (("", SERVICE, ISSUER), (REALM, "", ISSUER), (REALM, SERVICE, "")):
        with pytest.raises(AuthConfigError, match="non-empty"):
            TokenAuthConfig.load(realm, service, iss, bundle)
    with pytest.raises(AuthConfigError, match="at least one"):
        TokenAuthConfig(REALM, SERVICE, ISSUER, [])
    ed_key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    now = dt.datetime.now(dt.UTC)
    ed_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ed_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ed_key, None)
    )
    with pytest.raises(AuthConfigError, match="public key"):
        TokenAuthConfig(REALM, SERVICE, ISSUER, [ed_cert])
    options: dict[str, object] = {
        "realm": REALM,
        "service": SERVICE,
        "issuer": ISSUER,
        "rootcertbundle": str(bundle),
    }
    with pytest.raises(AuthConfigError, match="rootcertbundle"):
        TokenAuthConfig.from_options({k: v for k, v in options.items() if k != "rootcertbundle"})
    with pytest.raises(AuthConfigError, match="autoredirect"):
        TokenAuthConfig.from_options({**options, "autoredirect": True})
    with pytest.raises(AuthConfigError, match="autoredirect"):
        TokenAuthConfig.from_options({**options, "autoredirect": "yes"})


# --------------------------------------------------------------------------- property

_B64_CHARS = string.ascii_letters + string.digits + "-_"
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _mutated_token(draw: st.DrawFn, base: str) -> str:
    token = list(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        index = draw(st.integers(min_value=0, max_value=max(len(token) - 1, 0)))
        char = draw(st.sampled_from(_B64_CHARS + ".=+/ \x00\u00e9"))
        if kind == "replace" and token:
            token[index] = char
        elif kind == "insert":
            token.insert(index, char)
        elif kind == "delete" and token:
            del token[index]
        else:
            token = token[:index]
    return "".join(token)


@st.composite
def _signed_arbitrary(draw: st.DrawFn, issuer: TokenIssuer) -> str:
    source = draw(st.sampled_from(["x5c", "kid", "jwk", "jwk+x5c"]))
    header = issuer.header(key_source=source)
    key = issuer.root_key if source in ("kid", "jwk") else issuer.leaf_key
    claims = issuer.claims([access(GUN, "pull")])
    for target, fields in (
        (header, ["alg", "kid", "x5c", "jwk", "typ"]),
        (claims, ["iss", "aud", "exp", "nbf", "iat", "sub", "access"]),
    ):
        for name in draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)):
            target[name] = draw(_VALUES)
        if draw(st.booleans()):
            target[draw(st.text(max_size=6))] = draw(_VALUES)
    if draw(st.booleans()):
        claims["access"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["repository", "registry", 1]),
                        "name": st.sampled_from([GUN, "catalog", None]),
                        "actions": st.lists(st.sampled_from(["pull", "push", "*", ""])) | _VALUES,
                    }
                ),
                max_size=3,
            )
        )
    return issuer.sign(header, claims, key)


@st.composite
def _authorization(draw: st.DrawFn, issuer: TokenIssuer, valid: str) -> str | None:
    choice = draw(st.integers(min_value=0, max_value=5))
    if choice == 0:
        return draw(st.none() | st.text(max_size=200))
    if choice == 1:
        return "Bearer " + draw(st.text(alphabet=_B64_CHARS + ".", max_size=300))
    if choice == 2:
        segments = [
            b64url(json.dumps(draw(_VALUES)).encode())
            if draw(st.booleans())
            else draw(st.text(alphabet=_B64_CHARS, max_size=40))
            for _ in range(3)
        ]
        return "Bearer " + ".".join(segments)
    if choice == 3:
        scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "Basic ", ""]))
        return scheme + draw(_mutated_token(valid))
    return "Bearer " + draw(_signed_arbitrary(issuer))


_PROPERTY_ISSUER = TokenIssuer()
_PROPERTY_AUTH = _PROPERTY_ISSUER.auth()
_PROPERTY_VALID = _PROPERTY_ISSUER.mint([access(GUN, "push", "pull")])


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    header=_authorization(_PROPERTY_ISSUER, _PROPERTY_VALID),
    route=st.sampled_from(["GetRole", "UpdateTUF", "RotateKey", "Main"]),
)
def test_any_header_is_a_decision_never_a_crash(header: str | None, route: str) -> None:
    required = required_access(route, GUN)
    try:
        identity = _PROPERTY_AUTH.authorize(header, required)
    except AuthenticationRequired as exc:
        event(f"refused: {exc.error}")
        assert exc.status == 401
        assert exc.error in (None, "invalid_token", "insufficient_scope")
        assert exc.challenge.startswith(PREFIX)
        assert exc.body.endswith(b"]}]}\n")
        json.loads(exc.body)
        token = (header or "").strip().partition(" ")[2]
        if len(token) > 24:
            assert token not in exc.challenge
            assert token.encode() not in exc.body
    else:
        event("accepted")
        assert identity.authenticated
        assert isinstance(identity.subject, str)


def test_property_base_token_is_valid() -> None:
    # Sanity for the property: the unmutated token is accepted.
    identity = _PROPERTY_AUTH.authorize(bearer(_PROPERTY_VALID), required_access("UpdateTUF", GUN))
    assert identity.subject == "alice"
    assert base64.urlsafe_b64decode(_PROPERTY_VALID.split(".")[0] + "==")
