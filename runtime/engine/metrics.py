"""What a host measures: the ``Metrics`` sink it calls, and a buffer that batches the numbers.

The host calls its ``Metrics`` where something worth counting happens: a run starts or
closes, an activity attempt ends, a step (an activation) is durable and then carried out,
a storage call returns, a signal is durable, a run is replayed or woken. ``Metrics()``,
the default, does nothing. ``MetricsBuffer`` keeps the numbers in plain dicts and lists
until a reporter takes them (``take``): ``rayline.actors`` does that every
``RAYLINE_METRICS_EVERY`` seconds and hands them to Ray's metrics, which Prometheus
scrapes. ``MeasuredStore`` wraps a ``Store`` to time its calls. No Ray here.

Invariants:
- Recording costs a dict lookup and an integer add or a list append: no lock, no I/O, no
  tags built, nothing formatted. Histograms keep the samples (at most ``MAX_SAMPLES``
  per series between two reports; more are counted in ``dropped``) and the reporter
  observes them in one batch, off the step that made them.
- Storage calls are recorded from the host's I/O threads: an append and an item
  assignment are atomic under the GIL, and ``take`` swaps the containers for new ones,
  so a sample a thread records while a report is taken goes to that report or the next
  (or, rarely, is lost): a number for a dashboard, never a decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConflictError
from ..storage.stores import Store

MAX_SAMPLES = 50_000
"""Samples one histogram series keeps between two reports."""

ATTEMPT_OUTCOMES = ("ok", "failed", "cancelled")
"""How an activity attempt ends: a result, an error (the attempt's own or a timeout), or
cancelled (its workflow was cancelled or terminated, or it moved)."""


class Metrics:
    """The sink a host records into; this one does nothing (see the module docstring)."""

    def started(self, workflow: str) -> None:
        """A run of workflow ``workflow`` started (a new run, a retry, a continue-as-new)."""

    def closed(self, workflow: str, status: str) -> None:
        """A run of ``workflow`` closed here with ``status`` (``RunStatus`` value)."""

    def attempt(self, activity: str, seconds: float, outcome: str) -> None:
        """An attempt of ``activity`` ended after ``seconds`` (``ATTEMPT_OUTCOMES``)."""

    def step(self, durable: float, acted: float) -> None:
        """An activation: seconds from its first event's arrival until its batch was
        durable, and until its commands were carried out."""

    def storage(self, op: str, seconds: float, failed: bool) -> None:
        """A store call (``put``, ``create``, ``get``, ``list``, ``delete``) returned."""

    def signal(self, seconds: float) -> None:
        """A signal was durable in its run's timeline ``seconds`` after the host got it."""

    def replay(self, seconds: float) -> None:
        """A run was rebuilt from its timeline (recovery, wake, move) in ``seconds``."""

    def wake(self, seconds: float) -> None:
        """A parked run was back in memory (timeline read and replayed) in ``seconds``."""


@dataclass
class MetricsReport:
    """What a ``MetricsBuffer`` recorded since the last report."""

    started: dict[str, int] = field(default_factory=dict)
    """Runs started, by workflow name."""
    closed: dict[tuple[str, str], int] = field(default_factory=dict)
    """Runs closed, by (workflow name, status)."""
    attempts: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {outcome: {} for outcome in ATTEMPT_OUTCOMES})
    """Attempt durations by outcome, then activity name."""
    durable: list[float] = field(default_factory=list)
    acted: list[float] = field(default_factory=list)
    storage: dict[str, list[float]] = field(default_factory=dict)
    """Store call durations by operation."""
    storage_errors: dict[str, int] = field(default_factory=dict)
    signals: list[float] = field(default_factory=list)
    replays: list[float] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)
    dropped: int = 0
    """Samples not kept (a series was full)."""


class MetricsBuffer(Metrics):
    """Keeps what the host records until ``take`` (see the module docstring)."""

    def __init__(self) -> None:
        self._now = MetricsReport()

    def take(self) -> MetricsReport:
        """What was recorded since the last call; recording goes on into a new report."""
        taken, self._now = self._now, MetricsReport()
        return taken

    def _keep(self, samples: list[float], value: float) -> None:
        if len(samples) < MAX_SAMPLES:
            samples.append(value)
        else:
            self._now.dropped += 1

    def started(self, workflow: str) -> None:
        counts = self._now.started
        counts[workflow] = counts.get(workflow, 0) + 1

    def closed(self, workflow: str, status: str) -> None:
        counts = self._now.closed
        key = (workflow, status)
        counts[key] = counts.get(key, 0) + 1

    def attempt(self, activity: str, seconds: float, outcome: str) -> None:
        series = self._now.attempts[outcome]
        samples = series.get(activity)
        if samples is None:
            samples = series[activity] = []
        self._keep(samples, seconds)

    def step(self, durable: float, acted: float) -> None:
        now = self._now
        self._keep(now.durable, durable)
        self._keep(now.acted, acted)

    def storage(self, op: str, seconds: float, failed: bool) -> None:
        now = self._now
        samples = now.storage.get(op)
        if samples is None:
            samples = now.storage[op] = []
        self._keep(samples, seconds)
        if failed:
            now.storage_errors[op] = now.storage_errors.get(op, 0) + 1

    def signal(self, seconds: float) -> None:
        self._keep(self._now.signals, seconds)

    def replay(self, seconds: float) -> None:
        self._keep(self._now.replays, seconds)

    def wake(self, seconds: float) -> None:
        self._keep(self._now.wakes, seconds)


_clock = time.perf_counter


class MeasuredStore:
    """A ``Store`` whose calls are timed into ``metrics``: ``create`` is an exclusive
    put. A missing key (``FileNotFoundError``) and a taken one (``ConflictError``) are
    answers, not errors; anything else raised counts as an error of that operation."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.inner = store
        self.url = store.url
        self.quick = store.quick
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:  # check_writable and the like
        return getattr(self.inner, name)

    def _timed(self, op: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        began = _clock()
        failed = True
        try:
            result = call(*args, **kwargs)
            failed = False
            return result
        except (FileNotFoundError, ConflictError):
            failed = False
            raise
        finally:
            self._metrics.storage(op, _clock() - began, failed)

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        self._timed("create" if exclusive else "put", self.inner.put, key, data,
                    exclusive=exclusive, durable=durable)

    def get(self, key: str) -> bytes:
        return self._timed("get", self.inner.get, key)  # type: ignore[no-any-return]

    def delete(self, key: str) -> None:
        self._timed("delete", self.inner.delete, key)

    def list(self, prefix: str) -> list[str]:
        return self._timed("list", self.inner.list, prefix)  # type: ignore[no-any-return]
