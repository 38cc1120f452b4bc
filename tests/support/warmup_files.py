"""Warmup files and a model that counts its calls, for the warmup tests.

* :func:`write_warmup_file` writes ``<version_dir>/assets.extra/tf_serving_warmup_requests``
  with ``tf.io.TFRecordWriter``: each record a real ``PredictionLog`` (built by
  :func:`predict_log`, :func:`classify_log`, :func:`regress_log`,
  :func:`multi_inference_log`, :func:`session_run_log`, :func:`predict_streamed_log`) or raw
  bytes (an unparseable record);
* :func:`write_counting_model` writes a TF1 SavedModel whose every serving call adds one to a
  variable, and whose ``calls`` signature reads it: the number of model calls warmup made is
  observable after the load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "write_warmup_file",
    "predict_log",
    "classify_log",
    "regress_log",
    "multi_inference_log",
    "session_run_log",
    "predict_streamed_log",
    "write_counting_model",
]

_PREDICT = "tensorflow/serving/predict"
_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"


def write_warmup_file(version_dir: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Write the warmup file of ``version_dir``; ``records``: protos or raw ``bytes``."""
    import tensorflow as tf

    path = Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return path


def _log(**fields: Any) -> Any:
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.model_spec.name = "name-in-the-log-is-ignored"
    for name, request in fields.items():
        getattr(log, name).request.CopyFrom(request)
    return log


def predict_log(inputs: dict[str, Any], signature_name: str = "", output_filter: Sequence[str] = ()) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ignored"
    request.model_spec.version.value = 999  # a version that does not exist: ignored as well
    request.model_spec.signature_name = signature_name
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    request.output_filter.extend(output_filter)
    return _log(predict_log=request)


def _fill_examples(input_proto: Any, xs: Sequence[float]) -> None:
    for x in xs:
        input_proto.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def classify_log(xs: Sequence[float], signature_name: str) -> Any:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = signature_name
    _fill_examples(request.input, xs)
    return _log(classify_log=request)


def regress_log(xs: Sequence[float], signature_name: str) -> Any:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = signature_name
    _fill_examples(request.input, xs)
    return _log(regress_log=request)


def multi_inference_log(xs: Sequence[float], tasks: Sequence[tuple[str, str]]) -> Any:
    """``tasks``: (signature name, ``"classify"`` | ``"regress"``)."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature_name, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = "ignored"
        task.model_spec.signature_name = signature_name
        task.method_name = _CLASSIFY if method == "classify" else _REGRESS
    _fill_examples(request.input, xs)
    return _log(multi_inference_log=request)


def session_run_log() -> Any:
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.session_run_log.request.feed.add()
    return log


def predict_streamed_log() -> Any:
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.predict_streamed_log.request.add()
    return log


def write_counting_model(path: str | os.PathLike[str]) -> None:
    """A TF1 SavedModel that counts its calls in the int64 variable ``calls``.

    Signatures (every one but ``calls`` adds 1 to the counter per call):

    * ``serving_default`` (predict): ``x`` float ``[None]`` -> ``y`` = 2x;
    * ``classify`` (classify): ``inputs`` (serialized examples, float feature ``x``) ->
      ``scores`` ``[N, 1]`` = x;
    * ``regress`` (regress): ``inputs`` -> ``outputs`` ``[N, 1]`` = x;
    * ``calls`` (predict): ``unused`` float ``[None]`` -> ``count``, the calls so far.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        calls = v1.Variable(0, dtype=tf.int64, name="calls", trainable=False)
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        examples = v1.placeholder(tf.string, shape=[None], name="examples")
        unused = v1.placeholder(tf.float32, shape=[None], name="unused")
        x_examples = v1.io.parse_example(examples, {"x": v1.io.FixedLenFeature([1], tf.float32)})["x"]

        def counted(value: Any, name: str) -> Any:
            with tf.control_dependencies([v1.assign_add(calls, 1)]):
                return tf.identity(value, name=name)

        y = counted(2.0 * x, "y")
        scores = counted(x_examples, "scores")
        outputs = counted(x_examples, "outputs")
        count = tf.identity(calls.read_value() + 0 * tf.cast(tf.size(unused), tf.int64), name="count")

        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, _PREDICT),
            "classify": build({"inputs": info(examples)}, {"scores": info(scores)}, _CLASSIFY),
            "regress": build({"inputs": info(examples)}, {"outputs": info(outputs)}, _REGRESS),
            "calls": build({"unused": info(unused)}, {"count": info(count)}, _PREDICT),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(os.fspath(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
