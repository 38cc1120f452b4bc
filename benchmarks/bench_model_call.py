"""How much does one model call cost: signature function vs. session callable?

One Python thread calls a SavedModel directly (no server) and the median of several timed
rounds is reported for:

* ``signature fn``       — ``tf.saved_model.load(d).signatures["serving_default"](x=array)``;
* ``make_callable``      — ``Session.make_callable(fetches, feed_list)`` (TF 2.x implements
  it as a plain ``Session.run`` with a feed dict);
* ``session callable``   — ``Session._make_callable_from_options`` (a compiled callable);
* ``servable/function``  — ``SavedModelServable.run`` on the function runner;
* ``servable/session``   — ``SavedModelServable.run`` on the session runner (the default),
  i.e. the compiled callable plus pyserving's input validation.

Models: the tiny half_plus_two (TF1 graph, ``y = 0.5x + 2``, one float per row) and a
784-512-512-10 MLP (TF2), at batch 1 and 32. Usage::

    python benchmarks/bench_model_call.py [--rounds 7] [--calls 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pyserving.loaders.saved_model import SavedModelOptions, SavedModelServable  # noqa: E402
from tests.support.saved_models import write_half_plus_two_tf1, write_mlp_model  # noqa: E402


def median_us(calls_by_name: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, float]:
    """Per variant: median over ``rounds`` of the mean time per call, in microseconds.

    Rounds are interleaved (every variant once per round), so background load on a shared
    machine hits all variants alike.
    """
    times: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for call in calls_by_name.values():
        for _ in range(min(200, calls)):
            call()
    for _ in range(rounds):
        for name, call in calls_by_name.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def variants(tf: Any, path: Path, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    from tensorflow.core.protobuf import config_pb2

    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures["serving_default"]
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
    sig = meta_graph.signature_def["serving_default"]
    feed = sig.inputs["x"].name
    fetch = next(iter(sig.outputs.values())).name
    public = session.make_callable([fetch], [feed])
    compiled = session._make_callable_from_options(config_pb2.CallableOptions(feed=[feed], fetch=[fetch]))
    by_function = SavedModelServable.load(path, SavedModelOptions(execution="function"))
    by_session = SavedModelServable.load(path, SavedModelOptions(execution="session"))
    inputs = {"x": x}
    return {
        "signature fn": lambda: function(x=x),
        "make_callable": lambda: public(x),
        "session callable": lambda: compiled(x),
        "servable/function": lambda: by_function.run("serving_default", inputs),
        "servable/session": lambda: by_session.run("serving_default", inputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="signature function vs session callable")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tiny, mlp = Path(scratch, "tiny", "1"), Path(scratch, "mlp", "1")
        write_half_plus_two_tf1(tiny)
        write_mlp_model(mlp)
        rng = np.random.default_rng(0)
        for model, path, width in (("tiny", tiny, 1), ("mlp", mlp, 784)):
            for batch in (1, 32):
                x = rng.standard_normal((batch, width)).astype(np.float32)
                for name, us in median_us(variants(tf, path, x), args.rounds, args.calls).items():
                    rows.append((model, batch, name, us))
                    print(f"  {model:4} b{batch:<2} {name:18} {us:8.1f} us", file=sys.stderr)

    print(f"\nTensorFlow {tf.__version__}; median of {args.rounds} rounds x {args.calls} calls; one thread\n")
    print("| model | batch | call | us/call | calls/s | rows/s |")
    print("|---|---:|---|---:|---:|---:|")
    for model, batch, name, us in rows:
        print(f"| {model} | {batch} | {name} | {us:.1f} | {1e6 / us:,.0f} | {batch * 1e6 / us:,.0f} |")


if __name__ == "__main__":
    main()
