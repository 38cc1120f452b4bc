"""Tests for pyserving.server.metrics: rendered pages parsed with prometheus-client's parser.

The request-path part is driven with RequestEvents; the scrape-time part reads a real
ServerCore (python-platform models, real threads and folders), a real Router and a real
BatchingServable served by that core.
"""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from pyserving.manager.router import Router
from pyserving.manager.routes import Arm, Route, Shadow
from pyserving.servable.errors import InvalidArgumentError, UnknownError
from pyserving.servable.ids import ServableRequest
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.metrics import CONTENT_TYPE, OVERFLOW_MODEL, ServerMetrics, exposition
from pyserving.server.model_config import ModelEntry
from pyserving.server.request_events import RequestEvent
from tests.support.concurrency import hammer
from tests.support.model_drops import write_python_version
from tests.support.polling import wait_for

TF_US_LE = [f"{10 * 1.8 ** k:.6g}" for k in range(33)] + ["+Inf"]
SECONDS_LE = ["0.0001", "0.000178", "0.000316", "0.000562", "0.001", "0.00178", "0.00316", "0.00562", "0.01",
              "0.0178", "0.0316", "0.0562", "0.1", "0.178", "0.316", "0.562", "1.0", "1.78", "3.16", "5.62", "10.0",
              "17.8", "31.6", "56.2", "100.0", "+Inf"]
SIZE_LE = [str(2 ** k) for k in range(14)] + ["+Inf"]
WAIT_S = 30.0


# -- helpers -------------------------------------------------------------------------------------


class Page:
    """One rendered page: its text and its parsed samples."""

    def __init__(self, metrics: ServerMetrics) -> None:
        body, content_type = metrics.render()
        assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
        self.text = body.decode("utf-8")
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample called ``name`` with exactly ``labels``; None if absent."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, f"{name} {labels} appears {len(found)} times"
        return found[0] if found else None

    def matching(self, name: str, **labels: str) -> list[Any]:
        """Samples called ``name`` whose labels include ``labels``."""
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def buckets(self, name: str, **labels: str) -> list[tuple[str, float]]:
        return [(s.labels["le"], s.value) for s in self.matching(f"{name}_bucket", **labels)]


def scrape_until(metrics: ServerMetrics, what: str, *expected: tuple[str, dict[str, str], float]) -> Page:
    """The first page on which every ``(name, labels, value)`` of ``expected`` holds (the
    lifecycle counters are updated on the manager's threads, just after the state changes)."""

    def check() -> Page | None:
        page = Page(metrics)
        return page if all(page.value(name, **labels) == value for name, labels, value in expected) else None

    return wait_for(check, what, WAIT_S)


def event(model: str = "m", version: int | None = 1, api: str = "Predict", entrypoint: str = "GRPC",
          status: str = "OK", latency_s: float = 0.0012) -> RequestEvent:
    return RequestEvent(model, version, api, entrypoint, status, latency_s)


@pytest.fixture()
def metrics() -> ServerMetrics:
    return ServerMetrics(process_metrics=False)


# -- request path --------------------------------------------------------------------------------


def test_tf_request_count_is_exposed_under_its_exact_name_without_total(metrics: ServerMetrics) -> None:
    metrics.observe(event())
    metrics.observe(event(status="NOT_FOUND", version=None))
    text = Page(metrics).text
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1\n' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1\n' in text
    assert "request_count_total" not in text


def test_request_counts_follow_tf_rules_and_ours_count_every_event(metrics: ServerMetrics) -> None:
    metrics.observe(event(api="Predict", entrypoint="GRPC"))
    metrics.observe(event(api="Classify", entrypoint="GRPC"))
    metrics.observe(event(api="GetModelMetadata", entrypoint="GRPC", version=None))  # TF: not counted
    metrics.observe(event(api="MultiInference", entrypoint="GRPC"))  # TF: not counted
    metrics.observe(event(api="predict", entrypoint="REST"))
    metrics.observe(event(api="status", entrypoint="REST", version=None))  # TF: every REST call counts
    metrics.observe(event(api="predict", entrypoint="REST", status="INVALID_ARGUMENT"))
    page = Page(metrics)
    assert page.value(":tensorflow:serving:request_count_total", model_name="m", status="OK") == 4
    assert page.value(":tensorflow:serving:request_count_total", model_name="m", status="INVALID_ARGUMENT") == 1
    ours = page.matching("pyserving_requests_total")
    assert sum(s.value for s in ours) == 7
    assert page.value("pyserving_requests_total", model="m", version="", api="GetModelMetadata",
                      entrypoint="GRPC", status="OK") == 1
    assert page.value("pyserving_requests_total", model="m", version="1", api="predict", entrypoint="REST",
                      status="INVALID_ARGUMENT") == 1


def test_tf_request_latency_has_tf_microsecond_buckets_and_only_successes(metrics: ServerMetrics) -> None:
    metrics.observe(event(latency_s=0.0012))  # 1200 µs: above 1102, within 1983.59
    metrics.observe(event(latency_s=0.000005))  # 5 µs: the first bucket
    metrics.observe(event(status="INTERNAL", latency_s=1.0))  # errors: no latency
    metrics.observe(event(api="GetModelStatus", latency_s=1.0))  # not a TF latency API
    metrics.observe(event(api="metadata", entrypoint="REST", latency_s=1.0))
    page = Page(metrics)
    name = ":tensorflow:serving:request_latency"
    assert {s.labels["API"] for s in page.matching(f"{name}_count")} == {"Predict"}
    buckets = page.buckets(name, model_name="m", API="Predict", entrypoint="GRPC")
    assert [le for le, _ in buckets] == TF_US_LE
    counts = dict(buckets)
    assert counts["10"] == 1 and counts["1102"] == 1 and counts["1983.59"] == 2 and counts["+Inf"] == 2
    assert page.value(f"{name}_count", model_name="m", API="Predict", entrypoint="GRPC") == 2
    assert page.value(f"{name}_sum", model_name="m", API="Predict", entrypoint="GRPC") == pytest.approx(1205.0)


def test_seconds_histogram_per_model_version_api_and_entrypoint(metrics: ServerMetrics) -> None:
    metrics.observe(event(version=1, latency_s=0.0005))
    metrics.observe(event(version=2, latency_s=0.25))
    metrics.observe(event(version=2, latency_s=-1.0))  # a clock step: counted as 0
    metrics.observe(event(version=2, latency_s=500.0))
    page = Page(metrics)
    name = "pyserving_request_latency_seconds"
    v1 = page.buckets(name, model="m", version="1", api="Predict", entrypoint="GRPC")
    assert [le for le, _ in v1] == SECONDS_LE
    assert dict(v1)["0.000316"] == 0 and dict(v1)["0.000562"] == 1
    v2 = dict(page.buckets(name, model="m", version="2", api="Predict", entrypoint="GRPC"))
    assert v2["0.0001"] == 1 and v2["0.178"] == 1 and v2["0.316"] == 2 and v2["100.0"] == 2 and v2["+Inf"] == 3
    assert page.value(f"{name}_sum", model="m", version="2", api="Predict", entrypoint="GRPC") == pytest.approx(500.25)


def test_values_move_between_scrapes(metrics: ServerMetrics) -> None:
    metrics.observe(event())
    first = Page(metrics)
    for _ in range(3):
        metrics.observe(event())
    second = Page(metrics)
    for page, expected in ((first, 1), (second, 4)):
        assert page.value(":tensorflow:serving:request_count_total", model_name="m", status="OK") == expected
        assert page.value("pyserving_request_latency_seconds_count", model="m", version="1", api="Predict",
                          entrypoint="GRPC") == expected


def test_in_flight_gauge(metrics: ServerMetrics) -> None:
    metrics.in_flight_inc("m")
    metrics.in_flight_inc("m")
    with metrics.track_in_flight("other"):
        page = Page(metrics)
        assert page.value("pyserving_requests_in_flight", model="m") == 2
        assert page.value("pyserving_requests_in_flight", model="other") == 1
    metrics.in_flight_dec("m")
    page = Page(metrics)
    assert page.value("pyserving_requests_in_flight", model="m") == 1
    assert page.value("pyserving_requests_in_flight", model="other") == 0


def test_concurrent_requests_lose_no_count(metrics: ServerMetrics) -> None:
    def one_call(client: int, call: int) -> None:
        with metrics.track_in_flight("m"):
            metrics.observe(event(version=client % 2, latency_s=0.001 * (call % 3)))
        return None

    assert hammer(4, 2000, one_call, join_timeout_s=WAIT_S) == []
    page = Page(metrics)
    assert page.value(":tensorflow:serving:request_count_total", model_name="m", status="OK") == 8000
    assert page.value(":tensorflow:serving:request_latency_count", model_name="m", API="Predict",
                      entrypoint="GRPC") == 8000
    total = sum(s.value for s in page.matching("pyserving_request_latency_seconds_count"))
    assert total == 8000
    assert page.value("pyserving_requests_in_flight", model="m") == 0


def test_runtime_load_and_warmup_metrics(metrics: ServerMetrics) -> None:
    metrics.record_runtime("m", "Predict", 0.0001)  # 100 µs: above 58.32, within 104.976
    metrics.record_load("/models/m/1", True, 0.5)
    metrics.record_load("/models/m/1", True, 0.25)
    metrics.record_load("/models/m/2", False, 9.0)  # failed loads add no latency (TF's rule)
    metrics.record_warmup("/models/m/1", "OK", 0.002, 3)
    metrics.record_warmup("/models/m/2", "INVALID_ARGUMENT", 0.001, 1001)
    page = Page(metrics)
    runtime = dict(page.buckets(":tensorflow:serving:runtime_latency", model_name="m", API="Predict", runtime="TF1"))
    assert list(runtime) == TF_US_LE and runtime["58.32"] == 0 and runtime["104.976"] == 1
    attempts = ":tensorflow:cc:saved_model:load_attempt_count_total"
    assert page.value(attempts, model_path="/models/m/1", status="success") == 2
    assert page.value(attempts, model_path="/models/m/2", status="fail") == 1
    assert page.value(attempts, model_path="/models/m/1", status="fail") is None
    assert page.value(":tensorflow:cc:saved_model:load_latency_total", model_path="/models/m/1") == 750_000
    assert page.value(":tensorflow:cc:saved_model:load_latency_total", model_path="/models/m/2") is None
    assert "\n:tensorflow:cc:saved_model:load_latency{model_path=\"/models/m/1\"} 750000\n" in page.text
    warmup = ":tensorflow:serving:model_warmup_latency"
    assert page.value(f"{warmup}_count", model_path="/models/m/1", status="OK") == 1
    assert dict(page.buckets(warmup, model_path="/models/m/1", status="OK"))["1983.59"] == 0
    assert dict(page.buckets(warmup, model_path="/models/m/1", status="OK"))["3570.47"] == 1
    records = ":tensorflow:serving:model_warmup_records_read_total"
    assert page.value(records, model_path="/models/m/2", status="INVALID_ARGUMENT") == 1001


def test_label_sets_are_capped_under_an_overflow_model(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServerMetrics(max_label_sets=2, process_metrics=False)
    with caplog.at_level(logging.WARNING, logger="pyserving.server.metrics"):
        for name in ("a", "b", "c", "d", "c"):
            metrics.observe(event(model=name, version=None, status="NOT_FOUND"))
    page = Page(metrics)
    assert {s.labels["model"] for s in page.matching("pyserving_requests_total")} == {"a", "b", OVERFLOW_MODEL}
    assert page.value(":tensorflow:serving:request_count_total", model_name=OVERFLOW_MODEL, status="NOT_FOUND") == 3
    assert sum("label combinations" in r.message for r in caplog.records) == 1
    with pytest.raises(InvalidArgumentError, match="max_label_sets must be an int >= 1, got 0"):
        ServerMetrics(max_label_sets=0)


def test_observe_never_raises(metrics: ServerMetrics) -> None:
    metrics.observe(RequestEvent("m", 1, "Predict", "GRPC", "OK", "not a number"))  # type: ignore[arg-type]
    metrics.record_runtime("m", "Predict", None)  # type: ignore[arg-type]
    metrics.observe(event())
    assert Page(metrics).value(":tensorflow:serving:request_count_total", model_name="m", status="OK") == 1


def test_each_instance_has_its_own_registry() -> None:
    one, two = ServerMetrics(process_metrics=False), ServerMetrics()
    one.observe(event(model="only_in_one"))
    assert "only_in_one" in Page(one).text
    page_two = Page(two)
    assert "only_in_one" not in page_two.text
    assert page_two.value("process_cpu_seconds_total") is not None  # process collectors on request
    assert REGISTRY.get_sample_value("pyserving_requests_total", {"model": "only_in_one", "version": "1",
                                     "api": "Predict", "entrypoint": "GRPC", "status": "OK"}) is None


def test_exposition_keeps_counter_names_and_escapes_labels() -> None:
    standard = CounterMetricFamily("jobs", "Jobs done.", labels=("kind",))
    standard.add_metric(('a "quoted"\\ value\n',), 2, created=123.0)
    tf_style = Metric(":x:y", "TF style.", "counter")
    tf_style.add_sample(":x:y", {}, 5)
    gauge = GaugeMetricFamily("temperature", "Multi\nline help.", value=21.5)
    text = exposition([standard, tf_style, gauge]).decode()
    assert text == (
        "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\n"
        'jobs_total{kind="a \\"quoted\\"\\\\ value\\n"} 2\n'
        "# HELP :x:y TF style.\n# TYPE :x:y counter\n:x:y 5\n"
        "# HELP temperature Multi\\nline help.\n# TYPE temperature gauge\ntemperature 21.5\n"
    )
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["jobs"].samples[0].labels == {"kind": 'a "quoted"\\ value\n'}


def test_a_failing_scrape_section_is_left_out(metrics: ServerMetrics, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("boom")

    metrics.attach(Broken())  # type: ignore[arg-type]
    metrics.observe(event())
    with caplog.at_level(logging.ERROR, logger="pyserving.server.metrics"):
        page = Page(metrics)
    assert page.value(":tensorflow:serving:request_count_total", model_name="m", status="OK") == 1
    assert "pyserving_servable_state" not in page.families
    assert any("servable states" in r.getMessage() for r in caplog.records)
    metrics.detach()
    metrics.detach()
    caplog.clear()
    Page(metrics)
    assert not caplog.records


# -- scrape time: a real ServerCore --------------------------------------------------------------


@pytest.fixture()
def started(tmp_path: Path) -> Iterator[Callable[..., ServerCore]]:
    made: list[ServerCore] = []

    def start(models: list[ModelEntry]) -> ServerCore:
        core = ServerCore(ServerCoreOptions(file_system_poll_wait_seconds=0.1, quiet_period_s=0.0,
                                            max_num_load_retries=0, load_wait_timeout_s=WAIT_S))
        made.append(core)
        core.start(models)
        return core

    yield start
    for core in made:
        core.stop()


def test_attach_shows_states_and_lifecycle_counts_as_they_change(
    tmp_path: Path, started: Callable[..., ServerCore], metrics: ServerMetrics
) -> None:
    root = tmp_path / "models"
    write_python_version(root / "m" / "1")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.py").write_text("def create_servable(d):\n    raise ValueError('broken')\n")
    good = ModelEntry("m", str(root / "m"), "python")
    core = started([good])
    metrics.attach(core)
    page = scrape_until(metrics, "the first load to be counted", ("pyserving_loads_total", {"model": "m"}, 1))
    assert page.value("pyserving_servable_state", model="m", version="1", state="AVAILABLE") == 1
    assert page.value("pyserving_swaps_total", model="m") == 0
    assert page.value("pyserving_load_duration_seconds_count", model="m") == 1
    assert page.value("pyserving_load_duration_seconds", model="m", quantile="0.5") is not None

    with pytest.raises(UnknownError):
        core.reload_config([good, ModelEntry("broken", str(root / "broken"), "python")])
    page = scrape_until(metrics, "the failed load to be counted",
                        ("pyserving_load_failures_total", {"model": "broken"}, 1))
    assert page.value("pyserving_servable_state", model="broken", version="1", state="END") == 1

    staging = tmp_path / "staging"
    write_python_version(staging / "2")
    os.rename(staging / "2", root / "m" / "2")  # an atomic drop of version 2: it replaces version 1

    page = scrape_until(metrics, "version 2 of m to replace version 1", ("pyserving_unloads_total", {"model": "m"}, 1),
                        ("pyserving_loads_total", {"model": "m"}, 2), ("pyserving_swaps_total", {"model": "m"}, 1))
    assert page.value("pyserving_servable_state", model="m", version="2", state="AVAILABLE") == 1
    assert page.matching("pyserving_servable_state", model="m", version="1") == []  # cleanly unloaded
    assert page.value("pyserving_unload_duration_seconds_count", model="m") == 1


def test_attach_shows_route_statistics(tmp_path: Path, started: Callable[..., ServerCore],
                                       metrics: ServerMetrics) -> None:
    for name in ("a", "b", "c"):
        write_python_version(tmp_path / name / "1")
    core = started([ModelEntry(name, str(tmp_path / name), "python") for name in ("a", "b", "c")])
    router = Router(core, lambda: [m.name for m in core.models()])
    try:
        router.set_routes([Route("rec", arms=(Arm("control", "a", 1), Arm("treatment", "b", 0)),
                                 shadow=Shadow("c"))])
        metrics.attach(core, router)
        x = np.array([1.0], dtype=np.float32)
        with core.get_handle(ServableRequest.latest("a")) as handle:
            model_a = handle.servable

        def only_on_a(servable: Any) -> Any:
            if servable is not model_a:
                raise RuntimeError("shadow refused")
            return servable.run("serving_default", {"x": x})

        for _ in range(2):
            router.call("rec", lambda servable: servable.run("serving_default", {"x": x}))
        router.call("rec", only_on_a)  # answered; its shadow call fails
        with pytest.raises(KeyError):  # fails: counted, not mirrored
            router.call("rec", lambda servable: servable.run("serving_default", {}))

        def shadowed() -> Page | None:
            page = Page(metrics)
            return page if page.value("pyserving_route_shadow_requests_total", route="rec") == 3 else None

        page = wait_for(shadowed, "the three shadow calls", WAIT_S)
        assert page.value("pyserving_route_requests_total", route="rec", arm="control") == 4
        assert page.value("pyserving_route_errors_total", route="rec", arm="control") == 1
        assert page.value("pyserving_route_requests_total", route="rec", arm="treatment") == 0
        assert page.value("pyserving_route_choices_total", route="rec", reason="weight") == 4
        assert page.value("pyserving_route_shadow_errors_total", route="rec") == 1
        assert page.value("pyserving_route_shadow_dropped_total", route="rec") == 0
        latency = page.buckets("pyserving_route_latency_seconds", route="rec", arm="control")
        assert [le for le, _ in latency] == SECONDS_LE and latency[-1][1] == 4
        assert page.value("pyserving_route_shadow_latency_seconds_count", route="rec") == 3
    finally:
        router.close()


_BATCHING_MODEL = textwrap.dedent('''
    import numpy as np

    from pyserving.loaders.batching import BatchingServable
    from pyserving.loaders.batching_params import BatchingParameters
    from pyserving.servable.batcher import BatchScheduler
    from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


    class Doubler:
        def __init__(self):
            spec = TensorSpec(DType.FLOAT, (None,))
            self.signatures = {"serving_default": SignatureSpec({"x": spec}, {"y": spec})}

        def run(self, signature_name, inputs, output_filter=()):
            return {"y": (inputs["x"] * 2).astype(np.float32)}


    def create_servable(version_dir):
        parameters = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1,
                                        thread_pool_name="test_pool")
        return BatchingServable(Doubler(), BatchScheduler(1, name="test_pool"), parameters, name="batched",
                                close_inner=True)
''')


def test_attach_shows_batching_statistics_of_served_versions(tmp_path: Path, started: Callable[..., ServerCore],
                                                              metrics: ServerMetrics) -> None:
    (tmp_path / "batched" / "1").mkdir(parents=True)
    (tmp_path / "batched" / "1" / "model.py").write_text(_BATCHING_MODEL)
    core = started([ModelEntry("batched", str(tmp_path / "batched"), "python")])
    metrics.attach(core)
    for rows in (3, 3, 8):  # one caller: each request is a batch of its own
        with core.get_handle(ServableRequest.latest("batched")) as handle:
            handle.servable.run("serving_default", {"x": np.ones(rows, dtype=np.float32)})
    page = Page(metrics)
    key = {"model": "batched", "version": "1"}
    sizes = dict(page.buckets("pyserving_batch_size", **key))
    assert list(sizes) == SIZE_LE and sizes["2"] == 0 and sizes["4"] == 2 and sizes["8"] == 3
    assert page.value("pyserving_batch_size_sum", **key) == 14
    assert page.value("pyserving_batch_queue_depth", **key) == 0
    assert page.value("pyserving_batches_in_flight", **key) == 0
    assert page.value("pyserving_batch_queue_delay_seconds_count", **key) == 3
    assert page.value("pyserving_batch_padded_rows_total", **key) == 2
    assert page.value("pyserving_batch_rejected_total", **key, reason="queue_full") == 0
    prefix = ":tensorflow:serving:batching_session:"
    processed = dict(page.buckets(f"{prefix}processed_batch_size"))
    assert processed["2"] == 0 and processed["4"] == 2 and processed["+Inf"] == 3
    assert page.value(f"{prefix}processed_batch_size_sum") == 16
    assert dict(page.buckets(f"{prefix}padding_size", execution_batch_size="4"))["1"] == 2
    assert page.value(f"{prefix}padding_size_sum", execution_batch_size="4") == 2
    assert page.value(f"{prefix}padding_size_count", execution_batch_size="8") == 1
    assert page.value(f"{prefix}queuing_latency_count", thread_pool_name="test_pool") == 3
    assert page.buckets(f"{prefix}queuing_latency", thread_pool_name="test_pool") == [("+Inf", 3)]
    assert page.value(f"{prefix}input_batch_size_count") == 3
    assert page.value(f"{prefix}input_batch_size_sum") == 14
    # The scrape released its handles: the version unloads at once when the model goes away.
    core.reload_config([])
    wait_for(lambda: core.manager.list_available_ids() == [], "the batched model to unload", WAIT_S)
    assert "pyserving_batch_size_bucket" not in Page(metrics).text
