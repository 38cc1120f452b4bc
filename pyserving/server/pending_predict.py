""":class:`PendingPredict`: a predict queued on a batching version, answered later.

:meth:`DataPlane.start_predict <pyserving.server.data_plane.DataPlane.start_predict>` makes
one when the version a request resolves to batches (``submit_run``): the request is decoded,
checked and queued on the caller's thread (the REST event loop), and no thread waits for
the batch. When the batch has run, on the batch thread, the handle is released, a route's
statistics are recorded and its shadow mirrored, and then the callback registered with
:meth:`add_done_callback` runs; :meth:`result` then returns the
:class:`~pyserving.server.data_plane.PredictResult` or raises the request's ServingError.

Threading: ``add_done_callback`` once, from the creating thread; the callback runs on a batch
thread (or at once, if the batch is done already) and must only hand the pending request
back to its owner (e.g. ``loop.call_soon_threadsafe``). :meth:`give_up` may be called from
any thread (a timeout): a request not started is then never run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pyserving.servable.errors import ServingError, as_serving_error
from pyserving.servable.handle import ServableHandle
from pyserving.servable.signature import SignatureSpec

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.manager.router import RouteChoice, Router
    from pyserving.servable.batcher import Ticket
    from pyserving.server.data_plane import PredictResult

__all__ = ["PendingPredict"]


class PendingPredict:
    """One queued predict; see the module docstring."""

    __slots__ = (
        "_ticket", "_handle", "_signature_name", "_signature", "_inputs", "_output_filter",
        "_router", "_choice", "_started", "_result", "_error", "_on_runtime", "_submitted",
    )

    def __init__(
        self,
        ticket: Ticket[dict[str, Any]],
        handle: ServableHandle[Any],
        signature_name: str,
        signature: SignatureSpec,
        inputs: Mapping[str, Any],
        output_filter: Sequence[str],
        router: Router | None = None,
        choice: RouteChoice | None = None,
        started: float = 0.0,
        on_runtime: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """``on_runtime(model, "Predict", seconds)``: called once answered with the time from
        queueing to the answer (the model call including the wait for its batch)."""
        self._on_runtime = on_runtime
        self._submitted = time.perf_counter()
        self._ticket = ticket
        self._handle = handle
        self._signature_name = signature_name
        self._signature = signature
        self._inputs = inputs
        self._output_filter = tuple(output_filter)
        self._router = router
        self._choice = choice
        self._started = started
        self._result: PredictResult | None = None
        self._error: ServingError | None = None

    def add_done_callback(self, callback: Callable[[PendingPredict], None]) -> None:
        """Run ``callback(self)`` once answered (see the module docstring for the thread)."""
        self._ticket.add_done_callback(lambda _ticket: self._finish(callback))

    def give_up(self) -> None:
        """The caller stopped waiting: a request not started yet is never run."""
        self._ticket.give_up()

    def done(self) -> bool:
        """True once answered (set on the batch thread just before the callback runs)."""
        return self._result is not None or self._error is not None

    def batch_started(self) -> float | None:
        """When the batch that computed this request began (the batch scheduler's clock,
        ``time.monotonic()`` by default), where the batch queue tells it (``Ticket.started_at``);
        None otherwise, and before the batch ran. For tracing (the "queue" span)."""
        return self._ticket.started_at

    def result(self) -> PredictResult:
        """The answer; raises the request's ServingError. Only after the callback ran."""
        if self._error is not None:
            raise self._error
        assert self._result is not None, "PendingPredict.result() called before it was answered"
        return self._result

    def _finish(self, callback: Callable[[PendingPredict], None]) -> None:
        from pyserving.server.data_plane import PredictResult

        handle = self._handle
        served = handle.id
        try:
            outputs = self._ticket.result()
            self._result = PredictResult(served, self._signature_name, self._signature, outputs, self._inputs)
        except BaseException as exc:  # noqa: BLE001 - the answer is an error, handed to the caller
            self._error = exc if isinstance(exc, ServingError) else as_serving_error(exc)
        finally:
            handle.release()
        if self._on_runtime is not None and self._error is None:
            self._on_runtime(served.name, "Predict", time.perf_counter() - self._submitted)
        router, choice = self._router, self._choice
        if router is not None and choice is not None:
            router.record(choice, time.perf_counter() - self._started, self._error)
            if choice.shadow is not None and self._error is None:
                name, inputs, output_filter = self._signature_name, self._inputs, self._output_filter
                router.mirror(choice, lambda servable: servable.run(name, inputs, output_filter))
        callback(self)
