"""The ``"tensorflow"`` platform: SavedModel version directories -> :class:`SavedModelLoader`.

A version directory is ready once it holds ``saved_model.pb`` or ``saved_model.pbtxt``.
Platform options (the mapping the factory receives; every key optional):

* ``"saved_model_tags"``: list of tags, or a comma-separated string like TF Serving's
  ``--saved_model_tags`` (default ``["serve"]``);
* ``"intra_op_parallelism"`` / ``"inter_op_parallelism"``: int threads, 0 = TensorFlow
  decides (TF Serving's ``--tensorflow_intra_op_parallelism`` / ``..._inter_op_...``);
  ``inter_op_parallelism`` defaults to -1: ops run on the calling thread (see
  :class:`~pyserving.loaders.saved_model_runners.SavedModelOptions`).
  TensorFlow sizes its CPU pools once per process, from the first model loaded.
* ``"batching"``: a :class:`~pyserving.loaders.batching.BatchingConfig` (``--enable_batching``):
  each SavedModel loader is wrapped in a :class:`~pyserving.loaders.batching.BatchingLoader`,
  whose servable batches concurrent requests on the config's shared scheduler (with
  ``per_model``, only versions holding ``batching_params.pbtxt`` are batched). Absent or
  None: no batching.
* ``"enable_model_warmup"``: bool (default True, TF Serving's ``--enable_model_warmup``):
  replay ``assets.extra/tf_serving_warmup_requests`` inside ``load()``, before the version
  becomes AVAILABLE (:mod:`pyserving.loaders.warmup`); a failed warmup fails the load.
* ``"num_request_iterations_for_warmup"``: int (default 0): times each warmup record is
  replayed, used only if > 0 (otherwise once), as TF Serving's flag of that name.

Warmup runs against what will serve: with batching, the version's ``BatchingServable``
(after ``BatchingLoader`` wrapped it, as TF Serving warms its batching session), so warmup
requests take the batch queues' path and their limits (a record larger than
``max_batch_size`` fails the load, as in TF Serving); without, the SavedModel servable.

Unknown keys and bad values raise ``InvalidArgumentError`` when the loader is created.
Neither this module nor the loader module imports TensorFlow at import time; it is imported
by ``SavedModelLoader.load()`` on a load thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pyserving.loaders.batching import BatchingConfig, BatchingLoader
from pyserving.loaders.loader import Loader
from pyserving.loaders.platform import Platform
from pyserving.loaders.warmup import WarmupOptions, run_warmup
from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath

__all__ = ["TENSORFLOW_PLATFORM", "OPTION_KEYS", "saved_model_options", "warmup_options"]

_WARMUP_KEYS = ("enable_model_warmup", "num_request_iterations_for_warmup")
OPTION_KEYS = ("saved_model_tags", "intra_op_parallelism", "inter_op_parallelism", "batching", *_WARMUP_KEYS)


def saved_model_options(options: Mapping[str, Any]) -> Any:
    """The ``SavedModelOptions`` for a platform options mapping (see the module docstring)."""
    from pyserving.loaders.saved_model import SavedModelOptions

    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown tensorflow platform option(s) {unknown}; known options: {list(OPTION_KEYS)}"
        )
    tags: Any = options.get("saved_model_tags", ("serve",))
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    elif not isinstance(tags, (list, tuple)):
        raise InvalidArgumentError(
            f"saved_model_tags must be a list of strings or a comma-separated string, got {tags!r}"
        )
    return SavedModelOptions(
        tags=tuple(tags),
        intra_op_parallelism=options.get("intra_op_parallelism", 0),
        inter_op_parallelism=options.get("inter_op_parallelism", -1),
    )


def warmup_options(options: Mapping[str, Any]) -> WarmupOptions | None:
    """The ``WarmupOptions`` for a platform options mapping; None when warmup is off."""
    enabled = options.get("enable_model_warmup", True)
    if not isinstance(enabled, bool):
        raise InvalidArgumentError(f"enable_model_warmup must be a bool, got {enabled!r}")
    iterations = options.get("num_request_iterations_for_warmup", 0)
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise InvalidArgumentError(
            f"num_request_iterations_for_warmup must be an int (used only if > 0), got {iterations!r}"
        )
    if not enabled:
        return None
    return WarmupOptions(num_request_iterations=iterations if iterations > 0 else 1)


class _WarmingBatchingLoader(BatchingLoader):
    """A ``BatchingLoader`` that warms its servable (the batched one) up at the end of ``load()``."""

    def __init__(self, *args: Any, warmup: WarmupOptions | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warmup = warmup

    def load(self) -> None:
        super().load()
        if self._warmup is None:
            return
        try:
            run_warmup(self.servable, self._version_dir, self._warmup, name=str(self._id or ""))
        except BaseException:
            self.unload()  # a failed load leaves nothing behind
            raise


def _create_loader(servable_id: ServableId, storage_path: StoragePath, options: Mapping[str, Any]) -> Loader:
    from pyserving.loaders.saved_model import SavedModelLoader

    tf_options, warmup = saved_model_options(options), warmup_options(options)
    batching = options.get("batching")
    if batching is None:
        return SavedModelLoader(storage_path, tf_options, servable_id=servable_id, warmup=warmup)
    if not isinstance(batching, BatchingConfig):
        raise InvalidArgumentError(
            f"tensorflow platform option 'batching' must be a BatchingConfig or None, got {type(batching).__name__}"
        )
    loader = SavedModelLoader(storage_path, tf_options, servable_id=servable_id)  # warmed up once batched
    return _WarmingBatchingLoader(loader, batching, storage_path.path, servable_id=servable_id, warmup=warmup)


def _is_version_ready(version_dir: Path) -> bool:
    version_dir = Path(version_dir)
    return (version_dir / "saved_model.pb").exists() or (version_dir / "saved_model.pbtxt").exists()


TENSORFLOW_PLATFORM = Platform(
    name="tensorflow",
    create_loader=_create_loader,
    is_version_ready=_is_version_ready,
)
