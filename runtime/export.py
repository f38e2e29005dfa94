"""Exports of a run, built from its stored timeline (storage is the truth).

- :class:`WorkflowExecution` (``handle.export_execution()``): typed, chronological events
  with back-references from each completion to what it completes, and a summary.
- :class:`DurableJobExport` (``handle.export()``): HotMesh's sections ``data``, ``state``,
  ``status``, ``timeline`` (one entry per marker key) and ``transitions`` (one per batch).

Invariants:
- Exports only read: they never modify storage (a torn last batch is left out, not
  set aside), so exporting a running workflow cannot disturb it.
- Exports never unpickle a payload unless asked (``unpickling(True)``): a pickled value
  shows as its type and size, read from the pickle's opcodes without running them.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import pickletools
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, Field

from . import _serde
from .messages import RunOutcome
from .storage.runs import RunStore
from .timeline import Batch, WorkflowStarted, fields_of, home_of

SYSTEM_ACTIVITY_PREFIX = "rayline."


class ExecutionEvent(BaseModel):
    event_id: int
    event_type: str
    category: str
    timestamp: str
    is_system: bool = False
    duration_ms: float | None = None
    event_key: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""
    scheduled_event_id: int | None = None
    children: WorkflowExecution | None = None


class Summary(BaseModel):
    total_events: int
    activities: dict[str, int]
    child_workflows: dict[str, int]
    timers: int
    signals: int


class WorkflowExecution(BaseModel):
    workflow_id: str
    run_id: str
    workflow_name: str
    task_queue: str
    status: str
    start_time: str
    close_time: str | None
    events: list[ExecutionEvent]
    summary: Summary
    version: str | None = None
    """The code version the run runs (the last one an upgrade moved it to)."""


class DurableJobExport(BaseModel):
    data: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    status: int | None = None
    timeline: list[dict[str, Any]] | None = None
    transitions: list[dict[str, Any]] | None = None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


_MARKERS = {"schedule_activity": "proxy", "start_timer": "sleep", "start_wait": "wait",
            "start_child": "child", "signal_external": "signal", "upsert_fields": "search"}


class _Builder:
    """Walks batches once, turning commands and events into export events."""

    def __init__(self, started: WorkflowStarted, omit_results: bool, enrich_inputs: bool) -> None:
        self.started = started
        self.omit_results = omit_results
        self.enrich_inputs = enrich_inputs
        self.events: list[ExecutionEvent] = []
        self.opened: dict[tuple[str, int], ExecutionEvent] = {}
        self.activities = [0, 0, 0]  # scheduled, completed, failed
        self.children = [0, 0, 0]  # started, completed, failed
        self.timers = 0
        self.signals = 0

    def add(self, event_type: str, category: str, ts: float, key: tuple[str, int] | None = None,
            opens: bool = False, **attributes: Any) -> ExecutionEvent:
        ref = self.opened.get(key) if key and not opens else None
        event = ExecutionEvent(
            event_id=len(self.events) + 1, event_type=event_type, category=category,
            timestamp=_iso(ts), attributes=attributes,
            event_key=f"-{_MARKERS.get(key[0], key[0])}-{key[1]}-" if key else None,
            scheduled_event_id=ref.event_id if ref else None,
            duration_ms=round((ts - datetime.fromisoformat(ref.timestamp).timestamp()) * 1000, 3)
            if ref else None,
            detail=" ".join(f"{k}={v}" for k, v in attributes.items() if v is not None)[:120],
        )
        if opens and key:
            self.opened[key] = event
        self.events.append(event)
        return event

    def value(self, payload: _serde.Payload) -> Any:
        return None if self.omit_results else _decode_quietly(payload)

    def batch(self, batch: Batch) -> None:
        ts = batch.time
        for ev in batch.events:
            self._event(ev, ts)
        for command in batch.commands:
            self._command(command, ts)
        if batch.terminated is not None:
            self.add("workflow_execution_terminated", "workflow", ts,
                     reason=batch.terminated.reason)
        if batch.version is not None:
            self.add("workflow_execution_moved", "workflow", ts, host=batch.owner,
                     version=batch.version)

    def _event(self, ev: Any, ts: float) -> None:
        kind = ev.type
        if kind == "activity_completed":
            self.activities[1] += 1
            self.add("activity_task_completed", "activity", ts, ("schedule_activity", ev.seq),
                     result=self.value(ev.result), attempt=ev.attempt)
        elif kind == "activity_failed":
            self.activities[2] += 1
            self.add("activity_task_failed", "activity", ts, ("schedule_activity", ev.seq),
                     error=ev.failure.message, type=ev.failure.type, attempt=ev.failure.attempt)
        elif kind == "timer_fired":
            self.add("timer_fired", "timer", ts, ("start_timer", ev.seq))
        elif kind == "signal_received":
            self.signals += 1
            self.add("workflow_execution_signaled", "signal", ts, signal_id=ev.signal_id,
                     data=self.value(ev.data))
        elif kind == "child_completed":
            self.children[1] += 1
            self.add("child_workflow_execution_completed", "child_workflow", ts,
                     ("start_child", ev.seq), result=self.value(ev.result))
        elif kind == "child_failed":
            self.children[2] += 1
            self.add("child_workflow_execution_failed", "child_workflow", ts,
                     ("start_child", ev.seq), error=ev.failure.message)
        elif kind == "cancel_requested":
            self.add("workflow_execution_cancel_requested", "workflow", ts, reason=ev.reason)

    def _command(self, command: Any, ts: float) -> None:
        kind = command.type
        if kind == "schedule_activity":
            self.activities[0] += 1
            extra = {"input": [_decode_quietly(a) for a in command.args]} \
                if self.enrich_inputs else {}
            event = self.add("activity_task_scheduled", "activity", ts,
                             ("schedule_activity", command.seq), opens=True,
                             activity_type=command.activity, **extra)
            event.is_system = command.activity.startswith(SYSTEM_ACTIVITY_PREFIX)
        elif kind == "start_timer":
            self.timers += 1
            self.add("timer_started", "timer", ts, ("start_timer", command.seq), opens=True,
                     duration_s=command.duration)
        elif kind == "start_wait":
            self.add("signal_wait_started", "signal", ts, ("start_wait", command.seq),
                     opens=True, signal_id=command.signal_id)
        elif kind == "start_child":
            self.children[0] += 1
            self.add("child_workflow_execution_started", "child_workflow", ts,
                     ("start_child", command.seq), opens=True,
                     child_workflow_id=command.workflow_id, workflow_type=command.workflow_name)
        elif kind == "complete_workflow":
            self.add("workflow_execution_completed", "workflow", ts,
                     result=self.value(command.result))
        elif kind == "fail_workflow":
            cancelled = command.failure.kind == "cancelled"
            self.add("workflow_execution_cancelled" if cancelled else "workflow_execution_failed",
                     "workflow", ts, error=command.failure.message, type=command.failure.type)
        elif kind == "continue_as_new":
            self.add("workflow_execution_continued_as_new", "workflow", ts)


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
    """The run as a ``WorkflowExecution`` (see the module docstring)."""
    builder = _Builder(started, omit_results, enrich_inputs)
    builder.add("workflow_execution_started", "workflow", started.time,
                workflow_type=started.workflow_name, task_queue=started.task_queue,
                input=None if omit_results else [_decode_quietly(a) for a in started.args])
    for batch in batches:
        builder.batch(batch)
    events = [e for e in builder.events if not (exclude_system and e.is_system)]
    if mode == "verbose" and load_child is not None:
        for event in events:
            if event.event_type == "child_workflow_execution_started":
                event.children = load_child(event.attributes["child_workflow_id"])
    outcome = RunOutcome.of_run(batches)
    acts, kids = builder.activities, builder.children
    system = sum(1 for e in builder.events if e.is_system and
                 e.event_type == "activity_task_scheduled")
    return WorkflowExecution(
        workflow_id=started.workflow_id, run_id=started.run_id,
        workflow_name=started.workflow_name, task_queue=started.task_queue,
        status=outcome.status.value if outcome else "running", start_time=_iso(started.time),
        close_time=_iso(batches[-1].time) if outcome else None, events=events,
        summary=Summary(
            total_events=len(events),
            activities={"total": acts[0], "completed": acts[1], "failed": acts[2],
                        "system": system, "user": acts[0] - system},
            child_workflows={"total": kids[0], "completed": kids[1], "failed": kids[2]},
            timers=builder.timers, signals=builder.signals),
        version=home_of(started, batches)[1],
    )


def build_export(started: WorkflowStarted, batches: list[Batch], *,
                 allow: Iterable[str] | None = None, block: Iterable[str] | None = None,
                 values: bool = True) -> DurableJobExport:
    """The run as a ``DurableJobExport`` with the sections asked for."""
    sections = set(allow or ("data", "state", "status", "timeline", "transitions"))
    sections -= set(block or ())
    outcome = RunOutcome.of_run(batches)
    search, enrich = fields_of(started, batches)
    timeline: dict[int, dict[str, Any]] = {}  # by sequence number, in call order
    for batch in batches:
        for command in batch.commands:
            seq = getattr(command, "seq", None)
            if seq is not None and command.type in _MARKERS and seq not in timeline:
                timeline[seq] = {"key": f"-{_MARKERS[command.type]}-{seq}-",
                                 "created": _iso(batch.time), "updated": None, "value": None}
        for event in batch.events:
            entry = timeline.get(getattr(event, "seq", -1))
            if entry is not None and entry["updated"] is None:
                entry["updated"] = _iso(batch.time)
                payload = getattr(event, "result", None)
                if values and payload is not None:
                    entry["value"] = _decode_quietly(payload)
    export = DurableJobExport()
    if "data" in sections:
        export.data = {**search, **enrich}
    if "status" in sections:
        export.status = outcome.code if outcome else 1
    if "state" in sections:
        export.state = {"done": outcome is not None,
                        "status": outcome.status.value if outcome else "running",
                        "version": home_of(started, batches)[1],
                        "response": _decode_quietly(outcome.result)
                        if outcome and outcome.result is not None and values else None}
    if "timeline" in sections:
        export.timeline = list(timeline.values())
    if "transitions" in sections:
        export.transitions = [{"seq": b.seq, "time": _iso(b.time),
                               "events": [e.type for e in b.events],
                               "commands": [c.type for c in b.commands],
                               **({"moved_to": b.version} if b.version else {})}
                              for b in batches]
    return export


def load_run(runs: RunStore, workflow_id: str, run_id: str | None) -> tuple[WorkflowStarted,
                                                                               list[Batch]]:
    """The run record and batches of ``run_id`` (default the latest run)."""
    for epoch in sorted(runs.epochs(workflow_id), reverse=True):
        started, batches = runs.load(workflow_id, epoch)
        if run_id is None or started.run_id == run_id:
            return started, batches
    return runs.read_run(workflow_id), []


ExecutionEvent.model_rebuild()
