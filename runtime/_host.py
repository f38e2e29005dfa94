"""The host: many workflow actors in one process, and the rules for starting them.

A host is what a detached Ray host actor runs (``rayline.actors.host``); it holds no
Ray code itself. Ray-specific work (running an activity attempt, calling another host,
placing a new workflow, telling the registry) goes through the small ``Backend``
protocol, so the whole host runs in unit tests with an in-process backend.

Invariants:
- Starting a run writes its run record with an exclusive create (the id-reuse arbiter),
  then the host's open marker, and only then runs workflow code.
- On start, a host resumes every run whose open marker names it (``recover``); requests
  wait until that is done, so nothing observes a half-recovered host.
- A closed run's open marker is removed after its closing batch is durable; its parent
  (if any) and the registry are told after that.
- A run that waits only on timers or signals for ``park_after`` seconds is parked: its
  actor is dropped, leaving an entry in ``parked`` (next wake time, ``inf`` for signals
  only) and a hint in its open marker. A due timer, a signal, a cancel, a query or a
  describe brings it back by replaying its timeline; ``result()`` waits without waking it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from . import _serde
from ._activities import run_with_retries
from ._activity import ActivityDefinition, ActivityInfo
from ._actor import WorkflowActor, outcome_of
from ._definition import WorkflowDefinition, as_workflow
from ._options import ActivityOptions
from ._parking import ParkingLot
from ._routing import NotHereError, Routing, child_event
from .errors import (
    DuplicateWorkflowError,
    InvalidInputError,
    RaylineError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from .storage.runs import RunStore, validate_id
from .timeline import (
    Batch,
    CancelRequested,
    Event,
    ParentRef,
    SignalReceived,
    WorkflowStarted,
    fields_of,
)

log = logging.getLogger("rayline.host")

ID_REUSE_POLICIES = ("allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate",
                     "terminate_if_running")
KEEP_FINISHED = 2_000  # closed runs kept in memory for result() and describe()
PARK_AFTER = float(os.environ.get("RAYLINE_PARK_AFTER", "2"))


class Backend(Protocol):
    """What a host needs from the cluster it runs on."""

    def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                    options: ActivityOptions, info: ActivityInfo) -> Any: ...
    async def call_host(self, host: str, method: str, *args: Any) -> Any: ...
    async def place(self, task_queue: str, workflow_id: str, dedicated: bool) -> str: ...
    async def locate(self, workflow_id: str) -> str: ...
    def report(self, record: dict[str, Any]) -> None: ...


class Host(Routing):
    """Runs workflow actors (see the module docstring)."""

    def __init__(self, name: str, runs: RunStore, backend: Backend,
                 workflows: list[WorkflowDefinition[Any, Any]] | None = None,
                 clock: Callable[[], float] = time.time,
                 park_after: float | None = PARK_AFTER) -> None:
        self.host_name = name
        self.clock = clock
        self.runs = runs
        self.backend = backend
        self.actors: dict[str, WorkflowActor] = {}
        self.names: dict[str, WorkflowDefinition[Any, Any]] = {}
        self._finished: collections.OrderedDict[str, WorkflowActor] = collections.OrderedDict()
        self._continuing: dict[str, asyncio.Task[WorkflowActor | None]] = {}
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._closers: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.parking = ParkingLot(self, park_after)
        self._background: set[asyncio.Future[Any]] = set()
        self._code_cache: dict[str, WorkflowDefinition[Any, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rayline-io")
        self._quick = runs.store.quick
        self._ready = asyncio.Event()
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

    def register(self, workflows: list[WorkflowDefinition[Any, Any]]) -> list[str]:
        for definition in workflows:
            self.names[definition.name] = as_workflow(definition)
        return sorted(self.names)

    async def recover(self) -> int:
        """Resumes every unfinished run this host owns; returns how many."""
        resumed = 0
        try:
            for workflow_id, parked_until in await self.io(self.runs.open_workflows,
                                                           self.host_name):
                if workflow_id in self.actors or workflow_id in self.parking:
                    continue
                if parked_until is not None:
                    self.parking.add(workflow_id, parked_until)
                    resumed += 1
                    continue
                try:
                    await self.resume_run(workflow_id)
                    resumed += 1
                except Exception:
                    log.exception("host %s: cannot resume %s", self.host_name, workflow_id)
        finally:
            self._ready.set()
        return resumed

    async def resume_run(self, workflow_id: str) -> WorkflowActor:
        """Rebuilds a run from storage into a live actor (recovery, waking a parked run)."""
        started, batches = await self.io(self.runs.load, workflow_id)
        actor = WorkflowActor(self, self._definition_of(started), started)
        self.actors[workflow_id] = actor
        actor.resume(batches)
        if actor.outcome is not None:
            self.on_closed(actor)
        return actor

    def _definition_of(self, started: WorkflowStarted) -> WorkflowDefinition[Any, Any]:
        return self._resolve(started.workflow_name, started.code, started.code_pickle,
                             started.task_queue)

    def _resolve(self, name: str | None, code: str | None, code_pickle: str | None,
                 task_queue: str) -> WorkflowDefinition[Any, Any]:
        ref = code_pickle or code
        if ref:
            cached = self._code_cache.get(ref)
            if cached is None:
                cached = self._load_code(code, code_pickle)
                if len(self._code_cache) > 1000:
                    self._code_cache.clear()
                self._code_cache[ref] = cached
            return cached
        if name and name in self.names:
            return self.names[name]
        known = ", ".join(sorted(self.names)) or "none"
        raise InvalidInputError(
            f"unknown workflow_name {name!r} on task queue {task_queue!r} (registered: {known})")

    @staticmethod
    def _load_code(code: str | None, code_pickle: str | None) -> WorkflowDefinition[Any, Any]:
        if code_pickle:
            return as_workflow(_serde.unpickle_b64(code_pickle))
        assert code is not None
        try:
            return as_workflow(_serde.resolve_path(code))
        except (ImportError, AttributeError) as exc:
            raise InvalidInputError(f"cannot import workflow code {code!r}: {exc}") from exc

    # -------------------------------------------------------------------- start

    async def start(self, request: dict[str, Any]) -> dict[str, Any]:
        """Starts a run. ``request`` is what ``client.workflow.start`` sends."""
        await self._ready.wait()
        workflow_id = validate_id(request["workflow_id"])
        policy = request.get("id_reuse_policy") or "allow_duplicate"
        if policy not in ID_REUSE_POLICIES:
            raise InvalidInputError(f"id_reuse_policy must be one of {ID_REUSE_POLICIES}")
        definition = self._resolve(request.get("workflow_name"), request.get("code"),
                                   request.get("code_pickle"), request["task_queue"])
        if workflow_id in self._starting:
            raise DuplicateWorkflowError(workflow_id, "being started right now")
        starting = asyncio.get_running_loop().create_future()
        self._starting[workflow_id] = starting
        try:
            reply = await self._start(workflow_id, policy, definition, request)
        finally:
            del self._starting[workflow_id]
            if not starting.done():
                starting.set_result(None)
        return reply

    async def start_many(self, requests: list[dict[str, Any]]
                         ) -> list[dict[str, Any] | BaseException]:
        """``start`` for each request, concurrently; a failed start's error in its place."""
        return await asyncio.gather(*(self.start(r) for r in requests), return_exceptions=True)

    async def _start(self, workflow_id: str, policy: str,
                     definition: WorkflowDefinition[Any, Any],
                     request: dict[str, Any]) -> dict[str, Any]:
        early = await self.quick_io(lambda: list(self.runs.take_early_signals(workflow_id)))
        if self._actor(workflow_id) is None and workflow_id not in self.parking:
            # an id this host does not know: most likely new, so create run 1 outright;
            # the exclusive create tells us if it exists after all
            reply = await self._try_start(workflow_id, 1, definition, request, early)
            if reply is not None:
                return reply
        epoch = await self._check_reuse(workflow_id, policy, request.get("parent"))
        if isinstance(epoch, dict):
            return epoch  # a parent re-issuing a start: attach to its child
        reply = await self._try_start(workflow_id, epoch, definition, request, early)
        if reply is None:
            raise DuplicateWorkflowError(workflow_id, "started concurrently elsewhere")
        return reply

    async def _try_start(self, workflow_id: str, epoch: int,
                         definition: WorkflowDefinition[Any, Any], request: dict[str, Any],
                         early: list[tuple[str, SignalReceived]]) -> dict[str, Any] | None:
        """Runs the first activation and writes run ``epoch``; None if that run exists."""
        parent = request.get("parent")
        started = WorkflowStarted(
            workflow_id=workflow_id, run_id=uuid.UUID(int=self._rng.getrandbits(128)).hex,
            epoch=epoch, workflow_name=definition.name,
            code=request.get("code") or (None if request.get("code_pickle") else definition.code),
            code_pickle=request.get("code_pickle"), args=request.get("args", []),
            task_queue=request["task_queue"], host=self.host_name, time=self.now(),
            seed=self._rng.getrandbits(63), attempt=request.get("attempt", 1),
            parent=ParentRef(**parent) if parent else None,
            continued_from=request.get("continued_from"), search=request.get("search") or {},
            memo=request.get("memo") or {}, options=request.get("options") or {},
        )
        actor = WorkflowActor(self, definition, started)
        events: list[Event] = [SignalReceived(signal_id=s["signal_id"], data=s["data"])
                               for s in request.get("signals", [])]
        events += [signal for _, signal in early]
        first = actor.prepare(events)
        try:
            await self.io(self._create, started, first, [key for key, _ in early])
        except DuplicateWorkflowError:
            return None  # nothing was acted on: the prepared actor is dropped
        self.actors[workflow_id] = actor
        self._finished.pop(workflow_id, None)
        actor.launch(first)
        self._report(actor)
        return {"workflow_id": workflow_id, "run_id": started.run_id, "host": self.host_name}

    def _create(self, started: WorkflowStarted, first: Batch, consumed: list[str]) -> None:
        """Open marker, then the run object (exclusive); a lost race leaves no marker."""
        self.runs.mark_open(self.host_name, started.workflow_id)
        try:
            self.runs.create_run(started, first)
        except DuplicateWorkflowError:
            self.runs.clear_open(self.host_name, started.workflow_id)
            raise
        for key in consumed:
            self.runs.delete(key)

    def _stored_latest(self, workflow_id: str) -> tuple[WorkflowStarted, dict[str, Any] | None]:
        started, batches = self.runs.load(workflow_id)
        return started, (outcome_of(batches[-1]) if batches else None)

    async def _check_reuse(self, workflow_id: str, policy: str,
                           parent: dict[str, Any] | None) -> int | dict[str, Any]:
        """The epoch of the new run under ``policy``, or the reply attaching a parent to
        the child it started before (a re-issued start after a recovery)."""
        actor = self._actor(workflow_id)
        if actor is not None and not actor.fenced:
            started, outcome = actor.started, actor.outcome
        elif await self.quick_io(self.runs.latest_epoch, workflow_id) is None:
            return 1
        else:
            started, outcome = await self.io(self._stored_latest, workflow_id)
        if parent is not None and started.parent is not None and \
                started.parent.model_dump() == parent:
            return {"workflow_id": workflow_id, "run_id": started.run_id,
                    "host": started.host, "outcome": outcome}
        running = outcome is None
        if policy == "reject_duplicate":
            raise DuplicateWorkflowError(workflow_id, "id_reuse_policy=reject_duplicate")
        if running and policy == "terminate_if_running":
            reason = "terminated by a new start (terminate_if_running)"
            if actor is not None and actor.outcome is None:  # here: not via terminate(),
                await actor.terminate(reason)                # which waits for this start
            else:
                await self.backend.call_host(started.host, "terminate", workflow_id, reason)
        elif running:
            raise DuplicateWorkflowError(workflow_id, "a run is still open")
        elif policy == "allow_duplicate_failed_only" and outcome is not None \
                and outcome["status"] == "completed":
            raise DuplicateWorkflowError(workflow_id, "last run completed "
                                         "(id_reuse_policy=allow_duplicate_failed_only)")
        return started.epoch + 1

    async def _latest_outcome(self, workflow_id: str) -> tuple[WorkflowStarted,
                                                               dict[str, Any] | None]:
        pending = self._starting.get(workflow_id)
        if pending is not None:
            await pending
        actor = self._actor(workflow_id)
        if actor is not None and not actor.fenced:
            return actor.started, actor.outcome
        return await self.io(self._stored_latest, workflow_id)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ requests

    def _actor(self, workflow_id: str) -> WorkflowActor | None:
        return self.actors.get(workflow_id) or self._finished.get(workflow_id)

    async def _live(self, workflow_id: str, wake: bool = True) -> WorkflowActor | None:
        """The running actor for ``workflow_id``, waiting out a start in progress and
        (with ``wake``) bringing a parked run back."""
        pending = self._starting.get(workflow_id)
        if pending is not None:
            await pending
        if wake and workflow_id in self.parking:
            await self.parking.wake(workflow_id)
        return self.actors.get(workflow_id)

    async def result(self, workflow_id: str, run_id: str | None = None,
                     follow: bool = True) -> dict[str, Any]:
        """Waits for the run to close and returns its outcome (following continue-as-new)."""
        await self._ready.wait()
        await self._live(workflow_id, wake=False)
        while True:
            actor = self._actor(workflow_id)
            if workflow_id in self.parking.parked and (run_id is None or actor is None
                                               or actor.run_id == run_id):
                outcome = await self._wait_close(workflow_id)
            elif actor is None or (run_id is not None and actor.run_id != run_id):
                outcome = await self._stored_outcome(workflow_id, run_id)
            elif actor.fenced:
                raise NotHereError(f"workflow {workflow_id} moved to another host")
            elif actor.outcome is None:
                outcome = await self._wait_close(workflow_id)
            else:
                outcome = {**actor.outcome, "run_id": actor.run_id}
            if outcome["status"] != "continued" or not follow:
                return outcome
            successor = self._continuing.get(workflow_id)
            if successor is not None:
                await successor
            latest = self._actor(workflow_id)
            if latest is None or latest.run_id == outcome["run_id"]:
                return outcome  # the next run could not start: report where the chain ended
            run_id = None

    def _wait_close(self, workflow_id: str) -> asyncio.Future[dict[str, Any]]:
        """Resolves with the run's outcome when it closes (parked or not)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiting = [f for f in self._closers.get(workflow_id, []) if not f.done()]  # given up
        self._closers[workflow_id] = [*waiting, future]
        return future

    def _resolve_closers(self, workflow_id: str, outcome: dict[str, Any] | None) -> None:
        for future in self._closers.pop(workflow_id, []):
            if future.done():
                continue
            if outcome is None:
                future.set_exception(NotHereError(f"workflow {workflow_id} moved to another host"))
            else:
                future.set_result(outcome)

    async def results(self, workflow_ids: list[str]) -> list[dict[str, Any] | Exception | None]:
        """``result`` for several workflows: waits until at least one has an outcome (or
        an error), then returns each one's, ``None`` for those still running."""
        waits = {workflow_id: asyncio.ensure_future(self.result(workflow_id))
                 for workflow_id in workflow_ids}
        try:
            await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0)  # let the waits woken in the same turn finish too
            return [_settled(waits[workflow_id]) for workflow_id in workflow_ids]
        finally:
            for wait in waits.values():
                wait.cancel()

    async def _stored_outcome(self, workflow_id: str, run_id: str | None) -> dict[str, Any]:
        started, outcome = await self._latest_outcome(workflow_id)
        if run_id is not None and started.run_id != run_id:
            for epoch in reversed(await self.io(self.runs.epochs, workflow_id)):
                record, batches = await self.io(self.runs.load, workflow_id, epoch)
                if record.run_id == run_id:
                    outcome = outcome_of(batches[-1]) if batches else None
                    started = record
                    break
            else:
                raise WorkflowNotFoundError(workflow_id, f"no run {run_id}")
        if outcome is None:
            raise NotHereError(f"workflow {workflow_id} runs on {started.host}")
        return {**outcome, "run_id": started.run_id}

    async def signal(self, workflow_id: str, signal_id: str, data: dict[str, Any],
                     expire: float | None = None, request_id: str | None = None,
                     buffer_if_missing: bool = False) -> None:
        """Delivers a signal; returns once it is durable in the workflow's timeline."""
        await self._ready.wait()
        expire_at = None if expire is None else self.now() + expire
        event = SignalReceived(signal_id=signal_id, data=data, expire_at=expire_at,
                               request_id=request_id)
        actor = await self._live(workflow_id)
        if actor is not None and actor.outcome is None:
            await actor.deliver_durably(event)
            return
        if actor is None and buffer_if_missing:
            if await self.quick_io(self.runs.latest_epoch, workflow_id) is None:
                await self.io(self.runs.buffer_early_signal, workflow_id, event)
                return
        await self._closed_or_elsewhere(workflow_id, "signal")

    async def _closed_or_elsewhere(self, workflow_id: str, action: str) -> None:
        started, outcome = await self._latest_outcome(workflow_id)
        if outcome is not None:
            raise WorkflowClosedError(workflow_id, action)
        raise NotHereError(f"workflow {workflow_id} runs on {started.host}")

    async def cancel(self, workflow_id: str, reason: str | None = None) -> None:
        await self._ready.wait()
        actor = await self._live(workflow_id)
        if actor is not None and actor.outcome is None:
            await actor.deliver_durably(CancelRequested(reason=reason))
            return
        await self._closed_or_elsewhere(workflow_id, "cancel")

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        await self._ready.wait()
        actor = await self._live(workflow_id)
        if actor is not None and actor.outcome is None:
            await actor.terminate(reason)
            return
        await self._closed_or_elsewhere(workflow_id, "terminate")

    async def query(self, workflow_id: str, name: str, args: tuple[Any, ...]) -> Any:
        await self._ready.wait()
        actor = await self._live(workflow_id)
        if actor is None or actor.outcome is not None:
            await self._closed_or_elsewhere(workflow_id, "query")
        assert actor is not None
        return await actor.query(name, args)

    async def describe(self, workflow_id: str) -> dict[str, Any]:
        """Status, times, fields and pending work of the latest run."""
        await self._ready.wait()
        await self._live(workflow_id)
        actor = self._actor(workflow_id)
        if actor is not None and not actor.fenced:
            search, enrich = actor.fields()
            started, outcome, status = actor.started, actor.outcome, actor.status()
            pending, updated = actor.pending(), actor.updated_at
        else:
            started, batches = await self.io(self.runs.load, workflow_id)
            outcome = outcome_of(batches[-1]) if batches else None
            if outcome is None:
                raise NotHereError(f"workflow {workflow_id} runs on {started.host}")
            (search, enrich), pending = fields_of(started, batches), []
            status, updated = int(outcome["code"]), outcome["time"]
        return {
            "workflow_id": workflow_id, "run_id": started.run_id,
            "workflow_name": started.workflow_name, "task_queue": started.task_queue,
            "status": status, "outcome": outcome, "started_at": started.time,
            "state": outcome["status"] if outcome else "running",
            "updated_at": updated, "host": started.host, "attempt": started.attempt,
            "parent": started.parent.workflow_id if started.parent else None,
            "search": search, "enrich": enrich, "memo": started.memo, "pending": pending,
        }

    async def deliver(self, workflow_id: str, event: Event) -> None:
        """An event from elsewhere in the cluster (a child's completion)."""
        await self._ready.wait()
        actor = await self._live(workflow_id)
        if actor is None:
            raise NotHereError(f"workflow {workflow_id} is not on {self.host_name}")
        await actor.deliver_durably(event)

    def stats(self) -> dict[str, Any]:
        return {"host": self.host_name, "running": len(self.actors), "parked": len(self.parking),
                "finished_cached": len(self._finished)}

    # ----------------------------------------------- environment: commands

    def run_activity(self, actor: WorkflowActor, seq: int,
                     definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                     options: ActivityOptions) -> Any:
        def attempt(number: int) -> Any:
            info = ActivityInfo(actor.workflow_id, actor.run_id, definition.name, seq, number)
            return self.backend.run_attempt(definition, args, options, info)

        return run_with_retries(seq, definition.name, options, attempt)

    def on_fields(self, actor: WorkflowActor) -> None:
        self._report(actor)

    def on_closed(self, actor: WorkflowActor) -> None:
        if actor.fenced or self.actors.get(actor.workflow_id) is not actor:
            return
        del self.actors[actor.workflow_id]
        self._finished[actor.workflow_id] = actor
        while len(self._finished) > KEEP_FINISHED:
            self._finished.popitem(last=False)
        assert actor.outcome is not None
        if actor.outcome["status"] == "continued":
            self._continuing[actor.workflow_id] = asyncio.create_task(self._continue(actor))
        self._resolve_closers(actor.workflow_id, {**actor.outcome, "run_id": actor.run_id})
        asyncio.create_task(self._after_close(actor))

    def on_fenced(self, actor: WorkflowActor) -> None:
        if self.actors.get(actor.workflow_id) is actor:
            del self.actors[actor.workflow_id]
        self._resolve_closers(actor.workflow_id, None)

    def on_idle(self, actor: WorkflowActor) -> None:
        self.parking.on_idle(actor)

    def background(self, work: Any) -> None:
        """Runs ``work`` to its end whatever happens to the actor that asked for it."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _after_close(self, actor: WorkflowActor) -> None:
        try:
            if actor.outcome is not None and actor.outcome["status"] != "continued":
                await self.quick_io(self.runs.clear_open, self.host_name, actor.workflow_id)
            self._report(actor)
            parent = actor.started.parent
            if parent is not None and actor.outcome is not None and \
                    actor.outcome["status"] != "continued":
                event = child_event(parent.seq, actor.outcome)
                await self.deliver_to(parent.workflow_id, parent.host, event)
        except Exception:
            log.exception("host %s: after closing %s", self.host_name, actor.workflow_id)

    async def _continue(self, actor: WorkflowActor) -> WorkflowActor | None:
        assert actor.outcome is not None
        s = actor.started
        request = {"workflow_id": s.workflow_id, "workflow_name": s.workflow_name,
                   "code": s.code, "code_pickle": s.code_pickle, "args": actor.outcome["args"],
                   "task_queue": s.task_queue, "search": actor.fields()[0], "memo": s.memo,
                   "options": s.options, "continued_from": s.run_id,
                   "parent": s.parent.model_dump() if s.parent else None}
        try:
            await self.start(request)
        except Exception:
            log.exception("host %s: continue-as-new of %s failed", self.host_name, s.workflow_id)
            return None
        return self._actor(s.workflow_id)

    def _report(self, actor: WorkflowActor) -> None:
        search, _ = actor.fields()
        self.backend.report({
            "workflow_id": actor.workflow_id, "run_id": actor.run_id,
            "workflow_name": actor.started.workflow_name, "host": self.host_name,
            "task_queue": actor.started.task_queue, "status": actor.status(),
            "state": actor.outcome["status"] if actor.outcome else "running",
            "started_at": actor.started.time, "search": search,
        })


def _settled(task: asyncio.Task[dict[str, Any]]) -> dict[str, Any] | Exception | None:
    """A finished task's result or exception; ``None`` if it had not finished."""
    if not task.done() or task.cancelled():
        return None
    error = task.exception()
    if error is None:
        return task.result()
    return error if isinstance(error, Exception) else RaylineError(repr(error))
