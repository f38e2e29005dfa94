"""Moving runs between hosts and code versions (``rayline versions upgrade``): a host
adopts a run only if its timeline replays on the host's code and none of its activities
is running; the old host lets go; the run then lives, and recovers, only on its new host."""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from typing import Any, Awaitable, Callable

import pytest

from rayline import _serde
from rayline._code import CodeRef
from rayline.engine.host import Host
from rayline.engine.registry import Registry, pick
from rayline.errors import InvalidInputError, NotHereError
from rayline.messages import CodeVersion, StartRequest
from rayline.storage import LocalStore, MemoryStore, RunStore

from . import flows
from .local import LocalBackend
from .test_host import request
from .test_registry import Launcher


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


@pytest.fixture(autouse=True)
def old_code(monkeypatch: Any) -> None:
    monkeypatch.setattr(flows, "upgradable", flows.upgradable_v1)


def new_code() -> None:
    """What the hosts of version 2 import from here on (hosts keep the code they loaded,
    as processes do)."""
    flows.upgradable = flows.upgradable_v2


async def versioned_host(runs: RunStore, backend: LocalBackend, name: str, version: str,
                         park_after: float | None = None) -> Host:
    host = Host(name, runs, backend, version=version, park_after=park_after)
    backend.hosts[name] = host
    await host.recover()
    return host


def upgradable(workflow_id: str, early: bool) -> StartRequest:
    return StartRequest(workflow_id=workflow_id, workflow_name="upgradable",
                        code=CodeRef(path="tests.unit.flows:upgradable"),
                        args=_serde.encode_args((early,), what="test"), task_queue="default")


def go() -> Any:
    return _serde.encode(None)


def test_a_moved_run_runs_the_new_code_there_and_only_there(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1")
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(upgradable("same", early=False))
        new_code()
        assert await new.adopt("same") is None
        assert (await new.stats()).adopted == 1
        assert "same" not in old.executions and runs.open_workflows("h-v1") == []
        assert [w for w, _ in runs.open_workflows("h-v2")] == ["same"]
        described = await new.describe("same")
        assert (described.version, described.host) == ("v2", "h-v2")
        assert backend.reports[-1].version == "v2" and backend.reports[-1].host == "h-v2"
        with pytest.raises(NotHereError, match="h-v2"):  # the old host sends callers on
            await old.signal("same", "go", go())
        started = runs.read_run("same")
        move = runs.read_batches("same", started.epoch, started.run_id)[-1]
        assert (move.owner, move.version, move.v) == ("h-v2", "v2", 2)

        new.abandon()  # the new host dies; its next incarnation resumes the run
        again = await versioned_host(runs, backend, "h-v2", "v2")
        assert "same" in again.executions
        runs.mark_open("h-v1", "same")  # as if the old host's marker had been left behind
        restarted_old = await versioned_host(runs, LocalBackend(), "h-v1", "v1")
        assert restarted_old.executions == {} and restarted_old.stuck == {}
        assert runs.open_workflows("h-v1") == []  # it saw the run is not its own
        await again.signal("same", "go", go())
        assert (await again.result("same")).result == _serde.encode("v2")

    run(main)


def test_a_run_that_does_not_replay_on_the_new_code_stays_and_finishes_on_the_old(
        runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1")
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(upgradable("early", early=True))
        await asyncio.sleep(0)
        for _ in range(100):
            if (await old.describe("early")).pending[0].kind == "wait":
                break
            await asyncio.sleep(0.01)
        new_code()
        why = await new.adopt("early")
        assert why is not None and "NonDeterminismError" in why and "v2" in why
        started = runs.read_run("early")
        owners = {b.owner for b in runs.read_batches("early", started.epoch, started.run_id)}
        assert owners == {"h-v1"} and runs.open_workflows("h-v2") == []
        assert (await old.describe("early")).version == "v1"
        await old.signal("early", "go", go())
        assert (await old.result("early")).result == _serde.encode("v1")
        assert await new.adopt("early") == "it has closed"

    run(main)


def test_a_run_whose_activity_is_running_is_not_moved(runs: RunStore) -> None:
    async def main() -> None:
        flows.GATE.clear()
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1")
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(request(flows.gated, workflow_id="busy"))
        why = await new.adopt("busy")
        assert why is not None and "gated_step" in why and "running" in why
        flows.GATE.set()
        assert (await old.result("busy")).result == _serde.encode("through")

    run(main)


def test_a_parked_run_moves_and_wakes_on_its_new_host(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1", park_after=0)
        new = await versioned_host(runs, backend, "h-v2", "v2", park_after=60)
        await old.start(upgradable("parked", early=False))
        new_code()
        for _ in range(100):
            if "parked" in old.parking:
                break
            await asyncio.sleep(0.01)
        assert "parked" in old.parking
        assert await new.adopt("parked") is None
        assert "parked" not in old.parking and runs.open_workflows("h-v1") == []
        # it stays parked there (replayed once to check, never held in memory)
        assert "parked" in new.parking and "parked" not in new.executions
        assert runs.open_workflows("h-v2") == [("parked", math.inf)]
        assert backend.reports[-1].host == "h-v2" and backend.reports[-1].version == "v2"
        await new.signal("parked", "go", go())
        assert (await new.result("parked")).result == _serde.encode("v2")

    run(main)


def test_two_moves_of_one_run_to_one_host_move_it_once(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1")
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(upgradable("twice", early=False))
        new_code()
        assert await asyncio.gather(new.adopt("twice"), new.adopt("twice")) == [None, None]
        assert [w for w, _ in runs.open_workflows("h-v2")] == ["twice"]  # marker kept
        started = runs.read_run("twice")
        moves = [b for b in runs.read_batches("twice", started.epoch, started.run_id)
                 if b.version == "v2"]
        assert len(moves) == 1
        await new.signal("twice", "go", go())
        assert (await new.result("twice")).result == _serde.encode("v2")

    run(main)


def test_a_terminate_that_races_a_move_tells_the_caller_to_look_again(
        runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1")
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(upgradable("raced", early=False))
        new_code()
        del backend.hosts["h-v1"]  # the old host does not hear it let go
        assert await new.adopt("raced") is None
        assert "raced" in old.executions  # it still thinks the run is its own
        with pytest.raises(NotHereError):  # its terminate is not written: not done
            await old.terminate("raced", "stop")
        assert (await new.describe("raced")).outcome is None
        await new.terminate("raced", "stop")
        assert (await new.result("raced")).status.name == "TERMINATED"

    run(main)


def test_a_run_moved_while_it_wakes_is_let_go_cleanly(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        old = await versioned_host(runs, backend, "h-v1", "v1", park_after=0)
        new = await versioned_host(runs, backend, "h-v2", "v2")
        await old.start(upgradable("waking", early=False))
        new_code()
        for _ in range(100):
            if "waking" in old.parking:
                break
            await asyncio.sleep(0.01)
        gate, loaded = threading.Event(), threading.Event()
        load = old._load_owned

        def slow_load(workflow_id: str) -> Any:  # the wake reads the timeline before
            found = load(workflow_id)            # the move, and ends after it
            loaded.set()
            gate.wait(10)
            return found

        old._load_owned = slow_load  # type: ignore[method-assign]
        waking = asyncio.ensure_future(old.parking.wake("waking"))
        await asyncio.to_thread(loaded.wait, 10)
        asyncio.get_running_loop().call_later(0.2, gate.set)
        assert await new.adopt("waking") is None
        woken = (await asyncio.gather(waking, return_exceptions=True))[0]
        assert woken is None or isinstance(woken, NotHereError)
        await asyncio.sleep(0.05)  # any marker rewrite the wake asked for has landed
        assert "waking" not in old.executions and "waking" not in old.parking
        assert runs.open_workflows("h-v1") == []
        await new.signal("waking", "go", go())
        assert (await new.result("waking")).result == _serde.encode("v2")

    run(main)


# ------------------------------------------------------------------ registry


def test_the_registry_sends_each_open_run_of_the_old_version_to_its_new_host() -> None:
    runs = RunStore(MemoryStore(f"u-{uuid.uuid4().hex}"), "t")

    async def main() -> None:
        launcher = Launcher()  # its hosts record what they are asked to adopt
        registry = Registry(runs, runs.store.url, launcher)
        v1, v2 = CodeVersion(id="v1"), CodeVersion(id="v2", runtime_env={"pip": ["x"]})
        await registry.configure("q", 2, {}, version=v1)
        await registry.dedicated_host("solo", "q", v1)
        await registry.hosts_for("other", CodeVersion(id="v0"))
        for workflow_id in ("a", "b", "c"):
            runs.mark_open(f"host-q-v1-{workflow_id == 'b':d}", workflow_id)
        runs.mark_open("host-dedicated-v1-solo", "solo")
        runs.mark_open("host-other-v0-0", "elsewhere")  # another version: not touched

        with pytest.raises(InvalidInputError, match="unknown code version 'v2'"):
            await registry.upgrade("v1", "v2")
        with pytest.raises(InvalidInputError, match="itself"):
            await registry.upgrade("v1", "v1")
        with pytest.raises(InvalidInputError):
            await registry.upgrade("../v1", "v0")
        assert launcher.adopted == []

        launcher.refuse["c"] = "its timeline does not replay"
        report = await registry.upgrade("v1", v2)  # a driver's own version, new so far
        pool = ["host-q-v2-0", "host-q-v2-1"]
        assert sorted(launcher.adopted) == sorted([
            (pick(pool, "a"), "a", False), (pick(pool, "b"), "b", False),
            (pick(pool, "c"), "c", False), ("host-dedicated-v2-solo", "solo", False)])
        assert sorted(report.moved) == ["a", "b", "solo"]
        assert report.left == {"c": "its timeline does not replay"}
        assert launcher.versions["host-q-v2-0"] == v2  # started with the new code
        assert (await registry.upgrade("v1", "v2", ["c"])).left == {
            "c": "its timeline does not replay"}  # by id, now that v2 is known
        # a start pinned to a known version by its id goes to that version's hosts
        assert await registry.hosts_for("q", "v1") == ["host-q-v1-0", "host-q-v1-1"]
        assert await registry.dedicated_host("pin", "q", "v2") == "host-dedicated-v2-pin"
        with pytest.raises(InvalidInputError, match="unknown code version 'nope'"):
            await registry.hosts_for("q", "nope")

    asyncio.run(asyncio.wait_for(main(), 20))


def test_unset_optional_fields_are_not_written_so_an_older_rayline_reads_the_object() -> None:
    """An older rayline refuses keys it does not know: an object that leaves a later
    field unset must not name it (``v`` says which format a field that is set needs)."""
    import json

    from rayline.timeline import Batch, CompleteWorkflow, WorkflowStarted

    started = WorkflowStarted(workflow_id="w", run_id="r", epoch=1, workflow_name="n",
                              args=[], task_queue="q", host="h", time=1.0, seed=1)
    batch = Batch(seq=1, run_id="r", time=1.0,
                  commands=[CompleteWorkflow(result={"j": None})])  # a None result stays
    for obj, later in ((started, {"not_before", "reset_from", "trace", "version",
                                  "request_id", "parent", "continued_from"}),
                       (batch, {"terminated", "reset", "version"})):
        text = obj.model_dump_json()
        assert not set(json.loads(text)) & later, text
        assert type(obj).model_validate_json(text) == obj
    assert json.loads(batch.model_dump_json())["commands"][0]["result"] == {"j": None}
