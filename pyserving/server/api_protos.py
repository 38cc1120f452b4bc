"""Building TF Serving's response protos from data-plane results, shared by gRPC and REST.

REST answers status and metadata with the JSON form of the very protos gRPC returns
(``json_format``), so both transports describe a model identically; request logging
records REST requests as the gRPC request protos built here. Protos come from
``tensorflow-serving-api`` and are imported lazily.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pyserving.servable.errors import Code
from pyserving.servable.ids import ServableId
from pyserving.servable.state import ServableState

__all__ = [
    "model_spec_proto",
    "status_response",
    "metadata_response",
    "spec_from_proto",
    "fill_spec",
    "fill_classification",
    "fill_regression",
    "predict_request",
    "predict_response",
    "classification_request",
    "classification_response",
    "regression_request",
    "regression_response",
]


def model_spec_proto(servable_id: ServableId, signature_name: str | None = None) -> Any:
    """The response ``ModelSpec``: the name and the version that actually served the request."""
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=servable_id.name)
    spec.version.value = servable_id.version
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def spec_from_proto(proto: Any) -> Any:
    """A data-plane ``ModelSpec`` from a request's ``ModelSpec`` proto."""
    from pyserving.server.data_plane import ModelSpec

    choice = proto.WhichOneof("version_choice")
    return ModelSpec(
        name=proto.name,
        version=proto.version.value if choice == "version" else None,
        version_label=proto.version_label if choice == "version_label" else None,
        signature_name=proto.signature_name,
    )


def status_response(states: Sequence[ServableState]) -> Any:
    """``GetModelStatusResponse`` listing ``states`` in the given order."""
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for state in states:
        entry = response.model_version_status.add()
        entry.version = state.id.version
        entry.state = int(state.manager_state)
        entry.status.error_code = int(state.health.code) if state.health is not None else int(Code.OK)
        entry.status.error_message = state.health.message if state.health is not None else ""
    return response


def metadata_response(servable_id: ServableId, signature_def_map: Any) -> Any:
    """``GetModelMetadataResponse`` with ``metadata["signature_def"]`` = a SignatureDefMap."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.CopyFrom(model_spec_proto(servable_id))
    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, value in signature_def_map.items():
        defs.signature_def[key].CopyFrom(value)
    response.metadata["signature_def"].Pack(defs)
    return response


# -- predict / classify / regress ------------------------------------------------------------


def fill_spec(target: Any, result: Any) -> None:
    """The response ModelSpec: the name and version that served, and the resolved signature."""
    target.name = result.id.name
    target.version.value = result.id.version
    target.signature_name = result.signature_name


def fill_classification(target: Any, classification: Any) -> None:
    """``ClassificationResult`` from the data plane's validated [batch, k] classes and/or scores."""
    import numpy as np

    classes, scores = classification.classes, classification.scores
    num_examples, num_classes = (classes if classes is not None else scores).shape
    labels = classes.tolist() if classes is not None else None
    values = scores.astype(np.float32).tolist() if scores is not None else None
    for i in range(num_examples):
        classes_out = target.classifications.add().classes
        for j in range(num_classes):
            entry = classes_out.add()
            if labels is not None:
                label = labels[i][j]
                # Labels are proto strings; undecodable bytes stay visible, never crash.
                entry.label = label.decode("utf-8", "backslashreplace") if isinstance(label, bytes) else str(label)
            if values is not None:
                entry.score = values[i][j]


def fill_regression(target: Any, regression: Any) -> None:
    """``RegressionResult`` from the data plane's validated [batch] float values."""
    import numpy as np

    regressions = target.regressions
    for value in regression.values.astype(np.float32).tolist():
        regressions.add().value = value


def _request_spec(target: Any, spec: Any) -> None:
    target.name = spec.name
    if spec.version is not None:
        target.version.value = spec.version
    elif spec.version_label:
        target.version_label = spec.version_label
    if spec.signature_name:
        target.signature_name = spec.signature_name


def predict_request(spec: Any, inputs: Mapping[str, Any], output_filter: Sequence[str] = ()) -> Any:
    """The ``PredictRequest`` equivalent to a (REST) predict of ``inputs`` (numpy arrays)."""
    from tensorflow_serving.apis import predict_pb2

    from pyserving.server.tensor_codec import from_numpy

    request = predict_pb2.PredictRequest()
    _request_spec(request.model_spec, spec)
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(from_numpy(array))
    request.output_filter.extend(output_filter)
    return request


def predict_response(result: Any, tensor_content: bool = False) -> Any:
    """``PredictResponse`` of a data-plane ``PredictResult`` (outputs as typed values, or
    packed ``tensor_content`` with ``--enable_serialization_as_tensor_content``)."""
    from tensorflow_serving.apis import predict_pb2

    from pyserving.server.tensor_codec import from_numpy

    response = predict_pb2.PredictResponse()
    fill_spec(response.model_spec, result)
    outputs = response.outputs
    for name, array in result.outputs.items():
        outputs[name].CopyFrom(from_numpy(array, as_tensor_content=tensor_content))
    return response


def _example_input(target: Any, examples: Sequence[bytes]) -> None:
    """``Input.example_list`` from serialized ``tf.Example`` records (a REST context is
    already merged into each record, so the list is equivalent)."""
    for record in examples:
        target.example_list.examples.add().ParseFromString(record)


def classification_request(spec: Any, examples: Sequence[bytes]) -> Any:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    _request_spec(request.model_spec, spec)
    _example_input(request.input, examples)
    return request


def classification_response(result: Any) -> Any:
    from tensorflow_serving.apis import classification_pb2

    response = classification_pb2.ClassificationResponse()
    fill_spec(response.model_spec, result)
    fill_classification(response.result, result)
    return response


def regression_request(spec: Any, examples: Sequence[bytes]) -> Any:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    _request_spec(request.model_spec, spec)
    _example_input(request.input, examples)
    return request


def regression_response(result: Any) -> Any:
    from tensorflow_serving.apis import regression_pb2

    response = regression_pb2.RegressionResponse()
    fill_spec(response.model_spec, result)
    fill_regression(response.result, result)
    return response
