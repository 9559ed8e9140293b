"""Password hashing (Argon2id through argon2-cffi) and the password policy."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mlport.errors import InvalidInput

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "check_password",
    "generate_password",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024

_hasher = PasswordHasher()


def check_password(pw: str) -> str:
    """Return ``pw`` when it meets the policy (12 to 1024 characters), else raise :class:`InvalidInput`."""
    if not isinstance(pw, str):
        raise InvalidInput("the password must be a string")
    if len(pw) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters")
    if len(pw) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"the password is too long: use at most {MAX_PASSWORD_CHARS} characters")
    try:
        pw.encode("utf-8")
    except UnicodeError:
        raise InvalidInput("the password is not valid text") from None
    return pw


def hash_password(pw: str) -> str:
    """An Argon2id hash of ``pw`` (with a random salt).  The length policy is :func:`check_password`'s job; only
    the upper bound is enforced here so that hashing stays bounded."""
    if not isinstance(pw, str) or len(pw) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"the password must be a string of at most {MAX_PASSWORD_CHARS} characters")
    try:
        return _hasher.hash(pw)
    except UnicodeError:
        raise InvalidInput("the password is not valid text") from None


def verify_password(hash: str, pw: str) -> bool:
    """True when ``pw`` matches ``hash``; False on a mismatch, an unusable hash or an over-long password."""
    if not isinstance(pw, str) or len(pw) > MAX_PASSWORD_CHARS or not isinstance(hash, str):
        return False
    try:
        return _hasher.verify(hash, pw)
    except (VerificationError, InvalidHashError, UnicodeError):
        return False


def needs_rehash(hash: str) -> bool:
    """True when ``hash`` was made with other parameters than the current ones (or is no Argon2 hash)."""
    try:
        return _hasher.check_needs_rehash(hash)
    except (InvalidHashError, ValueError, UnicodeError):
        return True


def generate_password(nbytes: int = 18) -> str:
    """A random password of URL-safe printable characters (``nbytes`` = 18 gives 24 characters)."""
    return secrets.token_urlsafe(nbytes)
