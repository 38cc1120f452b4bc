"""load_with_retries and RetryPolicy."""

from __future__ import annotations

import threading

import pytest

from pyserving.loaders import RetryPolicy, load_with_retries
from pyserving.servable.errors import CancelledError, InternalError, InvalidArgumentError, UnavailableError

WAIT_S = 10.0  # upper bound for waits in these tests; never reached when the code is right


class Flaky:
    """A load that fails ``failures`` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise UnavailableError(f"attempt {self.calls} failed")


class NoWaitEvent(threading.Event):
    """A cancel event that fails the test if anyone waits on it."""

    def wait(self, timeout: float | None = None) -> bool:
        raise AssertionError(f"load_with_retries waited {timeout} s")


def test_policy_defaults_and_validation() -> None:
    assert RetryPolicy() == RetryPolicy(max_retries=5, interval_s=60.0)
    with pytest.raises(InvalidArgumentError, match="max_retries must be >= 0, got -1"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(InvalidArgumentError, match="max_retries must be an int"):
        RetryPolicy(max_retries=True)


def test_success_after_failures() -> None:
    load = Flaky(failures=2)
    load_with_retries(load, RetryPolicy(max_retries=3, interval_s=0), NoWaitEvent(), "m")
    assert load.calls == 3


def test_exhaustion_raises_the_last_error() -> None:
    load = Flaky(failures=100)
    with pytest.raises(UnavailableError, match="attempt 3 failed") as info:
        load_with_retries(load, RetryPolicy(max_retries=2, interval_s=0), NoWaitEvent(), "m")
    assert load.calls == 3
    assert isinstance(info.value.__cause__, UnavailableError)


def test_no_retries_means_one_attempt() -> None:
    load = Flaky(failures=1)
    with pytest.raises(UnavailableError):
        load_with_retries(load, RetryPolicy(max_retries=0, interval_s=0), NoWaitEvent())
    assert load.calls == 1


def test_plain_exceptions_are_translated_and_chained() -> None:
    original = ValueError("bad shape")

    def load() -> None:
        raise original

    with pytest.raises(InvalidArgumentError, match="ValueError: bad shape") as info:
        load_with_retries(load, RetryPolicy(max_retries=0), threading.Event())
    assert info.value.__cause__ is original


@pytest.mark.parametrize("interval_s", [0.0, -5.0])
def test_non_positive_interval_does_not_wait(interval_s: float) -> None:
    load = Flaky(failures=4)
    load_with_retries(load, RetryPolicy(max_retries=4, interval_s=interval_s), NoWaitEvent())
    assert load.calls == 5


def test_cancelled_before_the_first_attempt_never_loads() -> None:
    cancelled = threading.Event()
    cancelled.set()
    load = Flaky(failures=0)
    with pytest.raises(CancelledError, match="Loading of servable m cancelled"):
        load_with_retries(load, RetryPolicy(), cancelled, "m")
    assert load.calls == 0


def test_cancellation_wakes_a_long_interval_wait() -> None:
    attempted = threading.Event()
    cancelled = threading.Event()
    outcome: list[BaseException | None] = []

    def load() -> None:
        attempted.set()
        raise InternalError("still broken")

    def run() -> None:
        try:
            load_with_retries(load, RetryPolicy(max_retries=5, interval_s=3600.0), cancelled, "m")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    worker = threading.Thread(target=run, name="retry-test")
    worker.start()
    try:
        assert attempted.wait(WAIT_S)
        cancelled.set()
        worker.join(WAIT_S)
        assert not worker.is_alive(), "cancelling did not wake the hour-long wait"
    finally:
        cancelled.set()
        worker.join(WAIT_S)
    assert len(outcome) == 1
    assert isinstance(outcome[0], CancelledError)
    assert isinstance(outcome[0].__cause__, InternalError)
