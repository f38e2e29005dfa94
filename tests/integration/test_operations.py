"""Operating workflows: reset and fork from a step, and batch operations, on a real Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

import rayline
from rayline.storage import RunStore, open_store

from . import wf
from .test_foundation import wait_until


def test_reset_to_the_last_failure_finishes_the_run_without_rerunning_steps_1_to_3(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.five_numbered, args=[marks])
    with pytest.raises(rayline.WorkflowFailedError, match="the bug in step 4"):
        handle.result(timeout=60)
    old_run = handle.describe().run_id
    open(os.path.join(marks, "fixed"), "w").close()  # the fix
    handle.reset("last_failure", reason="fixed step 4")
    assert handle.result(timeout=60) == [10, 20, 30, 40, 50]
    assert [wf.count(marks, f"step-{n}") for n in range(1, 6)] == [1, 1, 1, 2, 1]
    described = handle.describe()
    assert described.reset_from == old_run and described.run_id != old_run
    old = client.workflow.get_handle(handle.workflow_id, run_id=old_run).export_execution()
    assert old.status == "reset"
    assert old.events[-1].event_type == "workflow_execution_reset"
    assert old.events[-1].attributes["new_run_id"] == described.run_id


def test_fork_from_the_third_step_runs_new_code_from_there_and_leaves_the_original(
        client: rayline.Client, marks: str, storage: str, namespace: str,
        capsys: Any) -> None:
    from rayline.actors._cli import main

    open(os.path.join(marks, "fixed"), "w").close()
    handle = client.workflow.start(wf.five_numbered, args=[marks])
    assert handle.result(timeout=60) == [10, 20, 30, 40, 50]
    before = handle.export_execution()
    open(os.path.join(marks, "times100"), "w").close()  # new code from here on
    third = [e for e in before.events if e.event_type == "activity_task_scheduled"][2]
    fork = client.workflow.fork(handle.workflow_id, from_=third.event_id,
                                new_workflow_id=f"{handle.workflow_id}-fork")
    assert fork.result(timeout=60) == [10, 20, 300, 400, 500]
    assert [wf.count(marks, f"step-{n}") for n in range(1, 6)] == [1, 1, 2, 2, 2]
    assert handle.export_execution() == before  # the original is untouched
    capsys.readouterr()
    assert main(["workflow", "fork", handle.workflow_id, "--from", str(third.event_id),
                 "--new-id", "by-cli", "--storage", storage, "--namespace", namespace]) == 0
    assert capsys.readouterr().out.strip() == "by-cli"
    assert client.workflow.get_handle("by-cli").result(timeout=60) == [10, 20, 300, 400, 500]


@pytest.mark.timeout(300)
def test_a_batch_terminate_survives_its_caller_being_killed_and_a_rerun_finishes_it(
        client: rayline.Client, ray_cluster: dict[str, Any], storage: str,
        namespace: str) -> None:
    for i in range(220):  # 200 match, 20 do not
        client.workflow.start(wf.wait_once, args=[None], workflow_id=f"b-{i}",
                              search={"batch": "b" if i < 200 else "other"})
    query = {"search": {"batch": {"=": "b"}}}
    wait_until(lambda: client.workflow.count(search={"batch": "b"}).count == 200,
               timeout=60)
    caller = subprocess.Popen(
        [sys.executable, "-m", "rayline.actors._cli", "workflow", "batch", "terminate",
         "--search", "batch=b", "--reason", "cleanup", "--job-id", "cleanup-b",
         "--rate", "20", "--address", ray_cluster["address"], "--storage", storage,
         "--namespace", namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = RunStore(open_store(storage), namespace)

    def done() -> int:
        job = runs.get_config("batch:cleanup-b")
        return len(job["done"]) if job else 0

    try:
        wait_until(lambda: done() >= 10, timeout=120)
    finally:
        caller.send_signal(signal.SIGKILL)  # midway: killed, not stopped
        caller.wait()
    assert done() < 200
    report = client.workflow.batch(query, "terminate", job_id="cleanup-b", reason="cleanup",
                                   rate=200)
    assert report.failed == {} and report.matched == 200 and report.succeeded == 200
    assert 0 < report.resumed < 200
    wait_until(lambda: client.workflow.count(status="terminated").count == 200,
               timeout=60)  # the index hears of each close a moment after it
    terminated = {s.workflow_id for s in client.workflow.list(status="terminated", limit=1000)}
    assert terminated == {f"b-{i}" for i in range(200)}
    assert all(client.workflow.get_handle(f"b-{i}").status() > 0 for i in range(200, 220))


def test_gc_deletes_an_expired_closed_workflow_and_its_index_entry(
        client: rayline.Client) -> None:
    done = client.workflow.start(wf.add_one, args=[1], workflow_id="short-lived",
                                 expire="10ms")
    assert done.result(timeout=60) == 2
    waiting = client.workflow.start(wf.wait_once, args=[None], expire="10ms")
    wait_until(lambda: client.workflow.count(workflow_name="add_one").count == 1)
    report = client.gc()
    assert list(report.workflows) == ["short-lived"] and report.kept_open == 1
    assert client.workflow.count(workflow_name="add_one").count == 0
    with pytest.raises(rayline.WorkflowNotFoundError):
        client.workflow.get_handle("short-lived").describe()
    waiting.signal("go", "still here")
    assert waiting.result(timeout=60) == "still here"
