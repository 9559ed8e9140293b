"""TokenService: issuing, and refusing every kind of bad token (each built by hand here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mlport.auth.roles import Action, authorize
from mlport.auth.tokens import MAX_TOKEN_BYTES, TokenConfig, TokenService
from mlport.errors import ErrorCode, Forbidden, InvalidInput, MlportError, Unauthorized

SECRET = secrets.token_bytes(32)
Signer = Callable[[bytes], bytes]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(header: dict[str, Any], claims: dict[str, Any], sign: Signer | None) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = sign(signing_input.encode("ascii")) if sign is not None else b""
    return signing_input + "." + b64(signature)


def hs256(key: bytes) -> Signer:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


def rs256(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"sub": "alice", "roles": ["deployer"], "kind": "user", "iat": now, "nbf": now,
                           "exp": now + 600, "iss": "mlport-hub", "aud": "mlport", "jti": uuid.uuid4().hex}
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


HS = {"alg": "HS256", "typ": "JWT"}
RS = {"alg": "RS256", "typ": "JWT"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_pair(key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


class Revoked:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self, jti: str) -> bool:
        return jti in self.ids


@pytest.fixture
def revoked() -> Revoked:
    return Revoked()


@pytest.fixture
def hs(revoked: Revoked) -> TokenService:
    return TokenService(TokenConfig("HS256", secret=SECRET), revoked)


@pytest.fixture
def rs(rsa_key: rsa.RSAPrivateKey, revoked: Revoked) -> TokenService:
    priv, pub = pem_pair(rsa_key)
    return TokenService(TokenConfig("RS256", private_key_pem=priv, public_key_pem=pub), revoked)


def refused(service: TokenService, token: Any, reason: str) -> None:
    with pytest.raises(Unauthorized) as err:
        service.verify(token)
    assert reason in str(err.value)
    assert err.value.code is ErrorCode.UNAUTHENTICATED


# -- issuing ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_issue_and_verify(algorithm: str, hs: TokenService, rs: TokenService) -> None:
    service = hs if algorithm == "HS256" else rs
    token, c = service.issue("alice", ["deployer", "viewer"])
    assert set(c) == {"sub", "roles", "kind", "iat", "nbf", "exp", "iss", "aud", "jti"}
    assert c["exp"] - c["iat"] == 3600 and c["iss"] == "mlport-hub" and c["aud"] == "mlport"
    assert len(c["jti"]) == 32 and int(c["jti"], 16) >= 0
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == algorithm
    p = service.verify(token)
    assert p.subject == "alice" and p.roles == {"deployer", "viewer"} and p.deployments is None
    assert p.kind == "user" and p.token_id == c["jti"]
    assert service.verify_claims(token)["exp"] == c["exp"]


def test_issue_limited_service_token(hs: TokenService) -> None:
    token, c = hs.issue("ci-bot", ["predictor"], kind="service", deployments=["b", "a"], ttl_s=90 * 86400)
    assert c["deployments"] == ["a", "b"] and c["exp"] - c["iat"] == 90 * 86400
    p = hs.verify(token)
    assert p.kind == "service" and p.deployments == {"a", "b"}
    authorize(p, Action.PREDICT, "a")
    with pytest.raises(Forbidden):
        authorize(p, Action.PREDICT, "c")


def test_issue_refuses_bad_values(hs: TokenService) -> None:
    with pytest.raises(InvalidInput):
        hs.issue("alice", ["root"])
    with pytest.raises(InvalidInput):
        hs.issue("Alice Smith", ["viewer"])
    with pytest.raises(InvalidInput):
        hs.issue("alice", ["viewer"], kind="robot")
    with pytest.raises(InvalidInput):
        hs.issue("alice", ["viewer"], ttl_s=0)
    with pytest.raises(InvalidInput):
        hs.issue("alice", ["viewer"], ttl_s=100 * 365 * 86400)
    with pytest.raises(InvalidInput):
        hs.issue("alice", ["viewer"], deployments=["../etc"])


def test_public_key_only_verifies_but_cannot_issue(rsa_key: rsa.RSAPrivateKey, rs: TokenService) -> None:
    _, pub = pem_pair(rsa_key)
    verifier = TokenService(TokenConfig("RS256", public_key_pem=pub), lambda jti: False)
    assert not verifier.can_issue and rs.can_issue
    token, _ = rs.issue("alice", ["viewer"])
    assert verifier.verify(token).subject == "alice"
    with pytest.raises(MlportError) as err:
        verifier.issue("alice", ["viewer"])
    assert err.value.code is ErrorCode.FAILED_PRECONDITION


def test_hand_built_tokens_verify(hs: TokenService, rs: TokenService, rsa_key: rsa.RSAPrivateKey) -> None:
    """The builder makes valid tokens, so the refusals below are for the stated reason only."""
    assert hs.verify(make_token(HS, claims(), hs256(SECRET))).subject == "alice"
    assert rs.verify(make_token(RS, claims(), rs256(rsa_key))).subject == "alice"


# -- refusals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_unsigned_token_refused(alg: str, hs: TokenService, rs: TokenService) -> None:
    for service in (hs, rs):
        refused(service, make_token({"alg": alg, "typ": "JWT"}, claims(), None), "algorithm")
        # an unsigned header with a signature appended is refused just the same
        refused(service, make_token({"alg": alg, "typ": "JWT"}, claims(), hs256(SECRET)), "algorithm")


def test_algorithm_confusion_refused(rs: TokenService, rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token whose HMAC secret is the RS256 public key PEM (which anyone may know)."""
    _, pub = pem_pair(rsa_key)
    forged = make_token(HS, claims(roles=["admin"]), hs256(pub))
    refused(rs, forged, "algorithm not allowed")
    # with the PEM written differently (no trailing newline) it is refused too
    refused(rs, make_token(HS, claims(roles=["admin"]), hs256(pub.strip())), "algorithm not allowed")


def test_rs256_token_refused_by_hs256_service(hs: TokenService, rsa_key: rsa.RSAPrivateKey) -> None:
    refused(hs, make_token(RS, claims(), rs256(rsa_key)), "algorithm not allowed")


def test_wrong_signature_refused(hs: TokenService, rs: TokenService) -> None:
    refused(hs, make_token(HS, claims(), hs256(secrets.token_bytes(32))), "bad signature")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(rs, make_token(RS, claims(), rs256(other)), "bad signature")
    # a genuine token whose payload was swapped for one granting more
    token, _ = hs.issue("alice", ["viewer"])
    head, _, sig = token.split(".")
    forged_payload = b64(json.dumps(claims(roles=["admin"])).encode())
    refused(hs, f"{head}.{forged_payload}.{sig}", "bad signature")
    # a truncated signature
    refused(hs, token[:-4], "")


def test_expired_refused_beyond_leeway(hs: TokenService) -> None:
    now = int(time.time())
    old = claims(iat=now - 4000, nbf=now - 4000, exp=now - 60)
    refused(hs, make_token(HS, old, hs256(SECRET)), "token expired")
    # within the 10 s leeway a token still passes
    recent = claims(iat=now - 4000, nbf=now - 4000, exp=now - 3)
    assert hs.verify(make_token(HS, recent, hs256(SECRET))).subject == "alice"


def test_not_yet_valid_refused(hs: TokenService) -> None:
    now = int(time.time())
    refused(hs, make_token(HS, claims(nbf=now + 600), hs256(SECRET)), "not yet valid")
    refused(hs, make_token(HS, claims(iat=now + 600, nbf=now + 600), hs256(SECRET)), "not yet valid")


def test_wrong_audience_refused(hs: TokenService) -> None:
    refused(hs, make_token(HS, claims(aud="other-service"), hs256(SECRET)), "audience")
    refused(hs, make_token(HS, claims(aud=["other-service"]), hs256(SECRET)), "audience")
    # a list that includes ours is not accepted either: the hub issues a plain string
    refused(hs, make_token(HS, claims(aud=["mlport", "other"]), hs256(SECRET)), "audience")


def test_wrong_issuer_refused(hs: TokenService) -> None:
    refused(hs, make_token(HS, claims(iss="someone-else"), hs256(SECRET)), "issuer")


@pytest.mark.parametrize("claim", ["jti", "sub", "exp", "iat", "aud", "iss"])
def test_missing_claim_refused(claim: str, hs: TokenService) -> None:
    refused(hs, make_token(HS, claims(**{claim: None}), hs256(SECRET)), claim)


@pytest.mark.parametrize(("claim", "value"), [
    ("roles", "admin"), ("roles", [1, 2]), ("kind", "robot"), ("kind", None), ("deployments", "a"),
    ("deployments", [1]), ("sub", ""), ("sub", 5), ("jti", 7), ("exp", "tomorrow"),
])
def test_malformed_claims_refused(claim: str, value: Any, hs: TokenService) -> None:
    c = claims()
    c[claim] = value
    if value is None:
        del c[claim]
    refused(hs, make_token(HS, c, hs256(SECRET)), "")


def test_revoked_refused(hs: TokenService, revoked: Revoked) -> None:
    token, c = hs.issue("alice", ["viewer"])
    hs.verify(token)
    revoked.ids.add(c["jti"])
    refused(hs, token, "token revoked")
    other, _ = hs.issue("alice", ["viewer"])
    assert hs.verify(other).subject == "alice"


@pytest.mark.parametrize("token", [
    "", "garbage", "a.b.c", "....", "a.b", "\x00\x01.\x02", "é.é.é", "eyJ.eyJ.", "Bearer x.y.z",
    b64(b"not json") + "." + b64(b"{}") + ".",
    b64(b"[1]") + "." + b64(b"{}") + ".",
    b64(json.dumps(HS).encode()) + "." + b64(b"[1,2]") + "." + b64(b"sig"),
    b64(json.dumps(HS).encode()) + "." + b64(b"\xff\xfe") + "." + b64(b"sig"),
    b64(json.dumps({"alg": "HS256", "kid": 5}).encode()) + "." + b64(b"{}") + "." + b64(b"sig"),
    b64(json.dumps({"alg": "HS256", "crit": ["exp"]}).encode()) + "." + b64(b"{}") + "." + b64(b"sig"),
    b64(json.dumps({"alg": "HS256", "b64": False, "crit": ["b64"]}).encode()) + ".." + b64(b"sig"),
    b64(b"[" * 5000) + "." + b64(b"{}") + ".x",
    b64(json.dumps(HS).encode()) + "." + b64(b"[" * 5000) + "." + b64(b"sig"),
])
def test_garbage_refused(token: str, hs: TokenService) -> None:
    refused(hs, token, "")


@pytest.mark.parametrize("token", [None, 42, 1.5, ["a.b.c"], {"t": 1}, b"\xff\xfe"])
def test_non_string_refused(token: Any, hs: TokenService) -> None:
    refused(hs, token, "")


def test_bytes_token_accepted(hs: TokenService) -> None:
    token, _ = hs.issue("alice", ["viewer"])
    assert hs.verify(token.encode("ascii")).subject == "alice"  # type: ignore[arg-type]


def test_oversized_token_refused(hs: TokenService) -> None:
    big = claims(padding="x" * MAX_TOKEN_BYTES)
    token = make_token(HS, big, hs256(SECRET))
    assert len(token) > MAX_TOKEN_BYTES
    refused(hs, token, "too large")
    refused(hs, token.encode("ascii"), "too large")
    # the same kind of token just under the limit is fine
    small = make_token(HS, claims(padding="x" * 4000), hs256(SECRET))
    assert hs.verify(small).subject == "alice"
