"""pyserving.batch.run on every input and output format, with a Python-platform model, compared
with the model called directly; larger-than-chunk inputs, empty inputs, bad rows, --fail-fast."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pyserving.batch import BadRowError, BatchOptions, run
from tests.batch.batch_support import (
    affine,
    read_errors,
    read_output,
    rows,
    write_affine_model,
    write_csv,
    write_jsonl,
    write_parquet,
)


@pytest.fixture()
def model_path(tmp_path):
    write_affine_model(tmp_path / "affine" / "1")
    return str(tmp_path / "affine")


def _options(model_path, source, output, **kw):
    kw.setdefault("batch_size", 16)
    kw.setdefault("chunk_rows", 64)
    kw.setdefault("progress", False)
    return BatchOptions(model_path, input=str(source), output=str(output), **kw)


def _check(output, x, ids):
    out = read_output(output)
    y, total = affine(x)
    assert out["id"] == list(ids)
    np.testing.assert_allclose(np.array(out["y"], np.float32), y, rtol=1e-6)
    np.testing.assert_allclose(np.array(out["total"], np.float32), total, rtol=1e-6)


def _write(fmt, path, x, ids):
    if fmt == "parquet":
        return write_parquet(path, x, ids, row_group_size=100)
    if fmt == "csv":
        return write_csv(path, x, ids)
    if fmt == "jsonl":
        return write_jsonl(path, x, ids)
    np.save(path, x)
    return path


@pytest.mark.parametrize("fmt,suffix", [("parquet", ".parquet"), ("csv", ".csv"), ("jsonl", ".jsonl"),
                                        ("npy", ".npy")])
@pytest.mark.parametrize("out_suffix", [".parquet", ".jsonl", "_parts/"])
def test_every_format_matches_the_model_called_directly(tmp_path, model_path, fmt, suffix, out_suffix):
    x = rows(1000)  # > 15 chunks of 64 rows, last one partial
    ids = [f"row-{i}" for i in range(1000)] if fmt != "npy" else None
    source = _write(fmt, tmp_path / f"data{suffix}", x, ids)
    output = tmp_path / f"scores{out_suffix}"
    summary = run(_options(model_path, source, output))
    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (1000, 1000, 0)
    assert summary.chunks_written == 16 and not summary.interrupted and summary.errors_path is None
    _check(output, x, ids if ids is not None else range(1000))
    if out_suffix.endswith("/"):
        assert sorted(p.name for p in output.iterdir())[:2] == ["_manifest.json", "part-00000." + (
            "parquet" if out_suffix != ".jsonl" else "jsonl")]
        assert pq.read_table(output).num_rows == 1000
    else:
        assert not (tmp_path / f".scores{out_suffix}.parts").exists()


def test_parquet_folder_output_reads_as_one_table_with_list_columns(tmp_path, model_path):
    x = rows(300)
    source = write_parquet(tmp_path / "in.parquet", x, fixed=True)
    run(_options(model_path, source, tmp_path / "out", output_format="parquet"))
    table = pq.read_table(tmp_path / "out")
    assert table.schema.names == ["id", "y", "total"]
    assert table.schema.field("id").type == pa.int64()
    assert pa.types.is_list(table.schema.field("y").type)
    assert table.column("id").to_pylist() == list(range(300))


@pytest.mark.parametrize("name,content", [
    ("empty.csv", b""), ("header.csv", b"id,x\n"), ("empty.jsonl", b""), ("blank.jsonl", b"\n\n"),
])
def test_empty_text_inputs_give_an_empty_output_with_the_signature_columns(tmp_path, model_path, name, content):
    source = tmp_path / name
    source.write_bytes(content)
    summary = run(_options(model_path, source, tmp_path / "out.parquet"))
    assert (summary.rows_read, summary.rows_written) == (0, 0)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 0 and table.schema.names == ["id", "y", "total"]


def test_empty_parquet_and_npy_inputs(tmp_path, model_path):
    write_parquet(tmp_path / "e.parquet", np.zeros((0, 3), np.float32), ids=[])
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    for source, out in (("e.parquet", "o1/"), ("e.npy", "o2.jsonl")):
        summary = run(_options(model_path, tmp_path / source, tmp_path / out))
        assert summary.rows_written == 0
    assert pq.read_table(tmp_path / "o1").schema.names == ["id", "y", "total"]
    assert (tmp_path / "o2.jsonl").read_bytes() == b""


def test_bad_rows_go_to_the_errors_file_and_the_rest_is_scored(tmp_path, model_path):
    x = rows(200)
    values: list = [list(map(float, r)) for r in x]
    values[3] = [1.0, 2.0]  # wrong shape
    values[10] = None  # missing
    values[77] = [float("nan"), 1.0, 2.0]  # only the model refuses it (the batch is retried row by row)
    values[150] = ["a", "b", "c"]  # wrong type: in JSON Lines the block falls back to per-line parsing
    source = write_jsonl(tmp_path / "in.jsonl", values, ids=[f"k{i}" for i in range(200)])
    with open(source, "a") as file:
        file.write("{not json\n")
    summary = run(_options(model_path, source, tmp_path / "out.parquet"))
    bad = {3, 10, 77, 150, 200}
    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (201, 196, 5)
    errors = read_errors(tmp_path / "out.parquet")
    assert [e["row"] for e in errors] == sorted(bad)
    assert [e["id"] for e in errors] == ["k3", "k10", "k77", "k150", None]
    reasons = [e["reason"] for e in errors]
    assert "expected shape [3] per row, got [2]" in reasons[0]
    assert "missing" in reasons[1]
    assert "INVALID_ARGUMENT" in reasons[2] and "NaN" in reasons[2]
    assert "expected numbers" in reasons[3]
    assert "not a JSON object" in reasons[4]
    keep = [i for i in range(200) if i not in bad]
    _check(tmp_path / "out.parquet", x[keep], [f"k{i}" for i in keep])


def test_csv_bad_cells_and_malformed_lines(tmp_path, model_path):
    x = rows(20)
    source = write_csv(tmp_path / "in.csv", x, ids=range(20))
    with open(source, "a") as file:
        file.write('20,"[1, 2]"\n21,oops\n22,"[1,2,3]",extra\n23,"[1, 2, 3]"\n')
    summary = run(_options(model_path, source, tmp_path / "out.jsonl"))
    assert summary.rows_written == 21 and summary.rows_failed == 3
    errors = read_errors(tmp_path / "out.jsonl")
    assert {"line": 24, "reason": errors[0]["reason"]} == errors[0] and "3 fields" in errors[0]["reason"]
    assert [(e["row"], e["id"]) for e in errors[1:]] == [(20, 20), (21, 21)]
    out = read_output(tmp_path / "out.jsonl")
    assert out["id"] == list(range(20)) + [23]
    np.testing.assert_allclose(out["y"][-1], affine(np.array([[1, 2, 3]], np.float32))[0][0])


def test_numbers_are_converted_to_the_signature_dtype(tmp_path, model_path):
    ints = np.arange(30, dtype=np.int64).reshape(10, 3)
    np.save(tmp_path / "ints.npy", ints)
    run(_options(model_path, tmp_path / "ints.npy", tmp_path / "out.parquet", columns="x"))
    _check(tmp_path / "out.parquet", ints.astype(np.float32), range(10))


def test_npy_of_the_wrong_shape_fails_every_row_and_fail_fast_names_the_first(tmp_path, model_path):
    np.save(tmp_path / "bad.npy", np.zeros((5, 4), np.float32))
    summary = run(_options(model_path, tmp_path / "bad.npy", tmp_path / "out.parquet"))
    assert (summary.rows_written, summary.rows_failed) == (0, 5)
    with pytest.raises(BadRowError) as caught:
        run(_options(model_path, tmp_path / "bad.npy", tmp_path / "out2.parquet", fail_fast=True))
    assert caught.value.row == 0 and "expected shape [3] per row, got [4]" in str(caught.value)


def test_fail_fast_on_a_row_only_the_model_refuses_keeps_earlier_chunks(tmp_path, model_path):
    x = rows(300)
    x[200, 0] = np.nan
    source = write_parquet(tmp_path / "in.parquet", x, ids=[f"k{i}" for i in range(300)])
    with pytest.raises(BadRowError) as caught:
        run(_options(model_path, source, tmp_path / "out/", fail_fast=True))
    assert (caught.value.row, caught.value.row_id) == (200, "k200")
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert [c["end"] for c in manifest["chunks"]] == [64, 128, 192] and not manifest["complete"]


def test_columns_map_inputs_to_other_columns_and_a_missing_column_is_refused(tmp_path, model_path):
    import pyarrow as pa

    x = rows(10)
    table = pa.table({"key": list(range(100, 110)),
                      "pixels": pa.array([list(map(float, r)) for r in x], pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "in.parquet")
    run(_options(model_path, tmp_path / "in.parquet", tmp_path / "a.parquet", columns="pixels", id_column="key"))
    out = read_output(tmp_path / "a.parquet")
    assert out["key"] == list(range(100, 110))
    run(_options(model_path, tmp_path / "in.parquet", tmp_path / "b.parquet", columns={"x": "pixels"}))
    assert read_output(tmp_path / "b.parquet")["id"] == list(range(10))  # no id column: row numbers
    from pyserving.servable.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="no column 'x'.*its columns: key, pixels"):
        run(_options(model_path, tmp_path / "in.parquet", tmp_path / "c.parquet"))
    with pytest.raises(InvalidArgumentError, match="does not take"):
        run(_options(model_path, tmp_path / "in.parquet", tmp_path / "d.parquet", columns="y=pixels"))


def test_a_folder_of_parquet_files_is_one_input_and_the_id_column_cannot_shadow_an_output(tmp_path, model_path):
    x = rows(300)
    first = run(_options(model_path, write_parquet(tmp_path / "in.parquet", x), tmp_path / "scores/"))
    assert first.rows_written == 300
    folder = tmp_path / "inputs"
    folder.mkdir()
    write_parquet(folder / "a.parquet", x[:120], ids=range(120))
    write_parquet(folder / "b.parquet", x[120:], ids=range(120, 300), row_group_size=50)
    (folder / "_SUCCESS").write_text("")
    run(_options(model_path, folder, tmp_path / "out.parquet"))
    _check(tmp_path / "out.parquet", x, range(300))
    from pyserving.servable.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="--id-column 'total' is also an output"):
        run(_options(model_path, folder, tmp_path / "o2.parquet", id_column="total"))
