"""Warmup of SavedModels (``pyserving.loaders.warmup``) through the tensorflow platform's loaders.

The model of the slow tests counts its calls in a variable (``tests.support.warmup_files``), so
each test reads off the loaded version exactly how many model calls warmup made. Warmup files
are real TFRecord files of ``PredictionLog`` protos written by the tests.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from pyserving.loaders.batching import BatchingConfig, BatchingLoader
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.loaders.loader import Loader
from pyserving.loaders.platform import get_platform
from pyserving.loaders.saved_model import SavedModelLoader
from pyserving.loaders.tensorflow_platform import warmup_options
from pyserving.loaders.warmup import (
    MAX_WARMUP_RECORDS,
    WarmupOptions,
    run_warmup,
    set_warmup_observer,
    warmup_path,
)
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.errors import Code, InvalidArgumentError, ServingError
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath
from tests.support.warmup_files import (
    classify_log,
    multi_inference_log,
    predict_log,
    predict_streamed_log,
    regress_log,
    session_run_log,
    write_counting_model,
    write_warmup_file,
)

X = np.array([1.0, 2.0], np.float32)
PARSE_ERROR_FILE_TEXT = "this is a text file, not TFRecords\n" * 4


# -- options and the platform (no TensorFlow) -----------------------------------------------------


def test_platform_options_map_to_warmup_options() -> None:
    assert warmup_options({}) == WarmupOptions(num_request_iterations=1)
    assert warmup_options({"num_request_iterations_for_warmup": 3}) == WarmupOptions(3)
    assert warmup_options({"num_request_iterations_for_warmup": -2}) == WarmupOptions(1)  # used only if > 0
    assert warmup_options({"enable_model_warmup": False, "num_request_iterations_for_warmup": 3}) is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"enable_model_warmup": "no"}, "enable_model_warmup must be a bool, got 'no'"),
        ({"num_request_iterations_for_warmup": 1.5}, "num_request_iterations_for_warmup must be an int"),
        ({"num_request_iterations_for_warmup": True}, "num_request_iterations_for_warmup must be an int"),
    ],
)
def test_bad_platform_options_are_rejected(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        warmup_options(options)
    assert fragment in info.value.message


def test_warmup_options_validate_iterations() -> None:
    with pytest.raises(InvalidArgumentError, match=r"num_request_iterations must be an int >= 1, got 0"):
        WarmupOptions(0)


def test_the_platform_hands_warmup_to_its_loaders(tmp_path: Path) -> None:
    platform = get_platform("tensorflow")
    plain = platform.create_loader(ServableId("m", 1), StoragePath(str(tmp_path)), {})
    assert isinstance(plain, SavedModelLoader) and plain.warmup == WarmupOptions(1)
    off = platform.create_loader(ServableId("m", 1), StoragePath(str(tmp_path)), {"enable_model_warmup": False})
    assert isinstance(off, SavedModelLoader) and off.warmup is None
    scheduler = BatchScheduler(1, name="warmup_test")
    try:
        config = BatchingConfig(scheduler, BatchingParameters())
        batched = platform.create_loader(ServableId("m", 1), StoragePath(str(tmp_path)), {"batching": config})
        assert isinstance(batched, BatchingLoader)
        assert isinstance(batched.inner, SavedModelLoader) and batched.inner.warmup is None  # warmed once batched
    finally:
        scheduler.stop()


def test_no_warmup_file_is_fine_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[Any, ...]] = []
    previous = set_warmup_observer(lambda *args: seen.append(args))
    try:
        with caplog.at_level(logging.INFO, logger="pyserving.loaders.warmup"):
            assert run_warmup(object(), tmp_path) is None
    finally:
        set_warmup_observer(previous)
    assert f"No warmup data file found at {warmup_path(tmp_path)}" in caplog.messages
    assert seen == []  # nothing to report to the metrics


# -- real SavedModels ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counting_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("counting") / "model"
    write_counting_model(path)
    return path


@pytest.fixture
def version_dir(counting_model: Path, tmp_path: Path) -> Path:
    """A fresh copy of the counting model, to write a warmup file into."""
    return Path(shutil.copytree(counting_model, tmp_path / "7"))


@pytest.fixture
def observed() -> Iterator[list[tuple[str, str, float, int]]]:
    seen: list[tuple[str, str, float, int]] = []
    previous = set_warmup_observer(lambda *args: seen.append(args))
    yield seen
    set_warmup_observer(previous)


def _loader(version_dir: Path, **options: Any) -> Loader:
    return get_platform("tensorflow").create_loader(ServableId("counter", 7), StoragePath(str(version_dir)), options)


def _calls(servable: Any) -> int:
    servable = getattr(servable, "inner", servable)  # the SavedModel itself, not its batch queues
    return int(servable.run("calls", {"unused": np.zeros(0, np.float32)})["count"])


def _load_error(loader: Loader) -> ServingError:
    with pytest.raises(ServingError) as info:
        loader.load()
    assert loader.servable is None
    return info.value


EVERY_KIND = [
    predict_log({"x": X}),
    classify_log([1.0, 2.0], "classify"),
    regress_log([3.0], "regress"),
    multi_inference_log([1.0], [("classify", "classify"), ("regress", "regress")]),  # two model calls
]


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "iterations"), [(0, 1), (3, 3)])
def test_every_record_kind_is_replayed_before_the_load_returns(
    version_dir: Path, observed: list[Any], caplog: pytest.LogCaptureFixture, flag: int, iterations: int
) -> None:
    write_warmup_file(version_dir, EVERY_KIND)
    loader = _loader(version_dir, num_request_iterations_for_warmup=flag)
    with caplog.at_level(logging.INFO, logger="pyserving.loaders.warmup"):
        loader.load()
    try:
        assert _calls(loader.servable) == 5 * iterations
        assert loader.servable.run("serving_default", {"x": X})["y"].tolist() == [2.0, 4.0]  # serves as usual
        assert _calls(loader.servable) == 5 * iterations + 1
    finally:
        loader.unload()
    ((model_path, status, latency_s, records),) = observed
    assert (model_path, status, records) == (str(version_dir), "OK", 4) and latency_s >= 0
    assert any(m.startswith(f"Warmed up {{name: counter version: 7}}: 4 warmup records, {iterations} iteration(s) each")
               for m in caplog.messages), caplog.messages


@pytest.mark.slow
def test_disabled_warmup_does_not_read_the_file(version_dir: Path, observed: list[Any]) -> None:
    write_warmup_file(version_dir, [predict_log({"x": X}), session_run_log()])  # would fail if read
    loader = _loader(version_dir, enable_model_warmup=False)
    loader.load()
    try:
        assert _calls(loader.servable) == 0
    finally:
        loader.unload()
    assert observed == []


@pytest.mark.slow
def test_a_failing_request_fails_the_load_with_the_models_error(version_dir: Path, observed: list[Any]) -> None:
    path = write_warmup_file(version_dir, [predict_log({"x": X}), predict_log({"x": X.reshape(1, 2)})])  # rank 2
    loader = _loader(version_dir)
    error = _load_error(loader)
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(f"Warmup request 2 of 2 (predict_log) in {path} failed: "), error.message
    assert "x" in error.message and "shape" in error.message, error.message  # the model's own complaint
    assert [(status, records) for _, status, _, records in observed] == [("INVALID_ARGUMENT", 2)]
    # A failed load left nothing behind: once the file is fixed, the same loader loads.
    write_warmup_file(version_dir, [predict_log({"x": X})])
    loader.load()
    try:
        assert _calls(loader.servable) == 1  # a new session: the failed attempt's calls are gone
    finally:
        loader.unload()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("record", "code", "fragment"),
    [
        (predict_log({"x": X}, signature_name="nope"), Code.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
        (predict_log({"x": X}, output_filter=["z"]), Code.INVALID_ARGUMENT, "z"),
        (classify_log([1.0], "regress"), Code.INVALID_ARGUMENT,
         "Expected classification signature method_name to be tensorflow/serving/classify"),
        (regress_log([], "regress"), Code.INVALID_ARGUMENT, "Input is empty."),
        (multi_inference_log([1.0], [("regress", "regress"), ("regress", "regress")]), Code.INVALID_ARGUMENT,
         "Duplicate evaluation of signature: regress"),
    ],
)
def test_bad_requests_keep_their_code(version_dir: Path, record: Any, code: Code, fragment: str) -> None:
    write_warmup_file(version_dir, [record])
    error = _load_error(_loader(version_dir))
    assert error.code is code and fragment in error.message, repr(error)


@pytest.mark.slow
def test_more_than_1000_records_is_refused_before_any_replay(version_dir: Path, observed: list[Any]) -> None:
    record = predict_log({"x": X})
    path = write_warmup_file(version_dir, [record] * (MAX_WARMUP_RECORDS + 1))
    error = _load_error(_loader(version_dir))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message == f"Number of warmup records exceeds the maximum (1000) at {path}"
    assert [status for _, status, _, _ in observed] == ["INVALID_ARGUMENT"]


@pytest.mark.slow
def test_exactly_1000_records_are_fine(version_dir: Path) -> None:
    write_warmup_file(version_dir, [predict_log({"x": X})] * MAX_WARMUP_RECORDS)
    loader = _loader(version_dir)
    loader.load()
    try:
        assert _calls(loader.servable) == MAX_WARMUP_RECORDS
    finally:
        loader.unload()


@pytest.mark.slow
def test_a_file_that_is_not_tfrecords_is_data_loss(version_dir: Path, observed: list[Any]) -> None:
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True)
    path.write_text(PARSE_ERROR_FILE_TEXT)
    error = _load_error(_loader(version_dir))
    assert error.code is Code.DATA_LOSS
    assert error.message.endswith(". Please verify your warmup data is in TFRecord format."), error.message
    assert "corrupted record at 0" in error.message
    # A TFRecord file cut short in its last record is corrupt as well.
    data = write_warmup_file(version_dir, [predict_log({"x": X})] * 2).read_bytes()
    path.write_bytes(data[:-5])
    error = _load_error(_loader(version_dir))
    assert error.code is Code.DATA_LOSS and "TFRecord format" in error.message, repr(error)
    assert [status for _, status, _, _ in observed] == ["DATA_LOSS", "DATA_LOSS"]


@pytest.mark.slow
def test_a_record_that_is_not_a_prediction_log_fails_to_parse(version_dir: Path) -> None:
    path = write_warmup_file(version_dir, [predict_log({"x": X}), b"\xff\xff\xff"])
    error = _load_error(_loader(version_dir))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(f"Failed to parse warmup record: record 2 (3 bytes) of {path}"), error.message


@pytest.mark.slow
@pytest.mark.parametrize(("record", "kind"), [(session_run_log(), "session_run_log"),
                                              (predict_streamed_log(), "predict_streamed_log")])
def test_unsupported_log_types_are_unimplemented(version_dir: Path, record: Any, kind: str) -> None:
    write_warmup_file(version_dir, [predict_log({"x": X}), record])
    error = _load_error(_loader(version_dir))
    assert (error.code, error.message) == (Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


# -- batching: warmup goes through the batch queues ----------------------------------------------------


@pytest.fixture
def scheduler() -> Iterator[BatchScheduler]:
    scheduler = BatchScheduler(1, name="warmup_batch")
    yield scheduler
    scheduler.stop()


@pytest.mark.slow
def test_with_batching_warmup_runs_through_the_batch_queues(version_dir: Path, scheduler: BatchScheduler) -> None:
    write_warmup_file(version_dir, EVERY_KIND)
    config = BatchingConfig(scheduler, BatchingParameters(max_batch_size=8))
    loader = _loader(version_dir, batching=config, num_request_iterations_for_warmup=2)
    loader.load()
    try:
        assert _calls(loader.servable) == 10
        queues = loader.servable.signature_statistics()
        assert {name: queues[name].tasks for name in ("serving_default", "classify", "regress")} == {
            "serving_default": 2, "classify": 4, "regress": 4}
    finally:
        loader.unload()


@pytest.mark.slow
def test_with_batching_a_record_over_max_batch_size_fails_the_load(
    version_dir: Path, scheduler: BatchScheduler
) -> None:
    write_warmup_file(version_dir, [predict_log({"x": np.zeros(9, np.float32)})])
    config = BatchingConfig(scheduler, BatchingParameters(max_batch_size=8))
    error = _load_error(_loader(version_dir, batching=config))
    assert error.code is Code.INVALID_ARGUMENT and "larger than maximum input batch size 8" in error.message
    assert scheduler.statistics() == []  # the failed load closed its queues
