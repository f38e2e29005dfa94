"""What a test environment runs: a registry and its hosts as objects of this process,
on the environment's loop, with activities run in-process.

The registry (``rayline.engine.registry.Registry``) and the hosts
(``rayline.engine.host.Host``) are the code the Ray actors forward to, unchanged; only
the ``Launcher`` (hosts are objects, made on first use) and the ``Backend`` (activities
are calls in this process, placement asks the registry) are this module's own.

Invariants:
- Everything here runs on the environment's loop (``SkippingLoop``), whose clock is
  the hosts' clock: ``now()`` is wall time at start plus the loop's time since.
- An activity attempt counts as work under way for its whole run (time does not skip
  meanwhile): an async one runs on the loop, a sync one on a thread of
  ``ACTIVITY_THREADS``; a sync attempt's heartbeats reach its host through the loop.
- An attempt gets a copy of its arguments made by pickling, as a Ray task does, and a
  function given for its activity name runs instead of the activity's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine, Mapping

from .. import _activity
from .._activity import ActivityDefinition, ActivityInfo
from .._code import CodeRef
from .._definition import as_workflow
from .._options import ActivityOptions
from .._values import dumps
from ..engine.activities import Outcome, invoke, invoke_async
from ..engine.api import HostAPI
from ..engine.blackbox import Blackbox
from ..engine.host import STARTED, Host
from ..engine.registry import Registry, pick
from ..errors import SerializationError
from ..failures import attempt_failure
from ..messages import CodeVersion, HostOptions, HostStats, RunSummary
from ..storage import MemoryStore, RunStore
from ._local import LocalBackend
from ._loop import SkippingLoop

log = logging.getLogger("rayline.testing")

ACTIVITY_THREADS = 16
"""Threads for sync activities (as ``RAYLINE_LOCAL_THREADS`` for a host's local ones)."""
BEAT_WAIT = 5.0
"""Seconds a sync activity's heartbeat waits for its host's answer (cancelled or not)."""

Activities = Mapping[str | ActivityDefinition[Any, Any], Callable[..., Any]]
"""Functions to run instead of activities, by activity name (or definition)."""


class Cluster:
    """The registry, hosts and backend of one environment (see the module docstring)."""

    def __init__(self, runs: RunStore, loop: SkippingLoop,
                 activities: Activities | None = None) -> None:
        self.runs = runs
        self.loop = loop
        self.epoch = time.time() - loop.time()
        self.backend = InProcessBackend(self, activities or {})
        self.launcher = InProcessLauncher(self)
        self.registry = Registry(runs, runs.store.url, self.launcher)

    @classmethod
    async def create(cls, runs: RunStore, activities: Activities | None) -> Cluster:
        """A cluster on the running loop (a ``SkippingLoop``), resuming what ``runs``
        left unfinished."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SkippingLoop)
        cluster = cls(runs, loop, activities)
        cluster.registry.start()
        await cluster.registry.ready()
        return cluster

    def now(self) -> float:
        """The hosts' clock: seconds since the epoch, skipped time included."""
        return self.epoch + self.loop.time()

    @property
    def hosts(self) -> dict[str, Host]:
        return self.backend.hosts

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool,
                    version: CodeVersion | str | None = None) -> str:
        """The host a new run goes to, as a Ray client or host places it."""
        if dedicated:
            return await self.registry.dedicated_host(workflow_id, task_queue, version)
        return pick(await self.registry.hosts_for(task_queue, version), workflow_id)

    async def advance(self, seconds: float) -> None:
        """Lets ``seconds`` pass (skipping when it can), then waits until what came due
        meanwhile has run."""
        with self.loop.waiting():
            await asyncio.sleep(seconds)
        await self.loop.settled()

    async def stop(self) -> None:
        """Stops every host as a process that dies would (storage keeps their runs) and
        the activity threads (a sync activity still running is left to finish)."""
        for host in self.hosts.values():
            host.abandon()
        self.backend.threads.shutdown(wait=False, cancel_futures=True)


class InProcessLauncher:
    """The registry's ``Launcher``: a host is a ``Host`` object, made on first launch."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._recovered: dict[str, asyncio.Task[int]] = {}
        self._starting: set[asyncio.Task[None]] = set()

    def check(self, task_queue: str, options: HostOptions) -> None:
        """Any options do: the hosts share this process."""

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: HostOptions,
                     version: CodeVersion | None) -> None:
        host = self._host(name, version)
        host.register([as_workflow(ref.load()) for ref in workflows.values()])
        await self._recover(name)

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        self.cluster.hosts[name].register([as_workflow(ref.load())
                                           for ref in workflows.values()])

    def host(self, name: str) -> HostAPI:
        """Host ``name``; one not made yet (a run in storage names it) is made now and
        started by the registry from its stored config, as a Ray host that is gone is
        started again when called (calls to it wait until it has recovered)."""
        if name not in self.cluster.hosts:
            self._host(name, None)
            task = self.cluster.loop.create_task(self._restart(name))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        return self.cluster.hosts[name]

    def _host(self, name: str, version: CodeVersion | None) -> Host:
        cluster = self.cluster
        host = cluster.hosts.get(name)
        if host is None:
            memory = isinstance(cluster.runs.store, MemoryStore)  # gone with the process
            host = Host(name, cluster.runs, cluster.backend, clock=cluster.now,
                        monotonic=cluster.loop.time, version=version.id if version else None,
                        blackbox=Blackbox(None) if memory else None)
            cluster.hosts[name] = host
        return host

    def _recover(self, name: str) -> asyncio.Task[int]:
        """The recovery of host ``name`` (begun now, once its workflows are registered,
        if it has not begun)."""
        if name not in self._recovered:
            host = self.cluster.hosts[name]
            self._recovered[name] = self.cluster.loop.create_task(host.recover())
        return self._recovered[name]

    async def _restart(self, name: str) -> None:
        try:
            await self.cluster.registry.ensure_host(name)
        except Exception:
            log.exception("testing: host %s has no stored config; it runs with no workflow "
                          "registered by name", name)
            await self._recover(name)

    async def probe(self, name: str) -> HostStats | None:
        host = self.cluster.hosts.get(name)
        return None if host is None else await host.stats()

    def nodes(self, labels: dict[str, str] | None = None) -> list[str]:
        return ["local"]

    def draining_nodes(self) -> set[str]:
        return set()

    def avoid(self, nodes: set[str]) -> None:
        """One node: nowhere else to go."""

    async def retire(self, name: str) -> bool:
        return False  # a host object costs nothing idle


class InProcessBackend(LocalBackend):
    """The hosts' ``Backend``: activities in this process (see the module docstring),
    placement and the index through the environment's registry."""

    def __init__(self, cluster: Cluster, activities: Activities) -> None:
        super().__init__()
        self.cluster = cluster
        self.replacements = {_name_of(key): _function_of(fn) for key, fn in activities.items()}
        self.threads = ThreadPoolExecutor(ACTIVITY_THREADS, thread_name_prefix="rayline-activity")
        self._reports: list[RunSummary] = []
        self._sending: set[asyncio.Task[Any]] = set()

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        self.executions.append((info.workflow_id, info.seq, info.attempt))
        fn = self.replacements.get(definition.name, definition.fn)
        with self.cluster.loop.busy():
            if options.heartbeat_timeout is not None and info.host in self.hosts:
                self.hosts[info.host].heartbeat(info, None, STARTED)  # it runs now
            try:  # what a Ray task gets: a copy
                args = pickle.loads(dumps(args, what=f"arguments of activity {definition.name!r}"))
            except SerializationError as exc:
                return "err", attempt_failure(exc, fatal=True)
            if inspect.iscoroutinefunction(fn):
                token = _activity._beat.set(self.beat)
                try:
                    return await invoke_async(fn, args, info)
                finally:
                    _activity._beat.reset(token)
            return await self.cluster.loop.run_in_executor(
                self.threads, _run_in_thread, fn, args, info, self._beat_from_thread)

    def _beat_from_thread(self, info: ActivityInfo, details: Any) -> bool:
        """A sync activity's heartbeat: handed to the host on the loop; the answer."""
        answer: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def deliver() -> None:
            try:
                answer.set_result(self.beat(info, details))
            except BaseException as exc:
                answer.set_exception(exc)

        try:
            self.cluster.loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the environment has shut down: nobody awaits it
            return True
        try:
            return answer.result(timeout=BEAT_WAIT)
        except concurrent.futures.TimeoutError:
            return False

    def host(self, name: str) -> HostAPI:
        return self.cluster.launcher.host(name)

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool) -> str:
        return await self.cluster.place(task_queue, workflow_id, dedicated)

    async def locate(self, workflow_id: str) -> str:
        return await self.cluster.registry.locate(workflow_id)

    def report(self, summary: RunSummary) -> None:
        """To the registry's index, a turn of the loop's reports at a time."""
        if not self._reports:
            self.cluster.loop.call_soon(self._flush)
        self._reports.append(summary)

    def _flush(self) -> None:
        batch, self._reports = self._reports, []
        self._send(self.cluster.registry.report(batch))

    def retire(self, host: str) -> None:
        """To the registry, as a Ray host asks (whose launcher here keeps the host)."""
        self._send(self.cluster.registry.retire(host))

    def _send(self, call: Coroutine[Any, Any, Any]) -> None:
        """A call to the registry, not awaited (kept until done)."""
        task = self.cluster.loop.create_task(call)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


def _run_in_thread(fn: Callable[..., Any], args: tuple[Any, ...], info: ActivityInfo,
                   beat: _activity.Beat) -> Outcome:
    """One attempt of a sync activity, in an activity thread, its heartbeats to ``beat``."""
    token = _activity._beat.set(beat)
    try:
        return invoke(fn, args, info)
    finally:
        _activity._beat.reset(token)


def _name_of(key: str | ActivityDefinition[Any, Any]) -> str:
    return key if isinstance(key, str) else key.name


def _function_of(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn.fn if isinstance(fn, ActivityDefinition) else fn
