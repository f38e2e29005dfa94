"""``ActivityEnvironment``: one activity function run as an attempt runs, alone.

Inside, ``rayline.activity_info()`` is the environment's ``ActivityInfo``,
``rayline.heartbeat(details)`` is recorded in ``heartbeats``, and ``cancel()`` is seen
as a cancelled attempt sees it: ``heartbeat()`` raises ``ActivityCancelledError`` from
then on (and ``activity_info().is_cancelled()`` is true once it has), and an async
activity also gets ``CancelledError`` at the ``await`` it is in, as a local async
activity of a host does.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable, Coroutine, TypeVar, overload

from .. import _activity
from .._activity import ActivityDefinition, ActivityInfo

R = TypeVar("R")


class ActivityEnvironment:
    """Runs activity functions with a given ``ActivityInfo``, recording heartbeats.

    Args:
        info: what ``rayline.activity_info()`` says inside (its ``heartbeat_details``
            are what a retried attempt resumes from); by default call 1, attempt 1 of
            workflow ``"test-workflow"``, named after the function run.
    """

    def __init__(self, info: ActivityInfo | None = None) -> None:
        self.info = info
        self.heartbeats: list[Any] = []
        """The details of each ``rayline.heartbeat(details)`` call, in order."""
        self.on_heartbeat: Callable[[Any], None] | None = None
        """Called with each heartbeat's details as it is made (in the activity's thread
        for a sync one): where a test can ``cancel()`` at a given point."""
        self._cancelled = threading.Event()
        self._task: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Cancels the attempt (see the module docstring); from any thread, before or
        while ``run`` runs."""
        self._cancelled.set()
        task, loop = self._task, self._loop
        if task is None or loop is None or task.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()  # at once: its next step raises, whatever is ready before it
        else:
            loop.call_soon_threadsafe(task.cancel)

    @overload
    async def run(self, fn: Callable[..., Coroutine[Any, Any, R]], *args: Any) -> R: ...
    @overload
    async def run(self, fn: Callable[..., R], *args: Any) -> R: ...
    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs ``fn(*args)`` once (an ``@rayline.activity`` or a plain function; a sync
        one on a thread) and returns its result; what it raises is raised here
        unchanged."""
        target = fn.fn if isinstance(fn, ActivityDefinition) else fn
        name = fn.name if isinstance(fn, ActivityDefinition) else \
            str(getattr(fn, "__name__", "activity"))
        info = self.info or ActivityInfo("test-workflow", "test-run", name, 1, 1)
        _activity._cancelled.discard(info._attempt)  # another environment's, same info
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            if not inspect.iscoroutinefunction(target):
                return await loop.run_in_executor(None, self._run_sync, target, args, info)
            self._task = task = asyncio.ensure_future(self._run_async(target, args, info))
            if self.cancelled:
                task.cancel()
            return await task
        finally:
            self._task = None
            _activity._cancelled.discard(info._attempt)

    async def _run_async(self, fn: Callable[..., Any], args: tuple[Any, ...],
                         info: ActivityInfo) -> Any:
        current = _activity._current.set(info)
        beat = _activity._beat.set(self._beat)
        try:
            return await fn(*args)
        finally:
            _activity._beat.reset(beat)
            _activity._current.reset(current)

    def _run_sync(self, fn: Callable[..., Any], args: tuple[Any, ...], info: ActivityInfo) -> Any:
        current = _activity._current.set(info)
        beat = _activity._beat.set(self._beat)
        try:
            return fn(*args)
        finally:
            _activity._beat.reset(beat)
            _activity._current.reset(current)

    def _beat(self, info: ActivityInfo, details: Any) -> bool:
        self.heartbeats.append(details)
        if self.on_heartbeat is not None:
            self.on_heartbeat(details)
        return self.cancelled

