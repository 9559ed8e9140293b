"""TLS for the server's ports: a certificate and key (PEM), and optionally the CA that client
certificates must be signed by (mutual TLS). Files are read and checked once, at start."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mlport.errors import InvalidInput

__all__ = ["ServerTls", "server_tls"]


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``: a client certificate is required when ``client_ca`` is set."""
        pair = (_read(self.key, "--tls-key"), _read(self.cert, "--tls-cert"))
        roots = _read(self.client_ca, "--tls-client-ca") if self.client_ca is not None else None
        return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)

    def replica_args(self) -> list[str]:
        """``mlport serve`` flags that make a replica serve TLS with the same certificate and key."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def replica_verify(self) -> ssl.SSLContext:
        """What the hub's clients of its replicas verify them with: exactly this certificate (which must
        name the replicas' host), trusted as it is, with no system CA."""
        context = ssl.create_default_context(cafile=str(self.cert))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn's ``Config`` options for the same files."""
        return {
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": str(self.client_ca) if self.client_ca is not None else None,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.client_ca is not None else ssl.CERT_NONE,
        }


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    """The TLS of ``--tls-cert``/``--tls-key``/``--tls-client-ca`` (``None``: plain), checked now so that
    a missing file or a key that does not match the certificate is one clear error at start."""
    if cert is None and key is None:
        if client_ca is not None:
            raise InvalidInput("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise InvalidInput("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    for path, flag in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if path is not None:
            _read(path, flag)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise InvalidInput(f"--tls-cert {cert} and --tls-key {key}: not a certificate and its key ({exc})") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except ssl.SSLError as exc:
            raise InvalidInput(f"--tls-client-ca {client_ca}: not a PEM certificate ({exc})") from None
    return ServerTls(cert, key, client_ca)
