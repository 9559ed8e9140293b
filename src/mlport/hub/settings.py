"""Hub configuration: CLI flags > ``MLPORT_HUB_*`` environment variables > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["HubSettings", "default_data_dir"]


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "mlport" / "hub"


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLPORT_HUB_", extra="forbid")

    #: Folder of the hub's state: the SQLite database, the JWT secret, fetched artifacts and replica logs.
    data_dir: Path = Field(default_factory=default_data_dir)
    #: Where model artifacts live: a folder (default: ``<data_dir>/artifacts``) or ``s3://bucket/prefix``.
    store: str = ""
    #: S3-compatible endpoint (e.g. a MinIO or Ceph gateway); credentials come from these or the AWS variables.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    #: The gateway's gRPC port (OIP ``inference.GRPCInferenceService``; 0: one the system chooses); None: off.
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    #: HTTPS: the certificate and key (PEM) of the hub's port; with ``tls_client_ca``, mutual TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Names a browser reaches the hub by (``Host`` and ``Origin`` of console requests must be one of them);
    #: empty: the bound host, ``localhost``, ``127.0.0.1`` and ``::1`` (and this machine's names when bound to
    #: every interface).
    public_names: list[str] = Field(default_factory=list, max_length=64)
    #: Lifetime of a console session (and of its bearer token), seconds.
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)

    #: JWT signing: HS256 with ``jwt_secret`` (generated and kept in the data folder when unset) or RS256 with
    #: a PEM key pair.
    jwt_algorithm: str = Field(default="HS256", pattern="^(HS256|RS256)$")
    jwt_secret: SecretStr | None = None
    jwt_private_key: Path | None = None
    jwt_public_key: Path | None = None
    #: Lifetime of tokens from ``POST /auth/token``, seconds.
    token_ttl_s: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    #: Password of the first admin, created at start when no admin exists (else one is generated and printed).
    admin_password: SecretStr | None = None

    #: Largest model upload, bytes.
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)
    #: Largest request body the gateway forwards, bytes.
    max_body_bytes: int = Field(default=64 * 1024**2, ge=1024)
    #: Longest time a replica may take to answer one gateway request, seconds.
    gateway_timeout_s: float = Field(default=60.0, gt=0)
    #: Shadow copies are best effort: at most this many pending (beyond it they are dropped and counted) ...
    shadow_max_pending: int = Field(default=64, ge=0, le=4096)
    #: ... and none sent while the hub's process used more than this share of one core over the last 0.1 s (they
    #: wait in the queue meanwhile; 0: no CPU rule, copies then only wait while more than 4 live requests are in
    #: flight).  The default is the gateway's (``mlport.deploy.shadowcopy.BUSY_CPU``).
    shadow_max_cpu: float = Field(default=0.5, ge=0, le=64)
    #: Seconds between two passes of the deployment controller.
    controller_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Longest time a first request waits for a deployment scaled to zero to start, seconds.
    cold_start_timeout_s: float = Field(default=120.0, gt=0)
    #: Parent image of the base layer of images built as hub jobs (default: mlport build's own default).
    build_base: str | None = None
    #: pip's cache for those builds (default: ``<data_dir>/pip``).
    build_pip_cache: Path | None = None
    #: Jobs (image builds, batch scoring) running at once.
    max_jobs: int = Field(default=2, ge=1, le=64)
    log_level: str = "info"
    #: ``access_log``: a text line per request (uvicorn's); ``access_log_format`` ``json``: instead, one JSON line
    #: per gateway request (request id, deployment, model, version, protocol, status, latency).
    access_log: bool = False
    access_log_format: Literal["text", "json"] = "text"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hub.db"

    @property
    def store_url(self) -> str:
        return self.store or str(self.data_dir / "artifacts")
