"""``import pyserving`` (and the CLI module) stays free of the batch extra's dependencies;
``pyserving.batch``'s public names import without pyarrow."""

from __future__ import annotations

import subprocess
import sys

import pyserving.batch

HEAVY = ("pyarrow", "tqdm", "ray", "tensorflow", "grpc")


def _modules_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return eval(out)


def test_import_pyserving_and_the_cli_load_no_batch_dependency():
    assert _modules_after("import pyserving, pyserving.cli") == []


def test_the_batch_package_imports_without_pyarrow():
    assert _modules_after("from pyserving.batch import BatchOptions, BatchSummary, open_local_model, run") == []


def test_public_names():
    assert {"BatchOptions", "BatchSummary", "BatchModel", "run", "open_local_model"} <= set(pyserving.batch.__all__)
    assert all(hasattr(pyserving.batch, name) for name in pyserving.batch.__all__)
