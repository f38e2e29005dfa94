"""``client.schedule``: create schedules and control them (see ``rayline.schedules``).

Every call checks its input here, before anything is sent, and names what is wrong.
A schedule is a workflow (``SCHEDULE_PREFIX + schedule_id``), so the calls are workflow
calls: ``create`` starts it, the controls are signals to it (each returns once the
signal is durable; the schedule acts on it at once), ``describe`` is its query.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

from ._code import CodeRef
from ._definition import as_workflow
from ._durations import Duration, optional_duration, parse_duration
from ._facade import Facade
from ._schedule_spec import OVERLAP_POLICIES, ScheduleSpec, iso
from ._search import timestamp
from ._validate import validate_args, validate_task_queue
from .errors import (
    DuplicateWorkflowError,
    InvalidInputError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from .messages import RunStatus
from .schedules import (
    MAX_BACKFILL,
    SCHEDULE_PREFIX,
    WORKFLOW_NAME,
    ScheduleDescription,
    ScheduleState,
    ScheduleSummary,
    ScheduleTarget,
    schedule,
)
from .storage import validate_id

if TYPE_CHECKING:
    from .client import AsyncClient, AsyncWorkflowHandle

T = TypeVar("T")
_SPEC_FIELDS = ("cron", "every", "offset", "time_zone", "start_at", "end_at", "jitter")
_UPDATABLE = frozenset({*_SPEC_FIELDS, "overlap", "catchup_window", "args", "paused",
                        "note", "workflow", "task_queue", "workflow_id_prefix"})
_CLOSED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TERMINATED)


class AsyncScheduleClient:
    """``client.schedule``: create, get_handle, list."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, schedule_id: str, workflow: Any, *,
                     args: Sequence[Any] = (), cron: str | None = None,
                     every: Duration | None = None, offset: Duration | None = None,
                     overlap: str = "skip", catchup_window: Duration = "1m",
                     jitter: Duration | None = None,
                     start_at: float | datetime | None = None,
                     end_at: float | datetime | None = None, paused: bool = False,
                     note: str | None = None, time_zone: str = "UTC",
                     task_queue: str | None = None,
                     workflow_id_prefix: str | None = None) -> AsyncScheduleHandle:
        """Creates a schedule that starts ``workflow(*args)`` at each time of its spec.

        Args:
            schedule_id: names the schedule; its runs get ids
                ``<workflow_id_prefix or schedule_id>-<scheduled time>``
                (``nightly-2026-12-01T10:00:00Z``).
            workflow: an ``@rayline.workflow`` (or ``async def``), or the name of a
                workflow registered on ``task_queue`` by ``Worker.create``.
            args: its arguments, checked against its annotations.
            cron: a 5-field cron expression (``"0 9 * * 1-5"``) or ``@daily``-style alias,
                read in ``time_zone`` (an IANA name); or
            every: a duration (at least 1 s) between times counted from the Unix epoch,
                shifted by ``offset``.
            overlap: when a run it started is still open: ``skip`` (the default),
                ``buffer_one``, ``buffer_all``, ``cancel_other``, ``terminate_other`` or
                ``allow_all``.
            catchup_window: after downtime, missed times at most this old still fire.
            jitter: each fire waits a random part of this (less than the interval).
            start_at, end_at: no time before / after these (``datetime``, naive is UTC,
                or seconds since the epoch).
            paused: create it paused (``note`` says why).
            task_queue: where the runs and the schedule itself run (``"default"``).

        Raises:
            InvalidInputError: a bad id, spec, duration, policy or argument (naming it).
            ScheduleAlreadyExistsError: a schedule with this id is running.
        """
        schedule_id = _schedule_id(schedule_id)
        queue = validate_task_queue(task_queue or "default")
        spec = ScheduleSpec.build(
            cron=cron, every=optional_duration(every, what="every"),
            offset=parse_duration(offset or 0, what="offset"), time_zone=time_zone,
            start_at=timestamp(start_at, "start_at"), end_at=timestamp(end_at, "end_at"),
            jitter=parse_duration(jitter or 0, what="jitter"))
        target, checked = _target(workflow, args, queue, workflow_id_prefix or schedule_id)
        state = ScheduleState(
            schedule_id=schedule_id, target=target, spec=spec, overlap=_overlap(overlap),
            catchup_window=_catchup(catchup_window), paused=_flag(paused, "paused"),
            note=_note(note), namespace=self._client.namespace,
            storage=self._client.storage_url)
        try:
            handle = await self._client.workflow.start(
                schedule, args=[state.model_dump(mode="json"), list(checked)],
                workflow_id=SCHEDULE_PREFIX + schedule_id, task_queue=queue,
                search={"schedule_workflow": target.workflow_name,
                        "schedule_paused": state.paused})
        except DuplicateWorkflowError:
            raise ScheduleAlreadyExistsError(schedule_id) from None
        return AsyncScheduleHandle(self._client, schedule_id, handle)

    async def get_handle(self, schedule_id: str) -> AsyncScheduleHandle:
        """A handle to an existing schedule, from any process.

        Raises:
            ScheduleNotFoundError: no schedule was ever created with this id.
        """
        schedule_id = _schedule_id(schedule_id)
        try:
            handle = await self._client.workflow.get_handle(SCHEDULE_PREFIX + schedule_id)
        except WorkflowNotFoundError:
            raise ScheduleNotFoundError(schedule_id) from None
        return AsyncScheduleHandle(self._client, schedule_id, handle)

    async def list(self) -> list[ScheduleSummary]:
        """The running schedules of the namespace, by id (from the visibility index, so a
        schedule created a moment ago may be missing for a moment)."""
        found: dict[str, ScheduleSummary] = {}
        token: str | None = None
        while True:
            page = await self._client.workflow.list(
                status=RunStatus.RUNNING.value, workflow_name=WORKFLOW_NAME, page_token=token)
            for run in page:
                if run.workflow_id.startswith(SCHEDULE_PREFIX):
                    schedule_id = run.workflow_id[len(SCHEDULE_PREFIX):]
                    found[schedule_id] = ScheduleSummary(
                        schedule_id=schedule_id,
                        workflow_name=str(run.search.get("schedule_workflow", "")),
                        task_queue=run.task_queue,
                        paused=bool(run.search.get("schedule_paused", False)))
            token = page.next_page_token
            if token is None:
                return [found[key] for key in sorted(found)]


class AsyncScheduleHandle:
    """One schedule, by id. A schedule that was deleted (or never created) answers
    every call with ``ScheduleNotFoundError``."""

    def __init__(self, client: AsyncClient, schedule_id: str,
                 handle: AsyncWorkflowHandle[Any]) -> None:
        self._client = client
        self.schedule_id = schedule_id
        self._handle = handle

    @property
    def workflow_id(self) -> str:
        """The scheduler workflow's id (``SCHEDULE_PREFIX + schedule_id``)."""
        return SCHEDULE_PREFIX + self.schedule_id

    async def describe(self) -> ScheduleDescription:
        """Its spec, state, next times, recent runs, open runs and counters."""
        await self._open()
        try:
            answer = await self._handle.query("describe")
        except (WorkflowNotFoundError, WorkflowClosedError):
            raise ScheduleNotFoundError(self.schedule_id) from None
        return ScheduleDescription.model_validate(answer)

    async def pause(self, note: str | None = None) -> None:
        """Stops firing at the spec's times until ``unpause`` (triggers and backfills
        still run; runs already buffered still start)."""
        await self._signal("pause", {"note": _note(note)})

    async def unpause(self, note: str | None = None) -> None:
        """Fires at the spec's times again, from now on (the times while it was paused
        are not owed)."""
        await self._signal("unpause", {"note": _note(note)})

    async def trigger(self, overlap: str | None = None) -> None:
        """Starts a run now (scheduled for now), under ``overlap`` (default: the
        schedule's policy)."""
        await self._signal("trigger", {"overlap": _overlap(overlap) if overlap else None})

    async def backfill(self, start: float | datetime, end: float | datetime,
                       overlap: str | None = None) -> None:
        """Starts a run for each time of the spec after ``start`` and up to ``end``
        (as Temporal: ``start`` excluded, ``end`` included), at once, under ``overlap``
        (default: the schedule's policy; ``allow_all`` or ``buffer_all`` start them
        all). Times whose run exists already are not started again.

        Raises:
            InvalidInputError: ``end`` not after ``start``, or more than
                ``MAX_BACKFILL`` (1000) times.
        """
        first, last = timestamp(start, "start"), timestamp(end, "end")
        assert first is not None and last is not None
        if last <= first:
            raise InvalidInputError("backfill: end must be after start")
        spec = (await self.describe()).spec
        count = len(spec.ticks(first, last, MAX_BACKFILL + 1))
        if count > MAX_BACKFILL:
            raise InvalidInputError(f"backfill: more than {MAX_BACKFILL} times between "
                                    f"{iso(first)} and {iso(last)}: split the range")
        await self._signal("backfill", {"start": first, "end": last,
                                        "overlap": _overlap(overlap) if overlap else None})

    async def update(self, **changes: Any) -> None:
        """Changes the schedule: its spec (``cron``, ``every``, ``offset``,
        ``time_zone``, ``start_at``, ``end_at``, ``jitter``; a ``cron`` replaces an
        ``every`` and the other way round), ``overlap``, ``catchup_window``, ``args``,
        ``paused`` and ``note``, or what it starts (``workflow``, ``task_queue``,
        ``workflow_id_prefix``). The next times follow the new spec from now.

        Raises:
            InvalidInputError: an unknown name or a bad value (nothing is changed).
        """
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidInputError(f"update: unknown field(s) {', '.join(sorted(unknown))} "
                                    f"(one of {', '.join(sorted(_UPDATABLE))})")
        current = await self.describe()
        payload: dict[str, Any] = {}
        if any(name in changes for name in _SPEC_FIELDS):
            payload["spec"] = _new_spec(current.spec, changes).model_dump()
        if {"workflow", "task_queue", "workflow_id_prefix"} & set(changes):
            payload["target"], payload["args"] = _new_target(current, changes)
        elif "args" in changes:
            payload["args"] = list(changes["args"])
        if "overlap" in changes:
            payload["overlap"] = _overlap(changes["overlap"])
        if "catchup_window" in changes:
            payload["catchup_window"] = _catchup(changes["catchup_window"])
        if "paused" in changes:
            payload["paused"] = _flag(changes["paused"], "paused")
        if "note" in changes:
            payload["note"] = _note(changes["note"])
        await self._signal("update", payload)

    async def delete(self) -> None:
        """Ends the schedule (waiting until it has); the runs it started go on."""
        await self._signal("delete", {})
        await self._handle.result(throw_on_error=False, timeout=60)

    async def _open(self) -> None:
        """Raises ``ScheduleNotFoundError`` when the scheduler has closed."""
        try:
            info = await self._handle.describe()
        except WorkflowNotFoundError:
            raise ScheduleNotFoundError(self.schedule_id) from None
        if info.state in _CLOSED:
            raise ScheduleNotFoundError(self.schedule_id, f"it was deleted ({info.state.value})")

    async def _signal(self, name: str, data: dict[str, Any]) -> None:
        try:
            await self._handle.signal(name, data)
        except (WorkflowNotFoundError, WorkflowClosedError):
            raise ScheduleNotFoundError(self.schedule_id) from None


# ---------------------------------------------------------------- checks


def _schedule_id(value: object) -> str:
    schedule_id = validate_id(value, what="schedule id")
    validate_id(SCHEDULE_PREFIX + schedule_id, what="schedule id")  # its length with the prefix
    return schedule_id


def _target(workflow: Any, args: Sequence[Any], task_queue: str,
            prefix: str) -> tuple[ScheduleTarget, tuple[Any, ...]]:
    """What a schedule starts, and ``args`` checked against the workflow's annotations."""
    validate_id(f"{prefix}-{iso(0.001)}", what="workflow_id_prefix")
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise InvalidInputError(f"args must be a list or tuple, got {type(args).__name__}")
    if isinstance(workflow, str):
        if not workflow:
            raise InvalidInputError("workflow must be a workflow function or a name")
        return ScheduleTarget(workflow_name=workflow, task_queue=task_queue,
                              workflow_id_prefix=prefix), tuple(args)
    definition = as_workflow(workflow)
    checked = validate_args(definition.fn, tuple(args), what=f"workflow {definition.name!r}")
    code = CodeRef.of(definition)
    return ScheduleTarget(workflow_name=definition.name, code=code.path,
                          code_pickle=code.pickled, task_queue=task_queue,
                          workflow_id_prefix=prefix), checked


def _new_spec(current: ScheduleSpec, changes: dict[str, Any]) -> ScheduleSpec:
    fields = current.model_dump()
    if "cron" in changes:
        fields.update(every=None, offset=0.0)
    if "every" in changes:
        fields.update(cron=None)
    for name, value in changes.items():
        if name in ("every", "offset", "jitter"):
            fields[name] = optional_duration(value, what=name) if name == "every" \
                else parse_duration(value or 0, what=name)
        elif name in ("start_at", "end_at"):
            fields[name] = timestamp(value, name)
        elif name in ("cron", "time_zone"):
            fields[name] = value
    return ScheduleSpec.build(**fields)


def _new_target(current: ScheduleDescription, changes: dict[str, Any]
                ) -> tuple[dict[str, Any], list[Any]]:
    if "workflow" not in changes:
        raise InvalidInputError("update: task_queue and workflow_id_prefix go with workflow= "
                                "(what the schedule starts)")
    queue = validate_task_queue(changes.get("task_queue") or current.task_queue)
    prefix = changes.get("workflow_id_prefix") or current.schedule_id
    target, checked = _target(changes["workflow"], changes.get("args", ()), queue, prefix)
    return target.model_dump(), list(checked)


def _overlap(value: object) -> Any:
    if value not in OVERLAP_POLICIES:
        raise InvalidInputError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got "
                                f"{value!r}")
    return value


def _catchup(value: Duration) -> float:
    seconds = parse_duration(value, what="catchup_window")
    if seconds < 1 or math.isinf(seconds):
        raise InvalidInputError(f"catchup_window must be at least 1 second, got {value!r}")
    return seconds


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be True or False, got {value!r}")
    return value


def _note(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"note must be a string, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- sync facade


class ScheduleClient(Facade, twin_of=AsyncScheduleClient):
    """The sync twin of :class:`AsyncScheduleClient`: same names, blocking."""


class ScheduleHandle(Facade, twin_of=AsyncScheduleHandle):
    """The sync twin of :class:`AsyncScheduleHandle`: same names, blocking."""
