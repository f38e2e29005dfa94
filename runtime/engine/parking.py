"""Parked runs: workflows that wait only on timers or signals, kept out of memory.

Invariants:
- A run is parked only when its execution is idle (nothing in its mailbox, nothing in
  flight, no lock held) and has written the same number of batches for ``park_after``
  seconds. What stays in memory is its id and next wake time (``inf`` for signals only);
  the time is also written into its open marker, so a restarting host keeps it parked
  without replaying it.
- One timer per host wakes due runs. Waking replays the run's timeline (the recovery
  path) and turns the marker back into a plain open marker.
- A wake that fails leaves the run parked: one due by its timer is tried again by the
  backoff schedule; a request that wanted it awake gets the error. A run that wakes
  stuck (its code no longer replays) leaves the lot: the host holds it as stuck.
- The heap keeps stale entries of runs woken early; it is rebuilt when they outnumber
  the live ones, so it stays within a constant factor of the parked runs.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from .. import _backoff

if TYPE_CHECKING:
    from .execution import Execution
    from .metrics import Metrics

log = logging.getLogger("rayline.host")


class Owner(Protocol):
    """What the parking lot needs from its host, and nothing more."""

    host_name: str
    executions: dict[str, Execution]
    """The live executions: parking removes one; waking puts it back (``resume_run``)."""
    metrics: Metrics

    def now(self) -> float: ...
    async def resume_run(self, workflow_id: str) -> Execution: ...
    def write_marker(self, workflow_id: str, parked_until: float | None = None) -> None: ...
    def background(self, work: Any) -> None: ...


class ParkingLot:
    """The parked runs of one host."""

    def __init__(self, host: Owner, park_after: float | None) -> None:
        self.host = host
        self.park_after = park_after
        self.parked: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: tuple[float, asyncio.TimerHandle] | None = None
        self._waking: dict[str, asyncio.Future[None]] = {}

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self.parked or workflow_id in self._waking

    def __len__(self) -> int:
        return len(self.parked)

    def on_idle(self, execution: Execution) -> None:
        """The execution waits only on the outside world: park it if it stays that way."""
        if self.park_after is not None:
            asyncio.get_running_loop().call_later(
                self.park_after, self._maybe_park, execution, execution.batches_written)

    def _maybe_park(self, execution: Execution, written: int) -> None:
        host = self.host
        if host.executions.get(execution.workflow_id) is not execution \
                or execution.batches_written != written or not execution.parkable():
            return
        execution.snapshot(parking=True)  # so that waking reads one object, not the history
        wake = execution.park()
        del host.executions[execution.workflow_id]
        until = math.inf if wake is None else wake
        self.add(execution.workflow_id, until)
        host.write_marker(execution.workflow_id, until)

    def abandon(self) -> None:
        """Forgets every parked run and stops the wake timer (a simulated crash)."""
        if self._timer is not None:
            self._timer[1].cancel()
            self._timer = None
        self.parked.clear()
        self._heap.clear()

    def waking(self, workflow_id: str) -> asyncio.Future[None] | None:
        """The wake of ``workflow_id`` in progress, if one is."""
        return self._waking.get(workflow_id)

    def forget(self, workflow_id: str) -> None:
        """Drops a parked run without waking it (it moved to another host); its entry in
        the wake heap is skipped when it comes due."""
        self.parked.pop(workflow_id, None)

    def add(self, workflow_id: str, until: float) -> None:
        """Records ``workflow_id`` as parked until ``until`` (``inf``: until signalled)."""
        self.parked[workflow_id] = until
        if until != math.inf:
            heapq.heappush(self._heap, (until, workflow_id))
            if len(self._heap) > 2 * len(self.parked) + 64:
                self._heap = [(t, w) for w, t in self.parked.items() if t != math.inf]
                heapq.heapify(self._heap)
            self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer[0] <= due:
            return
        if self._timer is not None:
            self._timer[1].cancel()
        delay = max(0.0, due - self.host.now())
        self._timer = (due, asyncio.get_running_loop().call_later(delay, self._on_timer))

    def _on_timer(self) -> None:
        self._timer = None
        now = self.host.now()
        while self._heap and self._heap[0][0] <= now:
            until, workflow_id = heapq.heappop(self._heap)
            if self.parked.get(workflow_id) == until:
                self.host.background(self._wake_when_due(workflow_id, until))
        self._arm()

    async def _wake_when_due(self, workflow_id: str, until: float) -> None:
        """Wakes a run whose timer is due, trying again later if that fails."""
        schedule = _backoff.delays()
        while self.parked.get(workflow_id) == until:
            try:
                await self.wake(workflow_id)
                return
            except Exception as exc:
                if not _backoff.transient(exc):
                    return  # stuck: the host holds it now
                delay = next(schedule)
                log.warning("host %s: waking %s failed (%s); again in %.2fs",
                            self.host.host_name, workflow_id, exc, delay)
                await asyncio.sleep(delay)

    async def wake(self, workflow_id: str) -> None:
        """Brings a parked run back into memory (replaying its timeline)."""
        while (waking := self._waking.get(workflow_id)) is not None:
            await asyncio.wait([waking])  # then it may have parked again: look once more
        if workflow_id not in self.parked:
            return
        done = asyncio.get_running_loop().create_future()
        self._waking[workflow_id] = done
        host = self.host
        try:
            began = time.monotonic()
            await host.resume_run(workflow_id)
            host.metrics.wake(time.monotonic() - began)  # read, replayed: back in memory
            self.parked.pop(workflow_id, None)  # gone already if the run moved meanwhile
        except Exception as exc:
            if not _backoff.transient(exc):  # stuck: resume_run recorded it
                self.parked.pop(workflow_id, None)
            raise
        finally:
            del self._waking[workflow_id]
            done.set_result(None)
        if workflow_id in host.executions:
            host.write_marker(workflow_id)
