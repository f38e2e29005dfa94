"""Failure paths of the host and the workflow actor, over real storage without Ray.

Each test names the defect it guards (issue "Failure paths", defects 1-16 and the low and
suspected ones); each failed before its fix.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any, Awaitable, Callable

import pydantic
import pytest

from rayline import _serde
from rayline.client import AsyncClient
from rayline.errors import (
    InvalidInputError,
    NonDeterminismError,
    StorageError,
)
from rayline.messages import PendingWork
from rayline.storage import MemoryStore, RunStore

from . import flows
from .local import LocalBackend, LocalConnection, make_host
from .test_host import request, value


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout))


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


class Hooked(MemoryStore):
    """A memory store with named fault hooks: ``on_put(key, data)`` and ``on_get(key)``
    and ``on_list(prefix)`` may raise or act before the call goes through."""

    def __init__(self) -> None:
        super().__init__(f"hooked-{uuid.uuid4().hex}")
        self.on_put: Callable[[str, bytes], None] | None = None
        self.after_put: Callable[[str], None] | None = None
        self.on_get: Callable[[str], None] | None = None
        self.on_list: Callable[[str], list[str] | None] | None = None

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        if self.on_put is not None:
            self.on_put(key, data)
        super().put(key, data, exclusive=exclusive, durable=durable)
        if self.after_put is not None:
            self.after_put(key)

    def get(self, key: str) -> bytes:
        if self.on_get is not None:
            self.on_get(key)
        return super().get(key)

    def list(self, prefix: str) -> list[str]:
        if self.on_list is not None:
            override = self.on_list(prefix)
            if override is not None:
                return override
        return super().list(prefix)


class EndpointConnectionError(Exception):
    """Stands in for botocore's: not an OSError, not a rayline error."""


def fail_times(n: int, error: Callable[[], BaseException], when: Callable[[str], bool]
               ) -> Callable[..., None]:
    left = [n]

    def hook(key: str, *_: Any) -> None:
        if when(key) and left[0] > 0:
            left[0] -= 1
            raise error()
    return hook


@pytest.fixture
def runs() -> RunStore:
    """A fresh in-memory namespace for the test."""
    return RunStore(MemoryStore(f"m-{uuid.uuid4().hex}"), "t")


def signals_recorded(runs: RunStore, workflow_id: str) -> list[Any]:
    out = []
    for epoch in runs.epochs(workflow_id):
        _, batches = runs.load(workflow_id, epoch)
        out += [_serde.decode(e.data) for b in batches for e in b.events
                if e.type == "signal_received"]
    return out


# ---------------------------------------------------------------- defect 1


def test_1_a_foreign_exception_from_storage_does_not_kill_the_actor() -> None:
    store = Hooked()
    runs = RunStore(store, "t")

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits_many, 2))
        store.on_put = fail_times(2, lambda: EndpointConnectionError("no endpoint"),
                                  lambda key: "/t/" in key)
        await host.signal("wf", "item", _serde.encode("a"))
        await host.signal("wf", "item", _serde.encode("b"))
        assert value(await host.result("wf")) == ["a", "b"]

    run(main)


# ---------------------------------------------------------------- defect 2


def test_2_a_write_that_landed_but_reported_failure_does_not_fence_its_owner() -> None:
    store = Hooked()
    runs = RunStore(store, "t")
    landed = fail_times(1, lambda: StorageError("response lost"), lambda key: "/t/" in key)

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits_many, 2))
        store.after_put = landed
        await host.signal("wf", "item", _serde.encode("a"))  # acknowledged, not ConflictError
        await host.signal("wf", "item", _serde.encode("b"))
        assert value(await host.result("wf")) == ["a", "b"]
        assert not host.executions and "wf" not in host.stuck

    run(main)
    assert signals_recorded(runs, "wf") == ["a", "b"]  # each once


# ---------------------------------------------------------------- defect 3


def test_3_a_host_fenced_by_its_own_zombie_takes_the_run_back(runs: RunStore) -> None:
    async def main() -> None:
        live = await make_host(runs)
        await live.start(request(flows.waits_many, 3))
        zombie = await make_host(runs)  # an old incarnation of the same host, still writing
        await zombie.signal("wf", "item", _serde.encode("from zombie"))
        zombie.abandon()  # ...and then it dies
        await live.signal("wf", "item", _serde.encode("a"))  # fenced, retaken, delivered
        await live.signal("wf", "item", _serde.encode("b"))
        assert value(await live.result("wf")) == ["from zombie", "a", "b"]

    run(main)


def test_3_a_host_fenced_by_another_host_sends_callers_there(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        first = await make_host(runs, backend, name="h0")
        await first.start(request(flows.waits_many, 2))
        other = await make_host(runs, backend, name="h1")
        del backend.hosts["h0"]  # h0 does not hear that h1 took the run over
        assert await other.adopt("wf") is None
        backend.hosts["h0"] = first
        await other.signal("wf", "item", _serde.encode("a"))
        from rayline.errors import NotHereError
        with pytest.raises(NotHereError, match="h1"):
            await first.signal("wf", "item", _serde.encode("lost?"))
        await other.signal("wf", "item", _serde.encode("b"))
        assert value(await other.result("wf")) == ["a", "b"]
        assert runs.open_workflows("h0") == []

    run(main)


# ---------------------------------------------------------------- defect 5


def test_5_a_child_that_continues_as_new_reaches_its_parent(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_continuing_child, workflow_id="p"))
        assert value(await host.result("p")) == "parent got child done"
        assert runs.epochs("cc") == [1, 2, 3]

    run(main)


def test_5_a_continued_child_reaches_its_parent_after_a_restart(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_waiting_child, workflow_id="p"))
        await until(lambda: runs.epochs("cw") == [1, 2, 3] and "cw" in host.executions
                    and host.executions["cw"].pending() != [])
        host.abandon()
        fresh = await make_host(runs)
        await fresh.signal("cw", "go", _serde.encode("hi"))
        assert value(await fresh.result("p")) == "parent got hi"

    run(main)


# ---------------------------------------------------------------- defect 6


def test_6_idempotency_keys_differ_per_run_and_hold_across_retries(runs: RunStore) -> None:
    flows.KEYS.clear()

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.monthly_charges, 3, [], workflow_id="cust-42"))
        return value(await host.result("cust-42"))

    keys = run(main)
    assert len(keys) == 3 and len(set(keys)) == 3  # three charges, three keys
    # the retried charge (months == 2) kept its key over both attempts
    assert flows.KEYS.count(keys[1]) == 2 and len(flows.KEYS) == 4
    run_ids = [runs.read_run("cust-42", epoch).run_id for epoch in runs.epochs("cust-42")]
    assert [run_id in key for run_id, key in zip(run_ids, keys, strict=True)] == [True] * 3


# ---------------------------------------------------------------- defect 7


def test_7_workflows_defined_in_a_loop_each_run_their_own_code(runs: RunStore) -> None:

    def make(i: int) -> Any:
        async def numbered() -> int:
            return i
        return numbered

    async def main() -> list[Any]:
        backend = LocalBackend()
        await make_host(runs, backend)
        client = AsyncClient(storage="memory://unused", connection=LocalConnection(backend))
        handles = []
        for i in range(60):
            handles.append(await client.workflow.start(make(i), workflow_id=f"n{i}"))
            gc.collect()  # the definition is gone: its id() may be reused by the next one
        return [await h.result() for h in handles]

    assert run(main, 60) == list(range(60))


# ---------------------------------------------------------------- defect 8


def test_8_a_fire_and_forget_child_that_finished_before_recovery_does_not_hang(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.fire_and_forget_parent, workflow_id="p"))
        await until(lambda: runs.epochs("ff-child") == [1])
        assert value(await host.result("ff-child")) == 2
        await until(lambda: host.executions["p"].pending() != [])
        host.abandon()
        # the parent's batch recording the child's start is lost (it crashed before it)
        started = runs.read_run("p")
        names = runs.store.list(f"t/wf/p/t/{started.epoch:08d}")
        runs.store.delete(f"t/wf/p/t/{started.epoch:08d}/{names[-1]}")
        fresh = await make_host(runs)
        await until(lambda: "p" in fresh.executions and fresh.executions["p"].pending() != []
                    and fresh.executions["p"].pending()[0].kind == "wait")
        await fresh.signal("p", "go", _serde.encode("go on"))
        assert value(await fresh.result("p")) == "go on"

    run(main)


# ---------------------------------------------------------------- defect 9


def test_9_a_run_that_no_longer_replays_is_stuck_visibly_and_resumes_when_fixed(
        runs: RunStore) -> None:
    flows.MODE["version"] = 1

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.switchable))
        await until(lambda: host.executions["wf"].pending() == [
            PendingWork(seq=2, kind="wait", signal_id="go")])
        host.abandon()
        flows.MODE["version"] = 2  # a non-deterministic change is deployed
        backend = LocalBackend()
        fresh = await make_host(runs, backend)
        with pytest.raises(NonDeterminismError, match="activation 1.*recorded.*now issues"):
            await fresh.signal("wf", "go", _serde.encode(1))
        with pytest.raises(NonDeterminismError):
            await fresh.result("wf")
        info = await fresh.describe("wf")
        assert info.state == "stuck" and "NonDeterminismError" in (info.error or "")
        assert backend.reports[-1].state == "stuck"
        flows.MODE["version"] = 1  # the fix is deployed
        await fresh.recover()
        await fresh.signal("wf", "go", _serde.encode("fixed"))
        assert value(await fresh.result("wf")) == "fixed"

    try:
        run(main)
    finally:
        flows.MODE["version"] = 1


def test_9_a_stuck_run_can_be_terminated(runs: RunStore) -> None:
    flows.MODE["version"] = 1

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.switchable))
        await until(lambda: host.executions["wf"].pending() != [] and
                    host.executions["wf"].pending()[0].kind == "wait")
        host.abandon()
        flows.MODE["version"] = 2
        fresh = await make_host(runs)
        await fresh.terminate("wf", "bad deploy")
        assert (await fresh.result("wf")).status == "terminated"
        await until(lambda: runs.open_workflows("h0") == [])

    try:
        run(main)
    finally:
        flows.MODE["version"] = 1


# ---------------------------------------------------------------- defect 10


def test_10_a_signal_buffered_just_after_the_run_was_created_is_delivered() -> None:
    store = Hooked()
    runs = RunStore(store, "t")

    async def main() -> None:
        backend = LocalBackend()
        h0 = await make_host(runs, backend, name="h0")
        h1 = await make_host(runs, backend, name="h1")
        await h0.start(request(flows.waits, None, workflow_id="late"))
        stale = [True]

        def first_check_sees_no_run(prefix: str) -> list[str] | None:
            if prefix.endswith("/late/runs") and stale[0]:
                stale[0] = False  # the check ran before the start created the run
                return []
            return None
        store.on_list = first_check_sees_no_run
        await h1.signal("late", "go", _serde.encode("early bird"), None, "r1", True)
        assert value(await h0.result("late")) == "early bird"

    run(main)


def test_10_a_signal_buffered_while_the_run_is_created_is_delivered() -> None:
    store = Hooked()
    runs = RunStore(store, "t")

    async def main() -> None:
        host = await make_host(runs)
        other = RunStore(store, "t")

        def buffer_meanwhile(key: str, _: bytes) -> None:
            if "/runs/" in key and store.on_put is not None:
                store.on_put = None  # the start already read the (empty) buffer
                from rayline.timeline import SignalReceived
                other.buffer_early_signal("racy", SignalReceived(
                    signal_id="go", data=_serde.encode("in between"), request_id="r2"))
        store.on_put = buffer_meanwhile
        await host.start(request(flows.waits, None, workflow_id="racy"))
        assert value(await host.result("racy")) == "in between"
        await until(lambda: list(runs.take_early_signals("racy")) == [])

    run(main)


# ---------------------------------------------------------------- defect 12


def test_12_a_parked_run_whose_wake_read_fails_still_wakes() -> None:
    store = Hooked()
    runs = RunStore(store, "t")

    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.sleeper, 0.5, workflow_id="sleepy"))
        await until(lambda: "sleepy" in host.parking.parked)
        # more failures than one wake's retries: the wake itself must be tried again
        store.on_get = fail_times(8, lambda: StorageError("S3 503"),
                                  lambda key: "/sleepy/runs/" in key)
        assert value(await host.result("sleepy")) == 0.5

    run(main)


# ---------------------------------------------------------------- defect 16


def test_16_signals_sent_during_continue_as_new_reach_the_next_runs_once(runs: RunStore) -> None:
    async def main() -> list[Any]:
        host = await make_host(runs)
        await host.start(request(flows.collector, 12, [], workflow_id="col"))
        await asyncio.gather(*(host.signal("col", "item", _serde.encode(i), None, f"s{i}")
                               for i in range(12)))
        return value(await host.result("col"))

    got = run(main)
    assert sorted(got) == list(range(12))
    assert len(runs.epochs("col")) > 1


# ---------------------------------------------------------------- low


def test_low_system_exit_in_workflow_code_fails_that_workflow_only(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.exits, workflow_id="x"))
        outcome = await host.result("x")
        assert outcome.status == "failed" and outcome.failure is not None
        assert "SystemExit" in outcome.failure.type
        await host.start(request(flows.one_step, 1, workflow_id="y"))
        assert value(await host.result("y")) == 2

    run(main)


@pytest.mark.parametrize("field", ["search", "memo"])
@pytest.mark.parametrize("bad", [float("nan"), {1, 2}])
def test_low_a_bad_memo_or_search_value_is_refused_before_anything_is_written(
        runs: RunStore, field: str, bad: Any) -> None:

    async def main() -> None:
        host = await make_host(runs)
        # a value that is no JSON at all cannot even be put in the request; NaN can, and
        # the host refuses it
        with pytest.raises((InvalidInputError, pydantic.ValidationError),
                           match=rf"{field}( field '|\.)k"):
            await host.start(request(flows.one_step, 1, **{field: {"k": bad}}))

    run(main)
    assert runs.open_workflows("h0") == [] and runs.all_workflow_keys() == []


def test_low_client_refuses_an_empty_id_a_long_queue_and_bad_fields() -> None:
    async def main() -> None:
        backend = LocalBackend()
        await make_host(RunStore(MemoryStore(f"m-{uuid.uuid4().hex}"), "t"), backend)
        client = AsyncClient(storage="memory://unused", connection=LocalConnection(backend))
        with pytest.raises(InvalidInputError, match="empty"):
            await client.workflow.start(flows.one_step, args=[1], workflow_id="")
        with pytest.raises(InvalidInputError, match="task queue"):
            await client.workflow.start(flows.one_step, args=[1], task_queue="q" * 101)
        for reserved in ("dedicated", "dedicated-gpu"):  # pool hosts host-dedicated-...
            with pytest.raises(InvalidInputError, match="reserved"):
                await client.workflow.start(flows.one_step, args=[1], task_queue=reserved)
        with pytest.raises(InvalidInputError, match="memo field 'x'"):
            await client.workflow.start(flows.one_step, args=[1], memo={"x": float("inf")})

    run(main)


def test_low_continue_as_new_and_parking_keep_bounded_state(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.continues, 5))
        assert value(await host.result("wf")) == 42
        await until(lambda: not host._continuing)
        for i in range(1000):  # a run parked and woken again and again
            host.parking.add("w", 1e12 + i)
        assert len(host.parking._heap) <= 2 * len(host.parking) + 64

    run(main)


# ------------------------------------------------------------- suspected


def test_suspected_a_start_or_signal_sent_again_is_answered_once(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        first = await host.start(request(flows.waits_many, 2, request_id="start-1"))
        again = await host.start(request(flows.waits_many, 2, request_id="start-1"))
        assert again.run_id == first.run_id
        for _ in range(2):  # the host died between the write and the reply; sent again
            await host.signal("wf", "item", _serde.encode("once"), None, "sig-1")
        await host.signal("wf", "item", _serde.encode("twice"), None, "sig-2")
        assert value(await host.result("wf")) == ["once", "twice"]

    run(main)
    assert signals_recorded(runs, "wf") == ["once", "twice"]


def test_suspected_a_childs_outcome_is_delivered_however_long_the_parent_is_away(
        runs: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline import _backoff

    monkeypatch.setattr(_backoff, "FIRST", 0.001)
    monkeypatch.setattr(_backoff, "CAP", 0.002)

    class Unreachable(LocalBackend):
        """The parent's host does not answer deliveries 40 times (more than 30)."""

        left = 40

        def host(self, name: str) -> Any:
            real, backend = super().host(name), self

            class Flaky:
                def __getattr__(self, attr: str) -> Any:
                    return getattr(real, attr)

                async def deliver(self, *args: Any) -> None:
                    if backend.left > 0:
                        backend.left -= 1
                        from rayline.errors import NotHereError
                        raise NotHereError("host restarting")
                    await real.deliver(*args)
            return Flaky()

    async def main() -> None:
        backend = Unreachable()
        h0 = await make_host(runs, backend, name="h0")  # where children are placed
        h1 = await make_host(runs, backend, name="h1")
        await h1.start(request(flows.parent_waits_for_child, workflow_id="mom"))
        await until(lambda: "mom-kid" in h0.executions)
        await h0.signal("mom-kid", "go", _serde.encode("x"))
        assert value(await h1.result("mom")) == "child said x"
        assert backend.left == 0

    run(main)


# ------------------------------------------------------------ trust boundary


class Opaque:
    """A value that can only be pickled (unpickling it runs this module's code)."""

    def __init__(self, size: int) -> None:
        self.blob = b"x" * size


def test_exports_show_pickled_values_by_type_and_size_without_unpickling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline import export

    payload = _serde.encode(Opaque(100))
    assert "p" in payload

    real, calls = _serde.unpickle_b64, []

    def counted(text: str) -> Any:
        calls.append(text)
        return real(text)
    monkeypatch.setattr(_serde, "unpickle_b64", counted)
    shown = export._decode_quietly(payload)
    assert shown["pickled"].endswith("Opaque") and shown["bytes"] > 100
    assert calls == []  # nothing from storage was unpickled
    with export.unpickling(True):
        assert "Opaque object" in export._decode_quietly(payload)
    assert len(calls) == 1  # only when asked


def test_10_a_signal_buffered_for_the_first_run_never_reaches_a_later_one(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.signal("once", "go", _serde.encode("early"), None, "r1", True)
        await host.start(request(flows.waits, None, workflow_id="once"))
        assert value(await host.result("once")) == "early"
        host.abandon()
        # the buffer was not tidied before the host died: the signal is still there
        from rayline.timeline import SignalReceived
        runs.buffer_early_signal("once", SignalReceived(
            signal_id="go", data=_serde.encode("early"), request_id="r1"))
        fresh = await make_host(runs)
        await fresh.start(request(flows.waits, 0.2, workflow_id="once"))
        assert value(await fresh.result("once")) is False  # run 2 waited in vain

    run(main)
