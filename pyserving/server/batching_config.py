"""The batching flags -> the tensorflow platform's :class:`~pyserving.loaders.batching.BatchingConfig`.

Flags (TF Serving's): ``--enable_batching``; ``--batching_parameters_file`` (text
``BatchingParameters``, only with ``--enable_batching``; a field it leaves out takes TF
Serving's default); ``--enable_per_model_batching_parameters`` (alias
``--enable_per_model_batching_params``): each version directory's ``batching_params.pbtxt``
gives that model's parameters, a version without one is not batched, and only the thread
pool (``num_batch_threads``, ``thread_pool_name``) comes from the global file.

Defaults with ``--enable_batching`` alone (:func:`default_batching_parameters`; TF Serving
would use its plain defaults: 1000-row batches, 10 queued batches):

* ``max_batch_size`` 1000: every request TF Serving accepts by default is accepted;
* ``enable_large_batch_splitting`` with ``max_execution_batch_size`` 32: one model call
  computes at most 32 rows. On the 2-core class of machine we serve on, 32 rows cost barely
  more than 1 for small models (the ~0.2 ms per-call overhead is shared 32 ways: 132k vs 4.1k
  rows/s for a tiny model) while a 784-512-512-10 MLP computes 32 rows in under 1 ms, so a
  request arriving behind a batch waits at most about one such call; bigger requests are
  split into 32-row calls that both cores share;
* ``batch_timeout_micros`` 0: never wait for a batch to fill; batches form only from the
  requests that queued while every batch thread was busy, so a lone request runs at once
  (waiting helps GPUs, not 2 CPU cores);
* ``num_batch_threads``: the schedulable CPUs (one model call per core);
* ``max_enqueued_batches`` 64: at most 64 x 32 = 2048 rows wait per signature (tens of
  milliseconds of work for such models), enough for a 1000-row request plus a burst of
  small ones; beyond that requests are refused UNAVAILABLE at once instead of queueing
  without bound.

Errors name the flag or the file (``InvalidArgumentError`` / ``NotFoundError``); the server
binary reports them as "Failed to start server. Error: ..." and exits 1.
"""

from __future__ import annotations

import logging

from pyserving.loaders.batching import BatchingConfig
from pyserving.loaders.batching_params import BatchingParameters, read_batching_parameters, schedulable_cpus
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.errors import ServingError

__all__ = ["batching_config_from_flags", "default_batching_parameters"]

_log = logging.getLogger(__name__)


def default_batching_parameters() -> BatchingParameters:
    """The parameters of ``--enable_batching`` without a file (see the module docstring)."""
    return BatchingParameters(
        max_batch_size=1000,
        batch_timeout_micros=0,
        max_enqueued_batches=64,
        num_batch_threads=schedulable_cpus(),
        thread_pool_name="model_server_batch_threads",
        enable_large_batch_splitting=True,
        max_execution_batch_size=32,
    )


def batching_config_from_flags(
    enable_batching: bool, batching_parameters_file: str = "", per_model: bool = False
) -> BatchingConfig | None:
    """The config for the tensorflow platform's ``"batching"`` option; None without batching.

    Reads ``batching_parameters_file`` now (startup). The scheduler it creates starts no
    thread until a batched version loads, and its threads end when the last one unloads.
    """
    if not enable_batching:
        if per_model:
            _log.warning("--enable_per_model_batching_parameters has no effect without --enable_batching")
        return None
    if batching_parameters_file:
        try:
            parameters = read_batching_parameters(batching_parameters_file)
        except ServingError as exc:
            raise ServingError.from_code(exc.code, f"--batching_parameters_file: {exc.message}") from exc
    else:
        parameters = default_batching_parameters()
    scheduler = BatchScheduler(parameters.num_batch_threads, name=parameters.thread_pool_name)
    if per_model:
        _log.info(
            "Batching enabled with per-model parameters (%s in each version directory; versions without it "
            "are not batched) on %d shared batch threads",
            "batching_params.pbtxt", parameters.num_batch_threads,
        )
    else:
        _log.info(
            "Batching enabled: %s on %d shared batch threads", parameters.describe(), parameters.num_batch_threads
        )
    return BatchingConfig(scheduler=scheduler, parameters=parameters, per_model=per_model)
