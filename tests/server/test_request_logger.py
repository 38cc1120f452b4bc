"""Tests for pyserving.server.request_logger: sampled requests as PredictionLog TFRecord files.

Tests that write records build TF Serving's protos (which import TensorFlow) and are marked
slow; the request-path tests run in a subprocess that checks TensorFlow is never imported.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.model_config import ModelEntry, RequestLoggingConfig
from pyserving.server.request_events import RequestEvent
from pyserving.server.request_logger import RequestLoggers

NOW = 1_700_000_000.75  # 2023-11-14T22:13:20Z
WAIT_S = 10.0


def entry(name: str, prefix: Path | str, rate: float = 1.0) -> ModelEntry:
    return ModelEntry(name, f"/models/{name}", logging=RequestLoggingConfig(str(prefix), rate))


def tensor(values: Sequence[float]) -> Any:
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=len(values))
    proto.float_val.extend(values)
    return proto


def predict_event(model: str, x: float, *, version: int = 1, api: str = "Predict", status: str = "OK") -> RequestEvent:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tensor([x]))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model
    response.model_spec.version.value = version
    response.model_spec.signature_name = "serving_default"
    response.outputs["y"].CopyFrom(tensor([x / 2 + 2]))
    return RequestEvent(
        model, version, api, "REST" if api.islower() else "GRPC", status, 0.001,
        request=lambda: request, response=(lambda: response) if status == "OK" else None,
    )


def add_examples(input_proto: Any, values: Sequence[float]) -> None:
    for value in values:
        input_proto.example_list.examples.add().features.feature["x"].float_list.value.append(value)


class MemoryFiles:
    """An ``open_file`` keeping each file's records in memory (the writer thread's view)."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.closed: list[str] = []

    def __call__(self, path: str) -> MemoryFile:
        self.records[path] = []
        return MemoryFile(self, path)

    def logs(self, path: str) -> list[Any]:
        from tensorflow_serving.apis import prediction_log_pb2

        return [prediction_log_pb2.PredictionLog.FromString(data) for data in self.records[path]]


class MemoryFile:
    def __init__(self, owner: MemoryFiles, path: str) -> None:
        self.owner, self.path = owner, path

    def write(self, record: bytes) -> None:
        self.owner.records[self.path].append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.owner.closed.append(self.path)


def read_tfrecords(paths: Sequence[Path | str]) -> list[Any]:
    """Every record of ``paths`` in order, read by tf.data and parsed as PredictionLog."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    dataset = tf.data.TFRecordDataset([str(p) for p in paths])
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in dataset]


def log_files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + ".*.tfrecord"))


def x_of(log: Any) -> float:
    return float(log.predict_log.request.inputs["x"].float_val[0])


@pytest.fixture
def manual() -> Any:
    """A thread-less RequestLoggers factory; every one made is closed after the test."""
    made: list[RequestLoggers] = []

    def make(**kwargs: Any) -> RequestLoggers:
        kwargs.setdefault("clock", lambda: NOW)
        loggers = RequestLoggers(start_thread=False, **kwargs)
        made.append(loggers)
        return loggers

    yield make
    for loggers in made:
        loggers.close()


@pytest.fixture
def threaded() -> Any:
    made: list[RequestLoggers] = []

    def make(**kwargs: Any) -> RequestLoggers:
        loggers = RequestLoggers(**kwargs)
        made.append(loggers)
        return loggers

    yield make
    for loggers in made:
        assert loggers.close(WAIT_S)


# --- the request path (no TensorFlow) ------------------------------------------------------------

REQUEST_PATH_SCRIPT = """
import sys
from pyserving.server.model_config import ModelEntry, RequestLoggingConfig
from pyserving.server.request_events import RequestEvent
from pyserving.server.request_logger import RequestLoggers

def never_built():
    raise AssertionError("built on the request thread")

loggers = RequestLoggers(queue_size=3, start_thread=False)
loggers.configure([ModelEntry("m", "/models/m", logging=RequestLoggingConfig(sys.argv[1] + "/req", 1.0)),
                   ModelEntry("quiet", "/models/quiet", logging=RequestLoggingConfig(sys.argv[1] + "/q", 0.0)),
                   ModelEntry("plain", "/models/plain")])
for model in ("m", "m", "quiet", "plain", "other", "m", "m", "m"):
    loggers.observe(RequestEvent(model, 1, "Predict", "GRPC", "OK", 0.001, request=never_built, response=never_built))
loggers.observe(RequestEvent("m", None, "Predict", "GRPC", "NOT_FOUND", 0.001, request=never_built))
loggers.observe(RequestEvent("m", 1, "GetModelMetadata", "GRPC", "OK", 0.001))
stats = loggers.statistics()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "grpc"))
print(repr((stats.queued, dict(stats.dropped), dict(stats.log_counts), stats.files_opened, heavy)))
"""


def test_observe_queues_or_drops_without_building_protos_or_importing_tensorflow(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", REQUEST_PATH_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    queued, dropped, counts, files_opened, heavy = eval(out)
    assert heavy == []
    assert queued == 3  # the queue's capacity: five sampled requests of m, two dropped
    assert dropped == {"m": 2}
    assert counts == {("m", "RESOURCE_EXHAUSTED"): 2}  # queued records are counted once written
    assert files_opened == 0 and list(tmp_path.iterdir()) == []


def test_constructor_validates_its_options() -> None:
    with pytest.raises(InvalidArgumentError, match="queue_size must be an int >= 1, got 0"):
        RequestLoggers(queue_size=0, start_thread=False)
    with pytest.raises(InvalidArgumentError, match="max_file_bytes must be an int >= 1, got 1.5"):
        RequestLoggers(max_file_bytes=1.5, start_thread=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_file_records must be an int >= 1 or None, got 0"):
        RequestLoggers(max_file_records=0, start_thread=False)


# --- sampling -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "requests", "low", "high"), [(1.0, 300, 300, 300), (0.0, 300, 0, 0),
                                                                 (0.5, 4000, 1400, 2600)])
def test_sampling_rate(manual: Callable[..., RequestLoggers], tmp_path: Path, rate: float, requests: int,
                       low: int, high: int) -> None:
    # 0.5: the binomial's standard deviation is 32, so the bounds are 19 of them away from the mean.
    files = MemoryFiles()
    loggers = manual(open_file=files, queue_size=requests)
    loggers.configure([entry("m", tmp_path / "req", rate)])
    event = predict_event("m", 1.0)
    for _ in range(requests):
        loggers.observe(event)
    loggers.step()
    written = sum(len(records) for records in files.records.values())
    assert low <= written <= high
    stats = loggers.statistics()
    assert stats.log_counts == ({("m", "OK"): written} if written else {})
    assert stats.written == ({"m": written} if written else {})
    assert stats.files_opened == (1 if written else 0)


# --- records and files ----------------------------------------------------------------------------


class RecordingServable:
    """Stands in for a loaded model in a warmup replay."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def run(self, signature: str, inputs: dict[str, Any], output_filter: Sequence[str]) -> dict[str, Any]:
        self.calls.append(("run", signature, {alias: value.tolist() for alias, value in inputs.items()}))
        return {}

    def classify(self, signature: str, examples: Sequence[bytes]) -> None:
        self.calls.append(("classify", signature, len(examples)))

    def regress(self, signature: str, examples: Sequence[bytes]) -> None:
        self.calls.append(("regress", signature, len(examples)))


def other_api_events(model: str) -> list[RequestEvent]:
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = model, "classify_x"
    add_examples(classify.input, [1.0, 2.0])
    classified = classification_pb2.ClassificationResponse()
    classified.model_spec.name, classified.model_spec.signature_name = model, "classify_x"
    classified.model_spec.version.value = 3
    classified.result.classifications.add().classes.add(label="a", score=0.5)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = model, "regress_x"
    add_examples(regress.input, [3.0])
    regressed = regression_pb2.RegressionResponse()
    regressed.model_spec.name = model
    regressed.result.regressions.add(value=4.0)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name, task.model_spec.signature_name = model, "regress_x"
    add_examples(multi.input, [5.0])
    multi_answer = inference_pb2.MultiInferenceResponse()
    multi_answer.results.add().regression_result.regressions.add(value=6.0)
    return [
        RequestEvent(model, 3, "Classify", "GRPC", "OK", 0.001, lambda: classify, lambda: classified),
        RequestEvent(model, 3, "regress", "REST", "OK", 0.001, lambda: regress, lambda: regressed),
        RequestEvent(model, 3, "MultiInference", "GRPC", "OK", 0.001, lambda: multi, lambda: multi_answer),
    ]


@pytest.mark.slow
def test_records_read_back_with_tf_data_and_replay_as_warmup(threaded: Callable[..., RequestLoggers],
                                                              tmp_path: Path) -> None:
    prefix = tmp_path / "logs" / "requests"  # the folder is created
    loggers = threaded(clock=lambda: NOW)
    loggers.configure([entry("m", prefix, 1.0)])
    sent = [predict_event("m", 1.0, version=3), predict_event("m", 2.0, version=3, api="predict")]
    sent += other_api_events("m")
    for event in sent:
        loggers.observe(event)
    assert loggers.flush(WAIT_S)

    [path] = log_files(prefix)
    assert path.name == "requests.20231114T221320Z.00000.tfrecord"
    assert loggers.statistics().open_files == (str(path),)  # flushed, still open, already readable
    logs = read_tfrecords([path])
    assert [log.WhichOneof("log_type") for log in logs] == [
        "predict_log", "predict_log", "classify_log", "regress_log", "multi_inference_log"]
    for log, event in zip(logs, sent):
        body = getattr(log, log.WhichOneof("log_type"))
        assert event.request is not None and event.response is not None
        assert body.request == event.request()
        assert body.response == event.response()
        metadata = log.log_metadata
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("m", 3)
        assert metadata.sampling_config.sampling_rate == 1.0
        assert metadata.timestamp_secs == 1_700_000_000
    assert [log.log_metadata.model_spec.signature_name for log in logs] == [
        "serving_default", "serving_default", "classify_x", "regress_x", ""]

    # The file is warmup data as it stands: the warmup reader takes it and replays each request.
    warmup = pytest.importorskip("pyserving.loaders.warmup")
    servable = RecordingServable()
    for log in warmup.read_warmup_records(path):
        warmup.replay_record(servable, log, path=path)
    assert servable.calls == [
        ("run", "serving_default", {"x": [1.0]}),
        ("run", "serving_default", {"x": [2.0]}),
        ("classify", "classify_x", 2),
        ("regress", "regress_x", 1),
        ("regress", "regress_x", 1),
    ]


@pytest.mark.slow
def test_failed_requests_and_other_calls_are_not_logged(manual: Callable[..., RequestLoggers],
                                                        tmp_path: Path) -> None:
    files = MemoryFiles()
    loggers = manual(open_file=files)
    loggers.configure([entry("m", tmp_path / "req"), ModelEntry("plain", "/models/plain")])
    for event in [
        predict_event("m", 1.0, status="INVALID_ARGUMENT"),  # failed: no PredictionLog (module docstring)
        predict_event("plain", 1.0),  # no logging_config
        predict_event("unknown", 1.0),  # not configured at all
        RequestEvent("m", 1, "GetModelMetadata", "GRPC", "OK", 0.001),
        RequestEvent("m", 1, "status", "REST", "OK", 0.001),
    ]:
        loggers.observe(event)
    assert loggers.step() == 0
    assert files.records == {} and loggers.statistics().log_counts == {}


@pytest.mark.slow
def test_rotation_by_record_count_and_size_loses_nothing(threaded: Callable[..., RequestLoggers],
                                                         tmp_path: Path) -> None:
    by_count = tmp_path / "count" / "req"
    loggers = threaded(max_file_records=3)
    loggers.configure([entry("m", by_count)])
    for x in range(10):
        loggers.observe(predict_event("m", float(x)))
    assert loggers.close(WAIT_S)
    paths = log_files(by_count)
    assert [len(read_tfrecords([p])) for p in paths] == [3, 3, 3, 1]
    assert [x_of(log) for log in read_tfrecords(paths)] == [float(x) for x in range(10)]
    assert loggers.statistics().files_opened == 4 and loggers.statistics().open_files == ()

    # By size: measure one record (all have the same size here), allow two and a half per file.
    measure = MemoryFiles()
    probe = RequestLoggers(open_file=measure, clock=lambda: NOW, start_thread=False)
    probe.configure([entry("m", tmp_path / "probe")])
    probe.observe(predict_event("m", 0.0))
    probe.close()
    [[record]] = measure.records.values()
    framed = len(record) + 16
    by_size = tmp_path / "size" / "req"
    loggers = threaded(max_file_bytes=2 * framed + framed // 2, clock=lambda: NOW)
    loggers.configure([entry("m", by_size)])
    for x in range(9):
        loggers.observe(predict_event("m", float(x)))
    assert loggers.close(WAIT_S)
    paths = log_files(by_size)
    assert [p.stat().st_size for p in paths] == [2 * framed] * 4 + [framed]
    assert [x_of(log) for log in read_tfrecords(paths)] == [float(x) for x in range(9)]


class BlockingFiles(MemoryFiles):
    """Memory files whose first write blocks until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: str) -> MemoryFile:
        super().__call__(path)
        owner = self

        class Blocking(MemoryFile):
            def write(self, record: bytes) -> None:
                owner.entered.set()
                assert owner.release.wait(WAIT_S), "the test never released the writer"
                super().write(record)

        return Blocking(self, path)


@pytest.mark.slow
def test_full_queue_drops_and_counts_while_the_writer_is_stuck(threaded: Callable[..., RequestLoggers],
                                                               tmp_path: Path) -> None:
    files = BlockingFiles()
    loggers = threaded(queue_size=3, open_file=files)
    loggers.configure([entry("m", tmp_path / "req")])
    loggers.observe(predict_event("m", 0.0))
    assert files.entered.wait(WAIT_S)  # the writer holds record 0 and cannot take more
    for x in range(1, 7):
        loggers.observe(predict_event("m", float(x)))  # returns at once: queued (1-3) or dropped (4-6)
    stats = loggers.statistics()
    assert (stats.queued, stats.dropped, stats.log_counts) == (3, {"m": 3}, {("m", "RESOURCE_EXHAUSTED"): 3})
    files.release.set()
    assert loggers.close(WAIT_S)
    [path] = files.records
    assert [x_of(log) for log in files.logs(path)] == [0.0, 1.0, 2.0, 3.0]
    assert loggers.statistics().log_counts == {("m", "RESOURCE_EXHAUSTED"): 3, ("m", "OK"): 4}
    assert files.closed == [path]


@pytest.mark.slow
def test_close_writes_everything_queued_and_closes_the_files(threaded: Callable[..., RequestLoggers],
                                                             tmp_path: Path) -> None:
    prefix = tmp_path / "req"
    loggers = threaded()
    loggers.configure([entry("m", prefix)])
    for x in range(50):
        loggers.observe(predict_event("m", float(x)))
    assert loggers.close(WAIT_S)
    assert [x_of(log) for log in read_tfrecords(log_files(prefix))] == [float(x) for x in range(50)]
    assert loggers.statistics().open_files == ()
    loggers.observe(predict_event("m", 99.0))  # after close: not logged
    loggers.configure([entry("m", prefix)])  # after close: ignored
    assert loggers.close(WAIT_S)
    assert loggers.statistics().written == {"m": 50}


@pytest.mark.slow
def test_reload_swaps_loggers_without_losing_queued_records(manual: Callable[..., RequestLoggers],
                                                            tmp_path: Path) -> None:
    files = MemoryFiles()
    loggers = manual(open_file=files, random=lambda: 0.5)  # every draw passes a rate above 0.5
    old, new = tmp_path / "old", tmp_path / "new"
    loggers.configure([entry("a", old, 1.0), entry("b", old, 1.0), entry("c", tmp_path / "c", 1.0)])
    for x in range(3):
        loggers.observe(predict_event("a", float(x)))
    loggers.observe(predict_event("b", 10.0))
    loggers.observe(predict_event("c", 20.0))
    # Reload: a moves to a new prefix and rate, b and c are removed; the queued records keep their config.
    loggers.configure([entry("a", new, 0.75), ModelEntry("b", "/models/b")])
    loggers.observe(predict_event("a", 3.0))
    loggers.observe(predict_event("b", 11.0))  # no longer logged
    assert loggers.step() == 6
    by_prefix = {Path(path).name.split(".")[0]: path for path in files.records}
    assert sorted(by_prefix) == ["c", "new", "old"]
    old_logs = files.logs(by_prefix["old"])  # a and b shared the old (identical) config's file
    assert [(log.log_metadata.model_spec.name, x_of(log)) for log in old_logs] == [
        ("a", 0.0), ("a", 1.0), ("a", 2.0), ("b", 10.0)]
    assert {log.log_metadata.sampling_config.sampling_rate for log in old_logs} == {1.0}
    [new_log] = files.logs(by_prefix["new"])
    assert x_of(new_log) == 3.0 and new_log.log_metadata.sampling_config.sampling_rate == 0.75
    assert sorted(files.closed) == sorted([by_prefix["old"], by_prefix["c"]])  # removed prefixes are closed
    assert loggers.statistics().open_files == (by_prefix["new"],)


@pytest.mark.slow
def test_flush_after_reload_closes_the_removed_models_files(threaded: Callable[..., RequestLoggers],
                                                            tmp_path: Path) -> None:
    prefix = tmp_path / "req"
    loggers = threaded()
    loggers.configure([entry("m", prefix)])
    loggers.observe(predict_event("m", 1.0))
    assert loggers.flush(WAIT_S) and len(loggers.statistics().open_files) == 1
    loggers.configure([ModelEntry("m", "/models/m")])
    assert loggers.flush(WAIT_S)
    assert loggers.statistics().open_files == ()
    assert [x_of(log) for log in read_tfrecords(log_files(prefix))] == [1.0]


@pytest.mark.slow
def test_failures_are_counted_with_their_status_and_logged_once(manual: Callable[..., RequestLoggers],
                                                                tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pyserving.server.request_logger")
    files = MemoryFiles()
    refuse = {"open": True}

    def open_file(path: str) -> MemoryFile:
        if refuse["open"]:
            raise PermissionError(13, "Permission denied", path)
        return files(path)

    loggers = manual(open_file=open_file)
    loggers.configure([entry("m", tmp_path / "req")])
    written = predict_event("m", 0.0)

    def missing() -> Any:
        raise NotFoundError("the request is gone")

    for _ in range(3):
        loggers.observe(predict_event("m", 1.0))  # the file cannot be opened
    loggers.step()
    refuse["open"] = False
    loggers.observe(written)  # a success: the next failure is logged again
    loggers.observe(RequestEvent("m", 1, "Predict", "GRPC", "OK", 0.001, request=missing))
    loggers.observe(RequestEvent("m", 1, "Predict", "GRPC", "OK", 0.001, request=lambda: 42))  # not a proto
    loggers.step()
    assert loggers.statistics().log_counts == {
        ("m", "PERMISSION_DENIED"): 3, ("m", "NOT_FOUND"): 1, ("m", "INTERNAL"): 1, ("m", "OK"): 1}
    assert loggers.statistics().failed == {"m": 5}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # the first failure, and the first one after the success
    assert "A sampled request of model m was not logged (PERMISSION_DENIED)" in errors[0]
    assert "(NOT_FOUND)" in errors[1]
    [path] = files.records
    assert [x_of(log) for log in files.logs(path)] == [0.0]


def test_step_is_only_for_a_logger_without_thread(tmp_path: Path) -> None:
    loggers = RequestLoggers(open_file=MemoryFiles())
    try:
        loggers.configure([entry("m", tmp_path / "req")])
        with pytest.raises(RuntimeError, match="start_thread=False"):
            loggers.step()
    finally:
        assert loggers.close(WAIT_S)


@pytest.mark.slow
def test_many_request_threads_every_sampled_request_is_written_or_counted(
        threaded: Callable[..., RequestLoggers], tmp_path: Path) -> None:
    from tests.support.concurrency import hammer

    prefix = tmp_path / "req"
    loggers = threaded(queue_size=64, max_file_records=100)
    loggers.configure([entry("m", prefix)])
    events = [predict_event("m", float(x)) for x in range(8)]

    def one_call(client: int, call: int) -> None:
        loggers.observe(events[client])

    assert hammer(8, 300, one_call, WAIT_S) == []
    assert loggers.close(WAIT_S)
    stats = loggers.statistics()
    written, dropped = stats.written.get("m", 0), stats.dropped.get("m", 0)
    assert written + dropped == 8 * 300 and stats.failed == {}
    logs = read_tfrecords(log_files(prefix))
    assert len(logs) == written
    assert {x_of(log) for log in logs} <= {float(x) for x in range(8)}
    assert len(logs) == stats.log_counts.get(("m", "OK"), 0)


@pytest.mark.slow
def test_a_tensorflow_file_error_keeps_its_code(manual: Callable[..., RequestLoggers], tmp_path: Path) -> None:
    import tensorflow as tf

    def open_file(path: str) -> Any:
        raise tf.errors.PermissionDeniedError(None, None, f"{path}: read-only file system")

    loggers = manual(open_file=open_file)
    loggers.configure([entry("m", tmp_path / "req")])
    loggers.observe(predict_event("m", 1.0))
    loggers.step()
    assert loggers.statistics().log_counts == {("m", "PERMISSION_DENIED"): 1}
