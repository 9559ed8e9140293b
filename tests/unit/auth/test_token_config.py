"""load_token_config / TokenConfig: the HS256 secret file and RS256 key files."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mlport.auth.tokens import SECRET_FILE, TokenConfig, TokenService, load_token_config
from mlport.errors import InvalidInput


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_private(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                  password: bytes | None = None) -> Path:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return path


def write_public(path: Path, key: rsa.RSAPrivateKey) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- HS256 --------------------------------------------------------------------------------------------------------

def test_hs256_secret_generated_once_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    first = load_token_config(data)
    assert first.algorithm == "HS256" and first.secret is not None and len(first.secret) == 32
    path = data / SECRET_FILE
    assert path.is_file() and mode(path) == 0o600
    assert len(path.read_text().strip()) == 64
    second = load_token_config(data)
    assert second.secret == first.secret
    # tokens of the first configuration verify with the second (a restarted hub)
    token, _ = TokenService(first, lambda j: False).issue("alice", ["viewer"])
    assert TokenService(second, lambda j: False).verify(token).subject == "alice"
    # another data directory gets another secret
    assert load_token_config(tmp_path / "other").secret != first.secret
    assert not [p for p in data.iterdir() if p.name != SECRET_FILE]  # no temporary files left behind


def test_loose_secret_file_mode_is_fixed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_token_config(tmp_path)
    path = tmp_path / SECRET_FILE
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="mlport.auth.tokens"):
        again = load_token_config(tmp_path)
    assert again.secret == first.secret
    assert mode(path) == 0o600
    assert any("0600" in r.getMessage() for r in caplog.records)


def test_bad_secret_file_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("not hex at all\n")
    os.chmod(path, 0o600)
    with pytest.raises(InvalidInput, match="hex"):
        load_token_config(tmp_path)
    path.write_text("abcd\n")
    with pytest.raises(InvalidInput, match="shorter"):
        load_token_config(tmp_path)
    path.unlink()
    target = tmp_path / "elsewhere"
    target.write_text("00" * 32)
    path.symlink_to(target)
    with pytest.raises(InvalidInput, match="regular file"):
        load_token_config(tmp_path)


def test_given_secret(tmp_path: Path) -> None:
    cfg = load_token_config(tmp_path, secret="s" * 32, ttl_s=120)
    assert cfg.secret == b"s" * 32 and cfg.ttl_s == 120
    assert not (tmp_path / SECRET_FILE).exists()
    assert "sss" not in repr(cfg)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_short_secret_refused(tmp_path: Path, secret: str) -> None:
    with pytest.raises(InvalidInput, match="32 bytes"):
        load_token_config(tmp_path, secret=secret)
    with pytest.raises(InvalidInput, match="32 bytes"):
        TokenConfig("HS256", secret=secret.encode())


def test_bad_options_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidInput, match="not supported"):
        load_token_config(tmp_path, algorithm="none")
    with pytest.raises(InvalidInput, match="not supported"):
        load_token_config(tmp_path, algorithm="HS512")
    with pytest.raises(InvalidInput):
        load_token_config(tmp_path, ttl_s=0)
    key = write_private(tmp_path / "k.pem", rsa_key)
    with pytest.raises(InvalidInput, match="RS256"):
        load_token_config(tmp_path, private_key=key)
    with pytest.raises(InvalidInput):
        load_token_config(tmp_path, algorithm="RS256")
    with pytest.raises(InvalidInput):
        load_token_config(tmp_path, algorithm="RS256", secret="s" * 40, private_key=key)
    with pytest.raises(InvalidInput):
        TokenConfig("HS256", secret=b"s" * 32, leeway_s=100_000)


# -- RS256 --------------------------------------------------------------------------------------------------------

def test_rs256_public_key_derived_from_private(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    cfg = load_token_config(tmp_path, algorithm="rs256", private_key=write_private(tmp_path / "k.pem", rsa_key))
    assert cfg.algorithm == "RS256" and cfg.secret is None
    assert cfg.public_key_pem == write_public(tmp_path / "pub.pem", rsa_key).read_bytes()
    token, _ = TokenService(cfg, lambda j: False).issue("alice", ["viewer"])
    verify_only = load_token_config(tmp_path, algorithm="RS256", public_key=tmp_path / "pub.pem")
    assert verify_only.private_key_pem is None
    assert TokenService(verify_only, lambda j: False).verify(token).subject == "alice"
    assert not (tmp_path / SECRET_FILE).exists()


def test_rs256_matching_pair(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    cfg = load_token_config(tmp_path, algorithm="RS256", private_key=write_private(tmp_path / "k.pem", rsa_key),
                            public_key=write_public(tmp_path / "pub.pem", rsa_key))
    token, _ = TokenService(cfg, lambda j: False).issue("bob", ["admin"])
    assert TokenService(cfg, lambda j: False).verify(token).roles == {"admin"}


def test_rs256_mismatched_pair_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidInput, match="does not belong"):
        load_token_config(tmp_path, algorithm="RS256", private_key=write_private(tmp_path / "k.pem", rsa_key),
                          public_key=write_public(tmp_path / "pub.pem", other))


def test_rs256_bad_key_files_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidInput, match="private key"):
        load_token_config(tmp_path, algorithm="RS256", private_key=garbage)
    with pytest.raises(InvalidInput, match="public key"):
        load_token_config(tmp_path, algorithm="RS256", public_key=garbage)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_token_config(tmp_path, algorithm="RS256", private_key=tmp_path / "missing.pem")
    encrypted = write_private(tmp_path / "enc.pem", rsa_key, password=b"pass phrase")
    with pytest.raises(InvalidInput, match="unencrypted"):
        load_token_config(tmp_path, algorithm="RS256", private_key=encrypted)
    ec_key = write_private(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InvalidInput, match="not an RSA key"):
        load_token_config(tmp_path, algorithm="RS256", private_key=ec_key)
    weak = write_private(tmp_path / "weak.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(InvalidInput, match="2048"):
        load_token_config(tmp_path, algorithm="RS256", private_key=weak)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (1024 * 1024))
    with pytest.raises(InvalidInput, match="larger"):
        load_token_config(tmp_path, algorithm="RS256", private_key=huge)
