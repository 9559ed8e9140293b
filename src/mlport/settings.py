"""Server configuration: CLI flags > ``MLPORT_*`` environment variables > ``--config`` YAML > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlport.errors import InvalidInput
from mlport.limits import Limits

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLPORT_", extra="forbid")

    #: A model file, a model folder, or a repository folder.
    model_path: Path | None = None
    #: Name of the model when one file is served (default: the file's stem).
    name: str | None = None
    host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: Port of the Open Inference Protocol gRPC service (0: no gRPC).
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    #: Trust every model served here to run code (pickles, Python sources, Keras Lambdas).
    trusted: bool = False
    #: Seconds between repository scans for new or changed versions (0: only on explicit load calls).
    poll_interval_s: float = Field(default=5.0, ge=0)
    #: Server processes sharing the HTTP and gRPC ports; each loads every model.
    workers: int = Field(default=1, ge=1, le=64)
    #: Threads running predictions in each worker (0: the worker's share of the cores, at least 2).
    inference_threads: int = Field(default=0, ge=0, le=256)
    #: Threads each model's library may use for one prediction (0: what the worker's cores leave for each
    #: inference thread, at least 1).
    intra_op_threads: int = Field(default=0, ge=0, le=256)
    #: Models loaded at the same time.
    load_workers: int = Field(default=2, ge=1, le=64)
    #: Report ready only when every model serves (default: when every model has loaded or failed).
    strict_readiness: bool = False
    log_level: str = "info"
    #: Print one access-log line per request (off by default: it costs time on the hot path).
    access_log: bool = False

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_tensor_elements: int = Field(default=64 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_multipart_parts: int = Field(default=64, ge=1)
    inference_timeout_s: float = Field(default=60.0, gt=0)
    load_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    #: Most models served from a repository folder (those after it, in name order, are not served).
    max_models: int = Field(default=1000, ge=1)

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
        try:
            raw = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"{config_file}: not readable YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise InvalidInput(f"{config_file}: expected a mapping at the top level")
        values.update({k.replace("-", "_"): v for k, v in raw.items()})
        # the environment wins over the file: drop file values the environment sets
        for key in list(values):
            if f"MLPORT_{key.upper()}" in os.environ:
                del values[key]
    values.update({k: v for k, v in cli.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid settings: {problems}") from exc
