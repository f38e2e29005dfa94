"""The registry: where each workflow lives, the hosts of each task queue and code
version, and the index behind ``client.workflow.list`` (``RegistryAPI``).

It is off the hot path: clients ask it for a queue's host names once and then call hosts
directly; hosts tell it about starts and closes in batches, without waiting. Hosts are
started through a ``Launcher`` (Ray detached actors in ``rayline.actors``).

Invariants:
- Everything it knows can be rebuilt from storage: a queue's size, host options and
  registered workflows, each host's queue and code version, and each version's
  ``runtime_env`` are config documents, written before the host is started; the index
  is rebuilt from the timelines on first use.
- ``resume_all`` (run when the registry starts) makes sure every host with open markers
  is up; each host resumes its own runs. It is idempotent: hosts are named, and starting
  one that runs already does nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import zlib
from typing import Any, Callable, Protocol

from .._code import CodeRef
from .._validate import validate_task_queue
from ..errors import InvalidInputError, WorkflowNotFoundError
from ..messages import (
    CodeVersion,
    HostOptions,
    ListRequest,
    RegistryInfo,
    RegistryStats,
    RunSummary,
    UpgradeReport,
    VersionSummary,
)
from ..storage.runs import RunStore, id_key, validate_id
from ..timeline import home_of
from ..versions import validate_version
from .api import HostAPI
from .index import Index

log = logging.getLogger("rayline.registry")


def pool_host(task_queue: str, index: int, version: str | None = None) -> str:
    """The name of host ``index`` of a task queue's pool for a code version."""
    return f"host-{task_queue}-{index}" if version is None else \
        f"host-{task_queue}-{version}-{index}"


def pick(hosts: list[str], workflow_id: str) -> str:
    """Placement of a new workflow in a pool: stable across processes."""
    return hosts[zlib.crc32(workflow_id.encode()) % len(hosts)]


def dedicated_host(workflow_id: str, version: str | None = None) -> str:
    """``host-dedicated-[<version>-]<id>``; an id too long or too odd for an actor or
    folder name is named by its digest instead (as storage names it)."""
    prefix = "host-dedicated-" if version is None else f"host-dedicated-{version}-"
    return prefix + id_key(workflow_id)


class Launcher(Protocol):
    """Starts hosts: in Ray, a named detached host actor."""

    def check(self, task_queue: str, options: HostOptions) -> None:
        """Raises ``InvalidInputError`` when no node could ever hold a host so created."""

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: HostOptions,
                     version: CodeVersion | None) -> None:
        """Starts host ``name`` (or finds it running) with the code of ``version`` and
        returns once it is ready."""

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        """Tells running host ``name`` about workflows registered by name."""

    def host(self, name: str) -> HostAPI:
        """Calls to a running host (the registry moves runs between hosts)."""

    async def retire(self, name: str) -> bool:
        """Stops host ``name`` if it holds no run; whether it is gone."""


class Registry:
    """One per rayline namespace (see the module docstring)."""

    def __init__(self, runs: RunStore, storage_url: str, launcher: Launcher,
                 io: Callable[..., Any] | None = None) -> None:
        self.runs = runs
        self.storage_url = storage_url
        self.launcher = launcher
        self.index = Index()
        self.hosts: dict[str, tuple[str, str | None]] = {}
        """Each host started here: its task queue and code version."""
        self._since: dict[str, float] = {}  # code version -> when it was first seen
        self.calls: collections.Counter[str] = collections.Counter()
        self._indexed = False
        self._lock = asyncio.Lock()
        self._io = io or (lambda fn, *args: asyncio.to_thread(fn, *args))
        self._resumed: asyncio.Future[int] | None = None

    def start(self) -> None:
        """Resumes unfinished runs in the background (``ready`` waits for it)."""
        self._resumed = asyncio.ensure_future(self.resume_all())

    async def ready(self) -> RegistryInfo:
        resumed = await self._resumed if self._resumed is not None else 0
        return RegistryInfo(storage=self.storage_url, namespace=self.runs.namespace,
                            resumed=resumed)

    async def stats(self) -> RegistryStats:
        return RegistryStats(calls=dict(self.calls), directory=len(self.index),
                             hosts=sorted(self.hosts))

    # --------------------------------------------------------------- hosts

    async def ensure_host(self, name: str) -> None:
        """Starts host ``name`` if it is not running (from its stored config)."""
        async with self._lock:
            if name in self.hosts:
                return
            config = await self._io(self.runs.get_config, f"host:{name}")
            if config is None:
                raise InvalidInputError(f"unknown host {name!r}")
            version = None
            if config.get("version") is not None:
                stored = await self._io(self.runs.get_config, f"version:{config['version']}")
                version = CodeVersion(id=config["version"],
                                      runtime_env=(stored or {}).get("runtime_env", {}))
            await self._launch(name, config["task_queue"], version)

    async def _launch(self, name: str, task_queue: str, version: CodeVersion | None) -> None:
        queue = await self._io(self.runs.get_config, f"queue:{task_queue}") or {}
        vid = version.id if version else None
        if version is not None and version.id not in self._since:
            stored = await self._io(self.runs.get_config, f"version:{version.id}") or {}
            since = stored.get("since") or time.time()
            await self._io(self.runs.put_config, f"version:{version.id}", {
                "runtime_env": version.runtime_env, "since": since})
            self._since[version.id] = since
        await self._io(self.runs.put_config, f"host:{name}", {
            "task_queue": task_queue, "version": vid})
        workflows = {n: _code_ref(ref) for n, ref in queue.get("workflows", {}).items()}
        await self.launcher.launch(name, workflows, HostOptions(memory=queue.get("memory")),
                                   version)
        self.hosts[name] = (task_queue, vid)

    async def _known(self, version: CodeVersion | str | None) -> CodeVersion | None:
        """A code version given by id, as the registry keeps it.

        Raises:
            InvalidInputError: a bad id, or one no host was ever started with.
        """
        if not isinstance(version, str):
            return version
        stored = await self._io(self.runs.get_config, f"version:{validate_version(version)}")
        if stored is None:
            raise InvalidInputError(
                f"unknown code version {version!r}: start a client or worker with that code "
                "first (rayline versions lists the known ones)")
        return CodeVersion(id=version, runtime_env=stored.get("runtime_env", {}))

    async def hosts_for(self, task_queue: str,
                        version: CodeVersion | str | None = None) -> list[str]:
        """The pool of hosts for a task queue and code version (a known version may be
        given by id), started on first use (1 host by default)."""
        self.calls["hosts_for"] += 1
        validate_task_queue(task_queue)
        version = await self._known(version)
        config = await self._io(self.runs.get_config, f"queue:{task_queue}")
        if config is None:
            return await self.configure(task_queue, 1, {}, version=version)
        vid = version.id if version else None
        names = [pool_host(task_queue, i, vid) for i in range(config["hosts"])]
        for name in names:
            if name not in self.hosts:
                async with self._lock:
                    if name not in self.hosts:
                        await self._launch(name, task_queue, version)
        return names

    async def configure(self, task_queue: str, hosts: int, workflows: dict[str, CodeRef],
                        options: HostOptions | None = None,
                        version: CodeVersion | None = None) -> list[str]:
        """``Worker.create``: sets the pool size, registered workflows and host options of
        a queue, and starts its pool for ``version``. New options apply to the hosts
        started from then on (a running host keeps what Ray gave it)."""
        validate_task_queue(task_queue)
        if not isinstance(hosts, int) or hosts < 1:
            raise InvalidInputError(f"hosts must be a positive int, got {hosts!r}")
        if options is not None:
            self.launcher.check(task_queue, options)  # before anything is stored
        async with self._lock:
            config = await self._io(self.runs.get_config, f"queue:{task_queue}") or {
                "hosts": 0, "workflows": {}}
            config["hosts"] = max(config["hosts"], hosts)
            if options is not None and options.memory is not None:
                config["memory"] = options.memory
            config["workflows"].update({n: ref.model_dump() for n, ref in workflows.items()})
            await self._io(self.runs.put_config, f"queue:{task_queue}", config)
            vid = version.id if version else None
            names = [pool_host(task_queue, i, vid) for i in range(config["hosts"])]
            for name in names:
                if name in self.hosts:
                    await self.launcher.register(name, workflows)
                else:
                    await self._launch(name, task_queue, version)
        return names

    async def dedicated_host(self, workflow_id: str, task_queue: str = "default",
                             version: CodeVersion | str | None = None) -> str:
        version = await self._known(version)
        name = dedicated_host(validate_id(workflow_id), version.id if version else None)
        async with self._lock:
            if name not in self.hosts:
                await self._launch(name, task_queue, version)
        return name

    # ------------------------------------------------------------- retiring

    async def retire_idle(self) -> list[str]:
        """Stops the hosts no run needs any more and returns their names: the hosts of a
        queue's older code versions and dedicated hosts, once they hold no run (none
        live, parked, stuck or open in storage). The newest version of each queue keeps
        its hosts. A call for a retired host starts it again."""
        hosts = sorted(self.hosts.items())
        newest: dict[str, tuple[float, str]] = {}  # queue -> (first seen, version)
        for name, (queue, vid) in hosts:
            if vid is not None and not name.startswith("host-dedicated-"):
                newest[queue] = max(newest.get(queue, (0.0, "")), (self._since[vid], vid))
        retired = []
        for name, (queue, vid) in hosts:
            dedicated = name.startswith("host-dedicated-")
            if not dedicated and (vid is None or vid == newest[queue][1]):
                continue
            async with self._lock:
                if name not in self.hosts or await self._io(self.runs.has_open, name):
                    continue
                if await self.launcher.retire(name):
                    del self.hosts[name]
                    retired.append(name)
        if retired:
            log.info("registry: retired idle hosts %s", ", ".join(retired))
        return retired

    # -------------------------------------------------------------- upgrade

    async def upgrade(self, old: str, new: CodeVersion | str,
                      workflow_ids: list[str] | None = None) -> UpgradeReport:
        """Moves the open runs of code version ``old`` (or only ``workflow_ids`` of them)
        to hosts of version ``new`` (a known version's id, or a driver's own version):
        each goes to the host a new start of its id on ``new`` would (its queue's pool, or
        a dedicated host), which replays it on the new code first; a run that does not
        replay, or whose activity is running, stays.

        Raises:
            InvalidInputError: a bad or unknown version, or ``old`` equal to ``new``.
        """
        validate_version(old)
        target = await self._known(new)
        assert target is not None
        if old == target.id:
            raise InvalidInputError(f"code version {old!r} cannot be upgraded to itself")
        wanted = None if workflow_ids is None else set(workflow_ids)
        moved, left = list[str](), dict[str, str]()
        for name in await self._io(self.runs.open_hosts):
            config = await self._io(self.runs.get_config, f"host:{name}") or {}
            if config.get("version") != old:
                continue
            for workflow_id, _ in await self._io(self.runs.open_workflows, name):
                if wanted is not None and workflow_id not in wanted:
                    continue
                try:
                    if name.startswith("host-dedicated-"):
                        there = await self.dedicated_host(workflow_id, config["task_queue"],
                                                          target)
                    else:
                        there = pick(await self.hosts_for(config["task_queue"], target),
                                     workflow_id)
                    why = await self.launcher.host(there).adopt(workflow_id)
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"
                if why is None:
                    moved.append(workflow_id)
                else:
                    left[workflow_id] = why
        log.info("registry: upgrade %s -> %s moved %d run(s), left %d", old, target.id,
                 len(moved), len(left))
        return UpgradeReport(old=old, new=target.id, moved=moved, left=left)

    # ----------------------------------------------------------- directory

    async def locate(self, workflow_id: str) -> str:
        self.calls["locate"] += 1
        summary = self.index.get(workflow_id)
        if summary is not None:
            return summary.host
        started, batches = await self._io(self.runs.load, validate_id(workflow_id))
        return home_of(started, batches)[0]

    async def locate_or_none(self, workflow_id: str) -> str | None:
        try:
            return await self.locate(workflow_id)
        except WorkflowNotFoundError:
            return None

    async def report(self, summaries: list[RunSummary]) -> None:
        self.calls["report"] += 1
        self.index.record(summaries)

    async def versions(self) -> list[VersionSummary]:
        """Every code version with runs in the index: its runs per state and the hosts of
        its open runs, newest run first."""
        self.calls["versions"] += 1
        summaries = await self.list(ListRequest(limit=2**62))
        grouped: dict[str | None, list[RunSummary]] = {}
        for summary in summaries:
            grouped.setdefault(summary.version, []).append(summary)
        found = []
        for version, runs in grouped.items():
            stored = None if version is None else await self._io(
                self.runs.get_config, f"version:{version}")
            found.append(VersionSummary(
                id=version, runs=dict(collections.Counter(r.state.value for r in runs)),
                hosts=sorted({r.host for r in runs if r.state.code > 0}),
                runtime_env=(stored or {}).get("runtime_env", {})))
        return found

    async def list(self, request: ListRequest) -> list[RunSummary]:
        """Workflows in the index, newest first, filtered by state, name and search fields."""
        self.calls["list"] += 1
        if not self._indexed:
            await self._io(self.index.rebuild, self.runs)
            self._indexed = True
        return self.index.select(request)

    # -------------------------------------------------------------- resume

    async def resume_all(self) -> int:
        """Makes sure every host with unfinished runs is up (each resumes its own runs)."""
        names = await self._io(self.runs.open_hosts)
        for name in names:
            try:
                await self.ensure_host(name)
            except Exception:
                log.exception("registry: cannot resume host %s", name)
        return len(names)


def _code_ref(stored: dict[str, Any]) -> CodeRef:
    """A registered workflow's code as the queue's config keeps it (also the form older
    versions wrote: ``code`` / ``code_pickle``)."""
    if "code" in stored or "code_pickle" in stored:
        return CodeRef(path=stored.get("code"), pickled=stored.get("code_pickle"))
    return CodeRef.model_validate(stored)
