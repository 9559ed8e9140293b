"""Signed access tokens (JWT through PyJWT): configuration, issuing and verification.

The hub signs with one algorithm only, HS256 (a shared secret, generated once and kept in the data directory
unless one is given) or RS256 (an RSA key pair from PEM files).  Verification accepts exactly that algorithm,
so an unsigned token or one signed with the public key as an HMAC secret never passes; every failure is an
:class:`~mlport.errors.Unauthorized` with a short reason.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mlport.auth.roles import KINDS, MAX_DEPLOYMENT_ITEMS, MAX_ROLE_ITEMS, Principal, check_deployments, check_roles
from mlport.errors import ErrorCode, InvalidInput, MlportError, Unauthorized, valid_name

__all__ = [
    "ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "MAX_TTL_S",
    "SECRET_FILE",
    "TokenConfig",
    "TokenService",
    "load_token_config",
    "principal_from_claims",
    "rsa_keys",
]

log = logging.getLogger(__name__)

ALGORITHMS = ("HS256", "RS256")
SECRET_FILE = "jwt-secret"
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
MAX_TOKEN_BYTES = 8 * 1024           # a longer token is refused before it is parsed
MAX_TTL_S = 10 * 365 * 24 * 3600     # service-account tokens may live long, but not forever
MAX_LEEWAY_S = 300
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_CLAIM_CHARS = 256                # sub, jti, iss, aud

# The claims a token must carry; PyJWT checks exp/iat/nbf/aud/iss values, the others are checked here.
_REQUIRED = ["exp", "iat", "sub", "jti", "aud", "iss"]


@dataclass(frozen=True)
class TokenConfig:
    algorithm: str                                       # "HS256" or "RS256"
    secret: bytes | None = field(default=None, repr=False)
    private_key_pem: bytes | None = field(default=None, repr=False)
    public_key_pem: bytes | None = None
    issuer: str = "mlport-hub"
    audience: str = "mlport"
    ttl_s: int = 3600
    leeway_s: int = 10

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidInput(f"JWT algorithm {self.algorithm!r} is not supported: use HS256 or RS256")
        if self.algorithm == "HS256":
            if self.secret is None or len(self.secret) < MIN_SECRET_BYTES:
                raise InvalidInput(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes long")
            if self.private_key_pem is not None or self.public_key_pem is not None:
                raise InvalidInput("RSA keys are for RS256; HS256 uses a secret")
        else:
            if self.secret is not None:
                raise InvalidInput("RS256 uses an RSA key pair, not a secret")
            if self.private_key_pem is None and self.public_key_pem is None:
                raise InvalidInput("RS256 needs a private key (to issue tokens) or a public key (to verify them)")
        for what, value in (("issuer", self.issuer), ("audience", self.audience)):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_CHARS:
                raise InvalidInput(f"the token {what} must be 1-{MAX_CLAIM_CHARS} characters")
        _check_ttl(self.ttl_s)
        if not isinstance(self.leeway_s, int) or not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise InvalidInput(f"the token leeway must be 0-{MAX_LEEWAY_S} seconds")


def _check_ttl(ttl_s: object) -> int:
    if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TTL_S:
        raise InvalidInput(f"the token lifetime must be 1-{MAX_TTL_S} seconds")
    return ttl_s


# -- configuration -----------------------------------------------------------------------------------------------

def load_token_config(data_dir: Path, *, algorithm: str = "HS256", secret: str | None = None,
                      private_key: Path | None = None, public_key: Path | None = None,
                      ttl_s: int = 3600) -> TokenConfig:
    """Build the token configuration of a hub whose state lives in ``data_dir``.

    HS256 uses ``secret`` when given (at least 32 bytes), else a random 32-byte secret generated on first start
    and kept in ``data_dir/jwt-secret`` (mode 0600; a looser mode is tightened with a warning).  RS256 reads PEM
    files: the private key signs (the public key is derived from it when not given); a public key alone makes a
    hub that verifies tokens but cannot issue them.
    """
    algorithm = algorithm.upper() if isinstance(algorithm, str) else algorithm
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"JWT algorithm {algorithm!r} is not supported: use HS256 or RS256")
    _check_ttl(ttl_s)
    if algorithm == "HS256":
        if private_key is not None or public_key is not None:
            raise InvalidInput("RSA key files are for RS256; HS256 uses a secret")
        if secret is not None:
            raw = secret.encode("utf-8")
            if len(raw) < MIN_SECRET_BYTES:
                raise InvalidInput(f"the JWT secret is too short: use at least {MIN_SECRET_BYTES} bytes")
        else:
            raw = _load_or_create_secret(Path(data_dir))
        return TokenConfig("HS256", secret=raw, ttl_s=ttl_s)
    if secret is not None:
        raise InvalidInput("RS256 uses RSA key files, not a secret")
    if private_key is None and public_key is None:
        raise InvalidInput("RS256 needs a private key file (to issue tokens) or a public key file (to verify them)")
    priv_pem = _read_key_file(Path(private_key), "private key") if private_key is not None else None
    pub_pem = _read_key_file(Path(public_key), "public key") if public_key is not None else None
    _, pub = rsa_keys(priv_pem, pub_pem)
    pub_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TokenConfig("RS256", private_key_pem=priv_pem, public_key_pem=pub_pem, ttl_s=ttl_s)


def _load_or_create_secret(data_dir: Path) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    for _ in range(3):
        try:
            return _read_secret_file(path)
        except FileNotFoundError:
            _create_secret_file(path)
    raise MlportError(f"cannot create the JWT secret file {path}", ErrorCode.UNAVAILABLE)


def _read_secret_file(path: Path) -> bytes:
    st = os.lstat(path)  # FileNotFoundError when absent
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"the JWT secret file {path} must be a regular file")
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("the JWT secret file %s was readable by others; its mode is now 0600", path)
    with path.open("rb") as f:
        data = f.read(4096)
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"the JWT secret file {path} is not hex text: delete it to make a new one") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise InvalidInput(f"the JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return raw


def _create_secret_file(path: Path) -> None:
    """Write a new secret without ever exposing a partial file: a private temporary file, then a hard link
    (which fails when another process got there first; its secret wins)."""
    text = secrets.token_bytes(MIN_SECRET_BYTES).hex() + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".jwt-secret-", dir=path.parent)  # created with mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(out, "w", encoding="ascii") as f:
                f.write(text)
    finally:
        os.unlink(tmp)


#: Why a token is refused, by PyJWT's error (the first that matches; anything else is "malformed token").
_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong token audience"),
    (jwt.InvalidIssuerError, "wrong token issuer"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidKeyError, "bad signature"),
)


def _refusal(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim!r} claim"
    return next((reason for kind, reason in _REFUSALS if isinstance(exc, kind)), "malformed token")


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read the JWT {what} {path}: {e.strerror or e}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidInput(f"the JWT {what} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def rsa_keys(private_pem: bytes | None,
             public_pem: bytes | None) -> tuple[rsa.RSAPrivateKey | None, rsa.RSAPublicKey]:
    """Parse an RSA key pair from PEM; the public key is derived from the private one when not given, and must
    match it when both are given."""
    priv: rsa.RSAPrivateKey | None = None
    pub: rsa.RSAPublicKey | None = None
    if private_pem is not None:
        try:
            key = serialization.load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidInput("the JWT private key is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise InvalidInput("the JWT private key is not an RSA key (RS256 needs RSA)")
        priv = key
    if public_pem is not None:
        try:
            pkey = serialization.load_pem_public_key(public_pem)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidInput("the JWT public key is not a PEM public key") from None
        if not isinstance(pkey, rsa.RSAPublicKey):
            raise InvalidInput("the JWT public key is not an RSA key (RS256 needs RSA)")
        pub = pkey
    if priv is not None:
        derived = priv.public_key()
        if pub is not None and pub.public_numbers() != derived.public_numbers():
            raise InvalidInput("the JWT public key does not belong to the private key")
        pub = derived
    if pub is None:
        raise InvalidInput("RS256 needs a private key or a public key")
    if pub.key_size < MIN_RSA_BITS:
        raise InvalidInput(f"the RSA key has {pub.key_size} bits: use at least {MIN_RSA_BITS}")
    return priv, pub


# -- issuing and verifying ----------------------------------------------------------------------------------------

class TokenService:
    """Issues and verifies the hub's access tokens.  ``revoked(jti)`` tells whether a token id was revoked."""

    def __init__(self, config: TokenConfig, revoked: Callable[[str], bool]) -> None:
        self.config = config
        self._revoked = revoked
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        self._sign_key: bytes | rsa.RSAPrivateKey | None
        self._verify_key: bytes | rsa.RSAPublicKey
        if config.algorithm == "HS256":
            assert config.secret is not None  # checked by TokenConfig
            self._sign_key = self._verify_key = config.secret
        else:
            self._sign_key, self._verify_key = rsa_keys(config.private_key_pem, config.public_key_pem)

    @property
    def can_issue(self) -> bool:
        return self._sign_key is not None

    def issue(self, subject: str, roles: Iterable[str], *, kind: str = "user",
              deployments: Iterable[str] | None = None, ttl_s: int | None = None) -> tuple[str, dict[str, Any]]:
        """A signed token for ``subject`` and its claims (``exp`` tells when it ends, ``jti`` names it)."""
        if self._sign_key is None:
            raise MlportError("this hub holds only the public key: it verifies tokens but cannot issue them",
                              ErrorCode.FAILED_PRECONDITION)
        valid_name(subject, "user")
        role_set = check_roles(roles)
        if kind not in KINDS:
            raise InvalidInput(f"unknown account kind {kind!r}: use 'user' or 'service'")
        limit = check_deployments(deployments)
        ttl = _check_ttl(self.config.ttl_s if ttl_s is None else ttl_s)
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "roles": sorted(role_set),
            "kind": kind,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "jti": uuid.uuid4().hex,
        }
        if limit is not None:
            claims["deployments"] = sorted(limit)
        token = self._jwt.encode(claims, self._sign_key, algorithm=self.config.algorithm)
        return token, claims

    def verify(self, token: str) -> Principal:
        """The principal of a valid, unrevoked token; :class:`Unauthorized` with a short reason otherwise."""
        return principal_from_claims(self.verify_claims(token))

    def verify_claims(self, token: str) -> dict[str, Any]:
        """The verified claims of a valid, unrevoked token (what :meth:`verify` builds its principal from; the
        hub needs ``jti`` and ``exp`` to revoke a token)."""
        if isinstance(token, bytes | bytearray):
            if len(token) > MAX_TOKEN_BYTES:
                raise Unauthorized("token too large")
            try:
                token = bytes(token).decode("ascii")
            except UnicodeDecodeError:
                raise Unauthorized("malformed token") from None
        if not isinstance(token, str):
            raise Unauthorized("malformed token")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("token too large")
        if not token:
            raise Unauthorized("missing token")
        if not token.isascii():
            raise Unauthorized("malformed token")
        claims = self._decode(token)
        principal_from_claims(claims)  # refuses claims of the wrong shape before the store is asked
        if self._revoked(claims["jti"]):
            raise Unauthorized("token revoked")
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        cfg = self.config
        try:
            claims = self._jwt.decode(
                token, self._verify_key, algorithms=[cfg.algorithm], audience=cfg.audience, issuer=cfg.issuer,
                leeway=cfg.leeway_s, options={"require": _REQUIRED, "verify_signature": True, "strict_aud": True},
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(_refusal(e)) from None
        except Exception:  # a token is attacker-controlled: no parsing surprise may escape as a 500
            log.debug("token refused by an unexpected error", exc_info=True)
            raise Unauthorized("malformed token") from None
        if not isinstance(claims, dict):
            raise Unauthorized("malformed token")
        return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Check the shape of verified claims and build the principal; :class:`Unauthorized` when malformed."""
    sub, jti, kind = claims.get("sub"), claims.get("jti"), claims.get("kind")
    roles, deployments = claims.get("roles"), claims.get("deployments")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_CLAIM_CHARS:
        raise Unauthorized("malformed token subject")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_CLAIM_CHARS:
        raise Unauthorized("malformed token id")
    if kind not in KINDS:
        raise Unauthorized("malformed token kind")
    if (not isinstance(roles, list) or len(roles) > MAX_ROLE_ITEMS
            or not all(isinstance(r, str) for r in roles)):
        raise Unauthorized("malformed token roles")
    limit: frozenset[str] | None = None
    if deployments is not None:
        if (not isinstance(deployments, list) or len(deployments) > MAX_DEPLOYMENT_ITEMS
                or not all(isinstance(d, str) for d in deployments)):
            raise Unauthorized("malformed token deployments")
        limit = frozenset(deployments)
    return Principal(subject=sub, roles=frozenset(roles), deployments=limit, token_id=jti, kind=str(kind))
