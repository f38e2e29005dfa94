"""Reset and fork on an in-process host: a new run takes over the recorded steps before
a point and goes on live with the current code."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rayline
from rayline import _serde, workflow
from rayline.engine.reset import kept_batches, replayed
from rayline.errors import DuplicateWorkflowError, InvalidInputError
from rayline.export import build_execution
from rayline.messages import ResetRequest, RunOutcome
from rayline.storage import LocalStore, RunStore

from . import flows
from .local import make_host
from .test_host import request, run, value


@rayline.workflow(name="five_numbered")
async def five_numbered_changed() -> list[int]:
    """``flows.five_numbered`` with its second step changed (it diverges at activation 2)."""
    first = await workflow.execute_activity(flows.numbered_step, 1)
    return [first, await workflow.execute_activity(flows.second_step, first)]


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


@pytest.fixture(autouse=True)
def numbered() -> Any:
    flows.NUMBERED.update(calls=[], bug=True, times=10)
    yield
    flows.NUMBERED.update(calls=[], bug=True, times=10)


def test_reset_to_the_last_failure_reruns_only_the_failed_step_and_after(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.five_numbered, workflow_id="job"))
        assert (await host.result("job")).status == "failed"
        assert flows.NUMBERED["calls"] == [1, 2, 3, 4]
        old = runs.read_run("job")
        flows.NUMBERED["bug"] = False  # the fix
        reply = await host.reset(ResetRequest(workflow_id="job", to="last_failure",
                                              reason="fixed step 4", request_id="r1"))
        assert value(await host.result("job")) == [10, 20, 30, 40, 50]
        assert flows.NUMBERED["calls"] == [1, 2, 3, 4, 4, 5]  # 1-3 not run again
        new = runs.read_run("job")
        assert new.run_id == reply.run_id and new.epoch == old.epoch + 1
        assert new.reset_from is not None and new.reset_from.run_id == old.run_id
        ended = RunOutcome.of_run(runs.read_batches("job", old.epoch, old.run_id))
        assert ended is not None and ended.status == "reset" and ended.reset_to == new.run_id
        assert (await host.describe("job")).reset_from == old.run_id
        again = await host.reset(ResetRequest(workflow_id="job", to="last_failure",
                                              request_id="r1"))  # sent again: the same
        assert again.run_id == reply.run_id

    run(main)


def test_fork_from_a_step_runs_it_and_after_on_new_code_and_leaves_the_original(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        flows.NUMBERED["bug"] = False
        await host.start(request(flows.five_numbered, workflow_id="done"))
        assert value(await host.result("done")) == [10, 20, 30, 40, 50]
        original = runs.read_batches("done", 1, runs.read_run("done").run_id)
        flows.NUMBERED["times"] = 100  # new code from step 3 on
        third = [e for e in build_execution(runs.read_run("done"), original).events
                 if e.event_type == "activity_task_scheduled"][2]
        reply = await host.reset(ResetRequest(workflow_id="done", to=third.event_id,
                                              new_workflow_id="copy"))
        assert reply.workflow_id == "copy"
        assert value(await host.result("copy")) == [10, 20, 300, 400, 500]
        assert runs.read_batches("done", 1, runs.read_run("done").run_id) == original
        assert value(await host.result("done")) == [10, 20, 30, 40, 50]
        with pytest.raises(DuplicateWorkflowError):
            await host.reset(ResetRequest(workflow_id="done",
                                          to=third.attributes["timeline_key"],
                                          new_workflow_id="copy"))

    run(main)


def test_signals_after_the_point_go_to_the_new_run(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits_many, 2, workflow_id="w"))
        await host.signal("w", "item", _serde.encode("a"))
        await host.signal("w", "item", _serde.encode("b"))
        assert value(await host.result("w")) == ["a", "b"]
        await host.reset(ResetRequest(workflow_id="w", to=1))  # its start: all again
        assert value(await host.result("w")) == ["a", "b"]  # both signals applied again

    run(main)


def test_reset_points_that_name_nothing_or_do_not_replay_are_refused(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        flows.NUMBERED["bug"] = False
        await host.start(request(flows.five_numbered, workflow_id="ok"))
        await host.result("ok")
        for to, match in (("first_activity_failure", "no activity failed"),
                          ("-proxy-99-", "made no call 99"), (999, "has events 1 to"),
                          ("somewhere", "not a marker key")):
            with pytest.raises(InvalidInputError, match=match):
                await host.reset(ResetRequest(workflow_id="ok", to=to))
        started = runs.read_run("ok")
        batches = runs.read_batches("ok", started.epoch, started.run_id)
        assert kept_batches(started, batches, "last_replayable", lambda: 2) == 2
        assert replayed(flows.five_numbered, started, batches, None) == len(batches)
        assert replayed(flows.two_steps, started, batches, None) == 0  # other calls at once
        assert replayed(five_numbered_changed, started, batches, None) == 1

    run(main)


def test_a_reset_run_hears_the_children_its_kept_steps_started(runs: RunStore) -> None:
    """The kept steps started a child that is still open: the old run's close ends it (its
    parent close policy), and the new run starts it again instead of waiting forever."""
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_waits_for_child, workflow_id="p"))
        started = runs.read_run("p")
        await _until(lambda: len(runs.read_batches("p", started.epoch, started.run_id)) >= 2)
        kid = runs.read_run("mom-kid")
        await host.reset(ResetRequest(workflow_id="p", to="last_replayable", request_id="r1"))
        assert runs.read_run("p").reset_from.kept == 2  # the child's start kept
        await _until(lambda: runs.read_run("mom-kid").epoch == kid.epoch + 1)
        await host.signal("mom-kid", "go", _serde.encode("hi"))
        assert value(await asyncio.wait_for(host.result("p"), 10)) == "child said hi"

    run(main)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
