"""``rayline.testing``: workflows under test without Ray, with time that skips ahead, and
one activity under test with its heartbeats and a cancellation.

No test here may start Ray: each one checks that no Ray was initialised and no Ray
process was spawned while it ran, and one runs an environment with ``ray`` unimportable.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from typing import Any, Awaitable, Callable, Iterator

import psutil
import pytest

import rayline
from rayline import ActivityCancelledError, ActivityInfo, RetryPolicy, workflow
from rayline.testing import ActivityEnvironment, WorkflowEnvironment
from rayline.testing._loop import SkippingLoop

WALL_BOUND = 10.0
"""Seconds of wall time a skipped week may take at most (it takes milliseconds)."""


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 60))


def _ray_processes() -> set[int]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if any(name in child.name() for name in ("raylet", "gcs_server", "plasma")):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@pytest.fixture(autouse=True)
def no_ray() -> Iterator[None]:
    """Fails a test that started Ray (another test of the session may have, before)."""
    initialized, processes = _ray_initialized(), _ray_processes()
    yield
    assert _ray_initialized() == initialized, "the test initialised Ray"
    assert _ray_processes() <= processes, "the test spawned Ray processes"


# ------------------------------------------------------------------ workflows


@rayline.workflow
async def approval(order_id: str) -> str:
    decision = await workflow.condition("approve", timeout="7d")
    if decision is False:
        return f"{order_id}: expired"
    return f"{order_id}: approved by {decision}"


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def charge(order_id: str, cents: int) -> str:
    raise RuntimeError("a test must never charge a card")


@rayline.workflow
async def checkout(order_id: str, cents: int) -> str:
    return await workflow.execute_activity(charge, order_id, cents)


@rayline.workflow
async def nap() -> str:
    await workflow.sleep("1d")
    return "rested"


@rayline.activity
def send_reminder(order_id: str) -> str:
    raise RuntimeError("a test must never send e-mail")


@rayline.workflow
async def remind_tomorrow(order_id: str) -> str:
    await workflow.sleep("1d")
    return await workflow.execute_activity(send_reminder, order_id)


@rayline.activity(start_to_close="5s", retry=RetryPolicy(maximum_attempts=1))
def slow_double(x: int) -> int:
    time.sleep(0.3)  # wall time, on a thread: the 5 s timer must not be skipped to
    return 2 * x


@rayline.activity(heartbeat_timeout="5s", retry=RetryPolicy(maximum_attempts=1))
async def ask_over_a_socket(x: int) -> int:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        mine.setblocking(False)
        threading.Timer(0.3, theirs.send, args=[str(x + 1).encode()]).start()
        rayline.heartbeat("asked")
        loop = asyncio.get_running_loop()  # the answer comes in 0.3 s of wall time
        return int(await asyncio.wait_for(loop.sock_recv(mine, 16), 5))


@rayline.workflow
async def work_then_wait_a_month(x: int) -> int:
    doubled = await workflow.execute_activity(slow_double, x)
    incremented = await workflow.execute_activity(ask_over_a_socket, doubled)
    await workflow.sleep("30d")
    return incremented


@rayline.workflow
async def note_the_time(first: str, then: str) -> list[float]:
    """Sleeps ``first``, then ``then``, noting the workflow's time after each."""
    began = workflow.now()
    noted = []
    for duration in (first, then):
        await workflow.sleep(duration)
        noted.append((workflow.now() - began).total_seconds())
    return noted


ATTEMPTS: list[str] = []


@rayline.activity(schedule_to_close="50m",
                  retry=RetryPolicy(initial_interval="30m", backoff_coefficient=1,
                                    maximum_attempts=10))
def never_works() -> None:
    ATTEMPTS.append(rayline.activity_info().workflow_id)
    raise ConnectionError("down")


@rayline.workflow
async def retry_for_50_minutes() -> int:
    try:
        await workflow.execute_activity(never_works)
    except rayline.ActivityError as exc:
        return exc.attempt
    return 0


# ------------------------------------------------------------ environments


@pytest.mark.parametrize("form", ["async", "sync"])
def test_an_approval_not_given_in_7_days_expires_in_well_under_a_second(form: str) -> None:
    began = time.monotonic()
    if form == "sync":
        with WorkflowEnvironment.start_time_skipping_sync() as sync_env:
            start = sync_env.now()
            sync_handle = sync_env.client.workflow.start(approval, args=["order-1"])
            result = sync_handle.result(timeout=WALL_BOUND)
            skipped = sync_env.now() - start
    else:
        async def main() -> tuple[str, timedelta]:
            async with await WorkflowEnvironment.start_time_skipping() as env:
                start = env.now()
                handle = await env.client.workflow.start(approval, args=["order-1"])
                return await handle.result(timeout=WALL_BOUND), env.now() - start
        result, skipped = run(main)
    assert result == "order-1: expired"
    assert skipped >= timedelta(days=7)  # the timer fired on the environment's clock
    assert time.monotonic() - began < WALL_BOUND  # because time skipped, not waited


def test_an_approval_signal_returns_the_approved_value() -> None:
    async def main() -> None:
        async with await WorkflowEnvironment.start_time_skipping() as env:
            handle = await env.client.workflow.start(approval, args=["order-2"],
                                                     workflow_id="order-2")
            await asyncio.sleep(0.2)  # time runs at wall speed while the test is busy
            await handle.signal("approve", "alice")
            assert await handle.result(timeout=WALL_BOUND) == "order-2: approved by alice"
            page = await env.client.workflow.list(workflow_name="approval")
            assert [summary.workflow_id for summary in page] == ["order-2"]

    run(main)


@pytest.mark.parametrize("key", ["charge", charge], ids=["by-name", "by-definition"])
def test_an_activity_is_replaced_by_the_function_given_for_it(key: Any) -> None:
    calls: list[tuple[str, int]] = []

    def fake_charge(order_id: str, cents: int) -> str:
        calls.append((order_id, cents))
        return f"receipt {order_id} {cents}"

    async def main() -> None:
        async with await WorkflowEnvironment.start_local(activities={key: fake_charge}) as env:
            result = await env.client.workflow.execute(checkout, args=["order-3", 1250])
            assert result == "receipt order-3 1250"

    run(main)
    assert calls == [("order-3", 1250)]


def test_sleep_advances_time_and_a_one_day_durable_sleep_completes_after_it() -> None:
    sent: list[str] = []

    def fake_send(order_id: str) -> str:
        sent.append(order_id)
        return f"reminded {order_id}"

    async def main() -> None:
        async with await WorkflowEnvironment.start_time_skipping(
                activities={"send_reminder": fake_send}) as env:
            start = env.now()
            handle = await env.client.workflow.start(remind_tomorrow, args=["order-5"])
            await asyncio.sleep(0.2)  # no result awaited: time does not skip by itself
            assert (await handle.describe()).status > 0 and sent == []  # still sleeping
            assert env.now() - start < timedelta(hours=1)
            await asyncio.wait_for(env.sleep("1d"), WALL_BOUND)
            assert env.now() - start >= timedelta(days=1)
            assert sent == ["order-5"]  # what came due has run when sleep returns
            assert (await handle.describe()).status == 0  # completed, without result()
            assert await handle.result() == "reminded order-5"

    run(main)


def test_a_dedicated_workflow_parks_on_its_host_and_its_host_asks_to_go_once_it_closed(
        ) -> None:
    async def main() -> None:
        async with await WorkflowEnvironment.start_time_skipping() as env:
            handle = await env.client.workflow.start(approval, args=["order-9"],
                                                     workflow_id="order-9", dedicated=True)
            registry = (await env.client.connection()).registry()
            await asyncio.wait_for(env.sleep("1d"), WALL_BOUND)  # it waits, parked
            assert (await registry.stats()).calls.get("retire", 0) == 0
            await handle.signal("approve", "bob")
            assert await handle.result(timeout=WALL_BOUND) == "order-9: approved by bob"
            await asyncio.wait_for(env.sleep("1m"), WALL_BOUND)  # past the host's linger
            assert (await registry.stats()).calls["retire"] == 1  # here, the host stays
            described = await handle.describe()
            assert described.host.startswith("host-dedicated-") and described.status == 0
            assert await handle.result() == "order-9: approved by bob"

    run(main)


def test_sleep_0_returns_once_what_is_due_has_run() -> None:
    calls: list[str] = []

    def slow_fake_charge(order_id: str, cents: int) -> str:
        time.sleep(0.3)
        calls.append(order_id)
        return "receipt"

    async def main() -> None:
        async with await WorkflowEnvironment.start_local(
                activities={"charge": slow_fake_charge}) as env:
            handle = await env.client.workflow.start(checkout, args=["order-6", 1])
            await env.sleep(0)  # the activity, then the workflow's close, have run
            assert calls == ["order-6"]
            assert (await handle.describe()).status == 0

    run(main)


def test_time_does_not_skip_while_an_activity_runs() -> None:
    """A sync activity's 5 s ``start_to_close``, and an async one's 5 s
    ``heartbeat_timeout`` and 5 s wait for a socket, are timers of the environment's
    loop: if time skipped while the activities ran (0.3 s of wall time each), they
    would time out."""
    async def main() -> None:
        async with await WorkflowEnvironment.start_time_skipping() as env:
            start = env.now()
            handle = await env.client.workflow.start(work_then_wait_a_month, args=[20])
            assert await handle.result(timeout=WALL_BOUND) == 41
            assert env.now() - start >= timedelta(days=30)

    run(main)


def test_each_timer_fires_at_its_time_however_far_ahead_the_next_one_is() -> None:
    """Time skips to each timer exactly, never past it: both runs park between their
    timers (waking replays them), and each wakes at its own time, an hour apart."""
    async def main() -> None:
        async with await WorkflowEnvironment.start_time_skipping() as env:
            a = await env.client.workflow.start(note_the_time, args=["1d", "1d"])
            b = await env.client.workflow.start(note_the_time, args=["25h", "1d"])
            for handle, due in ((a, [86400, 172800]), (b, [90000, 176400])):
                noted = await handle.result(timeout=WALL_BOUND)
                assert noted == pytest.approx(due, abs=5), noted

    run(main)


def test_time_does_not_skip_while_a_thread_works_for_the_loop() -> None:
    """Storage calls and sync activities run on threads: while one does, the loop is not
    idle, and an hour's timer waits."""
    loop = SkippingLoop(skipping=True)

    async def main() -> tuple[float, float]:
        with loop.waiting():
            began = loop.time()
            timer = asyncio.ensure_future(asyncio.sleep(3600))
            await loop.run_in_executor(None, time.sleep, 0.3)
            worked = loop.time() - began
            await timer
            return worked, loop.time() - began

    try:
        worked, waited = loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert 0.3 <= worked < 60 and waited >= 3600


def test_schedule_to_close_is_measured_on_the_environment_clock() -> None:
    """Attempts at 0 and 30 minutes; a third, at 60, would pass ``schedule_to_close``
    (50 minutes): the retries stop after two, the backoffs skipped."""
    async def main() -> None:
        ATTEMPTS.clear()
        async with await WorkflowEnvironment.start_time_skipping() as env:
            handle = await env.client.workflow.start(retry_for_50_minutes, workflow_id="r")
            assert await handle.result(timeout=WALL_BOUND) == 2
        assert ATTEMPTS == ["r", "r"]

    run(main)


def test_a_file_storage_is_resumed_by_a_new_environment(tmp_path: Any) -> None:
    storage = str(tmp_path / "timelines")
    with WorkflowEnvironment.start_local_sync(storage=storage) as first:
        first.client.workflow.start(nap, workflow_id="napper")
    with WorkflowEnvironment.start_time_skipping_sync(storage=storage) as second:
        handle = second.client.workflow.get_handle("napper")
        # its timer, resumed from storage, is skipped to
        assert handle.result(timeout=WALL_BOUND) == "rested"


def test_an_environment_runs_with_ray_unimportable(tmp_path: Any) -> None:
    script = tmp_path / "no_ray.py"
    script.write_text(textwrap.dedent("""
        import asyncio, sys
        sys.modules["ray"] = None  # any import of ray fails
        import rayline
        from rayline import workflow
        from rayline.testing import WorkflowEnvironment

        @rayline.workflow
        async def wait_a_week() -> str:
            return "late" if await workflow.condition("go", timeout="7d") is False else "go"

        async def main() -> None:
            async with await WorkflowEnvironment.start_time_skipping() as env:
                print(await env.client.workflow.execute(wait_a_week))

        asyncio.run(main())
        assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None]
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "late"


# ------------------------------------------------------------------ activities

CLEANED: list[tuple[str, bool]] = []


@rayline.activity(heartbeat_timeout="10s")
def download(parts: int) -> list[str]:
    info = rayline.activity_info()
    done = [f"part-{n}" for n in range(info.heartbeat_details or 0)]  # resume
    for part in range(len(done), parts):
        try:
            rayline.heartbeat(part)
        except ActivityCancelledError:
            CLEANED.append((info.idempotency_key, info.is_cancelled()))
            raise
        done.append(f"part-{part}")
    return done


async def wait_for_ever() -> None:
    try:
        rayline.heartbeat("waiting")
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        CLEANED.append((rayline.activity_info().activity, True))
        raise


def test_an_activity_sees_its_info_and_heartbeats_and_a_cancellation() -> None:
    async def main() -> None:
        CLEANED.clear()
        info = ActivityInfo("order-4", "run-1", "download", seq=3, attempt=2,
                            heartbeat_details=2)
        env = ActivityEnvironment(info=info)
        assert await env.run(download, 5) == [f"part-{n}" for n in range(5)]
        assert env.heartbeats == [2, 3, 4]  # resumed after the last attempt's part 1

        cancelled = ActivityEnvironment(info=info)
        cancelled.on_heartbeat = lambda part: cancelled.cancel() if part == 3 else None
        with pytest.raises(ActivityCancelledError):
            await cancelled.run(download, 5)
        assert cancelled.heartbeats == [2, 3]
        assert CLEANED == [("order-4:run-1:-proxy-3-", True)]

        waiting = ActivityEnvironment()
        task = asyncio.ensure_future(waiting.run(wait_for_ever))
        while not waiting.heartbeats:
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):  # not TimeoutError
            await asyncio.wait_for(task, WALL_BOUND)
        assert waiting.heartbeats == ["waiting"]
        assert CLEANED[-1] == ("wait_for_ever", True)

    run(main)


def test_execute_is_one_call_to_the_host_that_answers_with_the_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline.errors import WorkflowFailedError
    from rayline.testing import _environment

    calls: list[str] = []
    bridge = _environment.Connection.host

    def counted(self: Any, name: str) -> Any:
        host = bridge(self, name)

        class Counting:
            def __getattr__(self, method: str) -> Any:
                calls.append(method)
                return getattr(host, method)
        return Counting()

    monkeypatch.setattr(_environment.Connection, "host", counted)

    def boom(order_id: str, cents: int) -> str:
        raise ValueError(f"card declined for {order_id}")

    async def main() -> None:
        async with await WorkflowEnvironment.start_local(
                activities={"charge": lambda order, cents: f"paid {order}"}) as env:
            assert await env.client.workflow.execute(checkout, args=["o-1", 5]) == "paid o-1"
            assert calls == ["start"]  # no start_many, no results: one round trip
        async with await WorkflowEnvironment.start_local(activities={"charge": boom}) as env:
            with pytest.raises(WorkflowFailedError, match="card declined for o-2"):
                await env.client.workflow.execute(checkout, args=["o-2", 5],
                                                  workflow_id="o-2")
            handle = await env.client.workflow.get_handle("o-2")
            assert isinstance(await handle.result(throw_on_error=False), WorkflowFailedError)

    run(main)
