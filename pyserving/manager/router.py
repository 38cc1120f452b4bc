""":class:`Router`: server-side A/B, segment and header routing over a manager, plus shadow traffic.

A *route* (:class:`~pyserving.manager.routes.Route`) is a name clients call like a model;
the router picks one of its arms for each request and can mirror the request to a shadow
model. Library use, without any server::

    router = Router(manager, model_names=lambda: {"rec_a", "rec_b"})
    router.set_routes([Route("recommender", (Arm("control", "rec_a", 90), Arm("treatment", "rec_b", 10)),
                             segment_key="x-user-id")])
    result, answered_by = router.call("recommender", lambda m: m.predict(x), {"x-user-id": "42"})
    router.statistics("recommender")   # JSON-ready counters per arm
    router.close()

Choosing an arm (:meth:`Router.choose`), in this order:

1. **rules**, in order; the first whose header equals its value wins (reason ``"rule"``).
   Header names are matched case-insensitively: callers pass ``headers`` with lower-case
   names (as HTTP/2 and gRPC metadata have them); values are compared exactly.
2. **segment**: when the route has a ``segment_key`` and that header is present and
   non-empty, weighted rendezvous hashing of its value (reason ``"segment"``): for each
   arm of weight > 0, ``u`` = a uniform number in (0, 1) from ``blake2b(arm name, value)``,
   score ``-ln(u) / weight``; the lowest score wins. Guarantees: the same value lands in
   the same arm while the weights stay the same, on every process and platform; when
   weights change, a value moves only into an arm whose weight grew or out of one whose
   weight shrank (90/10 -> 50/50 moves about 40 % of the values, all from the first arm
   to the second).
3. **weight**: otherwise a random draw in proportion to the weights (reason ``"weight"``)
   from the router's ``rng``. An arm of weight 0 is reached only through a rule.

Whether a request is mirrored is decided in ``choose`` too (``percent`` % of them). The
``rng`` is shared by all request threads (``random.Random`` is safe for that in CPython).

Configuration (:meth:`set_routes`, :meth:`put_route`, :meth:`remove_route`): changes are
serialised by ``_config_lock`` and put in force by replacing one attribute holding an
immutable snapshot; on any error nothing changes. ``set_routes`` validates the whole set
with :func:`~pyserving.manager.routes.validate_routes` against ``model_names()``;
``put_route`` validates the route it puts (its name against the models, its arms' and
shadow's models); ``remove_route`` needs no validation. ``model_names()`` is called once
per change, before the lock is taken: a caller that changes models too serialises both
itself (the server's control plane does). Statistics of an arm survive an update of its
route while the arm keeps its name; removing a route drops them.

Request path (:meth:`is_route`, :meth:`choose`, :meth:`record`, :meth:`mirror`,
:meth:`call`, :meth:`statistics`): any thread, any number at once; each reads the snapshot
once and never takes the config lock. A request that chose under the old routes finishes
on the arm it chose; its record is dropped if that arm (or route) is gone.

Shadow traffic (:meth:`mirror`): the job goes into a bounded queue (``shadow_queue_size``)
served by one daemon worker thread started on first use; the caller only takes a small
lock (``_worker_lock``) to queue it and never waits: when the queue is full the job is
dropped and counted. The worker gets a handle for the shadow request, runs the call and
counts its outcome and latency; any exception (a ``ServingError`` from ``get_handle``
included) is counted and logged at DEBUG, never raised, never seen by the main request.
:meth:`close` stops the worker (join bounded by ``timeout_s``) and counts the jobs still
queued, and every later mirror, as dropped.

Errors: ``choose`` / ``call`` / ``statistics`` / ``remove_route`` of an unknown route raise
:class:`NotFoundError`; ``call`` re-raises whatever ``get_handle`` or ``fn`` raised, after
counting it. No user code (``fn``, ``model_names``) runs while a lock of the router is held.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence, TypeVar

from pyserving.manager.route_statistics import RouteStatistics
from pyserving.manager.routes import Route, validate_routes
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId, ServableRequest

__all__ = ["RoutingManager", "RouteChoice", "Router"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

_TWO_53 = float(2**53)


class RoutingManager(Protocol):
    """What a :class:`Router` needs of a manager (the managers and the server core have it)."""

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]: ...


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The outcome of :meth:`Router.choose` for one request.

    ``request`` is what the chosen arm sends (Specific / Label / Latest); ``shadow`` is the
    request to mirror (the percent is already decided) or ``None``; ``reason`` is
    ``"rule"``, ``"segment"`` or ``"weight"``.
    """

    route: str
    arm: str
    request: ServableRequest
    shadow: ServableRequest | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One route prepared for the request path (immutable)."""

    route: Route
    stats: RouteStatistics
    rules: tuple[tuple[str, str, str], ...]  # (lower-case header, value, arm name)
    segment_key: str  # lower case; "" = none
    requests: Mapping[str, ServableRequest]  # arm name -> its request
    weighted: tuple[tuple[str, float, Any], ...]  # (arm name, weight, blake2b seeded with the name), weight > 0
    cumulative: tuple[float, ...]  # running sums of the weights of ``weighted``
    shadow: ServableRequest | None
    shadow_percent: float


@dataclass(frozen=True, slots=True)
class _Table:
    """The routes in force: replaced as a whole, never changed."""

    routes: Mapping[str, _Compiled]
    names: frozenset[str]


_EMPTY = _Table(MappingProxyType({}), frozenset())


def _compile(route: Route, stats: RouteStatistics) -> _Compiled:
    weighted = tuple(
        (arm.name, float(arm.weight), hashlib.blake2b(arm.name.encode() + b"\x00", digest_size=8))
        for arm in route.arms
        if arm.weight > 0
    )
    return _Compiled(
        route=route,
        stats=stats,
        rules=tuple((rule.header.lower(), rule.equals, rule.arm) for rule in route.rules),
        segment_key=route.segment_key.lower(),
        requests=MappingProxyType({arm.name: arm.request() for arm in route.arms}),
        weighted=weighted,
        cumulative=tuple(itertools.accumulate(weight for _, weight, _ in weighted)),
        shadow=route.shadow.request() if route.shadow is not None else None,
        shadow_percent=float(route.shadow.percent) if route.shadow is not None else 0.0,
    )


def _rendezvous(weighted: tuple[tuple[str, float, Any], ...], value: str) -> str:
    """The arm of lowest ``-ln(u) / weight`` with ``u`` from blake2b(arm name, value)."""
    data = value.encode("utf-8", "surrogatepass")
    best_name, best_score = "", math.inf
    for name, weight, seeded in weighted:
        digest = seeded.copy()
        digest.update(data)
        u = ((int.from_bytes(digest.digest(), "big") >> 11) + 0.5) / _TWO_53  # 53 bits: exactly in (0, 1)
        score = -math.log(u) / weight
        if score < best_score:
            best_name, best_score = name, score
    return best_name


_STOP = object()


class Router:
    """Routes requests of route names to models; see the module docstring for the contract."""

    def __init__(
        self,
        manager: RoutingManager,
        model_names: Callable[[], Collection[str]],
        *,
        shadow_queue_size: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(shadow_queue_size, bool) or not isinstance(shadow_queue_size, int) or shadow_queue_size < 1:
            raise InvalidArgumentError(f"shadow_queue_size must be an int >= 1, got {shadow_queue_size!r}")
        self._manager = manager
        self._model_names = model_names
        self._rng = rng if rng is not None else random.Random()
        self._config_lock = threading.Lock()  # serialises changes of _table; readers never take it
        self._table = _EMPTY
        self._shadow_queue: queue.Queue[Any] = queue.Queue(maxsize=shadow_queue_size)
        self._worker_lock = threading.Lock()  # guards _worker and _closed
        self._worker: threading.Thread | None = None
        self._closed = False

    # -- configuration -----------------------------------------------------------------

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Replace every route by ``routes`` (validated as a whole first)."""
        routes = list(routes)
        for route in routes:
            if not isinstance(route, Route):
                raise InvalidArgumentError(f"routes must hold Route objects, got {route!r}")
        names = self._model_names()
        with self._config_lock:
            validate_routes(routes, names)
            self._install({route.name: route for route in routes})

    def put_route(self, route: Route) -> None:
        """Add ``route``, or replace the route of its name; the other routes stay as they are."""
        if not isinstance(route, Route):
            raise InvalidArgumentError(f"route must be a Route, got {route!r}")
        names = self._model_names()
        with self._config_lock:
            validate_routes([route], names)
            routes = {name: entry.route for name, entry in self._table.routes.items()}
            routes[route.name] = route
            self._install(routes)

    def remove_route(self, name: str) -> None:
        """Stop serving route ``name`` and drop its statistics; ``NotFoundError`` if absent."""
        with self._config_lock:
            if name not in self._table.routes:
                known = ", ".join(sorted(self._table.names)) or "none"
                raise NotFoundError(f"route {name!r} not found; routes: {known}")
            routes = {other: entry.route for other, entry in self._table.routes.items() if other != name}
            self._install(routes)

    def _install(self, routes: dict[str, Route]) -> None:
        """Compile ``routes`` and put them in force (caller holds ``_config_lock``)."""
        old = self._table.routes
        compiled: dict[str, _Compiled] = {}
        for name, route in routes.items():
            previous = old.get(name)
            if previous is not None and previous.route == route:
                compiled[name] = previous
                continue
            shadow_model = route.shadow.model_name if route.shadow is not None else None
            arm_names = [arm.name for arm in route.arms]
            if previous is not None:
                # Kept arms keep their counters; records for removed arms are ignored from here on.
                previous.stats.reconfigure(arm_names, shadow_model)
                stats = previous.stats
            else:
                stats = RouteStatistics(arm_names, shadow_model)
            compiled[name] = _compile(route, stats)
        self._table = _Table(MappingProxyType(compiled), frozenset(compiled))
        changed = sorted(n for n in set(compiled) | set(old) if old.get(n) is not compiled.get(n))
        if changed:
            _log.info("Routes changed: %s; in force now: %s", ", ".join(changed), ", ".join(sorted(compiled)) or "none")

    def routes(self) -> list[Route]:
        """The routes in force, sorted by name."""
        table = self._table
        return [table.routes[name].route for name in sorted(table.names)]

    def get_route(self, name: str) -> Route | None:
        entry = self._table.routes.get(name)
        return entry.route if entry is not None else None

    def is_route(self, name: str) -> bool:
        """Whether ``name`` is a route now (lock-free, O(1))."""
        return name in self._table.names

    def route_names(self) -> frozenset[str]:
        return self._table.names

    # -- request path ------------------------------------------------------------------

    def _entry(self, name: str) -> _Compiled:
        entry = self._table.routes.get(name)
        if entry is None:
            raise NotFoundError(f"route {name!r} not found")
        return entry

    def choose(self, name: str, headers: Mapping[str, str] | None = None) -> RouteChoice:
        """The arm (and shadow) for one request of route ``name``; ``headers`` have lower-case names."""
        entry = self._entry(name)
        headers = headers or {}
        arm, reason = next((a for header, value, a in entry.rules if headers.get(header) == value), ""), "rule"
        if not arm:
            segment = headers.get(entry.segment_key) if entry.segment_key else None
            if segment:
                arm, reason = _rendezvous(entry.weighted, segment), "segment"
            else:
                cumulative = entry.cumulative
                index = bisect.bisect_right(cumulative, self._rng.random() * cumulative[-1])
                arm, reason = entry.weighted[min(index, len(cumulative) - 1)][0], "weight"
        shadow = entry.shadow
        percent = entry.shadow_percent
        if shadow is not None and percent < 100.0 and not self._rng.random() * 100.0 < percent:
            shadow = None
        return RouteChoice(name, arm, entry.requests[arm], shadow, reason)

    def record(self, choice: RouteChoice, latency_s: float, error: BaseException | None = None) -> None:
        """Count one request of ``choice``: its latency and whether it failed. Never raises."""
        entry = self._table.routes.get(choice.route)
        if entry is not None:
            entry.stats.record(choice.arm, choice.reason, latency_s, error is not None)

    def mirror(self, choice: RouteChoice, call: Callable[[Any], object]) -> None:
        """Queue ``call(shadow servable)`` if ``choice`` has a shadow; never blocks, never raises."""
        if choice.shadow is None:
            return
        entry = self._table.routes.get(choice.route)
        if entry is None:
            return  # the route was removed meanwhile; its statistics are gone
        with self._worker_lock:  # so that close() sees every job queued before it
            if self._closed:
                queued = False
            else:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run_shadows, name="pyserving-shadow", daemon=True)
                    self._worker.start()
                try:
                    self._shadow_queue.put_nowait((entry.stats, choice.shadow, call))
                    queued = True
                except queue.Full:
                    queued = False
        if not queued:
            entry.stats.record_shadow_dropped()

    def call(
        self, name: str, fn: Callable[[Any], T], headers: Mapping[str, str] | None = None
    ) -> tuple[T, ServableId]:
        """Choose an arm of ``name``, run ``fn(servable)`` on it, count it, mirror it.

        Returns ``(fn's result, id of the version that answered)``. An error of
        ``get_handle`` or ``fn`` is counted against the arm, then re-raised, and the request
        is not mirrored: the shadow gets the requests that were answered (as the servers do,
        where a request that failed may not even have decoded inputs to mirror).
        """
        choice = self.choose(name, headers)
        start = time.perf_counter()
        try:
            with self._manager.get_handle(choice.request) as handle:
                result = fn(handle.servable)
                answered_by = handle.id
        except BaseException as exc:
            self.record(choice, time.perf_counter() - start, exc)
            raise
        self.record(choice, time.perf_counter() - start)
        self.mirror(choice, fn)
        return result, answered_by

    def statistics(self, name: str) -> dict[str, Any]:
        """Route ``name``'s counters as JSON-ready data (see ``route_statistics``)."""
        entry = self._entry(name)
        return entry.stats.snapshot(entry.route)

    # -- shadow worker -----------------------------------------------------------------

    def _run_shadows(self) -> None:
        while True:
            job = self._shadow_queue.get()
            if job is _STOP or self._closed:
                if job is not _STOP:
                    job[0].record_shadow_dropped()
                return
            stats, request, call = job
            start = time.perf_counter()
            failed = False
            try:
                with self._manager.get_handle(request) as handle:
                    call(handle.servable)
            except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
                failed = True
                _log.debug("Shadow call to %s failed: %r", request, exc)
            stats.record_shadow(time.perf_counter() - start, failed)
            del job, stats, call  # do not keep the last request's data alive while idle

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the shadow worker, waiting at most ``timeout_s`` for a running shadow call.

        Jobs still queued are counted as dropped, and so is every later mirror. Idempotent;
        the routes stay readable and ``choose`` / ``record`` / ``call`` keep working.
        """
        with self._worker_lock:
            self._closed = True
            worker = self._worker
        if worker is None:
            return
        self._offer_stop()  # if the queue is full, the worker sees _closed after its current job
        worker.join(timeout_s)
        while True:
            try:
                job = self._shadow_queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job[0].record_shadow_dropped()
        if worker.is_alive():
            self._offer_stop()  # the queue has room now: the worker ends after its current call
            _log.warning("Shadow worker still busy after %.1f s; it ends when its shadow call returns", timeout_s)

    def _offer_stop(self) -> None:
        try:
            self._shadow_queue.put_nowait(_STOP)
        except queue.Full:
            pass
