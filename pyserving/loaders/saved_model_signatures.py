"""What a SavedModel declares: its MetaGraph, and its SignatureDefs as runnable plans.

Implementation module of :mod:`pyserving.loaders.saved_model` (import the public names
from there). It covers the parts of loading that only read protos:

* :func:`select_meta_graph` parses ``saved_model.pb`` (or ``.pbtxt``) and picks the
  MetaGraph whose tag set equals the requested one (NOT_FOUND naming the tag sets
  present otherwise; DATA_LOSS when the file does not parse);
* :func:`signature_spec` turns a ``SignatureDef`` into a :class:`SignatureSpec` (None,
  with a warning, when a tensor has a dtype pyserving cannot carry);
* :class:`SignaturePlan` is one servable signature: its spec, the graph tensor names to
  feed and fetch, and :meth:`SignaturePlan.feeds`, which checks a request's inputs with
  the shared rules of :mod:`pyserving.servable.validation` after turning Python lists
  and scalars into arrays (library callers pass those; the servers never do).

Threading: plans are immutable after construction and safe to share between request
threads. TensorFlow's protos are imported lazily, inside :func:`select_meta_graph`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pyserving.servable.errors import Code, NotFoundError, ServingError
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from pyserving.servable.validation import check_inputs, check_output_filter

__all__ = ["SignaturePlan", "select_meta_graph", "signature_spec", "all_named"]

_log = logging.getLogger(__name__)


class SignaturePlan:
    """One runnable signature: its spec, feed order and fetch names (immutable)."""

    __slots__ = ("name", "spec", "feed_names", "output_aliases", "fetch_names", "_input_order")

    def __init__(self, name: str, spec: SignatureSpec, sig_def: Any) -> None:
        self.name = name
        self.spec = spec
        self._input_order = tuple(spec.inputs)
        self.feed_names = [sig_def.inputs[alias].name for alias in self._input_order]
        self.output_aliases = tuple(spec.outputs)
        self.fetch_names = {alias: sig_def.outputs[alias].name for alias in spec.outputs}

    def feeds(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The inputs in feed order, as arrays, checked against the signature.

        Values that are not numpy arrays (lists, scalars, bytes) are converted with
        ``np.asarray`` first; then :func:`check_inputs` applies (names, dtypes, known
        dimensions) and raises INVALID_ARGUMENT on any mismatch.
        """
        arrays = inputs
        if any(type(value) is not np.ndarray for value in inputs.values()):
            arrays = {alias: _as_ndarray(value) for alias, value in inputs.items()}
        check_inputs(self.spec, arrays)
        return [arrays[alias] for alias in self._input_order]

    def outputs_for(self, output_filter: Sequence[str]) -> tuple[str, ...]:
        """The aliases to fetch for ``output_filter`` (all when empty), validated."""
        if not output_filter:
            return self.output_aliases
        check_output_filter(self.spec, output_filter)
        return tuple(output_filter)


def _as_ndarray(value: Any) -> np.ndarray:
    return value if type(value) is np.ndarray else np.asarray(value)


def select_meta_graph(export_dir: str, tags: tuple[str, ...]) -> Any:
    """The ``MetaGraphDef`` of ``export_dir`` whose tag set equals ``tags``."""
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary, text = Path(export_dir, "saved_model.pb"), Path(export_dir, "saved_model.pbtxt")
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise NotFoundError(
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}"
            )
    except (text_format.ParseError, message.DecodeError) as exc:
        raise ServingError.from_code(Code.DATA_LOSS, f"Cannot parse the SavedModel in {export_dir}: {exc}") from exc
    wanted = set(tags)
    found = []
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
        found.append("{ " + " ".join(sorted(meta_graph.meta_info_def.tags)) + " }")
    raise NotFoundError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"Tag sets in the SavedModel at {export_dir}: {', '.join(found) or 'none'}"
    )


def all_named(sig_defs: Mapping[str, Any]) -> bool:
    """Whether every tensor is a plain named tensor (no sparse / composite encodings)."""
    return all(
        info.WhichOneof("encoding") == "name"
        for sig_def in sig_defs.values()
        for info in (*sig_def.inputs.values(), *sig_def.outputs.values())
    )


def signature_spec(name: str, sig_def: Any) -> SignatureSpec | None:
    """The spec of ``sig_def``; None (logged) when one of its tensors cannot be served."""
    try:
        inputs = {alias: _tensor_spec(info) for alias, info in sig_def.inputs.items()}
        outputs = {alias: _tensor_spec(info) for alias, info in sig_def.outputs.items()}
    except ValueError as exc:
        _log.warning("Signature %s is not served: %s", name, exc)
        return None
    return SignatureSpec(inputs=inputs, outputs=outputs, method_name=sig_def.method_name)


def _tensor_spec(info: Any) -> TensorSpec:
    try:
        dtype = DType(info.dtype)
    except ValueError:
        raise ValueError(f"tensor {info.name or '?'} has unsupported dtype enum {info.dtype}") from None
    shape_proto = info.tensor_shape
    shape = None
    if not shape_proto.unknown_rank:
        shape = tuple(d.size if d.size >= 0 else None for d in shape_proto.dim)
    return TensorSpec(dtype=dtype, shape=shape, tensor_name=info.name)
