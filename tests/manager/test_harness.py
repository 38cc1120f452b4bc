"""LoaderHarness: the state machine, handle counting, quiescing, cancellation."""

from __future__ import annotations

import threading

import pytest

from pyserving.loaders.retry import RetryPolicy
from pyserving.manager.harness import HARNESS_TRANSITIONS, HarnessState, LoaderHarness
from pyserving.servable.errors import (
    CancelledError,
    FailedPreconditionError,
    InternalError,
    UnavailableError,
)
from pyserving.servable.ids import ServableId
from tests.support.polling import poll_until as wait_for
from pyserving.testing import FakeLoader

SID = ServableId("m", 1)
NO_RETRY = RetryPolicy(max_retries=0, interval_s=0)




def ready_harness(loader: FakeLoader | None = None) -> LoaderHarness:
    harness = LoaderHarness(SID, loader or FakeLoader(SID, payload="p"))
    harness.request_load()
    harness.approve_load()
    harness.load(NO_RETRY)
    harness.mark_ready()
    return harness


def test_happy_path_walks_every_state() -> None:
    loader = FakeLoader(SID, payload="p")
    harness = LoaderHarness(SID, loader)
    seen = [harness.state]
    harness.request_load(); seen.append(harness.state)
    harness.approve_load(); seen.append(harness.state)
    harness.load(NO_RETRY); seen.append(harness.state)
    harness.mark_ready(); seen.append(harness.state)
    harness.request_unload(); seen.append(harness.state)
    harness.quiesce(); seen.append(harness.state)
    harness.unload(); seen.append(harness.state)
    assert seen == [
        HarnessState.NEW, HarnessState.LOAD_REQUESTED, HarnessState.LOAD_APPROVED, HarnessState.LOADING,
        HarnessState.READY, HarnessState.UNLOAD_REQUESTED, HarnessState.QUIESCED, HarnessState.DISABLED,
    ]
    assert loader.load_calls == 1 and loader.unload_calls == 1
    assert HARNESS_TRANSITIONS[HarnessState.DISABLED] == frozenset()


def test_duplicate_load_and_premature_unload_are_refused() -> None:
    harness = LoaderHarness(SID, FakeLoader(SID))
    with pytest.raises(FailedPreconditionError, match="Servable not loaded, or unload already requested/ongoing"):
        harness.request_unload()
    harness.request_load()
    with pytest.raises(FailedPreconditionError, match="Duplicate load request"):
        harness.request_load()
    with pytest.raises(InternalError, match="Illegal transition"):
        harness.mark_ready()


def test_error_item_starts_in_error() -> None:
    err = UnavailableError("disk gone")
    harness = LoaderHarness(SID, None, error=err)
    assert harness.state is HarnessState.ERROR and harness.error is err
    with pytest.raises(InternalError):
        LoaderHarness(SID, None)


def test_failed_load_names_the_servable_and_ends_in_error() -> None:
    harness = LoaderHarness(SID, FakeLoader(SID, fail_times=-1))
    harness.request_load()
    harness.approve_load()
    with pytest.raises(InternalError) as info:
        harness.load(RetryPolicy(max_retries=2, interval_s=0))
    assert info.value.message.startswith("Loading servable {name: m version: 1} failed: ")
    assert harness.state is HarnessState.ERROR and harness.error == info.value
    assert harness.try_acquire() is None


def test_load_that_finishes_after_cancel_is_unloaded() -> None:
    loader = FakeLoader(SID)
    harness = LoaderHarness(SID, loader)
    harness.request_load()
    harness.approve_load()
    harness.cancel_load()
    # load_with_retries checks the event before the first attempt, so nothing is loaded
    with pytest.raises(CancelledError) as info:
        harness.load(NO_RETRY)
    assert info.value.message == "Loading of servable {name: m version: 1} cancelled"
    assert loader.load_calls == 0 and harness.state is HarnessState.ERROR


def test_cancel_during_a_successful_attempt_unloads_at_once() -> None:
    gate = threading.Event()
    loader = FakeLoader(SID, gate=gate)
    harness = LoaderHarness(SID, loader)
    harness.request_load()
    harness.approve_load()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            harness.load(NO_RETRY)
        except CancelledError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    harness.cancel_load()
    gate.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and "cancelled" in str(errors[0])
    assert loader.load_calls == 1 and loader.unload_calls == 1 and not loader.loaded


def test_handles_count_and_quiesce_waits_for_release() -> None:
    harness = ready_harness()
    first = harness.try_acquire()
    second = harness.try_acquire()
    assert first is not None and second is not None
    assert first.servable.payload == "p" and harness.refcount == 2
    second.release()
    harness.request_unload()
    quiesced = threading.Event()

    def quiesce() -> None:
        harness.quiesce()
        quiesced.set()

    thread = threading.Thread(target=quiesce)
    thread.start()
    # no new handles once quiescing started (a bounded wait until it did)
    assert wait_for(lambda: harness.state is HarnessState.QUIESCING)
    assert harness.try_acquire() is None
    assert not quiesced.is_set()
    assert first.servable.unloaded is False
    first.release()
    assert quiesced.wait(10)
    thread.join(10)
    assert harness.refcount == 0 and harness.state is HarnessState.QUIESCED
    harness.unload()
    assert harness.state is HarnessState.DISABLED


def test_unload_failure_ends_in_error() -> None:
    loader = FakeLoader(SID)
    harness = ready_harness(loader)
    harness.request_unload()
    harness.quiesce()
    loader.unload()  # make the harness's own unload fail (FakeLoader refuses a double unload)
    with pytest.raises(FailedPreconditionError) as info:
        harness.unload()
    assert info.value.message.startswith("Unloading servable {name: m version: 1} failed: ")
    assert harness.state is HarnessState.ERROR


def test_error_is_final() -> None:
    harness = LoaderHarness(SID, FakeLoader(SID))
    harness.fail(InternalError("x"))
    harness.fail(InternalError("y"))
    assert harness.error == InternalError("x")
    with pytest.raises(FailedPreconditionError):
        harness.request_load()
