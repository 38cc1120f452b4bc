"""The model a batch job scores with: :class:`BatchModel`, and :func:`open_local_model`.

Every runner (local, ``--server``, Ray) talks to its model through :class:`BatchModel`.
:func:`open_local_model` loads one version in this process through pyserving's own path —
the platform registry and ``detect_platform``, the file-system version scan
(:func:`~pyserving.sources.version_scan.scan_versions`) and version policies, the
platform's loader — so a batch job scores with exactly what the server would serve.

Which version (``MODEL_PATH`` is a base path with numbered versions, or one model folder)
    * a model folder (``saved_model.pb`` or ``model.py`` directly inside): that folder, as
      version 1 of a model named after it; ``version`` other than None/1 and ``label`` are
      refused (there is nothing to choose from);
    * a base path: ``LatestVersions(1)`` by default, ``SpecificVersions((version,))`` with
      ``version`` (NOT_FOUND naming the versions present when it is missing);
    * ``label``: version labels live in a model config's ``version_labels`` (a local folder
      has none), so ``label`` needs ``model_config``: a ModelServerConfig text file naming
      the model (by ``name`` equal to ``model_path``, or by ``base_path`` equal to it) with
      that label. Without ``model_config`` a label is refused with INVALID_ARGUMENT saying
      so. The config's platform is used too.

Preferred batch size: a Python servable's ``preferred_batch_size`` attribute, else the
``max_batch_size`` of a ``batching_params.pbtxt`` in the version folder, else None.

Threading: ``score``/``score_examples`` may be called from several threads at once (the
servables' ``run``/``classify``/``regress`` are thread-safe); ``close`` must not race them.
Ownership: the local model owns its loader; ``close()`` unloads it (idempotent).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from pyserving.loaders.loader import Loader
from pyserving.loaders.platform import detect_platform, get_platform
from pyserving.servable.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    as_serving_error,
)
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    InferenceServable,
    SignatureSpec,
)
from pyserving.sources.storage_path import StoragePath
from pyserving.sources.version_policy import LatestVersions, ServableVersionPolicy, SpecificVersions
from pyserving.sources.version_scan import scan_versions

import numpy as np

__all__ = ["BatchModel", "LocalModel", "open_local_model", "resolve_signature", "probe_batch_size",
           "score_rows", "score_isolating_rows", "IsolatedScores", "row_failure", "WrongOutputError"]


@runtime_checkable
class BatchModel(Protocol):
    """One model version scoring batches for the offline pipeline. Thread-safe ``score*`` (the
    pipeline may call from one compute thread; remote models may run several calls concurrently).

    ``score``: predict; every input has rows on dim 0; returns each output with the same rows.
    ``score_examples``: classify -> ``{"classes": [n,k], "scores": [n,k]}`` (the present
    ones); regress -> ``{"outputs": [n]}``. Both raise ``ServingError`` (INVALID_ARGUMENT for
    bad input). ``close`` releases the model; no call may follow it.
    """

    description: str
    signature_name: str
    signature: SignatureSpec
    method: str
    preferred_batch_size: int | None

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def score_examples(self, serialized: Sequence[bytes]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def resolve_signature(signatures: Mapping[str, SignatureSpec], name: str | None, where: str) -> str:
    """The signature to use: ``name``; else ``serving_default``; else the only one."""
    if name is not None:
        if name not in signatures:
            raise NotFoundError(
                f"{where} has no signature {name!r}; its signatures: {', '.join(sorted(signatures)) or 'none'}"
            )
        return name
    if DEFAULT_SIGNATURE in signatures:
        return DEFAULT_SIGNATURE
    if len(signatures) == 1:
        return next(iter(signatures))
    raise InvalidArgumentError(
        f"{where} has no {DEFAULT_SIGNATURE} signature; choose one with --signature among: "
        f"{', '.join(sorted(signatures)) or 'none'}"
    )


class LocalModel:
    """A model version loaded in this process by its platform's loader (see the module docstring)."""

    def __init__(self, loader: Loader, servable_id: ServableId, signature_name: str | None,
                 preferred_batch_size: int | None) -> None:
        servable = loader.servable
        if not isinstance(servable, InferenceServable):
            raise FailedPreconditionError(
                f"model {servable_id} is not an inference servable: its servable "
                f"({type(servable).__name__}) needs a 'signatures' mapping and a 'run' method"
            )
        self._loader: Loader | None = loader
        self._servable: Any = servable
        self._lock = threading.Lock()  # guards _loader (close)
        self.servable_id = servable_id
        self.description = str(servable_id)
        self.signature_name = resolve_signature(servable.signatures, signature_name, f"model {servable_id}")
        self.signature: SignatureSpec = servable.signatures[self.signature_name]
        self.method = self.signature.method_name
        self.preferred_batch_size = preferred_batch_size

    @property
    def servable(self) -> Any:
        return self._servable

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self._servable.run(self.signature_name, inputs))

    def score_examples(self, serialized: Sequence[bytes]) -> dict[str, np.ndarray]:
        if self.method == CLASSIFY_METHOD:
            return dict(self._servable.classify(self.signature_name, list(serialized)))
        if self.method == REGRESS_METHOD:
            return {"outputs": self._servable.regress(self.signature_name, list(serialized))}
        raise InvalidArgumentError(
            f"signature {self.signature_name} of {self.description} is a {self.method} signature; "
            f"serialized tf.Examples need a classify or regress signature"
        )

    def close(self) -> None:
        with self._lock:
            loader, self._loader = self._loader, None
        if loader is not None:
            loader.unload()

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class WrongOutputError(InternalError):
    """The model answered with the wrong number of rows: a model bug, never a bad row."""


def score_rows(model: BatchModel, inputs: Mapping[str, np.ndarray], rows: int, examples_input: str | None = None
               ) -> dict[str, np.ndarray]:
    """One model call for ``rows`` rows: ``score``, or ``score_examples`` of the serialized
    examples in ``inputs[examples_input]``; every output must have ``rows`` rows, else
    :class:`WrongOutputError` (the local pipeline and the Ray Predictor share this rule)."""
    if examples_input is not None:
        result = model.score_examples(list(inputs[examples_input]))
    else:
        result = model.score(inputs)
    out = {}
    for name, value in result.items():
        value = np.asarray(value)
        if value.ndim == 0 or len(value) != rows:
            raise WrongOutputError(f"{model.description} returned {name} with shape {list(value.shape)} "
                                   f"for {rows} rows; every output needs one row per input row")
        out[name] = value
    return out


@dataclass(frozen=True)
class IsolatedScores:
    """What :func:`score_isolating_rows` found: the outputs of the rows that succeeded
    (concatenated in row order), which rows succeeded, the error of each failed row (by
    index), and the whole-batch call's error (None when it succeeded)."""

    outputs: dict[str, np.ndarray]
    ok: np.ndarray
    row_errors: dict[int, ServingError]
    batch_error: BaseException | None = None

    @property
    def first_error(self) -> ServingError:
        """The whole-batch call's error (only when some row failed)."""
        assert self.batch_error is not None, "every row succeeded"
        return as_serving_error(self.batch_error)


def score_isolating_rows(model: BatchModel, inputs: Mapping[str, np.ndarray], rows: int,
                         examples_input: str | None = None, fatal: type[BaseException] = WrongOutputError
                         ) -> IsolatedScores:
    """One :func:`score_rows` call for all ``rows``; if it fails, one call per row, so one bad
    row never costs its neighbours. Errors of type ``fatal`` (a model bug, not a bad row)
    propagate; the caller decides what "every row failed" means."""
    try:
        return IsolatedScores(score_rows(model, inputs, rows, examples_input), np.ones(rows, bool), {})
    except fatal:
        raise
    except Exception as exc:  # noqa: BLE001 - isolate the bad rows below
        batch_error: BaseException = exc
    ok = np.zeros(rows, bool)
    parts: list[dict[str, np.ndarray]] = []
    row_errors: dict[int, ServingError] = {}
    for i in range(rows):
        try:
            parts.append(score_rows(model, {k: v[i: i + 1] for k, v in inputs.items()}, 1, examples_input))
            ok[i] = True
        except fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - this row is bad
            row_errors[i] = as_serving_error(exc)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return IsolatedScores(merged, ok, row_errors, batch_error)


def row_failure(error: ServingError) -> str:
    """The errors-file reason of a row the model refused."""
    return f"model call failed: {error.code.name}: {error.message}"


#: Rows per call tried by :func:`probe_batch_size`, smallest first.
PROBE_BATCH_SIZES = (256, 512, 1024, 2048)


def probe_batch_size(model: BatchModel, candidates: Sequence[int] = PROBE_BATCH_SIZES,
                     calls: int = 3) -> int | None:
    """The candidate batch size at which ``model`` scores the most rows per second, measured
    on zero-filled inputs (one warm-up call and ``calls`` timed calls each: a few thousand
    rows, tens of milliseconds for the MLP); None when the signature does not allow it
    (not a predict signature, a non-numeric input, or an unknown dimension other than the
    first), then the caller's default applies. The model's own answer to zeros is not
    used, and an error (a model that refuses zeros) also gives None."""
    if model.method != PREDICT_METHOD:
        return None
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for name, spec in model.signature.inputs.items():
        shape = spec.shape
        if shape is None or not shape or any(d is None or d < 0 for d in shape[1:]):
            return None
        dtype = np.dtype(spec.dtype.numpy_name)
        if dtype.kind not in "biuf":
            return None
        shapes[name] = (tuple(int(d) for d in shape[1:]), dtype)
    best, best_rate = None, 0.0
    try:
        for rows in candidates:
            inputs = {name: np.zeros((rows, *inner), dtype) for name, (inner, dtype) in shapes.items()}
            model.score(inputs)
            started = time.perf_counter()
            for _ in range(calls):
                model.score(inputs)
            rate = rows * calls / max(time.perf_counter() - started, 1e-9)
            if rate > best_rate * 1.05:  # a bigger batch must be clearly faster to be worth its memory
                best, best_rate = rows, rate
    except Exception:  # noqa: BLE001 - probing is an optimisation; the job decides the default
        return None
    return best


def _label_version(model_path: str, label: str, model_config: str | None) -> tuple[str, int, str | None]:
    """(base path, version, platform) a label names in ``model_config``."""
    if model_config is None:
        raise InvalidArgumentError(
            f"--label {label!r} needs --model-config FILE: a local model folder has no version labels (they "
            "are a model config's version_labels); pass the ModelServerConfig file, or choose --version N"
        )
    from pyserving.server.model_config import load_model_server_config, models_from_config

    entries = models_from_config(load_model_server_config(model_config))
    chosen = [e for e in entries if e.name == model_path]
    if not chosen and os.path.isdir(model_path):
        chosen = [e for e in entries if os.path.isdir(e.base_path) and os.path.samefile(e.base_path, model_path)]
    if not chosen:
        raise NotFoundError(
            f"model config {model_config} names no model called {model_path!r} or with that base_path; "
            f"its models: {', '.join(e.name for e in entries) or 'none'}"
        )
    entry = chosen[0]
    if label not in entry.version_labels:
        raise NotFoundError(
            f"model {entry.name} in {model_config} has no version label {label!r}; its labels: "
            f"{', '.join(sorted(entry.version_labels)) or 'none'}"
        )
    return entry.base_path, entry.version_labels[label], entry.platform


def _preferred_batch_size(servable: Any, version_dir: str) -> int | None:
    value = getattr(servable, "preferred_batch_size", None)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    from pyserving.loaders.batching_params import PER_MODEL_FILENAME, read_batching_parameters

    path = Path(version_dir) / PER_MODEL_FILENAME
    if path.is_file():
        return read_batching_parameters(path).max_batch_size
    return None


def _choose_version(name: str, base: str, platform: str | None,
                    policy: ServableVersionPolicy) -> tuple[ServableId, StoragePath, str]:
    """The version ``policy`` selects under ``base`` (complete versions only), and its platform."""
    if not os.path.isdir(base):
        raise NotFoundError(f"model path {base} does not exist or is not a folder")
    children = sorted((c for c in Path(base).iterdir() if c.is_dir() and c.name.isdigit()), key=lambda c: int(c.name))
    if platform is None:
        for child in reversed(children):
            platform = detect_platform(child)
            if platform is not None:
                break
    if platform is None:
        raise NotFoundError(
            f"no model found at {base}: expected numbered version folders (1/, 2/, ...) holding saved_model.pb "
            "or model.py, or a model folder itself"
        )
    ready = get_platform(platform).is_version_ready
    scan = scan_versions(name, base, policy, ready, {}, {}, quiet_s=0.0, retry_s=0.0,
                         clock=time.monotonic, wall_clock=time.time)
    if scan.error is not None:
        raise scan.error
    if not scan.items:
        present = ", ".join(c.name for c in children if ready(c)) or "none"
        raise NotFoundError(f"no version of model {name} under {base} matches {policy}; complete versions: {present}")
    item = scan.items[-1]
    if item.error is not None:
        raise item.error
    return item.id, item.value, platform


def open_local_model(
    model_path: str | os.PathLike[str],
    *,
    signature: str | None = None,
    version: int | None = None,
    label: str | None = None,
    platform: str | None = None,
    model_config: str | None = None,
    platform_options: Mapping[str, Any] | None = None,
) -> LocalModel:
    """Load one version of the model at ``model_path`` (see the module docstring) and return
    it ready to score. Blocks while the model loads; raises ``ServingError`` on failure."""
    path = os.fspath(model_path)
    if version is not None and label is not None:
        raise InvalidArgumentError(f"give version or label, not both (got {version} and {label!r})")
    if label is not None:
        path, version, platform = _label_version(path, label, model_config)
    path = os.path.abspath(path)
    own = platform or (detect_platform(Path(path)) if os.path.isdir(path) else None)
    if own is not None and os.path.isdir(path) and get_platform(own).is_version_ready(Path(path)):
        if version not in (None, 1):
            raise InvalidArgumentError(
                f"--version {version}: {path} is a single model folder (version 1), not a base path with "
                "numbered versions"
            )
        sid, storage, platform = ServableId(Path(path).name or "model", 1), StoragePath(path), own
    else:
        policy = LatestVersions(1) if version is None else SpecificVersions((version,))
        sid, storage, platform = _choose_version(Path(path).name or "model", path, platform, policy)
    loader = get_platform(platform).create_loader(sid, storage, dict(platform_options or {}))
    loader.load()
    try:
        return LocalModel(loader, sid, signature, _preferred_batch_size(loader.servable, storage.path))
    except BaseException:
        loader.unload()
        raise
