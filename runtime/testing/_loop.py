"""The test environment's event loop: a loop of its own, in a thread, whose clock can skip.

Invariants:
- ``loop.time()`` is ``time.monotonic()`` plus an offset that only grows: every timer,
  ``asyncio.sleep`` and ``wait_for`` of the loop, and the host's clocks built on it, see
  one time that never goes back.
- The loop is *quiet* when it has no ready callback (it is about to wait), no I/O is
  ready, and nothing it started is working elsewhere: no ``run_in_executor`` job
  (storage I/O, a sync activity's thread) until its future is done, and no activity
  attempt (``working``). Only a quiet loop skips: it adds the wait to its next timer to
  the offset instead of waiting, so a timer never fires while work that could still
  change what is due is under way, and an activity's own time (its ``start_to_close``,
  its heartbeats) is always wall time.
- It skips only while skipping is on (a time-skipping loop) and someone waits on it
  (``unlocked``): a test awaiting a result, or ``sleep``. Otherwise time runs at wall
  speed, so a signal sent right after a start is never overtaken by a skipped timer.
- ``settled()`` resolves the first time the loop is quiet after it is called: the
  work that was due has run until it waits on something again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
import threading
import time
from typing import Any, Awaitable, Callable, Coroutine, Iterator, TypeVar

T = TypeVar("T")

_SelectResult = list[tuple[selectors.SelectorKey, int]]


class _Selector(selectors.DefaultSelector):
    """The loop's selector: where the loop waits, and so where a quiet loop skips."""

    def __init__(self) -> None:
        super().__init__()
        self.owner: SkippingLoop | None = None

    def select(self, timeout: float | None = None) -> _SelectResult:
        loop = self.owner
        if loop is None or (timeout is not None and timeout <= 0):
            return super().select(timeout)
        ready = super().select(0)
        if ready or loop.working:
            return ready or super().select(timeout)
        if loop.on_quiet():
            return []  # settled waiters resolved: their callbacks run now
        if timeout is not None and loop.skipping and loop.unlocked:
            loop.offset += timeout  # the next timer is due now
            return []
        return super().select(timeout)


class SkippingLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock skips to its next timer when it is quiet and unlocked
    (see the module docstring); without ``skipping`` a plain loop that can tell when
    it has settled."""

    def __init__(self, skipping: bool) -> None:
        self.offset = 0.0
        """Seconds skipped so far."""
        self.skipping = skipping
        self.unlocked = 0
        """Waits (a result, ``sleep``) during which time may skip."""
        self.working = 0
        """Executor jobs and activity attempts under way."""
        self._settling: list[asyncio.Future[None]] = []
        selector = _Selector()
        super().__init__(selector)
        selector.owner = self

    def time(self) -> float:
        return time.monotonic() + self.offset

    def run_in_executor(self, executor: Any, func: Callable[..., T],  # type: ignore[override]
                        *args: Any) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.working += 1
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, _: asyncio.Future[Any]) -> None:
        self.working -= 1

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks work under way (an activity attempt): time does not skip meanwhile."""
        self.working += 1
        try:
            yield
        finally:
            self.working -= 1

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Lets time skip while the body waits (a result, ``sleep``)."""
        self.unlocked += 1
        try:
            yield
        finally:
            self.unlocked -= 1

    def settled(self) -> asyncio.Future[None]:
        """Resolves once the loop is quiet (see the module docstring)."""
        future = self.create_future()
        self._settling.append(future)
        return future

    def on_quiet(self) -> bool:
        """Called by the selector when the loop is quiet: resolves ``settled`` waiters;
        whether there were any."""
        waiting, self._settling = self._settling, []
        woke = False
        for future in waiting:
            if not future.done():
                future.set_result(None)
                woke = True
        return woke


class LoopThread:
    """A ``SkippingLoop`` running in a daemon thread; coroutines are sent to it from
    other threads and loops."""

    def __init__(self, skipping: bool) -> None:
        self.loop = SkippingLoop(skipping)
        self._thread = threading.Thread(target=self._run, name="rayline-testing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """``coro`` run on this loop, awaitable from another loop (cancelling the await
        cancels it)."""
        return asyncio.wrap_future(self.submit(coro))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run on this loop; blocks the calling thread until it is done."""
        return self.submit(coro).result()

    def close(self) -> None:
        """Cancels what still runs on the loop, stops it and closes it; blocks the
        calling thread (not the loop's) meanwhile."""
        if self.loop.is_closed():
            return
        self.run(wind_down())
        self._stop()

    async def aclose(self) -> None:
        """``close`` for a caller on another event loop, which it does not block."""
        if self.loop.is_closed():
            return
        await self.call(wind_down())
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def wind_down() -> None:
    """Cancels every other task of the running loop and waits for them, then for its
    default executor's threads."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_default_executor()
