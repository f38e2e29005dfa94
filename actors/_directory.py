"""Finding actors by name and calling them, shared by hosts and clients."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from rayline.errors import NotHereError

from ._names import REGISTRY, call, get_actor, pick

UNAVAILABLE = (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError,
               ray.exceptions.RayActorError)


class ActorDirectory:
    """Cached handles to a namespace's registry and hosts, with retries across restarts."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, Any] = {}
        self._pools: dict[str, list[str]] = {}

    def handle(self, name: str) -> Any:
        found = self._handles.get(name)
        if found is None:
            found = self._handles[name] = get_actor(self.namespace, name)
        return found

    async def registry(self, method: str, *args: Any) -> Any:
        return await self.call_host(REGISTRY, method, *args)

    async def call_host(self, host: str, method: str, *args: Any) -> Any:
        """Calls ``method`` on actor ``host``, waiting out restarts (up to ~30 s)."""
        for attempt in range(40):
            try:
                handle = self.handle(host)
            except ValueError:  # no actor by that name: have the registry (re)create it
                if host == REGISTRY:
                    raise
                await self.registry("ensure_host", host)
                continue
            try:
                return await call(handle, method, *args)
            except UNAVAILABLE:
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise NotHereError(f"actor {host} does not answer")

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool) -> str:
        """The host a new workflow goes to: its own, or one of its queue's pool."""
        if dedicated:
            return await self.registry("dedicated_host", workflow_id, task_queue)  # type: ignore[no-any-return]
        hosts = self._pools.get(task_queue)
        if hosts is None:
            hosts = self._pools[task_queue] = await self.registry("hosts_for", task_queue)
        return pick(hosts, workflow_id)

    async def locate(self, workflow_id: str) -> str:
        return await self.registry("locate", workflow_id)  # type: ignore[no-any-return]
