"""Exports of a run built from its stored timeline (the in-process host writes it): the
event list of ``export_execution`` and the sections of ``export``, as the seed shapes
them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rayline import _serde
from rayline.export import build_execution, build_export
from rayline.storage import LocalStore, RunStore

from . import flows
from .local import make_host
from .test_host import request, until


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def _finished(runs: RunStore) -> None:
    async def main() -> None:
        flows.ATTEMPTS.clear()
        host = await make_host(runs)
        await host.start(request(flows.exported, "k"))
        await until(lambda: any(p.kind == "wait" for p in host.executions["wf"].pending()))
        await host.signal("wf", "approve", _serde.encode({"by": "ann"}))
        outcome = await host.result("wf")
        assert _serde.decode(outcome.result) == [2, "ok after 2", {"by": "ann"}, 4, 11]
    asyncio.run(asyncio.wait_for(main(), 20))


def _child(runs: RunStore, workflow_id: str) -> Any:
    return build_execution(*runs.load(workflow_id), omit_results=True)


def test_export_execution_lists_every_event_attempt_and_back_reference(
        runs: RunStore) -> None:
    _finished(runs)
    execution = build_execution(*runs.load("wf"))
    types = [e.event_type for e in execution.events]
    assert types == [
        "workflow_execution_started", "marker_recorded",
        "activity_task_scheduled", "activity_task_completed",
        "activity_task_scheduled", "activity_task_failed", "activity_task_completed",
        "timer_started", "timer_fired",
        "signal_wait_started", "workflow_execution_signaled",
        "activity_task_scheduled", "activity_task_completed",
        "upsert_workflow_search_attributes", "child_workflow_execution_started",
        "child_workflow_execution_completed", "workflow_execution_completed"]
    by_id = {e.event_id: e for e in execution.events}
    assert [e.event_id for e in execution.events] == list(range(1, len(types) + 1))
    for event in execution.events:  # every completion points back at what it completes
        attrs = event.attributes
        if event.event_type in ("activity_task_completed", "activity_task_failed"):
            assert by_id[attrs["scheduled_event_id"]].event_type == "activity_task_scheduled"
            assert by_id[attrs["scheduled_event_id"]].attributes["execution_index"] == \
                attrs["execution_index"]
        if event.event_type == "child_workflow_execution_completed":
            assert by_id[attrs["initiated_event_id"]].event_type == \
                "child_workflow_execution_started"
        if event.event_type == "timer_fired":
            assert by_id[attrs["started_event_id"]].event_type == "timer_started"
        if event.event_type == "workflow_execution_signaled":
            assert by_id[attrs["wait_event_id"]].event_type == "signal_wait_started"
            assert attrs["signal_name"] == "approve" and attrs["input"] == {"by": "ann"}
    retried = [e for e in execution.events if e.event_type == "activity_task_failed"]
    assert [(e.attributes["attempt"], e.attributes["retrying"]) for e in retried] == [
        (1, True)]
    assert "attempt 1 failed" in retried[0].attributes["failure"]["message"]
    completed = [e for e in execution.events if e.event_type == "activity_task_completed"]
    assert [e.attributes["attempt"] for e in completed] == [1, 2, 1]
    assert execution.summary.model_dump() == {
        "total_events": len(types),
        "activities": {"total": 3, "completed": 3, "failed": 0, "retried": 1, "system": 0,
                       "user": 3},
        "child_workflows": {"total": 1, "completed": 1, "failed": 0},
        "timers": 1, "signals": 1}
    assert execution.status == "completed" and execution.result == [
        2, "ok after 2", {"by": "ann"}, 4, 11]
    assert execution.duration_ms is not None and execution.close_time is not None
    assert execution.workflow_type == "exported" and execution.children == []

    system = build_execution(*runs.load("wf"), exclude_system=True)
    assert [e.event_type for e in system.events] == [t for t in types
                                                    if t != "marker_recorded"]
    verbose = build_execution(*runs.load("wf"), mode="verbose",
                              load_child=lambda w: _child(runs, w))
    assert [c.workflow_id for c in verbose.children] == ["k-kid"]
    assert verbose.children[0].summary.activities["completed"] == 1

    bare = build_execution(*runs.load("wf"), omit_results=True, mode="verbose",
                           load_child=lambda w: _child(runs, w))
    text = bare.model_dump_json()
    for value in ('"ann"', "ok after", '"done"'):  # inputs, results, signal data, fields
        assert value not in text
    assert all(e.attributes.get(k) is None for e in bare.events
               for k in ("input", "result", "fields"))

    enriched = build_execution(*runs.load("wf"), enrich_inputs=True)
    flaky = next(e for e in enriched.events if e.event_type == "activity_task_scheduled"
                 and e.attributes["activity_type"].endswith("flaky"))
    assert flaky.attributes["input"] == ["k", 1]


def test_export_sections_timeline_markers_and_transitions(runs: RunStore) -> None:
    _finished(runs)
    export = build_export(*runs.load("wf"))
    assert export.data == {"arguments": ["k"], "search": {"stage": "done", "score": 0.5},
                           "enrich": {}}
    assert export.status == 0
    state = export.state
    assert state is not None and state.done and state.response == [
        2, "ok after 2", {"by": "ann"}, 4, 11]
    assert state.error is None and state.closed is not None and state.created <= state.updated
    keys = [m.key for m in export.timeline or []]
    assert keys == ["-proxy-1-", "-proxy-2-", "-sleep-3-", "-wait-4-", "-proxy-5-",
                    "-search-6-", "-child-7-"]
    marker = {m.key: m for m in export.timeline or []}
    assert marker["-proxy-2-"].value == "ok after 2" and marker["-wait-4-"].value == {
        "by": "ann"}
    assert marker["-child-7-"].value == 11 and marker["-search-6-"].value == {
        "stage": "done", "score": 0.5}
    assert all(m.created and m.updated for m in marker.values())
    transitions = export.transitions or []
    assert [(t.key, t.attempt, len(t.retries)) for t in transitions] == [
        ("-proxy-1-", 1, 0), ("-proxy-2-", 2, 1), ("-proxy-5-", 1, 0)]
    assert all(t.scheduled <= (t.started or "") <= (t.completed or "") for t in transitions)

    only = build_export(*runs.load("wf"), allow=["timeline"], values=False)
    assert only.data is None and only.state is None and only.status is None \
        and only.transitions is None
    dumped = json.dumps(only.model_dump(mode="json"))
    assert all(m.value is None for m in only.timeline or []) and "ann" not in dumped
    assert [m.key for m in only.timeline or []] == keys
    assert build_export(*runs.load("wf"), block=["timeline", "transitions"]).timeline is None


def test_exports_of_a_running_and_a_terminated_run_say_so(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits, None))
        await until(lambda: any(p.kind == "wait" for p in host.executions["wf"].pending()))
        running = build_execution(*runs.load("wf"))
        assert running.status == "running" and running.close_time is None
        assert running.events[-1].event_type == "signal_wait_started"
        export = build_export(*runs.load("wf"))
        assert export.status == 1 and export.state is not None and not export.state.done
        assert export.timeline is not None and export.timeline[-1].updated is None
        await host.terminate("wf", "no longer needed")
        closed = build_execution(*runs.load("wf"))
        assert closed.status == "terminated"
        assert closed.events[-1].event_type == "workflow_execution_terminated"
        assert closed.events[-1].attributes["reason"] == "no longer needed"
        ended = build_export(*runs.load("wf"))
        assert ended.status is not None and ended.status < 0
        assert ended.state is not None and ended.state.status == "terminated"
    asyncio.run(asyncio.wait_for(main(), 20))
