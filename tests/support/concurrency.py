"""Many client threads at once, for tests that check every caller gets its own answer."""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["hammer"]


def hammer(clients: int, calls: int, one_call: Callable[[int, int], str | None], join_timeout_s: float) -> list[str]:
    """``clients`` threads start together and each make ``calls`` calls of
    ``one_call(client, call)``, which returns a problem description or ``None``; an
    exception counts as a problem. Returns every problem reported. Fails if a thread is
    still running after ``join_timeout_s``.
    """
    failures: list[str] = []
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        start.wait(join_timeout_s)
        for call in range(calls):
            try:
                problem = one_call(number, call)
            except Exception as exc:  # noqa: BLE001 - reported below
                problem = repr(exc)
            if problem:
                failures.append(f"client {number} call {call}: {problem}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout_s)
    assert not any(thread.is_alive() for thread in threads), "a client thread never finished"
    return failures
