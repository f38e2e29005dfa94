"""An in-process ``Backend`` for the host: activities run inline, hosts are objects.

It implements the runtime's own ``Backend`` protocol, so the host, the workflow
executions, storage and the core run for real, only without Ray. The unit tests drive
hosts with it directly (``make_host``) and give a client ``LocalConnection``; the test
environment (``rayline.testing.WorkflowEnvironment``) builds on it.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import _activity
from .._activity import ActivityDefinition, ActivityInfo
from .._options import ActivityOptions
from ..engine.activities import Outcome, invoke_async
from ..engine.api import HostAPI
from ..engine.host import STARTED, Host
from ..errors import NotHereError
from ..messages import RegistryInfo, RunSummary
from ..storage import RunStore


class LocalBackend:
    """Hosts as objects of this process, by name; each activity attempt runs inline on
    the host's event loop (a sync one blocks it while it runs)."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.executions: list[tuple[str, int, int]] = []
        """Each attempt run: (workflow id, call, attempt)."""
        self.reports: list[RunSummary] = []
        self.queues: dict[str, str] = {}
        """Task queue -> the host that takes its starts (else the first host by name)."""
        self.retiring: list[str] = []
        """Each host that asked to be stopped (it holds no run), in order; none is."""

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        self.executions.append((info.workflow_id, info.seq, info.attempt))
        if options.heartbeat_timeout is not None and info.host in self.hosts:
            self.hosts[info.host].heartbeat(info, None, STARTED)  # it runs now
        token = _activity._beat.set(self.beat)  # heartbeats go straight to the host object
        try:
            return await invoke_async(definition.fn, args, info)
        finally:
            _activity._beat.reset(token)

    def beat(self, info: ActivityInfo, details: Any) -> bool:
        """A heartbeat, to the attempt's host; whether the attempt is cancelled."""
        return self.hosts[info.host or ""].heartbeat(info, details)

    def host(self, name: str) -> HostAPI:
        return self.hosts[name]

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool) -> str:
        return self.queues.get(task_queue) or sorted(self.hosts)[0]

    async def locate(self, workflow_id: str) -> str:
        for name, host in self.hosts.items():
            if workflow_id in host.executions or workflow_id in host.parking \
                    or workflow_id in host.stuck:
                return name
        raise NotHereError(workflow_id)

    def report(self, summary: RunSummary) -> None:
        self.reports.append(summary)

    def retire(self, host: str) -> None:
        self.retiring.append(host)


async def make_host(runs: RunStore, backend: LocalBackend | None = None,
                    name: str = "h0", clock: Callable[[], float] | None = None,
                    park_after: float | None = None, linger: float | None = None) -> Host:
    """A host named ``name`` on ``backend`` (a new one by default), recovered and ready;
    ``linger`` as ``Host``'s (a dedicated host's wait before it asks to be stopped)."""
    backend = backend or LocalBackend()
    options: dict[str, Any] = {"park_after": park_after}
    if clock is not None:
        options["clock"] = clock
    if linger is not None:
        options["linger"] = linger
    host = Host(name, runs, backend, **options)
    backend.hosts[name] = host
    await host.recover()
    return host


class LocalConnection:
    """The client's ``Connection`` over in-process hosts (the protocol rayline owns)."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.version = None  # in-process hosts run this process's code

    async def open(self) -> RegistryInfo:
        return RegistryInfo(storage="memory://", namespace="test", resumed=0)

    def registry(self) -> LocalRegistry:
        return LocalRegistry(self.backend)

    def host(self, name: str) -> HostAPI:
        return self.backend.host(name)

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool,
                    version: str | None = None, fresh: bool = False) -> str:
        return await self.backend.place(task_queue, workflow_id, dedicated)

    async def locate(self, workflow_id: str) -> str:
        return await self.backend.locate(workflow_id)


class LocalRegistry:
    """The part of ``RegistryAPI`` the client tests use."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    async def locate_or_none(self, workflow_id: str) -> str | None:
        try:
            return await self.backend.locate(workflow_id)
        except NotHereError:
            return None
