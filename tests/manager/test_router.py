"""Router: weighted, segment and rule choices; config changes; shadow traffic; statistics; threads."""

from __future__ import annotations

import math
import random
import threading
from typing import Any, Iterator

import pytest

from pyserving.manager.basic_manager import BasicManager, BasicManagerOptions
from pyserving.manager.router import RouteChoice, Router
from pyserving.manager.routes import Arm, HeaderRule, Route, Shadow
from pyserving.servable.data import ServableData
from pyserving.servable.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.testing import FakeLoader, FakeServable
from tests.support.concurrency import hammer
from tests.support.polling import poll_until

MODELS = ("rec_a", "rec_b", "rec_c")


@pytest.fixture()
def manager() -> Iterator[BasicManager]:
    """Inline manager serving rec_a, rec_b and rec_c version 1; each servable's payload is its model name."""
    options = BasicManagerOptions(num_load_threads=0, num_unload_threads=0, max_num_load_retries=0)
    manager = BasicManager(options)
    for name in MODELS:
        servable_id = ServableId(name, 1)
        manager.manage(ServableData.of(servable_id, FakeLoader(servable_id, payload=name)))
        manager.load(servable_id)
    manager.set_version_labels("rec_b", {"canary": 1})
    yield manager
    manager.stop()


def model_names_of(manager: BasicManager) -> Any:
    return lambda: {servable_id.name for servable_id in manager.list_available_ids()}


@pytest.fixture()
def router(manager: BasicManager) -> Iterator[Router]:
    router = Router(manager, model_names_of(manager), rng=random.Random(1234))
    yield router
    router.close()


def ab(control: float = 90, treatment: float = 10, **kwargs: Any) -> Route:
    arms = (Arm("control", "rec_a", control), Arm("treatment", "rec_b", treatment, version_label="canary"))
    return Route("recommender", arms, segment_key="x-user-id", **kwargs)


def payload(servable: FakeServable) -> str:
    return str(servable.payload)


def within_sigmas(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- choosing ----------------------------------------------------------------------------


def test_without_a_key_the_split_follows_the_weights(router: Router) -> None:
    arms = (Arm("a", "rec_a", 50), Arm("b", "rec_b", 30), Arm("c", "rec_c", 20), Arm("dark", "rec_c", 0))
    router.set_routes([Route("r", arms)])
    choices = [router.choose("r") for _ in range(2000)]
    assert {choice.reason for choice in choices} == {"weight"}
    counts = {arm: sum(choice.arm == arm for choice in choices) for arm in ("a", "b", "c", "dark")}
    assert within_sigmas(counts["a"], 2000, 0.5) and within_sigmas(counts["b"], 2000, 0.3)
    assert within_sigmas(counts["c"], 2000, 0.2)
    assert counts["dark"] == 0  # weight 0: only through a rule
    models = {"a": "rec_a", "b": "rec_b", "c": "rec_c"}
    for choice in choices[:20]:
        assert choice == RouteChoice("r", choice.arm, ServableRequest.latest(models[choice.arm]), None, "weight")


def test_each_arm_sends_its_own_request(router: Router) -> None:
    arms = (Arm("pinned", "rec_a", 1, version=1), Arm("labelled", "rec_b", 0, version_label="canary"))
    router.set_routes([Route("r", arms, rules=(HeaderRule("x-arm", "labelled", "labelled"),))])
    assert router.choose("r").request == ServableRequest.specific("rec_a", 1)
    assert router.choose("r", {"x-arm": "labelled"}).request == ServableRequest.label("rec_b", "canary")


def test_the_same_key_always_lands_in_the_same_arm(router: Router, manager: BasicManager) -> None:
    router.set_routes([ab()])
    other = Router(manager, model_names_of(manager), rng=random.Random(99))  # another router, another seed
    other.set_routes([ab()])
    arms = {}
    for key in range(300):
        headers = {"x-user-id": f"user-{key}"}
        arms[key] = router.choose("recommender", headers).arm
        assert router.choose("recommender", headers).reason == "segment"
        assert {router.choose("recommender", headers).arm for _ in range(5)} == {arms[key]}
        assert other.choose("recommender", headers).arm == arms[key]
    assert set(arms.values()) == {"control", "treatment"}
    # An empty key value counts as no key: a weighted draw.
    assert router.choose("recommender", {"x-user-id": ""}).reason == "weight"
    other.close()


def test_90_10_to_50_50_moves_only_the_keys_it_must(router: Router) -> None:
    keys = [{"x-user-id": f"{k:08d}"} for k in range(2000)]
    router.set_routes([ab(90, 10)])
    before = [router.choose("recommender", headers).arm for headers in keys]
    router.put_route(ab(50, 50))
    after = [router.choose("recommender", headers).arm for headers in keys]
    assert within_sigmas(before.count("treatment"), 2000, 0.1)
    assert within_sigmas(after.count("treatment"), 2000, 0.5)
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert set(moved) == {("control", "treatment")}  # nobody leaves the treatment arm
    assert within_sigmas(len(moved), 2000, 0.4)  # about 40 % of all keys


def test_raising_one_weight_of_three_moves_keys_only_into_that_arm(router: Router) -> None:
    def three(c_weight: float) -> Route:
        return Route("r", (Arm("a", "rec_a", 50), Arm("b", "rec_b", 30), Arm("c", "rec_c", c_weight)),
                     segment_key="x-user-id")

    keys = [{"x-user-id": f"u{k}"} for k in range(2000)]
    router.set_routes([three(20)])
    before = [router.choose("r", headers).arm for headers in keys]
    router.set_routes([three(60)])
    after = [router.choose("r", headers).arm for headers in keys]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert moved and {a for _, a in moved} == {"c"} and {b for b, _ in moved} == {"a", "b"}
    # c's share goes from 20 % to 60/140 = 43 %.
    assert within_sigmas(after.count("c"), 2000, 60 / 140)


def test_header_rules_win_first_match_and_names_are_case_insensitive(router: Router) -> None:
    rules = (HeaderRule("X-Country", "DE", "treatment"), HeaderRule("x-tier", "gold", "control"),
             HeaderRule("x-beta", "yes", "dark"))
    arms = (Arm("control", "rec_a", 100), Arm("treatment", "rec_b", 0.001), Arm("dark", "rec_c", 0))
    router.set_routes([Route("r", arms, segment_key="x-user-id", rules=rules)])
    key = {"x-user-id": "someone"}
    assert router.choose("r", key).arm == "control"
    choice = router.choose("r", {**key, "x-country": "DE"})
    assert (choice.arm, choice.reason) == ("treatment", "rule")  # the rule beats segment and weight
    assert router.choose("r", {"x-country": "DE", "x-tier": "gold"}).arm == "treatment"  # first match
    assert router.choose("r", {"x-country": "de", "x-tier": "gold"}).arm == "control"  # values exact
    assert router.choose("r", {"x-beta": "yes"}).arm == "dark"  # weight 0 only through a rule
    assert router.choose("r", {"x-country": "FR"}).reason == "weight"


# -- configuration -----------------------------------------------------------------------


def test_configuration_errors_leave_the_old_routes_in_force(router: Router, manager: BasicManager) -> None:
    router.set_routes([ab()])
    before = router.routes()
    missing = Route("other", (Arm("only", "no_such_model"),))
    with pytest.raises(NotFoundError, match="other.*no_such_model"):
        router.set_routes([ab(50, 50), missing])
    with pytest.raises(NotFoundError, match="no_such_model"):
        router.put_route(missing)
    with pytest.raises(NotFoundError, match="shadow.*no_such_model"):
        router.put_route(ab(shadow=Shadow("no_such_model")))
    with pytest.raises(AlreadyExistsError, match="rec_a"):
        router.put_route(Route("rec_a", (Arm("x", "rec_b"),)))
    with pytest.raises(InvalidArgumentError, match="more than once"):
        router.set_routes([ab(50, 50), ab(10, 90)])
    with pytest.raises(InvalidArgumentError, match="Route"):
        router.set_routes(["recommender"])  # type: ignore[list-item]
    assert router.routes() == before and router.get_route("recommender") == ab()
    with pytest.raises(NotFoundError, match="nope"):
        router.remove_route("nope")
    with pytest.raises(NotFoundError, match="nope"):
        router.choose("nope")
    with pytest.raises(NotFoundError, match="nope"):
        router.statistics("nope")
    with pytest.raises(InvalidArgumentError, match="shadow_queue_size"):
        Router(manager, lambda: MODELS, shadow_queue_size=0)


def test_routes_are_listed_added_replaced_and_removed(router: Router) -> None:
    assert router.routes() == [] and not router.is_route("recommender")
    router.set_routes([ab(), Route("b_only", (Arm("b", "rec_b"),))])
    assert [route.name for route in router.routes()] == ["b_only", "recommender"]
    assert router.route_names() == {"b_only", "recommender"} and router.is_route("b_only")
    router.put_route(Route("a_only", (Arm("a", "rec_a"),)))
    router.put_route(ab(50, 50))
    assert router.get_route("recommender") == ab(50, 50) and router.is_route("a_only")
    router.remove_route("b_only")
    assert router.route_names() == {"a_only", "recommender"} and router.get_route("b_only") is None
    router.set_routes([])
    assert router.routes() == [] and router.route_names() == frozenset()


# -- calling, statistics -----------------------------------------------------------------


def test_call_answers_from_the_chosen_arm_and_counts_it(router: Router) -> None:
    router.set_routes([ab(rules=(HeaderRule("x-country", "DE", "treatment"),))])
    result, answered_by = router.call("recommender", payload, {"x-country": "DE"})
    assert (result, answered_by) == ("rec_b", ServableId("rec_b", 1))

    def fails_on_a(servable: FakeServable) -> str:
        if servable.payload == "rec_a":
            raise ValueError("rec_a cannot answer this")
        return str(servable.payload)

    keys = [{"x-user-id": str(k)} for k in range(200)]
    expected = {"control": 0, "treatment": 1}
    for headers in keys:
        arm = router.choose("recommender", headers).arm
        expected[arm] += 1
        if arm == "control":
            with pytest.raises(ValueError, match="rec_a cannot"):
                router.call("recommender", fails_on_a, headers)
        else:
            assert router.call("recommender", fails_on_a, headers)[0] == "rec_b"
    for _ in range(30):
        router.call("recommender", payload)
    doc = router.statistics("recommender")
    control, treatment = doc["arms"]["control"], doc["arms"]["treatment"]
    assert control["errors"] == expected["control"] and treatment["errors"] == 0
    assert control["requests"] + treatment["requests"] == 231
    assert control["requests"] >= expected["control"] and treatment["requests"] >= expected["treatment"]
    assert control["latency_ms"]["count"] == control["requests"]
    assert treatment["latency_ms"]["count"] == treatment["requests"]
    assert doc["choices"] == {"rule": 1, "segment": 200, "weight": 30}
    assert (control["model_name"], control["weight"], doc["shadow"]) == ("rec_a", 90, None)


def test_a_missing_version_is_counted_as_an_error_and_raised(router: Router) -> None:
    router.set_routes([Route("r", (Arm("old", "rec_a", version=7),))])
    with pytest.raises(NotFoundError, match=r"Specific\(rec_a, 7\)"):
        router.call("r", payload)
    assert router.statistics("r")["arms"]["old"]["errors"] == 1


def test_statistics_survive_updates_for_arms_that_keep_their_name(router: Router) -> None:
    router.set_routes([ab()])
    for _ in range(20):
        router.call("recommender", payload)
    router.put_route(ab(50, 50))  # same arm names, new weights
    doc = router.statistics("recommender")
    assert doc["arms"]["control"]["requests"] + doc["arms"]["treatment"]["requests"] == 20
    assert doc["arms"]["control"]["weight"] == 50
    router.put_route(Route("recommender", (Arm("control", "rec_a"), Arm("canary", "rec_c"))))
    doc = router.statistics("recommender")
    assert set(doc["arms"]) == {"control", "canary"} and doc["arms"]["canary"]["requests"] == 0
    kept = doc["arms"]["control"]["requests"]
    assert kept > 0 and doc["choices"]["weight"] == 20
    router.remove_route("recommender")
    router.put_route(ab())
    doc = router.statistics("recommender")
    assert doc["arms"]["control"]["requests"] == 0 and doc["choices"]["weight"] == 0


# -- shadow ------------------------------------------------------------------------------


class Calls:
    """Records (payload, thread) of each call; the shadow's can be held at a gate."""

    def __init__(self, fail_shadow: bool = False) -> None:
        self.lock = threading.Lock()  # guards seen
        self.seen: list[tuple[str, str]] = []
        self.fail_shadow = fail_shadow
        self.gate = threading.Event()
        self.gate.set()
        self.shadow_started = threading.Event()

    def __call__(self, servable: FakeServable) -> str:
        with self.lock:
            self.seen.append((str(servable.payload), threading.current_thread().name))
        if servable.payload == "rec_c":
            self.shadow_started.set()
            assert self.gate.wait(10), "the test never opened the gate"
            if self.fail_shadow:
                raise RuntimeError("the shadow model failed")
        return str(servable.payload)


def shadow_stats(router: Router) -> dict[str, Any]:
    return router.statistics("recommender")["shadow"]


def test_shadow_runs_after_the_main_call_and_never_changes_its_answer(router: Router) -> None:
    router.set_routes([ab(shadow=Shadow("rec_c"))])
    calls = Calls()
    result, answered_by = router.call("recommender", calls, {"x-user-id": "7"})
    assert result in ("rec_a", "rec_b") and answered_by.name == result
    assert poll_until(lambda: shadow_stats(router)["requests"] == 1)
    main, shadow = calls.seen
    assert main == (result, threading.current_thread().name)
    assert shadow == ("rec_c", "pyserving-shadow")
    assert shadow_stats(router)["errors"] == 0 and shadow_stats(router)["latency_ms"]["count"] == 1


def test_shadow_failures_are_counted_never_raised(router: Router) -> None:
    router.set_routes([ab(shadow=Shadow("rec_c"))])
    calls = Calls(fail_shadow=True)
    for _ in range(3):
        assert router.call("recommender", calls)[0] in ("rec_a", "rec_b")
    assert poll_until(lambda: shadow_stats(router)["requests"] == 3)
    assert shadow_stats(router)["errors"] == 3
    # A ServingError from get_handle (no such version) is counted the same way.
    router.put_route(ab(shadow=Shadow("rec_c", version=9)))
    router.call("recommender", payload)
    assert poll_until(lambda: shadow_stats(router)["requests"] == 4)  # same shadow model: counters kept
    assert shadow_stats(router)["errors"] == 4


def test_a_full_shadow_queue_drops_and_counts(manager: BasicManager) -> None:
    router = Router(manager, model_names_of(manager), shadow_queue_size=2)
    try:
        router.set_routes([ab(shadow=Shadow("rec_c"))])
        calls = Calls()
        calls.gate.clear()
        router.call("recommender", calls)
        assert calls.shadow_started.wait(10)  # the worker holds job 1 at the gate
        for _ in range(5):
            router.call("recommender", calls)  # jobs 2 and 3 queue, 4 to 6 are dropped
        assert shadow_stats(router)["dropped"] == 3
        calls.gate.set()
        assert poll_until(lambda: shadow_stats(router)["requests"] == 3)
        assert shadow_stats(router)["dropped"] == 3 and shadow_stats(router)["errors"] == 0
    finally:
        router.close()


def test_shadow_percent_zero_never_mirrors_and_fifty_mirrors_about_half(router: Router) -> None:
    router.set_routes([ab(shadow=Shadow("rec_c", percent=0))])
    for _ in range(200):
        assert router.choose("recommender").shadow is None
        router.call("recommender", payload)
    assert shadow_stats(router)["requests"] == 0 and shadow_stats(router)["dropped"] == 0
    router.put_route(ab(shadow=Shadow("rec_c", percent=50)))
    mirrored = sum(router.choose("recommender").shadow is not None for _ in range(2000))
    assert within_sigmas(mirrored, 2000, 0.5)
    assert router.choose("recommender").request != ServableRequest.latest("rec_c")


def test_close_is_bounded_and_later_mirrors_are_dropped(manager: BasicManager) -> None:
    others = set(threading.enumerate())
    router = Router(manager, model_names_of(manager), shadow_queue_size=4)
    router.close()  # no worker yet: nothing to do
    router = Router(manager, model_names_of(manager), shadow_queue_size=4)
    router.set_routes([ab(shadow=Shadow("rec_c"))])
    calls = Calls()
    calls.gate.clear()
    router.call("recommender", calls)
    assert calls.shadow_started.wait(10)
    router.call("recommender", calls)  # queued behind the blocked one
    router.close(timeout_s=0.01)  # returns although the shadow call is still blocked
    assert shadow_stats(router)["dropped"] == 1
    assert router.call("recommender", payload)[0] in ("rec_a", "rec_b")  # routing still works
    assert shadow_stats(router)["dropped"] == 2
    calls.gate.set()
    ours = [t for t in threading.enumerate() if t.name == "pyserving-shadow" and t not in others]
    assert len(ours) == 1
    assert poll_until(lambda: not ours[0].is_alive())  # it ends once its call returned
    assert shadow_stats(router)["requests"] == 1
    router.close()  # idempotent


# -- threads -----------------------------------------------------------------------------


def test_calls_while_routes_are_swapped(router: Router) -> None:
    configs = [
        lambda: [Route("recommender", (Arm("x", "rec_a"), Arm("y", "rec_b")), segment_key="x-user-id")],
        lambda: [Route("recommender", (Arm("z", "rec_c"),)), Route("side", (Arm("s", "rec_a"),))],
    ]
    router.set_routes(configs[0]())
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            swaps[0] += 1
            router.set_routes(configs[swaps[0] % 2]())  # a new Route object every time
            if swaps[0] % 7 == 0:
                router.put_route(ab(shadow=Shadow("rec_c")))

    checked = [0]
    lock = threading.Lock()  # guards checked

    def one_call(client: int, call: int) -> str | None:
        before = router.get_route("recommender")
        result, answered_by = router.call("recommender", payload, {"x-user-id": f"{client}-{call}"})
        after = router.get_route("recommender")
        if answered_by.name != result:
            return f"answer {result} from {answered_by}"
        if before is not None and before is after:  # no change during the call: its route was in force
            with lock:
                checked[0] += 1
            if result not in before.model_names():
                return f"{result} answered, but the route in force sends to {sorted(before.model_names())}"
        return None

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        problems = hammer(clients=6, calls=300, one_call=one_call, join_timeout_s=60)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert problems == []
    assert swaps[0] > 1 and checked[0] > 0
