"""The eviction policy under a memory budget (a pure function of a snapshot)."""

from __future__ import annotations

from mlport.runtime.cache import Resident, format_bytes, holders, plan_evictions, resident_bytes

MIB = 1024 * 1024


def _r(name: str, mib: int, used: int, **kw: object) -> Resident:
    return Resident(name, mib * MIB, used, **kw)  # type: ignore[arg-type]


def test_nothing_is_evicted_while_the_load_fits() -> None:
    plan = plan_evictions([_r("a", 10, 1)], 20 * MIB, 40 * MIB)
    assert plan.fits and plan.evict == () and plan.used_after == 30 * MIB


def test_least_recently_used_go_first_and_only_as_many_as_needed() -> None:
    residents = [_r("new", 10, 9), _r("old", 10, 1), _r("mid", 10, 5)]
    plan = plan_evictions(residents, 15 * MIB, 40 * MIB)
    assert plan.fits and plan.evict == ("old",)
    plan = plan_evictions(residents, 25 * MIB, 40 * MIB)
    assert plan.evict == ("old", "mid")


def test_pinned_busy_loading_and_kept_models_stay() -> None:
    residents = [
        _r("pinned", 10, 1, pinned=True), _r("busy", 10, 2, inflight=1), _r("loading", 10, 3, loading=True),
        _r("self", 10, 4), _r("idle", 10, 5),
    ]
    plan = plan_evictions(residents, 10 * MIB, 50 * MIB, keep=frozenset({"self"}))
    assert plan.fits and plan.evict == ("idle",)
    # when even every model that may go does not make room, nothing goes
    plan = plan_evictions(residents, 25 * MIB, 50 * MIB, keep=frozenset({"self"}))
    assert not plan.fits and plan.evict == ()


def test_memory_promised_to_running_loads_counts() -> None:
    plan = plan_evictions([_r("a", 10, 1)], 10 * MIB, 30 * MIB, reserved=15 * MIB)
    assert plan.evict == ("a",)


def test_a_model_larger_than_the_budget_never_fits() -> None:
    plan = plan_evictions([], 50 * MIB, 40 * MIB)
    assert not plan.fits


def test_holders_name_the_models_and_why_they_stay() -> None:
    text = holders([_r("small", 1, 1), _r("big", 30, 2, pinned=True), _r("busy", 5, 3, inflight=2)])
    assert text == "held by big (30.0 MiB, pinned), busy (5.0 MiB, requests in flight), small (1.0 MiB)"
    assert holders([], frozenset()) == "no other model is loaded"
    many = holders([_r(f"m{i}", 1, i) for i in range(15)], limit=10)
    assert many.endswith("and 5 more")


def test_sizes_read_well_and_the_resident_set_is_measured() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * MIB // 2) == "1.5 MiB"
    assert format_bytes(5 * 1024 * MIB) == "5.0 GiB"
    before = resident_bytes()
    block = bytearray(64 * MIB)  # zero pages become resident only once written
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert resident_bytes() - before >= 32 * MIB
    del block
