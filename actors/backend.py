"""The Ray implementation of the host's ``Backend``.

Activities that ask for Ray resources (num_cpus, num_gpus, memory, resources,
runtime_env, ...) run as Ray tasks with those options. Activities that ask for none run
on a small warm pool of runner actors owned by the host (``RAYLINE_RUNNERS``, default 2,
each with ``RAYLINE_RUNNER_THREADS`` threads; 0 runners sends everything to Ray tasks).
``local=True`` activities run inline in the host. Calls to other hosts and the registry
are actor method calls."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from ray.exceptions import RayError

from rayline._activity import ActivityDefinition, ActivityInfo
from rayline._options import ActivityOptions
from rayline.engine.activities import Outcome, invoke_async, run_sync_or_async
from rayline.messages import CodeVersion, RunSummary

from ._directory import ActorDirectory
from ._names import REGISTRY

log = logging.getLogger("rayline.actors")
REPORT_INTERVAL = 0.05


RUNNERS = int(os.environ.get("RAYLINE_RUNNERS", "2"))
RUNNER_THREADS = int(os.environ.get("RAYLINE_RUNNER_THREADS", "8"))


@ray.remote
def _activity_task(fn: Any, args: tuple[Any, ...], info: ActivityInfo) -> Outcome:
    return run_sync_or_async(fn, args, info)


@ray.remote
class ActivityRunner:
    """A warm worker for activities that ask for no Ray resources: an actor call costs
    less than scheduling a fresh task. Threaded: up to RUNNER_THREADS activities at once."""

    def run(self, fn: Any, args: tuple[Any, ...], info: ActivityInfo) -> Outcome:
        return run_sync_or_async(fn, args, info)


class RayBackend(ActorDirectory):
    """Backend for a host running inside a Ray actor."""

    def __init__(self, namespace: str, version: CodeVersion | None = None) -> None:
        super().__init__(namespace, version)
        self._reports: dict[str, RunSummary] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._runners: list[Any] = []
        self._next_runner = 0
        self._task_options: dict[str, Any] = {}

    def _runner(self) -> Any:
        if not self._runners:
            runner = ActivityRunner.options(  # type: ignore[attr-defined]  # a ray.remote class
                num_cpus=0, max_concurrency=RUNNER_THREADS)
            self._runners = [runner.remote() for _ in range(max(1, RUNNERS))]
        self._next_runner = (self._next_runner + 1) % len(self._runners)
        return self._runners[self._next_runner]

    def _task(self, ray_options: dict[str, Any]) -> Any:
        key = repr(sorted(ray_options.items()))
        task = self._task_options.get(key)
        if task is None:
            task = self._task_options[key] = _activity_task.options(**ray_options)
        return task

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        if options.local:
            return await invoke_async(definition.fn, args, info)
        if options.ray or RUNNERS == 0:
            ref = self._task(options.ray).remote(definition.fn, args, info)
        else:
            ref = self._runner().run.remote(definition.fn, args, info)
        try:
            return await ref  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except ray.exceptions.ActorDiedError as exc:  # a runner died: replace the pool
            self._runners = []
            return ("err", {"type": "ray.exceptions.ActorDiedError", "message": str(exc),
                            "stack": "", "fatal": False})
        except RayError as exc:  # the worker died, or Ray could not run the task
            return ("err", {"type": f"ray.exceptions.{type(exc).__name__}", "message": str(exc),
                            "stack": "", "fatal": False})

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
