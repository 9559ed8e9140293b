"""Tallies: per-request metric updates held as plain numbers to the end of the event loop's turn give the same
series as prometheus_client's own updates, and no reader ever sees them held."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from mlport.observability.metrics import Metrics
from mlport.observability.tally import Tallies

_BUCKETS = (0.001, 0.0025, 0.01, 1.0)
_AMOUNTS = (0.0, 0.0005, 0.001, 0.0010001, 0.0025, 0.003, 0.01, 0.5, 1.0, 1.5, 99.0, 0.001, 0.002)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for m in registry.collect() if m.name == name
            for s in m.samples if not s.name.endswith("_created")}


def test_a_histogram_tally_gives_the_series_of_prometheus_client_s_own_observe() -> None:
    registry = CollectorRegistry()
    tallies = Tallies()
    registry.register(tallies)  # type: ignore[arg-type]
    own = Histogram("own", "direct", ["m"], buckets=_BUCKETS, registry=registry)
    held = Histogram("held", "through a tally", ["m"], buckets=_BUCKETS, registry=registry)
    tally = tallies.histogram(held.labels("x"))

    async def observe() -> None:
        for amount in _AMOUNTS:  # bounds themselves, between them, below the first, past the last
            own.labels("x").observe(amount)
            tally.observe(amount)

    asyncio.run(observe())
    direct = _samples(registry, "own")
    through = _samples(registry, "held")
    assert {(n.replace("own", "held"), le): v for (n, le), v in direct.items()} == through
    assert through[("held_count", "")] == len(_AMOUNTS) and through[("held_bucket", "+Inf")] == len(_AMOUNTS)


def test_updates_are_held_to_the_end_of_the_loop_s_turn_then_added_once() -> None:
    registry = CollectorRegistry()
    tallies = Tallies()
    registry.register(tallies)  # type: ignore[arg-type]
    counter = Counter("c", "requests", ["m"], registry=registry).labels("x")
    histogram = Histogram("h", "latency", ["m"], buckets=_BUCKETS, registry=registry).labels("x")
    counted, observed = tallies.counter(counter), tallies.histogram(histogram)

    async def turns() -> None:
        for _ in range(5):
            counted.inc()
            observed.observe(0.002)
        counted.inc(2.0)
        assert counter._value.get() == 0 and histogram._sum.get() == 0  # still held in this turn
        await asyncio.sleep(0)  # the turn ends: added
        assert counter._value.get() == 7 and histogram._sum.get() == 0.01
        counted.inc()
        await asyncio.sleep(0)
        assert counter._value.get() == 8

    asyncio.run(turns())


def test_a_collection_adds_what_is_held_first() -> None:
    metrics = Metrics()
    child = metrics.requests.labels("m", "1", "v2", "ok")

    async def read_in_the_same_turn() -> tuple[float | None, float | None]:
        tally = metrics.tallies.counter(child)
        tally.inc()
        latency = metrics.tallies.histogram(metrics.latency.labels("m", "v2"))
        latency.observe(0.3)
        return (metrics.registry.get_sample_value("mlport_requests_total", {"model": "m", "version": "1",
                                                                            "protocol": "v2", "status": "ok"}),
                metrics.registry.get_sample_value("mlport_request_duration_seconds_count",
                                                  {"model": "m", "protocol": "v2"}))

    assert asyncio.run(read_in_the_same_turn()) == (1.0, 1.0)
    assert b'mlport_requests_total{model="m",protocol="v2",status="ok",version="1"} 1.0' in metrics.exposition()


def test_outside_an_event_loop_an_update_is_added_at_once() -> None:
    registry = CollectorRegistry()
    tallies = Tallies()
    counter = Counter("c", "requests", registry=registry)
    histogram = Histogram("h", "latency", buckets=_BUCKETS, registry=registry)
    tallies.counter(counter).inc(3)
    tallies.histogram(histogram).observe(5.0)
    assert counter._value.get() == 3 and histogram._sum.get() == 5.0
