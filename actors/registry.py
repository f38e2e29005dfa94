"""The named registry actor: a thin Ray shell around ``rayline.engine.registry.Registry``,
and the ``Launcher`` that starts hosts as named detached Ray actors."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from ray.core.generated import gcs_pb2
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayline import messages as m
from rayline._code import CodeRef
from rayline._serde import Fields
from rayline.engine.registry import Registry
from rayline.errors import CodeUnavailableError, InvalidInputError
from rayline.storage import RunStore, open_store
from rayline.storage.codec import Codec

from ._directory import ActorDirectory, RayHost
from ._names import detached, get_actor
from .host import HostActor

log = logging.getLogger("rayline.registry")
NODE_ID = "ray.io/node-id"
"""The label every Ray node has, with its node id."""
RETIRE_EVERY = float(os.environ.get("RAYLINE_RETIRE_EVERY", "300"))
"""Seconds between two rounds of retiring idle hosts (old versions, dedicated)."""
SCALE_EVERY = float(os.environ.get("RAYLINE_SCALE_EVERY", "5"))
"""Seconds between two rounds of sizing the elastic pools (nodes, load)."""
RETIRE_WAIT = 10.0
"""Seconds a retired host's name may take to be released by Ray."""
PLACE_WAIT = float(os.environ.get("RAYLINE_PLACE_WAIT", "30"))
"""Seconds a host asked for on one node waits to be placed there (the node may be full
or gone) before it is started anywhere else instead."""


class RayLauncher:
    """Starts hosts as named detached Ray actors, spread over the cluster's nodes."""

    def __init__(self, storage_url: str, namespace: str, codec: Codec | None = None) -> None:
        self.storage_url = storage_url
        self.namespace = namespace
        self.codec = codec
        self.handles: dict[str, Any] = {}
        self.runs = RunStore(open_store(storage_url), namespace, codec)
        self._kept: set[str] = set()
        self._directory = ActorDirectory(namespace)
        self._avoid: set[str] = set()

    def keep_packages(self, version: m.CodeVersion) -> None:
        """Ray keeps an uploaded package (``gcs://_ray_pkg_<hash>.zip``) only while it is
        in use, and a new cluster has none: the first time a version's host is started
        its packages are copied into storage, and put back into Ray when it lacks them.

        Raises:
            CodeUnavailableError: a package Ray lacks was never kept.
        """
        for uri in _packages(version.runtime_env):
            if uri in self._kept:
                continue
            name = uri.removeprefix("gcs://")
            if not self.runs.has_package(name):
                data = internal_kv._internal_kv_get(uri)
                if data is None:
                    raise CodeUnavailableError(
                        f"code version {version.id}: package {uri} is gone from Ray and "
                        "was never kept in storage: start a driver with that code again, "
                        "or terminate its runs")
                self.runs.put_package(name, data)
            elif not internal_kv._internal_kv_exists(uri):
                kept = self.runs.get_package(name)
                if kept is None:  # removed from storage since it was listed
                    raise CodeUnavailableError(f"code version {version.id}: package {uri} "
                                               "was removed from storage")
                internal_kv._internal_kv_put(uri, kept)
            self._kept.add(uri)

    def check(self, task_queue: str, options: m.HostOptions) -> None:
        if options.node_labels and not self.nodes(options.node_labels):
            raise InvalidInputError(
                f"task queue {task_queue!r}: no alive node has the labels "
                f"{options.node_labels}, so its hosts could not start (give nodes labels "
                "with ray start --labels, or a cluster config's labels)")
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

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: m.HostOptions,
                     version: m.CodeVersion | None) -> None:
        extra: dict[str, Any] = {} if options.memory is None else {"memory": options.memory}
        if version is not None and version.runtime_env:
            await asyncio.to_thread(self.keep_packages, version)
            extra["runtime_env"] = version.runtime_env
        strategy: Any = "SPREAD"
        anywhere = self._anywhere(options.node_labels)
        if options.node is None:
            extra.update(anywhere)
        else:
            # Ray does not honour a soft node preference for these actors: a hard one, and
            # no restart by Ray (it could only wait for that node); a host whose node is
            # gone is started again anywhere by the registry (ensure_host), when called or
            # in its next round
            strategy = NodeAffinitySchedulingStrategy(options.node, soft=False)
            extra["max_restarts"] = 0
        handle = self._start(name, workflows, version, strategy, extra)
        if options.node is not None:
            try:
                await asyncio.wait_for(handle.__ray_ready__.remote(), PLACE_WAIT)
            except asyncio.TimeoutError:  # that node cannot take it: anywhere else
                log.warning("registry: host %s could not be placed on node %s in %gs; "
                            "starting it elsewhere", name, options.node, PLACE_WAIT)
                ray.kill(handle, no_restart=True)
                for _ in range(50):  # its name is free once Ray has it dead
                    try:
                        get_actor(self.namespace, name)
                    except ValueError:
                        break
                    await asyncio.sleep(0.1)
                del extra["max_restarts"]
                handle = self._start(name, workflows, version, "SPREAD",
                                     {**extra, **anywhere})
        await handle.ready.remote()
        self.handles[name] = handle

    def _anywhere(self, labels: dict[str, str] | None) -> dict[str, Any]:
        """The actor options that keep a host to the nodes with ``labels`` and off the
        drained ones (Ray's ``label_selector``)."""
        selector = dict(labels or {})
        if self._avoid:
            selector[NODE_ID] = f"!in({','.join(sorted(self._avoid))})"
        return {"label_selector": selector} if selector else {}

    def _start(self, name: str, workflows: dict[str, CodeRef], version: m.CodeVersion | None,
               strategy: Any, extra: dict[str, Any]) -> Any:
        return HostActor.options(  # type: ignore[attr-defined]  # a ray.remote class
            **detached(self.namespace, name, **extra), scheduling_strategy=strategy).remote(
            name, self.storage_url, self.namespace, workflows, version, self.codec)

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        await self.handles[name].register.remote(workflows)

    def host(self, name: str) -> RayHost:
        return RayHost(self._directory, name)

    def nodes(self, labels: dict[str, str] | None = None) -> list[str]:
        found: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        return [node["NodeID"] for node in found if node["Alive"] and all(
            node.get("Labels", {}).get(key) == value for key, value in (labels or {}).items())]

    def draining_nodes(self) -> set[str]:
        """The nodes Ray is draining (autoscaler scale-down, a preemption notice, ``ray
        drain-node``); none when this Ray cannot tell."""
        worker: Any = ray._private.worker.global_worker
        pb: Any = gcs_pb2  # generated code: untyped
        try:
            infos = worker.gcs_client.get_all_node_info()
            return {node_id.hex() for node_id, info in infos.items()
                    if info.state == pb.GcsNodeInfo.ALIVE
                    and info.state_snapshot.state == pb.NodeSnapshot.DRAINING}
        except Exception as exc:  # a private API of Ray: without it, drain by hand
            log.debug("registry: cannot read Ray's draining nodes: %s", exc)
            return set()

    def avoid(self, nodes: set[str]) -> None:
        self._avoid = set(nodes)

    async def probe(self, name: str) -> m.HostStats | None:
        try:
            handle = self.handles.get(name) or get_actor(self.namespace, name)
            stats: m.HostStats = await handle.stats.remote()
        except ValueError:  # no actor by that name
            return None
        except ray.exceptions.RayActorError:  # dead, or restarting
            self.handles.pop(name, None)
            return None
        return stats

    async def retire(self, name: str) -> bool:
        try:
            handle = self.handles.get(name) or get_actor(self.namespace, name)
        except ValueError:
            return True  # gone already
        try:
            stats: m.HostStats = await handle.stats.remote()
        except ray.exceptions.RayActorError:  # restarting or dying: ask again next round
            return False
        if stats.running or stats.parked or stats.stuck:
            return False
        ray.kill(handle, no_restart=True)
        self.handles.pop(name, None)
        return await self._released(name)

    async def _released(self, name: str) -> bool:
        """Waits (up to ``RETIRE_WAIT`` seconds) until Ray no longer knows actor
        ``name``: ``ray.kill`` only asks, and a caller told a host is stopped may look it
        up at once."""
        for _ in range(int(RETIRE_WAIT / 0.05)):
            try:
                await asyncio.to_thread(get_actor, self.namespace, name)
            except ValueError:
                return True
            await asyncio.sleep(0.05)
        log.warning("registry: host %s was killed but Ray still names it", name)
        return False


def _packages(runtime_env: Fields) -> list[str]:
    """The packages in Ray's own storage a ``runtime_env`` needs (its ``working_dir`` and
    ``py_modules`` uploaded by a driver); remote URLs (``s3://``, ``https://``) are not
    Ray's to lose."""
    modules = runtime_env.get("py_modules")
    found = [runtime_env.get("working_dir"), *(modules if isinstance(modules, list) else [])]
    return [uri for uri in found if isinstance(uri, str) and uri.startswith("gcs://")]


@ray.remote
class RegistryActor:
    """One per rayline namespace, named ``registry`` in Ray namespace ``rayline-<ns>``.
    Each method forwards to ``Registry`` (``RegistryAPI``) unchanged."""

    async def __init__(  # type: ignore[misc]  # Ray runs it on the actor's loop
            self, storage_url: str, namespace: str, codec: Codec | None = None) -> None:
        runs = RunStore(open_store(storage_url), namespace, codec)
        self.registry = Registry(runs, storage_url, RayLauncher(storage_url, namespace, codec))
        self.registry.start()  # resumes every host with unfinished runs
        loop = asyncio.get_running_loop()
        self._retiring = loop.create_task(self._now_and_then(RETIRE_EVERY, "retire_idle"))
        self._scaling = loop.create_task(self._now_and_then(SCALE_EVERY, "scale"))

    async def ready(self) -> m.RegistryInfo:
        return await self.registry.ready()

    async def stats(self) -> m.RegistryStats:
        return await self.registry.stats()

    async def ensure_host(self, name: str) -> None:
        await self.registry.ensure_host(name)

    async def hosts_for(self, task_queue: str,
                        version: m.CodeVersion | str | None = None) -> list[str]:
        return await self.registry.hosts_for(task_queue, version)

    async def configure(self, task_queue: str, hosts: int | None,
                        workflows: dict[str, CodeRef],
                        options: m.HostOptions | None = None,
                        version: m.CodeVersion | None = None) -> list[str]:
        return await self.registry.configure(task_queue, hosts, workflows, options, version)

    async def dedicated_host(self, workflow_id: str, task_queue: str = "default",
                             version: m.CodeVersion | str | None = None) -> str:
        return await self.registry.dedicated_host(workflow_id, task_queue, version)

    async def locate(self, workflow_id: str) -> str:
        return await self.registry.locate(workflow_id)

    async def locate_or_none(self, workflow_id: str) -> str | None:
        return await self.registry.locate_or_none(workflow_id)

    async def report(self, summaries: list[m.RunSummary]) -> None:
        await self.registry.report(summaries)

    async def forget(self, runs: dict[str, str]) -> int:
        return await self.registry.forget(runs)

    async def versions(self) -> list[m.VersionSummary]:
        return await self.registry.versions()

    async def retire_idle(self) -> list[str]:
        return await self.registry.retire_idle()

    async def retire(self, name: str) -> bool:
        return await self.registry.retire(name)

    async def upgrade(self, old: str, new: m.CodeVersion | str,
                      workflow_ids: list[str] | None = None) -> m.UpgradeReport:
        return await self.registry.upgrade(old, new, workflow_ids)

    async def drain(self, name: str) -> m.DrainReport:
        return await self.registry.drain(name)

    async def drain_node(self, node: str) -> list[m.DrainReport]:
        return await self.registry.drain_node(node)

    async def host_stats(self) -> list[m.HostStats]:
        return await self.registry.host_stats()

    async def scale(self) -> dict[str, list[str]]:
        return await self.registry.scale()

    async def list(self, request: m.ListRequest) -> m.ListReply:
        return await self.registry.list(request)

    async def count(self, request: m.CountRequest) -> m.CountReply:
        return await self.registry.count(request)

    async def resume_all(self) -> int:
        return await self.registry.resume_all()

    async def _now_and_then(self, every: float, round_of: str) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await (self.registry.retire_idle() if round_of == "retire_idle"
                       else self.registry.scale())
            except Exception:  # never let the loop die: the next round tries again
                log.exception("registry: a round of %s failed", round_of)
