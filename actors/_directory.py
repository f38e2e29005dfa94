"""Finding actors by name and calling them, shared by hosts and clients: typed proxies
for the registry (``RegistryAPI``) and the hosts (``HostAPI``). Every call is a named
Ray method; a call to an actor that is restarting is retried, a name that has no actor
yet is created through the registry."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Awaitable, Callable, TypeVar

import ray

from rayline import _backoff
from rayline import messages as m
from rayline._code import CodeRef
from rayline._serde import Payload
from rayline.engine.registry import pick
from rayline.errors import HostDiedError
from rayline.timeline import Event

from ._names import REGISTRY, call, get_actor

T = TypeVar("T")
UNAVAILABLE = (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError,
               ray.exceptions.RayActorError)
Invoke = Callable[[Any], Any]  # handle -> ObjectRef: one named method's .remote(...)


POOL_TTL = 5.0
"""Seconds a client keeps a pool's host names before asking the registry again."""


class ActorDirectory:
    """Cached handles to a namespace's registry and hosts, with retries across restarts."""

    def __init__(self, namespace: str, version: m.CodeVersion | None = None) -> None:
        self.namespace = namespace
        self._version = version
        self._handles: dict[str, Any] = {}
        self._pools: dict[tuple[str, str | None], tuple[float, list[str]]] = {}
        self._asking: dict[tuple[str, str | None], asyncio.Future[list[str]]] = {}

    @property
    def version(self) -> m.CodeVersion | None:
        """The code version new workflows placed from here run (``None``: unversioned)."""
        return self._version

    def handle(self, name: str) -> Any:
        found = self._handles.get(name)
        if found is None:
            found = self._handles[name] = get_actor(self.namespace, name)
        return found

    def registry(self) -> RayRegistry:
        return RayRegistry(self)

    def host(self, name: str) -> RayHost:
        return RayHost(self, name)

    async def call(self, name: str, invoke: Invoke) -> Any:
        """``invoke(handle)`` on actor ``name``, waiting out restarts (about 30 s).

        Raises:
            HostDiedError: the actor kept dying or did not come back in that time.
        """
        for delay in itertools.islice(_backoff.delays(cap=1.0), 40):
            try:
                handle = self.handle(name)
            except ValueError:  # no actor by that name: have the registry (re)create it
                if name == REGISTRY:
                    raise
                await self.registry().ensure_host(name)
                continue
            try:
                return await call(invoke(handle))
            except ray.exceptions.ActorDiedError:  # for good (a retired host): by name again
                self._handles.pop(name, None)
                await asyncio.sleep(delay)
            except UNAVAILABLE:
                await asyncio.sleep(delay)
        raise HostDiedError(f"{name} died while handling the call and did not come back "
                            "in time (the call may or may not have taken effect)")

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool,
                    version: str | None = None, fresh: bool = False) -> str:
        """The host a new workflow goes to: its own, or one of its queue's pool, of this
        directory's code version or of the known ``version`` asked for. A pool is asked
        of the registry again after ``POOL_TTL`` seconds (it grows and drains), or at
        once with ``fresh`` (a host said it takes no new run)."""
        target: m.CodeVersion | str | None = self.version if version is None else version
        if dedicated:
            return await self.registry().dedicated_host(workflow_id, task_queue, target)
        key = (task_queue, target.id if isinstance(target, m.CodeVersion) else target)
        cached = self._pools.get(key)
        if cached is None or fresh or time.monotonic() - cached[0] > POOL_TTL:
            asking = self._asking.get(key)  # one question at a time: a burst shares it
            if asking is None or fresh:
                asking = self._asking[key] = asyncio.ensure_future(
                    self.registry().hosts_for(task_queue, target))
                asking.add_done_callback(
                    lambda done: self._asking.get(key) is done and self._asking.pop(key))
            hosts = await asyncio.shield(asking)
            cached = self._pools[key] = (time.monotonic(), hosts)
        return pick(cached[1], workflow_id)

    async def locate(self, workflow_id: str) -> str:
        return await self.registry().locate(workflow_id)


class _Proxy:
    def __init__(self, directory: ActorDirectory, name: str) -> None:
        self._directory = directory
        self._name = name

    def _call(self, invoke: Invoke) -> Awaitable[Any]:
        return self._directory.call(self._name, invoke)


class RayHost(_Proxy):
    """``HostAPI`` of one host actor, by name."""

    async def start(self, request: m.StartRequest) -> m.StartReply:
        return await self._call(lambda h: h.start.remote(request))  # type: ignore[no-any-return]

    async def start_many(self, requests: list[m.StartRequest]
                         ) -> list[m.StartReply | BaseException]:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.start_many.remote(requests))

    async def result(self, workflow_id: str, run_id: str | None = None,
                     follow: bool = True) -> m.RunOutcome:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.result.remote(workflow_id, run_id, follow))

    async def results(self, workflow_ids: list[str]) -> list[m.RunOutcome | Exception | None]:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.results.remote(workflow_ids))

    async def signal(self, workflow_id: str, signal_id: str, data: Payload,
                     expire: float | None = None, request_id: str | None = None,
                     buffer_if_missing: bool = False, run_id: str | None = None) -> None:
        await self._call(lambda h: h.signal.remote(workflow_id, signal_id, data, expire,
                                                   request_id, buffer_if_missing, run_id))

    async def update(self, workflow_id: str, update_id: str, name: str | None,
                     args: list[Payload], wait: bool = True) -> m.UpdateOutcome:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.update.remote(workflow_id, update_id, name, args, wait))

    async def reset(self, request: m.ResetRequest) -> m.StartReply:
        return await self._call(lambda h: h.reset.remote(request))  # type: ignore[no-any-return]

    async def cancel(self, workflow_id: str, reason: str | None = None,
                     run_id: str | None = None) -> None:
        await self._call(lambda h: h.cancel.remote(workflow_id, reason, run_id))

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        await self._call(lambda h: h.terminate.remote(workflow_id, reason))

    async def release(self, workflow_id: str) -> None:
        await self._call(lambda h: h.release.remote(workflow_id))

    async def adopt(self, workflow_id: str, force: bool = False) -> str | None:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.adopt.remote(workflow_id, force))

    async def drain(self) -> None:
        await self._call(lambda h: h.drain.remote())

    async def let_go(self, workflow_id: str) -> None:
        await self._call(lambda h: h.let_go.remote(workflow_id))

    async def query(self, workflow_id: str, name: str, args: tuple[Any, ...]) -> Any:
        return await self._call(lambda h: h.query.remote(workflow_id, name, args))

    async def describe(self, workflow_id: str) -> m.WorkflowDescription:
        return await self._call(  # type: ignore[no-any-return]
            lambda h: h.describe.remote(workflow_id))

    async def deliver(self, workflow_id: str, event: Event, run_id: str | None = None) -> None:
        await self._call(lambda h: h.deliver.remote(workflow_id, event, run_id))

    async def stats(self) -> m.HostStats:
        return await self._call(lambda h: h.stats.remote())  # type: ignore[no-any-return]


class RayRegistry(_Proxy):
    """``RegistryAPI`` of the namespace's registry actor."""

    def __init__(self, directory: ActorDirectory) -> None:
        super().__init__(directory, REGISTRY)

    async def ready(self) -> m.RegistryInfo:
        return await self._call(lambda r: r.ready.remote())  # type: ignore[no-any-return]

    async def hosts_for(self, task_queue: str,
                        version: m.CodeVersion | str | None = None) -> list[str]:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.hosts_for.remote(task_queue, version))

    async def configure(self, task_queue: str, hosts: int | None,
                        workflows: dict[str, CodeRef],
                        options: m.HostOptions | None = None,
                        version: m.CodeVersion | None = None) -> list[str]:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.configure.remote(task_queue, hosts, workflows, options, version))

    async def dedicated_host(self, workflow_id: str, task_queue: str,
                             version: m.CodeVersion | str | None = None) -> str:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.dedicated_host.remote(workflow_id, task_queue, version))

    async def ensure_host(self, name: str) -> None:
        await self._call(lambda r: r.ensure_host.remote(name))

    async def locate(self, workflow_id: str) -> str:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.locate.remote(workflow_id))

    async def locate_or_none(self, workflow_id: str) -> str | None:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.locate_or_none.remote(workflow_id))

    async def report(self, summaries: list[m.RunSummary]) -> None:
        await self._call(lambda r: r.report.remote(summaries))

    async def forget(self, runs: dict[str, str]) -> int:
        return await self._call(lambda r: r.forget.remote(runs))  # type: ignore[no-any-return]

    async def versions(self) -> list[m.VersionSummary]:
        return await self._call(lambda r: r.versions.remote())  # type: ignore[no-any-return]

    async def retire_idle(self) -> list[str]:
        return await self._call(lambda r: r.retire_idle.remote())  # type: ignore[no-any-return]

    async def retire(self, name: str) -> bool:
        return await self._call(lambda r: r.retire.remote(name))  # type: ignore[no-any-return]

    async def upgrade(self, old: str, new: m.CodeVersion | str,
                      workflow_ids: list[str] | None = None) -> m.UpgradeReport:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.upgrade.remote(old, new, workflow_ids))

    async def drain(self, name: str) -> m.DrainReport:
        return await self._call(lambda r: r.drain.remote(name))  # type: ignore[no-any-return]

    async def drain_node(self, node: str) -> list[m.DrainReport]:
        return await self._call(  # type: ignore[no-any-return]
            lambda r: r.drain_node.remote(node))

    async def host_stats(self) -> list[m.HostStats]:
        return await self._call(lambda r: r.host_stats.remote())  # type: ignore[no-any-return]

    async def scale(self) -> dict[str, list[str]]:
        return await self._call(lambda r: r.scale.remote())  # type: ignore[no-any-return]

    async def list(self, request: m.ListRequest) -> m.ListReply:
        return await self._call(lambda r: r.list.remote(request))  # type: ignore[no-any-return]

    async def count(self, request: m.CountRequest) -> m.CountReply:
        return await self._call(lambda r: r.count.remote(request))  # type: ignore[no-any-return]

    async def stats(self) -> m.RegistryStats:
        return await self._call(lambda r: r.stats.remote())  # type: ignore[no-any-return]

    async def resume_all(self) -> int:
        return await self._call(lambda r: r.resume_all.remote())  # type: ignore[no-any-return]
