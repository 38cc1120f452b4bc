"""Per-route counters: requests, errors and latency per arm, choices by reason, shadow outcomes.

One :class:`RouteStatistics` belongs to one route of a
:class:`~pyserving.manager.router.Router`; :meth:`RouteStatistics.snapshot` gives the JSON
document ``GET /v1/routes/{name}`` returns::

    {"route": "recommender", "segment_key": "x-user-id",
     "arms": {"control": {"model_name": "rec_a", "weight": 90, "requests": 10, "errors": 0,
                          "latency_ms": {"count": 10, "mean": 0.4, "p50": 0.3, "p90": 0.6,
                                         "p99": 0.9, "max": 1.1}}},
     "choices": {"rule": 0, "segment": 7, "weight": 3},
     "shadow": {"model_name": "rec_c", "percent": 100, "requests": 10, "errors": 0,
                "dropped": 0, "latency_ms": {...}}}

``"shadow"`` is ``null`` when the route has no shadow. ``choices`` counts the *recorded*
requests by the reason their arm was chosen, so it adds up to the arms' ``requests``.
Weights and percents that are whole numbers are written as JSON integers.

Latency is kept in a fixed histogram of log-spaced buckets (seconds,
:data:`LATENCY_BUCKET_BOUNDS_S`: 10 µs to 100 s, eight buckets per decade, Prometheus
``le`` semantics: bucket ``i`` counts values ``<= bounds[i]``, the last counts the rest),
plus the exact count, sum and maximum. Percentiles are estimated from the buckets
(linear inside a bucket, never above the maximum seen), so they are exact to within one
bucket (a factor of 1.33). :meth:`RouteStatistics.latency_histograms` hands the raw buckets to
a metrics exporter.

Threading: every method may be called from any thread. Each :class:`RouteStatistics`
has one small lock (``_lock``) guarding all its counters; recording takes it for a few
integer updates and one ``bisect`` (about a microsecond), and no callback runs under it.
:meth:`RouteStatistics.reconfigure` follows a route update: arms that keep their name keep
their counters, arms that are gone are dropped, new arms start at zero; a record for an
arm the statistics no longer has (a request that chose before the update) is ignored.
Nothing here raises on the request path.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.manager.routes import Route

__all__ = ["LATENCY_BUCKET_BOUNDS_S", "CHOICE_REASONS", "HistogramSnapshot", "LatencyHistogram", "RouteStatistics"]

#: Upper bounds (seconds) of the latency buckets: 10 µs .. 100 s, 8 per decade, 3 significant digits.
LATENCY_BUCKET_BOUNDS_S: tuple[float, ...] = tuple(float(f"{1e-5 * 10 ** (k / 8):.3g}") for k in range(57))

#: Why a router chose an arm: a header rule matched, the segment key's hash, or a weighted draw.
CHOICE_REASONS: tuple[str, ...] = ("rule", "segment", "weight")


def _number(value: float) -> float | int:
    """A whole float as an int (``90.0`` -> ``90``), for tidy JSON."""
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A copy of a :class:`LatencyHistogram` at one moment (immutable, safe to share).

    ``counts`` has ``len(bounds) + 1`` entries (not cumulative); the last one counts the
    values above ``bounds[-1]``. Times are in seconds.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum_s: float
    max_s: float

    def quantile(self, q: float) -> float:
        """Estimated ``q``-quantile (``0 <= q <= 1``) in seconds; 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = min(max(q, 0.0), 1.0) * self.count
        cumulative = 0
        for index, in_bucket in enumerate(self.counts):
            if in_bucket and cumulative + in_bucket >= rank:
                lower = self.bounds[index - 1] if index > 0 else 0.0
                upper = self.bounds[index] if index < len(self.bounds) else self.max_s
                upper = min(upper, self.max_s)
                lower = min(lower, upper)
                return lower + (upper - lower) * (rank - cumulative) / in_bucket
            cumulative += in_bucket
        return self.max_s

    def to_json_ms(self) -> dict[str, Any]:
        """``{"count", "mean", "p50", "p90", "p99", "max"}``, times in milliseconds (zeros when empty)."""

        def ms(seconds: float) -> float:
            return round(seconds * 1000.0, 4)

        mean = self.sum_s / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean": ms(mean),
            "p50": ms(self.quantile(0.5)),
            "p90": ms(self.quantile(0.9)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max_s),
        }


class LatencyHistogram:
    """Counts latencies (seconds) into :data:`LATENCY_BUCKET_BOUNDS_S`.

    Not thread-safe on its own: its owner (:class:`RouteStatistics`) guards it.
    A negative or NaN latency counts as 0.
    """

    __slots__ = ("_counts", "_count", "_sum", "_max")

    def __init__(self) -> None:
        self._counts = [0] * (len(LATENCY_BUCKET_BOUNDS_S) + 1)
        self._count = 0
        self._sum = 0.0
        self._max = 0.0

    def observe(self, seconds: float) -> None:
        if not seconds > 0.0:  # negative, zero or NaN
            seconds = 0.0
        self._counts[bisect.bisect_left(LATENCY_BUCKET_BOUNDS_S, seconds)] += 1
        self._count += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(LATENCY_BUCKET_BOUNDS_S, tuple(self._counts), self._count, self._sum, self._max)


class _Counters:
    """Requests, errors and latency of one arm or of the shadow (guarded by the owner's lock)."""

    __slots__ = ("requests", "errors", "dropped", "latency")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.dropped = 0
        self.latency = LatencyHistogram()


@dataclass(frozen=True, slots=True)
class _CountersCopy:
    requests: int
    errors: int
    dropped: int
    latency: HistogramSnapshot


def _copy(counters: _Counters | None) -> _CountersCopy:
    if counters is None:
        counters = _Counters()
    return _CountersCopy(counters.requests, counters.errors, counters.dropped, counters.latency.snapshot())


class RouteStatistics:
    """The counters of one route (see the module docstring for the contract)."""

    def __init__(self, arm_names: Iterable[str], shadow_model: str | None = None) -> None:
        self._lock = threading.Lock()  # guards _arms, _choices, _shadow, _shadow_model
        self._arms: dict[str, _Counters] = {name: _Counters() for name in arm_names}
        self._choices: dict[str, int] = dict.fromkeys(CHOICE_REASONS, 0)
        self._shadow_model = shadow_model
        self._shadow = _Counters()

    def reconfigure(self, arm_names: Iterable[str], shadow_model: str | None) -> None:
        """Follow a route update: kept arms keep their counters, others start or stop.

        The shadow's counters are kept while it mirrors to the same model, else reset.
        Choice counts are kept.
        """
        names = list(arm_names)
        with self._lock:
            self._arms = {name: self._arms.get(name) or _Counters() for name in names}
            if shadow_model != self._shadow_model:
                self._shadow_model = shadow_model
                self._shadow = _Counters()

    # -- request path ------------------------------------------------------------------

    def record(self, arm: str, reason: str, latency_s: float, error: bool) -> None:
        """Count one request answered (or failed) by ``arm``; ignored for an unknown arm."""
        with self._lock:
            counters = self._arms.get(arm)
            if counters is None:
                return
            counters.requests += 1
            if error:
                counters.errors += 1
            counters.latency.observe(latency_s)
            self._choices[reason] = self._choices.get(reason, 0) + 1

    def record_shadow(self, latency_s: float, error: bool) -> None:
        """Count one shadow call that ran (``error``: it raised)."""
        with self._lock:
            shadow = self._shadow
            shadow.requests += 1
            if error:
                shadow.errors += 1
            shadow.latency.observe(latency_s)

    def record_shadow_dropped(self) -> None:
        """Count one shadow call that was not run (its queue was full, or the router closed)."""
        with self._lock:
            self._shadow.dropped += 1

    # -- reading -----------------------------------------------------------------------

    def latency_histograms(self) -> dict[str, HistogramSnapshot]:
        """Each arm's latency buckets now, by arm name (for a metrics exporter)."""
        with self._lock:
            return {name: counters.latency.snapshot() for name, counters in self._arms.items()}

    def shadow_latency_histogram(self) -> HistogramSnapshot:
        """The shadow calls' latency buckets now."""
        with self._lock:
            return self._shadow.latency.snapshot()

    def snapshot(self, route: Route) -> dict[str, Any]:
        """The JSON document of the module docstring, for ``route`` (the route in force).

        Arms of ``route`` without counters (yet) are reported with zeros.
        """
        with self._lock:
            arms = {arm.name: _copy(self._arms.get(arm.name)) for arm in route.arms}
            choices = dict(self._choices)
            shadow = _copy(self._shadow)
        document: dict[str, Any] = {
            "route": route.name,
            "segment_key": route.segment_key,
            "arms": {
                arm.name: {
                    "model_name": arm.model_name,
                    "weight": _number(arm.weight),
                    "requests": arms[arm.name].requests,
                    "errors": arms[arm.name].errors,
                    "latency_ms": arms[arm.name].latency.to_json_ms(),
                }
                for arm in route.arms
            },
            "choices": choices,
            "shadow": None,
        }
        if route.shadow is not None:
            document["shadow"] = {
                "model_name": route.shadow.model_name,
                "percent": _number(route.shadow.percent),
                "requests": shadow.requests,
                "errors": shadow.errors,
                "dropped": shadow.dropped,
                "latency_ms": shadow.latency.to_json_ms(),
            }
        return document

