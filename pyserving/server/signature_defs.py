"""``SignatureDef`` protos for servables that describe themselves with :class:`SignatureSpec`.

TensorFlow servables hand out their own SignatureDefs; a user's Python servable only has
``SignatureSpec``s, and this module turns those into the same protos so the metadata
endpoints answer alike for every platform. TensorFlow's protos are imported lazily.
"""

from __future__ import annotations

from typing import Any, Mapping

from pyserving.servable.signature import SignatureSpec, TensorSpec

__all__ = ["signature_defs_from_specs"]


def _tensor_info(name: str, spec: TensorSpec) -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    info = meta_graph_pb2.TensorInfo(name=spec.tensor_name or name, dtype=int(spec.dtype))
    if spec.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for dim in spec.shape:
            info.tensor_shape.dim.add(size=-1 if dim is None else int(dim))
    return info


def signature_defs_from_specs(signatures: Mapping[str, SignatureSpec]) -> dict[str, Any]:
    from tensorflow.core.protobuf import meta_graph_pb2

    result: dict[str, Any] = {}
    for key, signature in signatures.items():
        proto = meta_graph_pb2.SignatureDef(method_name=signature.method_name)
        for name, spec in signature.inputs.items():
            proto.inputs[name].CopyFrom(_tensor_info(name, spec))
        for name, spec in signature.outputs.items():
            proto.outputs[name].CopyFrom(_tensor_info(name, spec))
        result[key] = proto
    return result
