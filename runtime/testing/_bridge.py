"""The client's way into a test environment: ``HostAPI`` and ``RegistryAPI`` proxies
whose every method runs the same call on the environment's loop, from another loop.

As the Ray proxies of ``rayline.actors`` do across processes, each method names the
call it makes, with its types; the environment's loop is another thread, not another
process, so arguments and replies are passed as they are. While a ``result`` or
``results`` call waits there, the environment's time may skip (``_loop``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Generic, TypeVar

from .. import messages as m
from .._code import CodeRef
from .._serde import Payload
from ..engine.api import HostAPI, RegistryAPI
from ..timeline import Event
from ._loop import LoopThread

T = TypeVar("T")
R = TypeVar("R")


class _Proxy(Generic[T]):
    def __init__(self, thread: LoopThread, target: Callable[[], T]) -> None:
        self._thread = thread
        self._target = target

    async def _call(self, call: Callable[[T], Awaitable[R]], *, waits: bool = False) -> R:
        """``call(target)`` on the environment's loop; with ``waits``, time may skip
        while it waits there."""
        loop, target = self._thread.loop, self._target

        async def there() -> R:
            if not waits:
                return await call(target())
            with loop.waiting():
                return await call(target())

        return await self._thread.call(there())


class HostBridge(_Proxy[HostAPI]):
    """``HostAPI`` of one host of the environment."""

    async def start(self, request: m.StartRequest) -> m.StartReply:  # execute() waits here
        return await self._call(lambda h: h.start(request), waits=request.wait)

    async def start_many(self, requests: list[m.StartRequest]
                         ) -> list[m.StartReply | BaseException]:
        return await self._call(lambda h: h.start_many(requests))

    async def result(self, workflow_id: str, run_id: str | None = None,
                     follow: bool = True) -> m.RunOutcome:
        return await self._call(lambda h: h.result(workflow_id, run_id, follow), waits=True)

    async def results(self, workflow_ids: list[str]) -> list[m.RunOutcome | Exception | None]:
        return await self._call(lambda h: h.results(workflow_ids), waits=True)

    async def signal(self, workflow_id: str, signal_id: str, data: Payload,
                     expire: float | None = None, request_id: str | None = None,
                     buffer_if_missing: bool = False, run_id: str | None = None) -> None:
        await self._call(lambda h: h.signal(workflow_id, signal_id, data, expire, request_id,
                                            buffer_if_missing, run_id))

    async def update(self, workflow_id: str, update_id: str, name: str | None,
                     args: list[Payload], wait: bool = True) -> m.UpdateOutcome:
        return await self._call(lambda h: h.update(workflow_id, update_id, name, args, wait))

    async def reset(self, request: m.ResetRequest) -> m.StartReply:
        return await self._call(lambda h: h.reset(request))

    async def cancel(self, workflow_id: str, reason: str | None = None,
                     run_id: str | None = None) -> None:
        await self._call(lambda h: h.cancel(workflow_id, reason, run_id))

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        await self._call(lambda h: h.terminate(workflow_id, reason))

    async def release(self, workflow_id: str) -> None:
        await self._call(lambda h: h.release(workflow_id))

    async def adopt(self, workflow_id: str, force: bool = False) -> str | None:
        return await self._call(lambda h: h.adopt(workflow_id, force))

    async def let_go(self, workflow_id: str) -> None:
        await self._call(lambda h: h.let_go(workflow_id))

    async def drain(self) -> None:
        await self._call(lambda h: h.drain())

    async def query(self, workflow_id: str, name: str, args: tuple[Any, ...]) -> Any:
        return await self._call(lambda h: h.query(workflow_id, name, args))

    async def describe(self, workflow_id: str) -> m.WorkflowDescription:
        return await self._call(lambda h: h.describe(workflow_id))

    async def deliver(self, workflow_id: str, event: Event, run_id: str | None = None) -> None:
        await self._call(lambda h: h.deliver(workflow_id, event, run_id))

    async def stats(self) -> m.HostStats:
        return await self._call(lambda h: h.stats())


class RegistryBridge(_Proxy[RegistryAPI]):
    """``RegistryAPI`` of the environment's registry."""

    async def ready(self) -> m.RegistryInfo:
        return await self._call(lambda r: r.ready())

    async def hosts_for(self, task_queue: str,
                        version: m.CodeVersion | str | None = None) -> list[str]:
        return await self._call(lambda r: r.hosts_for(task_queue, version))

    async def configure(self, task_queue: str, hosts: int | None,
                        workflows: dict[str, CodeRef],
                        options: m.HostOptions | None = None,
                        version: m.CodeVersion | None = None) -> list[str]:
        return await self._call(lambda r: r.configure(task_queue, hosts, workflows, options,
                                                      version))

    async def dedicated_host(self, workflow_id: str, task_queue: str,
                             version: m.CodeVersion | str | None = None) -> str:
        return await self._call(lambda r: r.dedicated_host(workflow_id, task_queue, version))

    async def ensure_host(self, name: str) -> None:
        await self._call(lambda r: r.ensure_host(name))

    async def locate(self, workflow_id: str) -> str:
        return await self._call(lambda r: r.locate(workflow_id))

    async def locate_or_none(self, workflow_id: str) -> str | None:
        return await self._call(lambda r: r.locate_or_none(workflow_id))

    async def report(self, summaries: list[m.RunSummary]) -> None:
        await self._call(lambda r: r.report(summaries))

    async def forget(self, runs: dict[str, str]) -> int:
        return await self._call(lambda r: r.forget(runs))

    async def versions(self) -> list[m.VersionSummary]:
        return await self._call(lambda r: r.versions())

    async def retire_idle(self) -> list[str]:
        return await self._call(lambda r: r.retire_idle())

    async def retire(self, name: str) -> bool:
        return await self._call(lambda r: r.retire(name))

    async def upgrade(self, old: str, new: m.CodeVersion | str,
                      workflow_ids: list[str] | None = None) -> m.UpgradeReport:
        return await self._call(lambda r: r.upgrade(old, new, workflow_ids))

    async def drain(self, name: str) -> m.DrainReport:
        return await self._call(lambda r: r.drain(name))

    async def drain_node(self, node: str) -> list[m.DrainReport]:
        return await self._call(lambda r: r.drain_node(node))

    async def host_stats(self) -> list[m.HostStats]:
        return await self._call(lambda r: r.host_stats())

    async def scale(self) -> dict[str, list[str]]:
        return await self._call(lambda r: r.scale())

    async def list(self, request: m.ListRequest) -> m.ListReply:
        return await self._call(lambda r: r.list(request))

    async def count(self, request: m.CountRequest) -> m.CountReply:
        return await self._call(lambda r: r.count(request))

    async def resume_all(self) -> int:
        return await self._call(lambda r: r.resume_all())

    async def stats(self) -> m.RegistryStats:
        return await self._call(lambda r: r.stats())
