"""Exports of a run, built from its stored timeline (storage is the truth), in the two
shapes of HotMesh's Durable handle.

- :class:`WorkflowExecution` (``handle.export_execution()``): the run as numbered,
  typed events in the order they happened, each completion pointing back in its
  ``attributes`` at what it completes (``scheduled_event_id``, ``initiated_event_id``,
  ``started_event_id``, ``wait_event_id``), every failed attempt of a retried activity
  included, and a summary; ``verbose`` nests child executions under ``children``.
- :class:`DurableJobExport` (``handle.export()``): the sections ``data`` (inputs, search
  and enrich fields), ``state`` (done, response, error, times), ``status`` (the
  semaphore: open obligations while running, 0 completed, negative otherwise),
  ``timeline`` (one marker per durable call, ``-proxy-3-``) and ``transitions`` (one
  per activity: scheduled, started, completed or failed, attempts).

Invariants:
- Exports only read: they never modify storage (a torn last batch is left out, not
  set aside), so exporting a running workflow cannot disturb it.
- Exports never unpickle a payload unless asked (``unpickling(True)``): a pickled value
  shows as its type and size, read from the pickle's opcodes without running them.
- ``omit_results`` / ``values=False`` leave no payload in the export (inputs, results,
  signal data, field values): keys, types and times stay.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import pickletools
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Literal

from pydantic import BaseModel

from . import _serde
from .messages import PendingWork, RunOutcome, RunStatus
from .storage.runs import RunStore
from .timeline import Batch, Failure, WorkflowStarted, fields_of, home_of

SYSTEM_ACTIVITY_PREFIX = "rayline."
SECTIONS = ("data", "state", "status", "timeline", "transitions")
"""The sections of a ``DurableJobExport``, for ``allow`` and ``block``."""

Category = Literal["workflow", "activity", "child_workflow", "timer", "signal", "update",
                   "marker"]


class ExecutionEvent(BaseModel):
    """One event of a run: ``event_id`` counts from 1, ``event_time`` is ISO 8601 UTC,
    ``duration_ms`` is the time since the event it completes, and ``is_system`` marks
    rayline's own bookkeeping (a move between hosts, a patch marker, an expired signal,
    ``rayline.*`` activities)."""

    event_id: int
    event_type: str
    category: Category
    event_time: str
    duration_ms: float | None = None
    is_system: bool = False
    attributes: dict[str, Any] = {}
    activation: int | None = None
    """The batch (activation) of the run's timeline that recorded it (``reset(to=)``)."""
    from_command: bool = False
    """Recorded as what the workflow asked for (a command), not as what it was told."""


class ExecutionSummary(BaseModel):
    total_events: int
    activities: dict[str, int]
    """``total`` scheduled, ``completed``, ``failed`` (for good), ``retried`` attempts,
    ``system`` and ``user``."""
    child_workflows: dict[str, int]
    timers: int
    signals: int


class WorkflowExecution(BaseModel):
    """``handle.export_execution()``: a run as Temporal-style events (see the module)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    """``running``, or how the run closed (``completed``, ``failed``, ``cancelled``,
    ``terminated``, ``continued``)."""
    start_time: str
    close_time: str | None = None
    duration_ms: float | None = None
    result: Any = None
    events: list[ExecutionEvent]
    summary: ExecutionSummary
    children: list[WorkflowExecution] = []
    """With ``mode="verbose"``: the executions of the run's children, nested."""
    parent_workflow_id: str | None = None
    version: str | None = None
    """The code version the run runs (the last one an upgrade moved it to)."""


class ErrorInfo(BaseModel):
    type: str
    message: str
    stack: str = ""
    code: int = 500


class JobState(BaseModel):
    done: bool
    status: str
    run_id: str
    response: Any = None
    error: ErrorInfo | None = None
    created: str
    updated: str
    closed: str | None = None
    version: str | None = None


class TimelineMarker(BaseModel):
    """One durable call: ``key`` as HotMesh names it (``-proxy-3-``: activity,
    ``-child-``, ``-sleep-``, ``-wait-``, ``-signal-``, ``-search-``), ``index`` its
    call number, ``value`` what it returned (or the signal's data, the fields written),
    ``error`` how it failed; ``created`` when it was made, ``updated`` when it ended."""

    key: str
    index: int
    value: Any = None
    error: ErrorInfo | None = None
    created: str
    updated: str | None = None


class Transition(BaseModel):
    """One activity call: when it was scheduled, when its last attempt started, when it
    completed or failed, and which attempt that was (``retries`` lists the earlier ones)."""

    activity: str
    key: str
    index: int
    scheduled: str
    started: str | None = None
    completed: str | None = None
    failed: str | None = None
    attempt: int | None = None
    retries: list[dict[str, Any]] = []


class DurableJobExport(BaseModel):
    """``handle.export()``: HotMesh's five sections (``None`` for one not asked for)."""

    data: dict[str, Any] | None = None
    """``arguments`` (the workflow's inputs), ``search`` and ``enrich`` fields."""
    state: JobState | None = None
    status: int | None = None
    timeline: list[TimelineMarker] | None = None
    transitions: list[Transition] | None = None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _error(failure: Failure) -> ErrorInfo:
    return ErrorInfo(type=failure.type, message=failure.message, stack=failure.stack,
                     code=failure.code)


_KEYS = {"schedule_activity": "proxy", "start_timer": "sleep", "start_wait": "wait",
         "start_child": "child", "signal_external": "signal", "cancel_external": "signal",
         "upsert_fields": "search"}


def _key(kind: str, seq: int) -> str:
    return f"-{_KEYS[kind]}-{seq}-"


class _Builder:
    """Walks a run's batches once, turning commands and events into export events."""

    def __init__(self, started: WorkflowStarted, omit_results: bool, enrich_inputs: bool) -> None:
        self.started = started
        self.omit = omit_results
        self.enrich = enrich_inputs
        self.events: list[ExecutionEvent] = []
        self.times: list[float] = []  # each event's time, by event id - 1
        self.opened: dict[tuple[str, int], ExecutionEvent] = {}
        self.inputs: dict[int, Any] = {}  # call number -> its inputs (enrich_inputs)
        self.names: dict[int, str] = {}  # activity call number -> activity name
        self.waits: dict[str, list[ExecutionEvent]] = {}  # signal -> open waits, oldest first
        self.unclaimed: dict[str, list[ExecutionEvent]] = {}  # signals before their wait
        self.updates: dict[str, ExecutionEvent] = {}  # update id -> its acceptance
        self.activation: int | None = None  # the batch being walked
        self.from_command = False
        self.count = {"activities": 0, "completed": 0, "failed": 0, "retried": 0,
                      "system": 0, "children": 0, "children_completed": 0,
                      "children_failed": 0, "timers": 0, "signals": 0}

    def value(self, payload: _serde.Payload | None) -> Any:
        return None if self.omit or payload is None else _decode_quietly(payload)

    def add(self, event_type: str, category: Category, ts: float, *,
            since: ExecutionEvent | None = None, system: bool = False,
            opens: tuple[str, int] | None = None, **attributes: Any) -> ExecutionEvent:
        event = ExecutionEvent(
            event_id=len(self.events) + 1, event_type=event_type, category=category,
            event_time=_iso(ts), is_system=system, activation=self.activation,
            from_command=self.from_command,
            duration_ms=round((ts - self.times[since.event_id - 1]) * 1000, 3)
            if since is not None else None,
            attributes={"kind": event_type, **attributes})
        self.times.append(ts)
        if opens is not None:
            self.opened[opens] = event
        self.events.append(event)
        return event

    def batch(self, batch: Batch) -> None:
        ts = batch.time
        self.activation, self.from_command = batch.seq, False
        for event in batch.events:
            self._event(event, ts)
        self.from_command = True
        for command in batch.commands:
            self._command(command, ts)
        self.from_command = False
        if batch.terminated is not None:
            self.add("workflow_execution_terminated", "workflow", ts,
                     reason=batch.terminated.reason)
        if batch.version is not None:
            self.add("workflow_execution_moved", "workflow", ts, system=True,
                     host=batch.owner, version=batch.version)
        if batch.reset is not None:
            self.add("workflow_execution_reset", "workflow", ts, reason=batch.reset.reason,
                     new_run_id=batch.reset.run_id, kept_activations=batch.reset.kept)

    def _event(self, ev: Any, ts: float) -> None:
        kind = ev.type
        if kind in ("activity_completed", "activity_failed"):
            self._activity_outcome(ev, ts)
        elif kind == "timer_fired":
            timer = self.opened.get(("start_timer", ev.seq))
            wait = self.opened.get(("start_wait", ev.seq))
            if wait is not None:  # a wait that timed out: no signal is for it any more
                _drop(self.waits.get(wait.attributes["signal_name"], []), wait)
            self.add("timer_fired", "timer", ts, since=timer,
                     started_event_id=timer.event_id if timer else None,
                     timeline_key=_key("start_timer", ev.seq), execution_index=ev.seq)
        elif kind == "signal_received":
            self.count["signals"] += 1
            waiting = self.waits.get(ev.signal_id) or []
            wait = waiting.pop(0) if waiting else None
            event = self.add("workflow_execution_signaled", "signal", ts, since=wait,
                             signal_name=ev.signal_id, input=self.value(ev.data),
                             wait_event_id=wait.event_id if wait else None)
            if wait is None:  # before the workflow waited: its wait will point back here
                self.unclaimed.setdefault(ev.signal_id, []).append(event)
        elif kind == "child_started":
            child = self.opened.get(("start_child", ev.seq))
            if child is not None:
                child.attributes["child_run_id"] = ev.run_id
        elif kind in ("child_completed", "child_failed"):
            child = self.opened.get(("start_child", ev.seq))
            common: dict[str, Any] = {
                "since": child, "initiated_event_id": child.event_id if child else None,
                "child_workflow_id": child.attributes["child_workflow_id"] if child else None,
                "timeline_key": _key("start_child", ev.seq), "execution_index": ev.seq}
            if kind == "child_completed":
                self.count["children_completed"] += 1
                self.add("child_workflow_execution_completed", "child_workflow", ts,
                         result=self.value(ev.result), **common)
            else:
                self.count["children_failed"] += 1
                self.add("child_workflow_execution_failed", "child_workflow", ts,
                         failure=_error(ev.failure).model_dump(), **common)
        elif kind == "external_resolved":
            sent = self.opened.get(("signal_external", ev.seq)) or \
                self.opened.get(("cancel_external", ev.seq))
            self.add("external_workflow_execution_failed" if ev.failure else
                     "external_workflow_execution_signaled", "signal", ts, since=sent,
                     initiated_event_id=sent.event_id if sent else None,
                     failure=_error(ev.failure).model_dump() if ev.failure else None)
        elif kind == "cancel_requested":
            self.add("workflow_execution_cancel_requested", "workflow", ts, reason=ev.reason)
        elif kind == "update_accepted":
            self.updates[ev.update_id] = self.add(
                "workflow_execution_update_accepted", "update", ts, update_id=ev.update_id,
                update_name=ev.name,
                input=None if self.omit else [_decode_quietly(a) for a in ev.args])

    def _activity_outcome(self, ev: Any, ts: float) -> None:
        scheduled = self.opened.get(("schedule_activity", ev.seq))
        name = self.names.get(ev.seq, "")
        common: dict[str, Any] = {
            "activity_type": name, "timeline_key": _key("schedule_activity", ev.seq),
            "execution_index": ev.seq,
            "scheduled_event_id": scheduled.event_id if scheduled else None,
            **({"input": self.inputs.get(ev.seq)} if self.enrich else {})}
        for retry in ev.retries:  # each failed attempt before the outcome, in order
            self.count["retried"] += 1
            event = self.add("activity_task_failed", "activity", retry.ended, attempt=retry.attempt,
                             failure={"type": retry.type, "message": retry.message},
                             retrying=True, started_time=_iso(retry.started), **common)
            event.duration_ms = round((retry.ended - retry.started) * 1000, 3)
        started: dict[str, Any] = {"started_time": _iso(ev.started)} \
            if ev.started is not None else {}
        if ev.type == "activity_completed":
            self.count["completed"] += 1
            self.add("activity_task_completed", "activity", ts, since=scheduled,
                     system=name.startswith(SYSTEM_ACTIVITY_PREFIX), attempt=ev.attempt,
                     result=self.value(ev.result), **started, **common)
        else:
            self.count["failed"] += 1
            self.add("activity_task_failed", "activity", ts, since=scheduled,
                     system=name.startswith(SYSTEM_ACTIVITY_PREFIX),
                     attempt=ev.failure.attempt, failure=_error(ev.failure).model_dump(),
                     retrying=False, **started, **common)

    def _command(self, command: Any, ts: float) -> None:
        kind = command.type
        if kind == "schedule_activity":
            self.count["activities"] += 1
            system = command.activity.startswith(SYSTEM_ACTIVITY_PREFIX)
            self.count["system"] += system
            self.names[command.seq] = command.activity
            if self.enrich:
                self.inputs[command.seq] = None if self.omit else \
                    [_decode_quietly(a) for a in command.args]
            extra: dict[str, Any] = {"input": self.inputs[command.seq]} if self.enrich else {}
            self.add("activity_task_scheduled", "activity", ts, system=system,
                     opens=(kind, command.seq), activity_type=command.activity,
                     timeline_key=_key(kind, command.seq), execution_index=command.seq,
                     **extra)
        elif kind == "cancel_activity":
            scheduled = self.opened.get(("schedule_activity", command.seq))
            self.add("activity_task_cancel_requested", "activity", ts,
                     scheduled_event_id=scheduled.event_id if scheduled else None,
                     timeline_key=_key("schedule_activity", command.seq),
                     execution_index=command.seq)
        elif kind == "start_timer":
            self.count["timers"] += 1
            self.add("timer_started", "timer", ts, opens=(kind, command.seq),
                     duration_ms=round(command.duration * 1000, 3),
                     timeline_key=_key(kind, command.seq), execution_index=command.seq)
        elif kind == "cancel_timer":
            timer = self.opened.get(("start_timer", command.seq))
            self.add("timer_canceled", "timer", ts, since=timer,
                     started_event_id=timer.event_id if timer else None,
                     timeline_key=_key("start_timer", command.seq),
                     execution_index=command.seq)
        elif kind == "start_wait":
            early = self.unclaimed.get(command.signal_id) or []
            signal = early.pop(0) if early else None
            wait = self.add("signal_wait_started", "signal", ts, opens=(kind, command.seq),
                            signal_name=command.signal_id, timeout_s=command.timeout,
                            signal_event_id=signal.event_id if signal else None,
                            timeline_key=_key(kind, command.seq), execution_index=command.seq)
            if signal is not None:
                signal.attributes["wait_event_id"] = wait.event_id
            else:
                self.waits.setdefault(command.signal_id, []).append(wait)
        elif kind == "start_child":
            self.count["children"] += 1
            inputs: dict[str, Any] = {"input": None if self.omit else [
                _decode_quietly(a) for a in command.args]} if self.enrich else {}
            self.add("child_workflow_execution_started", "child_workflow", ts,
                     opens=(kind, command.seq), child_workflow_id=command.workflow_id,
                     workflow_type=command.workflow_name, awaited=command.wait,
                     timeline_key=_key(kind, command.seq), execution_index=command.seq,
                     **inputs)
        elif kind == "signal_external":
            self.add("signal_external_workflow_execution_initiated", "signal", ts,
                     opens=(kind, command.seq), workflow_id=command.workflow_id,
                     signal_name=command.signal_id, input=self.value(command.data),
                     timeline_key=_key(kind, command.seq), execution_index=command.seq)
        elif kind == "cancel_external":
            self.add("request_cancel_external_workflow_execution_initiated", "workflow", ts,
                     opens=(kind, command.seq), workflow_id=command.workflow_id,
                     timeline_key=_key(kind, command.seq), execution_index=command.seq)
        elif kind == "cancel_child":
            self.add("request_cancel_child_workflow_execution", "child_workflow", ts,
                     child_workflow_id=command.workflow_id, execution_index=command.seq)
        elif kind == "upsert_fields":
            self.add("upsert_workflow_search_attributes" if command.indexed else
                     "upsert_workflow_enrich_fields", "workflow", ts,
                     fields=None if self.omit else dict(command.fields),
                     keys=sorted(command.fields))
        elif kind == "record_patch":
            self.add("marker_recorded", "marker", ts, system=True, patch_id=command.patch_id)
        elif kind == "drop_signal":
            self.add("signal_expired", "signal", ts, system=True,
                     signal_name=command.signal_id)
        elif kind == "complete_update":
            accepted = self.updates.get(command.update_id)
            outcome: dict[str, Any] = {"failure": _error(command.failure).model_dump()} \
                if command.failure is not None else {"result": self.value(command.result)}
            self.add("workflow_execution_update_completed", "update", ts, since=accepted,
                     update_id=command.update_id,
                     accepted_event_id=accepted.event_id if accepted else None, **outcome)
        elif kind == "complete_workflow":
            self.add("workflow_execution_completed", "workflow", ts,
                     result=self.value(command.result))
        elif kind == "fail_workflow":
            cancelled = command.failure.kind == "cancelled"
            retry = {"retry_in_s": command.retry_in} if command.retry_in is not None else {}
            self.add("workflow_execution_cancelled" if cancelled else "workflow_execution_failed",
                     "workflow", ts, failure=_error(command.failure).model_dump(), **retry)
        elif kind == "continue_as_new":
            self.add("workflow_execution_continued_as_new", "workflow", ts,
                     input=None if self.omit else [_decode_quietly(a) for a in command.args],
                     workflow_type=command.workflow_name)


_UNPICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("rayline_unpickle",
                                                                  default=False)


def _decode_quietly(payload: _serde.Payload) -> Any:
    """A payload's value for an export. A pickled value is shown as its type and size,
    never unpickled (that would run code from storage), unless the export asked for it.
    A large value kept in storage is shown as its reference, never read."""
    if "r" in payload:
        ref = payload["r"]
        return {"stored": ref["type"], "bytes": ref["size"], "digest": ref["digest"],
                **({"object_ref": True} if ref.get("obj") else {})}
    if "p" in payload and not _UNPICKLE.get():
        return pickled_summary(payload["p"])
    try:
        value = _serde.decode(payload)
    except Exception:
        return {"undecodable": True}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value if _serde._is_json(value) else repr(value)


@contextlib.contextmanager
def unpickling(allowed: bool) -> Iterator[None]:
    """Within the block, exports unpickle pickled payloads only when ``allowed``."""
    token = _UNPICKLE.set(allowed)
    try:
        yield
    finally:
        _UNPICKLE.reset(token)


def pickled_summary(text: str) -> dict[str, Any]:
    """``{"pickled": "<module.Type>", "bytes": n}``, read from the pickle's opcodes
    without running any of them."""
    try:
        data = base64.b64decode(text)
    except (ValueError, TypeError):
        return {"undecodable": True}
    kind = "unknown"
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                kind = arg.replace(" ", ".")
                break
            if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                kind = f"{strings[-2]}.{strings[-1]}"
                break
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or odd pickle: its size still says something
        pass
    return {"pickled": kind, "bytes": len(data)}


def build_execution(started: WorkflowStarted, batches: list[Batch], *, mode: str = "sparse",
                    exclude_system: bool = False, omit_results: bool = False,
                    enrich_inputs: bool = False,
                    load_child: Callable[[str], WorkflowExecution | None] | None = None,
                    ) -> WorkflowExecution:
    """The run as a ``WorkflowExecution`` (see the module docstring); with
    ``mode="verbose"``, ``load_child(workflow_id)`` gives each child's execution."""
    builder = _Builder(started, omit_results, enrich_inputs)
    reset: dict[str, Any] = {} if started.reset_from is None else {
        "reset_from_workflow_id": started.reset_from.workflow_id,
        "reset_from_run_id": started.reset_from.run_id,
        "kept_activations": started.reset_from.kept}
    builder.add("workflow_execution_started", "workflow", started.time,
                workflow_type=started.workflow_name, task_queue=started.task_queue,
                input=None if omit_results else [_decode_quietly(a) for a in started.args],
                parent_workflow_id=started.parent.workflow_id if started.parent else None,
                **reset)
    for batch in batches:
        builder.batch(batch)
    events = [e for e in builder.events if not (exclude_system and e.is_system)]
    children = []
    if mode == "verbose" and load_child is not None:
        for event in events:
            if event.event_type == "child_workflow_execution_started":
                child = load_child(event.attributes["child_workflow_id"])
                if child is not None:
                    children.append(child)
    outcome = RunOutcome.of_run(batches)
    closed = batches[-1].time if outcome else None
    count = builder.count
    return WorkflowExecution(
        workflow_id=started.workflow_id, run_id=started.run_id,
        workflow_type=started.workflow_name, task_queue=started.task_queue,
        status=outcome.status.value if outcome else RunStatus.RUNNING.value,
        start_time=_iso(started.time), close_time=_iso(closed) if closed else None,
        duration_ms=round((closed - started.time) * 1000, 3) if closed else None,
        result=builder.value(outcome.result) if outcome else None, events=events,
        summary=ExecutionSummary(
            total_events=len(events),
            activities={"total": count["activities"], "completed": count["completed"],
                        "failed": count["failed"], "retried": count["retried"],
                        "system": count["system"],
                        "user": count["activities"] - count["system"]},
            child_workflows={"total": count["children"],
                             "completed": count["children_completed"],
                             "failed": count["children_failed"]},
            timers=count["timers"], signals=count["signals"]),
        children=children,
        parent_workflow_id=started.parent.workflow_id if started.parent else None,
        version=home_of(started, batches)[1],
    )


def build_export(started: WorkflowStarted, batches: list[Batch], *,
                 allow: Iterable[str] | None = None, block: Iterable[str] | None = None,
                 values: bool = True) -> DurableJobExport:
    """The run as a ``DurableJobExport`` with the sections asked for (``allow``, less
    ``block``); ``values=False`` leaves every payload out."""
    sections = set(allow or SECTIONS) - set(block or ())
    outcome = RunOutcome.of_run(batches)
    export = DurableJobExport()
    if "data" in sections:
        search, enrich = fields_of(started, batches)
        export.data = {"arguments": [_decode_quietly(a) for a in started.args]
                       if values else None,
                       "search": search if values else dict.fromkeys(search),
                       "enrich": enrich if values else dict.fromkeys(enrich)}
    retrying = outcome is not None and outcome.retry_at is not None
    if "status" in sections:
        export.status = 1 if retrying else outcome.code if outcome else \
            max(1, _open_calls(batches))
    if "state" in sections:
        last = batches[-1].time if batches else started.time
        failure = outcome.failure if outcome else None
        export.state = JobState(
            done=outcome is not None and not retrying,
            status="retrying" if retrying else outcome.status.value if outcome else "running",
            run_id=started.run_id,
            response=_decode_quietly(outcome.result)
            if values and outcome and outcome.result is not None else None,
            error=_error(failure) if failure is not None else None,
            created=_iso(started.time), updated=_iso(last),
            closed=_iso(last) if outcome else None, version=home_of(started, batches)[1])
    if "timeline" in sections or "transitions" in sections:
        markers, transitions = _calls(batches, values)
        if "timeline" in sections:
            export.timeline = markers
        if "transitions" in sections:
            export.transitions = transitions
    return export


def add_live(execution: WorkflowExecution, pending: list[PendingWork], now: float) -> None:
    """Adds what a running run's host knows and storage does not yet: an
    ``activity_task_started`` event for each activity attempt running now (its attempt
    number and last heartbeat), pointing back at the activity's scheduled event."""
    scheduled = {e.attributes.get("execution_index"): e for e in execution.events
                 if e.event_type == "activity_task_scheduled"}
    for work in pending:
        if work.kind != "activity" or work.attempt is None:
            continue
        origin = scheduled.get(work.seq)
        execution.events.append(ExecutionEvent(
            event_id=len(execution.events) + 1, event_type="activity_task_started",
            category="activity", event_time=_iso(now - (work.heartbeat_age or 0.0)),
            attributes={"kind": "activity_task_started", "attempt": work.attempt,
                        "heartbeat_details": work.heartbeat_details, "live": True,
                        "scheduled_event_id": origin.event_id if origin else None,
                        "activity_type": origin.attributes["activity_type"] if origin
                        else None, "execution_index": work.seq}))
    execution.summary.total_events = len(execution.events)


def _drop(items: list[Any], item: Any) -> None:
    if item in items:
        items.remove(item)


def _calls(batches: list[Batch], values: bool) -> tuple[list[TimelineMarker], list[Transition]]:
    """One marker per durable call, in call order, and one transition per activity."""
    markers: dict[int, TimelineMarker] = {}
    transitions: dict[int, Transition] = {}
    waits: dict[str, list[TimelineMarker]] = {}
    early: dict[str, list[tuple[Any, str]]] = {}  # signals before their wait
    searches = 0
    for batch in batches:
        when = _iso(batch.time)
        events: list[Any] = list(batch.events)  # each kind read by its type
        for event in events:
            kind = event.type
            if kind == "signal_received":
                data = _decode_quietly(event.data) if values else None
                waiting = waits.get(event.signal_id) or []
                if waiting:
                    answered = waiting.pop(0)
                    answered.value, answered.updated = data, when
                else:
                    early.setdefault(event.signal_id, []).append((data, when))
                continue
            marker = markers.get(getattr(event, "seq", -1))
            if marker is None or marker.updated is not None or kind == "child_started":
                continue
            marker.updated = when
            for waiting in waits.values():  # a wait that timed out
                _drop(waiting, marker)
            if kind in ("activity_completed", "child_completed"):
                marker.value = _decode_quietly(event.result) if values else None
            elif kind in ("activity_failed", "child_failed") or \
                    (kind == "external_resolved" and event.failure is not None):
                marker.error = _error(event.failure)
            transition = transitions.get(event.seq)
            if transition is not None:
                transition.started = _iso(event.started) if event.started else None
                transition.retries = [r.model_dump() for r in event.retries]
                if kind == "activity_completed":
                    transition.completed, transition.attempt = when, event.attempt
                else:
                    transition.failed, transition.attempt = when, event.failure.attempt
        commands: list[Any] = list(batch.commands)
        for command in commands:
            kind = command.type
            if kind == "upsert_fields":
                searches += 1
                index = command.seq or searches
                markers[-index] = TimelineMarker(
                    key=f"-search-{index}-", index=index, created=when, updated=when,
                    value=dict(command.fields) if values else None)
            elif kind in ("cancel_timer", "cancel_activity"):
                cancelled = markers.get(command.seq)
                if cancelled is not None and cancelled.updated is None:
                    cancelled.updated = when
            elif kind in _KEYS and command.seq not in markers:
                marker = TimelineMarker(key=_key(kind, command.seq), index=command.seq,
                                        created=when)
                markers[command.seq] = marker
                if kind == "schedule_activity":
                    transitions[command.seq] = Transition(
                        activity=command.activity, key=marker.key, index=command.seq,
                        scheduled=when)
                elif kind == "start_wait":
                    got = early.get(command.signal_id) or []
                    if got:
                        data, marker.updated = got.pop(0)
                        marker.value = data
                    else:
                        waits.setdefault(command.signal_id, []).append(marker)
    ordered = sorted(markers.values(), key=lambda m: (m.created, abs(m.index)))
    return ordered, [transitions[seq] for seq in sorted(transitions)]


def _open_calls(batches: list[Batch]) -> int:
    """The durable calls a running run waits on (HotMesh's semaphore): activities,
    timers, waits and awaited children made and not yet answered."""
    opened: set[int] = set()
    waits: dict[str, list[int]] = {}
    early: dict[str, int] = {}
    for batch in batches:
        events: list[Any] = list(batch.events)
        commands: list[Any] = list(batch.commands)
        for event in events:
            if event.type == "signal_received":
                waiting = waits.get(event.signal_id)
                if waiting:
                    opened.discard(waiting.pop(0))
                else:
                    early[event.signal_id] = early.get(event.signal_id, 0) + 1
            elif event.type != "child_started":
                seq = getattr(event, "seq", -1)
                opened.discard(seq)
                for waiting in waits.values():  # a wait that timed out
                    _drop(waiting, seq)
        for command in commands:
            kind = command.type
            if kind in ("schedule_activity", "start_timer", "signal_external",
                        "cancel_external") or (kind == "start_child" and command.wait):
                opened.add(command.seq)
            elif kind == "start_wait":
                if early.get(command.signal_id):
                    early[command.signal_id] -= 1
                else:
                    opened.add(command.seq)
                    waits.setdefault(command.signal_id, []).append(command.seq)
            elif kind in ("cancel_timer", "cancel_activity"):
                opened.discard(command.seq)
    return len(opened)


def load_run(runs: RunStore, workflow_id: str, run_id: str | None) -> tuple[WorkflowStarted,
                                                                               list[Batch]]:
    """The run record and batches of ``run_id`` (default the latest run)."""
    for epoch in sorted(runs.epochs(workflow_id), reverse=True):
        started, batches = runs.load(workflow_id, epoch)
        if run_id is None or started.run_id == run_id:
            return started, batches
    return runs.read_run(workflow_id), []

