"""TLS for the clients: the CA to trust (``ca=``, else ``MLPORT_CA``, else the system's), an optional client
certificate for mutual TLS, and messages that say what went wrong in a handshake. Certificates are always
verified: only an explicit ``verify=False`` (HTTP) turns that off."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import grpc

__all__ = ["CA_ENV", "ClientCert", "PathLike", "grpc_credentials", "http_verify", "tls_hint"]

#: The environment variable that names the CA bundle (PEM) the clients trust when ``ca`` is not given.
CA_ENV = "MLPORT_CA"

PathLike = str | Path
#: A client certificate and its key (PEM files), for servers that ask for one (mutual TLS).
ClientCert = tuple[PathLike, PathLike]


def _ca(ca: PathLike | None) -> str | None:
    found = ca if ca is not None else os.environ.get(CA_ENV) or None
    return str(found) if found is not None else None


def http_verify(verify: bool | ssl.SSLContext, ca: PathLike | None, cert: ClientCert | None) -> bool | ssl.SSLContext:
    """What httpx's ``verify`` gets: the system's CAs, or a context with ``ca`` and the client certificate."""
    if isinstance(verify, ssl.SSLContext) or verify is False:
        if ca is not None or cert is not None:
            raise ValueError("give either verify (a context, or False) or ca/cert, not both")
        return verify
    cafile = _ca(ca)
    if cafile is None and cert is None:
        return True
    context = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def grpc_credentials(ca: PathLike | None, cert: ClientCert | None) -> grpc.ChannelCredentials:
    """Channel credentials that trust ``ca`` (else ``MLPORT_CA``, else the system's CAs)."""
    cafile = _ca(ca)
    roots = Path(cafile).read_bytes() if cafile is not None else None
    if cert is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    chain, key = Path(cert[0]).read_bytes(), Path(cert[1]).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def tls_hint(detail: str, url: str) -> str:
    """What to do about a failed connection, when its detail shows a TLS problem (else ``""``)."""
    text = detail.lower()
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return (f"; the server's TLS certificate is not trusted: give the CA that signed it (ca=..., or "
                f"{CA_ENV}=ca.pem)")
    if "certificate required" in text or "handshake failure" in text or "sslv3_alert" in text:
        return "; the server may require a client certificate (mutual TLS): give cert=(cert.pem, key.pem)"
    if "wrong_version_number" in text or "record layer failure" in text or "packet length too long" in text:
        return "; the server does not speak TLS here: use an http:// URL (or a plaintext channel)"
    if url.startswith("http://") and ("disconnected" in text or "connection reset" in text):
        return "; the server closed the connection without answering: if it serves HTTPS, use an https:// URL"
    return ""
