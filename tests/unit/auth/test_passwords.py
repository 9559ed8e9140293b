from __future__ import annotations

import pytest

from mlport.auth.passwords import check_password, generate_password, hash_password, needs_rehash, verify_password
from mlport.errors import InvalidInput


def test_hash_and_verify() -> None:
    h = hash_password("a good long password")
    assert h.startswith("$argon2id$") and "good" not in h
    assert verify_password(h, "a good long password")
    assert not verify_password(h, "a good long passwore")
    assert hash_password("a good long password") != h  # salted
    assert not needs_rehash(h)


@pytest.mark.parametrize("bad_hash", ["", "plain", "!service-account", "$argon2id$v=19$m=1$garbage"])
def test_unusable_hashes_never_verify(bad_hash: str) -> None:
    assert not verify_password(bad_hash, "plain")
    assert not verify_password(bad_hash, "")


def test_verify_refuses_odd_passwords() -> None:
    h = hash_password("x" * 20)
    assert not verify_password(h, "x" * 2000)
    assert not verify_password(h, None)  # type: ignore[arg-type]
    assert not verify_password(h, "\ud800")


def test_policy() -> None:
    assert check_password("x" * 12) == "x" * 12
    assert check_password("y" * 1024) == "y" * 1024
    for bad in ("", "x" * 11, "y" * 1025, "\ud800" * 12):
        with pytest.raises(InvalidInput):
            check_password(bad)
    with pytest.raises(InvalidInput):
        check_password(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        hash_password("z" * 5000)


def test_generated_passwords() -> None:
    seen = {generate_password() for _ in range(50)}
    assert len(seen) == 50
    for pw in seen:
        assert len(pw) >= 20 and pw.isprintable() and pw.strip() == pw
        check_password(pw)
