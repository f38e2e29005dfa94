"""How activities run: every one is accounted by Ray (a default one takes a CPU, on a
warm runner when one is idle), a cancelled one stops, a silent one is retried from its
last heartbeat, and a sync local one does not hold up the other workflows of its host."""

from __future__ import annotations

import glob
import os
from typing import Any

import pytest

import rayline

from . import wf
from .test_foundation import wait_until


def most_at_once(folder: str) -> int:
    """The most ``busy`` activities that ran at the same moment (from their spans)."""
    spans = []
    for path in glob.glob(os.path.join(folder, "*.span")):
        with open(path) as found:
            began, ended = map(float, found.read().split())
        spans.append((began, ended))
    edges = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def test_default_activities_take_a_cpu_each_so_ray_bounds_how_many_run(
        client: rayline.Client, marks: str) -> None:
    cpus = int(rayline_cpus())
    assert client.workflow.execute(wf.busy_many, args=[marks, 2 * cpus, 0.5]) == 2 * cpus
    assert len(glob.glob(os.path.join(marks, "*.span"))) == 2 * cpus
    assert most_at_once(marks) <= cpus


def rayline_cpus() -> float:
    import ray

    return float(ray.cluster_resources()["CPU"])


def test_cancelling_a_workflow_stops_its_default_activity_which_sees_it(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.runs_heeding, args=[marks])
    wait_until(lambda: wf.count(marks, "heeds-started") == 1)
    handle.cancel()
    with pytest.raises(rayline.WorkflowFailedError) as info:
        handle.result(timeout=30)
    assert rayline.is_cancellation(info.value)
    wait_until(lambda: wf.count(marks, "heeds-cancelled") == 1, timeout=30)


def test_a_silent_activity_is_stopped_and_retried_from_its_last_heartbeat(
        client: rayline.Client, marks: str) -> None:
    result = client.workflow.execute(wf.resumes_after_silence, args=[marks])
    assert result == {"attempt": 2, "resumed_from": {"step": 3}}
    assert wf.count(marks, "silent") == 1


def test_a_sync_local_activity_does_not_hold_up_its_hosts_other_workflows(
        client: rayline.Client, marks: str) -> None:
    rayline.Worker.create(client, task_queue="one-host", hosts=1)
    napping = client.workflow.start(wf.naps_locally, args=[marks, 3.0],
                                    task_queue="one-host")
    waiting = client.workflow.start(wf.wait_once, args=[None], task_queue="one-host")
    assert napping.describe().host == waiting.describe().host
    waiting.signal("go", "answered")
    assert waiting.result(timeout=30) == "answered"
    assert wf.count(marks, "local-nap-done") == 0  # the nap still runs: not waited for
    assert napping.result(timeout=30) == "napped"


def actor_state(actor_id: str) -> Any:
    from ray.util.state import get_actor

    return get_actor(actor_id)


def test_a_default_activity_runs_on_a_warm_runner_that_holds_its_cpu_until_idle(
        client: rayline.Client) -> None:
    first, second = client.workflow.execute(wf.finds_a_runner)
    assert first == second  # kept between activities: no lease per call
    runner = actor_state(first)
    assert runner.class_name == "Runner"
    assert runner.required_resources == {"CPU": 1.0}  # what a default task would hold
    wait_until(lambda: actor_state(first).state == "DEAD")  # idle: its CPU goes back


def test_a_runner_that_dies_fails_its_attempt_and_the_retry_succeeds(
        client: rayline.Client, marks: str) -> None:
    assert client.workflow.execute(wf.runner_dies, args=[marks]) == "second attempt"
    [died] = glob.glob(os.path.join(marks, "exits.*"))
    assert os.path.basename(died) != "exits.None"  # the first attempt ran on a runner
    assert actor_state(os.path.basename(died).split(".", 1)[1]).state == "DEAD"


def test_cancelling_an_activity_on_a_runner_interrupts_it_and_stops_the_runner(
        client: rayline.Client, marks: str) -> None:
    handle = client.workflow.start(wf.sleeps_on_a_runner, args=[marks])
    wait_until(lambda: glob.glob(os.path.join(marks, "plain-started-*")))
    [started] = glob.glob(os.path.join(marks, "plain-started-*"))
    runner = os.path.basename(started)[len("plain-started-"):].split(".")[0]
    assert runner != "None"
    handle.cancel()
    with pytest.raises(rayline.WorkflowFailedError) as info:
        handle.result(timeout=30)
    assert rayline.is_cancellation(info.value)
    wait_until(lambda: wf.count(marks, "plain-cancelled") == 1)  # KeyboardInterrupt, as a task
    wait_until(lambda: actor_state(runner).state == "DEAD")


def test_a_host_with_attempts_out_as_tasks_starts_no_runner_and_frees_a_busy_cluster(
        ray_cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from rayline.actors import _runners

    async def started(pool: Any) -> Any:
        """A runner the burst's end started, once it is up and idle."""
        pool.tasks = 0
        pool.warm_up()
        assert pool._count == 1
        for _ in range(300):
            if pool._idle:
                break
            await asyncio.sleep(0.1)
        runner = pool.take()
        assert runner is not None
        return runner

    async def scenario() -> None:
        pool = _runners.WarmPool(size=1, idle=60)
        pool.tasks = 1  # a burst: an attempt is out as a task
        pool.warm_up()
        assert pool.take() is None and pool._count == 0  # no runner started for it
        runner = await started(pool)
        pool.tasks = 1
        monkeypatch.setattr(_runners, "_free_cpus", lambda: 1.0)
        pool.give(runner)  # a CPU is free for the task: the runner stays for the next
        assert pool.take() is runner
        pool.give(runner)
        await asyncio.sleep(0.5)  # ... but not idle for long while tasks are out
        assert pool.take() is None and pool._count == 0
        pool.warm_up()
        assert pool._count == 0  # and none starts meanwhile
        runner = await started(pool)
        pool.tasks = 1
        monkeypatch.setattr(_runners, "_free_cpus", lambda: 0.0)
        pool.give(runner)  # no CPU free: the task may wait for the runner's
        assert pool.take() is None and pool._count == 0
        actor_id = runner._actor_id.hex()
        for _ in range(300):
            if actor_state(actor_id).state == "DEAD":
                break
            await asyncio.sleep(0.1)
        assert actor_state(actor_id).state == "DEAD"

    asyncio.run(scenario())
