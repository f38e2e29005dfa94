"""The host and workflow actors over real storage, with an in-process backend (no Ray)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any, Awaitable, Callable

import pytest

from rayline import RetryPolicy, _serde, failures
from rayline._code import CodeRef
from rayline.core import replay_timeline
from rayline.errors import (
    CorruptTimelineError,
    DuplicateWorkflowError,
    InvalidInputError,
    NotHereError,
    QueryError,
    StorageError,
    UpdateRejectedError,
    WorkflowClosedError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from rayline.export import build_export
from rayline.messages import PendingWork, RunOutcome, SignalIn, StartReply, StartRequest
from rayline.storage import LocalStore, MemoryStore, RunStore
from rayline.timeline import RunOptions

from . import flows
from .local import LocalBackend, make_host


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 20))


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Waits until ``predicate()`` holds; fails the test after ``timeout`` seconds."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


async def holds(predicate: Callable[[], bool], duration: float) -> None:
    """Checks that ``predicate()`` stays true for ``duration`` seconds (that nothing
    happens), failing as soon as it does not."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    while loop.time() < end:
        assert predicate()
        await asyncio.sleep(0.01)
    assert predicate()


def recorded_events(runs: RunStore, workflow_id: str) -> list[str]:
    """The types of the events in the stored timeline of the run's latest epoch."""
    started = runs.read_run(workflow_id)
    return [e.type for b in runs.read_batches(workflow_id, started.epoch, started.run_id)
            for e in b.events]


def request(fn: Any, *args: Any, workflow_id: str = "wf", **extra: Any) -> StartRequest:
    return StartRequest(workflow_id=workflow_id, workflow_name=fn.name, code=CodeRef.of(fn),
                        args=_serde.encode_args(args, what="test"), task_queue="default",
                        **extra)


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def test_a_workflow_runs_and_fences_over_s3(s3_url: str) -> None:
    from rayline.storage import open_store

    runs = RunStore(open_store(s3_url), "test")

    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.gather_then_chain, 1))
        assert value(await host.result("wf")) == [2, 2, 102, 107, 214]
        await host.start(request(flows.waits_many, 2, workflow_id="two"))
        backend = LocalBackend()
        other = await make_host(runs, backend, name="h1")  # a second owner, from S3
        assert await other.adopt("two") is None  # h0, not in its backend, is not told
        await other.signal("two", "item", _serde.encode("a"))
        with pytest.raises(NotHereError, match="h1"):  # fenced: sent where the run went
            await host.signal("two", "item", _serde.encode("stale owner"))
        await other.signal("two", "item", _serde.encode("b"))
        assert value(await other.result("two")) == ["a", "b"]

    run(main)


def value(outcome: dict[str, Any]) -> Any:
    assert outcome.status == "completed" and outcome.result is not None, outcome
    return _serde.decode(outcome.result)


def test_start_result_and_stored_timeline_replays_without_new_commands(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.gather_then_chain, 1))
        assert value(await host.result("wf")) == [2, 2, 102, 107, 214]
        started = runs.read_run("wf")
        batches = runs.read_batches("wf", started.epoch, started.run_id)
        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        instance, unfinished = replay_timeline(flows.gather_then_chain, started, batches)
        assert unfinished == [] and instance.closing is not None
        assert instance.activate([], batches[-1].time) == []

    run(main)


def test_recovery_after_host_loss_does_not_rerun_recorded_activities(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        await host.start(request(flows.step_then_wait, 1))
        # the first activity ran and its result is durable; the run waits for "go"
        await until(lambda: "activity_completed" in recorded_events(runs, "wf"))
        host.abandon()
        backend2 = LocalBackend()
        fresh = await make_host(runs, backend2)
        assert "wf" in fresh.executions
        await fresh.signal("wf", "go", _serde.encode("now"))
        assert value(await fresh.result("wf")) == [2, "now", 3]
        # the first activity's result was recorded before the crash: it ran once
        assert [e[1] for e in backend.executions] == [1]
        assert [e[1] for e in backend2.executions] == [3]

    run(main)


def test_two_owners_of_one_run_the_second_writer_is_fenced(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        first = await make_host(runs, backend, name="h0")
        await first.start(request(flows.waits_many, 2))
        second = await make_host(runs, backend, name="h1")
        del backend.hosts["h0"]  # h0 does not hear that h1 took the run over
        assert await second.adopt("wf") is None
        backend.hosts["h0"] = first
        first_actor = first.executions["wf"]
        await second.signal("wf", "item", _serde.encode("a"))
        with pytest.raises(NotHereError):
            await first.signal("wf", "item", _serde.encode("stale"))
        assert first_actor.fenced and "wf" not in first.executions
        await second.signal("wf", "item", _serde.encode("b"))
        assert value(await second.result("wf")) == ["a", "b"]
        started = runs.read_run("wf")
        owners = [b.owner for b in runs.read_batches("wf", started.epoch, started.run_id)]
        assert owners == ["h0", "h1", "h1", "h1"]  # the move, then nothing from h0

    run(main)


def test_torn_last_batch_is_set_aside_and_a_torn_middle_batch_is_refused(
        runs: RunStore, tmp_path: Any) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.gather_then_chain, 5))
        await host.result("wf")

    run(main)
    started = runs.read_run("wf")
    folder = os.path.join(str(tmp_path), "test", "wf", "wf", "t", f"{started.epoch:08d}")
    names = sorted(os.listdir(folder))
    last = os.path.join(folder, names[-1])
    with open(last, "r+b") as fh:
        fh.truncate(os.path.getsize(last) // 2)
    assert names == ["00000002", "00000003", "00000004"]  # batch 1 lives in the run object
    batches = runs.read_batches("wf", started.epoch, started.run_id)
    assert [b.seq for b in batches] == [1, 2, 3]
    assert sorted(os.listdir(folder)) == names  # a reader leaves storage alone
    batches = runs.read_batches("wf", started.epoch, started.run_id, repair=True)
    assert [b.seq for b in batches] == [1, 2, 3]
    assert any(".torn-" in n for n in os.listdir(folder))  # the owner sets it aside
    first = os.path.join(folder, names[0])
    with open(first, "r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"XXX")
    with pytest.raises(CorruptTimelineError):
        runs.read_batches("wf", started.epoch, started.run_id)


class FlakyStore(MemoryStore):
    """Fails the next ``failures`` writes to timeline batches (a named fault hook)."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        if "/t/" in key and self.failures > 0:
            self.failures -= 1
            raise StorageError(f"injected failure writing {key}")
        super().put(key, data, exclusive=exclusive, durable=durable)


def test_failed_writes_are_retried_and_the_workflow_never_runs_ahead() -> None:
    store = FlakyStore("flaky-test", failures=3)
    runs = RunStore(store, "test")

    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        await host.start(request(flows.gather_then_chain, 1))
        assert value(await host.result("wf")) == [2, 2, 102, 107, 214]
        assert len(backend.executions) == 5  # no activity ran before its schedule was durable

    run(main)
    assert store.failures == 0


def test_start_many_returns_each_reply_or_error_in_its_place(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        replies = await host.start_many([request(flows.one_step, 1, workflow_id="a"),
                                         request(flows.waits, None, workflow_id="a"),
                                         request(flows.one_step, 2, workflow_id="b")])
        assert isinstance(replies[0], StartReply) and isinstance(replies[2], StartReply)
        assert replies[0].workflow_id == "a" and replies[2].workflow_id == "b"
        assert isinstance(replies[1], DuplicateWorkflowError)
        assert [value(await host.result(w)) for w in ("a", "b")] == [2, 3]

    run(main)


def test_results_returns_once_one_is_done_with_none_for_the_running(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits, None, workflow_id="slow"))
        await host.start(request(flows.one_step, 1, workflow_id="quick"))
        slow, quick = await host.results(["slow", "quick"])
        assert slow is None and value(quick) == 2
        assert not host.executions["slow"].closed.is_set()
        [missing] = await host.results(["missing"])
        assert isinstance(missing, WorkflowNotFoundError)

    run(main)


def test_duplicate_ids_and_reuse_policies(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits, None))
        with pytest.raises(DuplicateWorkflowError):
            await host.start(request(flows.waits, None))
        await host.start(request(flows.one_step, 1, id_reuse_policy="terminate_if_running"))
        assert value(await host.result("wf")) == 2
        with pytest.raises(DuplicateWorkflowError):
            await host.start(request(flows.one_step, 1, id_reuse_policy="reject_duplicate"))
        with pytest.raises(DuplicateWorkflowError):
            await host.start(request(flows.one_step, 1,
                                     id_reuse_policy="allow_duplicate_failed_only"))
        reply = await host.start(request(flows.one_step, 5))
        assert value(await host.result("wf")) == 6
        assert runs.epochs("wf") == [1, 2, 3]
        assert reply.run_id == runs.read_run("wf").run_id

    run(main)


def test_a_signal_handler_gets_the_signals_sent_before_it_in_order(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.handles_signals, 25))
        for i in range(24):  # all before the handler exists (the workflow sleeps)
            await host.signal("wf", "item", _serde.encode(i))
        # waiting on its own state for the 25th: parked until a signal comes
        await until(lambda: host.parking.parked.get("wf") == math.inf)
        await host.signal("wf", "item", _serde.encode(24))
        assert value(await host.result("wf")) == list(range(25))
        started, batches = runs.load("wf")
        instance, unfinished = replay_timeline(flows.handles_signals, started, batches)
        assert unfinished == []  # the replay issues exactly what was recorded

        await host.start(request(flows.default_and_async_handlers, workflow_id="d"))
        await until(lambda: "d" in host.parking.parked)  # waiting on a predicate: parked
        await host.signal("d", "a", _serde.encode(1))
        await host.signal("d", "slow", _serde.encode(2))
        await host.signal("d", "b", _serde.encode(3))
        seen, done, timed_out = value(await host.result("d"))
        assert sorted(map(tuple, seen)) == [("a", 1), ("b", 3), ("slow", 2)]
        assert (done, timed_out) == (True, False)

    run(main)


def test_a_delayed_start_runs_no_code_before_its_time_even_signalled_or_restarted(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        reply = await host.start(request(flows.waits, None, start_delay=0.6))
        started = runs.read_run("wf")
        assert started.not_before is not None and started.v == 3
        assert reply.run_id == started.run_id and "wf" in host.parking.parked
        assert runs.read_batches("wf", 1, started.run_id) == []  # no code ran yet
        await until(lambda: dict(runs.open_workflows(host.host_name)).get("wf") is not None)
        host.abandon()  # a restart in the delay keeps it waiting
        again = await make_host(runs)
        assert "wf" in again.parking.parked
        signalled = asyncio.ensure_future(again.signal("wf", "go", _serde.encode("early")))
        await asyncio.sleep(0.1)
        assert runs.read_batches("wf", 1, started.run_id) == []  # the signal waits too
        await signalled
        first = runs.read_batches("wf", 1, started.run_id)[0]
        assert first.time >= started.not_before  # code ran only once the delay ended
        assert value(await again.result("wf")) == "early"
        with pytest.raises(InvalidInputError, match="cannot be combined with signals"):
            await again.start(request(flows.waits, None, workflow_id="both", start_delay=1,
                                      signals=[SignalIn(signal_id="go", data=_serde.encode(1))]))

    run(main)


def _retried(fn: Any, *args: Any, attempts: int, **extra: Any) -> StartRequest:
    policy = RetryPolicy(maximum_attempts=attempts, initial_interval=0.05)
    return request(fn, *args, options=RunOptions(retry=policy.to_json()), **extra)


def test_a_failing_workflow_runs_again_by_its_retry_policy(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(_retried(flows.fails_first, "a", 3, attempts=4))
        assert value(await host.result("wf")) == "done on attempt 4"
        assert runs.epochs("wf") == [1, 2, 3, 4]
        failed = runs.load("wf", 1)[1][-1].commands[-1]
        assert failed.type == "fail_workflow" and failed.retry_in == 0.05
        assert [runs.read_run("wf", e).attempt for e in (1, 2, 3, 4)] == [1, 2, 3, 4]

        await host.start(_retried(flows.fails_first, "b", 3, attempts=2, workflow_id="out"))
        outcome = await host.result("out")
        assert outcome.status == "failed" and outcome.failure is not None
        assert outcome.failure.code == 597 and runs.epochs("out") == [1, 2]
        assert outcome.failure.cause is not None
        assert outcome.failure.cause.message == "attempt 2 failed"
        error = failures.workflow_error(outcome.failure)
        assert isinstance(error, WorkflowFailedError) and error.code == 597
        assert "attempt 2 failed" in str(error.__cause__)

        await host.start(_retried(flows.fails, "no retry for this", attempts=3,
                                  workflow_id="plain"))  # ValueError: retried too
        assert (await host.result("plain")).failure.code == 597

    run(main)


def test_a_retry_backoff_survives_its_host_dying(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        policy = RetryPolicy(maximum_attempts=2, initial_interval=0.5)
        await host.start(request(flows.fails_first, "c", 1,
                                 options=RunOptions(retry=policy.to_json())))
        await until(lambda: runs.epochs("wf") == [1] and RunOutcome.of_run(
            runs.load("wf", 1)[1]) is not None)
        host.abandon()  # dies during the backoff: the next run is not made yet
        assert runs.epochs("wf") == [1]
        again = await make_host(runs)  # recovers the closed run and waits the rest
        assert value(await again.result("wf")) == "done on attempt 2"
        assert runs.epochs("wf") == [1, 2]

    run(main)


def test_calls_during_a_retry_backoff_go_on_and_a_terminate_calls_the_retry_off(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        slow = RetryPolicy(maximum_attempts=3, initial_interval=0.5)
        await host.start(request(flows.fails_then_waits,
                                 options=RunOptions(retry=slow.to_json())))
        await until(lambda: "wf" in host._backoffs)
        described = await host.describe("wf")  # answers at once, in the backoff
        assert described.state == "continued" and runs.epochs("wf") == [1]
        await host.signal("wf", "go", _serde.encode("carried"))  # held for attempt 2
        assert runs.epochs("wf") == [1, 2]
        assert value(await host.result("wf")) == "carried"

        await host.start(request(flows.fails_first, "t", 5, workflow_id="off",
                                 options=RunOptions(retry=RetryPolicy(
                                     maximum_attempts=5, initial_interval=30).to_json())))
        await until(lambda: "off" in host._backoffs)
        exported = build_export(*runs.load("off"))  # waiting to retry: not done
        assert exported.status == 1 and exported.state is not None
        assert (exported.state.done, exported.state.status) == (False, "retrying")
        waiting = asyncio.ensure_future(host.result("off"))
        await host.terminate("off", "not worth another try")  # at once, not in 30 s
        outcome = await waiting
        assert outcome.status == "terminated" and outcome.reason == "not worth another try"
        assert runs.epochs("off") == [1] and "off" not in host._backoffs
        host.abandon()
        again = await make_host(runs)  # a restart does not bring the retry back
        assert (await again.result("off")).status == "terminated"
        assert runs.epochs("off") == [1]

    run(main)


def test_a_signal_sent_again_after_its_run_closed_is_answered_as_taken(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits, None))
        await host.signal("wf", "go", _serde.encode(1), None, "sent-once")
        assert value(await host.result("wf")) == 1
        # the caller lost the answer (its host restarted) and sends it again: done
        await host.signal("wf", "go", _serde.encode(1), None, "sent-once")
        with pytest.raises(WorkflowClosedError):  # a new signal to a closed run
            await host.signal("wf", "go", _serde.encode(2), None, "another")

    run(main)


def test_cancelling_a_workflow_reaches_a_wait_on_its_state(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.waits_on_state))
        await until(lambda: "wf" in host.parking.parked)
        await host.cancel("wf")
        assert value(await host.result("wf")) == "cancelled"

    run(main)


def test_terminate_existing_reaches_a_parked_run_without_waiting_on_itself(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.waits, None))
        await until(lambda: "wf" in host.parking.parked)
        reply = await host.start(request(flows.one_step, 1,
                                         id_conflict_policy="terminate_existing"))
        assert not reply.existing and runs.epochs("wf") == [1, 2]
        assert runs.load("wf", 1)[1][-1].terminated is not None
        assert value(await host.result("wf")) == 2

    run(main)


def test_a_closed_workflow_answers_queries_from_its_timeline(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.searchable))
        assert value(await host.result("wf")) == {"count": 3}
        assert await host.query("wf", "count", ()) == 3  # in memory: it just closed
        fresh = await make_host(runs)  # a host that never ran it: replayed from storage
        assert await fresh.query("wf", "count", ()) == 3
        replayed = dict(fresh._replayed)
        assert await fresh.query("wf", "count", ()) == 3  # the same replay answers again
        assert fresh._replayed == replayed and list(replayed) == [runs.read_run("wf").run_id]
        with pytest.raises(QueryError, match="no query handler 'nope'"):
            await fresh.query("wf", "nope", ())

    run(main)


def test_id_conflict_policies_for_an_open_run(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        first = await host.start(request(flows.waits, None))
        again = await host.start(request(flows.waits, None, id_conflict_policy="use_existing"))
        assert again.existing and again.run_id == first.run_id and runs.epochs("wf") == [1]
        with pytest.raises(DuplicateWorkflowError, match="id_conflict_policy=fail"):
            await host.start(request(flows.waits, None, id_conflict_policy="fail"))
        with pytest.raises(InvalidInputError, match="id_conflict_policy must be one of"):
            await host.start(request(flows.waits, None, id_conflict_policy="merge"))
        fresh = await host.start(request(flows.one_step, 1,
                                         id_conflict_policy="terminate_existing"))
        assert not fresh.existing and runs.epochs("wf") == [1, 2]
        assert runs.load("wf", 1)[1][-1].terminated is not None
        assert value(await host.result("wf")) == 2

    run(main)


def test_concurrent_signal_with_start_makes_one_run_with_every_signal_in_caller_order(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)

        def call(caller: int) -> StartRequest:  # each caller: two signals, in order
            return request(flows.waits_many, 40, id_conflict_policy="use_existing",
                           signals=[SignalIn(signal_id="item", data=_serde.encode([caller, n]),
                                             request_id=f"{caller}-{n}") for n in (0, 1)])
        replies = await asyncio.gather(*(host.start(call(c)) for c in range(20)))
        assert len({r.run_id for r in replies}) == 1 and runs.epochs("wf") == [1]
        assert sum(not r.existing for r in replies) == 1
        got = value(await host.result("wf"))
        assert sorted(map(tuple, got)) == [(c, n) for c in range(20) for n in (0, 1)]
        for caller in range(20):
            assert got.index([caller, 0]) < got.index([caller, 1])

    run(main)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b", "x\x00y", "tab\there", "", "a" * 1001,
                                 ".hidden"])
def test_bad_workflow_ids_are_refused_and_nothing_is_written(runs: RunStore, bad: str) -> None:
    async def main() -> None:
        host = await make_host(runs)
        with pytest.raises(InvalidInputError):
            await host.start(request(flows.one_step, 1, workflow_id=bad))

    run(main)
    assert runs.all_workflow_keys() == []


def test_unknown_workflow_name_names_what_is_registered(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        host.register([flows.one_step])
        with pytest.raises(InvalidInputError, match="unknown workflow_name 'nope'.*one_step"):
            await host.start(StartRequest(workflow_id="x", workflow_name="nope",
                                          task_queue="default"))
        await host.start(StartRequest(workflow_id="y", workflow_name="one_step",
                                      args=_serde.encode_args((1,), what="t"),
                                      task_queue="default"))
        assert value(await host.result("y")) == 2

    run(main)


def test_signals_to_finished_unknown_and_early_workflows(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.one_step, 1))
        await host.result("wf")
        with pytest.raises(WorkflowClosedError):
            await host.signal("wf", "go", _serde.encode(1))
        with pytest.raises(WorkflowNotFoundError):
            await host.signal("ghost", "go", _serde.encode(1))
        await host.signal("later", "go", _serde.encode("early"), None, None, True)
        await host.start(request(flows.waits, None, workflow_id="later"))
        assert value(await host.result("later")) == "early"

    run(main)


def test_terminate_stops_the_run_and_twice_is_an_error(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits, None))
        await until(lambda: [p.kind for p in host.executions["wf"].pending()] == ["wait"])
        await host.terminate("wf", "operator said so")
        outcome = await host.result("wf")
        assert outcome.status == "terminated" and outcome.reason == "operator said so"
        with pytest.raises(WorkflowClosedError):
            await host.terminate("wf")
        assert (await host.describe("wf")).status < 0

    run(main)


def test_continue_as_new_is_followed_by_result(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.continues, 3))
        assert value(await host.result("wf")) == 42
        assert runs.epochs("wf") == [1, 2, 3, 4]
        stats = await host.stats()  # what the host's metrics count
        assert (stats.started, stats.closed) == (4, {"continued": 3, "completed": 1})

        await host.start(request(flows.hands_over, 1, workflow_id="relay"))
        assert value(await host.result("relay")) == 11  # one_step(10), as the next run
        assert runs.read_run("relay").workflow_name == "one_step"
        assert runs.epochs("relay") == [1, 2]

    run(main)


def test_host_stats_count_activity_attempts_retries_included(runs: RunStore) -> None:
    async def main() -> None:
        flows.ATTEMPTS.clear()
        host = await make_host(runs)
        await host.start(request(flows.retries, 2))
        assert value(await host.result("wf")) == "ok after 3"
        stats = await host.stats()
        assert (stats.started, stats.attempts, stats.closed) == (1, 3, {"completed": 1})

    run(main)


def test_children_and_workflow_to_workflow_signals(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent, 10, workflow_id="p"))
        result = value(await host.result("p"))
        assert result[0] == 11 and result[1].startswith("p-one_step-")
        assert runs.read_run("child-of-10").parent.workflow_id == "p"
        await host.start(request(flows.waits, None, workflow_id="target"))
        await host.start(request(flows.signaller, "target", workflow_id="sender"))
        assert value(await host.result("sender")) == "sent"
        assert value(await host.result("target")) == "from-a-workflow"

    run(main)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_timer_that_came_due_while_nothing_ran_fires_on_recovery(runs: RunStore) -> None:
    clock = FakeClock()

    async def main() -> None:
        host = await make_host(runs, clock=clock)
        await host.start(request(flows.sleeper, 3600))
        await until(lambda: host.executions["wf"].batches_written > 0)
        host.abandon()
        clock.now += 3601  # an hour passes with no host running
        fresh = await make_host(runs, clock=clock)
        # the hour-long timer fires at once; the 1 s asyncio.sleep after it is fresh
        await until(lambda: fresh.executions["wf"].pending()
                    == [PendingWork(seq=2, kind="asyncio_timer")])
        started = runs.read_run("wf")
        batches = runs.read_batches("wf", started.epoch, started.run_id)
        timer = next(c for c in batches[-1].commands if c.type == "start_timer")
        assert timer.fire_at == clock.now + 1

    run(main)


def test_idle_runs_are_parked_and_woken_by_their_timer_or_a_signal(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.sleeper, 0.4, workflow_id="sleepy"))
        await host.start(request(flows.step_then_wait, 1, workflow_id="waiting"))
        await until(lambda: {"sleepy", "waiting"} <= set(host.parking.parked))
        assert "sleepy" not in host.executions and host.parking.parked["waiting"] == float("inf")
        result = asyncio.ensure_future(host.result("waiting"))  # waits without waking
        await holds(lambda: "waiting" in host.parking.parked and not result.done(), 0.1)
        await host.signal("waiting", "go", _serde.encode("hello"))
        assert value(await result) == [2, "hello", 3]
        assert value(await host.result("sleepy")) == 0.4  # woken by its timer

    run(main)


def test_an_external_handle_with_a_run_id_reaches_that_run_only(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        first = (await host.start(request(flows.waits, None, workflow_id="t"))).run_id
        await host.start(request(flows.signals_run, "t", first, workflow_id="s1"))
        assert value(await host.result("s1")) == "sent"
        assert value(await host.result("t")) == "to that run"
        await host.start(request(flows.waits, None, workflow_id="t"))  # a second run
        await host.start(request(flows.signals_run, "t", first, workflow_id="s2"))
        assert value(await host.result("s2")).startswith("refused: cannot signal run")
        await host.start(request(flows.signals_run, "t", "no-such-run", workflow_id="s3"))
        assert "not found" in value(await host.result("s3"))
        assert (await host.describe("t")).status > 0  # the open run got neither

    run(main)


def test_continue_as_new_onto_another_task_queue_runs_the_next_run_on_its_hosts(
        runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        here = await make_host(runs, backend)
        there = await make_host(runs, backend, name="h1")
        backend.queues["gpu"] = "h1"
        await here.start(request(flows.moves_to, "gpu", workflow_id="m"))
        await here.signal("m", "before", _serde.encode(1))
        await until(lambda: "m" in there.executions)
        assert runs.read_run("m").task_queue == "gpu" and runs.read_run("m").epoch == 2
        await there.signal("m", "after", _serde.encode("a signal"))
        assert value(await there.result("m")) == "ran on gpu, got a signal"
        assert (await here.result("m", follow=False)).status == "continued"
        assert "m" not in dict(runs.open_workflows("h0"))  # the first host let it go

    run(main)


@pytest.mark.parametrize("fail", [False, True])
def test_a_cron_start_runs_at_each_time_as_a_new_run_of_the_id(runs: RunStore,
                                                              fail: bool) -> None:
    base = time.time()
    tick = math.ceil(base / 60) * 60 + 60.0  # the clock reads 0.3 s before a minute

    async def main() -> None:
        host = await make_host(runs, clock=lambda: time.time() + (tick - 0.3 - base))
        await host.start(request(flows.says_when, fail, workflow_id="c",
                                 options=RunOptions(cron="* * * * *")))
        first = runs.read_run("c")
        assert first.not_before == tick and first.v == 4  # no code before the first time
        await until(lambda: runs.latest_epoch("c") == 2)  # run 1 ran; run 2 waits
        second = runs.read_run("c")
        assert second.not_before == tick + 60 and second.continued_from == first.run_id
        assert second.args == first.args and second.attempt == 1
        closed = RunOutcome.of_run(runs.read_batches("c", 1, first.run_id))
        assert closed is not None and closed.status == "continued"
        assert closed.next_run_at == tick + 60
        if fail:
            assert closed.failure is not None and "this run fails" in closed.failure.message
        else:
            assert closed.result is not None and _serde.decode(closed.result) == tick
        await host.terminate("c", "stop the schedule")  # ends the chain
        assert (await host.result("c")).status == "terminated"

    run(main)


def test_a_restarted_host_keeps_parked_runs_parked_until_due(runs: RunStore) -> None:
    clock = FakeClock()

    async def main() -> None:
        host = await make_host(runs, park_after=0.01, clock=clock)
        await host.start(request(flows.waits, None, workflow_id="w"))
        await until(lambda: "w" in host.parking.parked)
        # the parked hint is written in the background: wait until it is in storage
        await until(lambda: runs.open_workflows("h0") == [("w", math.inf)])
        host.abandon()
        fresh = await make_host(runs, park_after=0.01, clock=clock)
        assert fresh.parking.parked == {"w": float("inf")} and fresh.executions == {}
        await fresh.signal("w", "go", _serde.encode(7))
        assert value(await fresh.result("w")) == 7

    run(main)


def test_execution_timeout_terminates_a_run_that_is_still_open(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.01)
        await host.start(request(flows.waits, None, options=RunOptions(execution_timeout=0.3)))
        outcome = await host.result("wf")
        assert outcome.status == "terminated"
        assert outcome.reason == "execution_timeout exceeded"

    run(main)


def test_cancel_from_another_workflow_and_cancel_reaching_a_child(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.cancellable, workflow_id="victim"))
        await host.start(request(flows.canceller, "victim", workflow_id="killer"))
        assert value(await host.result("killer")) == "cancel sent"
        assert value(await host.result("victim")) == "cancelled:refunded"
        await host.start(request(flows.parent_cancelled_with_child, workflow_id="p"))
        await until(lambda: "the-child" in host.executions)
        await host.cancel("p")
        assert value(await host.result("p")) == "parent saw cancel"
        assert value(await host.result("the-child")) == "cancelled:refunded"

    run(main)


def test_updates_are_checked_recorded_answered_once_and_replay(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.cart, 3, workflow_id="cart"))

        async def update(name: str | None, *args: Any, update_id: str = "",
                         wait: bool = True) -> Any:
            return await host.update("cart", update_id or os.urandom(8).hex(), name,
                                     _serde.encode_args(args, what="test"), wait)

        first_add = await update("add", "apple")
        assert first_add.result is not None, first_add
        assert _serde.decode(first_add.result) == 1
        before = len(recorded_events(runs, "cart"))
        with pytest.raises(UpdateRejectedError, match="needs a name"):
            await update("add", "")  # the validator refuses it
        with pytest.raises(UpdateRejectedError, match="no update handler 'remove'"):
            await update("remove", "apple")
        with pytest.raises(UpdateRejectedError, match="add"):
            await update("add", 1, 2)  # arguments that do not fit the handler
        assert len(recorded_events(runs, "cart")) == before  # refused: nothing recorded
        failed = await update("break", "on purpose")  # the update fails, the run goes on
        assert failed.failure is not None and failed.failure.type == "builtins.KeyError"
        taken = await update("add", "pear", update_id="u-2", wait=False)
        assert not taken.done
        first = await update("add", "pear", update_id="u-2")  # sent again: answered once
        again = await update("add", "pear", update_id="u-2")
        assert _serde.decode(first.result) == _serde.decode(again.result) == 2
        assert _serde.decode((await update(None, update_id="u-2")).result) == 2
        with pytest.raises(InvalidInputError, match="no update never-sent"):
            await update(None, update_id="never-sent")
        await host.signal("cart", "checkout", _serde.encode(None))
        assert value(await host.result("cart")) == ["apple", "pear"]
        assert _serde.decode((await update(None, update_id="u-2")).result) == 2  # closed
        started = runs.read_run("cart")
        batches = runs.read_batches("cart", started.epoch, started.run_id)
        assert recorded_events(runs, "cart").count("update_accepted") == 3
        replay_timeline(flows.cart, started, batches)  # the same commands: deterministic

    run(main)


def test_a_parent_cancel_waits_for_its_child_to_finish_cancelling(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_slow_to_cancel, "wait_cancellation_completed",
                                 workflow_id="p"))
        await until(lambda: "slow-kid" in host.executions)
        await host.cancel("p")
        await until_pending(host, "slow-kid", "finish")  # the child cleans up, slowly
        assert host.executions["p"].outcome is None  # and the parent waits for it
        await host.signal("slow-kid", "finish", _serde.encode("cleanup"))
        assert value(await host.result("p")) == "parent saw cancel"
        assert value(await host.result("slow-kid")) == "cancelled after cleanup"

    run(main)


def test_try_cancel_answers_the_parent_at_once_and_its_close_terminates_the_child(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_slow_to_cancel, "try_cancel",
                                 workflow_id="p"))
        await until(lambda: "slow-kid" in host.executions)
        await host.cancel("p")
        assert value(await host.result("p")) == "parent saw cancel"
        kid = await host.result("slow-kid")  # still cleaning up: the parent's close ends it
        assert kid.status == "terminated" and "parent p closed" in (kid.reason or "")

    run(main)


def test_children_take_a_retry_policy_and_an_execution_timeout(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_retried_and_timed_out, "kids",
                                 workflow_id="p"))
        assert value(await host.result("p")) == [
            "done on attempt 3", "WorkflowTerminatedError: execution_timeout exceeded"]

    run(main)


def test_a_parent_sees_a_terminated_child_as_a_child_workflow_error(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.parent_of_doomed, workflow_id="p"))
        await until(lambda: "doomed-kid" in host.executions)
        await host.terminate("doomed-kid", "enough")
        assert value(await host.result("p")) == "WorkflowTerminatedError of doomed-kid"

    run(main)


def test_a_parent_closing_terminates_cancels_or_leaves_its_children_by_policy(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        for policy in ("abandon", "request_cancel", "terminate"):
            await host.start(request(flows.parent_leaving, policy, f"kid-{policy}",
                                     workflow_id=f"p-{policy}"))
            assert value(await host.result(f"p-{policy}")) == f"kid-{policy}"
        cancelled = await host.result("kid-request_cancel")
        assert cancelled.status == "cancelled", cancelled
        terminated = await host.result("kid-terminate")
        assert terminated.status == "terminated", terminated
        assert (await host.describe("kid-abandon")).status > 0  # still running
        await host.signal("kid-abandon", "go", _serde.encode("alone"))
        assert value(await host.result("kid-abandon")) == "alone"

    run(main)


async def until_pending(host: Any, workflow_id: str, signal_id: str) -> None:
    async def waiting() -> bool:
        described = await host.describe(workflow_id)
        return any(p.signal_id == signal_id for p in described.pending)

    for _ in range(500):
        if await waiting():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{workflow_id} never waited for {signal_id}")


def test_a_parent_parks_while_its_child_runs_and_wakes_for_its_result(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.parent_waits_for_child, workflow_id="mom"))
        await until(lambda: "mom" in host.parking.parked and "mom-kid" in host.parking.parked)
        await host.signal("mom-kid", "go", _serde.encode("done"))
        assert value(await host.result("mom")) == "child said done"
        started = runs.read_run("mom")
        events = [e.type for b in runs.read_batches("mom", started.epoch, started.run_id)
                  for e in b.events]
        assert events.count("child_completed") == 1  # woken by it, re-attached: once

    run(main)


def test_a_start_on_a_host_that_does_not_know_the_id_respects_the_run_elsewhere(
        runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        first = await make_host(runs, backend, name="h0")
        other = await make_host(runs, backend, name="h1")
        await first.start(request(flows.waits, None, workflow_id="x"))
        with pytest.raises(DuplicateWorkflowError):
            await other.start(request(flows.waits, None, workflow_id="x"))
        assert runs.open_workflows("h1") == []  # the lost race left no marker behind
        await first.signal("x", "go", _serde.encode(1))
        await first.result("x")
        reply = await other.start(request(flows.one_step, 1, workflow_id="x"))
        assert value(await other.result("x")) == 2 and reply.host == "h1"
        assert runs.epochs("x") == [1, 2]

    run(main)


def test_a_child_defined_where_it_cannot_be_imported_travels_by_value(runs: RunStore) -> None:
    import rayline
    from rayline import workflow

    @rayline.workflow
    async def local_child(x: int) -> int:
        return x * 3

    @rayline.workflow
    async def local_parent(x: int) -> int:
        return await workflow.execute_child(local_child, x) + 1  # type: ignore[no-any-return]

    async def main() -> None:
        host = await make_host(runs)
        await host.start(StartRequest(workflow_id="lp", workflow_name="local_parent",
                                      code=CodeRef(pickled=_serde.pickle_b64(local_parent)),
                                      args=_serde.encode_args((5,), what="t"),
                                      task_queue="default"))
        assert value(await host.result("lp")) == 16

    run(main)


class AskingBackend(LocalBackend):
    """Records, with each request to stop a host, whether the host held a run then (in
    memory, parked, stuck, or open in storage)."""

    def __init__(self, runs: RunStore) -> None:
        super().__init__()
        self.runs = runs
        self.held: list[bool] = []

    def retire(self, host: str) -> None:
        super().retire(host)
        h = self.hosts[host]
        self.held.append(bool(h.executions or h.parking or h.stuck or h._backoffs
                              or self.runs.has_open(host)))


def test_a_dedicated_host_asks_to_be_stopped_once_it_holds_no_run(runs: RunStore) -> None:
    name = "host-dedicated-solo"

    async def main() -> None:
        backend = AskingBackend(runs)
        host = await make_host(runs, backend, name=name, park_after=0.05, linger=0.2)
        # started for a call (a start, a reset): a run that comes within the linger
        # keeps it, parked or not
        await host.start(request(flows.waits, None, workflow_id="solo"))
        await until(lambda: "solo" in host.parking.parked)
        await holds(lambda: backend.retiring == [], 0.5)
        await host.signal("solo", "go", _serde.encode("late"))
        assert value(await host.result("solo")) == "late"
        # right after that close: a run that fails and waits out its retry backoff
        # (longer than the linger), then a continue-as-new chain; the host holds the id
        # between their runs
        slow = RetryPolicy(maximum_attempts=2, initial_interval=0.6)
        await host.start(request(flows.fails_first, "d", 1, workflow_id="r",
                                 options=RunOptions(retry=slow.to_json())))
        await until(lambda: "r" in host._backoffs)
        await holds(lambda: backend.retiring == [], 0.4)
        assert value(await host.result("r")) == "done on attempt 2"
        await host.start(request(flows.continues, 3, workflow_id="c"))
        assert value(await host.result("c")) == 42
        await until(lambda: backend.retiring == [name])
        assert backend.held == [False]

        host.abandon()  # started again with nothing to hold (a call about a closed run)
        again = AskingBackend(runs)
        await make_host(runs, again, name=name, linger=0.1)
        await until(lambda: again.retiring == [name])

        pool = await make_host(runs, backend, name="h0", linger=0.05)  # a pool's host
        await pool.start(request(flows.one_step, 1, workflow_id="p"))
        assert value(await pool.result("p")) == 2
        await holds(lambda: backend.retiring == [name], 0.3)  # never asks

    run(main)
