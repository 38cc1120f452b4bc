""":class:`ServerMetrics`: the model server's Prometheus metrics, TF Serving's names and pyserving's.

Request path (cheap, any thread): :meth:`ServerMetrics.observe` (a
:class:`~pyserving.server.request_events.RequestObserver`), :meth:`~ServerMetrics.in_flight_inc` /
:meth:`~ServerMetrics.in_flight_dec` (or :meth:`~ServerMetrics.track_in_flight`) and
:meth:`~ServerMetrics.record_runtime`. Each label combination gets one small cell (a lock, a
count, bucket counts) the first time it is seen; later calls find it in a dict and do one
``bisect`` and a few integer updates under the cell's lock (about 1 µs). Nothing is
aggregated until a scrape. Load-time calls: :meth:`~ServerMetrics.record_load`,
:meth:`~ServerMetrics.record_warmup`.

Scrape time only (:meth:`ServerMetrics.render`): :meth:`~ServerMetrics.attach` registers a
collector that reads the :class:`~pyserving.server.core.ServerCore` (servable states from
the manager's monitor, :class:`~pyserving.manager.lifecycle_log.LifecycleLog` counters,
each available version's :class:`~pyserving.loaders.batching.BatchingServable` statistics,
reached through ``manager.get_available_handles()`` and released before anything is
formatted) and a :class:`~pyserving.manager.router.Router`'s route statistics.

Metrics (µs histograms use TF Serving's buckets ``10 * 1.8**k``, k = 0..32; size histograms
``2**k``, k = 0..13; seconds histograms 100 µs .. 100 s, four per decade, a subset of
:data:`~pyserving.manager.route_statistics.LATENCY_BUCKET_BOUNDS_S`)::

    :tensorflow:serving:request_count{model_name,status}              counter; gRPC Predict/Classify/Regress
                                                                      and every REST call (TF's rule)
    :tensorflow:serving:request_latency{model_name,API,entrypoint}    µs histogram, same calls, OK only
    :tensorflow:serving:runtime_latency{model_name,API,runtime}       µs histogram (record_runtime)
    :tensorflow:cc:saved_model:load_attempt_count{model_path,status}  counter, status success|fail
    :tensorflow:cc:saved_model:load_latency{model_path}               counter: µs of successful loads
    :tensorflow:serving:model_warmup_latency{model_path,status}       µs histogram
    :tensorflow:serving:model_warmup_records_read{model_path,status}  counter
    :tensorflow:serving:batching_session:queuing_latency{thread_pool_name}  µs histogram (*)
    :tensorflow:serving:batching_session:input_batch_size             histogram (*)
    :tensorflow:serving:batching_session:processed_batch_size         histogram (**)
    :tensorflow:serving:batching_session:padding_size{execution_batch_size}  histogram (**)
    pyserving_requests_total{model,version,api,entrypoint,status}     every event
    pyserving_request_latency_seconds{model,version,api,entrypoint}   histogram, OK only (as TF)
    pyserving_requests_in_flight{model}                               gauge
    pyserving_servable_state{model,version,state}                     gauge 1 (END after a clean
                                                                      unload is left out)
    pyserving_{loads,load_failures,load_cancellations,unloads,unload_failures,swaps}_total{model}
    pyserving_{load,unload}_duration_seconds{model}                   summary: sum, count, and
                                                                      quantiles of the recent ones
    pyserving_batch_queue_depth / pyserving_batches_in_flight{model,version}  gauges
    pyserving_batch_size{model,version}                               histogram: rows per batch
    pyserving_batch_queue_delay_seconds{model,version}                summary (sum, count)
    pyserving_batch_padded_rows_total / pyserving_batch_failed_total{model,version}
    pyserving_batch_rejected_total{model,version,reason}              queue_full|too_large|expired|
                                                                      cancelled|shut_down
    pyserving_route_{requests,errors}_total{route,arm}, pyserving_route_latency_seconds{route,arm}
    pyserving_route_choices_total{route,reason}
    pyserving_route_shadow_{requests,errors,dropped}_total{route}, pyserving_route_shadow_latency_seconds

(*) the batch statistics keep only sum and count of queue delays and of task sizes, so
these histograms have the ``+Inf`` bucket only (averages work, quantiles do not). (**) built
from rows per batch and the version's ``allowed_batch_sizes``; a batch run alone (inputs
that cannot be batched) is counted as if padded. TF names are aggregated over every
available version, like TF's process-wide cells; they drop when a version unloads.

Exposition: prometheus-client's ``CollectorRegistry`` (a private one per instance: servers in
one process never mix) and metric families, written by :func:`exposition` in text format
0.0.4. Not ``generate_latest``: it renames every counter ``<name>_total``, while TF Serving
writes ``# TYPE :tensorflow:serving:request_count counter`` and samples of that exact name.
Here a counter keeps the name of its samples; ``_created`` samples are left out; µs bucket
bounds are printed as TF does (six significant digits). Labels of unbounded origin (a
client's model name) are capped: past ``max_label_sets`` combinations new ones are counted
under model ``"__overflow__"`` (logged once).

Errors: the request-path methods never raise. A scrape section that fails (a race with an
unload, a bug) is logged and left out; the rest of the page is still served.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pyserving.loaders.batching import BatchingServable
from pyserving.manager.route_statistics import LATENCY_BUCKET_BOUNDS_S, HistogramSnapshot
from pyserving.servable.batch_statistics import QueueStatistics
from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.state import ManagerState
from pyserving.server.request_events import RequestEvent

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.manager.router import Router
    from pyserving.server.core import ServerCore

__all__ = ["CONTENT_TYPE", "OVERFLOW_MODEL", "ServerMetrics", "exposition"]

_log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OVERFLOW_MODEL = "__overflow__"


def _exponential(scale: float, growth: float, count: int) -> tuple[float, ...]:
    bounds, bound = [], scale
    for _ in range(count):  # repeated multiplication, as TF's Buckets::Exponential
        bounds.append(bound)
        bound *= growth
    return tuple(bounds)


_US_BOUNDS = _exponential(10.0, 1.8, 33)
_US_LE = tuple(f"{b:.6g}" for b in _US_BOUNDS)
_SIZE_BOUNDS = _exponential(1.0, 2.0, 14)
_SIZE_LE = tuple(f"{b:.6g}" for b in _SIZE_BOUNDS)
_FINE_INDEX = tuple(range(8, len(LATENCY_BUCKET_BOUNDS_S), 2))  # 100 µs .. 100 s in the route buckets
_S_BOUNDS = tuple(LATENCY_BUCKET_BOUNDS_S[i] for i in _FINE_INDEX)
_S_LE = tuple(repr(b) for b in _S_BOUNDS)
#: gRPC APIs TF Serving counts in request_count / request_latency (REST: every call counts).
_TF_GRPC_APIS = frozenset({"Predict", "Classify", "Regress"})
_TF_REST_LATENCY_APIS = frozenset({"predict", "classify", "regress"})
_QUANTILES = (0.5, 0.9, 0.99)


class _RequestCell:
    """Counters of one (model, version, api, entrypoint, status); fields guarded by ``lock``."""

    __slots__ = ("lock", "ok", "tf_count", "tf_latency", "count", "buckets", "sum_s", "tf_buckets")

    def __init__(self, api: str, entrypoint: str, status: str) -> None:
        self.lock = threading.Lock()
        self.ok = status == "OK"
        self.tf_count = entrypoint != "GRPC" or api in _TF_GRPC_APIS
        self.tf_latency = self.ok and (api in _TF_GRPC_APIS if entrypoint == "GRPC" else api in _TF_REST_LATENCY_APIS)
        self.count = 0
        self.buckets = [0] * (len(_S_BOUNDS) + 1)
        self.sum_s = 0.0
        self.tf_buckets = [0] * (len(_US_BOUNDS) + 1)


class _Histogram:
    """Bucket counts over ``bounds`` plus a sum; fields guarded by ``lock``."""

    __slots__ = ("lock", "bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.lock = threading.Lock()
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        with self.lock:
            self.counts[index] += 1
            self.sum += value

    def copy(self) -> tuple[list[int], float]:
        with self.lock:
            return list(self.counts), self.sum


class _Gauge:
    __slots__ = ("lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0


class _InFlight:
    """The context manager of :meth:`ServerMetrics.track_in_flight`."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: _Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        with self._gauge.lock:
            self._gauge.value += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._gauge.lock:
            self._gauge.value -= 1


class ServerMetrics:
    """The metrics of one server; see the module docstring.

    ``max_label_sets``: label combinations kept per request-path family before new ones go
    to model ``"__overflow__"`` (default 10 000, >= 1). ``process_metrics``: also export
    prometheus-client's process, platform and GC collectors (``process_*``, ``python_*``).
    Threading: every method may be called from any thread at any time.
    """

    def __init__(self, *, max_label_sets: int = 10_000, process_metrics: bool = True) -> None:
        if isinstance(max_label_sets, bool) or not isinstance(max_label_sets, int) or max_label_sets < 1:
            raise InvalidArgumentError(f"max_label_sets must be an int >= 1, got {max_label_sets!r}")
        self._max = max_label_sets
        self._lock = threading.Lock()  # guards the creation of cells (the dicts below) and _overflowed
        self._requests: dict[tuple[str, int | None, str, str, str], _RequestCell] = {}
        self._runtime: dict[tuple[str, str], _Histogram] = {}
        self._in_flight: dict[str, _Gauge] = {}
        self._overflowed = False
        self._loads: dict[str, list[float]] = {}  # model_path -> [successes, failures, µs of successes]; _lock
        self._warmups: dict[tuple[str, str], tuple[_Histogram, list[int]]] = {}  # -> (µs, [records]); _lock
        self._attached: _CoreCollector | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        """Private registry; other server parts may register their own collectors on it."""
        self.registry.register(_OwnCollector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # -- request path --------------------------------------------------------------------

    def observe(self, event: RequestEvent) -> None:
        """Count one finished request (see the module docstring). Never raises."""
        try:
            key = (event.model, event.version, event.api, event.entrypoint, event.status)
            cell = self._requests.get(key)
            if cell is None:
                cell = self._request_cell(key)
            if not cell.ok:
                with cell.lock:
                    cell.count += 1
                return
            latency = event.latency_s
            if not latency > 0.0:  # negative or NaN
                latency = 0.0
            index = bisect.bisect_left(_S_BOUNDS, latency)
            if cell.tf_latency:
                tf_index = bisect.bisect_left(_US_BOUNDS, latency * 1e6)
                with cell.lock:
                    cell.count += 1
                    cell.buckets[index] += 1
                    cell.sum_s += latency
                    cell.tf_buckets[tf_index] += 1
            else:
                with cell.lock:
                    cell.count += 1
                    cell.buckets[index] += 1
                    cell.sum_s += latency
        except Exception:  # noqa: BLE001 - an observer must never fail a request
            _log.exception("Recording a request in the metrics failed")

    def in_flight_inc(self, model: str) -> None:
        """One more request of ``model`` in progress (the name the client asked for)."""
        gauge = self._in_flight.get(model) or self._gauge(model)
        with gauge.lock:
            gauge.value += 1

    def in_flight_dec(self, model: str) -> None:
        """That request finished (call exactly once per :meth:`in_flight_inc`)."""
        gauge = self._in_flight.get(model) or self._gauge(model)
        with gauge.lock:
            gauge.value -= 1

    def track_in_flight(self, model: str) -> _InFlight:
        """``with metrics.track_in_flight(name): ...`` counts the block as one request in flight."""
        return _InFlight(self._in_flight.get(model) or self._gauge(model))

    def record_runtime(self, model: str, api: str, latency_s: float) -> None:
        """Time spent running the model (TF's runtime_latency around ``Session::Run``). Never raises."""
        try:
            cell = self._runtime.get((model, api))
            if cell is None:
                cell = self._capped(self._runtime, (model, api), (OVERFLOW_MODEL, api), lambda: _Histogram(_US_BOUNDS))
            cell.observe(latency_s * 1e6 if latency_s > 0.0 else 0.0)
        except Exception:  # noqa: BLE001
            _log.exception("Recording a runtime latency in the metrics failed")

    # -- load path -----------------------------------------------------------------------

    def record_load(self, model_path: str, ok: bool, latency_s: float) -> None:
        """One SavedModel load attempt of ``model_path`` (TF counts only successful load time)."""
        with self._lock:
            counts = self._loads.setdefault(model_path, [0, 0, 0.0])
            counts[0 if ok else 1] += 1
            if ok:
                counts[2] += max(latency_s, 0.0) * 1e6

    def record_warmup(self, model_path: str, status: str, latency_s: float, records: int) -> None:
        """One warmup of ``model_path`` that ended with ``status`` (a code name, "OK" on success)."""
        with self._lock:
            entry = self._warmups.get((model_path, status))
            if entry is None:
                entry = self._warmups[(model_path, status)] = (_Histogram(_US_BOUNDS), [0])
            entry[1][0] += records
        entry[0].observe(max(latency_s, 0.0) * 1e6)

    # -- scrape side ---------------------------------------------------------------------

    def attach(self, core: ServerCore, router: Router | None = None) -> None:
        """Export ``core``'s (and ``router``'s) state at each scrape; replaces an earlier attach."""
        collector = _CoreCollector(core, router)
        with self._lock:
            previous, self._attached = self._attached, collector
        if previous is not None:
            self.registry.unregister(previous)
        self.registry.register(collector)

    def detach(self) -> None:
        """Stop exporting the attached core (idempotent)."""
        with self._lock:
            previous, self._attached = self._attached, None
        if previous is not None:
            self.registry.unregister(previous)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text page now, and its ``Content-Type``."""
        return exposition(self.registry.collect()), CONTENT_TYPE

    # -- cells ---------------------------------------------------------------------------

    def _request_cell(self, key: tuple[str, int | None, str, str, str]) -> _RequestCell:
        _, _, api, entrypoint, status = key
        return self._capped(
            self._requests, key, (OVERFLOW_MODEL, None, api, entrypoint, status), lambda: _RequestCell(api, entrypoint, status)
        )

    def _gauge(self, model: str) -> _Gauge:
        return self._capped(self._in_flight, model, OVERFLOW_MODEL, _Gauge)

    def _capped(self, cells: dict[Any, Any], key: Any, overflow_key: Any, make: Callable[[], Any]) -> Any:
        """The cell of ``key``, created under ``_lock``; past the cap, the overflow cell (not cached
        under ``key``, so the cap holds)."""
        with self._lock:
            cell = cells.get(key)
            if cell is not None:
                return cell
            if len(cells) >= self._max:
                if not self._overflowed:
                    self._overflowed = True
                    _log.warning(
                        "Metrics: more than %d label combinations (clients naming many different models?); "
                        "new ones are counted under model %r", self._max, OVERFLOW_MODEL,
                    )
                key = overflow_key
                cell = cells.get(key)
                if cell is not None:
                    return cell
            cell = cells[key] = make()
            return cell

    def _own_families(self) -> Iterator[Metric]:
        with self._lock:
            requests = list(self._requests.items())
            runtime = list(self._runtime.items())
            in_flight = list(self._in_flight.items())
            loads = {path: list(counts) for path, counts in self._loads.items()}
            warmups = [(key, hist, records[0]) for key, (hist, records) in self._warmups.items()]
        tf_count: dict[tuple[str, str], int] = {}
        tf_latency: dict[tuple[str, str, str], tuple[list[int], float]] = {}
        ours = CounterMetricFamily("pyserving_requests", "Requests answered, by model version, API, entry point "
                                   "and status.", labels=("model", "version", "api", "entrypoint", "status"))
        latency: dict[tuple[str, str, str, str], tuple[list[int], float]] = {}
        for (model, version, api, entrypoint, status), cell in requests:
            with cell.lock:
                count, buckets, sum_s, tf_buckets = cell.count, list(cell.buckets), cell.sum_s, list(cell.tf_buckets)
            version_label = "" if version is None else str(version)
            ours.add_metric((model, version_label, api, entrypoint, status), count)
            if cell.tf_count:
                tf_count[(model, status)] = tf_count.get((model, status), 0) + count
            if cell.ok:
                _add_into(latency, (model, version_label, api, entrypoint), buckets, sum_s)
            if cell.tf_latency:
                _add_into(tf_latency, (model, api, entrypoint), tf_buckets, sum_s * 1e6)
        yield _tf_counter(":tensorflow:serving:request_count", "The total number of requests.",
                          ("model_name", "status"), tf_count.items())
        yield _histogram(":tensorflow:serving:request_latency", "Distribution of wall time (in microseconds) "
                         "for TensorFlow Serving request.", ("model_name", "API", "entrypoint"), _US_LE, tf_latency)
        runtime_data = {(model, api, "TF1"): cell.copy() for (model, api), cell in runtime}
        yield _histogram(":tensorflow:serving:runtime_latency", "Distribution of wall time (in microseconds) "
                         "for the model runtime.", ("model_name", "API", "runtime"), _US_LE, runtime_data)
        yield _tf_counter(":tensorflow:cc:saved_model:load_attempt_count", "The number of times a SavedModel "
                          "was loaded, by outcome.", ("model_path", "status"),
                          [((p, s), c[i]) for p, c in loads.items() for i, s in ((0, "success"), (1, "fail")) if c[i]])
        yield _tf_counter(":tensorflow:cc:saved_model:load_latency", "Latency in microseconds for SavedModels "
                          "that were successfully loaded.", ("model_path",),
                          [((p,), c[2]) for p, c in loads.items() if c[0]])
        yield _histogram(":tensorflow:serving:model_warmup_latency", "Distribution of wall time (in microseconds) "
                         "for warming up the model.", ("model_path", "status"), _US_LE,
                         {key: hist.copy() for key, hist, _ in warmups})
        yield _tf_counter(":tensorflow:serving:model_warmup_records_read", "Warmup records read, by outcome.",
                          ("model_path", "status"), [(key, records) for key, _, records in warmups])
        yield ours
        yield _histogram("pyserving_request_latency_seconds", "Latency of successful requests, from arrival "
                         "to answer, in seconds.", ("model", "version", "api", "entrypoint"), _S_LE, latency)
        gauge = GaugeMetricFamily("pyserving_requests_in_flight", "Requests being answered now, by model "
                                  "(handles held on its versions, plus requests counted by in_flight_inc).",
                                  labels=("model",))
        values = {model: cell.value for model, cell in in_flight}
        attached = self._attached
        if attached is not None:
            try:
                held = attached.handle_counts()
            except Exception:  # noqa: BLE001 - the core's section reports its own failure
                held = {}
            for sid, count in held.items():
                values[sid.name] = values.get(sid.name, 0) + count
        for model, value in sorted(values.items()):
            gauge.add_metric((model,), value)
        yield gauge


class _OwnCollector:
    """The request- and load-path families of a :class:`ServerMetrics`."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from _guarded("request metrics", self._metrics._own_families)


class _CoreCollector:
    """Reads a ServerCore and a Router at scrape time (see the module docstring)."""

    def __init__(self, core: ServerCore, router: Router | None) -> None:
        self._core = core
        self._router = router

    def handle_counts(self) -> dict[Any, int]:
        """Handles held now by version (requests in flight on the models)."""
        return self._core.manager.handle_counts()

    def collect(self) -> Iterator[Metric]:
        yield from _guarded("servable states", self._states)
        yield from _guarded("lifecycle counters", self._lifecycle)
        yield from _guarded("batching statistics", self._batching)
        if self._router is not None:
            yield from _guarded("route statistics", self._routes)

    def _states(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("pyserving_servable_state", "1 for the current state of each servable version "
                                   "(versions cleanly unloaded are left out).", labels=("model", "version", "state"))
        for name, states in self._core.manager.monitor.get_all_states().items():
            for state in states:
                if state.manager_state is ManagerState.END and state.health is None:
                    continue
                family.add_metric((name, str(state.id.version), state.manager_state.name), 1)
        yield family

    def _lifecycle(self) -> Iterator[Metric]:
        models = self._core.lifecycle.statistics().models
        for field, doc in (
            ("loads", "Versions that became AVAILABLE."),
            ("load_failures", "Version loads that failed."),
            ("load_cancellations", "Version loads cancelled because the version was no longer wanted."),
            ("unloads", "Versions unloaded."),
            ("unload_failures", "Version unloads that failed."),
            ("swaps", "Times a version became AVAILABLE while another version of the model was AVAILABLE."),
        ):
            family = CounterMetricFamily(f"pyserving_{field}", doc, labels=("model",))
            for name, stats in models.items():
                family.add_metric((name,), getattr(stats, field))
            yield family
        for kind in ("load", "unload"):
            family = Metric(f"pyserving_{kind}_duration_seconds", f"Time from {kind.upper()}ING to the next state, "
                            "in seconds; quantiles over the recent ones.", "summary")
            for name, stats in models.items():
                recent = sorted(getattr(stats, f"recent_{kind}_s"))
                for q in _QUANTILES if recent else ():
                    value = recent[max(0, math.ceil(q * len(recent)) - 1)]
                    family.add_sample(family.name, {"model": name, "quantile": repr(q)}, value)
                family.add_sample(f"{family.name}_sum", {"model": name}, getattr(stats, f"{kind}_s_sum"))
                family.add_sample(f"{family.name}_count", {"model": name}, getattr(stats, f"{kind}_s_count"))
            yield family

    def _batching(self) -> Iterator[Metric]:
        found: list[tuple[str, str, QueueStatistics, Any, str]] = []
        handles = self._core.manager.get_available_handles()
        try:  # hold the handles only while the statistics are copied
            for sid, handle in handles.items():
                servable = handle.servable
                if isinstance(servable, BatchingServable):
                    parameters = servable.parameters
                    found.append((sid.name, str(sid.version), servable.statistics(), parameters.queue_options(),
                                  parameters.thread_pool_name))
        finally:
            for handle in handles.values():
                handle.release()
        labels = ("model", "version")
        depth = GaugeMetricFamily("pyserving_batch_queue_depth", "Requests waiting in the batch queues.", labels=labels)
        running = GaugeMetricFamily("pyserving_batches_in_flight", "Batches running now.", labels=labels)
        sizes = HistogramMetricFamily("pyserving_batch_size", "Rows per batch run (without padding).", labels=labels)
        delay = Metric("pyserving_batch_queue_delay_seconds", "Time requests waited in the batch queue, seconds.",
                       "summary")
        padded = CounterMetricFamily("pyserving_batch_padded_rows", "Rows added to reach an allowed batch size.",
                                     labels=labels)
        failed = CounterMetricFamily("pyserving_batch_failed", "Batches whose computation failed.", labels=labels)
        rejected = CounterMetricFamily("pyserving_batch_rejected", "Requests the batch queue did not run, by reason.",
                                       labels=(*labels, "reason"))
        queuing: dict[tuple[str], tuple[list[int], float]] = {}
        inputs: dict[tuple[()], tuple[list[int], float]] = {}
        processed: dict[tuple[()], tuple[list[int], float]] = {}
        padding: dict[tuple[str], tuple[list[int], float]] = {}
        for model, version, stats, options, pool in found:
            key = (model, version)
            depth.add_metric(key, stats.enqueued_tasks)
            running.add_metric(key, stats.in_flight_batches)
            counts = [0] * (len(_SIZE_BOUNDS) + 1)
            processed_counts = [0] * (len(_SIZE_BOUNDS) + 1)
            for rows, batches in stats.batch_sizes.items():
                counts[bisect.bisect_left(_SIZE_BOUNDS, rows)] += batches
                executed = options.padded_size(rows)
                processed_counts[bisect.bisect_left(_SIZE_BOUNDS, executed)] += batches
                pad = [0] * (len(_SIZE_BOUNDS) + 1)
                pad[bisect.bisect_left(_SIZE_BOUNDS, executed - rows)] = batches
                _add_into(padding, (str(executed),), pad, float((executed - rows) * batches))
            sizes.add_metric(key, _buckets(_SIZE_LE, counts), stats.rows)
            _add_into(processed, (), processed_counts, float(stats.rows + stats.padded_rows))
            _add_into(inputs, (), [stats.tasks], float(stats.rows))
            _add_into(queuing, (pool,), [stats.queue_delay_count], stats.queue_delay_s_sum * 1e6)
            delay.add_sample(f"{delay.name}_sum", dict(zip(labels, key)), stats.queue_delay_s_sum)
            delay.add_sample(f"{delay.name}_count", dict(zip(labels, key)), stats.queue_delay_count)
            padded.add_metric(key, stats.padded_rows)
            failed.add_metric(key, stats.failed_batches)
            for reason, value in (("queue_full", stats.rejected_full), ("too_large", stats.rejected_too_large),
                                  ("expired", stats.expired), ("cancelled", stats.cancelled),
                                  ("shut_down", stats.shut_down)):
                rejected.add_metric((*key, reason), value)
        prefix = ":tensorflow:serving:batching_session:"
        yield _histogram(f"{prefix}queuing_latency", "Distribution of wall time spent (in microseconds) in "
                         "queuing; sum and count only.", ("thread_pool_name",), (), queuing)
        yield _histogram(f"{prefix}input_batch_size", "Tracks the batch size distribution on the inputs; sum and "
                         "count only.", (), (), inputs)
        yield _histogram(f"{prefix}processed_batch_size", "Tracks the batch size distribution on processing.", (),
                         _SIZE_LE, processed)
        yield _histogram(f"{prefix}padding_size", "Tracks the padding size distribution on batches.",
                         ("execution_batch_size",), _SIZE_LE, padding)
        yield from (depth, running, sizes, delay, padded, failed, rejected)

    def _routes(self) -> Iterator[Metric]:
        router = self._router
        assert router is not None
        requests = CounterMetricFamily("pyserving_route_requests", "Requests of a route, by arm.", labels=("route", "arm"))
        errors = CounterMetricFamily("pyserving_route_errors", "Failed requests of a route, by arm.",
                                     labels=("route", "arm"))
        choices = CounterMetricFamily("pyserving_route_choices", "Arm choices of a route, by reason.",
                                      labels=("route", "reason"))
        latency = HistogramMetricFamily("pyserving_route_latency_seconds", "Latency of a route's requests, by arm, "
                                        "in seconds.", labels=("route", "arm"))
        shadow_counts = {kind: CounterMetricFamily(f"pyserving_route_shadow_{kind}", f"Shadow calls of a route: {kind}.",
                                                   labels=("route",)) for kind in ("requests", "errors", "dropped")}
        shadow_latency = HistogramMetricFamily("pyserving_route_shadow_latency_seconds", "Latency of a route's shadow "
                                               "calls, in seconds.", labels=("route",))
        for name in sorted(router.route_names()):
            try:
                document = router.statistics(name)
                stats = _route_statistics(router, name)
            except Exception:  # noqa: BLE001 - the route was removed since route_names()
                continue
            histograms = stats.latency_histograms()
            for arm, data in document["arms"].items():
                requests.add_metric((name, arm), data["requests"])
                errors.add_metric((name, arm), data["errors"])
                if arm in histograms:
                    latency.add_metric((name, arm), *_rebucket(histograms[arm]))
            for reason, count in document["choices"].items():
                choices.add_metric((name, reason), count)
            shadow = document["shadow"]
            if shadow is not None:
                for kind, family in shadow_counts.items():
                    family.add_metric((name,), shadow[kind])
                shadow_latency.add_metric((name,), *_rebucket(stats.shadow_latency_histogram()))
        yield from (requests, errors, latency, choices, *shadow_counts.values(), shadow_latency)


def _route_statistics(router: Router, name: str) -> Any:
    """Route ``name``'s :class:`RouteStatistics` (raw latency buckets)."""
    public = getattr(router, "route_statistics", None)
    if public is not None:
        return public(name)
    return router._entry(name).stats  # Router has no public accessor yet (reported to the lead)


def _rebucket(snapshot: HistogramSnapshot) -> tuple[list[tuple[str, float]], float]:
    """A route histogram on the seconds buckets (a subset of its own: exact)."""
    cumulative, running = [], 0
    for count in snapshot.counts[: len(LATENCY_BUCKET_BOUNDS_S)]:
        running += count
        cumulative.append(running)
    buckets = [(le, float(cumulative[i])) for le, i in zip(_S_LE, _FINE_INDEX)]
    buckets.append(("+Inf", float(snapshot.count)))
    return buckets, snapshot.sum_s


def _add_into(totals: dict[Any, tuple[list[int], float]], key: Any, counts: list[int], value_sum: float) -> None:
    previous = totals.get(key)
    if previous is None:
        totals[key] = (list(counts), value_sum)
    else:
        totals[key] = ([a + b for a, b in zip(previous[0], counts)], previous[1] + value_sum)


def _buckets(le: Sequence[str], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs; ``counts`` has one entry more than ``le`` (above the last)."""
    out, running = [], 0
    for bound, count in zip((*le, "+Inf"), counts):
        running += count
        out.append((bound, running))
    return out


def _histogram(name: str, doc: str, labels: Sequence[str], le: Sequence[str],
               data: Mapping[Any, tuple[list[int], float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, (counts, value_sum) in data.items():
        family.add_metric(key, _buckets(le, counts), value_sum)
    return family


def _tf_counter(name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]) -> Metric:
    """A counter whose samples carry exactly ``name`` (TF Serving's, without ``_total``)."""
    family = Metric(name, doc, "counter")
    for key, value in values:
        family.add_sample(name, dict(zip(labels, key)), value)
    return family


def _guarded(what: str, families: Callable[[], Iterable[Metric]]) -> list[Metric]:
    """``families()`` as a list; on error, log and return none of them (the page goes on)."""
    try:
        return list(families())
    except Exception:  # noqa: BLE001 - one section must not take the whole page down
        _log.exception("Metrics: collecting %s failed; they are left out of this scrape", what)
        return []


# -- text exposition ---------------------------------------------------------------------------

_TYPES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}


def exposition(families: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4 of ``families`` (see the module docstring for the differences
    from ``prometheus_client.generate_latest``)."""
    lines: list[str] = []
    for family in families:
        name = family.name
        samples = [s for s in family.samples if s.name != f"{name}_created"]
        if family.type == "counter" and any(s.name == f"{name}_total" for s in samples):
            name += "_total"
        elif family.type == "info":
            name += "_info"
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {name} {doc}\n# TYPE {name} {_TYPES.get(family.type, family.type)}\n")
        for sample in samples:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sample.labels.items())
            text = f"{sample.name}{{{labels}}} {_number(sample.value)}" if labels else f"{sample.name} {_number(sample.value)}"
            if sample.timestamp is not None:
                text += f" {int(float(sample.timestamp) * 1000)}"
            lines.append(text + "\n")
    return "".join(lines).encode("utf-8")


def _escape(value: str) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
