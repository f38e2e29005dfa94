"""Exports of a run, and signal_with_start."""

from __future__ import annotations

import asyncio
import time

import pytest

import rayline

from . import wf


def test_export_execution_lists_typed_events_with_back_references_and_summary(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.parent_of_two, args=[marks], workflow_id="parent")
    handle.signal("extra", "yes")
    assert handle.result() == [116, "yes"]
    execution = handle.export_execution()
    types = [e.event_type for e in execution.events]
    assert types[0] == "workflow_execution_started"
    assert types[-1] == "workflow_execution_completed"
    for expected in ("child_workflow_execution_started", "child_workflow_execution_completed",
                     "timer_started", "timer_fired", "signal_wait_started",
                     "workflow_execution_signaled"):
        assert expected in types
    completed = next(e for e in execution.events
                     if e.event_type == "child_workflow_execution_completed")
    started = execution.events[completed.attributes["initiated_event_id"] - 1]
    assert started.event_type == "child_workflow_execution_started"
    assert started.attributes["timeline_key"] == "-child-1-"
    summary = execution.summary
    assert summary.child_workflows == {"total": 1, "completed": 1, "failed": 0}
    assert summary.timers == 1 and summary.signals == 1  # the wait found its signal
    assert summary.total_events == len(execution.events)
    assert execution.status == "completed" and execution.result == [116, "yes"]

    verbose = handle.export_execution(mode="verbose", omit_results=True)
    child = verbose.children[0]
    assert child.workflow_id == "kid-1" and child.parent_workflow_id == "parent"
    assert child.summary.activities == {"total": 5, "completed": 5, "failed": 0,
                                        "retried": 0, "system": 0, "user": 5}
    assert all(e.attributes.get("result") is None for e in verbose.events)


def test_export_has_hotmesh_sections(client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.tracked, args=[marks], workflow_id="exported")
    handle.signal("finish")
    assert handle.result() == 1
    assert handle.query("n") == 1  # closed: answered from its timeline
    export = handle.export()
    assert export.data == {"arguments": [marks], "search": {"region": "eu", "step": 1},
                           "enrich": {"note": "half way"}}
    assert export.status == 0 and export.state is not None and export.state.done is True
    proxy = next(e for e in export.timeline or [] if e.key == "-proxy-2-")
    assert proxy.value == 1
    only = handle.export(allow=["status", "data"])
    assert only.timeline is None and only.state is None and only.status == 0
    assert handle.export(block=["timeline"]).timeline is None
    with pytest.raises(rayline.InvalidInputError, match="unknown export section 'nope'"):
        handle.export(allow=["nope"])


def test_a_running_workflow_exported_from_its_host_shows_its_activity_running(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.runs_long, args=[marks], workflow_id="live")
    deadline = time.monotonic() + 30
    while not any(p.kind == "activity" and p.attempt for p in handle.describe().pending):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stored = handle.export_execution()
    assert stored.status == "running"
    assert "activity_task_started" not in [e.event_type for e in stored.events]
    live = handle.export_execution(allow_direct_query=True)
    running = [e for e in live.events if e.event_type == "activity_task_started"]
    assert len(running) == 1 and running[0].attributes["attempt"] == 1
    scheduled = live.events[running[0].attributes["scheduled_event_id"] - 1]
    assert scheduled.event_type == "activity_task_scheduled"
    handle.terminate()


def test_signal_with_start_starts_once_then_signals(client: rayline.Client) -> None:
    first = client.workflow.signal_with_start(wf.collect, args=[["a", "b"]], workflow_id="sws",
                                              signal_id="a", data=1)
    second = client.workflow.signal_with_start(wf.collect, args=[["a", "b"]],
                                               workflow_id="sws", signal_id="b", data=2)
    assert first.workflow_id == second.workflow_id == "sws"
    assert first.result() == [1, 2]


def test_20_concurrent_signal_with_start_calls_make_one_workflow_with_20_signals(
        client: rayline.Client) -> None:
    ids = [f"s{i}" for i in range(20)]

    async def callers() -> list[rayline.AsyncWorkflowHandle]:
        return await asyncio.gather(*(client.aio.workflow.signal_with_start(
            wf.collect, args=[ids], workflow_id="many", signal_id=signal_id, data=i)
            for i, signal_id in enumerate(ids)))
    handles = client.run(callers())
    assert len({h.run_id for h in handles}) == 1
    assert client.run(handles[0].result()) == list(range(20))
    again = client.workflow.start(wf.collect, args=[ids], workflow_id="many",
                                  id_conflict_policy="use_existing")
    assert again.run_id != handles[0].run_id  # the run had closed: a new one
    same = client.workflow.start(wf.collect, args=[ids], workflow_id="many",
                                 id_conflict_policy="use_existing")
    assert same.run_id == again.run_id  # open: the same one
    same.terminate()
