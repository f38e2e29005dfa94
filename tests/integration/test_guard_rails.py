"""Guard rails on a real local Ray: one workflow's mistakes stay its own."""

from __future__ import annotations

import os
from typing import Any

import pytest
import ray

import rayline
from rayline.messages import RunStatus
from rayline.storage import RunStore, open_store

from . import wf
from .test_foundation import wait_until


def test_a_strict_workflow_that_blocks_its_host_fails_with_deadlock(
        client: rayline.Client) -> None:
    neighbour = client.workflow.start(wf.neighbour, args=["signal"], workflow_id="calm")
    for workflow_id, args in (("sleeps", [wf.blocks, [3.0]]), ("spins", [wf.spins, [10**10]])):
        handle = client.workflow.start(args[0], args=args[1], workflow_id=workflow_id,
                                       strict=True)
        with pytest.raises(rayline.WorkflowFailedError) as failed:
            handle.result()
        assert failed.value.cause_type.endswith("DeadlockError"), failed.value
        # time.sleep is refused at the call; a busy loop when it has held the loop too long
        assert ("time.sleep()" if workflow_id == "sleeps" else "event loop") in \
            str(failed.value)
    neighbour.signal("go", "still here")
    assert neighbour.result() == "still here"


def test_a_call_that_breaks_replay_is_reported_and_fails_when_strict(
        client: rayline.Client) -> None:
    lax = client.workflow.start(wf.calls_random, workflow_id="lax")
    assert 0 <= lax.result() < 1
    slips = lax.describe().slips
    assert len(slips) == 1 and "random.random()" in slips[0] and "workflow.random()" in slips[0]
    strict = rayline.Client(storage=client.storage_url, namespace=client.namespace,
                            strict=True)
    try:
        with pytest.raises(rayline.WorkflowFailedError) as failed:
            strict.workflow.start(wf.calls_random, workflow_id="strict").result()
    finally:
        strict.close()
    assert failed.value.cause_type.endswith("NonDeterministicCallError"), failed.value
    assert "workflow.random()" in str(failed.value)


@pytest.mark.parametrize("on_replay", [False, True], ids=["on-signal", "on-replay"])
def test_a_workflow_that_kills_its_host_is_quarantined_and_50_neighbours_complete(
        client: rayline.Client, namespace: str, storage: str, tmp_path: Any,
        on_replay: bool) -> None:
    flag = str(tmp_path / "kill")
    open(flag, "w").close()
    bad = client.workflow.start(wf.poison, args=[flag, on_replay], workflow_id="poison")
    wait_until(lambda: [p.kind for p in bad.describe().pending] == ["wait"])
    kinds = ["signal"] * 20 + ["sleep"] * 15 + ["activity"] * 15
    neighbours = [client.workflow.start(wf.neighbour, args=[kind], workflow_id=f"n{i}")
                  for i, kind in enumerate(kinds)]
    if on_replay:  # once it is parked, the signal's wake replays it (and kills the host)
        runs = RunStore(open_store(storage), namespace)
        wait_until(lambda: dict(runs.open_workflows(bad.describe().host)).get("poison")
                   is not None)
    with pytest.raises(rayline.QuarantinedError, match="release"):
        bad.signal("go", "now")  # its host dies twice, then the run is held
    described = bad.describe()
    assert described.state is RunStatus.QUARANTINED and "2 times" in (described.error or "")
    wait_until(lambda: any(s.state is RunStatus.QUARANTINED  # the index follows shortly
                           for s in client.workflow.list()))

    for i, kind in enumerate(kinds):
        if kind == "signal":
            neighbours[i].signal("go", i)
    results = [h.result() for h in neighbours]
    assert results == [str(i) if k == "signal" else "slept" if k == "sleep" else "4.0"
                       for i, k in enumerate(kinds)]

    os.remove(flag)  # the code is fixed
    bad.release()
    bad.signal("go", "at last")  # the one that killed the host never became durable
    assert bad.result() == "survived at last"


def test_a_task_queue_reserves_memory_for_each_of_its_hosts(client: rayline.Client) -> None:
    with pytest.raises(rayline.InvalidInputError, match="memory=.* more than any node"):
        rayline.Worker.create(client, task_queue="huge", memory=2**50)
    mib = 2**20
    before = ray.available_resources().get("memory", 0)
    rayline.Worker.create(client, task_queue="lean", workflows=[wf.order], hosts=2,
                          memory=64 * mib)
    wait_until(lambda: before - ray.available_resources().get("memory", 0) == 128 * mib)
    handle = client.workflow.start(wf.add_one, args=[1], task_queue="lean")
    assert handle.result() == 2
    assert handle.describe().task_queue == "lean"
