"""What the web UI's pages show, shaped without a browser or Ray: the list's filters and
a run's timeline bars (the browser tests are tests/integration/test_ui.py)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette")

from rayline.actors.ui import _views as views  # noqa: E402
from rayline.errors import InvalidInputError  # noqa: E402
from rayline.export import ExecutionEvent, ExecutionSummary, WorkflowExecution  # noqa: E402

T0 = 1_800_000_000.0


def _iso(seconds: float) -> str:
    return views.datetime.fromtimestamp(T0 + seconds, tz=views.timezone.utc).isoformat()


def _run(events: list[tuple[float, str, str, dict[str, Any]]],
         closed: float | None) -> WorkflowExecution:
    return WorkflowExecution(
        workflow_id="w", run_id="r", workflow_type="t", task_queue="q",
        status="running" if closed is None else "completed", start_time=_iso(0),
        close_time=None if closed is None else _iso(closed),
        events=[ExecutionEvent(event_id=i + 1, event_type=kind, category=category,  # type: ignore[arg-type]
                               event_time=_iso(at), attributes=attributes)
                for i, (at, kind, category, attributes) in enumerate(events)],
        summary=ExecutionSummary(total_events=len(events), activities={},
                                 child_workflows={}, timers=0, signals=0))


def test_filters_take_the_list_pages_query_and_refuse_a_bad_one() -> None:
    chosen = views.filters({"status": "failed", "search": "score>=0.9, region=eu",
                            "range": "1h", "limit": "9999"}, now=T0)
    assert chosen.query["status"] == "failed"
    assert chosen.query["search"] == {"score": {">=": 0.9}, "region": {"=": "eu"}}
    assert chosen.query["started_after"] == T0 - 3600 and chosen.limit == views.MAX_PAGE
    assert views.split_conditions('a=1, tags=["x, y"], b="p, q"') == [
        "a=1", 'tags=["x, y"]', 'b="p, q"']
    with pytest.raises(InvalidInputError, match="started-after"):
        views.filters({"started_after": "yesterday"})


def test_a_timeline_has_a_bar_per_call_and_a_waits_timeout_is_the_wait() -> None:
    run = _run([
        (0.0, "activity_task_scheduled", "activity",
         {"activity_type": "m.train", "timeline_key": "-proxy-1-", "execution_index": 1}),
        (2.0, "activity_task_failed", "activity",
         {"scheduled_event_id": 1, "attempt": 1, "retrying": True}),
        (4.0, "activity_task_completed", "activity",
         {"scheduled_event_id": 1, "attempt": 2, "started_time": _iso(3.0), "result": 7}),
        (4.0, "signal_wait_started", "signal",
         {"signal_name": "go", "timeout_s": 5, "timeline_key": "-wait-2-",
          "execution_index": 2}),
        (4.0, "timer_started", "timer",
         {"duration_ms": 5000, "timeline_key": "-sleep-2-", "execution_index": 2}),
        (9.0, "timer_fired", "timer", {"started_event_id": 5, "execution_index": 2}),
        (9.5, "workflow_execution_signaled", "signal", {"signal_name": "late"}),
    ], closed=10.0)
    timeline = views.timeline(run)
    assert [(b.kind, b.label, b.state, b.start, b.end, b.attempts) for b in timeline.bars] == [
        ("activity", "train", "completed", 0.0, 4.0, 2),
        ("signal", "wait go (timeout 5.0 s)", "timed out", 4.0, 9.0, 1),
        ("signal", "signal late", "received", 9.5, 9.5, 1)]
    activity = timeline.bars[0]
    assert (activity.left, activity.width, activity.queued, activity.detail) == (
        0.0, 40.0, 75.0, "7")
    assert timeline.span == 10.0 and not timeline.running
    assert [label for _, label in timeline.ticks] == ["0", "2.0 s", "4.0 s", "6.0 s", "8.0 s",
                                                     "10 s"]


def test_an_open_call_runs_to_now_and_durations_read_well() -> None:
    run = _run([(1.0, "child_workflow_execution_started", "child_workflow",
                 {"child_workflow_id": "kid", "timeline_key": "-child-1-",
                  "execution_index": 1})], closed=None)
    bar, = views.timeline(run, now=T0 + 5.0).bars
    assert (bar.state, bar.link, bar.end, bar.left, bar.width) == ("running", "kid", None,
                                                                   20.0, 80.0)
    assert [views.duration(s) for s in (0.25, 4.2, 65, 7300, 200_000)] == [
        "250 ms", "4.2 s", "1m 05s", "2h 01m", "2d 7h"]
