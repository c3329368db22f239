"""JWT verification: good tokens pass; forged, expired, not-yet-valid, wrong issuer or
audience, ``alg: none``, HS/RS confusion and unknown ``kid`` are all rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from lalo_gateway.security.errors import AuthenticationFailed, Forbidden
from lalo_gateway.security.rbac import Role
from lalo_gateway.security.settings import SecuritySettings
from lalo_gateway.security.tokens import TokenVerifier, looks_like_jwt
from pydantic import ValidationError

ISSUER = "https://idp.example.test/realms/lalo"
AUDIENCE = "lalo-gateway"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "roles": ["developer"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def pem_verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(
        SecuritySettings(
            jwt_mode="pem",
            jwt_public_key_pem=RSA_PUBLIC_PEM,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            **settings,
        )
    )


def test_valid_rs256_token() -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    principal = pem_verifier().verify(token)
    assert (principal.subject, principal.role, principal.kind) == ("user-1", Role.DEVELOPER, "jwt")
    assert principal.rate_key == "jwt:user-1"


@pytest.mark.parametrize(
    ("token_claims", "message"),
    [
        (claims(exp=int(time.time()) - 10), "expired"),
        (claims(nbf=int(time.time()) + 600), "not valid yet"),
        (claims(iss="https://evil.example.test"), "Wrong issuer"),
        (claims(aud="someone-else"), "Wrong audience"),
        (claims(exp=None), "Invalid bearer token"),
        (claims(iss=None), "Invalid bearer token"),
        (claims(aud=None), "Invalid bearer token"),
    ],
)
def test_claim_checks(token_claims: dict[str, Any], message: str) -> None:
    token = jwt.encode(token_claims, RSA_KEY, algorithm="RS256")
    with pytest.raises(AuthenticationFailed, match=message):
        pem_verifier().verify(token)


def test_forged_signature_is_rejected() -> None:
    token = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256")
    with pytest.raises(AuthenticationFailed):
        pem_verifier().verify(token)


def test_tampered_payload_is_rejected() -> None:
    header, _, signature = jwt.encode(claims(), RSA_KEY, algorithm="RS256").split(".")
    payload = b64(json.dumps(claims(roles=["admin"])).encode())
    with pytest.raises(AuthenticationFailed):
        pem_verifier().verify(f"{header}.{payload}.{signature}")


def test_alg_none_is_rejected() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(roles=["admin"])).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.c2ln"):
        with pytest.raises(AuthenticationFailed, match="Algorithm not accepted"):
            pem_verifier().verify(token)


def test_hs_rs_confusion_is_rejected() -> None:
    """An attacker signs HS256 with the server's *public* key as the HMAC secret."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(roles=["admin"])).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(RSA_PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest())
    with pytest.raises(AuthenticationFailed, match="Algorithm not accepted"):
        pem_verifier().verify(f"{header}.{payload}.{signature}")


def test_roles_come_from_a_configurable_claim_and_map() -> None:
    token = jwt.encode(
        claims(roles=None, realm_access={"roles": ["lalo-admins", "offline"]}),
        RSA_KEY,
        algorithm="RS256",
    )
    verifier = pem_verifier(
        jwt_roles_claim="realm_access.roles", jwt_role_map={"lalo-admins": "admin"}
    )
    assert verifier.verify(token).role is Role.ADMIN


def test_space_separated_roles() -> None:
    token = jwt.encode(claims(roles="viewer other"), RSA_KEY, algorithm="RS256")
    assert pem_verifier().verify(token).role is Role.VIEWER


def test_a_token_without_a_lalo_role_is_forbidden() -> None:
    token = jwt.encode(claims(roles=["guest"]), RSA_KEY, algorithm="RS256")
    with pytest.raises(Forbidden, match="no LALO role"):
        pem_verifier().verify(token)


def test_a_token_without_subject_is_rejected() -> None:
    token = jwt.encode(claims(sub=None), RSA_KEY, algorithm="RS256")
    with pytest.raises(AuthenticationFailed, match="subject"):
        pem_verifier().verify(token)


def test_jwt_off_rejects_every_token() -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    verifier = TokenVerifier(SecuritySettings())
    assert not verifier.enabled
    with pytest.raises(AuthenticationFailed):
        verifier.verify(token)


def test_shape_detection() -> None:
    assert looks_like_jwt(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))
    assert not looks_like_jwt("lalo-abcdefgh-secret")
    assert not looks_like_jwt("a.b.c")


# JWKS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key())), "kid": "rsa-1", "use": "sig"},
        {**json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key())), "kid": "ec-1", "use": "sig"},
    ]
    body = json.dumps({"keys": keys}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def jwks_verifier(url: str) -> TokenVerifier:
    return TokenVerifier(
        SecuritySettings(
            jwt_mode="jwks", jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
        )
    )


def test_jwks_rs256_and_es256(jwks_url: str) -> None:
    verifier = jwks_verifier(jwks_url)
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(sub="u2"), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert verifier.verify(rs).subject == "user-1"
    assert verifier.verify(es).subject == "u2"


def test_jwks_unknown_kid_is_rejected(jwks_url: str) -> None:
    token = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256", headers={"kid": "rogue"})
    with pytest.raises(AuthenticationFailed, match="Unknown signing key"):
        jwks_verifier(jwks_url).verify(token)


def test_jwks_key_of_the_wrong_kid_is_rejected(jwks_url: str) -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "ec-1"})
    with pytest.raises(AuthenticationFailed):
        jwks_verifier(jwks_url).verify(token)


def test_jwks_unreachable_fails_closed() -> None:
    verifier = jwks_verifier("http://127.0.0.1:9/jwks.json")
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    with pytest.raises(AuthenticationFailed):
        verifier.verify(token)


# Development (demo) mode ---------------------------------------------------------------


def test_hs256_demo_mode() -> None:
    secret = "a-development-secret-that-is-long-enough"
    verifier = TokenVerifier(SecuritySettings(jwt_mode="hs256", jwt_hs256_secret=secret))
    token = jwt.encode(claims(iss=None, aud=None, roles=["admin"]), secret, algorithm="HS256")
    assert verifier.verify(token).role is Role.ADMIN
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    with pytest.raises(AuthenticationFailed, match="Algorithm not accepted"):
        verifier.verify(rs)


PRODUCTION = {
    "environment": "production",
    "key_pepper": "a-real-pepper-value-0123456789",
    "service_token": "a-real-service-token-0123456789",
}


def test_placeholder_hs256_secret_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="HS256"):
        SecuritySettings(**PRODUCTION, jwt_mode="hs256", jwt_hs256_secret="secret")


def test_production_requires_issuer_and_audience() -> None:
    with pytest.raises(ValidationError, match="ISSUER"):
        SecuritySettings(**PRODUCTION, jwt_mode="pem", jwt_public_key_pem=RSA_PUBLIC_PEM)


def test_symmetric_algorithms_cannot_be_configured_for_jwks() -> None:
    with pytest.raises(ValidationError, match="asymmetric"):
        SecuritySettings(jwt_mode="jwks", jwt_jwks_url="http://x", jwt_algorithms=["HS256"])


def test_token_subjects_get_the_default_quotas() -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    principal = pem_verifier(default_rpm=30, default_tpm=9000).verify(token)
    assert (principal.rpm, principal.tpm) == (30, 9000)
