"""What the UI's pages show, shaped from the client's models: pure functions, no web
framework, so each is easy to test.

- ``filters``: the list page's query string as ``client.workflow.list`` arguments.
- ``timeline``: a run's durable calls as bars on one time axis (a waterfall).
- ``children``, ``history``: the rows of those tables.
- ``pools``: hosts grouped per task queue and code version.

Values shown come from exports, which decode payloads without unpickling them; they
are turned into text here and escaped by the templates, never marked safe.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from rayline.engine.registry import is_dedicated
from rayline.export import ExecutionEvent, WorkflowExecution
from rayline.messages import HostStats, RunStatus

from .._cli import _filters

STATUSES = [s.value for s in RunStatus]
RANGES = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
"""The list page's quick time ranges: runs started in the last so many seconds."""
ORDERS = {"-started_at": "Newest first", "started_at": "Oldest first",
          "-closed_at": "Recently closed", "workflow_id": "Workflow id"}
PAGE_SIZES = (25, 50, 100, 200)
MAX_PAGE = 500
TEXT_LIMIT = 240


# ------------------------------------------------------------------ formatting

def when(ts: float | str | None) -> str:
    """A time as ``2026-12-01 10:00:00`` UTC (seconds since the epoch or ISO 8601)."""
    if ts is None or ts == "":
        return "—"
    moment = datetime.fromisoformat(ts) if isinstance(ts, str) else \
        datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso).timestamp()


def duration(seconds: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "—"
    return duration(max(0.0, (now or time.time()) - ts)) + " ago"


def pretty(value: Any) -> str:
    """A value as indented JSON text (``repr`` for what JSON cannot hold)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr, sort_keys=False)


def compact(value: Any, limit: int = TEXT_LIMIT) -> str:
    """A value as one line of JSON, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else \
        json.dumps(value, ensure_ascii=False, default=repr, separators=(", ", ": "))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short_name(name: str) -> str:
    """An activity's import path without its module: ``pkg.mod.train`` -> ``train``."""
    return name.rsplit(".", 1)[-1] if name else "?"


# ------------------------------------------------------------------ the list page

@dataclass
class Filters:
    """The list page's filters as the form shows them, and as ``list()`` takes them."""

    form: dict[str, str]
    """Each field's text, as typed (the form is rendered from it again)."""
    query: dict[str, Any]
    """The keyword arguments of ``client.workflow.list`` / ``count`` (no paging)."""
    order_by: str = "-started_at"
    limit: int = 100
    page_token: str | None = None


def filters(params: Mapping[str, str], now: float | None = None) -> Filters:
    """The list page's query string as ``list()`` arguments.

    Raises:
        InvalidInputError: a bad status, time, search condition, order or page size
            (the message names it).
    """
    form = {key: params.get(key, "").strip() for key in (
        "status", "name", "queue", "version", "search", "range", "started_after",
        "started_before", "closed_after", "closed_before")}
    options: dict[str, Any] = {
        "status": form["status"] or None, "name": form["name"] or None,
        "queue": form["queue"] or None, "version": form["version"] or None,
        "search": tuple(split_conditions(form["search"])),
        **{bound: form[bound] or None for bound in (
            "started_after", "started_before", "closed_after", "closed_before")}}
    query = _filters(options)
    if form["range"] in RANGES and query["started_after"] is None:
        query["started_after"] = (now or time.time()) - RANGES[form["range"]]
    order_by = params.get("order_by") or "-started_at"
    form["order_by"] = order_by
    try:
        limit = max(1, min(MAX_PAGE, int(params.get("limit") or 100)))
    except ValueError:
        limit = 100
    form["limit"] = str(limit)
    return Filters(form=form, query=query, order_by=order_by, limit=limit,
                   page_token=params.get("page_token") or None)


def split_conditions(text: str) -> list[str]:
    """``score>=0.9, region=eu`` -> ``["score>=0.9", "region=eu"]``; a comma inside
    brackets or quotes (a JSON list for ``in``) does not split."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth <= 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


# ------------------------------------------------------------------ the timeline

@dataclass
class Bar:
    """One durable call on the time axis; times are seconds from the run's start."""

    key: str
    kind: str
    """``activity``, ``timer``, ``signal``, ``child``, ``external`` or ``update``."""
    label: str
    start: float
    end: float | None
    """``None``: still open (drawn up to now)."""
    state: str
    """``completed``, ``failed``, ``running``, ``fired``, ``cancelled``, ``timed out``,
    ``received``, ``signaled`` ..."""
    link: str | None = None
    """A child's workflow id."""
    began: float | None = None
    """An activity's last attempt started then (before it: waiting for a worker)."""
    attempts: int = 1
    detail: str = ""
    left: float = 0.0
    width: float = 0.0
    queued: float = 0.0
    """The share of the bar's width before ``began``, in percent."""

    @property
    def took(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class Timeline:
    bars: list[Bar]
    span: float
    """Seconds the axis covers: the run's start to its close, or to now."""
    ticks: list[tuple[float, str]] = field(default_factory=list)
    """(percent, label) of each tick of the axis."""
    running: bool = False


_OPENERS = {"activity_task_scheduled": "activity", "timer_started": "timer",
            "signal_wait_started": "signal", "child_workflow_execution_started": "child",
            "signal_external_workflow_execution_initiated": "external",
            "request_cancel_external_workflow_execution_initiated": "external",
            "workflow_execution_update_accepted": "update"}
_REFS = ("scheduled_event_id", "initiated_event_id", "started_event_id", "wait_event_id",
         "accepted_event_id")


def _waits(events: list[ExecutionEvent]) -> dict[Any, int]:
    """Call number -> event id of each signal wait (its timeout timer has its number)."""
    return {e.attributes.get("execution_index"): e.event_id for e in events
            if e.event_type == "signal_wait_started"}


def _ends(events: list[ExecutionEvent]) -> dict[int, ExecutionEvent]:
    """Opening event id -> the event that ended that call."""
    ended: dict[int, ExecutionEvent] = {}
    waits = _waits(events)
    for event in events:
        if event.attributes.get("retrying") or event.attributes.get("live") or \
                event.event_type == "activity_task_cancel_requested":
            continue
        origins = [event.attributes[r] for r in _REFS if event.attributes.get(r) is not None]
        if event.event_type == "timer_fired":  # perhaps a wait's timeout: it ends the wait
            origins.append(waits.get(event.attributes.get("execution_index")))
        for origin in origins[:1] if event.event_type != "timer_fired" else origins:
            if origin is not None and origin not in ended:
                ended[origin] = event
    return ended


def _state(kind: str, ended: ExecutionEvent | None) -> str:
    if ended is None:
        return "running" if kind in ("activity", "child", "update", "external") else \
            "waiting"
    kind_of_end = ended.event_type
    if kind_of_end == "timer_fired" and kind == "signal":
        return "timed out"
    if kind_of_end == "workflow_execution_signaled":
        return "signaled"
    if kind_of_end.endswith("update_completed"):
        return "failed" if ended.attributes.get("failure") else "completed"
    return kind_of_end.rsplit("_", 1)[-1]


def _label(kind: str, attrs: dict[str, Any]) -> str:
    if kind == "activity":
        return short_name(str(attrs.get("activity_type", "")))
    if kind == "timer":
        return f"sleep {duration((attrs.get('duration_ms') or 0) / 1000)}"
    if kind == "signal":
        timeout = attrs.get("timeout_s")
        return f"wait {attrs.get('signal_name')!s}" + (
            f" (timeout {duration(timeout)})" if timeout else "")
    if kind == "child":
        return str(attrs.get("child_workflow_id"))
    if kind == "update":
        return f"update {attrs.get('update_name')!s}"
    what = "signal" if attrs.get("signal_name") else "cancel"
    return f"{what} → {attrs.get('workflow_id')!s}"


def timeline(execution: WorkflowExecution, now: float | None = None,
             system: bool = False) -> Timeline:
    """The run's durable calls as bars (one per activity, timer, signal wait, child,
    signal sent and update; a signal that came without a wait is a point), in the
    order they were made, on an axis from the run's start to its close (or now)."""
    start = epoch(execution.start_time) or 0.0
    close = epoch(execution.close_time)
    now = time.time() if now is None else now
    end_of_axis = (close if close is not None else max(now, start)) - start
    ended = _ends(execution.events)
    waits = _waits(execution.events)
    attempts: dict[int, int] = {}
    for event in execution.events:
        if event.event_type in ("activity_task_failed", "activity_task_completed",
                                "activity_task_started"):
            origin = event.attributes.get("scheduled_event_id")
            if origin is not None:
                attempts[origin] = max(attempts.get(origin, 1),
                                       int(event.attributes.get("attempt") or 1))
    bars: list[Bar] = []
    for event in execution.events:
        kind = _OPENERS.get(event.event_type)
        at = (epoch(event.event_time) or start) - start
        if kind is None:
            if event.event_type == "workflow_execution_signaled" and \
                    event.attributes.get("wait_event_id") is None:
                bars.append(Bar(key="signal", kind="signal", state="received", start=at,
                                end=at, label=f"signal {event.attributes.get('signal_name')}",
                                detail=compact(event.attributes.get("input"))))
            continue
        if event.is_system and not system:
            continue
        if kind == "timer" and event.attributes.get("execution_index") in waits:
            continue  # a wait's timeout: drawn as the wait
        attrs = event.attributes
        done = ended.get(event.event_id)
        stop = None if done is None else max(at, (epoch(done.event_time) or start) - start)
        bar = Bar(key=str(attrs.get("timeline_key") or attrs.get("update_id") or ""),
                  kind=kind, label=_label(kind, attrs), start=at, end=stop,
                  state=_state(kind, done), attempts=attempts.get(event.event_id, 1),
                  link=str(attrs["child_workflow_id"]) if kind == "child" else None)
        if done is not None and done.attributes.get("started_time"):
            bar.began = (epoch(done.attributes["started_time"]) or start) - start
        if done is not None and done.attributes.get("failure"):
            failure = done.attributes["failure"]
            bar.detail = compact(f"{failure.get('type')}: {failure.get('message')}")
        elif done is not None and "result" in done.attributes:
            bar.detail = compact(done.attributes.get("result"))
        bars.append(bar)
    span = max(end_of_axis, max((b.end or 0.0 for b in bars), default=0.0), 1e-3)
    for bar in bars:
        finish = span if bar.end is None else bar.end
        bar.left = 100 * bar.start / span
        bar.width = max(100 * (finish - bar.start) / span, 0.35)
        if bar.began is not None and finish > bar.start:
            bar.queued = 100 * max(0.0, min(1.0, (bar.began - bar.start)
                                             / (finish - bar.start)))
    return Timeline(bars=bars, span=span, ticks=ticks(span), running=close is None)


def ticks(span: float, most: int = 6) -> list[tuple[float, str]]:
    """Round times along an axis of ``span`` seconds, at most ``most`` + 1 of them."""
    raw = span / most
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = int(span / step + 1e-9)
    return [(100 * i * step / span, "0" if i == 0 else duration(i * step))
            for i in range(count + 1)]


# ------------------------------------------------------------------ other tables

@dataclass
class Child:
    workflow_id: str
    workflow_type: str
    state: str
    started: str
    closed: str | None


def children(execution: WorkflowExecution) -> list[Child]:
    """The children the run started, with how each ended so far."""
    ended = _ends(execution.events)
    found = []
    for event in execution.events:
        if event.event_type == "child_workflow_execution_started":
            done = ended.get(event.event_id)
            found.append(Child(
                workflow_id=str(event.attributes.get("child_workflow_id")),
                workflow_type=str(event.attributes.get("workflow_type") or ""),
                state="running" if done is None else done.event_type.rsplit("_", 1)[-1],
                started=event.event_time, closed=done.event_time if done else None))
    return found


_HIDDEN = {"kind", "execution_index"}


@dataclass
class HistoryRow:
    event: ExecutionEvent
    offset: float
    summary: str
    attributes: str


def history(execution: WorkflowExecution) -> list[HistoryRow]:
    """Each event with its time from the run's start, a one-line summary of its
    attributes, and all of them as JSON."""
    start = epoch(execution.start_time) or 0.0
    rows = []
    for event in execution.events:
        shown = {k: v for k, v in event.attributes.items()
                 if k not in _HIDDEN and v is not None}
        summary = "  ".join(f"{k}={compact(v, 80)}" for k, v in shown.items())
        rows.append(HistoryRow(event=event, offset=(epoch(event.event_time) or start) - start,
                               summary=compact(summary, 300), attributes=pretty(shown)))
    return rows


@dataclass
class Pool:
    task_queue: str
    version: str
    hosts: list[HostStats]

    @property
    def runs(self) -> tuple[int, int, int]:
        """Live, parked and stuck runs of the pool's hosts."""
        return (sum(h.running for h in self.hosts), sum(h.parked for h in self.hosts),
                sum(h.stuck for h in self.hosts))


def pools(hosts: Iterable[HostStats], homes: Mapping[str, tuple[str, str | None]]
          ) -> list[Pool]:
    """Hosts grouped per task queue and code version (``homes``: host -> both, as the
    registry stored them); dedicated hosts are a pool of their own queue's."""
    grouped: dict[tuple[str, str], list[HostStats]] = {}
    for stats in hosts:
        queue, version = homes.get(stats.host, ("?", None))
        if is_dedicated(stats.host):
            queue = f"{queue} (dedicated)"
        grouped.setdefault((queue, version or "—"), []).append(stats)
    return [Pool(task_queue=q, version=v, hosts=sorted(h, key=lambda s: s.host))
            for (q, v), h in sorted(grouped.items())]
