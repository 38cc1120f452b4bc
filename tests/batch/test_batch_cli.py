"""``pyserving batch``: flags, exit statuses and messages, in-process and as the real command;
--ray hands the job to pyserving.integrations.ray; --server scores on a running server."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from pyserving import cli
from pyserving.batch import BatchOptions, BatchSummary
from tests.batch.batch_support import affine, read_errors, read_output, rows, write_affine_model, write_parquet
from tests.support.server_process import ServerProcess, start_model_server


@pytest.fixture()
def setup(tmp_path):
    write_affine_model(tmp_path / "affine" / "1")
    write_affine_model(tmp_path / "affine" / "2", scale=2.0)
    x = rows(500)
    x[42, 0] = np.nan
    write_parquet(tmp_path / "in.parquet", x, ids=[f"k{i}" for i in range(500)], row_group_size=100)
    return tmp_path, x


def _batch(tmp_path, *extra):
    return ["batch", str(tmp_path / "affine"), "--input", str(tmp_path / "in.parquet"), *extra]


def test_batch_scores_and_prints_a_summary(setup, capsys):
    tmp_path, x = setup
    out = tmp_path / "out.parquet"
    assert cli.main(_batch(tmp_path, "--output", str(out), "--version", "1", "--batch-size", "32")) == 0
    printed = capsys.readouterr()
    assert "Scored 499 rows with {name: affine version: 1} signature serving_default" in printed.out
    assert f"1 bad rows -> {out}.errors.jsonl" in printed.out
    keep = [i for i in range(500) if i != 42]
    result = read_output(out)
    assert result["id"] == [f"k{i}" for i in keep]
    np.testing.assert_allclose(np.array(result["total"], np.float32), affine(x[keep])[1], rtol=1e-6)
    assert [e["id"] for e in read_errors(out)] == ["k42"]


def test_latest_version_and_jsonl_folder_output(setup):
    tmp_path, x = setup
    assert cli.main(_batch(tmp_path, "--output", str(tmp_path / "o") + "/", "--output-format", "jsonl",
                           "--columns", "x")) == 0
    result = read_output(tmp_path / "o")
    np.testing.assert_allclose(result["y"][0], affine(x[:1], 2.0)[0][0], rtol=1e-6)


def test_errors_exit_1_with_a_message(setup, capsys):
    tmp_path, _x = setup
    out = str(tmp_path / "out.parquet")
    assert cli.main(_batch(tmp_path, "--output", out, "--fail-fast")) == 1
    assert "stopped by --fail-fast: row 42 (id 'k42') is bad: model call failed" in capsys.readouterr().err
    assert cli.main(_batch(tmp_path, "--output", out, "--label", "stable")) == 1
    assert "--label 'stable' needs --model-config FILE" in capsys.readouterr().err
    assert cli.main(_batch(tmp_path, "--output", out, "--batch-size", "0")) == 1
    assert "batch_size must be an int >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["batch", str(tmp_path / "affine"), "--input", str(tmp_path / "x.parquet"), "--output", out]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_version_and_label_exclude_each_other(setup, capsys):
    tmp_path, _x = setup
    with pytest.raises(SystemExit):
        cli.main(_batch(tmp_path, "--output", "o.parquet", "--version", "1", "--label", "x"))
    assert "not allowed with argument" in capsys.readouterr().err


def test_missing_pyarrow_names_the_extra(setup, capsys, monkeypatch):
    tmp_path, _x = setup
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert cli.main(_batch(tmp_path, "--output", str(tmp_path / "o.parquet"))) == 1
    assert "needs pyarrow: pip install 'pyserving[batch]'" in capsys.readouterr().err


def test_ray_flags_hand_the_job_to_the_ray_integration(setup, monkeypatch, capsys):
    tmp_path, _x = setup
    calls = []

    def run_on_ray(options: BatchOptions, address):
        calls.append((options, address))
        return BatchSummary(options.output, None, "ray", "serving_default", 5, 5, 0, 0, 1, 1.0)

    fake = types.ModuleType("pyserving.integrations.ray")
    fake.run_on_ray = run_on_ray
    monkeypatch.setitem(sys.modules, "pyserving.integrations.ray", fake)
    monkeypatch.setitem(sys.modules, "pyserving.integrations", types.ModuleType("pyserving.integrations"))
    assert cli.main(_batch(tmp_path, "--output", "o.parquet", "--ray-address", "ray://head:10001",
                           "--columns", "x")) == 0
    [(options, address)] = calls
    assert address == "ray://head:10001" and options.ray and options.columns == "x"
    assert "Scored 5 rows with ray" in capsys.readouterr().out


@pytest.mark.slow
def test_the_installed_command_end_to_end(setup):
    tmp_path, x = setup
    out = tmp_path / "out.parquet"
    with ServerProcess(_batch(tmp_path, "--output", str(out)), program="pyserving") as proc:
        assert proc.wait_exit(120) == 0, proc.output
    assert "Scored 499 rows" in proc.output and "Scoring" in proc.output
    assert len(read_output(out)["id"]) == 499
    with ServerProcess(_batch(tmp_path, "--output", str(out)), program="pyserving") as again:
        assert again.wait_exit(120) == 1
    assert "already exists; pass --overwrite" in again.output
    with ServerProcess(_batch(tmp_path, "--output", str(tmp_path / "o2.parquet"), "--fail-fast"),
                       program="pyserving") as failing:
        assert failing.wait_exit(120) == 1
    assert "row 42 (id 'k42')" in failing.output


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_server_mode_gives_the_local_result(setup, scheme):
    if importlib.util.find_spec("pyserving.batch.remote") is None:
        pytest.skip("pyserving.batch.remote (--server) is not in this tree")
    tmp_path, x = setup
    server, grpc_port, rest_port = start_model_server(
        [f"--model_base_path={tmp_path / 'affine'}", "--model_name=affine"])
    try:
        url = f"grpc://127.0.0.1:{grpc_port}" if scheme == "grpc" else f"http://127.0.0.1:{rest_port}"
        out = tmp_path / f"{scheme}.parquet"
        assert cli.main(["batch", "affine", "--input", str(tmp_path / "in.parquet"), "--output", str(out),
                         "--server", url, "--version", "2", "--batch-size", "64"]) == 0
    finally:
        server.stop()
    keep = [i for i in range(500) if i != 42]
    result = read_output(out)
    assert result["id"] == [f"k{i}" for i in keep]
    np.testing.assert_allclose(np.array(result["y"], np.float32), affine(x[keep], 2.0)[0], rtol=1e-6)
    assert [e["row"] for e in read_errors(out)] == [42]
