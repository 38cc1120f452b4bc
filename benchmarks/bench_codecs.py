"""How fast are the wire codecs? Median microseconds per call, ours vs. the naive way.

REST (``pyserving.server.rest_json``), per request: parse the body against the signature
(``parse_json_body`` + ``request_signature_name`` + ``predict_inputs``) and encode the
response (``encode_predict_response``). The naive baseline is ``json.loads`` +
``np.array`` + ``tf.make_tensor_proto`` in, ``tf.make_ndarray`` + ``json.dumps(tolist())``
out (no TF float formatting, no strictness checks, so it is not even equivalent).
Cases: a 1-row tiny request (``{"instances": [1.0]}`` -> one float) and a 32x784 float
request answered with 32x10 floats; plus a 32x784 response, the worst case for our
TF-style float text, next to ``orjson`` (shortest repr, NaN as null) for scale.

gRPC (``pyserving.server.tensor_codec``): a 32x784 float32 tensor to / from
``TensorProto`` — typed ``float_val`` (TF Serving's default) and ``tensor_content`` —
against ``tf.make_tensor_proto`` / ``tf.make_ndarray``.

Usage::

    python benchmarks/bench_codecs.py [--rounds 7] [--min-time 0.2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec  # noqa: E402
from pyserving.server import rest_json, tensor_codec  # noqa: E402


def median_us(fn: Callable[[], Any], rounds: int, min_time: float) -> float:
    """Median over ``rounds`` of the mean time per call, each round lasting >= min_time."""
    fn()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start >= min_time / 4 or calls >= 1 << 20:
            break
        calls *= 4
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per round")
    args = parser.parse_args()

    import tensorflow as tf

    signature = SignatureSpec(inputs={"x": TensorSpec(DType.FLOAT)}, outputs={"y": TensorSpec(DType.FLOAT)})
    rng = np.random.default_rng(0)
    cases = {
        "tiny 1 row": (b'{"instances": [1.0]}', np.array([2.5], np.float32)),
        "32x784 -> 32x10": (
            json.dumps({"instances": rng.random((32, 784)).astype(np.float32).tolist()}).encode(),
            rng.random((32, 10)).astype(np.float32),
        ),
        "32x784 -> 32x784": (
            json.dumps({"instances": rng.random((32, 784)).astype(np.float32).tolist()}).encode(),
            rng.random((32, 784)).astype(np.float32),
        ),
    }

    def ours(body: bytes, output: np.ndarray) -> bytes:
        doc = rest_json.parse_json_body(body)
        rest_json.request_signature_name(doc)
        inputs, row = rest_json.predict_inputs(doc, signature)
        return rest_json.encode_predict_response({"y": output}, row, signature)

    def naive(body: bytes, output: np.ndarray) -> bytes:
        doc = json.loads(body)
        tf.make_tensor_proto(np.array(doc["instances"], dtype=np.float32))
        out = tf.make_ndarray(tf.make_tensor_proto(output))
        return json.dumps({"predictions": out.tolist()}).encode()

    rows = []
    for name, (body, output) in cases.items():
        doc = orjson.loads(body)
        inputs, _ = rest_json.predict_inputs(doc, signature)
        rows.append((f"REST {name}: parse+encode, ours", median_us(lambda: ours(body, output), args.rounds, args.min_time)))
        rows.append((f"REST {name}: parse+encode, naive", median_us(lambda: naive(body, output), args.rounds, args.min_time)))
        rows.append(("  parse only (orjson + checks)", median_us(
            lambda: rest_json.predict_inputs(rest_json.parse_json_body(body), signature), args.rounds, args.min_time)))
        rows.append(("  encode only, TF float text", median_us(
            lambda: rest_json.encode_predict_response({"y": output}, True, signature), args.rounds, args.min_time)))
        rows.append(("  encode only, orjson numpy (not TF text)", median_us(
            lambda: orjson.dumps({"predictions": output}, option=orjson.OPT_SERIALIZE_NUMPY), args.rounds, args.min_time)))

    tensor = rng.random((32, 784)).astype(np.float32)
    typed = tensor_codec.from_numpy(tensor)
    packed = tensor_codec.from_numpy(tensor, as_tensor_content=True)
    rows += [
        ("gRPC 32x784 from_numpy typed float_val", median_us(lambda: tensor_codec.from_numpy(tensor), args.rounds, args.min_time)),
        ("gRPC 32x784 from_numpy tensor_content", median_us(
            lambda: tensor_codec.from_numpy(tensor, as_tensor_content=True), args.rounds, args.min_time)),
        ("gRPC 32x784 tf.make_tensor_proto (content)", median_us(lambda: tf.make_tensor_proto(tensor), args.rounds, args.min_time)),
        ("gRPC 32x784 to_numpy typed float_val", median_us(lambda: tensor_codec.to_numpy(typed), args.rounds, args.min_time)),
        ("gRPC 32x784 to_numpy tensor_content", median_us(lambda: tensor_codec.to_numpy(packed), args.rounds, args.min_time)),
        ("gRPC 32x784 tf.make_ndarray typed", median_us(lambda: tf.make_ndarray(typed), args.rounds, args.min_time)),
        ("gRPC 32x784 tf.make_ndarray content", median_us(lambda: tf.make_ndarray(packed), args.rounds, args.min_time)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'case'.ljust(width)}  median us/call")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value:12.1f}")


if __name__ == "__main__":
    main()
