"""Every size, count and time limit of the server, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    #: Largest request body accepted, in bytes (413 beyond).
    max_body_bytes: int = 64 * 1024 * 1024
    #: Most elements in one input tensor.
    max_tensor_elements: int = 64 * 1024 * 1024
    #: Most dimensions a tensor may have.
    max_tensor_rank: int = 16
    #: Most inputs/outputs named in one request.
    max_tensors_per_request: int = 256
    #: Largest decoded image, in pixels (width * height).
    max_image_pixels: int = 40_000_000
    #: Most parts in one multipart body.
    max_multipart_parts: int = 64
    #: Longest time one prediction may take before the client gets 504, seconds.
    inference_timeout_s: float = 60.0
    #: Longest time a model may take to load, seconds.
    load_timeout_s: float = 600.0
    #: Longest time an old version waits for its in-flight requests before unloading, seconds.
    drain_timeout_s: float = 60.0
    #: Longest time the server waits for in-flight requests at shutdown, seconds.
    shutdown_timeout_s: float = 30.0
    #: Most models loaded at once from a repository.
    max_models: int = 1000
    #: Longest model or version name accepted in a path.
    max_name_length: int = 256
