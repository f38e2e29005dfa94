"""End to end on a real local Ray: start, result, crash a host, bad input, placement."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import ray

import rayline
from rayline.core import replay_timeline
from rayline.storage import RunStore, open_store

from . import wf
from .conftest import host_actor


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_execute_returns_the_result(client: rayline.Client, marks: str) -> None:
    assert client.workflow.execute(wf.five_steps, args=[marks, 0.0]) == [2, 11, 101, 115, 116]


def test_killing_the_host_mid_run_loses_nothing_and_reruns_no_recorded_activity(
        client: rayline.Client, namespace: str, storage: str, marks: str) -> None:
    handle = client.workflow.start(wf.five_steps, args=[marks, 0.3], workflow_id="killme")
    runs = RunStore(open_store(storage), namespace)

    def recorded() -> set[str]:
        started = runs.read_run("killme")
        done = set()
        for batch in runs.read_batches("killme", started.epoch, started.run_id):
            for event in batch.events:
                if event.type == "activity_completed":
                    done.add({1: "g1", 2: "g2", 3: "g3", 4: "s1", 5: "s2"}[event.seq])
        return done

    wait_until(lambda: {"g1", "g2", "g3"} <= recorded())
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)
    before_kill = recorded()
    assert handle.result(timeout=60) == [2, 11, 101, 115, 116]
    for name in before_kill:
        assert wf.count(marks, name) == 1, name
    for name in ("g1", "g2", "g3", "s1", "s2"):
        assert 1 <= wf.count(marks, name) <= 2


def test_stored_timelines_of_finished_workflows_replay_without_new_commands(
        client: rayline.Client, namespace: str, storage: str, marks: str) -> None:
    client.workflow.execute(wf.five_steps, args=[marks, 0.0], workflow_id="a")
    client.workflow.start(wf.raises, args=["no"], workflow_id="b").result(throw_on_error=False)
    runs = RunStore(open_store(storage), namespace)
    for workflow_id, definition in (("a", wf.five_steps), ("b", wf.raises)):
        started = runs.read_run(workflow_id)
        batches = runs.read_batches(workflow_id, started.epoch, started.run_id)
        instance, unfinished = replay_timeline(definition, started, batches)
        assert unfinished == [] and instance.closing is not None
        assert instance.activate([], batches[-1].time) == []


def test_a_workflow_started_here_is_awaited_from_another_process(
        client: rayline.Client, namespace: str, storage: str, ray_cluster: dict[str, Any],
        tmp_path: Any) -> None:
    client.workflow.start(wf.wait_once, args=[None], workflow_id="shared")
    script = tmp_path / "other.py"
    script.write_text(
        "import sys, rayline\n"
        "c = rayline.Client(address=sys.argv[1], storage=sys.argv[2], namespace=sys.argv[3])\n"
        "h = c.workflow.get_handle('shared')\n"
        "h.signal('go', 'from the other process')\n"
        "print('RESULT', h.result(timeout=60))\n")
    out = subprocess.run([sys.executable, str(script), ray_cluster["address"], storage, namespace],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert "RESULT from the other process" in out.stdout, out.stderr[-2000:]
    assert client.workflow.get_handle("shared").result() == "from the other process"


def test_workflow_error_carries_cause_and_stack(client: rayline.Client) -> None:
    handle = client.workflow.start(wf.raises, args=["kaput"])
    with pytest.raises(rayline.WorkflowFailedError) as info:
        handle.result()
    assert info.value.cause_type == "builtins.RuntimeError"
    assert "kaput" in str(info.value) and "raise RuntimeError(message)" in info.value.stack
    assert handle.status() < 0
    error = handle.result(throw_on_error=False)
    assert isinstance(error, rayline.WorkflowFailedError)


def test_activity_error_reaches_the_workflow_with_type_message_and_traceback(
        client: rayline.Client) -> None:
    with pytest.raises(rayline.WorkflowFailedError) as info:
        client.workflow.execute(wf.calls_exploding, args=["bad key"])
    assert "KeyError" in str(info.value) and "bad key" in str(info.value)
    assert info.value.cause_type.endswith("MaxedError")
    assert "raise KeyError(message)" in info.value.stack


def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(
        client: rayline.Client, storage: str, namespace: str) -> None:
    for bad in ("../up", "a/b", "ctl\x07", "x" * 1001, ".."):
        with pytest.raises(rayline.InvalidInputError, match="workflow id"):
            client.workflow.start(wf.add_one, args=[1], workflow_id=bad)
    with pytest.raises(rayline.SerializationError, match="argument 0"):
        client.workflow.start(wf.echo, args=[wf.UNPICKLABLE])
    with pytest.raises(rayline.InvalidInputError, match="argument 'x'"):
        client.workflow.start(wf.add_one, args=["not a number"])
    with pytest.raises(rayline.InvalidInputError, match="unknown workflow_name 'nope'"):
        client.workflow.start(workflow_name="nope", task_queue="default", args=[])
    with pytest.raises(rayline.InvalidInputError, match="unknown start option"):
        client.workflow.start(wf.add_one, args=[1], colour="red")
    with pytest.raises(rayline.InvalidInputError, match="cron '61 "):
        client.workflow.start(wf.add_one, args=[1], cron="61 * * * *")
    with pytest.raises(rayline.InvalidInputError, match="expire"):
        client.workflow.start(wf.add_one, args=[1], expire="soon")
    assert RunStore(open_store(storage), namespace).all_workflow_keys() == []


def test_duplicate_running_id_is_refused(client: rayline.Client) -> None:
    client.workflow.start(wf.wait_once, args=[None], workflow_id="dup")
    with pytest.raises(rayline.DuplicateWorkflowError):
        client.workflow.start(wf.wait_once, args=[None], workflow_id="dup")


def test_unknown_id_is_not_found(client: rayline.Client) -> None:
    with pytest.raises(rayline.WorkflowNotFoundError):
        client.workflow.get_handle("never-started")


def test_worker_registers_names_and_start_by_name(client: rayline.Client,
                                                  namespace: str) -> None:
    worker = rayline.Worker.create(client, task_queue="orders", workflows=[wf.order], hosts=2)
    handle = client.workflow.start(workflow_name="orderWorkflow", task_queue="orders",
                                   args=["order-123"], workflow_id="order-123")
    assert handle.result() == "order order-123 done"
    described = handle.describe()
    assert described.task_queue == "orders" and described.version is not None
    # the pool of the queue for this client's code version
    assert worker.hosts == [f"host-orders-{described.version}-{i}" for i in range(2)]
    assert described.host in worker.hosts


def test_dedicated_workflow_gets_its_own_host_actor(client: rayline.Client,
                                                    namespace: str) -> None:
    handle = client.workflow.start(wf.add_one, args=[1], workflow_id="solo", dedicated=True)
    assert handle.result() == 2
    described = handle.describe()
    assert described.host == f"host-dedicated-{described.version}-solo"
    assert host_actor(namespace, described.host) is not None
    long_id = "job:" + "x" * 400  # too long for an actor or folder name as it is
    handle = client.workflow.start(wf.add_one, args=[2], workflow_id=long_id, dedicated=True)
    assert handle.result() == 3
    assert len(handle.describe().host) < 100


def test_async_client_has_the_same_names(namespace: str, storage: str) -> None:
    import asyncio

    async def main() -> list[Any]:
        async with rayline.AsyncClient(storage=storage, namespace=namespace) as c:
            handles = [await c.workflow.start(wf.add_one, args=[i]) for i in range(5)]
            return list(await asyncio.gather(*(h.result() for h in handles)))

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_sync_client_is_usable_from_threads(client: rayline.Client) -> None:
    results: list[int] = []

    def worker(i: int) -> None:
        results.append(client.workflow.execute(wf.add_one, args=[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4]


def test_state_and_describe_of_running_and_finished(client: rayline.Client) -> None:
    handle = client.workflow.start(wf.wait_once, args=[None], workflow_id="st")
    wait_until(lambda: handle.status() > 0)
    state = handle.state()
    assert state == {"done": False, "response": None, "error": None}
    handle.signal("go", {"k": 1})
    assert handle.result() == {"k": 1}
    meta = handle.state(metadata=True)
    assert meta["done"] and meta["response"] == {"k": 1} and meta["status"] == 0
    assert meta["run_id"] == handle.run_id and meta["workflow_name"] == "wait_once"
