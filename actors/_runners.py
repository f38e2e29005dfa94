"""Warm runners: 1-CPU Ray actors that run a host's plain activities without a lease each.

An activity that asks Ray for nothing runs like a plain Ray task of 1 CPU. As a task,
each attempt first leases a worker from the raylet, which the lease gives back when the
task ends: on the 2-core machine a task round trip from a host is about 2.2 ms, an actor
call 1.2 ms. So a host keeps up to ``RAYLINE_WARM_RUNNERS`` (1) runner actors and sends
such an attempt to an idle one; with none idle, the attempt runs as a task, as before.
A runner starts when the host's last attempt out as a task ends: after the first step of
a sequential workflow, or after a burst (never during one, where its start would take
CPU from the burst).

Resources stay honest: a runner declares the 1 CPU its attempt would have had, and runs
one attempt at a time (its second thread takes interrupts only), so Ray counts and
limits what runs. It also holds that CPU while idle, and a task may be waiting for it:
so a runner idle for ``RAYLINE_WARM_IDLE`` (2) seconds is stopped. A host with attempts
out as tasks (a burst of activities, or ones with other resources) starts no runner,
stops one that comes back while Ray has no CPU free, and one left idle 50 ms. A host
keeps at most one runner per two CPUs of the cluster (none on a 1-CPU cluster). Runners
serve the sequential steps whose latency they cut; bursts run as tasks. A runner Ray
cannot place soon (no free CPU) is given up, and none is tried again for a while.
``RAYLINE_WARM_RUNNERS=0`` turns runners off.

A cancelled attempt gets ``KeyboardInterrupt`` in its thread, as a task does, and its
runner is stopped, not reused: once ``STOP_GRACE`` seconds have passed, or at once if
the attempt has ended. A runner that dies (its process exits, its node goes) fails its
attempt like a crashed task's worker, and the activity's retry policy decides.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from typing import Any

import ray

from rayline._activity import ActivityInfo
from rayline.engine.activities import Outcome

from ._attempt import attempt

log = logging.getLogger("rayline.actors")

SIZE = int(os.environ.get("RAYLINE_WARM_RUNNERS", "1"))
"""Runner actors a host keeps at most; 0 runs every attempt as a Ray task."""
IDLE = float(os.environ.get("RAYLINE_WARM_IDLE", "2"))
"""Seconds a runner may sit idle (holding its CPU) before it is stopped."""
READY_WITHIN = 10.0
"""Seconds a new runner has to start before it is given up (Ray has no CPU for it)."""
BUSY_IDLE = 0.05
"""Seconds a runner may sit idle while its host has attempts out as tasks."""
RETRY_AFTER = 30.0
"""Seconds after a runner could not start before another is tried."""


@ray.remote
class Runner:
    """Runs attempts, one at a time; its second thread delivers interrupts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[tuple[str, str, int, int], int] = {}

    def ready(self) -> bool:
        return True

    @ray.method(num_returns=2)
    def run(self, blob: bytes, info: ActivityInfo, *args: Any) -> tuple[Outcome, Any]:
        key = info._attempt
        with self._lock:
            self._threads[key] = threading.get_ident()
        try:
            return attempt(blob, info, args)
        finally:
            with self._lock:
                self._threads.pop(key, None)

    def interrupt(self, key: tuple[str, str, int, int]) -> bool:
        """Raises ``KeyboardInterrupt`` in the thread running attempt ``key``, if any."""
        with self._lock:
            ident = self._threads.get(tuple(key))  # type: ignore[arg-type]
            if ident is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(KeyboardInterrupt))
            return True


async def stopped_within(ref: Any, info: ActivityInfo, grace: float, what: str) -> bool:
    """Whether the cancelled attempt ``ref`` ended within ``grace`` seconds; if not, says
    so, naming ``what`` is stopped instead."""
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ref.future())), grace)
    except asyncio.TimeoutError:
        log.warning("activity %s (call %d, attempt %d) of workflow %s did not stop %gs "
                    "after it was cancelled: stopping %s", info.activity, info.seq,
                    info.attempt, info.workflow_id, grace, what)
        return False
    except Exception:
        pass  # it stopped (interrupted, or failed on its way out)
    return True


def _free_cpus() -> float:
    free = ray.available_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]
    return float(free)


class WarmPool:
    """A host's runners: the idle ones, newest last, and how many exist or are starting."""

    def __init__(self, size: int = SIZE, idle: float = IDLE) -> None:
        self.size = size
        self.idle = idle
        self._idle: list[tuple[Any, float]] = []  # (runner, idle since)
        self._count = 0
        self._not_before = 0.0
        self._cpus: float | None = None
        self.tasks = 0
        """Attempts of this host out as Ray tasks now (the backend counts them)."""
        self._sweep: asyncio.TimerHandle | None = None
        self._work: set[asyncio.Task[None]] = set()

    def take(self) -> Any | None:
        """An idle runner, now the caller's; or None."""
        if self._idle:
            return self._idle.pop()[0]  # the most recently used: the others age out
        return None

    def warm_up(self) -> None:
        """Starts a runner if this host may have another. The backend calls it when its
        last attempt out as a task has ended: a sequential workflow's first step, or the
        end of a burst, so a runner's start never competes with a burst for the CPUs."""
        if self.size > 0 and self._cpus is None:
            cpus = ray.cluster_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]
            self._cpus = float(cpus)
            self.size = min(self.size, int(self._cpus // 2))
        if self._count < self.size and not self.tasks and \
                time.monotonic() >= self._not_before:
            self._count += 1
            self._spawn(self._start())

    def give(self, runner: Any) -> None:
        """``runner`` finished its attempt and is idle again; stopped instead when this
        host has attempts out as tasks and Ray has no CPU free: they may be waiting for
        the runner's."""
        if self.tasks and _free_cpus() < 1:
            self.drop(runner)
            return
        self._park(runner)

    def _park(self, runner: Any) -> None:
        self._idle.append((runner, time.monotonic()))
        if self.tasks:  # tasks may be waiting for its CPU: idle, it goes soon
            asyncio.get_running_loop().call_later(BUSY_IDLE, self._drop_if_idle, runner)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.idle, self._retire_idle)

    def drop(self, runner: Any) -> None:
        """Stops ``runner`` (dead, or its attempt was cancelled): it is not reused."""
        self._count -= 1
        try:
            ray.kill(runner)
        except Exception:  # already gone
            pass

    def stop_after(self, runner: Any, ref: Any, info: ActivityInfo, grace: float) -> None:
        """Interrupts the cancelled attempt ``ref`` on ``runner``; stops the runner once
        the attempt ends, or ``grace`` seconds later."""
        self._spawn(self._stop(runner, ref, info, grace))

    async def _stop(self, runner: Any, ref: Any, info: ActivityInfo, grace: float) -> None:
        try:
            runner.interrupt.remote(info._attempt)
        except Exception:  # the runner is gone: nothing left to interrupt
            pass
        await stopped_within(ref, info, grace, "its runner")
        self.drop(runner)

    async def _start(self) -> None:
        runner = Runner.options(  # type: ignore[attr-defined]  # a ray.remote class
            num_cpus=1, max_concurrency=2, max_restarts=0).remote()
        try:
            await asyncio.wait_for(runner.ready.remote(), READY_WITHIN)
        except Exception as exc:  # no CPU free for it, or it failed to start
            log.info("a warm runner did not start (%s): attempts run as tasks for %gs",
                     type(exc).__name__, RETRY_AFTER)
            self._not_before = time.monotonic() + RETRY_AFTER
            self.drop(runner)
            return
        self._park(runner)  # the next attempt takes it, burst or not

    def _drop_if_idle(self, runner: Any) -> None:
        for i, (idle, _) in enumerate(self._idle):
            if idle is runner:
                if self.tasks:
                    del self._idle[i]
                    self.drop(runner)
                return

    def _retire_idle(self) -> None:
        self._sweep = None
        now = time.monotonic()
        kept = []
        for runner, since in self._idle:
            if now - since >= self.idle:
                self.drop(runner)
            else:
                kept.append((runner, since))
        self._idle = kept
        if kept:
            self._sweep = asyncio.get_running_loop().call_later(
                self.idle - (now - kept[0][1]), self._retire_idle)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
