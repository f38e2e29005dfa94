"""``WorkflowEnvironment``: the hosts, the registry, storage and the core of rayline in
this process, without Ray, for tests; optionally with time that skips ahead.

The environment's cluster (``_cluster.Cluster``) runs on a loop of its own in a thread
(``_loop.LoopThread``); its client talks to it through a ``Connection`` whose proxies
(``_bridge``) run each call on that loop, so the test's own loop (or the sync
client's) never runs rayline's hosts, and the hosts' loop can have a clock of its own.

Invariants:
- Time skips (``start_time_skipping``) only while the test waits: while a
  ``result()`` call is waiting on a host, or in ``sleep``; and only when the
  environment's loop is quiet (``_loop``). A start, signal, query or update is never
  overtaken by a skipped timer.
- ``shutdown`` leaves storage as a crash would: a file storage can be opened by a new
  environment, which resumes its runs; a memory storage the environment made is
  dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from .._durations import Duration, parse_duration
from ..client import AsyncClient, Client
from ..engine.api import HostAPI, RegistryAPI
from ..messages import CodeVersion, RegistryInfo
from ..storage import MemoryStore, RunStore, open_store
from ..storage.codec import Codec, codec_of
from ._bridge import HostBridge, RegistryBridge
from ._cluster import Activities, Cluster
from ._loop import LoopThread, wind_down


class _Core:
    """One environment's loop thread, storage and cluster, shared by the async and the
    sync forms."""

    def __init__(self, skipping: bool, storage: str | None, namespace: str,
                 codec: Codec | str | None = None) -> None:
        self.skipping = skipping
        self.namespace = namespace
        self.codec = codec_of(codec)
        self._memory: str | None = None
        if storage is None:  # a memory space of its own, dropped at shutdown
            self._memory = f"rayline-testing-{uuid.uuid4().hex}"
            storage = f"memory://{self._memory}"
        self.runs = RunStore(open_store(storage), namespace, self.codec)
        self.storage_url = self.runs.store.url
        self.thread = LoopThread(skipping)
        self.cluster: Cluster | None = None
        self.closed = False

    def started(self, cluster: Cluster) -> Connection:
        self.cluster = cluster
        return Connection(self.thread, cluster)

    def now(self) -> datetime:
        assert self.cluster is not None
        return datetime.fromtimestamp(self.cluster.now(), timezone.utc)

    def released(self) -> None:
        """After the loop is closed: drops the memory space this environment made."""
        if self._memory is not None:
            with MemoryStore._guard:
                MemoryStore._spaces.pop(self._memory, None)


class Connection:
    """The client's ``Connection`` to an environment: each call runs on its loop."""

    def __init__(self, thread: LoopThread, cluster: Cluster) -> None:
        self._thread = thread
        self._cluster = cluster
        self.version: CodeVersion | None = None
        """In-process hosts run this process's code: no code versions."""

    async def open(self) -> RegistryInfo:
        return await self._thread.call(self._cluster.registry.ready())

    def registry(self) -> RegistryAPI:
        return RegistryBridge(self._thread, lambda: self._cluster.registry)

    def host(self, name: str) -> HostAPI:
        return HostBridge(self._thread, lambda: self._cluster.backend.host(name))

    async def place(self, task_queue: str, workflow_id: str, dedicated: bool,
                    version: str | None = None, fresh: bool = False) -> str:
        return await self._thread.call(self._cluster.place(task_queue, workflow_id, dedicated,
                                                           version))

    async def locate(self, workflow_id: str) -> str:
        return await self._thread.call(self._cluster.registry.locate(workflow_id))


class WorkflowEnvironment:
    """rayline in this process, for tests: the real hosts, registry, storage and replay
    core, without Ray. Make one with :meth:`start_local` or :meth:`start_time_skipping`
    (or their ``_sync`` twins), use :attr:`client` as any ``AsyncClient``, and shut it
    down (``async with``)::

        async with await WorkflowEnvironment.start_time_skipping() as env:
            handle = await env.client.workflow.start(approval, args=["order-1"])
            assert await handle.result() == "expired"   # 7 days, in milliseconds

    Workflows are found by import path as on a cluster (or pickled, if defined in
    ``__main__`` or a function); activities run in this process (an async one on the
    environment's loop, a sync one on a thread), or the function ``activities`` names
    for them instead.
    """

    def __init__(self, core: _Core, client: AsyncClient) -> None:
        self._core = core
        self.client = client
        """The environment's client: the whole ``AsyncClient`` API."""

    @classmethod
    async def start_local(cls, *, storage: str | None = None, namespace: str = "default",
                          activities: Activities | None = None,
                          codec: Codec | str | None = None) -> WorkflowEnvironment:
        """An environment whose time is wall time.

        Args:
            storage: a path, ``file://`` or ``memory://name``; by default a memory storage
                of its own. A file storage left by an environment (or a host) is resumed.
            namespace: as ``AsyncClient``'s.
            activities: functions to run instead of activities, by activity name (or
                definition): ``{"charge": fake_charge}``.
            codec: as ``AsyncClient``'s (by default ``$RAYLINE_CODEC``).
        """
        return await cls._start(False, storage, namespace, activities, codec)

    @classmethod
    async def start_time_skipping(cls, *, storage: str | None = None,
                                  namespace: str = "default",
                                  activities: Activities | None = None,
                                  codec: Codec | str | None = None
                                  ) -> WorkflowEnvironment:
        """An environment whose time skips ahead to the next timer while the test
        waits on it (a ``result()`` call, :meth:`sleep`) and nothing else can happen:
        a workflow that sleeps 30 days finishes in milliseconds. Time does not skip
        while an activity runs. Arguments as for :meth:`start_local`."""
        return await cls._start(True, storage, namespace, activities, codec)

    @staticmethod
    def start_local_sync(*, storage: str | None = None, namespace: str = "default",
                         activities: Activities | None = None,
                         codec: Codec | str | None = None) -> SyncWorkflowEnvironment:
        """:meth:`start_local` for code without an event loop: its client is a
        ``rayline.Client``; use it in a ``with`` block."""
        return SyncWorkflowEnvironment(_Core(False, storage, namespace, codec), activities)

    @staticmethod
    def start_time_skipping_sync(*, storage: str | None = None, namespace: str = "default",
                                 activities: Activities | None = None,
                                 codec: Codec | str | None = None
                                 ) -> SyncWorkflowEnvironment:
        """:meth:`start_time_skipping` for code without an event loop."""
        return SyncWorkflowEnvironment(_Core(True, storage, namespace, codec), activities)

    @classmethod
    async def _start(cls, skipping: bool, storage: str | None, namespace: str,
                     activities: Activities | None,
                     codec: Codec | str | None) -> WorkflowEnvironment:
        core = _Core(skipping, storage, namespace, codec)
        try:
            cluster = await core.thread.call(Cluster.create(core.runs, activities))
            client = AsyncClient(storage=core.storage_url, namespace=namespace,
                                 connection=core.started(cluster), codec=core.codec)
            await client.connection()
        except BaseException:
            await core.thread.aclose()
            core.released()
            raise
        return cls(core, client)

    @property
    def supports_time_skipping(self) -> bool:
        """Whether time skips ahead (``start_time_skipping``)."""
        return self._core.skipping

    def now(self) -> datetime:
        """The environment's time (UTC): what ``workflow.now()`` would say now."""
        return self._core.now()

    async def sleep(self, duration: Duration) -> None:
        """Lets ``duration`` pass in the environment (``"1d"``, seconds, a
        ``timedelta``): at once, when time skips and no activity runs meanwhile; then
        waits until what came due (timers, the workflow code they wake) has run."""
        seconds = parse_duration(duration, what="sleep duration")
        assert self._core.cluster is not None
        await self._core.thread.call(self._core.cluster.advance(seconds))

    async def shutdown(self) -> None:
        """Stops the hosts and the environment's loop (see the module docstring)."""
        core = self._core
        if core.closed:
            return
        core.closed = True
        await self.client.close()
        if core.cluster is not None:
            await core.thread.call(core.cluster.stop())
        await core.thread.aclose()
        core.released()

    async def __aenter__(self) -> WorkflowEnvironment:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


class SyncWorkflowEnvironment:
    """The sync twin of :class:`WorkflowEnvironment` (``start_local_sync``,
    ``start_time_skipping_sync``): the same environment, a ``rayline.Client`` as
    :attr:`client`, blocking calls::

        with WorkflowEnvironment.start_time_skipping_sync() as env:
            assert env.client.workflow.execute(approval, args=["order-1"]) == "expired"
    """

    def __init__(self, core: _Core, activities: Activities | None) -> None:
        self._core = core
        try:
            cluster = core.thread.run(Cluster.create(core.runs, activities))
            self.client = Client(storage=core.storage_url, namespace=core.namespace,
                                 connection=core.started(cluster), codec=core.codec)
            """The environment's client: the whole ``rayline.Client`` API."""
        except BaseException:
            core.thread.close()
            core.released()
            raise

    @property
    def supports_time_skipping(self) -> bool:
        """Whether time skips ahead (``start_time_skipping_sync``)."""
        return self._core.skipping

    def now(self) -> datetime:
        """The environment's time (UTC): what ``workflow.now()`` would say now."""
        return self._core.now()

    def sleep(self, duration: Duration) -> None:
        """:meth:`WorkflowEnvironment.sleep`, blocking."""
        seconds = parse_duration(duration, what="sleep duration")
        assert self._core.cluster is not None
        self._core.thread.run(self._core.cluster.advance(seconds))

    def shutdown(self) -> None:
        """:meth:`WorkflowEnvironment.shutdown`, blocking; also stops the client's loop."""
        core = self._core
        if core.closed:
            return
        core.closed = True
        self.client.close()
        _stop_client_loop(self.client)
        if core.cluster is not None:
            core.thread.run(core.cluster.stop())
        core.thread.close()
        core.released()

    def __enter__(self) -> SyncWorkflowEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _stop_client_loop(client: Client) -> None:
    """Stops the private loop thread of a sync client the environment made (a
    ``rayline.Client`` keeps it for the life of the process)."""
    runner = getattr(client, "_runner", None)
    loop: asyncio.AbstractEventLoop | None = getattr(runner, "loop", None)
    thread = getattr(runner, "_thread", None)
    if loop is None or thread is None or loop.is_closed():
        return

    asyncio.run_coroutine_threadsafe(wind_down(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
