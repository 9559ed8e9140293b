"""What each model version served, as Triton's statistics extension reports it.

A :class:`ModelStats` holds plain integer counts and nanosecond totals of one model version. The inference
service updates them on the event loop thread only (after each request, from times it measures anyway), so
they need no lock; readers take a consistent enough copy by reading the fields.
"""

from __future__ import annotations

import time

__all__ = ["ModelStats", "Timing"]


class Timing:
    """When one request's prediction started and ended (``time.perf_counter`` seconds; 0 until it ran).

    Written by the thread that ran the prediction before the request's future completes, read after."""

    __slots__ = ("ended", "started")

    def __init__(self) -> None:
        self.started = 0.0
        self.ended = 0.0


class ModelStats:
    """Counts and time totals of one model version (Triton's ``ModelStatistics`` fields).

    Times are summed as float seconds (cheaper on the hot path than integer nanoseconds) and read in
    nanoseconds through the ``*_ns`` properties."""

    __slots__ = (
        "execution_count",
        "fail_count",
        "fail_s",
        "infer_s",
        "inference_count",
        "input_s",
        "last_inference",
        "output_s",
        "queue_s",
        "ran_count",
        "success_count",
        "success_s",
    )

    def __init__(self) -> None:
        #: Requests answered, and failed, with their whole durations.
        self.success_count = 0
        self.success_s = 0.0
        self.fail_count = 0
        self.fail_s = 0.0
        #: Requests whose prediction ran, and the time of each step: from the request's start to the
        #: prediction's submission (decoding and checking the inputs), waiting for a free prediction slot or a
        #: batch, the prediction (the whole batch's, for every request in it), and from its end to the answer.
        self.ran_count = 0
        self.input_s = 0.0
        self.queue_s = 0.0
        self.infer_s = 0.0
        self.output_s = 0.0
        #: Inferences (the batch size of every request, 1 for a model without a batch axis) and model executions
        #: (a merged batch is one).
        self.inference_count = 0
        self.execution_count = 0
        #: Seconds since the epoch of the last request answered (0: none).
        self.last_inference = 0.0

    def finished(self, ok: bool, seconds: float) -> None:
        """One request ended (answered or failed) after ``seconds``."""
        if ok:
            self.success_count += 1
            self.success_s += seconds
            self.last_inference = time.time()
        else:
            self.fail_count += 1
            self.fail_s += seconds

    def ran(self, rows: int, input_s: float, queue_s: float, infer_s: float, output_s: float) -> None:
        """One request's prediction ran on ``rows`` inferences; the seconds of each step."""
        self.ran_count += 1
        self.inference_count += rows
        self.input_s += input_s
        self.queue_s += queue_s
        self.infer_s += infer_s
        self.output_s += output_s

    def nanoseconds(self) -> dict[str, int]:
        """The time totals in nanoseconds, by Triton's names (``success``, ``fail``, ``queue``, ``compute_*``)."""
        return {name: max(0, round(value * 1e9)) for name, value in (
            ("success", self.success_s), ("fail", self.fail_s), ("queue", self.queue_s),
            ("compute_input", self.input_s), ("compute_infer", self.infer_s), ("compute_output", self.output_s))}
