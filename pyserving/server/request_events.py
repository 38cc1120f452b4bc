"""One finished request, as the front ends report it to observers (metrics, request logging).

The gRPC servicers and the REST application build a :class:`RequestEvent` once a request's
answer is ready (success or error) and hand it to every :class:`RequestObserver` the server
was built with. With no observer nothing is built, so the request path pays nothing.

Contracts:

* ``observe`` runs on the request's own thread (a gRPC worker, a REST worker or the event
  loop), after the answer is computed and before it is sent; it must be cheap (a counter,
  a sampling decision) and must never raise or block. Anything slow (serialising, writing
  files) belongs on the observer's own thread.
* ``request`` / ``response`` are callables that build the equivalent gRPC protos (REST
  requests too: a REST predict becomes a ``PredictRequest``); building costs about as much
  as the request's own decoding, so observers call them only for the requests they keep
  (a sampled log record). They are safe to call from another thread later: they capture
  immutable inputs (decoded arrays are not modified after the request).
* ``model`` / ``version`` name the model that answered (through a route, the arm's model);
  a request that did not resolve reports the name it asked for and ``version=None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

__all__ = ["RequestEvent", "RequestObserver", "notify"]

@dataclass(slots=True)
class RequestEvent:
    """What one request was and how it ended; see the module docstring."""

    model: str
    version: int | None
    api: str
    entrypoint: str  # "GRPC" | "REST"
    status: str  # canonical code name, "OK" on success
    latency_s: float
    request: Callable[[], Any] | None = None
    response: Callable[[], Any] | None = None


class RequestObserver(Protocol):
    """Receives every finished request (``observe`` is cheap and never raises)."""

    def observe(self, event: RequestEvent) -> None: ...


def notify(observers: Sequence[RequestObserver], event: RequestEvent) -> None:
    """Hand ``event`` to each observer; an observer's bug is swallowed (serving goes on)."""
    for observer in observers:
        try:
            observer.observe(event)
        except Exception:  # noqa: BLE001 - an observer must never fail a request
            import logging

            logging.getLogger(__name__).exception("Request observer %r failed", observer)
