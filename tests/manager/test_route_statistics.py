"""RouteStatistics: bucket bounds, counting, percentiles, reconfiguration, JSON shape, threads."""

from __future__ import annotations

import json
import math
import threading

from pyserving.manager.route_statistics import (
    CHOICE_REASONS,
    LATENCY_BUCKET_BOUNDS_S,
    HistogramSnapshot,
    LatencyHistogram,
    RouteStatistics,
)
from pyserving.manager.routes import Arm, Route, Shadow

BOUNDS = LATENCY_BUCKET_BOUNDS_S


def route(shadow: Shadow | None = None, **weights: float) -> Route:
    weights = weights or {"control": 90, "treatment": 10}
    arms = tuple(Arm(name, f"model_{name}", weight) for name, weight in weights.items())
    return Route("rec", arms, segment_key="x-user-id", shadow=shadow)


def test_bounds_are_fixed_log_spaced_seconds() -> None:
    assert BOUNDS[0] == 1e-5 and BOUNDS[-1] == 100.0
    assert all(a < b for a, b in zip(BOUNDS, BOUNDS[1:]))
    ratios = [b / a for a, b in zip(BOUNDS, BOUNDS[1:])]
    assert all(1.30 < r < 1.37 for r in ratios), ratios  # eight buckets per decade
    assert 1e-3 in BOUNDS and 1.0 in BOUNDS  # whole decades are exact bucket bounds


def test_observe_uses_le_buckets_with_an_overflow_bucket() -> None:
    histogram = LatencyHistogram()
    for value in (BOUNDS[3], BOUNDS[3] * 1.01, 1000.0, -1.0, math.nan):
        histogram.observe(value)
    snap = histogram.snapshot()
    assert len(snap.counts) == len(BOUNDS) + 1
    assert snap.counts[3] == 1  # exactly on a bound: that bucket (Prometheus "le")
    assert snap.counts[4] == 1
    assert snap.counts[-1] == 1  # above 100 s
    assert snap.counts[0] == 2  # negative and NaN count as 0
    assert snap.count == 5 and snap.max_s == 1000.0
    assert snap.sum_s == BOUNDS[3] + BOUNDS[3] * 1.01 + 1000.0


def test_quantiles_are_within_one_bucket_and_never_above_the_max() -> None:
    histogram = LatencyHistogram()
    values = [0.0001 * (1 + i) for i in range(1000)]  # 0.1 ms .. 100 ms, uniform
    for value in values:
        histogram.observe(value)
    snap = histogram.snapshot()
    for q in (0.5, 0.9, 0.99):
        true = values[int(q * len(values)) - 1]
        assert true / 1.34 <= snap.quantile(q) <= true * 1.34, (q, snap.quantile(q), true)
    assert snap.quantile(1.0) <= snap.max_s == values[-1]
    doc = snap.to_json_ms()
    assert list(doc) == ["count", "mean", "p50", "p90", "p99", "max"]
    assert doc["count"] == 1000 and doc["max"] == 100.0
    assert abs(doc["mean"] - 50.05) < 1e-3


def test_an_empty_histogram_reports_zeros() -> None:
    snap = HistogramSnapshot(BOUNDS, (0,) * (len(BOUNDS) + 1), 0, 0.0, 0.0)
    assert snap.to_json_ms() == {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


def test_records_count_per_arm_and_reason() -> None:
    stats = RouteStatistics(["control", "treatment"])
    stats.record("control", "weight", 0.001, error=False)
    stats.record("control", "segment", 0.003, error=True)
    stats.record("treatment", "rule", 0.002, error=False)
    stats.record("gone", "weight", 0.002, error=False)  # an arm it does not have: ignored
    doc = stats.snapshot(route())
    assert doc["arms"]["control"]["requests"] == 2 and doc["arms"]["control"]["errors"] == 1
    assert doc["arms"]["control"]["latency_ms"]["count"] == 2
    assert doc["arms"]["control"]["latency_ms"]["max"] == 3.0
    assert doc["arms"]["treatment"]["requests"] == 1 and doc["arms"]["treatment"]["errors"] == 0
    assert doc["choices"] == {"rule": 1, "segment": 1, "weight": 1}
    histograms = stats.latency_histograms()
    assert set(histograms) == {"control", "treatment"} and histograms["control"].count == 2


def test_snapshot_has_the_documented_json_shape() -> None:
    shadowed = route(shadow=Shadow("model_shadow", percent=25.5))
    stats = RouteStatistics(["control", "treatment"], "model_shadow")
    stats.record_shadow(0.004, error=False)
    stats.record_shadow(0.002, error=True)
    stats.record_shadow_dropped()
    doc = json.loads(json.dumps(stats.snapshot(shadowed)))  # JSON-ready as it is
    assert list(doc) == ["route", "segment_key", "arms", "choices", "shadow"]
    assert doc["route"] == "rec" and doc["segment_key"] == "x-user-id"
    assert doc["arms"]["control"] == {
        "model_name": "model_control",
        "weight": 90,
        "requests": 0,
        "errors": 0,
        "latency_ms": {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0},
    }
    assert isinstance(doc["arms"]["control"]["weight"], int)
    assert list(doc["choices"]) == list(CHOICE_REASONS)
    shadow = doc["shadow"]
    assert (shadow["model_name"], shadow["percent"]) == ("model_shadow", 25.5)
    assert (shadow["requests"], shadow["errors"], shadow["dropped"]) == (2, 1, 1)
    assert shadow["latency_ms"]["count"] == 2 and shadow["latency_ms"]["max"] == 4.0
    assert RouteStatistics(["control", "treatment"]).snapshot(route())["shadow"] is None


def test_reconfigure_keeps_arms_that_keep_their_name() -> None:
    stats = RouteStatistics(["control", "treatment"], "model_shadow")
    stats.record("control", "weight", 0.001, error=False)
    stats.record("treatment", "weight", 0.001, error=False)
    stats.record_shadow(0.001, error=False)
    stats.reconfigure(["control", "canary"], "model_shadow")
    doc = stats.snapshot(route(shadow=Shadow("model_shadow"), control=50, canary=50))
    assert doc["arms"]["control"]["requests"] == 1  # kept
    assert doc["arms"]["canary"]["requests"] == 0  # new
    assert "treatment" not in doc["arms"]
    assert doc["shadow"]["requests"] == 1 and doc["choices"]["weight"] == 2
    stats.record("treatment", "weight", 0.001, error=False)  # chose before the update: ignored
    stats.reconfigure(["control", "canary"], "other_shadow")  # a new shadow model starts at zero
    assert stats.snapshot(route(shadow=Shadow("other_shadow"), control=1, canary=1))["shadow"]["requests"] == 0


def test_concurrent_records_are_all_counted() -> None:
    stats = RouteStatistics(["a", "b"])
    threads_n, calls = 8, 2000
    start = threading.Barrier(threads_n)

    def worker(number: int) -> None:
        start.wait(10)
        for i in range(calls):
            stats.record("a" if number % 2 else "b", "weight", 0.0001 * (i % 7), error=i % 10 == 0)
            if i % 100 == 0:
                stats.snapshot(route(a=1, b=1))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    doc = stats.snapshot(route(a=1, b=1))
    for arm in ("a", "b"):
        assert doc["arms"][arm]["requests"] == threads_n // 2 * calls
        assert doc["arms"][arm]["latency_ms"]["count"] == threads_n // 2 * calls
        assert doc["arms"][arm]["errors"] == threads_n // 2 * (calls // 10)
    assert doc["choices"]["weight"] == threads_n * calls
