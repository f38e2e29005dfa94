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
import hashlib
import logging
import math
import os
import time
from typing import Any, Awaitable, Callable, Protocol

from .. import messages as m
from .._code import CodeRef
from .._validate import validate_task_queue
from ..errors import InvalidInputError, WorkflowNotFoundError
from ..storage.codec import fingerprint_of
from ..storage.runs import RunStore, id_key, validate_id
from ..timeline import home_of
from ..versions import validate_version
from .api import HostAPI
from .index import Index, IndexStore

log = logging.getLogger("rayline.registry")

LIVE_PER_HOST = int(os.environ.get("RAYLINE_HOST_LIVE", "1000"))
"""Live (in-memory) runs per host above which an elastic pool grows."""
MAX_HOSTS = int(os.environ.get("RAYLINE_MAX_HOSTS", "16"))
"""The most hosts an elastic pool grows to."""
NODE_SETTLE = float(os.environ.get("RAYLINE_NODE_SETTLE", "3"))
"""Seconds a node that joined is known before hosts are placed on it."""
DRAIN_WAIT = float(os.environ.get("RAYLINE_DRAIN_WAIT", "60"))
"""Seconds a drain waits for running activities to end before moving their runs anyway."""
BUSY_PER_HOST = float(os.environ.get("RAYLINE_HOST_BUSY", "0.6"))
"""Event-loop busy share per host (``HostStats.load``) above which an elastic pool grows."""
MOVES_AT_ONCE = int(os.environ.get("RAYLINE_MOVES_AT_ONCE", "32"))
"""Runs a drain or a rebalance moves concurrently."""
SHRINK_ROOM = 1.25
"""An elastic pool shrinks only if its smaller size would hold this many times its load."""
INDEX_SAVE_EVERY = float(os.environ.get("RAYLINE_INDEX_SAVE_EVERY", "0.5"))
"""Seconds the index's news waits before it is written to storage (one log for many)."""
INDEX_MIN_SNAPSHOT = 1000
"""Summaries in the index's logs below which no snapshot is written."""
SHRINK_AFTER = int(os.environ.get("RAYLINE_SHRINK_AFTER", "6"))
"""Rounds in a row a pool must want fewer hosts before one is drained (no flapping as
runs park and wake)."""


def pool_host(task_queue: str, index: int, version: str | None = None) -> str:
    """The name of host ``index`` of a task queue's pool for a code version."""
    return f"host-{task_queue}-{index}" if version is None else \
        f"host-{task_queue}-{version}-{index}"


def pick(hosts: list[str], workflow_id: str) -> str:
    """Placement of a new workflow in a pool: the same in every process, and a pool that
    gains or loses a host changes the choice for only that host's share of the ids
    (rendezvous hashing)."""
    return max(hosts, key=lambda host: hashlib.blake2b(f"{host}/{workflow_id}".encode(),
                                                       digest_size=8).digest())


def target_size(nodes: int, live: float, busy: float = 0.0, low: int = 1,
                high: int = MAX_HOSTS) -> int:
    """The hosts an elastic pool wants: one per alive node, one per ``LIVE_PER_HOST``
    live runs and one per ``BUSY_PER_HOST`` of summed event-loop load, between ``low``
    and ``high`` (the queue's ``min_hosts`` and ``max_hosts``)."""
    want = max(nodes, math.ceil(live / LIVE_PER_HOST), math.ceil(busy / BUSY_PER_HOST))
    return max(low, min(high, want))


def fixed_size(config: dict[str, Any]) -> int | None:
    """A queue's fixed pool size (``Worker.create(hosts=N)``), ``None`` if elastic. A
    config written before pools were elastic says ``hosts: 1`` for "not set": elastic."""
    hosts: int | None = config.get("hosts")
    return hosts if hosts is not None and (config.get("sized") or hosts > 1) else None


def _pool_key(task_queue: str, vid: str | None) -> str:
    return f"pool:{task_queue}:{vid or '-'}"


DEDICATED = "host-dedicated-"
"""How the name of a workflow's host of its own begins."""


def dedicated_host(workflow_id: str, version: str | None = None) -> str:
    """``host-dedicated-[<version>-]<id>``; an id too long or too odd for an actor or
    folder name is named by its digest instead (as storage names it)."""
    prefix = DEDICATED if version is None else f"{DEDICATED}{version}-"
    return prefix + id_key(workflow_id)


def is_dedicated(name: str) -> bool:
    """Whether host ``name`` is a workflow's own (``start(..., dedicated=True)``), not
    one of a pool: it exits once it holds no run, and a call for it starts it again."""
    return name.startswith(DEDICATED)


class Launcher(Protocol):
    """Starts hosts: in Ray, a named detached host actor."""

    def check(self, task_queue: str, options: m.HostOptions) -> None:
        """Raises ``InvalidInputError`` when no node could ever hold a host so created."""

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: m.HostOptions,
                     version: m.CodeVersion | None) -> None:
        """Starts host ``name`` (or finds it running) with the code of ``version`` and
        returns once it is ready."""

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        """Tells running host ``name`` about workflows registered by name."""

    def host(self, name: str) -> HostAPI:
        """Calls to a host, started again if it is not running (the registry moves runs
        between hosts)."""

    async def probe(self, name: str) -> m.HostStats | None:
        """The stats of host ``name`` if it is running; ``None`` if not (never started,
        retired, dead or restarting). Never starts it."""

    def nodes(self, labels: dict[str, str] | None = None) -> list[str]:
        """The alive nodes of the cluster with ``labels`` (an elastic pool has a host per
        node)."""

    def draining_nodes(self) -> set[str]:
        """The nodes the cluster is taking away (Ray drains them): their hosts drain."""

    def avoid(self, nodes: set[str]) -> None:
        """Hosts started from now on go to other nodes than these (drained ones)."""

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
        self.pools: dict[tuple[str, str | None], list[str]] = {}
        """The hosts new runs of a queue and version go to (kept as ``pool:`` configs)."""
        self.drained: set[str] = set()
        """Hosts taken out of their pool: draining, or left with runs that cannot move
        (kept in the ``drains`` config, so a restarted registry goes on)."""
        self.drained_nodes: set[str] = set()
        """Nodes drained by ``drain_node``: no host is started there, nor counted."""
        self._drains: dict[str, asyncio.Future[m.DrainReport]] = {}
        self._low: collections.Counter[tuple[str, str | None]] = collections.Counter()
        """Rounds in a row each elastic pool wanted fewer hosts."""
        self._node_seen: dict[str, float] = {}
        self._since: dict[str, float] = {}  # code version -> when it was first seen
        self.calls: collections.Counter[str] = collections.Counter()
        self._indexed = False
        self._index_lock = asyncio.Lock()
        self._index_store = IndexStore(runs)
        self._unsaved: dict[str, m.RunSummary] = {}
        self._saving: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._io = io or (lambda fn, *args: asyncio.to_thread(fn, *args))
        self._resumed: asyncio.Future[int] | None = None

    def start(self) -> None:
        """Resumes unfinished runs in the background (``ready`` waits for it)."""
        self._resumed = asyncio.ensure_future(self.resume_all())

    async def ready(self) -> m.RegistryInfo:
        resumed = await self._resumed if self._resumed is not None else 0
        return m.RegistryInfo(storage=self.storage_url, namespace=self.runs.namespace,
                              resumed=resumed, codec=fingerprint_of(self.runs.codec))

    async def stats(self) -> m.RegistryStats:
        return m.RegistryStats(calls=dict(self.calls), directory=len(self.index),
                             hosts=sorted(self.hosts))

    # --------------------------------------------------------------- hosts

    async def ensure_host(self, name: str) -> None:
        """Starts host ``name`` if it is not running (from its stored config): a caller
        found no actor by that name (never started, retired, or its node is gone), so
        it is started again, anywhere; starting a running host finds it. A host its pool
        no longer has (a client placed a start by an old pool) comes back draining: it
        refuses the start, and retires again once it holds nothing."""
        async with self._lock:
            config = await self._io(self.runs.get_config, f"host:{name}")
            if config is None:
                raise InvalidInputError(f"unknown host {name!r}")
            version = None
            if config.get("version") is not None:
                stored = await self._io(self.runs.get_config, f"version:{config['version']}")
                version = m.CodeVersion(id=config["version"],
                                      runtime_env=(stored or {}).get("runtime_env", {}))
            await self._launch(name, config["task_queue"], version)
            if name not in self.drained and await self._outside_pool(name, config, version):
                self.drained.add(name)  # retired, then called by a client's old pool
                await self._save_drains()
        if name in self.drained:  # back after a crash or for a late caller: drains still
            await self.launcher.host(name).drain()
            if await self._io(self.runs.has_open, name):
                self._drain_later([name])

    async def _outside_pool(self, name: str, config: dict[str, Any],
                            version: m.CodeVersion | None) -> bool:
        """Whether ``name`` is a pool host its pool no longer has (drained, or dropped by a
        smaller size): the caller holds the lock."""
        if is_dedicated(name):
            return False
        queue = config["task_queue"]
        queue_config = await self._io(self.runs.get_config, f"queue:{queue}") or {}
        return name not in await self._pool(queue, version, queue_config)

    async def _launch(self, name: str, task_queue: str, version: m.CodeVersion | None,
                      node: str | None = None) -> None:
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
        await self.launcher.launch(name, workflows, m.HostOptions(
            memory=queue.get("memory"), node=node, node_labels=queue.get("node_labels")),
            version)
        self.hosts[name] = (task_queue, vid)

    async def _known(self, version: m.CodeVersion | str | None) -> m.CodeVersion | None:
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
        return m.CodeVersion(id=version, runtime_env=stored.get("runtime_env", {}))

    async def hosts_for(self, task_queue: str,
                        version: m.CodeVersion | str | None = None) -> list[str]:
        """The pool of hosts for a task queue and code version (a known version may be
        given by id), started on first use: one host per alive node, growing with load
        (an elastic pool), unless ``Worker.create(hosts=N)`` fixed its size."""
        self.calls["hosts_for"] += 1
        validate_task_queue(task_queue)
        version = await self._known(version)
        config = await self._io(self.runs.get_config, f"queue:{task_queue}")
        if config is None:
            return await self.configure(task_queue, None, {}, version=version)
        settled = self.pools.get((task_queue, version.id if version else None))
        if settled is not None and all(name in self.hosts for name in settled) \
                and fixed_size(config) in (None, len(settled)):
            return list(settled)  # not behind a pool that is growing or a host starting
        async with self._lock:
            pool = await self._pool(task_queue, version, config)
            extra = await self._fix(task_queue, version, fixed_size(config))
            await self._launch_spread([n for n in pool if n not in self.hosts], task_queue,
                                      version)
        self._drain_later(extra)
        return [name for name in pool if name not in extra]

    async def configure(self, task_queue: str, hosts: int | None,
                        workflows: dict[str, CodeRef], options: m.HostOptions | None = None,
                        version: m.CodeVersion | None = None) -> list[str]:
        """``Worker.create``: registers workflows and host options of a queue, fixes its
        pool size when ``hosts`` is given (else the pool is elastic), and starts its pool
        for ``version``. New options apply to the hosts started from then on (a running
        host keeps what Ray gave it); a smaller size drains the newest hosts."""
        validate_task_queue(task_queue)
        if hosts is not None and (not isinstance(hosts, int) or isinstance(hosts, bool)
                                  or hosts < 1):
            raise InvalidInputError(f"hosts must be a positive int, got {hosts!r}")
        if options is not None:
            _check_options(options)
            self.launcher.check(task_queue, options)  # before anything is stored
        async with self._lock:
            config = await self._io(self.runs.get_config, f"queue:{task_queue}") or {
                "hosts": None, "workflows": {}}
            if hosts is not None:
                config["hosts"], config["sized"] = hosts, True
            for key in ("memory", "min_hosts", "max_hosts", "node_labels"):
                if options is not None and getattr(options, key) is not None:
                    config[key] = getattr(options, key)
            if config.get("min_hosts", 1) > config.get("max_hosts", MAX_HOSTS):
                raise InvalidInputError(
                    f"task queue {task_queue!r}: min_hosts ({config.get('min_hosts', 1)}) "
                    f"is more than max_hosts ({config.get('max_hosts', MAX_HOSTS)})")
            config["workflows"].update({n: ref.model_dump() for n, ref in workflows.items()})
            await self._io(self.runs.put_config, f"queue:{task_queue}", config)
            pool = await self._pool(task_queue, version, config)
            running = [name for name in pool if name in self.hosts]
            for name in running:
                await self.launcher.register(name, workflows)
            extra = await self._fix(task_queue, version, fixed_size(config))
            if fixed_size(config) is None and len(pool) < config.get("min_hosts", 1):
                await self._grow(task_queue, version, config["min_hosts"])
            await self._launch_spread([n for n in pool if n not in self.hosts], task_queue,
                                      version)
        self._drain_later(extra)  # in the background: their runs move first
        return [name for name in pool if name not in extra]

    async def _fix(self, task_queue: str, version: m.CodeVersion | None,
                   size: int | None) -> list[str]:
        """Brings a fixed pool to ``size`` (the caller holds the lock): grows it, or
        returns the hosts beyond ``size`` for the caller to drain."""
        if size is None:
            return []
        pool = self.pools[(task_queue, version.id if version else None)]
        if len(pool) < size:
            await self._grow(task_queue, version, size)  # started with the workflows
        return pool[size:]

    def _drain_later(self, names: list[str]) -> None:
        """Drains hosts in the background (a failure is logged)."""
        def logged(done: asyncio.Future[m.DrainReport]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("registry: a drain failed", exc_info=done.exception())

        for name in names:
            self._draining(name).add_done_callback(logged)

    async def _pool(self, task_queue: str, version: m.CodeVersion | None,
                    config: dict[str, Any]) -> list[str]:
        """The pool's host names (the caller holds the lock), made at first use: the
        queue's fixed size, else one host per alive node."""
        vid = version.id if version else None
        pool = self.pools.get((task_queue, vid))
        if pool is None:
            stored = await self._io(self.runs.get_config, _pool_key(task_queue, vid))
            if stored is not None:
                pool = list(stored["hosts"])
            else:
                size = fixed_size(config) or target_size(
                    len(self._nodes(config.get("node_labels"))), 0,
                    low=config.get("min_hosts") or 1,
                    high=config.get("max_hosts") or MAX_HOSTS)
                pool = [pool_host(task_queue, i, vid) for i in range(size)]
                await self._io(self.runs.put_config, _pool_key(task_queue, vid),
                               {"hosts": pool})
            self.pools[(task_queue, vid)] = pool
        return pool

    async def _grow(self, task_queue: str, version: m.CodeVersion | None, size: int,
                    nodes: list[str] | None = None) -> list[str]:
        """Adds hosts (new indexes) to a pool until it has ``size`` and starts them, the
        first ones on ``nodes`` when they can; the caller holds the lock. Returns the new
        names."""
        vid = version.id if version else None
        pool = self.pools[(task_queue, vid)]
        taken = {n for n, (q, v) in self.hosts.items() if (q, v) == (task_queue, vid)}
        added, index = [], 0
        while len(pool) < size:
            name = pool_host(task_queue, index, vid)
            index += 1
            if name in pool or name in taken or name in self.drained:
                continue
            pool.append(name)
            added.append(name)
        await self._io(self.runs.put_config, _pool_key(task_queue, vid), {"hosts": pool})
        await self._launch_spread(added, task_queue, version, nodes)
        return added

    async def _launch_spread(self, names: list[str], task_queue: str,
                             version: m.CodeVersion | None, nodes: list[str] | None = None
                             ) -> None:
        """Starts hosts, one per node in turn: first on ``nodes``, then on every alive
        node not drained with the queue's labels (a preference: Ray's ``SPREAD`` alone may
        put them all on one)."""
        queue = await self._io(self.runs.get_config, f"queue:{task_queue}") or {}
        others = sorted(self._nodes(queue.get("node_labels")) - set(nodes or []))
        order = [*(nodes or []), *others]
        if len(order) < 2:
            order = []  # one node: nothing to choose, and Ray restarts the host in place
        for i, name in enumerate(names):
            await self._launch(name, task_queue, version, order[i % len(order)] if order
                               else None)

    # ---------------------------------------------------------- elastic pools

    async def scale(self) -> dict[str, list[str]]:
        """One round of the elastic pools (the newest version of each queue): a pool
        grows to ``target_size`` of the alive nodes, its live runs and its hosts' load,
        and its parked runs whose place is now a new host move there; a pool that wanted
        fewer hosts for ``SHRINK_AFTER`` rounds drains its newest host. Nodes Ray drains
        are drained first. Returns the hosts added and drained."""
        for node in self.launcher.draining_nodes() - self.drained_nodes:
            log.info("registry: Ray is draining node %s: moving its runs away", node)
            self._drain_later(await self._take_node(node))
        gone = self.drained_nodes - set(self.launcher.nodes())
        if gone:  # a node id is never used again: forget the drained nodes that went
            self.drained_nodes -= gone
            self.launcher.avoid(self.drained_nodes)
            await self._save_drains()
        names = sorted(self.hosts)
        for name, seen in zip(names, await asyncio.gather(
                *(self.launcher.probe(n) for n in names)), strict=True):
            if seen is None and await self._io(self.runs.has_open, name):
                await self._revive(name)  # dead with runs (its node went): start it again
            elif seen is not None and name in self.drained and not seen.draining:
                await self.launcher.host(name).drain()  # Ray restarted it undrained
        await self._retire_drained()
        newest: dict[str, tuple[float, str | None]] = {}
        for queue, vid in self.pools:
            since = self._since.get(vid, 0.0) if vid is not None else 0.0
            newest[queue] = max(newest.get(queue, (-1.0, None)), (since, vid),
                                key=lambda pair: pair[0])
        changes: dict[str, list[str]] = {"added": [], "drained": []}
        for queue, (_, vid) in newest.items():
            config = await self._io(self.runs.get_config, f"queue:{queue}") or {}
            if fixed_size(config) is not None:
                continue  # fixed by Worker.create
            pool = self.pools[(queue, vid)]
            stats = await self._stats(pool)
            alive = self._nodes(config.get("node_labels"))
            live, busy = sum(s.running for s in stats), sum(s.load for s in stats)
            bounds = (config.get("min_hosts") or 1, config.get("max_hosts") or MAX_HOSTS)
            want = target_size(len(alive), live, busy, *bounds)
            # fewer hosts only if they would be enough with SHRINK_ROOM times the load: a
            # pool near a threshold does not drain a host and grow back in turns
            room = target_size(len(alive), live * SHRINK_ROOM, busy * SHRINK_ROOM, *bounds)
            self._low[(queue, vid)] = self._low[(queue, vid)] + 1 if room < len(pool) else 0
            if want > len(pool):
                version = await self._known(vid)
                bare = sorted(alive - {s.node for s in stats if s.node})  # joined nodes
                async with self._lock:
                    added = await self._grow(queue, version, want, bare)
                changes["added"] += added
                await self._rebalance(pool, added)
            elif self._low[(queue, vid)] >= SHRINK_AFTER:
                self._low[(queue, vid)] = 0
                changes["drained"].append(pool[-1])
                self._drain_later([pool[-1]])
        return changes

    async def _retire_drained(self) -> None:
        """Stops the drained hosts that hold nothing any more (one a late caller started
        again included) and forgets them."""
        for name in sorted(self.drained - set(self._drains)):
            if not await self._io(self.runs.has_open, name) and await self.launcher.retire(name):
                self.hosts.pop(name, None)
                self.drained.discard(name)
                await self._save_drains()

    async def _save_drains(self) -> None:
        await self._io(self.runs.put_config, "drains", {
            "hosts": sorted(self.drained), "nodes": sorted(self.drained_nodes)})

    def _nodes(self, labels: dict[str, str] | None = None) -> set[str]:
        """The alive nodes hosts may go to: with ``labels``, not drained, and (for a node
        that joined since the registry first looked) seen for ``NODE_SETTLE`` seconds, so
        Ray can place on it what the registry asks it to."""
        now, first = time.monotonic(), not self._node_seen
        alive = set(self.launcher.nodes(labels)) - self.drained_nodes
        for node in alive:
            self._node_seen.setdefault(node, now - NODE_SETTLE if first else now)
        return {node for node in alive if now - self._node_seen[node] >= NODE_SETTLE}

    async def _stats(self, names: list[str]) -> list[m.HostStats]:
        """The stats of those of ``names`` that run now."""
        found = await asyncio.gather(*(self.launcher.probe(n) for n in names),
                                     return_exceptions=True)
        return [s for s in found if isinstance(s, m.HostStats)]

    async def _revive(self, name: str) -> None:
        try:
            await self.ensure_host(name)
        except Exception:
            log.exception("registry: cannot start host %s again", name)

    async def _rebalance(self, pool: list[str], added: list[str]) -> int:
        """Moves the parked runs of a pool's older hosts whose place is now one of the
        ``added`` hosts (rendezvous hashing: about their share); returns how many."""
        due = []
        for name in [n for n in pool if n not in added]:
            for workflow_id, parked_until in await self._io(self.runs.open_workflows, name):
                if parked_until is not None and pick(pool, workflow_id) in added:
                    due.append(workflow_id)  # live runs stay: they move when a host drains
        whys = await self._move_all(pool, due)
        for workflow_id, why in whys.items():
            if why is not None:
                log.warning("registry: moving %s failed: %s", workflow_id, why)
        moved = sum(why is None for why in whys.values())
        if moved:
            log.info("registry: moved %d parked run(s) to new hosts %s", moved, added)
        return moved

    async def drain(self, name: str) -> m.DrainReport:
        """Empties host ``name`` and stops it: it takes no new run (its callers place
        them again), every run moves to the rest of its pool (a run whose activity is
        running once that ends, or after ``RAYLINE_DRAIN_WAIT`` seconds anyway: the
        activity then runs again), and it retires once it holds nothing. The last host
        of a pool is replaced first. A host being drained is drained once: a second
        call gets the same report. Returns what moved and what could not.

        Raises:
            InvalidInputError: an unknown or dedicated host.
        """
        return await asyncio.shield(self._draining(name))

    def _draining(self, name: str) -> asyncio.Future[m.DrainReport]:
        """The drain of ``name``: the one under way, else a new one."""
        running = self._drains.get(name)
        if running is None:
            running = self._drains[name] = asyncio.ensure_future(self._drain(name))
            running.add_done_callback(
                lambda done: self._drains.get(name) is done and self._drains.pop(name))
        return running

    async def _drain(self, name: str) -> m.DrainReport:
        async with self._lock:
            config = await self._io(self.runs.get_config, f"host:{name}")
            if config is None or is_dedicated(name):
                raise InvalidInputError(f"cannot drain {name!r}: not a host of a pool")
            queue, vid = config["task_queue"], config.get("version")
            version = await self._known(vid)
            queue_config = await self._io(self.runs.get_config, f"queue:{queue}") or {}
            pool = await self._pool(queue, version, queue_config)
            if pool == [name]:
                await self._grow(queue, version, 2)
            self.drained.add(name)
            await self._save_drains()  # first: a restarted registry goes on with it
            if name in pool:
                pool.remove(name)
                await self._io(self.runs.put_config, _pool_key(queue, vid), {"hosts": pool})
        return await self._empty(name, pool)

    async def _empty(self, name: str, pool: list[str]) -> m.DrainReport:
        await self.launcher.host(name).drain()
        moved, left = list[str](), dict[str, str]()
        deadline = time.monotonic() + DRAIN_WAIT
        while True:
            force = time.monotonic() > deadline
            left = {}
            found = [w for w, _ in await self._io(self.runs.open_workflows, name)]
            stale = [w for w in found if w in moved]  # moved, yet still marked here
            for workflow_id, why in (await self._move_all(
                    pool, [w for w in found if w not in moved], force)).items():
                if why is None:
                    moved.append(workflow_id)
                elif why == "it has closed":  # elsewhere, or before its marker went
                    stale.append(workflow_id)
                else:
                    left[workflow_id] = why
            for workflow_id in stale:  # the host forgets it and its marker (not its own)
                why = await _why_not(self.launcher.host(name).let_go(workflow_id))
                if why is not None:
                    left[workflow_id] = why
            if not left and not await self._io(self.runs.has_open, name):
                break
            if force:
                break  # what is left cannot move (stuck): the host stays for it
            await asyncio.sleep(0.5)
        retired = not left and await self.launcher.retire(name)
        if retired:
            self.hosts.pop(name, None)
            self.drained.discard(name)
            await self._save_drains()
        log.info("registry: drained %s: moved %d run(s), %d left, retired=%s", name,
                 len(moved), len(left), retired)
        return m.DrainReport(host=name, moved=moved, left=left, retired=retired)

    async def drain_node(self, node: str) -> list[m.DrainReport]:
        """Drains every pool host on Ray node ``node`` (before it is taken away): no host
        is started there from now on, and elastic pools stop counting it."""
        names = await self._take_node(node)
        return list(await asyncio.gather(*(self.drain(name) for name in names)))

    async def _take_node(self, node: str) -> list[str]:
        """Marks ``node`` drained (kept, and avoided by new hosts); its pool hosts."""
        self.drained_nodes.add(node)
        self.launcher.avoid(self.drained_nodes)
        await self._save_drains()
        return [s.host for s in await self.host_stats()
                if s.node == node and not is_dedicated(s.host)]

    async def _move_all(self, pool: list[str], workflow_ids: list[str],
                        force: bool = False) -> dict[str, str | None]:
        """Moves runs to their places in ``pool``, ``MOVES_AT_ONCE`` at a time; for each,
        ``None`` once it is there, else why not."""
        limit = asyncio.Semaphore(MOVES_AT_ONCE)

        async def one(workflow_id: str) -> str | None:
            async with limit:
                return await self._move(pick(pool, workflow_id), workflow_id, force)

        whys = await asyncio.gather(*(one(w) for w in workflow_ids))
        return dict(zip(workflow_ids, whys, strict=True))

    async def _move(self, host: str, workflow_id: str, force: bool = False) -> str | None:
        """Asks ``host`` to adopt a run: ``None`` once the run is there, else why not (a
        failed call included)."""
        return await _why_not(self.launcher.host(host).adopt(workflow_id, force))

    async def host_stats(self) -> list[m.HostStats]:
        """Every host started here: its runs (live, parked, stuck), node and whether it
        drains."""
        return await self._stats(sorted(self.hosts))

    async def dedicated_host(self, workflow_id: str, task_queue: str = "default",
                             version: m.CodeVersion | str | None = None) -> str:
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
            if vid is not None and not is_dedicated(name):
                newest[queue] = max(newest.get(queue, (0.0, "")), (self._since[vid], vid))
        retired = []
        for name, (queue, vid) in hosts:
            if not is_dedicated(name) and (vid is None or vid == newest[queue][1]):
                continue
            async with self._lock:
                if name in self.hosts and await self._retire_if_idle(name):
                    retired.append(name)
        if retired:
            log.info("registry: retired idle hosts %s", ", ".join(retired))
        return retired

    async def retire(self, name: str) -> bool:
        """Stops dedicated host ``name`` now if it holds no run (none live, parked, stuck
        or open in storage) and forgets it; whether it is gone. A dedicated host asks
        this once its last run has closed (``Backend.retire``), so its process ends then
        rather than at the next ``retire_idle``. The checks run under the lock that
        ``dedicated_host`` takes, so a next run of the id that is open by then keeps it;
        a call for it later starts it again (a call that reaches it as it is stopped is
        tried again by its caller, as after a crash)."""
        self.calls["retire"] += 1
        if not is_dedicated(name):
            return False  # a pool's host: its pool keeps it, or a drain stops it
        async with self._lock:
            gone = await self._retire_if_idle(name)
        if gone:
            log.info("registry: dedicated host %s holds no run: stopped", name)
        return gone

    async def _retire_if_idle(self, name: str) -> bool:
        """Stops host ``name`` if it holds no run and forgets it (the caller holds the
        lock); whether it is gone."""
        if await self._io(self.runs.has_open, name) or not await self.launcher.retire(name):
            return False
        self.hosts.pop(name, None)
        return True

    # -------------------------------------------------------------- upgrade

    async def upgrade(self, old: str, new: m.CodeVersion | str,
                      workflow_ids: list[str] | None = None) -> m.UpgradeReport:
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
        pools: dict[str, list[str]] = {}  # queue -> its pool of version ``new``
        for name in await self._io(self.runs.open_hosts):
            config = await self._io(self.runs.get_config, f"host:{name}") or {}
            if config.get("version") != old:
                continue
            for workflow_id, _ in await self._io(self.runs.open_workflows, name):
                if wanted is not None and workflow_id not in wanted:
                    continue
                queue = config["task_queue"]
                try:
                    if is_dedicated(name):
                        there = await self.dedicated_host(workflow_id, queue, target)
                    else:
                        if queue not in pools:
                            pools[queue] = await self.hosts_for(queue, target)
                        there = pick(pools[queue], workflow_id)
                except Exception as exc:
                    left[workflow_id] = f"{type(exc).__name__}: {exc}"
                    continue
                why = await self._move(there, workflow_id)
                if why is None:
                    moved.append(workflow_id)
                else:
                    left[workflow_id] = why
        log.info("registry: upgrade %s -> %s moved %d run(s), left %d", old, target.id,
                 len(moved), len(left))
        return m.UpgradeReport(old=old, new=target.id, moved=moved, left=left)

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

    async def report(self, summaries: list[m.RunSummary]) -> None:
        """Hosts' news of their runs: into the index, and into storage within
        ``INDEX_SAVE_EVERY`` seconds."""
        self.calls["report"] += 1
        self._keep(self.index.record(summaries))

    async def forget(self, runs: dict[str, str]) -> int:
        """Drops from the index each workflow whose entry is still of the run given (a
        gc deleted it; a newer run of the id stays), and saves the index whole at once
        (a snapshot: the logs that named them go); how many were dropped."""
        self.calls["forget"] += 1
        index = await self._indexed_now()
        dropped = [w for w, run_id in runs.items()
                   if (s := index.summaries.get(w)) is not None and s.run_id == run_id]
        for workflow_id in dropped:
            del index.summaries[workflow_id]
            self._unsaved.pop(workflow_id, None)
        if dropped:
            await self._io(self._index_store.compact, index.snapshot())
        return len(dropped)

    def _keep(self, summaries: list[m.RunSummary]) -> None:
        """Saves ``summaries`` in the index's next log (in the background)."""
        for summary in summaries:
            self._unsaved[summary.workflow_id] = summary
        if self._unsaved and (self._saving is None or self._saving.done()):
            self._saving = asyncio.ensure_future(self._save())

    async def _save(self) -> None:
        """Writes the unsaved summaries as one log (a failed write is tried again with
        the next), and a snapshot once the logs hold as many summaries as the index."""
        await asyncio.sleep(INDEX_SAVE_EVERY)
        batch, self._unsaved = self._unsaved, {}
        try:
            await self._io(self._index_store.append, list(batch.values()))
            if self._indexed and self._index_store.logged >= max(INDEX_MIN_SNAPSHOT,
                                                                 len(self.index)):
                await self._io(self._index_store.compact, self.index.snapshot())
        except Exception:
            log.exception("registry: saving %d index entries failed; trying again",
                          len(batch))
            self._unsaved = {**batch, **self._unsaved}
        if self._unsaved:
            self._saving = asyncio.ensure_future(self._save())

    async def _indexed_now(self) -> Index:
        """The index with what storage keeps (read once, then reconciled; see
        ``rayline.engine.index``)."""
        if not self._indexed:
            async with self._index_lock:
                if not self._indexed:
                    # reports that came meanwhile are newer than what storage kept
                    self.index.record(await self._io(self._index_store.load), ties=False)
                    found = await self._io(self._index_store.reconcile,
                                           dict(self.index.summaries))
                    self._keep(self.index.record(found, ties=False))
                    self._indexed = True
        return self.index

    async def versions(self) -> list[m.VersionSummary]:
        """Every code version with runs in the index: its runs per state and the hosts of
        its open runs, newest run first."""
        self.calls["versions"] += 1
        index = await self._indexed_now()
        grouped: dict[str | None, list[m.RunSummary]] = {}
        for summary in sorted(index.snapshot(), key=lambda s: s.started_at, reverse=True):
            grouped.setdefault(summary.version, []).append(summary)
        found = []
        for version, runs in grouped.items():
            stored = None if version is None else await self._io(
                self.runs.get_config, f"version:{version}")
            found.append(m.VersionSummary(
                id=version, runs=dict(collections.Counter(r.state.value for r in runs)),
                hosts=sorted({r.host for r in runs if r.state.code > 0}),
                runtime_env=(stored or {}).get("runtime_env", {})))
        return found

    async def list(self, request: m.ListRequest) -> m.ListReply:
        """A page of the workflows in the index that meet ``request``, in its order."""
        self.calls["list"] += 1
        return (await self._indexed_now()).select(request)

    async def count(self, request: m.CountRequest) -> m.CountReply:
        """How many workflows in the index meet ``request`` (per group with ``group_by``)."""
        self.calls["count"] += 1
        return (await self._indexed_now()).count(request)

    # -------------------------------------------------------------- resume

    async def resume_all(self) -> int:
        """Makes sure every host with unfinished runs is up (each resumes its own runs)
        and goes on with the drains the last registry had begun."""
        drains = await self._io(self.runs.get_config, "drains") or {}
        self.drained |= set(drains.get("hosts", []))
        self.drained_nodes |= set(drains.get("nodes", []))
        if self.drained_nodes:
            self.launcher.avoid(self.drained_nodes)
        names = await self._io(self.runs.open_hosts)
        for name in names:
            try:
                await self.ensure_host(name)
            except Exception:
                log.exception("registry: cannot resume host %s", name)
        return len(names)


async def _why_not(call: Awaitable[str | None]) -> str | None:
    """What a call to a host answers (``None``: done, else why not), its error as text."""
    try:
        return await call
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _check_options(options: m.HostOptions) -> None:
    for key, value in (("min_hosts", options.min_hosts), ("max_hosts", options.max_hosts)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise InvalidInputError(f"{key} must be a positive int, got {value!r}")
    if options.node_labels is not None and not options.node_labels:
        raise InvalidInputError("node_labels must name at least one label (or be None)")


def _code_ref(stored: dict[str, Any]) -> CodeRef:
    """A registered workflow's code as the queue's config keeps it (also the form older
    versions wrote: ``code`` / ``code_pickle``)."""
    if "code" in stored or "code_pickle" in stored:
        return CodeRef(path=stored.get("code"), pickled=stored.get("code_pickle"))
    return CodeRef.model_validate(stored)
