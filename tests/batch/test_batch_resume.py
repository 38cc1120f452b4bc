"""Interrupted jobs continue with resume, without duplicate or lost rows: Ctrl-C in-process, and
the CLI killed (SIGKILL) or interrupted (SIGINT) midway; resume with other options is refused."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from pyserving.batch import BatchOptions, open_local_model, run
from pyserving.servable.errors import AlreadyExistsError, FailedPreconditionError
from tests.batch.batch_support import (
    InterruptingModel,
    affine,
    manifest_chunks,
    read_errors,
    read_output,
    rows,
    write_affine_model,
    write_parquet,
)
from tests.support.polling import wait_for
from tests.support.server_process import ServerProcess

N = 1000


@pytest.fixture()
def job(tmp_path):
    write_affine_model(tmp_path / "affine" / "1")
    x = rows(N)
    x[[5, 300, 900], 1] = np.nan  # bad rows in a chunk before and after the interruption
    write_parquet(tmp_path / "in.parquet", x, ids=[f"k{i}" for i in range(N)], row_group_size=128)
    return tmp_path, x


def _options(tmp_path, output, **kw):
    kw.setdefault("batch_size", 16)
    kw.setdefault("chunk_rows", 64)
    return BatchOptions(str(tmp_path / "affine"), input=str(tmp_path / "in.parquet"), output=str(output),
                        progress=False, **kw)


def _check_complete(output, x):
    out = read_output(output)
    good = [i for i in range(N) if i not in (5, 300, 900)]
    assert out["id"] == [f"k{i}" for i in good]  # each id once, in input order
    np.testing.assert_allclose(np.array(out["y"], np.float32), affine(x[good])[0], rtol=1e-6)
    assert [e["row"] for e in read_errors(output)] == [5, 300, 900]


@pytest.mark.parametrize("output", ["out.parquet", "out.jsonl", "out_dir/"])
def test_ctrl_c_stops_after_a_chunk_and_resume_finishes(job, output):
    tmp_path, x = job
    out = tmp_path / output
    with open_local_model(str(tmp_path / "affine")) as model:
        summary = run(_options(tmp_path, out), model=InterruptingModel(model, after=40))  # in chunk 10
    assert summary.interrupted and 1 <= summary.chunks_written < 16
    assert summary.rows_written + summary.rows_failed == summary.chunks_written * 64
    assert manifest_chunks(out) == summary.chunks_written
    if output.endswith("/"):
        assert not json.loads((out / "_manifest.json").read_text())["complete"]
    else:
        assert not out.exists()
    with pytest.raises(FailedPreconditionError, match="pass --resume to continue it, or --overwrite"):
        run(_options(tmp_path, out))
    resumed = run(_options(tmp_path, out, resume=True, batch_size=7))  # the batch size may change
    assert resumed.rows_resumed == summary.chunks_written * 64 and not resumed.interrupted
    assert resumed.rows_read == N - resumed.rows_resumed
    _check_complete(out, x)
    again = run(_options(tmp_path, out, resume=True))  # nothing left to do
    assert again.rows_read == 0
    _check_complete(out, x)
    with pytest.raises(AlreadyExistsError, match="--overwrite"):
        run(_options(tmp_path, out))
    run(_options(tmp_path, out, overwrite=True))
    _check_complete(out, x)


def test_resume_with_other_options_is_refused_naming_them(job):
    tmp_path, _x = job
    out = tmp_path / "out.parquet"
    with open_local_model(str(tmp_path / "affine")) as model:
        assert run(_options(tmp_path, out), model=InterruptingModel(model, after=10)).interrupted
    with pytest.raises(FailedPreconditionError, match=r"other options \(id_column: 'id' -> 'x'\)"):
        run(_options(tmp_path, out, resume=True, id_column="x"))
    with pytest.raises(FailedPreconditionError, match="chunk_rows: 64 -> 32"):
        run(_options(tmp_path, out, resume=True, chunk_rows=32))
    write_affine_model(tmp_path / "affine" / "2")  # a new latest version
    with pytest.raises(FailedPreconditionError, match="affine version: 1}. -> .{name: affine version: 2"):
        run(_options(tmp_path, out, resume=True))
    run(_options(tmp_path, out, resume=True, version=1))


def test_leftover_parts_after_the_manifest_are_removed_on_resume(job):
    """A crash between a part's rename and the manifest update leaves a part the manifest does
    not name: resume removes it and writes the chunk again (no duplicate rows)."""
    tmp_path, x = job
    out = tmp_path / "out"
    with open_local_model(str(tmp_path / "affine")) as model:
        first = run(_options(tmp_path, out), model=InterruptingModel(model, after=20))
    done = first.chunks_written
    (out / f"part-{done:05d}.parquet").write_bytes((out / "part-00000.parquet").read_bytes())
    (out / f".part-{done + 1:05d}.parquet.tmp").write_bytes(b"half written")
    with open(tmp_path / "out.errors.jsonl", "ab") as errors:
        errors.write(b'{"row": 999999, "reason": "written after the manifest"}\n')
    run(_options(tmp_path, out, resume=True))
    _check_complete(out, x)


def _args(tmp_path, *extra):
    return ["batch", str(tmp_path / "affine"), "--input", str(tmp_path / "in.parquet"), "--output",
            str(tmp_path / "out.parquet"), "--batch-size", "16", "--chunk-rows", "64", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_cli_killed_midway_then_resumed(job, how):
    tmp_path, x = job
    gate = tmp_path / "gate"
    gate.mkdir()
    with ServerProcess(_args(tmp_path), program="pyserving", env={"BATCH_TEST_GATE": f"40:{gate}"}) as proc:
        wait_for(lambda: (gate / "blocked").exists() and manifest_chunks(tmp_path / "out.parquet") >= 1,
                 "the job to block in model call 40 with a chunk written", timeout_s=60)
        if how == "SIGKILL":
            proc.proc.kill()
            proc.wait_exit(30)
        else:
            proc.proc.send_signal(signal.SIGINT)
            assert proc.wait_for_output("Stopping after the chunk being scored", 30), proc.output
            (gate / "release").touch()
            assert proc.wait_exit(60) == 130, proc.output
            assert "rerun the same command with --resume" in proc.output
    assert not (tmp_path / "out.parquet").exists()
    chunks = manifest_chunks(tmp_path / "out.parquet")
    # SIGINT: the chunk of call 40 is finished, no other: chunk 0 takes 20 calls (row 5 fails its batch,
    # which is retried row by row), chunks 1-3 take 4, chunk 4 (row 300) takes calls 33-52.
    assert chunks == 5 if how == "SIGINT" else chunks >= 1
    with ServerProcess(_args(tmp_path, "--resume"), program="pyserving") as done:
        assert done.wait_exit(120) == 0, done.output
        assert f"continuing after {chunks * 64:,} rows" in done.output
    _check_complete(tmp_path / "out.parquet", x)


def test_csv_malformed_lines_are_reported_once_across_a_resume(tmp_path):
    from tests.batch.batch_support import write_csv

    write_affine_model(tmp_path / "affine" / "1")
    x = rows(400)
    source = write_csv(tmp_path / "in.csv", x, ids=range(400))
    lines = source.read_text().splitlines()
    lines.insert(300, "bad,line,with,fields")  # in a chunk after the interruption
    lines.insert(3, "1,2,3")  # in the first chunk
    source.write_text("\n".join(lines) + "\n")
    options = dict(input=str(source), output=str(tmp_path / "out.parquet"), batch_size=16, chunk_rows=64,
                   progress=False)
    with open_local_model(str(tmp_path / "affine")) as model:
        first = run(BatchOptions(str(tmp_path / "affine"), **options), model=InterruptingModel(model, after=12))
    assert first.interrupted and first.chunks_written < 7
    run(BatchOptions(str(tmp_path / "affine"), resume=True, **options))
    errors = read_errors(tmp_path / "out.parquet")
    assert sorted(e["line"] for e in errors) == [4, 302]
    assert read_output(tmp_path / "out.parquet")["id"] == list(range(400))
