"""The Ray implementation of the host's ``Backend``: activities as Ray tasks, calls to
other hosts and to the registry as actor method calls."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import RayError

from rayline._activities import Outcome, invoke_async, run_sync_or_async
from rayline._activity import ActivityDefinition, ActivityInfo
from rayline._options import ActivityOptions

from ._directory import ActorDirectory
from ._names import REGISTRY

log = logging.getLogger("rayline.actors")
REPORT_INTERVAL = 0.05


@ray.remote
def _activity_task(fn: Any, args: tuple[Any, ...], info: ActivityInfo) -> Outcome:
    return run_sync_or_async(fn, args, info)


class RayBackend(ActorDirectory):
    """Backend for a host running inside a Ray actor."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self._reports: dict[str, dict[str, Any]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        if options.local:
            return await invoke_async(definition.fn, args, info)
        ref = _activity_task.options(**options.ray).remote(definition.fn, args, info)
        try:
            return await ref  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except RayError as exc:  # the worker died, or Ray could not run the task
            return ("err", {"type": f"ray.exceptions.{type(exc).__name__}", "message": str(exc),
                            "stack": "", "fatal": False})

    def report(self, record: dict[str, Any]) -> None:
        self._reports[record["workflow_id"]] = record
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(REPORT_INTERVAL)
        batch, self._reports = list(self._reports.values()), {}
        try:
            self.handle(REGISTRY).report.remote(batch)
        except Exception:  # the registry rebuilds its index from storage when it restarts
            log.warning("could not report %d updates to the registry", len(batch))
