"""The host: many workflow executions in one process, and the rules for starting them.

A host is what a detached Ray host actor runs (``rayline.actors.host``); it holds no
Ray code itself. Ray-specific work (running an activity attempt, calling another host,
placing a new workflow, telling the registry) goes through the small ``Backend``
protocol, so the whole host runs in unit tests with an in-process backend.

Invariants:
- Starting a run writes its run record with an exclusive create (the id-reuse arbiter),
  then the host's open marker, and only then runs workflow code.
- On start, a host resumes every run whose open marker names it (``recover``); requests
  wait until that is done, so nothing observes a half-recovered host. A run that cannot
  be read is retried in the background; a run whose code no longer replays its timeline
  (``NonDeterminismError``) or cannot be loaded is *stuck*: it is not half-built, every
  call about it fails with that error, ``describe()`` and the index show it, and the
  next ``recover()`` (a restarted host, new code) tries it again.
- A closed run's parent (if any) is told, then its open marker is removed: a crash in
  between replays the close and tells the parent again (the parent drops the repeat).
- Requests carry ids: a start or a signal sent again with the same id (a client retrying
  after a host died mid-call) gets the first one's answer and is recorded once.
- A fenced execution (another incarnation wrote its next batch) is replaced by re-reading
  the run: if this host still owns it, a fresh execution takes it back and gets the events
  the fenced one had not written; otherwise their senders are told where it went.
- A run that continues as new is followed by its next run at epoch + 1 (created
  directly: no reuse rule or parent re-attachment applies), which gets the signals the
  old run had not consumed and those still in its mailbox.
- A run that waits only on timers or signals for ``park_after`` seconds is parked: its
  execution is dropped, leaving an entry in ``parked`` (next wake time, ``inf`` for signals
  only) and a hint in its open marker. A due timer, a signal, a cancel, a query or a
  describe brings it back by replaying its timeline; ``result()`` waits without waking it.
- A dedicated host asks the registry to stop it (``Backend.retire``) once it has held no
  run for ``linger`` seconds: no run live, parked, stuck, starting, continuing, waiting
  out a retry or moving, and no work a closed run left (its parent told, its open marker
  removed). The registry checks again under its lock before it stops the host; a call
  for the workflow later starts the host again, which answers from storage.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Protocol, Sequence

from .. import _backoff, _tracing
from .._activity import ActivityDefinition, ActivityInfo
from .._code import CodeRef
from .._cron import cron_spec
from .._definition import WorkflowDefinition, as_workflow
from .._options import ActivityOptions
from .._serde import Payload
from .._validate import validate_fields, validate_task_queue
from .._values import ObjectSpace, Stored, Values
from ..core import guards
from ..core.instance import WorkflowInstance, replay_timeline
from ..errors import (
    ConflictError,
    DuplicateWorkflowError,
    InvalidInputError,
    NotHereError,
    QuarantinedError,
    QueryError,
    RaylineError,
    StorageError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from ..messages import (
    HostStats,
    PendingWork,
    ResetRequest,
    RunOutcome,
    RunStatus,
    RunSummary,
    SignalIn,
    StartReply,
    StartRequest,
    UpdateOutcome,
    WorkflowDescription,
)
from ..storage.runs import History, RunStore, validate_id
from ..timeline import (
    Batch,
    CancelRequested,
    CompleteUpdate,
    Event,
    ResetFrom,
    ResetTo,
    ScheduleActivity,
    SignalExternal,
    SignalReceived,
    StartChild,
    Terminated,
    UpdateAccepted,
    WorkflowStarted,
    fields_of,
    home_of,
    payloads_of,
)
from . import reset as reset_rules
from . import reuse
from .activities import Outcome, run_with_retries
from .api import HostAPI
from .blackbox import Blackbox
from .execution import Execution, Mail, wake_of
from .metrics import Metrics
from .parking import ParkingLot
from .registry import is_dedicated
from .routing import Routing, child_event
from .watchdog import STRICT, Watchdog

QUARANTINE_AFTER = int(os.environ.get("RAYLINE_QUARANTINE_AFTER", "2"))
"""Host deaths in a row during one run's code after which that run is quarantined."""

log = logging.getLogger("rayline.host")

KEEP_FINISHED = 2_000  # closed runs kept in memory for result() and describe()
KEEP_REPLAYED = 64  # closed runs kept replayed, to answer queries
UPDATE_CHECK_EVERY = 5.0
"""Seconds between checks, while an update call waits, that its run is still here (it may
have moved to another host, which then answers the caller's retry)."""
PARK_AFTER = float(os.environ.get("RAYLINE_PARK_AFTER", "2"))
LINGER = float(os.environ.get("RAYLINE_DEDICATED_LINGER", "5"))
"""Seconds a dedicated host holds no run before it asks the registry to stop it: a call
soon after its run closed (``result()``, ``describe()``) finds it up."""


class Backend(Protocol):
    """What a host needs from the cluster it runs on."""

    def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                    options: ActivityOptions, info: ActivityInfo) -> Any: ...
    def host(self, name: str) -> HostAPI: ...
    async def place(self, task_queue: str, workflow_id: str, dedicated: bool) -> str: ...
    async def locate(self, workflow_id: str) -> str: ...
    def report(self, summary: RunSummary) -> None: ...
    def retire(self, host: str) -> None:
        """Asks the registry, without waiting, to stop ``host``: it holds no run."""


STARTED = -1
"""The number of the heartbeat an attempt with a ``heartbeat_timeout`` sends as it
begins to run: no details (the last attempt's stay), only "running now"."""


class Heartbeat:
    """The running attempt of one activity call and its last heartbeat (when, details)."""

    def __init__(self, info: ActivityInfo, details: Any, at: float) -> None:
        self.info = info
        self.details = details
        self.number = 0  # of the heartbeat the details come from
        self.at = at
        """When it was last heard from, by the host's ``monotonic`` clock."""
        self.started = False
        """The attempt said it runs (heartbeat ``STARTED``): silence counts from then on,
        not while Ray holds the task for resources (a GPU, say)."""


class Stuck:
    """A run this host owns but cannot run: its replay or its code failed to load."""

    def __init__(self, started: WorkflowStarted, batches: list[Batch], error: Exception) -> None:
        self.started = started
        self.batches = batches
        self.error = error

    @property
    def state(self) -> RunStatus:
        quarantined = isinstance(self.error, QuarantinedError)
        return RunStatus.QUARANTINED if quarantined else RunStatus.STUCK

    @property
    def reason(self) -> str:
        """Why it cannot run, as ``describe()`` and the index show it."""
        return f"{type(self.error).__name__}: {self.error}"

    def raise_(self) -> None:
        raise self.error


class Host:
    """Runs workflow executions (see the module docstring)."""

    def __init__(self, name: str, runs: RunStore, backend: Backend,
                 workflows: list[WorkflowDefinition[Any, Any]] | None = None,
                 clock: Callable[[], float] = time.time,
                 park_after: float | None = PARK_AFTER,
                 watchdog: Watchdog | None = None, strict: bool = STRICT,
                 blackbox: Blackbox | None = None, version: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None, linger: float = LINGER) -> None:
        self.host_name = name
        self.linger = linger if is_dedicated(name) else None
        """Seconds this host waits, once it holds no run, before it asks the registry to
        stop it (``Backend.retire``): a dedicated host's process ends soon after its run
        closes; a pool's host (``None``) stays."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self.strict = strict
        """Every run started here is strict (``RunOptions.strict``), as RAYLINE_STRICT=1."""
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = metrics or Metrics()
        """Where runs, steps, attempts and storage calls are counted (``engine.metrics``)."""
        """Seconds that only go forward, for heartbeat silence and ``schedule_to_close``:
        the event loop's own clock in ``rayline.testing``, where time can skip ahead."""
        self.runs = runs
        self.backend = backend
        self.space: ObjectSpace | None = getattr(backend, "space", None)
        """The cluster's object store, where large values are kept for the next activity."""
        self.executions: dict[str, Execution] = {}
        self.version = version
        """The code version of this host's process: every run it starts records it."""
        self.names: dict[str, WorkflowDefinition[Any, Any]] = {}
        self.stuck: dict[str, Stuck] = {}
        self.beats: dict[tuple[str, int], Heartbeat] = {}
        """The attempt of each activity call running now, by (workflow id, call)."""
        self.blocked: dict[str, str] = {}
        """The watchdog's last report per workflow that blocked the event loop."""
        self.watchdog = watchdog or Watchdog(self._on_blocked)
        guards.install()
        self.blackbox = blackbox or Blackbox.for_host(runs.store.url, runs.namespace, name)
        self.quarantine_after = QUARANTINE_AFTER
        self._finished: collections.OrderedDict[str, Execution] = collections.OrderedDict()
        self._continuing: dict[str, asyncio.Task[Execution | None]] = {}
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._retaking: dict[str, asyncio.Future[None]] = {}
        self._closers: dict[str, list[asyncio.Future[RunOutcome]]] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}
        """The close work (children, parent, marker) of runs that closed here, by id."""
        self._markers: dict[str, asyncio.Future[Any]] = {}
        self._adopting: dict[str, asyncio.Future[None]] = {}
        self._backoffs: dict[str, asyncio.Task[None]] = {}
        """Failed runs waiting out their retry backoff, by workflow id."""
        self._updates: dict[tuple[str, str], asyncio.Future[CompleteUpdate]] = {}
        """Update calls waiting here, by (workflow id, update id), for the update's end."""
        self._replayed: collections.OrderedDict[str, WorkflowInstance] = \
            collections.OrderedDict()
        """Closed runs replayed to answer queries, by run id (``KEEP_REPLAYED``)."""
        self.parking = ParkingLot(self, park_after)
        self.routing = Routing(name, backend, self, lambda workflow_id: workflow_id in
                               self.executions)
        self._background: set[asyncio.Future[Any]] = set()
        self._code_cache: dict[str, WorkflowDefinition[Any, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rayline-io")
        self._quick = runs.store.quick
        self._ready = asyncio.Event()
        self.draining = False
        """Set by ``drain``: new starts are refused (their clients place them again)."""
        self.load = 0.0
        self._load_sample = (time.monotonic(), time.thread_time())
        self.counts: collections.Counter[str] = collections.Counter()
        """What happened here since this process started (``HostStats``): runs started,
        closed per status, activity attempts, runs adopted."""
        self._rng = random.Random()
        self.register(workflows or [])

    # ------------------------------------------------------------ environment

    def now(self) -> float:
        return self.clock()

    def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def quick_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``io`` for listings, small reads and non-durable writes: on the event loop
        when the store says they are quick (local files, memory), else in the pool."""
        if self._quick:
            return fn(*args)
        return await self.io(fn, *args)

    async def read(self, fn: Callable[..., Any], *args: Any, quick: bool = False,
                   attempts: int | None = 6) -> Any:
        """A storage read (or an idempotent write), retried by the backoff schedule when
        it fails transiently; then its error goes to the caller."""
        run = self.quick_io if quick else self.io
        return await _backoff.retrying(lambda: run(fn, *args), f"{fn.__name__}{args[:1]}",
                                       attempts=attempts)

    def write_marker(self, workflow_id: str, parked_until: float | None = None) -> None:
        """Rewrites the run's open marker (a hint) in the background, after any earlier
        rewrite of the same marker, so the last one written is the last one asked for."""
        previous = self._markers.get(workflow_id)

        async def write() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await self.read(self.runs.mark_open, self.host_name, workflow_id, parked_until,
                                attempts=3)
            except Exception as exc:  # a hint: a stale one costs a replay, never a run
                log.warning("host %s: open marker of %s not rewritten: %s", self.host_name,
                            workflow_id, exc)

        task = asyncio.ensure_future(write())
        self._markers[workflow_id] = task
        task.add_done_callback(lambda t: self._markers.get(workflow_id) is t
                               and self._markers.pop(workflow_id))
        self.background(task)

    def register(self, workflows: list[WorkflowDefinition[Any, Any]]) -> list[str]:
        for definition in workflows:
            self.names[definition.name] = as_workflow(definition)
        return sorted(self.names)

    async def recover(self) -> int:
        """Resumes every unfinished run this host owns (stuck ones are tried again), the
        run whose code was running when the last host died last, and quarantined ones
        not at all; returns how many. Listing is retried until storage answers."""
        resumed = 0
        try:
            suspect = await self._count_the_death()
            quarantined = await self._quarantined()
            owned = await self.read(self.runs.open_workflows, self.host_name, attempts=None)
            owned.sort(key=lambda item: item[0] == suspect)  # the suspect last
            for workflow_id, parked_until in owned:
                if workflow_id in self.executions or workflow_id in self.parking:
                    continue
                if workflow_id in quarantined:
                    await self._hold(workflow_id, quarantined[workflow_id])
                    continue
                if parked_until is not None and workflow_id not in self.stuck:
                    self.parking.add(workflow_id, parked_until)
                    resumed += 1
                    continue
                self.stuck.pop(workflow_id, None)
                try:
                    execution = await self.resume_run(workflow_id)
                    if execution.outcome is None:  # the index hears of it again
                        self._report(execution)
                    resumed += 1
                except Exception as exc:
                    if _backoff.transient(exc):
                        self.background(self._resume_later(workflow_id))
                    log.exception("host %s: cannot resume %s", self.host_name, workflow_id)
        finally:
            self._ready.set()
            self._idle_soon()  # started again for a call about a closed run, say
        return resumed

    async def _count_the_death(self) -> str | None:
        """The run to recover last (its code was running when the last host died), after
        quarantining it when that has happened ``quarantine_after`` times in a row."""
        found = self.blackbox.after_restart()
        if found is None:
            return None
        workflow_id, deaths, just_died = found
        if just_died:
            log.error("host %s: the last host process died while running the code of "
                      "workflow %s (%d time(s) in a row)", self.host_name, workflow_id, deaths)
        if just_died and deaths >= self.quarantine_after:
            quarantined = await self._quarantined()
            quarantined[workflow_id] = (f"its code was running when its host died, {deaths} "
                                        "times in a row")
            await self.read(self.runs.put_config, self._quarantine_key, quarantined,
                            attempts=None)
        return workflow_id

    @property
    def _quarantine_key(self) -> str:
        return f"quarantine:{self.host_name}"

    async def _quarantined(self) -> dict[str, str]:
        """The runs of this host held from loading, with why (kept in storage)."""
        found = await self.read(self.runs.get_config, self._quarantine_key, attempts=None)
        return {str(k): str(v) for k, v in (found or {}).items()}

    async def _hold(self, workflow_id: str, reason: str) -> None:
        """Keeps a quarantined run as stuck: read, never replayed."""
        history = await self.read(self._load_owned, workflow_id, attempts=None)
        started, batches = history.started, history.batches
        self.stuck[workflow_id] = Stuck(started, batches, QuarantinedError(
            f"workflow {workflow_id} is quarantined: {reason}. Fix its code, then release "
            "it (handle.release(), rayline workflow release ID), or terminate it"))
        self._report_stuck(workflow_id)
        log.error("host %s: workflow %s is quarantined: %s", self.host_name, workflow_id,
                  reason)

    async def release(self, workflow_id: str) -> None:
        """Lets a quarantined run load again (after its code was fixed) and resumes it."""
        await self._ready.wait()
        quarantined = await self._quarantined()
        if workflow_id not in quarantined:
            if workflow_id in self.stuck or workflow_id in self.parking \
                    or self._execution(workflow_id) is not None:
                raise InvalidInputError(f"workflow {workflow_id} is not quarantined")
            raise NotHereError(f"workflow {workflow_id} is not on host {self.host_name}")
        del quarantined[workflow_id]
        await self.read(self.runs.put_config, self._quarantine_key, quarantined,
                        attempts=None)
        self.blackbox.forgive(workflow_id)
        self.stuck.pop(workflow_id, None)
        await self.resume_run(workflow_id)

    async def _resume_later(self, workflow_id: str) -> None:
        """Keeps trying to resume a run whose timeline could not be read."""
        for delay in _backoff.delays():
            await asyncio.sleep(delay)
            if workflow_id in self.executions or workflow_id in self.parking:
                return
            try:
                await self.resume_run(workflow_id)
                return
            except Exception as exc:
                if not _backoff.transient(exc):
                    return  # stuck: recorded by resume_run
                log.warning("host %s: resuming %s failed again: %s", self.host_name,
                            workflow_id, exc)

    async def resume_run(self, workflow_id: str) -> Execution:
        """Rebuilds a run from storage into a live execution (recovery, waking a parked run).

        Raises:
            NonDeterminismError: (or the error loading its code) the run is now stuck.
            StorageError: its timeline could not be read (after retries).
        """
        history = await self.read(self._load_owned, workflow_id)
        started, batches = history.started, history.batches
        owner = home_of(started, batches)[0]
        if owner != self.host_name:  # it moved (an upgrade) and this marker was left over
            await self.read(self.runs.clear_open, self.host_name, workflow_id, attempts=3)
            raise NotHereError(f"workflow {workflow_id} runs on {owner}")
        return self._revive(started, batches, await self._values_for(started, batches),
                            history)

    def _load_owned(self, workflow_id: str) -> History:
        """The latest run, read by its owner: a torn last batch is set aside."""
        return self.runs.load_history(workflow_id, repair=True)

    async def _values_for(self, started: WorkflowStarted, batches: list[Batch]) -> Values:
        """A run's large values, the ones its replay reads fetched ahead (off the loop)."""
        values = Values(self.runs, self.space)
        await values.prefetch(payloads_of([e for b in batches for e in b.events], started),
                              self.io)
        return values

    def _revive(self, started: WorkflowStarted, batches: list[Batch],
                values: Values | None = None, history: History | None = None) -> Execution:
        workflow_id = started.workflow_id
        try:
            execution = Execution(self, self._definition_of(started), started, values)
            self.blackbox.running(workflow_id)
            try:
                execution.resume(batches, history)
            finally:
                self.blackbox.idle()
        except Exception as exc:
            self.stuck[workflow_id] = Stuck(started, batches, exc)
            self.executions.pop(workflow_id, None)
            self._report_stuck(workflow_id)
            self._resolve_closers(workflow_id, exc)
            log.error("host %s: run %s of %s is stuck: %s", self.host_name, started.run_id,
                      workflow_id, exc)
            raise
        self.stuck.pop(workflow_id, None)
        self.executions[workflow_id] = execution
        if execution.outcome is not None:
            self.on_closed(execution)
        return execution

    def _definition_of(self, started: WorkflowStarted) -> WorkflowDefinition[Any, Any]:
        return self._resolve(started.workflow_name,
                             CodeRef.stored(started.code, started.code_pickle),
                             started.task_queue)

    def _resolve(self, name: str | None, code: CodeRef | None,
                 task_queue: str) -> WorkflowDefinition[Any, Any]:
        if code is not None:
            cached = self._code_cache.get(code.key)
            if cached is None:
                cached = as_workflow(code.load())
                if len(self._code_cache) > 1000:
                    self._code_cache.clear()
                self._code_cache[code.key] = cached
            return cached
        if name and name in self.names:
            return self.names[name]
        known = ", ".join(sorted(self.names)) or "none"
        raise InvalidInputError(
            f"unknown workflow_name {name!r} on task queue {task_queue!r} (registered: {known})")

    # -------------------------------------------------------------------- start

    async def start(self, request: StartRequest) -> StartReply:
        """Starts a run. ``request`` is what ``client.workflow.start`` sends.

        Raises:
            NotHereError: the host is draining: the caller places the start again.
        """
        await self._ready.wait()
        if self.draining:
            raise NotHereError(f"host {self.host_name} is draining: it takes no new run")
        workflow_id = validate_id(request.workflow_id)
        validate_task_queue(request.task_queue)
        reuse.policy_of(request)
        reuse.conflict_of(request)
        validate_fields(request.search, what="search")
        validate_fields(request.memo, what="memo")
        definition = self._resolve(request.workflow_name, request.code, request.task_queue)
        while workflow_id in self._starting:  # starts of one id, one after the other
            await asyncio.wait([self._starting[workflow_id]])
        starting = asyncio.get_running_loop().create_future()
        self._starting[workflow_id] = starting
        try:
            reply = await self._start(workflow_id, definition, request)
        finally:
            del self._starting[workflow_id]
            if not starting.done():
                starting.set_result(None)
        if reply.existing:  # use_existing: the start's signals go to the open run
            for signal in request.signals:
                await self.routing.host(reply.host).signal(
                    workflow_id, signal.signal_id, signal.data, None, signal.request_id)
        if request.wait and reply.outcome is None and reply.host == self.host_name:
            try:
                outcome = await self.result(workflow_id, None, True)
            except NotHereError:  # it moved away: the client asks where it is now
                return reply
            return reply.model_copy(update={"outcome": outcome})
        return reply

    async def reset(self, request: ResetRequest) -> StartReply:
        """Makes a run that takes over the first batches of the id's latest run up to
        ``request.to`` and goes on live from there (``rayline.engine.reset``): the next
        run of the id, the old one (terminated first if still open) marked as reset; or,
        with ``new_workflow_id``, run 1 of that id, the original left as it is.

        Raises:
            InvalidInputError: ``to`` names nothing in the run, or the current code does
                not replay the batches it would keep.
            DuplicateWorkflowError: (a fork) the new id has a run already.
        """
        await self._ready.wait()
        if self.draining:
            raise NotHereError(f"host {self.host_name} is draining: it takes no new run")
        source = validate_id(request.workflow_id)
        target = validate_id(request.new_workflow_id or source)
        while target in self._starting:  # one start (or reset) of an id at a time
            await asyncio.wait([self._starting[target]])
        starting = asyncio.get_running_loop().create_future()
        self._starting[target] = starting
        try:
            return await self._reset(request, source, target)
        finally:
            del self._starting[target]
            starting.set_result(None)

    async def _reset(self, request: ResetRequest, source: str, target: str) -> StartReply:
        fork = target != source
        started, batches = await self.read(self.runs.load, source)
        if not fork and started.reset_from is not None \
                and started.request_id == request.request_id:
            return StartReply(workflow_id=target, run_id=started.run_id,  # sent again
                              host=home_of(started, batches)[0])
        if fork and await self.read(self.runs.latest_epoch, target, quick=True) is not None:
            raise DuplicateWorkflowError(target, "a fork needs a new workflow id")
        if not fork and RunOutcome.of_run(batches) is None:  # open: it ends first
            reason = f"reset{': ' + request.reason if request.reason else ''}"
            try:
                if home_of(started, batches)[0] == self.host_name:  # this call holds
                    await self._terminate_here(source, reason)  # its _starting: not terminate
                    closing = self._closing.get(source)
                    if closing is not None:  # its children ended before the new run starts
                        await asyncio.wait([closing], timeout=30)  # them again
                else:
                    await self.routing.route(source, lambda host: host.terminate(source,
                                                                                 reason))
            except WorkflowClosedError:
                pass
            started, batches = await self.read(self.runs.load, source)
        definition = self._definition_of(started)
        values = await self._values_for(started, batches)
        kept = reset_rules.kept_batches(
            started, batches, request.to,
            lambda: reset_rules.replayed(definition, started, batches, values))
        reset_rules.check_replays(definition, started, batches[:kept], values)
        run_id = uuid.UUID(int=self._rng.getrandbits(128)).hex
        epoch = 1 if fork else started.epoch + 1
        new = started.model_copy(update={
            "workflow_id": target, "run_id": run_id, "epoch": epoch, "host": self.host_name,
            "version": self.version, "request_id": request.request_id, "not_before": None,
            "parent": None if fork else started.parent, "time": self.now(),
            "reset_from": ResetFrom(workflow_id=source, run_id=started.run_id, kept=kept,
                                    reason=request.reason)})
        taken = reset_rules.rebased(batches[:kept], run_id, self.host_name)
        await self._create(new, taken[0] if taken else None, attempts=None)
        for batch in taken[1:]:
            await self.read(self.runs.append, target, epoch, batch, attempts=None)
        if not fork:  # the old run reads as reset, pointing at the new one
            mark = Batch(seq=len(batches) + 1, run_id=started.run_id, time=self.now(),
                         reset=ResetTo(run_id=run_id, kept=kept, reason=request.reason),
                         owner=self.host_name)
            await self.read(self.runs.append, source, started.epoch, mark, attempts=None)
            self._finished.pop(source, None)
        execution = self._revive(new, taken, values)
        if request.reapply_signals:
            for signal in reset_rules.signals_after(batches, kept):
                execution.deliver(signal)
        self.counts["started"] += 1
        if execution.outcome is None:
            self._report(execution)
        log.info("host %s: %s %s from run %s of %s, keeping %d batch(es)", self.host_name,
                 "forked" if fork else "reset", target, started.run_id, source, kept)
        return StartReply(workflow_id=target, run_id=run_id, host=self.host_name)

    async def start_many(self, requests: list[StartRequest]
                         ) -> list[StartReply | BaseException]:
        """``start`` for each request, concurrently; a failed start's error in its place."""
        return await asyncio.gather(*(self.start(r) for r in requests), return_exceptions=True)

    async def _start(self, workflow_id: str, definition: WorkflowDefinition[Any, Any],
                     request: StartRequest) -> StartReply:
        if request.epoch is not None:  # the next run of a continue-as-new from another queue
            reply = await self._try_start(workflow_id, request.epoch, definition, request, [],
                                          attempts=None)
            if reply is not None:
                return reply
            started, _, home = await self.read(self._stored_latest, workflow_id)
            return StartReply(workflow_id=workflow_id, run_id=started.run_id, host=home)
        # signals buffered for an id that had no run yet belong to its first run only
        early: list[tuple[str, SignalReceived]] = []
        if self._execution(workflow_id) is None and workflow_id not in self.parking \
                and workflow_id not in self.stuck:
            # an id this host does not know: most likely new, so create run 1 outright;
            # the exclusive create tells us if it exists after all
            early = await self.read(lambda: list(self.runs.take_early_signals(workflow_id)),
                                    quick=True)
            reply = await self._try_start(workflow_id, 1, definition, request, early)
            if reply is not None:
                return reply
        epoch = await self._check_reuse(workflow_id, request)
        if isinstance(epoch, StartReply):
            return epoch  # the same start again, or a parent re-issuing it: attach
        reply = await self._try_start(workflow_id, epoch, definition, request,
                                      early if epoch == 1 else [])
        if reply is None:
            raise DuplicateWorkflowError(workflow_id, "started concurrently elsewhere")
        return reply

    async def _try_start(self, workflow_id: str, epoch: int,
                         definition: WorkflowDefinition[Any, Any], request: StartRequest,
                         early: list[tuple[str, SignalReceived]],
                         carried: Sequence[Mail] = (), *,
                         attempts: int | None = 6) -> StartReply | None:
        """Runs the first activation and writes run ``epoch``; None if that run exists."""
        code = request.code
        started = WorkflowStarted(
            workflow_id=workflow_id, run_id=uuid.UUID(int=self._rng.getrandbits(128)).hex,
            epoch=epoch, workflow_name=definition.name,
            code=code.path if code is not None else definition.code,
            code_pickle=code.pickled if code is not None else None, args=request.args,
            task_queue=request.task_queue, host=self.host_name, time=self.now(),
            seed=self._rng.getrandbits(63), attempt=request.attempt, parent=request.parent,
            continued_from=request.continued_from, search=request.search, memo=request.memo,
            options=request.options.model_copy(update={"strict": True})
            if self.strict and not request.options.strict else request.options,
            request_id=request.request_id, version=self.version,
            not_before=self._not_before(request), trace=request.trace,
        )
        if started.not_before is not None:
            return await self._start_later(started, request, attempts)
        execution = Execution(self, definition, started)
        events: list[Event] = [SignalReceived(signal_id=s.signal_id, data=s.data,
                                              request_id=s.request_id)
                               for s in request.signals]
        events += [event for event, _ in carried]
        events += [signal for _, signal in early]
        await execution.values.prefetch(payloads_of(events, started), self.io)
        first = execution.prepare(events)
        done = execution.eager(first.commands)  # its first activity starts now
        try:
            await self._create(started, first, attempts)
        except BaseException as exc:
            execution.abandon()  # the run was not made: what started for it stops
            if isinstance(exc, DuplicateWorkflowError):
                return None
            raise
        for _, ack in carried:
            if ack is not None and not ack.done():
                ack.set_result(None)
        self.executions[workflow_id] = execution
        self._finished.pop(workflow_id, None)
        self.counts["started"] += 1
        self.metrics.started(definition.name)
        execution.launch(first, done)
        self._report(execution)
        if epoch == 1:  # a signal buffered while run 1 was being created is still due
            self.background(self._take_late_signals(execution, {key for key, _ in early}))
        return StartReply(workflow_id=workflow_id, run_id=started.run_id, host=self.host_name)

    def _not_before(self, request: StartRequest) -> float | None:
        """When a new run's code may start: the time asked (a cron start's next run), a
        start delay from now, a cron start's first time, or at once (``None``)."""
        if request.not_before is not None:
            return request.not_before
        if request.start_delay:
            return self.now() + request.start_delay
        if request.options.cron is not None and request.continued_from is None:
            return cron_spec(request.options.cron).next_after(self.now())
        return None

    async def _start_later(self, started: WorkflowStarted, request: StartRequest,
                           attempts: int | None) -> StartReply | None:
        """A run with a start delay: its record now (no activation), parked until its
        code may start; ``None`` if that run exists."""
        if request.signals:
            raise InvalidInputError("a delayed start (start_delay, cron) cannot be combined "
                                    "with signals (signal_with_start): signal the run once "
                                    "it exists")
        workflow_id = started.workflow_id
        assert started.not_before is not None
        try:
            await self._create(started, None, attempts)
        except DuplicateWorkflowError:
            return None
        self._finished.pop(workflow_id, None)
        self.parking.add(workflow_id, started.not_before)
        self.write_marker(workflow_id, started.not_before)  # a restart keeps it parked
        self.counts["started"] += 1
        self.metrics.started(started.workflow_name)
        self._report_parked(started, [], 1)
        return StartReply(workflow_id=workflow_id, run_id=started.run_id, host=self.host_name)

    async def _create(self, started: WorkflowStarted, first: Batch | None,
                      attempts: int | None) -> None:
        """Open marker, then the run object (exclusive). A lost race, or a start that
        failed for good, leaves no marker."""
        workflow_id = started.workflow_id
        await self.read(self.runs.mark_open, self.host_name, workflow_id, attempts=attempts)
        try:
            await self.read(self.runs.create_run, started, first, attempts=attempts)
        except BaseException:
            if self._execution(workflow_id) is None and workflow_id not in self.parking:
                try:  # the marker names no run of ours: remove it (best effort)
                    await self.read(self.runs.clear_open, self.host_name, workflow_id,
                                    attempts=3)
                except Exception:
                    log.warning("host %s: a stale open marker of %s is left; recovery "
                                "ignores it", self.host_name, workflow_id)
            raise

    async def _take_late_signals(self, execution: Execution, consumed: set[str]) -> None:
        """Signals buffered for this id while its run was being created: delivered to
        the run (a repeat of one it has is dropped by request id), then removed."""
        workflow_id = execution.workflow_id
        try:
            early = await self.read(lambda: list(self.runs.take_early_signals(workflow_id)),
                                    quick=True, attempts=None)
            for key, signal in early:
                if key in consumed:
                    await self.read(self.runs.delete, key, quick=True)
                    continue
                try:
                    await execution.deliver_durably(signal)
                except WorkflowClosedError:
                    pass  # the run closed before it could take the signal
                except RaylineError:
                    continue  # fenced: the buffered signal stays for the next owner
                await self.read(self.runs.delete, key, quick=True)
        except Exception:
            log.exception("host %s: early signals of %s", self.host_name, workflow_id)

    def _stored_latest(self, workflow_id: str
                       ) -> tuple[WorkflowStarted, RunOutcome | None, str]:
        """The latest run's record, outcome (``None`` while open) and owner host."""
        started, batches = self.runs.load(workflow_id)
        return started, RunOutcome.of_run(batches), home_of(started, batches)[0]

    async def _check_reuse(self, workflow_id: str,
                           request: StartRequest) -> int | StartReply:
        """The epoch of the new run under ``policy``, or the reply attaching the caller to
        the run it started before: the same request again, or a parent re-issuing a
        child's start after a recovery."""
        execution = self._execution(workflow_id)
        stuck = self.stuck.get(workflow_id)
        if execution is not None and not execution.fenced:
            started, outcome, home = execution.started, execution.outcome, self.host_name
        elif stuck is not None:
            started, outcome, home = stuck.started, None, self.host_name
        elif await self.read(self.runs.latest_epoch, workflow_id, quick=True) is None:
            return 1
        else:
            started, outcome, home = await self.read(self._stored_latest, workflow_id)
        decision = reuse.decide(request, started, outcome)
        if decision.action == "attach":
            return StartReply(workflow_id=workflow_id, run_id=started.run_id,
                              host=home, outcome=outcome, existing=decision.existing)
        if decision.action == "refuse":
            raise DuplicateWorkflowError(workflow_id, decision.reason)
        if decision.action == "terminate":
            reason = "terminated by a new start (id_conflict_policy=terminate_existing)"
            if home == self.host_name:  # here: not via terminate(), which waits for starts
                await self._terminate_here(workflow_id, reason)
            else:
                await self.routing.host(home).terminate(workflow_id, reason)
        return decision.epoch

    async def _latest_outcome(self, workflow_id: str
                              ) -> tuple[WorkflowStarted, RunOutcome | None, str]:
        """``_stored_latest``, from memory when the run is here."""
        await self._settled(workflow_id)
        execution = self._execution(workflow_id)
        if execution is not None and not execution.fenced:
            return execution.started, execution.outcome, self.host_name
        return await self.read(self._stored_latest, workflow_id)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ requests

    def _execution(self, workflow_id: str) -> Execution | None:
        return self.executions.get(workflow_id) or self._finished.get(workflow_id)

    async def _settled(self, workflow_id: str) -> None:
        """Waits out a start, a retake, a continue-as-new, an adoption or a wake of
        ``workflow_id`` here."""
        for _ in range(100):
            pending: asyncio.Future[Any] | None = (
                self._starting.get(workflow_id) or self._retaking.get(workflow_id)
                or self._continuing.get(workflow_id) or self._adopting.get(workflow_id)
                or self.parking.waking(workflow_id))
            if pending is None or pending.done():
                return
            await asyncio.wait([pending])

    async def _live(self, workflow_id: str, wake: bool = True) -> Execution | None:
        """The running execution for ``workflow_id``, waiting out a start, retake or
        continue-as-new in progress and (with ``wake``) bringing a parked run back.

        Raises:
            NonDeterminismError: (or the error loading its code) the run is stuck.
        """
        await self._settled(workflow_id)
        if wake and workflow_id in self.parking:
            await self.parking.wake(workflow_id)
        stuck = self.stuck.get(workflow_id)
        if stuck is not None:
            stuck.raise_()
        return self.executions.get(workflow_id)

    async def result(self, workflow_id: str, run_id: str | None = None,
                     follow: bool = True) -> RunOutcome:
        """Waits for the run to close and returns its outcome (following continue-as-new)."""
        await self._ready.wait()
        await self._live(workflow_id, wake=False)
        while True:
            execution = self._execution(workflow_id)
            if workflow_id in self.parking.parked and (run_id is None or execution is None
                                               or execution.run_id == run_id):
                outcome = await self._wait_close(workflow_id)
            elif execution is None or (run_id is not None and execution.run_id != run_id):
                outcome = await self._stored_outcome(workflow_id, run_id)
            elif execution.fenced:
                raise NotHereError(f"workflow {workflow_id} moved to another host")
            elif execution.outcome is None:
                outcome = await self._wait_close(workflow_id)
            else:
                outcome = execution.outcome
            if outcome.status is RunStatus.RESET and follow:  # the run that took over
                latest = self._execution(workflow_id)
                if latest is not None and latest.run_id == outcome.reset_to:
                    run_id = None
                    continue
                raise NotHereError(f"workflow {workflow_id} was reset: its run "
                                   f"{outcome.reset_to} is elsewhere")
            if outcome.status is not RunStatus.CONTINUED or not follow:
                return outcome
            backoff = self._backoffs.get(workflow_id)
            if backoff is not None:  # the next attempt, or a terminate calling it off
                await asyncio.wait([backoff])
                if execution is not None and execution.outcome is not outcome:
                    continue  # called off: the run's outcome is now its termination
            await self._settled(workflow_id)
            latest = self._execution(workflow_id)
            if latest is None or latest.run_id == outcome.run_id:
                stuck = self.stuck.get(workflow_id)
                if stuck is not None:
                    stuck.raise_()
                raise NotHereError(f"workflow {workflow_id}: its next run is not here")
            run_id = None

    def _wait_close(self, workflow_id: str) -> asyncio.Future[RunOutcome]:
        """Resolves with the run's outcome when it closes (parked or not)."""
        future: asyncio.Future[RunOutcome] = asyncio.get_running_loop().create_future()
        waiting = [f for f in self._closers.get(workflow_id, []) if not f.done()]  # given up
        self._closers[workflow_id] = [*waiting, future]
        return future

    def _resolve_closers(self, workflow_id: str,
                         outcome: RunOutcome | Exception | None) -> None:
        for future in self._closers.pop(workflow_id, []):
            if future.done():
                continue
            if outcome is None:
                future.set_exception(NotHereError(f"workflow {workflow_id} moved to another host"))
            elif isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def results(self, workflow_ids: list[str]) -> list[RunOutcome | Exception | None]:
        """``result`` for several workflows: waits until at least one has an outcome (or
        an error), then returns each one's, ``None`` for those still running."""
        waits = {workflow_id: asyncio.ensure_future(self.result(workflow_id))
                 for workflow_id in workflow_ids}
        try:
            await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0)  # let the waits woken in the same turn finish too
            return [_finished_value(waits[workflow_id]) for workflow_id in workflow_ids]
        finally:
            for wait in waits.values():
                wait.cancel()

    async def _stored_outcome(self, workflow_id: str, run_id: str | None) -> RunOutcome:
        started, outcome, home = await self._latest_outcome(workflow_id)
        if run_id is not None and started.run_id != run_id:
            for epoch in reversed(await self.read(self.runs.epochs, workflow_id)):
                record, batches = await self.read(self.runs.load, workflow_id, epoch)
                if record.run_id == run_id:
                    outcome = RunOutcome.of_run(batches)
                    started = record
                    break
            else:
                raise WorkflowNotFoundError(workflow_id, f"no run {run_id}")
        if outcome is None:
            raise NotHereError(f"workflow {workflow_id} runs on {home}")
        return outcome

    async def signal(self, workflow_id: str, signal_id: str, data: Payload,
                     expire: float | None = None, request_id: str | None = None,
                     buffer_if_missing: bool = False, run_id: str | None = None) -> None:
        """Delivers a signal; returns once it is durable in the workflow's timeline (or,
        with ``buffer_if_missing`` and no run yet, in the id's early-signal buffer).
        A signal sent again with the same ``request_id`` is recorded once. With
        ``run_id``, only that run takes it (``WorkflowClosedError`` once it has closed)."""
        await self._ready.wait()
        began = self.monotonic()
        expire_at = None if expire is None else self.now() + expire
        event = SignalReceived(signal_id=signal_id, data=data, expire_at=expire_at,
                               request_id=request_id or uuid.uuid4().hex)
        execution = await self._live(workflow_id)
        if run_id is not None:
            await self._for_run(workflow_id, run_id, execution, "signal")
        if execution is not None and execution.outcome is None:
            await execution.deliver_durably(event)
            self.metrics.signal(self.monotonic() - began)
            return
        if await self._carry_to_retry(workflow_id, event):
            return
        if execution is None and buffer_if_missing and \
                await self.read(self.runs.latest_epoch, workflow_id, quick=True) is None:
            key = await self.read(self.runs.buffer_early_signal, workflow_id, event)
            if await self.read(self.runs.latest_epoch, workflow_id, quick=True) is not None:
                # a start created the run meanwhile and may have read the buffer before
                # this signal was in it: deliver it (a repeat is dropped by request id)
                remaining = None if expire_at is None else max(0.0, expire_at - self.now())
                await self.routing.route(workflow_id, lambda host: host.signal(
                    workflow_id, signal_id, data, remaining, event.request_id))
                if key is not None:
                    await self.read(self.runs.delete, key, quick=True)
            return
        if request_id is not None and await self._recorded(workflow_id, request_id):
            return  # a retry of a signal the run took before it closed: done already
        await self._closed_or_elsewhere(workflow_id, "signal")

    async def update(self, workflow_id: str, update_id: str, name: str | None, args: list[Payload],
                     wait: bool = True) -> UpdateOutcome:
        """Takes an update: checks it (nothing is recorded when it is refused), records
        it, and once its handler's end is durable answers with it (``wait``), or at once
        once it is taken. The same ``update_id`` again is answered by the update already
        taken (a caller retrying after a host restart gets its result, not a second run).
        Without ``name``, only an update already taken is answered.

        Raises:
            UpdateRejectedError: the run has no such handler or its validator refused.
            InvalidInputError: (without ``name``) the run took no update of this id.
            WorkflowClosedError: the run closed before (or without) finishing the update.
            NotHereError: the run is on another host.
        """
        await self._ready.wait()
        execution = await self._live(workflow_id)
        if execution is None or execution.outcome is not None:
            return await self._stored_update(workflow_id, update_id)
        key = (workflow_id, update_id)
        state = execution.update_state(update_id)
        waiter = None
        if state is False:
            if name is None:
                raise InvalidInputError(f"workflow {workflow_id} took no update {update_id}")
            await execution.validate_update(name, args)
            waiter = self._update_waiter(key)
            try:
                await execution.deliver_durably(UpdateAccepted(update_id=update_id, name=name,
                                                               args=args))
            except BaseException:
                if not waiter.done():
                    self._updates.pop(key, None)
                raise
        elif isinstance(state, CompleteUpdate):
            return _update_outcome(state)
        if not wait:
            return UpdateOutcome(update_id=update_id, done=False)
        return await self._await_update(workflow_id, update_id, waiter)

    def _update_waiter(self, key: tuple[str, str]) -> asyncio.Future[CompleteUpdate]:
        waiter = self._updates.get(key)
        if waiter is None or waiter.done():
            waiter = self._updates[key] = asyncio.get_running_loop().create_future()
        return waiter

    async def _await_update(self, workflow_id: str, update_id: str,
                            waiter: asyncio.Future[CompleteUpdate] | None) -> UpdateOutcome:
        """Waits for a taken update's end: on ``waiter`` (the one made before it was
        recorded, which its end may have resolved already) or a new one, checking every
        ``UPDATE_CHECK_EVERY`` seconds that the run is still here."""
        key = (workflow_id, update_id)
        while True:
            waiter = waiter or self._update_waiter(key)
            try:
                done = await asyncio.wait_for(asyncio.shield(waiter), UPDATE_CHECK_EVERY)
                return _update_outcome(done)
            except asyncio.TimeoutError:
                waiter = None
            execution = self._execution(workflow_id)
            if execution is not None and execution.outcome is None:
                state = execution.update_state(update_id)
                if isinstance(state, CompleteUpdate):
                    return _update_outcome(state)
                if state:
                    continue
            if workflow_id in self.parking:
                continue
            self._updates.pop(key, None)
            return await self._stored_update(workflow_id, update_id)

    async def _stored_update(self, workflow_id: str, update_id: str) -> UpdateOutcome:
        """The end of update ``update_id`` as the latest run's timeline holds it.

        Raises:
            WorkflowClosedError: the run closed and never finished the update.
            NotHereError: the run is open on another host.
        """
        started, batches = await self.read(self.runs.load, workflow_id)
        for batch in batches:
            for command in batch.commands:
                if isinstance(command, CompleteUpdate) and command.update_id == update_id:
                    return _update_outcome(command)
        if RunOutcome.of_run(batches) is None:
            raise NotHereError(f"workflow {workflow_id} runs on {home_of(started, batches)[0]}")
        raise WorkflowClosedError(workflow_id, "finish the update")

    def on_update(self, execution: Execution, command: CompleteUpdate) -> None:
        waiter = self._updates.pop((execution.workflow_id, command.update_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(command)

    async def _recorded(self, workflow_id: str, request_id: str) -> bool:
        """Whether the id's latest run recorded the signal sent with ``request_id`` (a
        caller that lost the answer, e.g. to a host restart, sends it again)."""
        try:
            _, batches = await self.read(self.runs.load, workflow_id)
        except WorkflowNotFoundError:
            return False
        return any(getattr(event, "request_id", None) == request_id
                   for batch in batches for event in batch.events)

    async def _closed_or_elsewhere(self, workflow_id: str, action: str) -> None:
        _, outcome, home = await self._latest_outcome(workflow_id)
        if outcome is not None and outcome.status is not RunStatus.CONTINUED:
            raise WorkflowClosedError(workflow_id, action)
        raise NotHereError(f"workflow {workflow_id} runs on {home}")

    async def _for_run(self, workflow_id: str, run_id: str, execution: Execution | None,
                       action: str) -> None:
        """Checks that a call meant for run ``run_id`` reaches that run.

        Raises:
            WorkflowClosedError: the id's open run is another one (that run has closed).
            WorkflowNotFoundError: the id never had that run.
        """
        if execution is not None and execution.outcome is None:
            if execution.run_id == run_id:
                return
        elif (await self._latest_outcome(workflow_id))[0].run_id == run_id:
            return  # the latest run: answered as any call is (closed, or on its host)
        await self._stored_outcome(workflow_id, run_id)  # WorkflowNotFoundError: none
        raise WorkflowClosedError(workflow_id, f"{action} run {run_id}")

    async def cancel(self, workflow_id: str, reason: str | None = None,
                     run_id: str | None = None) -> None:
        await self._ready.wait()
        execution = await self._live(workflow_id)
        if run_id is not None:
            await self._for_run(workflow_id, run_id, execution, "cancel")
        if execution is not None and execution.outcome is None:
            await execution.deliver_durably(CancelRequested(reason=reason))
            return
        if await self._carry_to_retry(workflow_id, CancelRequested(reason=reason)):
            return
        await self._closed_or_elsewhere(workflow_id, "cancel")

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        await self._ready.wait()
        if await self._call_off_retry(workflow_id, reason):
            return
        if workflow_id in self.stuck:  # a stuck run can still be terminated
            await self._terminate_stuck(workflow_id, reason)
            return
        execution = await self._live(workflow_id)
        if execution is not None and execution.outcome is None:
            await execution.terminate(reason)
            return
        await self._closed_or_elsewhere(workflow_id, "terminate")

    async def _terminate_here(self, workflow_id: str, reason: str) -> None:
        """Terminates the open run of ``workflow_id`` on this host for a start of the id
        that holds ``_starting``: live, parked, stuck, waiting to retry or continuing."""
        if await self._call_off_retry(workflow_id, reason):
            return
        continuing = self._continuing.get(workflow_id)
        if continuing is not None:  # a continue-as-new making its next run: quick
            await asyncio.wait([continuing])
        if workflow_id in self.stuck:
            await self._terminate_stuck(workflow_id, reason)
            return
        if workflow_id in self.parking:
            await self.parking.wake(workflow_id)
        execution = self.executions.get(workflow_id)
        if execution is not None and execution.outcome is None:
            await execution.terminate(reason)

    async def _terminate_stuck(self, workflow_id: str, reason: str | None) -> None:
        """Closes a run that cannot be replayed: a terminated batch after its last one."""
        stuck = self.stuck[workflow_id]
        batch = Batch(seq=len(stuck.batches) + 1, run_id=stuck.started.run_id, time=self.now(),
                      terminated=Terminated(reason=reason), owner=self.host_name)
        await self.read(self.runs.append, workflow_id, stuck.started.epoch, batch,
                        attempts=None)
        del self.stuck[workflow_id]
        self._revive(stuck.started, [*stuck.batches, batch])

    async def query(self, workflow_id: str, name: str, args: tuple[Any, ...]) -> Any:
        """A query handler's answer: from the live run, or for a closed run from its
        timeline, replayed here (as Temporal allows).

        Raises:
            NotHereError: the run is open on another host.
            QueryError: no such handler, or it raised.
        """
        await self._ready.wait()
        execution = await self._live(workflow_id)
        if execution is not None and execution.outcome is None:
            return await execution.query(name, args)
        started, batches = await self.read(self.runs.load, workflow_id)
        if RunOutcome.of_run(batches) is None:
            raise NotHereError(f"workflow {workflow_id} runs on {home_of(started, batches)[0]}")
        instance = self._replayed.get(started.run_id)
        if instance is None:  # replayed once per closed run (a few kept), not per query
            values = await self._values_for(started, batches)
            try:
                instance, _ = replay_timeline(self._definition_of(started), started,
                                              batches, values)
            except Exception as exc:  # its code no longer replays it (or cannot load)
                raise QueryError(f"workflow {workflow_id} has closed and its timeline does "
                                 f"not replay on this code: {type(exc).__name__}: "
                                 f"{exc}") from exc
            self._replayed[started.run_id] = instance
            while len(self._replayed) > KEEP_REPLAYED:
                self._replayed.popitem(last=False)
        self._replayed.move_to_end(started.run_id)
        return instance.query(name, args)

    async def describe(self, workflow_id: str) -> WorkflowDescription:
        """Status, times, fields and pending work of the latest run."""
        await self._ready.wait()
        stuck = self.stuck.get(workflow_id)
        if stuck is None:
            await self._live(workflow_id)
            stuck = self.stuck.get(workflow_id)
        execution = self._execution(workflow_id)
        error, slips = None, list[str]()
        if stuck is not None:
            started, batches = stuck.started, stuck.batches
            (search, enrich), pending, outcome = fields_of(started, batches), [], None
            state, updated = stuck.state, batches[-1].time if batches else started.time
            host, version = self.host_name, home_of(started, batches)[1]
            status = state.code
            error = stuck.reason
        elif execution is not None and not execution.fenced:
            search, enrich = execution.fields()
            started, outcome, status = execution.started, execution.outcome, execution.status()
            pending, updated = self._with_beats(workflow_id, execution.pending()), \
                execution.updated_at
            host, version = self.host_name, execution.version
            slips = execution.guard_reports()
            state = outcome.status if outcome else RunStatus.RUNNING
        else:
            started, batches = await self.read(self.runs.load, workflow_id)
            outcome = RunOutcome.of_run(batches)
            host, version = home_of(started, batches)
            if outcome is None:
                raise NotHereError(f"workflow {workflow_id} runs on {host}")
            (search, enrich), pending = fields_of(started, batches), []
            state, status, updated = outcome.status, outcome.code, outcome.time
        return WorkflowDescription(
            workflow_id=workflow_id, run_id=started.run_id,
            workflow_name=started.workflow_name, task_queue=started.task_queue,
            status=status, outcome=outcome, started_at=started.time, state=state, error=error,
            blocked=self.blocked.get(workflow_id), slips=slips,
            updated_at=updated, host=host, attempt=started.attempt,
            parent=started.parent.workflow_id if started.parent else None,
            search=search, enrich=enrich, memo=started.memo, pending=pending,
            version=version, reset_from=_reset_from(started),
        )

    async def deliver(self, workflow_id: str, event: Event, run_id: str | None = None) -> None:
        """An event from elsewhere in the cluster (a child's completion) for run
        ``run_id`` (any run when ``None``); an event for a run that has closed is dropped."""
        await self._ready.wait()
        execution = await self._live(workflow_id)
        if execution is None:
            started, outcome, _ = await self._latest_outcome(workflow_id)
            if outcome is not None or (run_id is not None and started.run_id != run_id):
                return  # that run is over: nothing waits for this event any more
            raise NotHereError(f"workflow {workflow_id} is not on {self.host_name}")
        if run_id is not None and execution.run_id != run_id:
            return
        await execution.deliver_durably(event)

    async def stats(self) -> HostStats:
        counts = self.counts
        return HostStats(host=self.host_name, running=len(self.executions),
                         parked=len(self.parking), finished_cached=len(self._finished),
                         stuck=len(self.stuck), draining=self.draining, load=self._load(),
                         started=counts["started"], attempts=counts["attempts"],
                         adopted=counts["adopted"],
                         closed={key.removeprefix("closed:"): n for key, n in counts.items()
                                 if key.startswith("closed:")})

    def _load(self) -> float:
        """The event loop's busy share since the last sample (at least a second ago): CPU
        time of this thread (the loop's) over wall time."""
        now, cpu = time.monotonic(), time.thread_time()
        since, spent = self._load_sample
        if now - since >= 1.0:
            self.load = min(1.0, max(0.0, (cpu - spent) / (now - since)))
            self._load_sample = (now, cpu)
        return self.load

    async def drain(self) -> None:
        """Takes no new run from now on (the registry is moving this host's runs away)."""
        self.draining = True

    def _on_blocked(self, workflow_id: str, message: str) -> None:
        """From the watchdog's thread: a dict assignment, safe without the loop."""
        self.blocked[workflow_id] = message
        while len(self.blocked) > KEEP_FINISHED:
            self.blocked.pop(next(iter(self.blocked)), None)

    def abandon(self) -> None:
        """Stops every execution and timer here without writing anything: what a host
        process that died leaves behind is its storage only. Tests and tools use it to
        simulate a crash; a new ``Host`` on the same storage then recovers the runs."""
        for execution in self.executions.values():
            execution.abandon()
        self.executions.clear()
        self.parking.abandon()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for task in [*self._background, *self._continuing.values(), *self._backoffs.values()]:
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)  # queued writes die with it

    # ------------------------------------------------------------------ moving

    async def adopt(self, workflow_id: str, force: bool = False) -> str | None:
        """Moves an open run of another host here, onto this host's code version
        (``rayline versions upgrade``, a drain, a rebalance): replays its timeline on
        this host's code and, if that works and none of its activities is running (or
        ``force``: the activity then runs again here), writes a batch naming this host
        and version (which fences the old host's execution), runs it here and tells the
        old host to let go. Returns ``None`` once the run is here, else why it stays."""
        await self._ready.wait()
        validate_id(workflow_id)
        await self._settled(workflow_id)
        if workflow_id in self.executions or workflow_id in self.parking:
            return None
        adopting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._adopting[workflow_id] = adopting  # a second adopt waits for this one
        try:
            return await self._adopt(workflow_id, force)
        finally:
            del self._adopting[workflow_id]
            adopting.set_result(None)

    async def _adopt(self, workflow_id: str, force: bool) -> str | None:
        started, batches = await self.read(self.runs.load, workflow_id)
        owner = home_of(started, batches)[0]
        if RunOutcome.of_run(batches) is not None:
            return "it has closed"
        if owner == self.host_name:  # moved here before (this host restarted since)
            await self.resume_run(workflow_id)
            return None
        values = await self._values_for(started, batches)
        try:
            instance, unfinished = replay_timeline(self._definition_of(started), started,
                                                   batches, values)
        except Exception as exc:
            return (f"its timeline does not replay on code version {self.version}: "
                    f"{type(exc).__name__}: {exc}")
        running = [c for c in unfinished if isinstance(c, ScheduleActivity)]
        if running and not force:
            return (f"its activity {running[0].activity!r} (call {running[0].seq}) is "
                    "running: move the run once it has ended")
        parked_until = None  # a run that waits on the outside stays parked: no memory
        if self.parking.park_after is not None and instance.waiting_only_on_outside():
            parked_until = wake_of(instance, started) or math.inf
        await self.read(self.runs.mark_open, self.host_name, workflow_id, parked_until)
        move = Batch(seq=len(batches) + 1, run_id=started.run_id,
                     time=self.now(), owner=self.host_name, version=self.version)
        try:
            await self.read(self.runs.append, workflow_id, started.epoch, move)
        except ConflictError:
            if home_of(*await self.read(self.runs.load, workflow_id))[0] != self.host_name:
                await self.read(self.runs.clear_open, self.host_name, workflow_id, attempts=3)
            return "it went on while it was being moved: try again"
        try:
            if parked_until is not None:
                self.parking.add(workflow_id, parked_until)
                self._report_parked(started, [*batches, move], instance.open_obligations())
            else:
                self._report(self._revive(started, [*batches, move], values))
        finally:  # the run is this host's now, stuck or not: the old host lets go
            try:
                await self.backend.host(owner).let_go(workflow_id)
            except Exception as exc:  # its host is away; back, it would find the run gone
                log.warning("host %s: %s did not let go of %s (%s); removing its marker",
                            self.host_name, owner, workflow_id, exc)
                await self.read(self.runs.clear_open, owner, workflow_id, attempts=3)
        self.counts["adopted"] += 1
        log.info("host %s: took %s over from %s (code version %s)", self.host_name,
                 workflow_id, owner, self.version)
        return None

    async def let_go(self, workflow_id: str) -> None:
        """Forgets a run that another host has taken over (its timeline names that
        host): the execution here stops without writing, callers waiting here are sent
        on, and this host's open marker goes. A run this host still owns is kept."""
        await self._ready.wait()
        await self._settled(workflow_id)
        started, batches = await self.read(self.runs.load, workflow_id)
        if home_of(started, batches)[0] == self.host_name:
            return
        self.parking.forget(workflow_id)
        self.stuck.pop(workflow_id, None)
        execution = self.executions.get(workflow_id)
        if execution is not None:
            async with execution.lock.writer:
                execution.fence()  # _retake clears the marker and redirects callers
            retaking = self._retaking.get(workflow_id)
            if retaking is not None:
                await asyncio.wait([retaking])
            return
        await self._marker_written(workflow_id)  # one the run asked for as it parked
        await self.read(self.runs.clear_open, self.host_name, workflow_id)
        self._resolve_closers(workflow_id, None)
        self._idle_soon()  # a dedicated host whose run moved (an upgrade) has no more

    async def _marker_written(self, workflow_id: str) -> None:
        """Waits for a rewrite of the run's open marker in flight (before removing it:
        a late rewrite would bring it back)."""
        while (pending := self._markers.get(workflow_id)) is not None and not pending.done():
            await asyncio.wait([pending])

    # ----------------------------------------------- environment: commands

    def run_activity(self, execution: Execution, seq: int,
                     definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                     options: ActivityOptions) -> Any:
        key = (execution.workflow_id, seq)
        values = execution.values
        if not options.local:  # a task gets the large values it is passed from the cluster
            args = values.task_args(args)

        async def attempt(number: int) -> Outcome:
            beat = self.beats.get(key)
            span = _tracing.activity_span(execution.started, definition.name, seq, number)
            info = ActivityInfo(execution.workflow_id, execution.run_id, definition.name, seq,
                                number, heartbeat_details=beat.details if beat else None,
                                host=self.host_name, trace=_tracing.carrier_of(span))
            self.beats[key] = Heartbeat(info, beat.details if beat else None,
                                        self.monotonic())
            self.counts["attempts"] += 1
            began, outcome = self.monotonic(), "cancelled"
            work = asyncio.ensure_future(self.backend.run_attempt(definition, args, options,
                                                                  info))
            try:
                kind, value = await self._watch(work, key, info, options)
                outcome = "ok" if kind == "ok" else "failed"
            except BaseException:
                work.cancel()  # the attempt was cancelled or timed out: its work stops
                limit = options.start_to_close
                if limit is not None and self.monotonic() - began >= limit * 0.99:
                    outcome = "failed"  # start_to_close passed: a failed attempt
                raise
            finally:
                self.metrics.attempt(definition.name, self.monotonic() - began, outcome)
                _tracing.end_activity(span, outcome)
            if isinstance(value, Stored):  # a large result: the value stays in the cluster
                values.received(value)
            return kind, value

        async def run() -> Event:
            try:
                return await run_with_retries(seq, definition.name, options, attempt,
                                              values=values, now=self.now,
                                              monotonic=self.monotonic)
            finally:
                self.beats.pop(key, None)

        return run()

    async def _watch(self, work: asyncio.Future[Outcome], key: tuple[str, int],
                     info: ActivityInfo, options: ActivityOptions) -> Outcome:
        """The attempt's outcome; with a ``heartbeat_timeout`` (not for local activities,
        which cannot heartbeat), a failure once it stays silent that long."""
        timeout = options.heartbeat_timeout
        if timeout is None or options.local:
            return await work
        while True:
            beat = self.beats.get(key)
            if beat is not None and not beat.started:  # queued: not silent, not yet
                await asyncio.wait([work], timeout=timeout)
                if work.done():
                    return work.result()
                continue
            silent = self.monotonic() - (beat.at if beat is not None else 0.0)
            if silent >= timeout:
                log.warning("host %s: activity %s (call %d) of %s sent no heartbeat for "
                            "%gs: stopping attempt %d", self.host_name, info.activity,
                            info.seq, info.workflow_id, timeout, info.attempt)
                work.cancel()
                return "err", {"type": "rayline.errors.TimeoutFailure", "fatal": False,
                               "message": f"no heartbeat for {timeout:g}s "
                                          "(heartbeat_timeout)", "stack": "", "timeout": True}
            await asyncio.wait([work], timeout=timeout - silent)
            if work.done():
                return work.result()

    def _with_beats(self, workflow_id: str, pending: list[PendingWork]) -> list[PendingWork]:
        """``pending`` with each running activity's attempt and last heartbeat."""
        found = []
        for work in pending:
            beat = self.beats.get((workflow_id, work.seq))
            if work.kind == "activity" and beat is not None:
                work = work.model_copy(update={
                    "attempt": beat.info.attempt, "heartbeat_details": _json(beat.details),
                    "heartbeat_age": self.monotonic() - beat.at})
            found.append(work)
        return found

    def heartbeat(self, info: ActivityInfo, details: Any = None, number: int = 0) -> bool:
        """Records heartbeat ``number`` of an activity attempt (an older one arriving late
        is not kept: actor calls may run out of order; ``STARTED``, sent as a watched
        attempt begins, keeps the details it had); whether that attempt is
        cancelled (no longer awaited here: its workflow was cancelled or terminated, or
        it timed out or moved)."""
        beat = self.beats.get((info.workflow_id, info.seq))
        if beat is None or beat.info.run_id != info.run_id \
                or beat.info.attempt != info.attempt:
            return True
        beat.at = self.monotonic()
        beat.started = True
        if number >= beat.number:
            beat.details, beat.number = details, number
        return False

    def start_child(self, execution: Execution, command: StartChild) -> Awaitable[Event | None]:
        return self.routing.start_child(execution, command)

    def signal_external(self, execution: Execution, command: SignalExternal) -> Awaitable[Event]:
        return self.routing.signal_external(execution, command)

    def cancel_external(self, execution: Execution, seq: int, workflow_id: str,
                        run_id: str | None = None) -> Awaitable[Event]:
        return self.routing.cancel_external(execution, seq, workflow_id, run_id)

    def on_fields(self, execution: Execution) -> None:
        self._report(execution)

    def on_closed(self, execution: Execution) -> None:
        if execution.fenced or self.executions.get(execution.workflow_id) is not execution:
            return
        workflow_id = execution.workflow_id
        del self.executions[workflow_id]
        self._finished[workflow_id] = execution
        while len(self._finished) > KEEP_FINISHED:
            self._finished.popitem(last=False)
        assert execution.outcome is not None
        self.counts[f"closed:{execution.outcome.status.value}"] += 1
        if execution.outcome.status is RunStatus.CONTINUED:
            if execution.outcome.retry_at is not None:  # a retry, after its backoff
                backoff = asyncio.ensure_future(self._after_backoff(execution))
                self._backoffs[workflow_id] = backoff
                backoff.add_done_callback(lambda t: self._backoffs.get(workflow_id) is t
                                          and self._backoffs.pop(workflow_id))
            else:
                self._continue_now(execution)
        self._resolve_closers(workflow_id, execution.outcome)
        for key in [k for k in self._updates if k[0] == workflow_id]:
            waiter = self._updates.pop(key)  # the run closed before the update ended
            if not waiter.done():
                waiter.set_exception(WorkflowClosedError(workflow_id, "finish the update"))
        closing = asyncio.ensure_future(self._after_close(execution))
        self._closing[workflow_id] = closing
        closing.add_done_callback(lambda t: self._closing.get(workflow_id) is t
                                  and self._closing.pop(workflow_id))
        self.background(closing)

    def on_fenced(self, execution: Execution, unwritten: list[Mail]) -> None:
        workflow_id = execution.workflow_id
        if self.executions.get(workflow_id) is execution:
            del self.executions[workflow_id]
        if workflow_id in self._retaking:
            self._fail_mail(unwritten, NotHereError(f"workflow {workflow_id} is moving"))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._retaking[workflow_id] = done
        self.background(self._retake(execution, unwritten, done))

    async def _retake(self, fenced: Execution, unwritten: list[Mail],
                      done: asyncio.Future[None]) -> None:
        """Re-reads a run whose execution was fenced: takes it back if this host still owns
        it (another incarnation of this host wrote the batch), else redirects callers."""
        workflow_id = fenced.workflow_id
        try:  # read as anyone may: only an owner sets a torn last batch aside
            started, batches = await self.read(self.runs.load, workflow_id, attempts=None)
            owner = home_of(started, batches)[0]
            if owner == self.host_name:
                history = await self.read(self._load_owned, workflow_id, attempts=None)
                started, batches = history.started, history.batches
            else:
                log.info("host %s: %s is now owned by %s", self.host_name, workflow_id, owner)
                await self._marker_written(workflow_id)
                try:  # not ours to recover any more (a stale marker would only cost a replay)
                    await self.read(self.runs.clear_open, self.host_name, workflow_id,
                                    attempts=3)
                finally:
                    self._fail_mail(unwritten, NotHereError(f"workflow {workflow_id} runs on "
                                                            f"{owner}"))
                    self._resolve_closers(workflow_id, None)
                    self._idle_soon()
                return
            try:
                execution = self._revive(started, batches,
                                         await self._values_for(started, batches), history)
            except Exception as exc:
                self._fail_mail(unwritten, exc)
                return
            for event, ack in unwritten:
                execution.deliver(event, ack)
        except Exception as exc:
            log.exception("host %s: cannot take back %s", self.host_name, workflow_id)
            self._fail_mail(unwritten, StorageError(f"workflow {workflow_id}: {exc}"))
        finally:
            del self._retaking[workflow_id]
            done.set_result(None)

    @staticmethod
    def _fail_mail(mail: list[Mail], error: Exception) -> None:
        for _, ack in mail:
            if ack is not None and not ack.done():
                ack.set_exception(error)

    def on_idle(self, execution: Execution) -> None:
        self.parking.on_idle(execution)

    def _idle_soon(self) -> None:
        """(Re)starts the ``linger`` wait after which a dedicated host that holds no run
        asks to be stopped."""
        if self.linger is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self.linger, self._when_idle)

    def _when_idle(self) -> None:
        self._idle_timer = None
        if self.executions or self.parking or self.stuck or self._backoffs:
            return  # it holds a run: its close starts the wait again
        if self._starting or self._continuing or self._adopting or self._retaking \
                or self._background:
            self._idle_soon()  # a run may be on its way in or out: look again later
            return
        log.info("host %s holds no run: asking the registry to stop it", self.host_name)
        self.backend.retire(self.host_name)

    def background(self, work: Any) -> None:
        """Runs ``work`` to its end whatever happens to the execution that asked for it; an
        error it ends with is logged."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("host %s: background work failed", self.host_name,
                      exc_info=task.exception())

    async def _after_close(self, execution: Execution) -> None:
        """Tells the registry and the parent (until it has it), then drops the marker."""
        outcome = execution.outcome
        assert outcome is not None
        self._report(execution)
        await self._close_children(execution)
        if outcome.status is RunStatus.CONTINUED:
            return  # the next run takes over the open marker
        parent = execution.started.parent
        if parent is not None:
            event = child_event(parent.seq, outcome)
            await self.routing.deliver_to(parent.workflow_id, parent.host, event, parent.run_id)
        try:
            await self.read(self.runs.clear_open, self.host_name, execution.workflow_id)
        except Exception as exc:  # left behind: a restart replays the close, harmlessly
            log.warning("host %s: open marker of closed %s not removed: %s", self.host_name,
                        execution.workflow_id, exc)
        self._idle_soon()

    async def _close_children(self, execution: Execution) -> None:
        """Applies each open child's parent close policy: terminates it or asks it to
        cancel (one that has ended meanwhile answers so, and is let be)."""
        assert execution.outcome is not None
        reason = f"parent {execution.workflow_id} closed ({execution.outcome.status.value})"

        async def close(workflow_id: str, policy: str) -> None:
            try:
                await self.routing.route(workflow_id, lambda host: (
                    host.terminate(workflow_id, reason) if policy == "terminate"
                    else host.cancel(workflow_id, reason)))
            except (WorkflowClosedError, WorkflowNotFoundError):
                pass
            except Exception:
                log.exception("host %s: applying the close policy %r of %s to child %s",
                              self.host_name, policy, execution.workflow_id, workflow_id)

        children = list(execution.children.values())
        execution.children = {}
        await asyncio.gather(*(close(child, policy) for child, policy in children))

    def _continue_now(self, execution: Execution) -> asyncio.Task[Execution | None]:
        workflow_id = execution.workflow_id
        task = asyncio.ensure_future(self._continue(execution))
        self._continuing[workflow_id] = task
        task.add_done_callback(lambda t: self._continuing.get(workflow_id) is t
                               and self._continuing.pop(workflow_id))
        return task

    async def _after_backoff(self, execution: Execution) -> None:
        """Waits out a retry's backoff (calls about the workflow go on meanwhile: signals
        and cancels are carried to the next attempt, a terminate calls it off), then
        starts the next attempt."""
        outcome = execution.outcome
        assert outcome is not None and outcome.retry_at is not None
        await asyncio.sleep(max(0.0, outcome.retry_at - self.now()))
        self._backoffs.pop(execution.workflow_id, None)
        await self._continue_now(execution)

    async def _carry_to_retry(self, workflow_id: str, event: Event) -> bool:
        """Hands ``event`` to the next attempt of a run waiting out its retry backoff and
        returns once that attempt holds it; ``False`` when no retry is pending."""
        finished = self._finished.get(workflow_id)
        if workflow_id not in self._backoffs or finished is None:
            return False
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        finished.carried.append((event, ack))
        await ack
        return True

    async def _call_off_retry(self, workflow_id: str, reason: str | None) -> bool:
        """Terminates a workflow whose failed run waits out its retry backoff: a
        terminated batch after the run's last one calls the retry off (durably; a
        restarted host reads it). ``False`` when no retry is pending here."""
        backoff = self._backoffs.get(workflow_id)
        finished = self._finished.get(workflow_id)
        if backoff is None or finished is None:
            return False
        started, batches = await self.read(self.runs.load, workflow_id, attempts=None)
        if started.run_id != finished.run_id or workflow_id not in self._backoffs:
            return False  # the next attempt exists already
        batch = Batch(seq=len(batches) + 1, run_id=started.run_id, time=self.now(),
                      terminated=Terminated(reason=reason), owner=self.host_name)
        await self.read(self.runs.append, workflow_id, started.epoch, batch, attempts=None)
        backoff.cancel()
        self._backoffs.pop(workflow_id, None)
        outcome = RunOutcome.of(batch)
        assert outcome is not None
        finished.outcome = outcome
        carried, finished.carried = finished.carried, []
        self._fail_mail(carried, WorkflowClosedError(workflow_id, "signal"))
        self._report(finished)
        self._resolve_closers(workflow_id, outcome)
        await self.read(self.runs.clear_open, self.host_name, workflow_id, attempts=3)
        self._idle_soon()
        return True

    async def _continue(self, execution: Execution) -> Execution | None:
        """Starts the run after ``execution`` at the next epoch, with the signals and
        cancels the old run handed on; retried until storage takes it. After a
        continue-as-new at once, with its arguments; after a failure the run's retry
        policy runs again, at ``retry_at`` (a host that restarts meanwhile waits the rest
        of it), with the same arguments as the next attempt."""
        outcome = execution.outcome
        assert outcome is not None
        s = execution.started
        retry = outcome.retry_at is not None
        cron = outcome.next_run_at is not None  # the next run of a cron start, at its time
        carried, execution.carried = execution.carried, []
        if cron:  # signals a cron run left are not carried; those in flight go again
            self._fail_mail(carried, NotHereError(f"workflow {s.workflow_id} moved on"))
            carried = []
        handover = outcome.continue_with  # into another workflow, or onto another queue
        name, code = (handover.workflow_name or s.workflow_name,
                      CodeRef.stored(handover.code, handover.code_pickle)
                      if handover.workflow_name else CodeRef.stored(s.code, s.code_pickle)) \
            if handover is not None else (s.workflow_name, CodeRef.stored(s.code, s.code_pickle))
        queue = handover.task_queue if handover is not None and handover.task_queue \
            else s.task_queue
        request = StartRequest(
            workflow_id=s.workflow_id, workflow_name=name, code=code,
            args=s.args if retry or cron else outcome.args,
            attempt=s.attempt + 1 if retry else 1, not_before=outcome.next_run_at,
            task_queue=queue, search=execution.fields()[0], memo=s.memo,
            options=s.options, continued_from=s.run_id, parent=s.parent, trace=s.trace)
        if queue != s.task_queue:
            await self._continue_elsewhere(request.model_copy(update={"epoch": s.epoch + 1}),
                                           carried)
            return None
        try:
            definition = self._resolve(name, code, s.task_queue) if handover is not None \
                else execution.definition
        except Exception as exc:
            log.exception("host %s: continue-as-new of %s into %s cannot load it",
                          self.host_name, s.workflow_id, name)
            self._fail_mail(carried, exc)
            return None
        try:
            reply = await self._try_start(s.workflow_id, s.epoch + 1, definition,
                                          request, [], carried, attempts=None)
        except Exception as exc:
            log.exception("host %s: continue-as-new of %s failed", self.host_name, s.workflow_id)
            self._fail_mail(carried, StorageError(f"continue-as-new of {s.workflow_id}: {exc}"))
            return None
        if reply is None:  # made before a crash: the run after it exists already
            self._fail_mail(carried, NotHereError(f"workflow {s.workflow_id} moved on"))
        return self._execution(s.workflow_id)

    async def _continue_elsewhere(self, request: StartRequest, carried: list[Mail]) -> None:
        """Has a host of ``request``'s task queue make the next run (at the epoch the
        request names) with the signals this run left; calls in flight are sent on (their
        senders find the new run). Tried until it is made: a queue whose hosts are not up
        yet gets it once they are. Then this host's open marker of the id goes."""
        workflow_id = request.workflow_id
        self._fail_mail([m for m in carried if m[1] is not None], NotHereError(
            f"workflow {workflow_id} moved on to task queue {request.task_queue}"))
        signals = [SignalIn(signal_id=event.signal_id, data=event.data,
                            request_id=event.request_id)
                   for event, ack in carried if ack is None and isinstance(event, SignalReceived)]
        request = request.model_copy(update={"signals": signals})
        for attempt, delay in enumerate(_backoff.delays(cap=30.0)):
            try:
                host = await self.backend.place(request.task_queue, workflow_id, False)
                await self.routing.host(host).start(request)
                break
            except Exception as exc:
                (log.error if attempt >= 3 else log.warning)(
                    "host %s: the next run of %s on task queue %s could not be made (%s: %s); "
                    "again in %.1fs", self.host_name, workflow_id, request.task_queue,
                    type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
        try:
            await self.read(self.runs.clear_open, self.host_name, workflow_id, attempts=3)
        except Exception as exc:  # left behind: a restart finds the next run made
            log.warning("host %s: open marker of %s not removed: %s", self.host_name,
                        workflow_id, exc)
        self._idle_soon()

    def _report(self, execution: Execution) -> None:
        search, _ = execution.fields()
        outcome = execution.outcome
        self.backend.report(RunSummary(
            workflow_id=execution.workflow_id, run_id=execution.run_id,
            workflow_name=execution.started.workflow_name, host=self.host_name,
            task_queue=execution.started.task_queue, status=execution.status(),
            state=outcome.status if outcome else RunStatus.RUNNING,
            started_at=execution.started.time, search=search,
            version=execution.version, updated_at=execution.updated_at,
            closed_at=execution.updated_at if outcome else None))

    def _report_parked(self, started: WorkflowStarted, batches: list[Batch],
                       obligations: int) -> None:
        self.backend.report(RunSummary(
            workflow_id=started.workflow_id, run_id=started.run_id,
            workflow_name=started.workflow_name, host=self.host_name,
            task_queue=started.task_queue, status=max(1, obligations),
            state=RunStatus.RUNNING, started_at=started.time,
            search=fields_of(started, batches)[0], version=self.version,
            updated_at=batches[-1].time if batches else started.time))

    def _report_stuck(self, workflow_id: str) -> None:
        stuck = self.stuck[workflow_id]
        started = stuck.started
        self.backend.report(RunSummary(
            workflow_id=workflow_id, run_id=started.run_id,
            workflow_name=started.workflow_name, host=self.host_name,
            task_queue=started.task_queue, status=RunStatus.STUCK.code, state=stuck.state,
            started_at=started.time, search=fields_of(started, stuck.batches)[0],
            error=stuck.reason, version=home_of(started, stuck.batches)[1],
            updated_at=stuck.batches[-1].time if stuck.batches else started.time))


def _json(value: Any) -> Any:
    """``value`` if it is JSON, else its ``repr`` (for ``describe()``)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _finished_value(task: asyncio.Task[RunOutcome]) -> RunOutcome | Exception | None:
    """A finished task's result or exception; ``None`` if it had not finished."""
    if not task.done() or task.cancelled():
        return None
    error = task.exception()
    if error is None:
        return task.result()
    return error if isinstance(error, Exception) else RaylineError(repr(error))


def _update_outcome(command: CompleteUpdate) -> UpdateOutcome:
    return UpdateOutcome(update_id=command.update_id, done=True, result=command.result,
                         failure=command.failure)



def _reset_from(started: WorkflowStarted) -> str | None:
    source = started.reset_from
    if source is None:
        return None
    if source.workflow_id == started.workflow_id:
        return source.run_id
    return f"{source.workflow_id}/{source.run_id}"
