"""Helpers for the batch tests: a Python-platform model, datasets, and reading outputs back.

The Python model (``write_affine_model``) is ``y = x @ (scale * W)``, ``total = sum(y)``
for ``x`` float32 ``[None, 3]``; a row holding NaN makes the model raise ValueError (a bad
row only the model can see). Its ``run`` honours one environment variable for the
subprocess tests:

* ``BATCH_TEST_GATE=N:DIR``: call N writes ``DIR/blocked`` and waits (bounded, 120 s)
  until ``DIR/release`` exists, so a test can stop the process at a known point.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)

MODEL_PY = '''
import os
import threading
import time

import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32) * {scale}


class Affine:
    preferred_batch_size = {preferred}

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()
        self.signatures = {{"serving_default": SignatureSpec(
            inputs={{"x": TensorSpec(DType.FLOAT, (None, 3))}},
            outputs={{"y": TensorSpec(DType.FLOAT, (None, 2)), "total": TensorSpec(DType.FLOAT, (None,))}})}}

    def run(self, name, inputs, output_filter=()):
        with self._lock:
            self.calls += 1
            calls = self.calls
        gate = os.environ.get("BATCH_TEST_GATE")
        if gate and calls == int(gate.split(":", 1)[0]):
            folder = gate.split(":", 1)[1]
            open(os.path.join(folder, "blocked"), "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(folder, "release")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test never released the model")
                time.sleep(0.01)  # a bounded wait for another process's file
        x = inputs["x"]
        if np.isnan(x).any():
            raise ValueError("x holds NaN")
        y = x @ W
        return {{"y": y, "total": y.sum(axis=1)}}


def create_servable(version_dir):
    return Affine()
'''


def write_affine_model(version_dir: Path, scale: float = 1.0, preferred: int | None = None) -> Path:
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(MODEL_PY.format(scale=scale, preferred=preferred))
    return version_dir


def affine(x: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    y = x.astype(np.float32) @ (W * np.float32(scale))
    return y, y.sum(axis=1)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3)).astype(np.float32)


def write_parquet(path: Path, x: np.ndarray | Sequence[Any], ids: Sequence[Any] | None = None,
                  row_group_size: int | None = None, fixed: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(x, np.ndarray) and fixed:
        column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    else:
        column = pa.array([None if r is None else list(map(float, r)) for r in x], pa.list_(pa.float32()))
    data = {"x": column}
    if ids is not None:
        data = {"id": pa.array(list(ids)), **data}
    pq.write_table(pa.table(data), path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, x: Sequence[Any], ids: Sequence[Any] | None = None) -> Path:
    with open(path, "w") as file:
        for i, row in enumerate(x):
            record = {"x": row.tolist() if isinstance(row, np.ndarray) else row}
            if ids is not None:
                record = {"id": ids[i], **record}
            file.write(json.dumps(record) + "\n")
    return path


def write_csv(path: Path, x: Sequence[Any], ids: Sequence[Any] | None = None) -> Path:
    with open(path, "w") as file:
        file.write("id,x\n" if ids is not None else "x\n")
        for i, row in enumerate(x):
            cell = json.dumps(row.tolist() if isinstance(row, np.ndarray) else row)
            file.write((f"{ids[i]}," if ids is not None else "") + f'"{cell}"\n')
    return path


def read_output(path: str | Path) -> dict[str, list[Any]]:
    """The output as columns of Python values (Parquet file or folder, or JSON Lines file or folder)."""
    import pyarrow.parquet as pq

    path = Path(path)
    jsonl = path.suffix in (".jsonl", ".json") or (path.is_dir() and any(path.glob("part-*.jsonl")))
    if not jsonl:
        return pq.read_table(path).to_pydict()
    files = sorted(path.glob("part-*.jsonl")) if path.is_dir() else [path]
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    keys = list(records[0]) if records else []
    return {k: [r[k] for r in records] for k in keys}


def read_errors(path: str | Path) -> list[dict[str, Any]]:
    path = Path(str(path) + ".errors.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def manifest_chunks(output: Path) -> int:
    """Chunks the manifest of a file output's staging folder (or a folder output) records; 0 if none."""
    for candidate in (output.with_name(f".{output.name}.parts") / "manifest.json", output / "_manifest.json"):
        try:
            return len(json.loads(candidate.read_text())["chunks"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


class InterruptingModel:
    """A BatchModel wrapper whose call number ``after`` presses Ctrl-C: it sends this process
    SIGINT and, before answering, waits (bounded) until the job logged that it is stopping —
    so the test knows the job stops after the chunk of that call."""

    def __init__(self, inner: Any, after: int) -> None:
        self._inner, self._after, self._calls = inner, after, 0
        self._lock = threading.Lock()
        for name in ("description", "signature_name", "signature", "method", "preferred_batch_size"):
            setattr(self, name, getattr(inner, name))

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self._calls += 1
            press = self._calls == self._after
        if press:
            seen = threading.Event()

            class Watch(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    if "Stopping after the chunk" in record.getMessage():
                        seen.set()

            logger = logging.getLogger("pyserving.batch")
            handler = Watch()
            logger.addHandler(handler)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                assert seen.wait(30), "the job did not acknowledge Ctrl-C"
            finally:
                logger.removeHandler(handler)
        return self._inner.score(inputs)

    def score_examples(self, serialized: Sequence[bytes]) -> dict[str, np.ndarray]:
        return self._inner.score_examples(serialized)

    def close(self) -> None:
        self._inner.close()


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", PYSERVING_LOG_LEVEL="INFO")
    env.update(extra)
    return env
