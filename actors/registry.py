"""The named registry actor: a thin Ray shell around ``rayline.engine.registry.Registry``,
and the ``Launcher`` that starts hosts as named detached Ray actors."""

from __future__ import annotations

from typing import Any

import ray

from rayline._code import CodeRef
from rayline.engine.registry import Registry
from rayline.errors import InvalidInputError
from rayline.messages import (
    CodeVersion,
    HostOptions,
    ListRequest,
    RegistryInfo,
    RegistryStats,
    RunSummary,
)
from rayline.storage import RunStore, open_store

from ._names import detached
from .host import HostActor


class RayLauncher:
    """Starts hosts as named detached Ray actors, spread over the cluster's nodes."""

    def __init__(self, storage_url: str, namespace: str) -> None:
        self.storage_url = storage_url
        self.namespace = namespace
        self.handles: dict[str, Any] = {}

    def check(self, task_queue: str, options: HostOptions) -> None:
        if options.memory is None:
            return
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        largest = max((node["Resources"].get("memory", 0) for node in nodes
                       if node["Alive"]), default=0)
        if options.memory > largest:
            raise InvalidInputError(
                f"task queue {task_queue!r}: memory={options.memory} bytes per host is more "
                f"than any node of the cluster has for Ray ({int(largest)} bytes at most), "
                "so its hosts could never start")

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: HostOptions,
                     version: CodeVersion | None) -> None:
        extra: dict[str, Any] = {} if options.memory is None else {"memory": options.memory}
        if version is not None and version.runtime_env:
            extra["runtime_env"] = version.runtime_env
        handle = HostActor.options(  # type: ignore[attr-defined]  # a ray.remote class
            **detached(self.namespace, name, **extra), scheduling_strategy="SPREAD").remote(
            name, self.storage_url, self.namespace, workflows, version)
        await handle.ready.remote()
        self.handles[name] = handle

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        await self.handles[name].register.remote(workflows)


@ray.remote
class RegistryActor:
    """One per rayline namespace, named ``registry`` in Ray namespace ``rayline-<ns>``.
    Each method forwards to ``Registry`` (``RegistryAPI``) unchanged."""

    async def __init__(  # type: ignore[misc]  # Ray runs it on the actor's loop
            self, storage_url: str, namespace: str) -> None:
        runs = RunStore(open_store(storage_url), namespace)
        self.registry = Registry(runs, storage_url, RayLauncher(storage_url, namespace))
        self.registry.start()  # resumes every host with unfinished runs

    async def ready(self) -> RegistryInfo:
        return await self.registry.ready()

    async def stats(self) -> RegistryStats:
        return await self.registry.stats()

    async def ensure_host(self, name: str) -> None:
        await self.registry.ensure_host(name)

    async def hosts_for(self, task_queue: str, version: CodeVersion | None = None) -> list[str]:
        return await self.registry.hosts_for(task_queue, version)

    async def configure(self, task_queue: str, hosts: int, workflows: dict[str, CodeRef],
                        options: HostOptions | None = None,
                        version: CodeVersion | None = None) -> list[str]:
        return await self.registry.configure(task_queue, hosts, workflows, options, version)

    async def dedicated_host(self, workflow_id: str, task_queue: str = "default",
                             version: CodeVersion | None = None) -> str:
        return await self.registry.dedicated_host(workflow_id, task_queue, version)

    async def locate(self, workflow_id: str) -> str:
        return await self.registry.locate(workflow_id)

    async def locate_or_none(self, workflow_id: str) -> str | None:
        return await self.registry.locate_or_none(workflow_id)

    async def report(self, summaries: list[RunSummary]) -> None:
        await self.registry.report(summaries)

    async def list(self, request: ListRequest) -> list[RunSummary]:
        return await self.registry.list(request)

    async def resume_all(self) -> int:
        return await self.registry.resume_all()
