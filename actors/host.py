"""The detached host actor: a thin Ray shell around ``rayline.engine.host.Host``.

Named ``host-<task_queue>-<version>-<n>`` (a pool) or
``host-dedicated-<version>-<workflow_id>``, in the Ray namespace ``rayline-<namespace>``,
and created with its code version's ``runtime_env``; ``max_restarts=-1``, so Ray
restarts it after a crash with the same constructor arguments, and it resumes its runs
from storage. A dedicated host asks the registry to stop it once it holds no run
(``Backend.retire``); the registry kills it, and a later call starts it again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from rayline._activity import ActivityInfo
from rayline._code import CodeRef
from rayline._definition import as_workflow
from rayline._serde import Payload
from rayline.core import guards
from rayline.engine.host import Host
from rayline.engine.metrics import MeasuredStore, MetricsBuffer
from rayline.messages import (
    CodeVersion,
    HostStats,
    ResetRequest,
    RunOutcome,
    StartReply,
    StartRequest,
    UpdateOutcome,
    WorkflowDescription,
)
from rayline.storage import RunStore, open_store
from rayline.storage.codec import Codec
from rayline.timeline import Event

from ._metrics import METRICS_EVERY, HostMetrics
from .backend import RayBackend

log = logging.getLogger("rayline.actors")


@ray.remote
class HostActor:
    """One host process: many workflow executions, one event loop. Each method forwards
    to ``Host`` (which implements ``HostAPI``) unchanged."""

    async def __init__(  # type: ignore[misc]  # Ray runs it on the actor's loop
            self, name: str, storage_url: str, namespace: str,
            workflows: dict[str, CodeRef], version: CodeVersion | None = None,
            codec: Codec | None = None) -> None:
        guards.install()  # before any workflow module is imported
        self._measured = MetricsBuffer()
        runs = RunStore(MeasuredStore(open_store(storage_url), self._measured), namespace,
                        codec)
        definitions = [as_workflow(ref.load()) for ref in workflows.values()]
        self.host = Host(name, runs, RayBackend(namespace, storage_url, version, codec),
                         definitions,
                         version=version.id if version else None, metrics=self._measured)
        loop = asyncio.get_running_loop()
        self._recovery = loop.create_task(self.host.recover())
        self._metrics = HostMetrics(name, version.id if version else None)
        self._reporting = loop.create_task(self._report_metrics())

    async def ready(self) -> int:
        return await self._recovery

    async def register(self, workflows: dict[str, CodeRef]) -> list[str]:
        return self.host.register([as_workflow(ref.load()) for ref in workflows.values()])

    async def start(self, request: StartRequest) -> StartReply:
        return await self.host.start(request)

    async def start_many(self, requests: list[StartRequest]
                         ) -> list[StartReply | BaseException]:
        return await self.host.start_many(requests)

    async def results(self, workflow_ids: list[str]) -> list[RunOutcome | Exception | None]:
        return await self.host.results(workflow_ids)

    async def result(self, workflow_id: str, run_id: str | None = None,
                     follow: bool = True) -> RunOutcome:
        return await self.host.result(workflow_id, run_id, follow)

    async def signal(self, workflow_id: str, signal_id: str, data: Payload,
                     expire: float | None = None, request_id: str | None = None,
                     buffer_if_missing: bool = False, run_id: str | None = None) -> None:
        await self.host.signal(workflow_id, signal_id, data, expire, request_id,
                               buffer_if_missing, run_id)

    async def update(self, workflow_id: str, update_id: str, name: str | None,
                     args: list[Payload], wait: bool = True) -> UpdateOutcome:
        return await self.host.update(workflow_id, update_id, name, args, wait)

    async def reset(self, request: ResetRequest) -> StartReply:
        return await self.host.reset(request)

    async def cancel(self, workflow_id: str, reason: str | None = None,
                     run_id: str | None = None) -> None:
        await self.host.cancel(workflow_id, reason, run_id)

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        await self.host.terminate(workflow_id, reason)

    async def release(self, workflow_id: str) -> None:
        await self.host.release(workflow_id)

    async def adopt(self, workflow_id: str, force: bool = False) -> str | None:
        return await self.host.adopt(workflow_id, force)

    async def drain(self) -> None:
        await self.host.drain()

    async def let_go(self, workflow_id: str) -> None:
        await self.host.let_go(workflow_id)

    async def query(self, workflow_id: str, name: str, args: tuple[Any, ...]) -> Any:
        return await self.host.query(workflow_id, name, args)

    async def describe(self, workflow_id: str) -> WorkflowDescription:
        return await self.host.describe(workflow_id)

    async def deliver(self, workflow_id: str, event: Event, run_id: str | None = None) -> None:
        await self.host.deliver(workflow_id, event, run_id)

    async def heartbeat(self, info: ActivityInfo, details: Any = None, number: int = 0
                        ) -> bool:
        return self.host.heartbeat(info, details, number)

    async def stats(self) -> HostStats:
        stats = await self.host.stats()
        return stats.model_copy(update={"node": ray.get_runtime_context().get_node_id()})

    async def _report_metrics(self) -> None:
        while True:
            try:
                self._metrics.record(await self.host.stats())
                self._metrics.send(self._measured.take())
            except Exception:  # never let the loop die: the next round tries again
                log.exception("host: recording metrics failed")
            await asyncio.sleep(METRICS_EVERY)
