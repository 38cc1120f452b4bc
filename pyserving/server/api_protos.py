"""Building TF Serving's response protos from data-plane results, shared by gRPC and REST.

REST answers status and metadata with the JSON form of the very protos gRPC returns
(``json_format``), so both transports describe a model identically. Protos come from
``tensorflow-serving-api`` and are imported lazily.
"""

from __future__ import annotations

from typing import Any, Sequence

from pyserving.servable.errors import Code
from pyserving.servable.ids import ServableId
from pyserving.servable.state import ServableState

__all__ = ["model_spec_proto", "status_response", "metadata_response", "spec_from_proto"]


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
