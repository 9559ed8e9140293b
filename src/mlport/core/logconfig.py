"""What a request log is told: which requests it keeps, what of them, and where it writes them.

The same schema is read from a model's ``model.yaml`` (``logging:``), from a hub deployment, and built from
the server's ``--request-log*`` flags, so it lives below all of them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Payload", "RequestLogConfig", "SinkConfig", "SinkFormat", "sink_kind"]

Payload = Literal["none", "inputs", "outputs", "all"]
SinkFormat = Literal["jsonl", "parquet"]

MIB = 1024 * 1024


def sink_kind(url: str) -> Literal["folder", "s3", "http"]:
    """``http``: a CloudEvents receiver; ``s3``: an object-store prefix; else a local folder."""
    lower = url.lower()
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("s3://"):
        return "s3"
    return "folder"


class SinkConfig(BaseModel):
    """Where records go: a folder (or ``file://`` URL), ``s3://bucket/prefix``, or an ``http(s)://`` receiver
    of CloudEvents (KServe's logger format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=4096)
    #: Files and objects: JSON Lines or Parquet.
    format: SinkFormat = "jsonl"
    #: A file is closed and a new one started when it reaches this size...
    rotate_bytes: int = Field(default=64 * MIB, ge=4096, le=16 * 1024 * MIB)
    #: ... or this age.
    rotate_s: float = Field(default=3600.0, ge=0.05, le=7 * 86400.0)
    #: Closed files kept; the oldest beyond are deleted.
    keep: int = Field(default=100, ge=1, le=1_000_000)
    #: Records waiting for the writer; beyond, records are dropped (and counted).
    queue: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Seconds an HTTP receiver may take to answer one event.
    timeout_s: float = Field(default=5.0, gt=0, le=300.0)
    #: The S3-compatible endpoint of an ``s3://`` URL (default: AWS, or ``$AWS_ENDPOINT_URL``).
    endpoint_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @property
    def kind(self) -> Literal["folder", "s3", "http"]:
        return sink_kind(self.url)

    @property
    def path(self) -> str:
        """A folder sink's path (without ``file://``)."""
        return self.url[7:] if self.url.lower().startswith("file://") else self.url


class RequestLogConfig(BaseModel):
    """``logging: {sample: 0.0-1.0, payload: none|inputs|outputs|all, sink: URL or {url: ..., format: ...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The share of requests logged (0: none, 1: every one).
    sample: float = Field(default=1.0, ge=0.0, le=1.0)
    #: Which tensors each record carries.
    payload: Payload = "all"
    #: Where the records go (default: the server's ``--request-log``).
    sink: SinkConfig | None = None

    @property
    def inputs(self) -> bool:
        return self.payload in ("inputs", "all")

    @property
    def outputs(self) -> bool:
        return self.payload in ("outputs", "all")
