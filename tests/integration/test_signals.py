"""Signals, durable timers, cancellation, termination, state and search fields."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray

import rayline
from rayline.messages import PendingWork, RunOutcome
from rayline.storage import RunStore, open_store

from . import wf
from .conftest import host_actor
from .test_foundation import wait_until


def batches_of(storage: str, namespace: str, workflow_id: str) -> list[Any]:
    runs = RunStore(open_store(storage), namespace)
    started = runs.read_run(workflow_id)
    return runs.read_batches(workflow_id, started.epoch, started.run_id)


def test_fan_in_of_two_signals_sent_before_the_wait(client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.step_then_fan_in, args=[marks], workflow_id="fan")
    handle.signal("a", {"from": "handle"})
    client.workflow.signal("fan", "b", {"from": "client"})
    assert handle.result() == [{"from": "handle"}, {"from": "client"}]


def test_25_signals_sent_right_after_start_arrive_in_order(client: rayline.Client) -> None:
    ids = [f"s{i}" for i in range(25)]
    handle = client.workflow.start(wf.nap_then_collect, args=[0.3, ids])
    for i, signal_id in enumerate(ids):
        handle.signal(signal_id, i)
    assert handle.result() == list(range(25))


def test_100_waiting_workflows_and_100_concurrent_senders(namespace: str, storage: str) -> None:
    async def main() -> list[Any]:
        async with rayline.AsyncClient(storage=storage, namespace=namespace) as c:
            handles = await asyncio.gather(*(
                c.workflow.start(wf.wait_once, args=[120.0], workflow_id=f"w{i}")
                for i in range(100)))
            await asyncio.gather(*(c.workflow.signal(f"w{i}", "go", i) for i in range(100)))
            return list(await asyncio.gather(*(h.result() for h in handles)))

    results = asyncio.run(main())
    assert results == list(range(100))  # none lost, none timed out (False)
    for i in range(0, 100, 9):
        received = [e for b in batches_of(storage, namespace, f"w{i}") for e in b.events
                    if e.type == "signal_received"]
        assert len(received) == 1  # none duplicated


def test_sleep_survives_a_host_kill_and_keeps_its_wake_up_time(
        client: rayline.Client, namespace: str, storage: str) -> None:
    handle = client.workflow.start(wf.nap, args=[2.0], workflow_id="napper")
    time.sleep(0.5)
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)
    assert handle.result(timeout=60) == 2.0
    batches = batches_of(storage, namespace, "napper")
    timers = [c for b in batches for c in b.commands if c.type == "start_timer"]
    assert len(timers) == 1  # the recovered host re-armed the recorded timer
    started = RunStore(open_store(storage), namespace).read_run("napper")
    assert timers[0].fire_at == pytest.approx(started.time + 2.0, abs=0.05)
    fired = [b for b in batches for e in b.events if e.type == "timer_fired"]
    assert fired[0].time >= timers[0].fire_at


def test_a_workflow_retried_by_its_policy_survives_a_host_kill_in_its_backoff(
        client: rayline.Client, namespace: str, storage: str) -> None:
    fast = rayline.RetryPolicy(maximum_attempts=4, initial_interval=0.05)
    assert client.workflow.execute(wf.fails_early_attempts, args=[3], workflow_id="r4",
                                   retry=fast) == "done on attempt 4"
    with pytest.raises(rayline.WorkflowFailedError) as failed:
        client.workflow.execute(wf.fails_early_attempts, args=[3], workflow_id="r2",
                                retry=rayline.RetryPolicy(maximum_attempts=2,
                                                          initial_interval=0.05))
    assert failed.value.code == 597 and "attempt 2 failed" in str(failed.value.__cause__)

    slow = rayline.RetryPolicy(maximum_attempts=2, initial_interval=3.0)
    handle = client.workflow.start(wf.fails_early_attempts, args=[1], workflow_id="rk",
                                   retry=slow)
    runs = RunStore(open_store(storage), namespace)
    def first_failed() -> bool:
        try:
            return RunOutcome.of_run(runs.load("rk", 1)[1]) is not None
        except rayline.WorkflowNotFoundError:
            return False
    wait_until(first_failed)
    assert runs.epochs("rk") == [1]  # the next attempt waits out its backoff
    host = runs.read_run("rk").host
    ray.kill(host_actor(namespace, host), no_restart=False)  # killed in the backoff
    assert handle.result(timeout=60) == "done on attempt 2"
    assert runs.epochs("rk") == [1, 2]


def test_a_signal_handler_gets_25_earlier_signals_in_order_and_wakes_a_predicate(
        client: rayline.Client) -> None:
    handle = client.workflow.start(wf.handles_late, args=[26], workflow_id="late")
    for i in range(25):
        handle.signal("item", i)  # before the handler exists
    handle.signal("ready")
    wait_until(lambda: any(p.kind == "wait" for p in handle.describe().pending) is False)
    handle.signal("item", 25)  # after: the predicate wait wakes on it
    assert handle.result(timeout=60) == list(range(26))


def test_cancel_wakes_a_long_sleep_and_cleanup_runs(client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.cancellable_order, args=[marks])
    wait_until(lambda: handle.status() > 0)
    handle.cancel()
    assert handle.result(timeout=30) == "cancelled:refunded"
    assert wf.count(marks, "refund") == 1
    assert handle.status() == 0


def test_cancel_that_escapes_fails_the_workflow(client: rayline.Client) -> None:
    handle = client.workflow.start(wf.not_cancellable_forever)
    wait_until(lambda: handle.status() > 0)
    handle.cancel()
    with pytest.raises(rayline.WorkflowFailedError) as info:
        handle.result(timeout=30)
    assert rayline.is_cancellation(info.value)
    assert handle.status() < 0


def test_terminate_with_descend_ends_the_whole_tree(client: rayline.Client) -> None:
    parent = client.workflow.start(wf.two_children, args=["tree"], workflow_id="tree")
    wait_until(lambda: _exists(client, "tree-b-grand") and _exists(client, "tree-a"))
    parent.terminate("tearing down", descend=True)
    for workflow_id in ("tree", "tree-a", "tree-b", "tree-b-grand"):
        described = client.workflow.get_handle(workflow_id).describe()
        assert described.state.value == "terminated", (workflow_id, described.state)
    with pytest.raises(rayline.WorkflowClosedError):
        parent.terminate()  # without descend, a closed workflow is an error
    parent.terminate(descend=True)  # with it, a tree already down is fine


def test_a_parent_closing_applies_each_childs_close_policy(client: rayline.Client,
                                                          marks: str) -> None:
    kids = {}
    for policy in ("abandon", "request_cancel", "terminate"):
        parent = client.workflow.start(wf.leaves_child, args=[marks, policy, f"kid-{policy}"])
        assert parent.result(timeout=60) == f"kid-{policy}"
        kids[policy] = client.workflow.get_handle(f"kid-{policy}")
    assert kids["request_cancel"].result(timeout=60) == "cancelled:refunded"
    with pytest.raises(rayline.WorkflowTerminatedError, match="parent .* closed"):
        kids["terminate"].result(timeout=60)
    assert kids["abandon"].status() > 0  # left running by its parent
    kids["abandon"].cancel()
    assert kids["abandon"].result(timeout=60) == "cancelled:refunded"


def test_an_update_is_validated_answered_once_durable_and_survives_a_host_kill(
        client: rayline.Client, namespace: str) -> None:
    handle = client.workflow.start(wf.approvals, args=[2])
    ann = handle.start_update("approve", "ann")  # taken; its handler waits for a stamp
    handle.signal("stamp-ann", "ok")
    assert ann.result(timeout=60) == "ann:ok"
    with pytest.raises(rayline.UpdateRejectedError, match="approved already"):
        handle.execute_update("approve", "ann")
    bob = handle.start_update("approve", "bob", update_id="bob-1")
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)
    handle.signal("stamp-bob", "late")
    assert bob.result(timeout=60) == "bob:late"  # asked again of the restarted host
    assert handle.execute_update("approve", "bob", update_id="bob-1") == "bob:late"  # once
    assert handle.result(timeout=60) == ["ann", "bob"]
    events = handle.export_execution().events
    accepted = [e.attributes["input"] for e in events
                if e.event_type == "workflow_execution_update_accepted"]
    assert accepted == [["ann"], ["bob"]]  # the refused update left no trace
    assert [e.attributes["result"] for e in events
            if e.event_type == "workflow_execution_update_completed"] == ["ann:ok", "bob:late"]


def _exists(client: rayline.Client, workflow_id: str) -> bool:
    try:
        client.workflow.get_handle(workflow_id).describe()
        return True
    except rayline.WorkflowNotFoundError:
        return False


def test_terminate_during_an_activity_cancels_its_ray_task(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.runs_long, args=[marks])
    wait_until(lambda: wf.count(marks, "long-started") == 1)
    handle.terminate("stop now")
    assert handle.status() < 0
    with pytest.raises(rayline.WorkflowTerminatedError) as info:
        handle.result()
    assert info.value.code == 410
    wait_until(lambda: wf.count(marks, "long-cancelled") == 1, timeout=30)
    assert wf.count(marks, "long-finished") == 0
    with pytest.raises(rayline.WorkflowClosedError):
        handle.terminate()


def test_condition_timeout_returns_false(client: rayline.Client) -> None:
    assert client.workflow.execute(wf.wait_once, args=[1.0]) is False


def test_signals_to_finished_unknown_and_not_yet_started_workflows(
        client: rayline.Client) -> None:
    done = client.workflow.start(wf.add_one, args=[1], workflow_id="done")
    done.result()
    with pytest.raises(rayline.WorkflowClosedError):
        done.signal("go", 1)
    with pytest.raises(rayline.WorkflowNotFoundError):
        client.workflow.signal("nobody", "go", 1)
    client.workflow.signal("soon", "go", "early bird", buffer_if_missing=True)
    assert client.workflow.execute(wf.wait_once, args=[None], workflow_id="soon") == "early bird"


def test_expired_buffered_signal_is_dropped_and_recorded(
        client: rayline.Client, namespace: str, storage: str) -> None:
    handle = client.workflow.start(wf.nap_then_wait, args=[1.0, 1.0], workflow_id="stale")
    handle.signal("go", "too late", expire="100ms")
    assert handle.result() is False
    commands = [c for b in batches_of(storage, namespace, "stale") for c in b.commands]
    assert any(c.type == "drop_signal" and c.signal_id == "go" for c in commands)


def test_search_enrich_query_and_list(client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.tracked, args=[marks], workflow_id="tracked")
    wait_until(lambda: handle.query_state(["step"]) == {"step": 1})
    assert handle.query("n") == 1
    assert handle.query_state() == {"region": "eu", "step": 1, "note": "half way"}
    assert handle.status() == 1  # one open obligation: the condition
    assert handle.describe().pending == [PendingWork(seq=5, kind="wait", signal_id="finish")]
    with pytest.raises(rayline.QueryError, match="no query handler 'nope'"):
        handle.query("nope")
    wait_until(lambda: any(r.workflow_id == "tracked"
                           for r in client.workflow.list(search={"region": "eu"})))
    handle.signal("finish")
    assert handle.result() == 1
    wait_until(lambda: [r.workflow_id for r in client.workflow.list(status="completed")]
               == ["tracked"])
    assert handle.query_state(["region"]) == {"region": "eu"}


def test_a_workflow_blocking_its_host_is_reported_and_its_neighbour_goes_on(
        client: rayline.Client) -> None:
    neighbour = client.workflow.start(wf.wait_once, args=[None], workflow_id="neighbour")
    sleepy = client.workflow.start(wf.blocks, args=[3.0], workflow_id="sleepy")
    wait_until(lambda: sleepy.describe().blocked is not None)
    report = sleepy.describe().blocked or ""
    assert "workflow sleepy" in report and "time.sleep(seconds)" in report
    neighbour.signal("go", "still here")
    assert neighbour.result() == "still here"
    assert sleepy.result() == "woke"
