"""Tests for the TensorFlow platform: SavedModelLoader and SavedModelServable.

Real SavedModels are generated once per module (tests/support/saved_models.py); tests that
load TensorFlow are marked slow. Most behaviour is checked on both runners (session
callable and signature function).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyserving.loaders.platform import get_platform
from pyserving.loaders.saved_model import (
    RAM_ESTIMATE_FACTOR,
    SavedModelLoader,
    SavedModelOptions,
    SavedModelServable,
    directory_size,
)
from pyserving.loaders.tensorflow_platform import TENSORFLOW_PLATFORM, saved_model_options
from pyserving.servable.errors import (
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, DType, InferenceServable
from pyserving.sources.storage_path import StoragePath
from tests.support import saved_models

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "pyserving" / "data" / "half_plus_two" / "00000123"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("saved_models")
    writers = {
        "half_plus_two": saved_models.write_half_plus_two_tf1,
        "tf2": saved_models.write_tf2_model,
        "strings": saved_models.write_string_model,
        "multi_io": saved_models.write_multi_io_model,
    }
    paths = {}
    for name, write in writers.items():
        write(base / name / "1")
        paths[name] = base / name / "1"
    saved_models.write_half_plus_two_tf1(base / "half_plus_two_text" / "1", as_text=True)
    paths["half_plus_two_text"] = base / "half_plus_two_text" / "1"
    return paths


@pytest.fixture(scope="module", params=["session", "function"])
def execution(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def servables(models: dict[str, Path], execution: str) -> Any:
    loaded = {name: SavedModelServable.load(path, SavedModelOptions(execution=execution)) for name, path in models.items()}
    yield loaded
    for servable in loaded.values():
        servable.close()


def example(**features: float) -> bytes:
    import tensorflow as tf

    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=[v])) for k, v in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def expect_error(cls: type[ServingError], message: str, fn: Any, *args: Any) -> None:
    with pytest.raises(cls) as info:
        fn(*args)
    assert info.value.message == message


# -- platform and options (no TensorFlow) --------------------------------------------------
def test_importing_the_platform_does_not_import_tensorflow() -> None:
    code = (
        "import sys; import pyserving.loaders.tensorflow_platform, pyserving.loaders.saved_model; "
        "from pyserving.loaders.platform import get_platform; get_platform('tensorflow'); "
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def test_registry_serves_the_tensorflow_platform(tmp_path: Path) -> None:
    assert get_platform("tensorflow") is TENSORFLOW_PLATFORM
    assert not TENSORFLOW_PLATFORM.is_version_ready(tmp_path)
    (tmp_path / "saved_model.pbtxt").write_text("")
    assert TENSORFLOW_PLATFORM.is_version_ready(tmp_path)


def test_options_mapping() -> None:
    assert saved_model_options({}) == SavedModelOptions(tags=("serve",))
    parsed = saved_model_options({"saved_model_tags": "serve, gpu", "intra_op_parallelism": 2, "inter_op_parallelism": 1})
    assert parsed == SavedModelOptions(tags=("serve", "gpu"), intra_op_parallelism=2, inter_op_parallelism=1)
    assert saved_model_options({"saved_model_tags": ["a", "b"]}).tags == ("a", "b")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"saved_model_tag": "serve"}, "unknown tensorflow platform option(s) ['saved_model_tag']"),
        ({"saved_model_tags": ""}, "saved_model_tags must be non-empty strings, got []"),
        ({"saved_model_tags": 3}, "saved_model_tags must be a list of strings"),
        ({"intra_op_parallelism": -1}, "intra_op_parallelism must be an int >= 0 (0 = auto), got -1"),
        ({"inter_op_parallelism": True},
         "inter_op_parallelism must be an int >= -1 (0 = auto, -1 = the calling thread), got True"),
        ({"inter_op_parallelism": -2},
         "inter_op_parallelism must be an int >= -1 (0 = auto, -1 = the calling thread), got -2"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        saved_model_options(options)
    assert fragment in info.value.message


def test_loader_estimate_and_revision(tmp_path: Path) -> None:
    path = tmp_path / "1"
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"x" * 1000)
    (path / "variables" / "variables.index").write_bytes(b"y" * 555)
    loader = TENSORFLOW_PLATFORM.create_loader(ServableId("m", 1), StoragePath(str(path), "rev-7"), {})
    assert isinstance(loader, SavedModelLoader)
    assert loader.revision == "rev-7"
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert directory_size(path) == size == 1555
    assert loader.estimate_resources().ram_bytes == int(size * RAM_ESTIMATE_FACTOR)
    assert loader.servable is None


def test_estimate_of_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        SavedModelLoader(tmp_path / "nope").estimate_resources()


# -- metadata ------------------------------------------------------------------------------
@pytest.mark.slow
def test_tf1_signatures(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["half_plus_two"]
    assert isinstance(servable, InferenceServable)
    sigs = servable.signatures
    assert sorted(sigs) == ["classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2", "serving_default"]
    default = sigs["serving_default"]
    assert default.method_name == PREDICT_METHOD
    x, y = default.inputs["x"], default.outputs["y"]
    assert (x.dtype, x.shape, x.tensor_name) == (DType.FLOAT, (None, 1), "x:0")
    assert (y.dtype, y.shape, y.tensor_name) == (DType.FLOAT, (None, 1), "y:0")
    assert sigs["classify_x_to_y"].method_name == CLASSIFY_METHOD
    assert sigs["classify_x_to_y"].inputs["inputs"].dtype == DType.STRING
    assert sigs["regress_x2_to_y3"].method_name == REGRESS_METHOD
    assert servable.meta_graph_tags == ("serve",)
    sig_defs = servable.signature_def_map()
    assert sorted(sig_defs) == sorted(sigs)
    assert type(sig_defs["serving_default"]).__name__ == "SignatureDef"
    assert sig_defs["serving_default"].inputs["x"].name == "x:0"


@pytest.mark.slow
def test_tf2_signatures_skip_the_init_op(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["tf2"]
    assert list(servable.signatures) == ["serving_default"]
    assert list(servable.signature_def_map()) == ["serving_default"]
    sig = servable.signatures["serving_default"]
    assert sig.inputs["x"].shape == (None, 3)
    assert sig.inputs["x"].tensor_name == "serving_default_x:0"
    assert {k: (v.dtype, v.shape) for k, v in sig.outputs.items()} == {
        "y": (DType.FLOAT, (None, 2)),
        "total": (DType.FLOAT, (None,)),
    }


# -- predict -------------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_tf1(servables: dict[str, SavedModelServable], execution: str) -> None:
    servable = servables["half_plus_two"]
    assert servable.execution == execution
    out = servable.run("serving_default", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], [[2.5], [3.0], [4.5]])
    # A signature whose input is an intermediate float tensor.
    out = servable.run("regress_x2_to_y3", {"inputs": np.array([[1.0]], np.float32)})
    np.testing.assert_array_equal(out["outputs"], [[3.5]])


@pytest.mark.slow
def test_pbtxt_model_loads(servables: dict[str, SavedModelServable]) -> None:
    out = servables["half_plus_two_text"].run("serving_default", {"x": np.array([[4.0]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[4.0]])


@pytest.mark.slow
def test_predict_tf2_with_variables(servables: dict[str, SavedModelServable]) -> None:
    x = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    y = x @ np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32) + np.array([0.5, -0.5], np.float32)
    out = servables["tf2"].run("serving_default", {"x": x})
    np.testing.assert_allclose(out["y"], y)
    np.testing.assert_allclose(out["total"], y.sum(axis=1))


@pytest.mark.slow
def test_string_model(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["strings"]
    out = servable.run("serving_default", {"text": np.array([b"abc", b"x\xc3\xa9"], dtype=object)})
    assert out["shout"].dtype == object
    assert out["shout"].tolist() == [b"ABC!", b"X\xc3\xa9!"]
    assert out["length"].tolist() == [3, 3]
    out = servable.run("serving_default", {"text": np.array(["hi"])}, ["shout"])
    assert out["shout"].tolist() == [b"HI!"]


@pytest.mark.slow
def test_multi_io_and_output_filter(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["multi_io"]
    inputs = {"a": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "b": np.array([10, 20], np.int64)}
    out = servable.run("serving_default", inputs)
    assert sorted(out) == ["b_times_two", "sum"]
    np.testing.assert_array_equal(out["sum"], np.array([13.0, 27.0], np.float32))
    assert out["b_times_two"].dtype == np.int64
    np.testing.assert_array_equal(out["b_times_two"], [20, 40])
    only = servable.run("serving_default", inputs, ["b_times_two"])
    assert list(only) == ["b_times_two"]
    both = servable.run("serving_default", inputs, ("sum", "b_times_two"))
    assert list(both) == ["sum", "b_times_two"]


@pytest.mark.slow
def test_concurrent_requests_get_their_own_answers(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["half_plus_two"]
    failures: list[str] = []

    def worker(k: int) -> None:
        for i in range(50):
            x = np.full((k + 1, 1), float(i + k), np.float32)
            y = servable.run("serving_default", {"x": x})["y"]
            if y.shape != (k + 1, 1) or not np.all(y == 0.5 * (i + k) + 2.0):
                failures.append(f"thread {k} call {i}: {y.ravel().tolist()}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert failures == []


# -- validation ----------------------------------------------------------------------------
@pytest.mark.slow
def test_input_validation_messages(servables: dict[str, SavedModelServable]) -> None:
    run = servables["multi_io"].run
    a, b = np.ones((2, 2), np.float32), np.array([1, 2], np.int64)
    expect_error(
        InvalidArgumentError,
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. Missing but required: {b}.",
        run, "serving_default", {"a": a},
    )
    expect_error(
        InvalidArgumentError,
        "input size does not match signature: 3!=2 len({a,b,c}) != len({a,b}). Sent extra: {c}. Missing but required: {}.",
        run, "serving_default", {"a": a, "b": b, "c": b},
    )
    expect_error(
        InvalidArgumentError,
        "input size does not match signature: 2!=2 len({a,z}) != len({a,b}). Sent extra: {z}. Missing but required: {b}.",
        run, "serving_default", {"a": a, "z": b},
    )
    expect_error(
        InvalidArgumentError,
        "Input 'a' has dtype DT_DOUBLE, but the signature expects DT_FLOAT",
        run, "serving_default", {"a": a.astype(np.float64), "b": b},
    )
    expect_error(
        InvalidArgumentError,
        "Input 'b' has dtype DT_INT32, but the signature expects DT_INT64",
        run, "serving_default", {"a": a, "b": b.astype(np.int32)},
    )
    expect_error(
        InvalidArgumentError,
        "Input 'a' has shape [2,3], but the signature expects [-1,2] (-1 = any size)",
        run, "serving_default", {"a": np.ones((2, 3), np.float32), "b": b},
    )
    expect_error(
        InvalidArgumentError,
        "Input 'b' has shape [], but the signature expects [-1] (-1 = any size)",
        run, "serving_default", {"a": a, "b": np.array(3, np.int64)},
    )


@pytest.mark.slow
def test_output_filter_and_signature_errors(servables: dict[str, SavedModelServable]) -> None:
    run = servables["multi_io"].run
    inputs = {"a": np.ones((1, 2), np.float32), "b": np.array([1], np.int64)}
    expect_error(
        InvalidArgumentError,
        "output tensor alias not found in signature: nope Outputs expected to be in the set {b_times_two,sum}.",
        run, "serving_default", inputs, ["nope"],
    )
    expect_error(InvalidArgumentError, "duplicate output tensor alias: sum", run, "serving_default", inputs, ["sum", "sum"])
    expect_error(FailedPreconditionError, 'Serving signature key "X" not found.', run, "X", inputs)


@pytest.mark.slow
def test_tensorflow_runtime_errors_keep_their_code(servables: dict[str, SavedModelServable]) -> None:
    with pytest.raises(InvalidArgumentError):
        servables["half_plus_two"].run("regress_x_to_y", {"inputs": np.array([b"not an example"], dtype=object)})


# -- classify / regress --------------------------------------------------------------------
@pytest.mark.slow
def test_classify_and_regress(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["half_plus_two"]
    result = servable.classify("classify_x_to_y", [example(x=2.0)])
    assert list(result) == ["scores"]
    np.testing.assert_array_equal(result["scores"], [[3.0]])
    np.testing.assert_array_equal(servable.regress("regress_x_to_y", [example(x=2.0), example(x=4.0)]), [3.0, 4.0])
    np.testing.assert_array_equal(servable.regress("regress_x_to_y2", [example(x=2.0)]), [4.0])


@pytest.mark.slow
def test_classify_and_regress_errors(servables: dict[str, SavedModelServable]) -> None:
    servable = servables["half_plus_two"]
    expect_error(InvalidArgumentError, "No signature was found with the name: nope", servable.classify, "nope", [b""])
    expect_error(
        InvalidArgumentError,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress",
        servable.classify, "regress_x_to_y", [example(x=1.0)],
    )
    expect_error(
        InvalidArgumentError,
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict",
        servable.regress, "serving_default", [example(x=1.0)],
    )
    expect_error(InvalidArgumentError, "Input is empty.", servable.regress, "regress_x_to_y", [])


# -- loading and unloading -----------------------------------------------------------------
@pytest.mark.slow
def test_tag_mismatch_names_the_tags_found(models: dict[str, Path]) -> None:
    loader = SavedModelLoader(models["tf2"], saved_model_options({"saved_model_tags": "serve,gpu"}))
    with pytest.raises(NotFoundError) as info:
        loader.load()
    assert info.value.message == (
        "Could not find meta graph def matching supplied tags: { gpu serve }. "
        f"Tag sets in the SavedModel at {models['tf2']}: {{ serve }}"
    )
    assert loader.servable is None


@pytest.mark.slow
def test_missing_saved_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        SavedModelLoader(tmp_path).load()
    assert "Could not find SavedModel .pb or .pbtxt" in info.value.message
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff garbage")
    with pytest.raises(ServingError) as info:
        SavedModelLoader(tmp_path).load()
    assert info.value.code == Code.DATA_LOSS


@pytest.mark.slow
@pytest.mark.parametrize("model", ["half_plus_two", "strings"])
def test_unload_releases_the_model(models: dict[str, Path], execution: str, model: str) -> None:
    loader = SavedModelLoader(models[model], SavedModelOptions(execution=execution))
    loader.load()
    servable = loader.servable
    assert servable is not None
    with pytest.raises(FailedPreconditionError):
        loader.load()
    backend = servable._backend
    held = [weakref.ref(backend)]
    held += [weakref.ref(v) for v in vars(backend).values() if not isinstance(v, type)]
    inputs = {"x": np.array([[1.0]], np.float32)} if model == "half_plus_two" else {"text": np.array([b"a"], object)}
    servable.run("serving_default", inputs)
    del backend
    loader.unload()
    assert loader.servable is None
    gc.collect()
    assert [ref() for ref in held] == [None] * len(held)
    expect_error(
        FailedPreconditionError, "This SavedModel servable has been unloaded", servable.run, "serving_default", inputs
    )


@pytest.mark.slow
def test_bundled_demo_model_answers() -> None:
    assert directory_size(DEMO_MODEL) < 100_000
    loader = TENSORFLOW_PLATFORM.create_loader(ServableId("half_plus_two", 123), StoragePath(str(DEMO_MODEL)), {})
    loader.load()
    try:
        out = loader.servable.run("serving_default", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})
        assert out["y"].ravel().tolist() == [2.5, 3.0, 4.5]
    finally:
        loader.unload()
