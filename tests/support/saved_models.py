"""SavedModel generators for tests, benchmarks and the bundled demo model.

Each ``write_*`` function writes one complete SavedModel into ``path`` (a version
directory such as ``.../my_model/1``), which must not exist yet or be empty. TensorFlow is
imported inside the functions, so importing this module is cheap. Generating a model takes
well under a second or two once TensorFlow is imported.

Models written here:

* :func:`write_half_plus_two_tf1` — a TF1 graph SavedModel modelled on TF Serving's
  ``saved_model_half_plus_two_cpu`` test model: ``y = a*x + b`` with five signatures
  (predict, classify, three regress).
* :func:`write_tf2_model` — a ``tf.Module`` with resource variables: ``x[None, 3]`` ->
  ``y[None, 2]``, ``total[None]``.
* :func:`write_string_model` — string input ``text[None]`` -> string ``shout`` (upper case
  plus a suffix held in a string variable) and int32 ``length``.
* :func:`write_multi_io_model` — float32 ``a[None, 2]`` and int64 ``b[None]`` -> float32
  ``sum[None]`` and int64 ``b_times_two[None]``.
* :func:`write_mlp_model` — a 784-512-512-10 MLP with random weights (benchmarks).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = [
    "write_half_plus_two_tf1",
    "write_tf2_model",
    "write_string_model",
    "write_multi_io_model",
    "write_mlp_model",
    "STRING_SUFFIX",
]

#: What the string model appends to every upper-cased input.
STRING_SUFFIX = b"!"

_PREDICT = "tensorflow/serving/predict"
_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"


def _tf() -> Any:
    import tensorflow as tf

    return tf


def write_half_plus_two_tf1(
    path: str | os.PathLike[str],
    a: float = 0.5,
    b: float = 2.0,
    *,
    c: float = 3.0,
    as_text: bool = False,
    any_shape_x: bool = False,
) -> None:
    """Write TF Serving's half_plus_two as a TF1 graph SavedModel (tag ``serve``).

    The graph parses serialized ``tf.Example`` strings (placeholder ``tf_example:0``, float
    features ``x`` and optional ``x2``) and computes ``y = a*x + b``, ``y2 = a*x + c`` and
    ``y3 = a*x2 + c`` from variables ``a``, ``b`` and ``c``. Signatures:

    * ``serving_default`` (predict): ``x`` (DT_FLOAT ``[-1, 1]``, tensor ``x:0``) -> ``y``;
    * ``classify_x_to_y`` (classify): ``inputs`` (examples) -> ``scores`` = y;
    * ``regress_x_to_y`` / ``regress_x_to_y2`` (regress): ``inputs`` -> ``outputs`` = y / y2;
    * ``regress_x2_to_y3`` (regress): ``inputs`` = the float tensor ``x2`` -> ``outputs`` = y3.

    ``as_text`` writes ``saved_model.pbtxt`` instead of ``saved_model.pb``.

    ``any_shape_x`` makes ``serving_default``'s ``x`` a placeholder of unknown rank (the
    bundled demo model): TF Serving's own half_plus_two is fed ``[1.0, 2.0, 5.0]`` and
    ``[[1.0, 2.0], [3.0, 4.0]]`` in its documentation, which only a shape-free input accepts
    once inputs are validated against the signature.
    """
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        var_a = v1.Variable(a, dtype=tf.float32, name="a")
        var_b = v1.Variable(b, dtype=tf.float32, name="b")
        var_c = v1.Variable(c, dtype=tf.float32, name="c")
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = v1.io.parse_example(
            examples,
            {
                "x": v1.io.FixedLenFeature([1], tf.float32),
                "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        if any_shape_x:
            x_examples = tf.identity(features["x"], name="x_from_examples")
            y_examples = tf.identity(var_a * x_examples + var_b, name="y_from_examples")
            x = v1.placeholder(tf.float32, shape=None, name="x")
            y = tf.identity(var_a * x + var_b, name="y")
        else:
            x = x_examples = tf.identity(features["x"], name="x")
            y = y_examples = tf.identity(var_a * x + var_b, name="y")
        y2 = tf.identity(var_a * x_examples + var_c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        y3 = tf.identity(var_a * x2 + var_c, name="y3")

        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, _PREDICT),
            "classify_x_to_y": build({"inputs": info(examples)}, {"scores": info(y_examples)}, _CLASSIFY),
            "regress_x_to_y": build({"inputs": info(examples)}, {"outputs": info(y_examples)}, _REGRESS),
            "regress_x_to_y2": build({"inputs": info(examples)}, {"outputs": info(y2)}, _REGRESS),
            "regress_x2_to_y3": build({"inputs": info(x2)}, {"outputs": info(y3)}, _REGRESS),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(os.fspath(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save(as_text=as_text)


def write_tf2_model(path: str | os.PathLike[str]) -> None:
    """A TF2 ``tf.Module`` with two resource variables.

    ``serving_default``: ``x`` float32 ``[None, 3]`` -> ``y = x @ W + bias`` float32
    ``[None, 2]`` and ``total = sum(y, axis=1)`` float32 ``[None]``, where
    ``W = [[1, 2], [3, 4], [5, 6]]`` and ``bias = [0.5, -0.5]``.
    """
    tf = _tf()

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], name="w")
            self.bias = tf.Variable([0.5, -0.5], name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            y = tf.matmul(x, self.w) + self.bias
            return {"y": y, "total": tf.reduce_sum(y, axis=1)}

    module = Affine()
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})


def write_string_model(path: str | os.PathLike[str]) -> None:
    """A TF2 model on strings: ``text`` string ``[None]`` -> ``shout`` and ``length``.

    ``shout`` = upper-cased text followed by :data:`STRING_SUFFIX` (held in a string
    variable); ``length`` = int32 byte length of the input.
    """
    tf = _tf()

    class Shout(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.suffix = tf.Variable(STRING_SUFFIX, dtype=tf.string, name="suffix")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> dict[str, Any]:
            return {
                "shout": tf.strings.join([tf.strings.upper(text), self.suffix]),
                "length": tf.strings.length(text),
            }

    module = Shout()
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})


def write_multi_io_model(path: str | os.PathLike[str]) -> None:
    """Two inputs of different dtypes, two outputs.

    ``serving_default``: ``a`` float32 ``[None, 2]``, ``b`` int64 ``[None]`` ->
    ``sum`` float32 ``[None]`` = ``a[:, 0] + a[:, 1] + b`` and ``b_times_two`` int64 ``[None]``.
    """
    tf = _tf()

    class MultiIO(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int64, name="b"),
            ]
        )
        def serve(self, a: Any, b: Any) -> dict[str, Any]:
            return {
                "sum": tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32),
                "b_times_two": b * 2,
            }

    module = MultiIO()
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})


def write_mlp_model(path: str | os.PathLike[str], seed: int = 0) -> None:
    """A 784-512-512-10 ReLU MLP with random (seeded) weights.

    ``serving_default``: ``x`` float32 ``[None, 784]`` -> ``probabilities`` float32
    ``[None, 10]`` (softmax).
    """
    tf = _tf()
    rng = np.random.default_rng(seed)
    sizes = [784, 512, 512, 10]
    layers = [
        (
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            np.zeros(n_out, np.float32),
        )
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]

    class MLP(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = [tf.Variable(w, name=f"w{i}") for i, (w, _b) in enumerate(layers)]
            self.biases = [tf.Variable(b, name=f"b{i}") for i, (_w, b) in enumerate(layers)]

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            h = x
            last = len(self.weights) - 1
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = tf.matmul(h, w) + b
                if i < last:
                    h = tf.nn.relu(h)
            return {"probabilities": tf.nn.softmax(h)}

    module = MLP()
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})
