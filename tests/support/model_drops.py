"""Writing model versions the way deploy tools do, and reading the server's lifecycle log.

Versions that say which version they are, so an answer tells which version served it:

* :func:`stage_tf_version` — TF1 ``half_plus_two`` with ``a = 0`` and ``b = version`` (any
  ``x`` gives ``y = version``), written completely *outside* the watched folder, ready to be
  renamed in (an atomic drop);
* :func:`write_python_version` — a ``python``-platform model answering ``y = version * x``;
  with ``delay_s`` each request sleeps first, and a request that runs after the version
  was unloaded (``close()``) fails, so an unload under in-flight requests cannot go unseen.

:func:`start_slow_copy` copies a version *in place*, file by file and chunk by chunk, in a
child process (independent of the test's threads), ``saved_model.pb`` first and the
variables last, so a version loaded before the copy ended would fail to load; it prints the
``time.monotonic()`` reading taken just before its last write.

:func:`lifecycle` reads the server's per-version state lines
(``{name: m version: 7} AVAILABLE after 0.42 s load``) into the state sequence of one
version; :func:`write_config` replaces a model config file atomically.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from tests.support.saved_models import write_half_plus_two_tf1

__all__ = ["stage_tf_version", "write_python_version", "start_slow_copy", "lifecycle", "lifecycle_lines",
           "write_config"]

_PYTHON_MODEL = '''
import time

import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

DELAY_S = {delay_s!r}


class Scaler:
    """y = version * x; a request that runs after close() (the unload) fails."""

    def __init__(self, factor):
        self.factor = factor
        self.closed = False
        spec = TensorSpec(DType.FLOAT, (None,))
        self.signatures = {{"serving_default": SignatureSpec({{"x": spec}}, {{"y": spec}})}}

    def run(self, signature_name, inputs, output_filter=()):
        if DELAY_S:
            time.sleep(DELAY_S)
        if self.closed:
            raise RuntimeError(f"version {{self.factor:g}} ran a request after it was unloaded")
        return {{"y": (inputs["x"] * self.factor).astype(np.float32)}}

    def close(self):
        self.closed = True


def create_servable(version_dir):
    return Scaler(float(version_dir.name))
'''


def stage_tf_version(staging: Path, name: str, version: int) -> Path:
    """A complete TF version ``version`` of ``name`` under ``staging`` (not watched)."""
    path = staging / f"{name}-{version}"
    write_half_plus_two_tf1(path, a=0.0, b=float(version), any_shape_x=True)
    return path


def write_python_version(path: Path, delay_s: float = 0.0) -> Path:
    """A python-platform version directory at ``path`` (its name is the version)."""
    path.mkdir(parents=True)
    (path / "model.py").write_text(_PYTHON_MODEL.format(delay_s=delay_s))
    return path


_SLOW_COPY = textwrap.dedent('''
    import os, sys, time
    source, target, pause_s, chunk = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    order = ["saved_model.pb", "assets/notes.txt", "variables/variables.index",
             "variables/variables.data-00000-of-00001"]
    writes = []
    for rel in order:
        data = open(os.path.join(source, rel), "rb").read()
        writes += [(rel, data[i:i + chunk]) for i in range(0, max(len(data), 1), chunk)]
    os.makedirs(target)
    for index, (rel, piece) in enumerate(writes):
        os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
        if index == len(writes) - 1:
            print(time.monotonic(), flush=True)  # the version is incomplete until after this
        with open(os.path.join(target, rel), "ab") as out:
            out.write(piece)
        time.sleep(pause_s)
''')


def start_slow_copy(source: Path, target: Path, pause_s: float = 0.04, chunk: int = 2048) -> subprocess.Popen[str]:
    """Copy the TF version ``source`` to ``target`` slowly (see module docs).

    ``source`` gets an ``assets/notes.txt`` of 16 KiB first, so the copy makes about 16
    writes ``pause_s`` apart (well below the server's 0.2 s quiet period, so the copy never
    looks finished before it is). Read the last-write time from the child's stdout.
    """
    (source / "assets").mkdir(exist_ok=True)
    (source / "assets" / "notes.txt").write_bytes(b"copied slowly\n" * 1170)
    return subprocess.Popen([sys.executable, "-c", _SLOW_COPY, str(source), str(target), str(pause_s), str(chunk)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


_LINE = re.compile(r"\{name: (?P<name>\S+) version: (?P<version>\d+)\} "
                   r"(?P<state>START|LOADING|AVAILABLE|UNLOADING|END)\b(?P<rest>.*)$")


def lifecycle_lines(output: str, name: str) -> list[tuple[int, str, str]]:
    """(version, state, rest of the line) of every lifecycle line of model ``name``, in order."""
    found = []
    for line in output.splitlines():
        match = _LINE.search(line)
        if match and match["name"] == name:
            found.append((int(match["version"]), match["state"], match["rest"]))
    return found


def lifecycle(output: str, name: str, version: int) -> list[str]:
    """The states the server logged for one version, in order; END after a failed load is
    ``"END!"``."""
    return [state + ("!" if state == "END" and "failed" in rest else "")
            for v, state, rest in lifecycle_lines(output, name) if v == version]


def write_config(path: Path, models: Sequence[tuple[str, Path, str, str]]) -> None:
    """Replace the model config file atomically; each model is (name, base path, platform,
    version policy text such as ``"all {}"``, or ``""`` for the default)."""
    entries = "".join(
        f"  config {{ name: '{name}' base_path: '{base}' model_platform: '{platform}'"
        + (f" model_version_policy {{ {policy} }}" if policy else "") + " }\n"
        for name, base, platform, policy in models
    )
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("model_config_list {\n" + entries + "}\n")
    os.replace(staging, path)
