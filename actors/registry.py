"""The named registry actor: where each workflow lives, the hosts of each task queue,
and the visibility index behind ``client.workflow.list``.

It is off the hot path: clients ask it for a queue's host names once and then call hosts
directly; hosts tell it about starts and closes in batches, without waiting. Everything
it knows can be rebuilt from storage, which it does when it starts (and then resumes every
unfinished run by making sure its host exists: hosts resume their own runs).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import ray

from rayline._code import CodeRef
from rayline._validate import validate_task_queue
from rayline.engine.index import Index
from rayline.errors import InvalidInputError, WorkflowNotFoundError
from rayline.messages import ListRequest, RegistryInfo, RegistryStats, RunSummary
from rayline.storage import RunStore, open_store, validate_id

from ._names import dedicated_host, detached, pool_host
from .host import HostActor

log = logging.getLogger("rayline.actors")


@ray.remote
class RegistryActor:
    """One per rayline namespace, named ``registry`` in Ray namespace ``rayline-<ns>``."""

    async def __init__(  # type: ignore[misc]  # Ray runs it on the actor's loop
            self, storage_url: str, namespace: str) -> None:
        self.storage_url = storage_url
        self.namespace = namespace
        self.runs = RunStore(open_store(storage_url), namespace)
        self.index = Index()
        self.hosts: dict[str, Any] = {}
        self._indexed = False
        self._lock = asyncio.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self._resumed = asyncio.get_running_loop().create_task(self.resume_all())

    def _io(self, fn: Any, *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def stats(self) -> RegistryStats:
        return RegistryStats(calls=dict(self.calls), directory=len(self.index),
                             hosts=sorted(self.hosts))

    async def ready(self) -> RegistryInfo:
        resumed = await self._resumed
        return RegistryInfo(storage=self.storage_url, namespace=self.namespace, resumed=resumed)

    # --------------------------------------------------------------- hosts

    async def ensure_host(self, name: str) -> None:
        """Creates host ``name`` if it is not running (from its stored config)."""
        async with self._lock:
            if name in self.hosts:
                return
            config = await self._io(self.runs.get_config, f"host:{name}")
            if config is None:
                raise InvalidInputError(f"unknown host {name!r}")
            await self._create_host(name, config["task_queue"])

    async def _create_host(self, name: str, task_queue: str) -> None:
        queue = await self._io(self.runs.get_config, f"queue:{task_queue}") or {}
        await self._io(self.runs.put_config, f"host:{name}", {"task_queue": task_queue})
        workflows = {name: _code_ref(ref) for name, ref in queue.get("workflows", {}).items()}
        handle = HostActor.options(  # type: ignore[attr-defined]  # a ray.remote class
            **detached(self.namespace, name), scheduling_strategy="SPREAD").remote(
            name, self.storage_url, self.namespace, workflows)
        await handle.ready.remote()
        self.hosts[name] = handle

    async def hosts_for(self, task_queue: str) -> list[str]:
        """The pool of hosts for a task queue, created on first use (1 host by default)."""
        self.calls["hosts_for"] += 1
        validate_task_queue(task_queue)
        config = await self._io(self.runs.get_config, f"queue:{task_queue}")
        if config is None:
            return await self.configure(task_queue, 1, {})
        names = [pool_host(task_queue, i) for i in range(config["hosts"])]
        for name in names:
            if name not in self.hosts:
                await self.ensure_host(name)
        return names

    async def configure(self, task_queue: str, hosts: int,
                        workflows: dict[str, CodeRef]) -> list[str]:
        """``Worker.create``: sets the pool size and registered workflows of a queue."""
        validate_task_queue(task_queue)
        if not isinstance(hosts, int) or hosts < 1:
            raise InvalidInputError(f"hosts must be a positive int, got {hosts!r}")
        async with self._lock:
            config = await self._io(self.runs.get_config, f"queue:{task_queue}") or {
                "hosts": 0, "workflows": {}}
            config["hosts"] = max(config["hosts"], hosts)
            config["workflows"].update({name: ref.model_dump()
                                        for name, ref in workflows.items()})
            await self._io(self.runs.put_config, f"queue:{task_queue}", config)
            names = [pool_host(task_queue, i) for i in range(config["hosts"])]
            for name in names:
                if name in self.hosts:
                    await self.hosts[name].register.remote(workflows)
                else:
                    await self._create_host(name, task_queue)
        return names

    async def dedicated_host(self, workflow_id: str, task_queue: str = "default") -> str:
        name = dedicated_host(validate_id(workflow_id))
        async with self._lock:
            if name not in self.hosts:
                await self._create_host(name, task_queue)
        return name

    # ----------------------------------------------------------- directory

    async def locate(self, workflow_id: str) -> str:
        self.calls["locate"] += 1
        summary = self.index.get(workflow_id)
        if summary is not None:
            return summary.host
        started = await self._io(self.runs.read_run, validate_id(workflow_id))
        return started.host  # type: ignore[no-any-return]

    def report(self, summaries: list[RunSummary]) -> None:
        self.calls["report"] += 1
        self.index.record(summaries)

    async def list(self, request: ListRequest) -> list[RunSummary]:
        """Workflows in the index, newest first, filtered by state, name and search fields."""
        self.calls["list"] += 1
        if not self._indexed:
            await self._io(self.index.rebuild, self.runs)
            self._indexed = True
        return self.index.select(request)

    # -------------------------------------------------------------- resume

    async def resume_all(self) -> int:
        """Makes sure every host with unfinished runs is up (each resumes its own runs).

        Idempotent: hosts are named actors created with ``get_if_exists``, and a host
        that is already running has already resumed.
        """
        names = await self._io(self.runs.open_hosts)
        for name in names:
            try:
                await self.ensure_host(name)
            except Exception:
                log.exception("registry: cannot resume host %s", name)
        return len(names)

    async def locate_or_none(self, workflow_id: str) -> str | None:
        try:
            return await self.locate(workflow_id)
        except WorkflowNotFoundError:
            return None


def _code_ref(stored: dict[str, Any]) -> CodeRef:
    """A registered workflow's code as the queue's config keeps it (also the form older
    versions wrote: ``code`` / ``code_pickle``)."""
    if "code" in stored or "code_pickle" in stored:
        return CodeRef(path=stored.get("code"), pickled=stored.get("code_pickle"))
    return CodeRef.model_validate(stored)
