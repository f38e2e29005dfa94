"""The Ray implementation of the host's ``Backend``.

Every activity runs as a Ray task with its Ray options (num_cpus, num_gpus, memory,
resources, runtime_env, ...), so Ray counts and limits what it uses: one that asks for
nothing reserves what a plain Ray task does (1 CPU), and runs on one of the host's warm
1-CPU runner actors when one is idle (``_runners``). ``local=True`` activities run in
the host process instead: async ones on its event loop, sync ones on a thread of their
own, so neither blocks the other workflows of the host. A cancelled attempt's task is
interrupted (``ray.cancel``: ``KeyboardInterrupt`` in the activity) and, if it is still
running ``STOP_GRACE`` seconds later, its worker process is stopped. Heartbeats from an
activity go to its host as actor calls, not awaited. Calls to other hosts and the
registry are actor method calls."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray import cloudpickle  # as Ray pickles task arguments (keeps file names)
from ray.exceptions import RayError

from rayline._activity import ActivityDefinition, ActivityInfo
from rayline._options import ActivityOptions
from rayline._values import Stored
from rayline.engine.activities import Outcome, invoke, invoke_async
from rayline.messages import CodeVersion, RunSummary
from rayline.storage.codec import Codec

from ._attempt import Context, attempt
from ._directory import ActorDirectory
from ._names import REGISTRY
from ._runners import WarmPool, stopped_within

log = logging.getLogger("rayline.actors")
REPORT_INTERVAL = 0.05
STOP_GRACE = float(os.environ.get("RAYLINE_STOP_GRACE", "5"))
"""Seconds a cancelled activity has to stop by itself before its process is stopped."""
LOCAL_THREADS = int(os.environ.get("RAYLINE_LOCAL_THREADS", "16"))
"""Threads of a host for sync ``local=True`` activities."""


@ray.remote(num_returns=2)
def _activity_task(blob: bytes, info: ActivityInfo, *args: Any) -> tuple[Outcome, Any]:
    """One attempt, as a Ray task (its args one by one, so Ray resolves ``ObjectRef``\ s).
    ``blob`` is the activity's pickled ``Context``."""
    return attempt(blob, info, args)


def _owned(outcome: Outcome, value_ref: Any) -> Outcome:
    """An attempt's outcome; a large result keeps the ``ObjectRef`` of its value, which
    this host owns (the call's second return)."""
    kind, value = outcome
    if isinstance(value, Stored):
        value = dataclasses.replace(value, object_ref=value_ref)
    return kind, value


def _ray_failure(exc: RayError) -> Outcome:
    """A retryable failed attempt: Ray could not run it, or its process died."""
    return ("err", {"type": f"ray.exceptions.{type(exc).__name__}", "message": str(exc),
                    "stack": "", "fatal": False})


class RaySpace:
    """Ray's object store, where a host keeps large values for the next activity."""

    @staticmethod
    def is_ref(value: Any) -> bool:
        return isinstance(value, ray.ObjectRef)

    @staticmethod
    def put(value: Any) -> Any:
        return ray.put(value)

    @staticmethod
    def get(ref: Any) -> Any:
        return ray.get(ref)

    @staticmethod
    async def fetch(ref: Any) -> Any:
        return await ref


class RayBackend(ActorDirectory):
    """Backend for a host running inside a Ray actor."""

    def __init__(self, namespace: str, storage_url: str,
                 version: CodeVersion | None = None, codec: Codec | None = None) -> None:
        super().__init__(namespace, version)
        self.storage_url = storage_url
        self.codec = codec
        """Sent with each activity task (which keeps a large result in storage)."""
        self.space = RaySpace()
        self._reports: dict[str, RunSummary] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._task_options: dict[str, Any] = {}
        self._contexts: dict[tuple[int, bool], tuple[Any, bytes]] = {}
        self._warm = WarmPool()
        self._local = ThreadPoolExecutor(LOCAL_THREADS, thread_name_prefix="rayline-local")
        self._stopping: set[asyncio.Task[None]] = set()

    def _task(self, ray_options: dict[str, Any]) -> Any:
        key = repr(sorted(ray_options.items()))
        task = self._task_options.get(key)
        if task is None:  # retries are the activity's RetryPolicy's alone, not Ray's too
            task = self._task_options[key] = _activity_task.options(
                **ray_options, max_retries=0, num_returns=2)
        return task

    def _context(self, fn: Any, watched: bool) -> bytes:
        """The pickled ``Context`` of ``fn``'s attempts, made once per function."""
        key = (id(fn), watched)
        known = self._contexts.get(key)
        if known is not None and known[0] is fn:
            return known[1]
        context = Context(fn, self.namespace, self.storage_url, self.codec, watched)
        blob: bytes = cloudpickle.dumps(context)  # type: ignore[no-untyped-call]
        self._contexts[key] = (fn, blob)  # holds fn, so its id is not reused meanwhile
        return blob

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        if options.local:
            if asyncio.iscoroutinefunction(definition.fn):
                return await invoke_async(definition.fn, args, info)
            return await asyncio.get_running_loop().run_in_executor(
                self._local, invoke, definition.fn, args, info)
        blob = self._context(definition.fn, options.heartbeat_timeout is not None)
        runner = None if options.ray else self._warm.take()  # asks Ray for nothing: 1 CPU
        if runner is not None:
            return await self._run_warm(runner, blob, info, args)
        self._warm.tasks += 1  # a runner may not hold a CPU this task waits for
        try:
            return await self._run_task(options, blob, info, args)
        finally:
            self._warm.tasks -= 1
            if not self._warm.tasks and not options.ray:  # a burst ended: warm up again
                self._warm.warm_up()

    async def _run_task(self, options: ActivityOptions, blob: bytes, info: ActivityInfo,
                        args: tuple[Any, ...]) -> Outcome:
        """One attempt as a Ray task with the activity's Ray options."""
        ref, value_ref = self._task(options.ray).remote(blob, info, *args)
        try:
            return _owned(await ref, value_ref)
        except asyncio.CancelledError:
            stopping = asyncio.get_running_loop().create_task(self._stop(ref, info))
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            raise
        except RayError as exc:  # the worker died, or Ray could not run the task
            return _ray_failure(exc)

    async def _run_warm(self, runner: Any, blob: bytes, info: ActivityInfo,
                        args: tuple[Any, ...]) -> Outcome:
        """One attempt on a warm runner (``_runners``), which goes back to the pool after."""
        ref, value_ref = runner.run.remote(blob, info, *args)
        try:
            outcome = await ref
        except asyncio.CancelledError:
            self._warm.stop_after(runner, ref, info, STOP_GRACE)
            raise
        except RayError as exc:  # the runner died: like a task's crashed worker
            self._warm.drop(runner)
            return _ray_failure(exc)
        self._warm.give(runner)
        return _owned(outcome, value_ref)

    @staticmethod
    async def _stop(ref: Any, info: ActivityInfo) -> None:
        """Interrupts a cancelled activity's task, then stops its process if it goes on."""
        ray.cancel(ref)
        if not await stopped_within(ref, info, STOP_GRACE, "its process"):
            ray.cancel(ref, force=True)

    def report(self, summary: RunSummary) -> None:
        self._reports[summary.workflow_id] = summary
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(REPORT_INTERVAL)
        batch, self._reports = list(self._reports.values()), {}
        try:  # not awaited: the registry is off the hot path
            self.handle(REGISTRY).report.remote(batch)
        except Exception:  # the registry rebuilds its index from storage when it restarts
            log.warning("could not report %d updates to the registry", len(batch))

    def retire(self, host: str) -> None:
        try:  # not awaited: the registry stops this very process
            self.handle(REGISTRY).retire.remote(host)
        except Exception:  # its next retire_idle round stops the host instead
            log.warning("could not ask the registry to stop idle host %s", host)
