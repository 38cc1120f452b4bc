"""Counters of a batch queue: :class:`QueueStatistics` (a snapshot) and its recorder.

A snapshot is an immutable value safe to hand to any thread; it is built for a metrics
exporter (batch sizes as a histogram-ready mapping, queue delay as sum / count / max,
refusals by reason). Counters only grow; the ``enqueued_*`` and ``in_flight_batches``
fields are the state at the moment of the snapshot. :meth:`QueueStatistics.combine` adds
several queues' snapshots up (e.g. every signature of one model version).

:class:`StatisticsRecorder` is mutated only under its queue's scheduler lock (see
:mod:`pyserving.servable.batcher`); it does no locking itself.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

__all__ = ["QueueStatistics", "StatisticsRecorder"]


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """What a batch queue (or several, combined) did so far. Times in seconds.

    ``tasks`` counts task parts that ran (a split request counts once per part);
    ``rows`` their rows; ``padded_rows`` the rows added to reach ``allowed_batch_sizes``.
    ``batch_sizes``: rows per batch (without padding) -> number of batches.
    Queue delay is measured per task part, from submission to the start of its batch.
    Refusals: ``rejected_full`` (queue full, UNAVAILABLE), ``rejected_too_large``
    (INVALID_ARGUMENT), ``expired`` (deadline passed before the task ran, DEADLINE_EXCEEDED),
    ``cancelled`` (its caller gave up), ``shut_down`` (answered UNAVAILABLE by a stop).
    ``failed_batches``: batches whose computation raised (their tasks got the error).
    """

    name: str = ""
    batches: int = 0
    tasks: int = 0
    rows: int = 0
    padded_rows: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    queue_delay_s_sum: float = 0.0
    queue_delay_count: int = 0
    queue_delay_s_max: float = 0.0
    failed_batches: int = 0
    rejected_full: int = 0
    rejected_too_large: int = 0
    expired: int = 0
    cancelled: int = 0
    shut_down: int = 0
    enqueued_tasks: int = 0
    enqueued_batches: int = 0
    in_flight_batches: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    @property
    def mean_queue_delay_s(self) -> float:
        return self.queue_delay_s_sum / self.queue_delay_count if self.queue_delay_count else 0.0

    @classmethod
    def combine(cls, name: str, parts: Iterable[QueueStatistics]) -> QueueStatistics:
        """The sum of ``parts`` (maxima for ``queue_delay_s_max``), named ``name``."""
        total: dict[str, float | int] = collections.defaultdict(int)
        sizes: collections.Counter[int] = collections.Counter()
        delay_max = 0.0
        for part in parts:
            for key in _SUMMED:
                total[key] += getattr(part, key)
            sizes.update(part.batch_sizes)
            delay_max = max(delay_max, part.queue_delay_s_max)
        return cls(
            name=name,
            batch_sizes=MappingProxyType(dict(sorted(sizes.items()))),
            queue_delay_s_max=delay_max,
            **{key: total[key] for key in _SUMMED},  # type: ignore[arg-type]
        )


_SUMMED = (
    "batches", "tasks", "rows", "padded_rows", "queue_delay_s_sum", "queue_delay_count", "failed_batches",
    "rejected_full", "rejected_too_large", "expired", "cancelled", "shut_down", "enqueued_tasks",
    "enqueued_batches", "in_flight_batches",
)


class StatisticsRecorder:
    """Mutable counters behind :class:`QueueStatistics`; the caller holds the queue's lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches = self.tasks = self.rows = self.padded_rows = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.queue_delay_s_sum = 0.0
        self.queue_delay_count = 0
        self.queue_delay_s_max = 0.0
        self.failed_batches = self.rejected_full = self.rejected_too_large = 0
        self.expired = self.cancelled = self.shut_down = 0

    def record_batch(self, rows: int, padded_rows: int, delays: list[float], failed: bool) -> None:
        """One batch that ran: ``rows`` real rows, ``padded_rows`` padding, per-task queue delays."""
        self.batches += 1
        self.tasks += len(delays)
        self.rows += rows
        self.padded_rows += padded_rows
        self.batch_sizes[rows] += 1
        if delays:
            self.queue_delay_s_sum += sum(delays)
            self.queue_delay_count += len(delays)
            self.queue_delay_s_max = max(self.queue_delay_s_max, max(delays))
        if failed:
            self.failed_batches += 1

    def snapshot(self, enqueued_tasks: int, enqueued_batches: int, in_flight_batches: int) -> QueueStatistics:
        return QueueStatistics(
            name=self.name,
            batches=self.batches,
            tasks=self.tasks,
            rows=self.rows,
            padded_rows=self.padded_rows,
            batch_sizes=MappingProxyType(dict(sorted(self.batch_sizes.items()))),
            queue_delay_s_sum=self.queue_delay_s_sum,
            queue_delay_count=self.queue_delay_count,
            queue_delay_s_max=self.queue_delay_s_max,
            failed_batches=self.failed_batches,
            rejected_full=self.rejected_full,
            rejected_too_large=self.rejected_too_large,
            expired=self.expired,
            cancelled=self.cancelled,
            shut_down=self.shut_down,
            enqueued_tasks=enqueued_tasks,
            enqueued_batches=enqueued_batches,
            in_flight_batches=in_flight_batches,
        )
