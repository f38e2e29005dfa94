"""Schedules: a workflow started on a cron or interval spec, durably (``client.schedule``).

A schedule is itself a rayline workflow, ``rayline.schedule`` (the function
:func:`schedule` here), with workflow id ``SCHEDULE_PREFIX + schedule_id``. Its loop
works out the next time from its ``ScheduleSpec``, waits for it with a durable timer or
until a control signal arrives (``pause``, ``unpause``, ``trigger``, ``backfill``,
``update``, ``delete``), then starts the target as a child workflow with id
``<prefix>-<scheduled time, ISO 8601 UTC>``, the scheduled time in its memo and search
fields (``schedule_id``, ``scheduled_at``), and ``parent_close_policy="abandon"``: runs
outlive the schedule. ``handle.describe()`` is its ``describe`` query.

Invariants:
- Exactly once per scheduled time: the scheduler's state (its cursor, buffer and
  counters) is rebuilt by replaying its timeline, and every fire is recorded there as
  a child start; the child id is derived from the scheduled time and started with
  ``id_reuse_policy="reject_duplicate"``, so the same time cannot start twice even
  through a backfill. A wake after downtime (a host or the whole Ray gone) fires each
  time missed within ``catchup_window`` once and counts the older ones as missed.
- Overlap is decided against the runs this schedule started that are still open: each
  is awaited by a task of the scheduler (``execute_child``, outside the reach of a
  cancel of the scheduler), never polled.
- The history stays short: after ``continue_after`` fires (or once rayline suggests
  it) the scheduler continues as new with its whole state, when no run is open; if
  runs stay open past ``FORCE_CONTINUE_AFTER`` history entries it continues anyway and
  the next run awaits those runs through an activity that asks the client.
- Handlers never raise: a bad control signal is reported in ``last_error``, it does not
  fail the schedule.
- What leaves the scheduler (its arguments, result, continue-as-new state, query
  answers) is JSON: inside a host ``datetime`` is the determinism guards' class, which
  does not pickle.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Literal,
    ParamSpec,
    TypeVar,
    cast,
)

import pydantic

from ._activity import ActivityDefinition
from ._code import CodeRef
from ._definition import WorkflowDefinition
from ._options import ActivityOptions, RetryPolicy
from ._schedule_spec import (
    Fire,
    Overlap,
    ScheduleSpec,
    due,
    iso,
    resolve,
    utc,
)
from .core.instance import CONTINUE_AS_NEW_AFTER
from .errors import (
    SCHEDULE_PREFIX,
    CancelledFailure,
    DuplicateWorkflowError,
    WorkflowClosedError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from .workflow import api as workflow

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = [
    "SCHEDULE_PREFIX",
    "WORKFLOW_NAME",
    "ScheduleDescription",
    "ScheduleRun",
    "ScheduleSpec",
    "ScheduleState",
    "ScheduleSummary",
    "ScheduleTarget",
    "schedule",
]

P = ParamSpec("P")
R = TypeVar("R")

# SCHEDULE_PREFIX (rayline.errors): workflow ids of schedulers are it, then the schedule
# id. ``:`` is allowed in ids and storage names, and unusual in a user's own ids.
WORKFLOW_NAME = "rayline.schedule"
RECENT = 10
"""Runs kept in ``recent_actions``."""
NEXT_TIMES = 5
"""Future times shown by ``describe``."""
MAX_BUFFER = 1000
"""Starts kept waiting for an open run to end; later ones are skipped."""
MAX_BACKFILL = 1000
"""Times one backfill may start."""
FORCE_CONTINUE_AFTER = 2 * CONTINUE_AS_NEW_AFTER
"""History entries past which the scheduler continues as new even with runs open."""
SLACK = 0.001
"""Seconds a time counts as due early: a timer's activation may read a hair before it."""
SIGNALS = ("pause", "unpause", "trigger", "backfill", "update", "delete")

RunState = Literal["running", "completed", "failed", "cancelled", "terminated",
                    "not_started", "unknown"]


class ScheduleTarget(pydantic.BaseModel):
    """What a schedule starts: a workflow (by name, with its code's import path or a
    pickled copy), on a task queue, with ids ``<workflow_id_prefix>-<time>``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    workflow_name: str
    code: str | None = None
    code_pickle: str | None = None
    task_queue: str = "default"
    workflow_id_prefix: str


class ScheduleRun(pydantic.BaseModel):
    """One start of a schedule (``describe().recent_actions``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    scheduled_at: datetime
    started_at: datetime
    """When the scheduler started it (later than ``scheduled_at`` by jitter, a buffer
    wait, or a catch-up)."""
    workflow_id: str
    kind: Literal["scheduled", "trigger", "backfill"] = "scheduled"
    status: RunState = "running"


class ScheduleState(pydantic.BaseModel):
    """Everything a scheduler run knows; handed whole to the next run on continue-as-new.
    Times are seconds since the epoch."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True)

    schedule_id: str
    target: ScheduleTarget
    spec: ScheduleSpec
    overlap: Overlap = "skip"
    catchup_window: float = 60.0
    paused: bool = False
    note: str | None = None
    namespace: str = "default"
    storage: str = ""
    """Where the client that made it keeps timelines (for the activities that reach
    other workflows through a client: ``terminate_other``, runs carried over)."""
    continue_after: int = 200
    """Fires per scheduler run before it continues as new."""
    created_at: float | None = None
    cursor: float | None = None
    """Every spec time up to here has been fired, skipped or missed."""
    jitter: tuple[float, float] | None = None
    """(time, its delay): drawn once per time."""
    last_trigger: float = 0.0
    buffer: list[Fire] = []
    recent: list[ScheduleRun] = []
    running: list[ScheduleRun] = []
    """Runs still open when the previous scheduler run continued as new."""
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    not_started: int = 0
    last_error: str | None = None


class ScheduleDescription(pydantic.BaseModel):
    """What ``handle.describe()`` returns."""

    schedule_id: str
    workflow_name: str
    task_queue: str
    spec: ScheduleSpec
    overlap: Overlap
    catchup_window: float
    """Seconds: a time missed by more than this (the schedule was down) is not fired."""
    paused: bool
    note: str | None
    created_at: datetime | None
    next_fire_times: list[datetime]
    """The next times of the spec (before jitter); none while paused."""
    recent_actions: list[ScheduleRun]
    """The last runs started, oldest first, with how they ended so far."""
    running: list[str]
    """Workflow ids of the runs this schedule started that are open."""
    buffered: int
    """Starts waiting for an open run to end (``buffer_one``, ``buffer_all``, ...)."""
    fired: int
    """Starts issued (``not_started`` of them were refused: the id had run already)."""
    skipped: int
    """Starts dropped by the overlap policy."""
    missed: int
    """Times that passed while the schedule was down, outside the catch-up window."""
    not_started: int
    last_error: str | None


class ScheduleSummary(pydantic.BaseModel):
    """One schedule in ``client.schedule.list()``."""

    schedule_id: str
    workflow_name: str
    """What it starts."""
    task_queue: str
    paused: bool


# ---------------------------------------------------------------- the workflow


def _defined(name: str) -> Callable[[Callable[P, Awaitable[R]]], WorkflowDefinition[P, R]]:
    """``@rayline.workflow(name=...)``, typed."""
    return lambda fn: WorkflowDefinition(fn, name)


def _local_activity(name: str, retry: RetryPolicy
                    ) -> Callable[[Callable[P, R]], ActivityDefinition[P, R]]:
    """``@rayline.activity(name=..., local=True, retry=...)``, typed."""
    return lambda fn: ActivityDefinition(fn, name, ActivityOptions(local=True, retry=retry))


@_defined(WORKFLOW_NAME)
async def schedule(state: dict[str, Any], args: list[Any]) -> dict[str, Any]:
    """The scheduler: fires ``state`` (a ``ScheduleState``'s JSON) on its spec until it
    is deleted; returns its last ``ScheduleDescription`` (as JSON).

    What it takes and gives is JSON, not models: inside a host ``datetime`` is the
    determinism guards' class, which does not pickle (and values are pickled to be
    measured)."""
    return await _Scheduler(ScheduleState.model_validate(state), list(args)).run()


def _now() -> float:
    return workflow.now().timestamp()


class _Scheduler:
    """One scheduler run's loop, handlers and query (see the module docstring)."""

    def __init__(self, state: ScheduleState, args: list[Any]) -> None:
        self.state = state
        self.args = args
        self.running: dict[str, ScheduleRun] = {}
        self.stopping: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.changed = False
        self.deleted = False
        self.fires = 0
        self.target: Any = None

    async def run(self) -> dict[str, Any]:
        s = self.state
        if s.cursor is None:
            s.cursor = s.created_at = _now()
        for run in s.running:
            self.running[run.workflow_id] = run
            self._spawn(self._watch(run))
        s.running = []
        workflow.set_query_handler("describe", self.describe_json)
        for name in SIGNALS:
            workflow.set_signal_handler(name, self._guarded(name))
        while not self.deleted:
            self.changed = False
            self._collect()
            self._act()
            self._continue_if_long()
            if self.changed:
                continue
            wait = self._wait()
            if wait is None:
                await workflow.condition(lambda: self.changed)
            else:
                await workflow.condition(lambda: self.changed, timeout=wait)
        return self.describe_json()

    # ------------------------------------------------------------ the loop

    def _collect(self) -> None:
        """Moves the spec's times that are due into the buffer (none while paused)."""
        s, now = self.state, _now() + SLACK
        assert s.cursor is not None
        if s.paused:
            s.cursor = max(s.cursor, now)
            return
        first = s.spec.next_after(s.cursor)
        if first is None or self._fire_time(first) > now:
            return
        found = due(s.spec, s.cursor, now, s.catchup_window)
        s.cursor = now
        s.missed += found.missed
        s.buffer.extend(Fire(at=t, overlap=s.overlap) for t in found.fire)

    def _fire_time(self, time: float) -> float:
        """``time`` plus its jitter, drawn once (``workflow.random``)."""
        s = self.state
        if s.spec.jitter <= 0:
            return time
        if s.jitter is None or s.jitter[0] != time:
            s.jitter = (time, workflow.random() * s.spec.jitter)
        return time + s.jitter[1]

    def _act(self) -> None:
        """Starts, keeps or skips each buffered start; stops open runs if told to."""
        s = self.state
        plan = resolve(s.buffer, len(self.running))
        s.buffer = plan.keep[:MAX_BUFFER]
        s.skipped += len(plan.skipped) + len(plan.keep) - len(s.buffer)
        for fire in plan.start:
            self._start(fire)
        if plan.stop is not None:
            for workflow_id in list(self.running):
                if workflow_id not in self.stopping:
                    self._stop(workflow_id, plan.stop)

    def _wait(self) -> float | None:
        """Seconds until the next time is due; ``None``: only a signal or a run's end."""
        s = self.state
        assert s.cursor is not None
        if s.paused:
            return None
        time = s.spec.next_after(s.cursor)
        if time is None:
            return None
        return max(0.001, self._fire_time(time) - _now())

    def _continue_if_long(self) -> None:
        s = self.state
        info = workflow.info()
        if self.fires < s.continue_after and not info.is_continue_as_new_suggested():
            return
        if self.running and info.history_length < FORCE_CONTINUE_AFTER:
            return  # its runs' ends come to this run: wait for a quiet moment
        s.running = list(self.running.values())
        workflow.continue_as_new(s.model_dump(mode="json"), self.args)

    # ------------------------------------------------------------ runs

    def _start(self, fire: Fire) -> None:
        s = self.state
        workflow_id = f"{s.target.workflow_id_prefix}-{iso(fire.at)}"
        run = ScheduleRun(scheduled_at=utc(fire.at), started_at=utc(_now()),
                          workflow_id=workflow_id, kind=fire.kind)
        s.recent = [*s.recent, run][-RECENT:]
        s.fired += 1
        self.fires += 1
        if workflow_id in self.running:  # a second trigger in the same millisecond
            self._not_started(run, f"{workflow_id} is running already")
            return
        self.running[workflow_id] = run
        self._spawn(self._track(run, iso(fire.at)))

    async def _track(self, run: ScheduleRun, scheduled_at: str) -> None:
        """Starts the run as a child and awaits its end (not cancelled with the
        scheduler: runs outlive it)."""
        s = self.state
        try:
            async with workflow.non_cancellable():
                await workflow.execute_child(
                    self._target(), *self.args, workflow_id=run.workflow_id,
                    task_queue=s.target.task_queue,
                    memo={"schedule_id": s.schedule_id, "scheduled_at": scheduled_at},
                    search={"schedule_id": s.schedule_id, "scheduled_at": run.scheduled_at},
                    id_reuse_policy="reject_duplicate", parent_close_policy="abandon")
            run.status = "completed"
        except CancelledFailure:
            run.status = "cancelled"
        except WorkflowFailedError as exc:
            if exc.code == DuplicateWorkflowError.code:
                self._not_started(run, f"{run.workflow_id} has run already")
            else:
                run.status = "terminated" if exc.code == 410 else "failed"
        except Exception as exc:  # the start was refused: bad arguments, code not found
            self._not_started(run, f"{run.workflow_id}: {type(exc).__name__}: {exc}")
        finally:
            self._ended(run)

    async def _watch(self, run: ScheduleRun) -> None:
        """Awaits a run a previous scheduler run started (its end goes to that run)."""
        s = self.state
        try:
            async with workflow.non_cancellable():
                state = await workflow.execute_activity(
                    await_run, s.storage, s.namespace, run.workflow_id)
            run.status = cast(RunState, state) if state in _ENDS else "unknown"
        except Exception as exc:
            run.status = "unknown"
            s.last_error = f"awaiting {run.workflow_id}: {exc}"
        finally:
            self._ended(run)

    def _ended(self, run: ScheduleRun) -> None:
        self.running.pop(run.workflow_id, None)
        self.stopping.discard(run.workflow_id)
        self.changed = True

    def _not_started(self, run: ScheduleRun, why: str) -> None:
        run.status = "not_started"
        self.state.not_started += 1
        self.state.last_error = f"not started: {why}"

    def _stop(self, workflow_id: str, how: Literal["cancel", "terminate"]) -> None:
        """Cancels (``cancel_other``) or terminates (``terminate_other``) an open run;
        its end, seen by its ``_track``, lets the kept start go."""
        s = self.state
        self.stopping.add(workflow_id)

        async def stop() -> None:
            try:
                if how == "cancel":
                    await workflow.get_external_handle(workflow_id).cancel()
                else:
                    await workflow.execute_activity(
                        terminate_run, s.storage, s.namespace, workflow_id,
                        f"schedule {s.schedule_id}: a newer run starts (terminate_other)")
            except Exception as exc:  # it ended meanwhile, or not started yet: next wake
                self.stopping.discard(workflow_id)
                s.last_error = f"{how} {workflow_id}: {exc}"

        self._spawn(stop())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _target(self) -> Any:
        """The workflow to start: loaded from its code once, else its registered name."""
        if self.target is None:
            t = self.state.target
            code = CodeRef.stored(t.code, t.code_pickle)
            self.target = code.load() if code is not None else t.workflow_name
        return self.target

    # ------------------------------------------------------------ signals, query

    def _guarded(self, name: str) -> Callable[[Any], None]:
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"_on_{name}")

        def handle(data: Any) -> None:
            try:
                handler(data if isinstance(data, dict) else {})
            except Exception as exc:  # a bad signal must not fail the schedule
                self.state.last_error = f"signal {name}: {type(exc).__name__}: {exc}"
            self.changed = True
        return handle

    def _on_pause(self, data: dict[str, Any]) -> None:
        self._pause(True, data.get("note"))

    def _on_unpause(self, data: dict[str, Any]) -> None:
        self._pause(False, data.get("note"))

    def _pause(self, paused: bool, note: str | None) -> None:
        s = self.state
        assert s.cursor is not None
        if not paused:  # the times that passed meanwhile are not owed
            s.cursor = max(s.cursor, _now())
        if paused != s.paused:
            workflow.search(schedule_paused=paused)
        s.paused, s.note = paused, note

    def _on_trigger(self, data: dict[str, Any]) -> None:
        s = self.state
        at = max(_now(), s.last_trigger + 0.001)
        s.last_trigger = at
        s.buffer.append(Fire(at=at, overlap=data.get("overlap") or s.overlap, kind="trigger"))

    def _on_backfill(self, data: dict[str, Any]) -> None:
        s = self.state
        times = s.spec.ticks(float(data["start"]), float(data["end"]), MAX_BACKFILL)
        overlap = data.get("overlap") or s.overlap
        s.buffer.extend(Fire(at=t, overlap=overlap, kind="backfill") for t in times)

    def _on_update(self, data: dict[str, Any]) -> None:
        s = self.state
        if "spec" in data:
            s.spec = ScheduleSpec.model_validate(data["spec"])
            s.jitter = None
        if "target" in data:
            s.target = ScheduleTarget.model_validate(data["target"])
            self.target = None
        if "args" in data:
            self.args = list(data["args"])
        if "overlap" in data:
            s.overlap = data["overlap"]
        if "catchup_window" in data:
            s.catchup_window = float(data["catchup_window"])
        if "paused" in data:
            self._pause(bool(data["paused"]), data.get("note", s.note))
        elif "note" in data:
            s.note = data["note"]

    def _on_delete(self, data: dict[str, Any]) -> None:
        self.deleted = True

    def describe_json(self) -> dict[str, Any]:
        """The ``describe`` query, as JSON (see :func:`schedule`)."""
        return self.describe().model_dump(mode="json")

    def describe(self) -> ScheduleDescription:
        """The schedule as it is now (called outside the workflow's activations too: it
        reads the state only)."""
        s = self.state
        upcoming: list[datetime] = []
        time = None if s.paused else s.cursor
        while time is not None and len(upcoming) < NEXT_TIMES:
            time = s.spec.next_after(time)
            if time is not None:
                upcoming.append(utc(time))
        return ScheduleDescription(
            schedule_id=s.schedule_id, workflow_name=s.target.workflow_name,
            task_queue=s.target.task_queue, spec=s.spec, overlap=s.overlap,
            catchup_window=s.catchup_window, paused=s.paused, note=s.note,
            created_at=utc(s.created_at) if s.created_at is not None else None,
            next_fire_times=upcoming, recent_actions=list(s.recent),
            running=sorted(self.running), buffered=len(s.buffer), fired=s.fired,
            skipped=s.skipped, missed=s.missed, not_started=s.not_started,
            last_error=s.last_error)


_ENDS = ("completed", "failed", "cancelled", "terminated")


# ---------------------------------------------------------------- activities


@functools.lru_cache(maxsize=8)
def _client(storage: str, namespace: str) -> AsyncClient:
    """A client of the cluster the activity runs in (it is already connected to Ray)."""
    from .client import AsyncClient

    return AsyncClient(storage=storage, namespace=namespace)


@_local_activity("rayline.schedule.terminate", RetryPolicy(maximum_attempts=5))
async def terminate_run(storage: str, namespace: str, workflow_id: str, reason: str) -> None:
    """Terminates a run (``terminate_other``); one that has closed already is let be."""
    try:
        handle = await _client(storage, namespace).workflow.get_handle(workflow_id)
        await handle.terminate(reason)
    except (WorkflowClosedError, WorkflowNotFoundError):
        pass


@_local_activity("rayline.schedule.await",
                 RetryPolicy(maximum_attempts=0, maximum_interval=60))
async def await_run(storage: str, namespace: str, workflow_id: str) -> str:
    """Waits for a run to close and returns how (``completed``, ``failed``, ...)."""
    try:
        handle = await _client(storage, namespace).workflow.get_handle(workflow_id)
    except WorkflowNotFoundError:
        return "unknown"
    await handle.result(throw_on_error=False)
    return str((await handle.describe()).state.value)
