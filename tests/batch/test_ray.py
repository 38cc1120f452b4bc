"""pyserving.integrations.ray: the Predictor on pyarrow / numpy / pandas batches (no Ray needed),
then the batch job on a local Ray instance with 2 CPUs (slow; skipped with the reason when ray is
not installed or cannot start here): results equal the model called directly, ids and row order
kept, bad rows in the errors file, every input format, resume, fail-fast, and the CLI's --ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the Ray integration needs pyarrow (pip install 'pyserving[ray]')")
pq = pytest.importorskip("pyarrow.parquet")

from pyserving.batch import BadRowError, BatchOptions, open_local_model  # noqa: E402
from pyserving.integrations.ray import Predictor  # noqa: E402
from pyserving.servable.errors import InvalidArgumentError, ServingError  # noqa: E402

# x float32 [None, 3], k int64 [None] -> y = [sum(x), max(x)] [None, 2], s = sum(x) * k [None].
# A negative k is a bad row only the model sees (INVALID_ARGUMENT); "broken" fails every call.
MODEL_PY = '''
import numpy as np

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

BROKEN = {broken}


class SumMax:
    def __init__(self):
        self.signatures = {{"serving_default": SignatureSpec(
            {{"x": TensorSpec(DType.FLOAT, (None, 3)), "k": TensorSpec(DType.INT64, (None,))}},
            {{"y": TensorSpec(DType.FLOAT, (None, 2)), "s": TensorSpec(DType.FLOAT, (None,))}})}}

    def run(self, name, inputs, output_filter=()):
        if BROKEN:
            raise RuntimeError("the accelerator is on fire")
        x, k = inputs["x"], inputs["k"]
        if (k < 0).any():
            raise InvalidArgumentError("k must be >= 0")
        return {{"y": np.stack([x.sum(1), x.max(1)], 1), "s": (x.sum(1) * k).astype(np.float32)}}


def create_servable(version_dir):
    return SumMax()
'''

# x float32 [None, 3] -> y = 2 * x: one input, for the one-column formats (.npy, TFRecord).
DOUBLE_PY = '''
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Double:
    signatures = {"serving_default": SignatureSpec({"x": TensorSpec(DType.FLOAT, (None, 3))},
                                                   {"y": TensorSpec(DType.FLOAT, (None, 3))})}

    def run(self, name, inputs, output_filter=()):
        return {"y": inputs["x"] * 2}


def create_servable(version_dir):
    return Double()
'''


# text string [None] -> shout string [None] (upper case): strings in and out.
SHOUT_PY = '''
import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Shout:
    signatures = {"serving_default": SignatureSpec({"text": TensorSpec(DType.STRING, (None,))},
                                                   {"shout": TensorSpec(DType.STRING, (None,))})}

    def run(self, name, inputs, output_filter=()):
        out = np.empty(len(inputs["text"]), dtype=object)
        out[:] = [t.upper() for t in inputs["text"]]
        return {"shout": out}


def create_servable(version_dir):
    return Shout()
'''


def _write_model(base: Path, source: str) -> Path:
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.py").write_text(textwrap.dedent(source))
    return base


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray_models")
    _write_model(root / "summax", MODEL_PY.format(broken=False))
    _write_model(root / "broken", MODEL_PY.format(broken=True))
    _write_model(root / "double", DOUBLE_PY)
    _write_model(root / "shout", SHOUT_PY)
    return root


def _expected(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float32)
    return np.stack([x.sum(1), x.max(1)], 1), (x.sum(1) * k).astype(np.float32)


def _vectors(x: np.ndarray) -> Any:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


# -- the Predictor alone (no Ray) ---------------------------------------------------------------------


def test_predictor_on_a_pyarrow_table_adds_one_column_per_output(models: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    k = np.array([1, 2, 3, 4])
    table = pa.table({"id": ["a", "b", "c", "d"], "x": pa.array(x.tolist(), pa.list_(pa.float64())), "k": k})
    out = Predictor(str(models / "summax"))(table)
    assert out.column_names == ["id", "x", "k", "y", "s"]
    assert out.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert out.schema.field("y").type == pa.list_(pa.float32(), 2)
    y, s = _expected(x, k)
    np.testing.assert_allclose(np.array(out.column("y").to_pylist()), y)
    np.testing.assert_allclose(out.column("s").to_numpy(), s)


def test_predictor_on_numpy_batches_and_ray_style_object_columns(models: Path) -> None:
    predictor = Predictor(str(models / "summax"), columns={"x": "features"})
    x = np.random.default_rng(0).random((5, 3))
    k = np.arange(5)
    out = predictor({"features": x, "k": k})
    assert sorted(out) == ["features", "k", "s", "y"]
    y, s = _expected(x, k)
    np.testing.assert_allclose(out["y"], y, rtol=1e-6)
    # Ray hands list columns to numpy batches as object arrays of per-row arrays
    rows = np.empty(5, dtype=object)
    rows[:] = list(x)
    np.testing.assert_allclose(predictor({"features": rows, "k": k})["s"], s, rtol=1e-6)


def test_predictor_on_a_pandas_dataframe(models: Path) -> None:
    pd = pytest.importorskip("pandas")
    x = np.random.default_rng(1).random((3, 3))
    frame = pd.DataFrame({"x": list(x), "k": [3, 2, 1]})
    out = Predictor(str(models / "summax"))(frame)
    assert list(out.columns) == ["x", "k", "y", "s"] and list(frame.columns) == ["x", "k"]
    y, s = _expected(x, np.array([3, 2, 1]))
    np.testing.assert_allclose(np.stack(out["y"].to_numpy()), y, rtol=1e-6)
    np.testing.assert_allclose(out["s"].to_numpy(), s, rtol=1e-6)


def test_bad_rows_raise_naming_the_id_or_go_to_the_error_column(models: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "x": pa.array([[1, 2, 3], [4, 5], [7, 8, 9]], pa.list_(pa.float32())),
                      "k": [1, 2, -3]})
    with pytest.raises(InvalidArgumentError, match=r"row 1 of the batch \(id 'b'\) is bad: input 'x': expected shape"):
        Predictor(str(models / "summax"))(table)
    out = Predictor(str(models / "summax"), keep_columns=["id"], error_column="why")(table)
    assert out.column_names == ["id", "y", "s", "why"]
    reasons = out.column("why").to_pylist()
    assert reasons[0] == "" and "expected shape [3] per row, got [2]" in reasons[1]
    assert reasons[2] == "model call failed: INVALID_ARGUMENT: k must be >= 0"
    assert out.column("s").to_pylist() == [6.0, 0.0, 0.0]


def test_string_outputs_and_a_null_row_in_each_format(models: Path) -> None:
    pd = pytest.importorskip("pandas")
    predictor = Predictor(str(models / "shout"), error_column="why")
    table = predictor(pa.table({"text": ["ab", None, "c\u00e9"]}))
    assert table.column("shout").type == pa.binary()
    assert table.column("shout").to_pylist() == [b"AB", b"", "c\u00e9".encode().upper()]
    assert table.column("why").to_pylist()[1] == "input 'text': value is missing (null)"
    texts = np.array([b"x", None], dtype=object)
    assert list(predictor({"text": texts})["shout"]) == [b"X", b""]
    frame = predictor(pd.DataFrame({"text": ["y", None]}))
    assert list(frame["shout"]) == [b"Y", b""] and frame["why"][0] == ""


def test_missing_columns_and_clashing_outputs_are_refused(models: Path) -> None:
    predictor = Predictor(str(models / "summax"))
    with pytest.raises(InvalidArgumentError, match=r"no column 'k' .*its columns: x"):
        predictor(pa.table({"x": _vectors(np.ones((2, 3), np.float32))}))
    clash = pa.table({"x": _vectors(np.ones((2, 3), np.float32)), "k": [1, 1], "s": [0, 0]})
    with pytest.raises(InvalidArgumentError, match="output 's' would replace the input column"):
        predictor(clash)


def test_importing_the_integration_does_not_import_ray() -> None:
    code = ("import sys, pyserving; assert 'pyserving.integrations' not in sys.modules; "
            "import pyserving.integrations.ray; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the job on a local Ray instance ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        pytest.skip(f"ray is not installed (pip install 'pyserving[ray]'): {exc}")
    try:
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 logging_level="WARNING")
    except Exception as exc:  # noqa: BLE001 - e.g. too little /dev/shm, no network namespace
        pytest.skip(f"a local Ray instance cannot start here: {type(exc).__name__}: {exc}")
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, False
    yield ray
    context.enable_progress_bars = bars
    ray.shutdown()


TWO_ACTORS = {"ray_actors": 2, "ray_cpus_per_actor": 0.5}  # both actors fit beside the read tasks on 2 CPUs


def _run(ray_local: Any, model: Path, source: Path, output: Path, **fields: Any) -> Any:
    from pyserving.integrations.ray import run_on_ray

    fields.setdefault("extra", TWO_ACTORS)
    return run_on_ray(BatchOptions(str(model), input=str(source), output=str(output), progress=False, **fields))


def _errors(output: Path) -> list[dict[str, Any]]:
    path = output.with_name(output.name + ".errors.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _summax_input(folder: Path, n: int = 3000, files: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder of Parquet files; row 5 has a short x (bad before the call), rows 1234 and 2999 (when
    there) a negative k (bad in the model call)."""
    x = np.random.default_rng(7).random((n, 3)).astype(np.float32)
    k = np.arange(n)
    k[[i for i in (1234, 2999) if i < n]] = -1
    ids = [f"r{i:05d}" for i in range(n)]
    column = x.tolist()
    column[5] = column[5][:2]
    folder.mkdir()
    step = -(-n // files)
    for f, begin in enumerate(range(0, n, step)):
        part = slice(begin, begin + step)
        pq.write_table(pa.table({"id": ids[part], "x": pa.array(column[part], pa.list_(pa.float32())), "k": k[part]}),
                       folder / f"part-{f}.parquet", row_group_size=250)
    return x, k, ids


@pytest.mark.slow
def test_python_model_on_two_actors_equals_the_model_called_directly(ray_local: Any, models: Path,
                                                                    tmp_path: Path) -> None:
    x, k, ids = _summax_input(tmp_path / "in")
    out = tmp_path / "out.parquet"
    summary = _run(ray_local, models / "summax", tmp_path / "in", out, batch_size=100, chunk_rows=512)
    bad = [5, 1234, 2999]
    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (3000, 2997, 3)
    assert summary.model == "{name: summax version: 1}" and summary.errors_path == str(out) + ".errors.jsonl"
    errors = _errors(out)
    assert [(e["row"], e["id"]) for e in errors] == [(i, ids[i]) for i in bad]
    assert "expected shape [3] per row" in errors[0]["reason"] and "k must be >= 0" in errors[1]["reason"]
    keep = [i for i in range(3000) if i not in bad]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [ids[i] for i in keep]  # input order, ids carried
    model = open_local_model(models / "summax")
    try:
        direct = model.score({"x": x[keep], "k": k[keep]})
    finally:
        model.close()
    np.testing.assert_array_equal(np.array(table.column("y").to_pylist(), np.float32), direct["y"])
    np.testing.assert_array_equal(table.column("s").to_numpy(), direct["s"])


@pytest.mark.slow
def test_mlp_savedmodel_equals_the_model_called_directly(ray_local: Any, tmp_path: Path) -> None:
    from tests.support.saved_models import write_mlp_model

    write_mlp_model(tmp_path / "mlp" / "1")
    x = np.random.default_rng(3).random((1500, 784)).astype(np.float32)
    pq.write_table(pa.table({"x": _vectors(x)}), tmp_path / "in.parquet", row_group_size=256)
    out = tmp_path / "scores"
    summary = _run(ray_local, tmp_path / "mlp", tmp_path / "in.parquet", Path(str(out) + "/"))
    assert (summary.rows_written, summary.rows_failed) == (1500, 0)
    table = pq.read_table(out)  # a folder of parts plus _manifest.json, read as one table
    assert table.column("id").to_pylist() == list(range(1500))  # no id column: row numbers
    model = open_local_model(tmp_path / "mlp")
    try:
        expected = model.score({"x": x})["probabilities"]
    finally:
        model.close()
    np.testing.assert_allclose(np.array(table.column("probabilities").to_pylist(), np.float32), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "npy"])
def test_other_input_formats(ray_local: Any, models: Path, tmp_path: Path, fmt: str) -> None:
    x = np.random.default_rng(11).random((400, 3)).astype(np.float32)
    source = tmp_path / f"in.{fmt}"
    if fmt == "npy":
        np.save(source, x)
    elif fmt == "csv":
        source.write_text("id,x\n" + "".join(f'{i},"{json.dumps(row.tolist())}"\n' for i, row in enumerate(x)))
    else:
        source.write_text("".join(json.dumps({"id": i, "x": row.tolist()}) + "\n" for i, row in enumerate(x)))
    out = tmp_path / "out.jsonl"
    summary = _run(ray_local, models / "double", source, out, batch_size=64)
    assert (summary.rows_written, summary.rows_failed) == (400, 0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == list(range(400))
    np.testing.assert_allclose(np.array([line["y"] for line in lines], np.float32), x * 2, rtol=1e-6)


@pytest.mark.slow
def test_tfrecord_examples_go_to_a_regress_signature(ray_local: Any, tmp_path: Path) -> None:
    import tensorflow as tf

    from tests.support.saved_models import write_half_plus_two_tf1

    write_half_plus_two_tf1(tmp_path / "hp2" / "1")
    source = tmp_path / "in.tfrecord"
    with tf.io.TFRecordWriter(str(source)) as writer:
        for i in range(300):
            features = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i)])),
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"ex{i}".encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
                         if i != 7 else b"\x0a\x05ab")  # row 7: not a tf.Example
    out = tmp_path / "out.parquet"
    summary = _run(ray_local, tmp_path / "hp2", source, out, signature="regress_x_to_y", batch_size=64)
    assert (summary.rows_written, summary.rows_failed) == (299, 1)
    assert [e["row"] for e in _errors(out)] == [7]
    keep = [i for i in range(300) if i != 7]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"ex{i}" for i in keep]
    values = np.array(table.column("outputs").to_pylist(), np.float32).reshape(-1)
    np.testing.assert_allclose(values, 0.5 * np.array(keep, np.float32) + 2.0, rtol=1e-6)


@pytest.mark.slow
def test_resume_continues_without_duplicates_and_fail_fast_names_the_row(ray_local: Any, models: Path,
                                                                        tmp_path: Path) -> None:
    _x, _k, ids = _summax_input(tmp_path / "in")
    out = tmp_path / "out"
    fields = {"batch_size": 100, "chunk_rows": 500}
    _run(ray_local, models / "summax", tmp_path / "in", Path(str(out) + "/"), **fields)
    first = pq.read_table(out).to_pydict()
    manifest_path = out / "_manifest.json"  # as if the job had stopped after two chunks
    manifest = json.loads(manifest_path.read_text())
    manifest["chunks"], manifest["complete"] = manifest["chunks"][:2], False
    first_error = (tmp_path / "out.errors.jsonl").read_bytes().splitlines(keepends=True)[0]  # row 5, in chunk 0
    manifest["errors_bytes"] = len(first_error)
    manifest_path.write_text(json.dumps(manifest))
    for part in sorted(out.glob("part-*"))[2:]:
        part.unlink()
    resumed = _run(ray_local, models / "summax", tmp_path / "in", Path(str(out) + "/"), resume=True, **fields)
    assert (resumed.rows_resumed, resumed.rows_read) == (1000, 2000)
    assert pq.read_table(out).to_pydict() == first
    assert [e["row"] for e in _errors(out)] == [5, 1234, 2999]
    with pytest.raises(BadRowError, match=r"row 5 \(id 'r00005'\) is bad"):
        _run(ray_local, models / "summax", tmp_path / "in", tmp_path / "ff.parquet", fail_fast=True, **fields)


@pytest.mark.slow
def test_a_broken_model_fails_the_job_with_its_serving_error(ray_local: Any, models: Path, tmp_path: Path) -> None:
    _summax_input(tmp_path / "in", n=300, files=1)
    with pytest.raises(ServingError, match="failed on every row of a batch.*the accelerator is on fire"):
        _run(ray_local, models / "broken", tmp_path / "in", tmp_path / "out.parquet")
    with pytest.raises(ServingError, match="does not exist"):
        _run(ray_local, models / "missing", tmp_path / "in", tmp_path / "out2.parquet")


@pytest.mark.slow
def test_the_cli_runs_the_job_on_the_ray_cluster_given(ray_local: Any, models: Path, tmp_path: Path) -> None:
    from tests.support.server_process import ServerProcess

    _x, _k, ids = _summax_input(tmp_path / "in", n=600, files=2)
    out = tmp_path / "out.parquet"
    address = ray_local.get_runtime_context().gcs_address
    args = ["batch", str(models / "summax"), "--input", str(tmp_path / "in"), "--output", str(out),
            "--ray-address", address, "--batch-size", "50"]
    with ServerProcess(args, program="pyserving") as proc:
        assert proc.wait_exit(240) == 0, proc.output
    assert "on Ray" in proc.output and "Scored 599 rows" in proc.output
    assert pq.read_table(out).column("id").to_pylist() == ids[:5] + ids[6:]
    assert [e["id"] for e in _errors(out)] == ["r00005"]
