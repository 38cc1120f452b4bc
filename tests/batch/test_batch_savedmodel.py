"""Batch jobs on real SavedModels: the MLP benchmark model against SavedModelServable.run, and
TFRecord files of tf.Example routed to classify / regress signatures (TF1 half_plus_two)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pyserving.batch import BatchOptions, run
from tests.batch.batch_support import read_errors, read_output
from tests.support.saved_models import write_half_plus_two_tf1, write_mlp_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_mlp_model(root / "mlp" / "1")
    write_half_plus_two_tf1(root / "hp2" / "1")
    return root


def test_mlp_matches_the_servable_called_directly(models, tmp_path):
    from pyserving.loaders.saved_model import SavedModelServable

    x = np.random.default_rng(3).random((700, 784)).astype(np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784).to_pylist()
    column[650] = column[650][:783]  # one row of the wrong size
    pq.write_table(pa.table({"x": pa.array(column, pa.list_(pa.float32()))}), tmp_path / "in.parquet",
                   row_group_size=200)
    summary = run(BatchOptions(str(models / "mlp"), input=str(tmp_path / "in.parquet"),
                               output=str(tmp_path / "out.parquet"), chunk_rows=512, progress=False))
    assert (summary.rows_written, summary.rows_failed, summary.model) == (699, 1, "{name: mlp version: 1}")
    assert [e["row"] for e in read_errors(tmp_path / "out.parquet")] == [650]
    keep = [i for i in range(700) if i != 650]
    servable = SavedModelServable.load(models / "mlp" / "1")
    try:
        expected = servable.run("serving_default", {"x": x[keep]})["probabilities"]
    finally:
        servable.close()
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("id").to_pylist() == keep
    np.testing.assert_allclose(np.array(out.column("probabilities").to_pylist(), np.float32), expected, atol=1e-6)


def _examples(tmp_path, n):
    import tensorflow as tf

    path = tmp_path / "in.tfrecord"
    records = []
    for i in range(n):
        features = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i)])),
                    "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"ex{i}".encode()]))}
        records.append(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    records[7] = b"\x0a\x05ab"  # truncated: not a tf.Example
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.mark.parametrize("signature,output,column", [
    ("regress_x_to_y", "outputs", "out.parquet"),
    ("classify_x_to_y", "scores", "out.jsonl"),
])
def test_tfrecord_examples_go_to_classify_and_regress(models, tmp_path, signature, output, column):
    source = _examples(tmp_path, 300)
    summary = run(BatchOptions(str(models / "hp2"), input=str(source), output=str(tmp_path / column),
                               signature=signature, batch_size=64, chunk_rows=128, progress=False))
    assert (summary.rows_written, summary.rows_failed) == (299, 1)
    [error] = read_errors(tmp_path / column)
    assert error["row"] == 7 and "not a serialized tf.Example" in error["reason"]
    out = read_output(tmp_path / column)
    keep = [i for i in range(300) if i != 7]
    assert out["id"] == [f"ex{i}" for i in keep]
    values = np.array(out[output], np.float32).reshape(len(keep))
    np.testing.assert_allclose(values, 0.5 * np.array(keep, np.float32) + 2.0, rtol=1e-6)


def test_tfrecord_resume_and_empty_file(models, tmp_path):
    import tensorflow as tf

    source = _examples(tmp_path, 300)
    options = dict(signature="regress_x_to_y", batch_size=32, chunk_rows=64, progress=False)
    run(BatchOptions(str(models / "hp2"), input=str(source), output=str(tmp_path / "o/"), **options))
    first = read_output(tmp_path / "o")
    # pretend the job stopped after two chunks: keep them in the manifest, resume
    import json

    manifest_path = tmp_path / "o" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chunks"], manifest["complete"] = manifest["chunks"][:2], False
    manifest_path.write_text(json.dumps(manifest))
    resumed = run(BatchOptions(str(models / "hp2"), input=str(source), output=str(tmp_path / "o/"),
                               resume=True, **options))
    assert resumed.rows_resumed == 128 and read_output(tmp_path / "o") == first
    assert [e["row"] for e in read_errors(tmp_path / "o")] == [7]
    with tf.io.TFRecordWriter(str(tmp_path / "empty.tfrecord")):
        pass
    empty = run(BatchOptions(str(models / "hp2"), input=str(tmp_path / "empty.tfrecord"),
                             output=str(tmp_path / "e.parquet"), **options))
    assert empty.rows_written == 0
    assert pq.read_table(tmp_path / "e.parquet").schema.names == ["id", "outputs"]
