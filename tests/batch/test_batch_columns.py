"""Column mapping and row-by-row conversion to a signature's tensors (pyserving.batch.columns),
and output layout detection (pyserving.batch.writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pyserving.batch.columns import convert_column, resolve_columns, to_tensors
from pyserving.batch.options import BatchOptions, parse_columns
from pyserving.batch.writers import output_layout
from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import CLASSIFY_METHOD, PREDICT_METHOD, DType, SignatureSpec, TensorSpec

TWO = SignatureSpec(inputs={"a": TensorSpec(DType.FLOAT, (None, 2)), "b": TensorSpec(DType.INT64, (None,))},
                    outputs={"s": TensorSpec(DType.FLOAT, (None,))})


def test_parse_columns():
    assert parse_columns(None) is None
    assert parse_columns(" pixels ") == "pixels"
    assert parse_columns("a=col_a, b=col_b") == {"a": "col_a", "b": "col_b"}
    with pytest.raises(InvalidArgumentError, match="'b' of 'a=x,b' is not 'input=column'"):
        parse_columns("a=x,b")
    with pytest.raises(InvalidArgumentError, match="names input 'a' twice"):
        parse_columns("a=x,a=y")


def test_resolve_columns():
    assert resolve_columns(TWO, PREDICT_METHOD, None) == {"a": "a", "b": "b"}
    assert resolve_columns(TWO, PREDICT_METHOD, {"a": "x"}) == {"a": "x", "b": "b"}
    with pytest.raises(InvalidArgumentError, match="names one column, but the signature has 2 inputs"):
        resolve_columns(TWO, PREDICT_METHOD, "x")
    with pytest.raises(InvalidArgumentError, match="'c'.*its inputs: a, b"):
        resolve_columns(TWO, PREDICT_METHOD, {"c": "x"})
    assert resolve_columns(TWO, CLASSIFY_METHOD, "records") == {"inputs": "records"}
    scalar = SignatureSpec(inputs={"x": TensorSpec(DType.FLOAT, ())}, outputs={})
    with pytest.raises(InvalidArgumentError, match="scalar"):
        resolve_columns(scalar, PREDICT_METHOD, None)


@pytest.mark.parametrize("values", [
    pa.array([[1, 2], [3, 4], [5], None, [7, 8]], pa.list_(pa.int64())),
    [[1, 2], [3, 4], [5], None, [7, 8]],
    pa.array(["[1, 2]", "[3, 4]", "[5]", None, "[7, 8]"]),
])
def test_vectors_from_arrow_lists_python_lists_and_text(values):
    array, bad = convert_column(values, TensorSpec(DType.FLOAT, (None, 2)), "a")
    assert array.dtype == np.float32 and array.shape == (5, 2)
    assert sorted(bad) == [2, 3]
    assert "expected shape [2] per row, got [1]" in bad[2] and "missing" in bad[3]
    np.testing.assert_array_equal(array[[0, 1, 4]], [[1, 2], [3, 4], [7, 8]])


def test_integers_accept_whole_numbers_in_range_only():
    values = pa.array([1.0, 2.5, float("nan"), 3e30, 4.0, None])
    array, bad = convert_column(values, TensorSpec(DType.INT32, (None,)), "b")
    assert sorted(bad) == [1, 2, 3, 5]
    assert array.dtype == np.int32 and list(array[[0, 4]]) == [1, 4]
    array, bad = convert_column(np.array([1, 2**40]), TensorSpec(DType.INT32, (None,)), "b")
    assert list(bad) == [1] and "range" in bad[1]


def test_strings_and_text():
    array, bad = convert_column(pa.array(["hé", None, "x"]), TensorSpec(DType.STRING, (None,)), "t")
    assert list(array[[0, 2]]) == ["hé".encode(), b"x"] and list(bad) == [1]
    array, bad = convert_column(pa.array([1.0, 2.0]), TensorSpec(DType.STRING, (None,)), "t")
    assert sorted(bad) == [0, 1] and "text/bytes" in bad[0]
    array, bad = convert_column(pa.array(["1.5", "x", " 2 "]), TensorSpec(DType.FLOAT, (None,)), "f")
    assert list(bad) == [1] and "cannot parse 'x'" in bad[1]
    np.testing.assert_array_equal(array[[0, 2]], [1.5, 2.0])


def test_unknown_dimensions_take_the_first_good_rows_size():
    array, bad = convert_column([[1, 2, 3], [1, 2], [4, 5, 6]], TensorSpec(DType.FLOAT, (None, None)), "v")
    assert array.shape == (3, 3) and list(bad) == [1]
    array, bad = convert_column(pa.array([[1.0], [2.0, 3.0]]), TensorSpec(DType.DOUBLE, None), "v")
    assert array.shape == (2, 1) and list(bad) == [1]


def test_to_tensors_keeps_only_rows_good_in_every_input():
    columns = {"a": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]]), "b": pa.array([1, None, 3])}
    tensors = to_tensors(columns, {"a": "a", "b": "b"}, TWO.inputs, 3)
    assert list(tensors.good) == [True, False, False]
    assert tensors.arrays["a"].shape == (1, 2) and list(tensors.arrays["b"]) == [1]
    assert "input 'b'" in tensors.reasons[1] and "input 'a'" in tensors.reasons[2]


def test_output_layout(tmp_path):
    file = output_layout(str(tmp_path / "s.parquet"), None)
    assert (file.format, file.single_file, file.work_dir.name) == ("parquet", True, ".s.parquet.parts")
    assert file.errors_path == tmp_path / "s.parquet.errors.jsonl"
    assert output_layout(str(tmp_path / "s.jsonl"), None).format == "jsonl"
    folder = output_layout(str(tmp_path / "scores") + "/", "jsonl")
    assert (folder.format, folder.single_file, folder.manifest_path) == (
        "jsonl", False, Path(tmp_path / "scores" / "_manifest.json"))
    assert output_layout(str(tmp_path / "scores"), None).format == "parquet"
    with pytest.raises(InvalidArgumentError, match="does not match"):
        output_layout(str(tmp_path / "s.parquet"), "jsonl")


def test_options_are_validated():
    with pytest.raises(InvalidArgumentError, match="batch_size must be an int >= 1, got 0"):
        BatchOptions("m", input="i", output="o", batch_size=0)
    with pytest.raises(InvalidArgumentError, match="not both"):
        BatchOptions("m", input="i", output="o", version=1, label="x")
    with pytest.raises(InvalidArgumentError, match="input_format must be one of"):
        BatchOptions("m", input="i", output="o", input_format="xls")
    assert BatchOptions("m", input="i", output="o", ray_address="ray://h:10001").ray
