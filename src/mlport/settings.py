"""Server configuration: CLI flags > ``MLPORT_*`` environment variables > ``--config`` YAML > defaults.

Each setting is declared once, as a field of :class:`Settings`; its name gives the environment variable
(``MLPORT_<NAME>``) and the YAML key (``name`` or ``name-with-dashes``).  A field declared with
:func:`option` is also a ``mlport serve`` flag: ``--name-with-dashes`` unless ``flag=`` says otherwise, its
help line from ``help``, its argument type and choices from the field's type (``bool`` gives
``--x``/``--no-x``).  Adding a flag is therefore one new field here and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.core.yamlfile import problems, read_mapping
from mlport.errors import InvalidInput
from mlport.limits import Limits

__all__ = ["FLAG", "LogLevel", "Settings", "load_settings", "option"]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

#: The key, in a field's ``json_schema_extra``, of its command-line flag (see :func:`option`).
FLAG = "cli_flag"


def option(default: Any, help: str, *, flag: str = "", metavar: str = "", **constraints: Any) -> Any:
    """A settings field that is also a command-line flag (``--field-name`` unless ``flag`` is given).

    ``help`` is the flag's help line and the field's description; ``constraints`` are pydantic's (``ge``...).
    """
    extra: dict[str, Any] = {FLAG: flag or "auto", "metavar": metavar}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Settings(BaseSettings):
    """Everything ``mlport serve`` can be told (see the module's docstring for how to add one)."""

    model_config = SettingsConfigDict(env_prefix="MLPORT_", extra="forbid")

    #: A model file, a model folder, or a repository folder (the command's PATH argument).
    model_path: Path | None = None
    name: str | None = option(None, "model name when one file is served (default: the file's stem)")
    host: str = option("127.0.0.1", "address to listen on (default 127.0.0.1)")
    http_port: int = option(8080, "HTTP port (default 8080; 0: any free port)", ge=0, le=65535)
    grpc_port: int = option(8081, "Open Inference Protocol gRPC port (default 8081; 0: no gRPC)", ge=0, le=65535)
    tls_cert: Path | None = option(None, "serve HTTPS and gRPC over TLS with this certificate (PEM; with --tls-key)",
                                   metavar="PEM")
    tls_key: Path | None = option(None, "the private key of --tls-cert (PEM)", metavar="PEM")
    tls_client_ca: Path | None = option(
        None, "mutual TLS: accept only clients whose certificate this CA signed (PEM)", metavar="PEM"
    )
    trusted: bool = option(False, "trust every model here to run code when loaded (pickles, Python files)")
    poll_interval_s: float = option(
        5.0, "seconds between repository scans for new versions (0: off; default 5)", flag="--poll-interval", ge=0
    )
    workers: int = option(1, "server processes sharing the ports, each with every model loaded (default 1)",
                          ge=1, le=64)
    inference_threads: int = option(
        0, "threads running predictions in each worker (default: its share of the cores, min 2)", ge=0, le=256
    )
    intra_op_threads: int = option(
        0, "threads per prediction inside the model's library (default: the worker's cores divided by its "
           "inference threads, at least 1)", ge=0, le=256,
    )
    #: Threads that scan the repository, load and close models.
    load_workers: int = Field(default=2, ge=1, le=64)
    lazy: bool = option(False, "load each model on its first request instead of at start (model.yaml "
                               "'lazy:' decides per model)")
    memory_budget: ByteSize | None = option(
        None, "memory the loaded models may use (e.g. 2GiB); least recently used models are unloaded to make "
              "room (default: no budget; with --workers each worker gets its share)", metavar="SIZE",
    )
    max_concurrent_loads: int = option(2, "models loading at the same time (default 2)", ge=1, le=64)
    load_wait_s: float = option(
        30.0, "seconds a request waits for its model to load before it gets 503 with Retry-After; the load "
              "goes on (default 30)", flag="--load-timeout", gt=0,
    )
    strict_readiness: bool | None = option(
        None, "report ready only when every model serves (default: on when one model file or folder is "
              "served, off for a repository, where one broken model should not take the others out of service)"
    )
    exit_on_error: bool = option(
        False, "stop at start (exit code 3) when any model fails to load, instead of serving the others"
    )
    s3_endpoint_url: str | None = option(
        None, "S3-compatible endpoint for an s3:// model path (default: AWS, or $AWS_ENDPOINT_URL)"
    )
    expect_sha256: str | None = option(
        None, "the sha256 an s3:// model path must have once copied (as the hub records it)",
        pattern=r"^[0-9a-fA-F]{64}$",
    )
    log_level: LogLevel = option("info", "log level (default info)")
    access_log: bool = option(False, "log one line per request (off by default: it costs time on the hot path)")
    access_log_format: Literal["text", "json"] = option(
        "text", "text (default): uvicorn's line per HTTP request; json: one JSON object per inference request on "
                "every protocol (request id, model, version, protocol, status, latency); json turns the log on"
    )
    request_log: str | None = option(
        None, "log requests (with their tensors) to this folder, s3://bucket/prefix or http(s):// CloudEvents "
              "receiver; model.yaml 'logging:' decides per model (default: no request log)", metavar="URL",
    )
    request_log_format: Literal["jsonl", "parquet"] = option("jsonl", "request log files: jsonl (default) or parquet")
    request_log_sample: float = option(1.0, "share of requests logged, 0 to 1 (default 1)", ge=0.0, le=1.0)
    request_log_payload: Literal["none", "inputs", "outputs", "all"] = option(
        "all", "tensors each logged request carries (default all)"
    )

    max_concurrency: int | None = option(
        None, "requests each model version runs at once; more wait in its queue (default: no limit, or the "
              "inference threads when --max-queue is given; model.yaml 'max_concurrency:' decides per model)",
        ge=1, le=100_000,
    )
    max_queue: int | None = option(
        None, "requests that may wait for each model version; beyond, a request is refused at once with 503 "
              "(or 429) and Retry-After (default: no limit; model.yaml 'max_queue:')", ge=0, le=1_000_000,
    )
    queue_timeout_s: float | None = option(
        None, "seconds a request may wait in a queue before it is refused (503) without running (default: no "
              "limit; model.yaml 'queue_timeout_s:')", flag="--queue-timeout", gt=0, le=86_400,
    )
    overload_status: Literal[503, 429] = option(
        503, "HTTP status of a request refused because its model's queue is full (503, or 429 Too Many "
             "Requests; gRPC UNAVAILABLE or RESOURCE_EXHAUSTED)")

    explain_threads: int = option(
        1, "threads running explanations (/explain), apart from the prediction threads (default 1)", ge=1, le=64)
    explain_max_rows: int = option(16, "rows one explanation request may hold (default 16; more: 413)", ge=1,
                                   le=10_000)
    explain_max_evaluations: int = option(
        500_000, "rows the model may be run on for one explanation (default 500000)", ge=1, le=100_000_000)
    explain_timeout_s: float = option(30.0, "seconds one explanation may run (default 30; beyond: 504)",
                                      flag="--explain-timeout", gt=0, le=3600)

    max_body_bytes: int = option(64 * 1024 * 1024, "largest request body (default 64 MiB)", ge=1024)
    max_tensor_elements: int = Field(default=64 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_multipart_parts: int = Field(default=64, ge=1)
    inference_timeout_s: float = Field(default=60.0, gt=0)
    load_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    max_models: int = option(
        1000, "most models served from a repository folder, in name order; the rest are logged and listed in the "
              "repository index as not served (default 1000)", ge=1,
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    def cores_per_worker(self) -> int:
        """The cores this machine gives each worker process (at least 1)."""
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, cores // self.workers)

    def threads(self) -> tuple[int, int]:
        """``(inference threads, intra-op threads)`` of one worker.

        By default the worker's cores go to predictions running side by side (one thread each, at least two
        threads so that a slow model does not hold up the others), not to threads inside one prediction:
        inference threads x intra-op threads stays within the worker's share of the cores, and the workers
        together within the machine's.
        """
        share = self.cores_per_worker()
        inference = self.inference_threads or max(2, share)
        return inference, self.intra_op_threads or max(1, share // inference)

    def request_log_config(self) -> RequestLogConfig | None:
        """The server's default request log (``None``: requests are logged only where model.yaml says so)."""
        sink = None
        if self.request_log:
            sink = SinkConfig(url=self.request_log, format=self.request_log_format, endpoint_url=self.s3_endpoint_url)
        return RequestLogConfig(sample=self.request_log_sample, payload=self.request_log_payload, sink=sink)

    def explain_limits(self) -> dict[str, Any]:
        """The bounds of explanations (the fields of :class:`mlport.explain.ExplainLimits`)."""
        return {"threads": self.explain_threads, "max_rows": self.explain_max_rows,
                "max_evaluations": self.explain_max_evaluations, "timeout_s": self.explain_timeout_s}

    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_tensor_elements=self.max_tensor_elements,
            max_image_pixels=self.max_image_pixels,
            max_multipart_parts=self.max_multipart_parts,
            inference_timeout_s=self.inference_timeout_s,
            load_timeout_s=self.load_timeout_s,
            shutdown_timeout_s=self.shutdown_timeout_s,
            max_models=self.max_models,
        )


def load_settings(cli: dict[str, Any], config_file: Path | None = None) -> Settings:
    """Build settings from CLI values (``None`` means not given), the environment and a YAML file."""
    values: dict[str, Any] = {}
    if config_file is not None:
        raw = read_mapping(config_file, str(config_file))
        values.update({str(k).replace("-", "_"): v for k, v in raw.items()})
        # the environment wins over the file: drop file values the environment sets
        for key in list(values):
            if f"MLPORT_{key.upper()}" in os.environ:
                del values[key]
    values.update({k: v for k, v in cli.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise InvalidInput(f"invalid settings: {problems(exc)}") from exc
