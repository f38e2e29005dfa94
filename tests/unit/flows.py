"""Workflows and activities used by the unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
import time
import uuid

import pydantic

import rayline
from rayline import FatalError, RetryPolicy, workflow


class Order(pydantic.BaseModel):
    sku: str
    qty: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


@rayline.activity
def add1(x: int) -> int:
    return x + 1


@rayline.activity
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def boom(message: str) -> None:
    raise KeyError(message)


@rayline.activity(retry=RetryPolicy(maximum_attempts=5, initial_interval=0.01))
def fatal(message: str) -> None:
    raise FatalError(message)


ATTEMPTS: dict[str, int] = {}


@rayline.activity(retry=RetryPolicy(maximum_attempts=4, initial_interval=0.01))
def flaky(key: str, fail_times: int) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= fail_times:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} failed")
    return f"ok after {ATTEMPTS[key]}"


@rayline.activity
def total(order: Order) -> int:
    return order.qty * 10


@rayline.workflow
async def one_step(x: int) -> int:
    acts = workflow.proxy_activities(add1)
    return await acts.add1(x)


@rayline.workflow
async def gather_then_chain(x: int) -> list[int]:
    acts = workflow.proxy_activities(add1, double)
    a, b, c = await asyncio.gather(acts.add1(x), acts.double(x), acts.add1(x + 100))
    d = await acts.add1(a + b + c)
    e = await acts.double(d)
    return [a, b, c, d, e]


@rayline.workflow
async def catches(message: str) -> str:
    acts = workflow.proxy_activities(boom, add1)
    try:
        await acts.boom(message)
    except rayline.ActivityError as err:
        n = await acts.add1(1)
        return f"caught {err.cause_type.rsplit('.', 1)[-1]}: {err.message} then {n}"
    return "not reached"


@rayline.workflow
async def fails(message: str) -> None:
    await workflow.execute_activity(add1, 1)
    raise ValueError(message)


@rayline.workflow
async def sleeper(seconds: float) -> float:
    slept = await workflow.sleep(seconds)
    await asyncio.sleep(1)  # asyncio.sleep is a durable timer inside a workflow
    return slept


@rayline.workflow
async def waits(timeout: float | None) -> object:
    return await workflow.condition("go", timeout=timeout)


@rayline.workflow
async def waits_many(n: int) -> list[object]:
    return [await workflow.condition("item") for _ in range(n)]


@rayline.workflow
async def fan_in() -> list[object]:
    return list(await asyncio.gather(workflow.condition("a"), workflow.condition("b")))


@rayline.workflow
async def cancellable() -> str:
    acts = workflow.proxy_activities(add1)
    try:
        await workflow.sleep("1h")
        return "slept"
    except rayline.CancelledFailure:
        async with workflow.non_cancellable():
            await acts.add1(1)
        return "cancelled:refunded"


@rayline.workflow
async def deterministic() -> list[object]:
    return [workflow.random(), str(workflow.uuid4()), workflow.now().timestamp()]


@rayline.workflow
async def versioned() -> str:
    if workflow.patched("v2"):
        return await workflow.execute_activity(add1, 1) and "new"
    return "old"


@rayline.workflow
async def continues(n: int) -> int:
    if n > 0:
        workflow.continue_as_new(n - 1)
    return 42


@rayline.workflow
async def searchable() -> dict[str, int]:
    workflow.search(region="eu", stage="start")
    state = {"count": 0}
    workflow.set_query_handler("count", lambda: state["count"])
    for _ in range(3):
        state["count"] = await workflow.execute_activity(add1, state["count"])
    workflow.enrich(done=True)
    workflow.search(stage="end")
    return state


@rayline.workflow
async def typed(order: Order) -> int:
    return await workflow.execute_activity(total, order)


@rayline.workflow
async def with_wait_for() -> str:
    try:
        await asyncio.wait_for(workflow.condition("never"), timeout=5)
    except asyncio.TimeoutError:
        return "timed out"
    return "signalled"


@rayline.workflow
async def retries(fail_times: int) -> str:
    return await workflow.execute_activity(flaky, f"k{fail_times}", fail_times)


@rayline.workflow
async def fatal_flow() -> str:
    try:
        await workflow.execute_activity(fatal, "stop")
    except rayline.ActivityError as err:
        return f"{err.code} after {err.attempt}"
    return "no"


@rayline.workflow
async def step_then_wait(x: int) -> list[object]:
    acts = workflow.proxy_activities(add1)
    a = await acts.add1(x)
    got = await workflow.condition("go")
    b = await acts.add1(a)
    return [a, got, b]


@rayline.workflow
async def parent(x: int) -> list[object]:
    child_result = await workflow.execute_child(one_step, x, workflow_id=f"child-of-{x}")
    other = await workflow.start_child(one_step, x + 1)
    return [child_result, other]


@rayline.workflow
async def signaller(target: str) -> str:
    await workflow.signal(target, "go", "from-a-workflow")
    return "sent"


@rayline.workflow
async def canceller(target: str) -> str:
    await workflow.get_external_handle(target).cancel()
    return "cancel sent"


@rayline.workflow
async def parent_cancelled_with_child() -> str:
    try:
        await workflow.execute_child(cancellable, workflow_id="the-child")
    except rayline.CancelledFailure:
        return "parent saw cancel"
    return "no"


@rayline.workflow
async def slow_to_cancel() -> str:
    try:
        await workflow.sleep(3600)
        return "slept"
    except rayline.CancelledFailure:
        async with workflow.non_cancellable():
            said = await workflow.condition("finish")
        return f"cancelled after {said}"


@rayline.workflow
async def parent_of_slow_to_cancel(cancellation_type: str) -> str:
    try:
        await workflow.execute_child(slow_to_cancel, workflow_id="slow-kid",
                                     cancellation_type=cancellation_type)
    except rayline.CancelledFailure:
        return "parent saw cancel"
    return "no"


@rayline.workflow
async def parent_of_doomed() -> str:
    try:
        await workflow.execute_child(waits, None, workflow_id="doomed-kid")
    except rayline.ChildWorkflowError as exc:
        return f"{type(exc.__cause__).__name__} of {exc.workflow_id}"
    return "no"


@rayline.workflow
async def parent_leaving(policy: str, child_id: str) -> str:
    return await workflow.start_child(waits, None, workflow_id=child_id,
                                      parent_close_policy=policy)


@rayline.workflow
async def cart(limit: int) -> list[str]:
    items: list[str] = []

    def room_for(item: str) -> None:
        if not item:
            raise ValueError("an item needs a name")
        if len(items) >= limit:
            raise ValueError("the cart is full")

    @workflow.update(validator=room_for)
    async def add(item: str) -> int:
        await workflow.execute_activity(add1, 0)  # a handler may await activities
        items.append(item)
        return len(items)

    @workflow.update(name="break")
    def fails(reason: str) -> None:
        raise KeyError(reason)

    await workflow.condition("checkout")
    return items


@rayline.workflow
async def signals_run(target: str, run_id: str) -> str:
    try:
        await workflow.get_external_handle(target, run_id).signal("go", "to that run")
    except rayline.WorkflowFailedError as exc:
        return f"refused: {exc}"
    return "sent"


@rayline.workflow
async def moves_to(queue: str) -> str:
    if workflow.info().task_queue != queue:
        await workflow.condition("before")
        workflow.continue_as_new(queue, task_queue=queue)
    return f"ran on {workflow.info().task_queue}, got {await workflow.condition('after')}"


@rayline.workflow
async def says_when(fail: bool) -> float | None:
    scheduled = workflow.info().scheduled_time
    if fail:
        raise ValueError("this run fails; the next goes on")
    return None if scheduled is None else scheduled.timestamp()


@rayline.workflow
async def parent_waits_for_child() -> str:
    said = await workflow.execute_child(waits, None, workflow_id="mom-kid")
    return f"child said {said}"


@rayline.workflow
async def child_continues(n: int) -> str:
    if n > 0:
        workflow.continue_as_new(n - 1)
    return "child done"


@rayline.workflow
async def parent_of_continuing_child() -> str:
    said = await workflow.execute_child(child_continues, 2, workflow_id="cc")
    return f"parent got {said}"


@rayline.workflow
async def child_continues_then_waits(n: int) -> object:
    if n > 0:
        workflow.continue_as_new(n - 1)
    return await workflow.condition("go")


@rayline.workflow
async def parent_of_waiting_child() -> str:
    said = await workflow.execute_child(child_continues_then_waits, 2, workflow_id="cw")
    return f"parent got {said}"


KEYS: list[str] = []


@rayline.activity(retry=RetryPolicy(maximum_attempts=3, initial_interval=0.01))
def charge(fail_first: bool) -> str:
    info = rayline.activity_info()
    KEYS.append(info.idempotency_key)
    if fail_first and info.attempt == 1:
        raise ConnectionError("payment provider timed out")
    return info.idempotency_key


@rayline.workflow
async def monthly_charges(months: int, keys: list[str]) -> list[str]:
    keys = [*keys, await workflow.execute_activity(charge, months == 2)]
    if months > 1:
        workflow.continue_as_new(months - 1, keys)
    return keys


@rayline.workflow
async def fire_and_forget_parent() -> object:
    await workflow.start_child(one_step, 1, workflow_id="ff-child")
    return await workflow.condition("go")


MODE = {"version": 1}


@rayline.workflow
async def switchable() -> object:
    if MODE["version"] == 1:
        await workflow.execute_activity(add1, 1)
    else:
        await workflow.sleep(1)
    return await workflow.condition("go")


@rayline.workflow
async def exits() -> None:
    raise SystemExit(3)


@rayline.workflow
async def collector(total: int, seen: list[object]) -> list[object]:
    while len(seen) < total:
        seen = [*seen, await workflow.condition("item")]
        if len(seen) % 2 == 0 and len(seen) < total:
            workflow.continue_as_new(total, seen)
    return seen


@rayline.workflow(name="versioned")
async def versioned_before_patch() -> str:
    """``versioned`` as it was before the ``v2`` patch: no patch call, no durable call."""
    return "old"


@rayline.workflow
async def blocks(seconds: float) -> str:
    time.sleep(seconds)  # the slip the watchdog is for (workflow.sleep was meant)
    return "woke"


@rayline.workflow
async def spins(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # pure Python that never yields
        pass
    return "spun"


@rayline.workflow
async def slips(kind: str) -> str:
    """Calls what breaks replay (or, for ``logging``/``workflow``, what does not)."""
    if kind == "random":
        random.random()
    elif kind == "datetime":
        datetime.datetime.now()
    elif kind == "time":
        time.time()
    elif kind == "uuid":
        uuid.uuid4()
    elif kind == "open":
        with open(__file__) as f:
            f.read(1)
    elif kind == "logging":
        logging.getLogger("tests.flows").warning("logging is fine in a workflow")
    elif kind == "workflow":
        workflow.now(), workflow.random(), workflow.uuid4()
    await workflow.sleep(0.01)
    return kind


GATE = asyncio.Event()
"""Opened by a test to let ``gated_step`` finish."""


@rayline.activity
async def gated_step() -> str:
    await GATE.wait()
    return "through"


@rayline.workflow
async def gated() -> str:
    return await workflow.execute_activity(gated_step)


@rayline.workflow(name="upgradable")
async def upgradable_v1(early: bool) -> str:
    """Version 1 of ``upgradable``; ``upgradable_v2`` is its next version."""
    if early:
        await workflow.execute_activity(add1, 1)
    await workflow.condition("go")
    return "v1"


@rayline.workflow(name="upgradable")
async def upgradable_v2(early: bool) -> str:
    """Replays version 1's runs that did not take the ``early`` branch: that branch now
    calls another activity (no ``workflow.patched``), so those runs stay on version 1."""
    if early:
        await workflow.execute_activity(double, 1)
    await workflow.condition("go")
    return "v2"


upgradable = upgradable_v1
"""What ``tests.unit.flows:upgradable`` imports: a test sets it to ``upgradable_v2`` to be
the code a new version's host process would import."""


@rayline.activity(heartbeat_timeout=0.3, retry=RetryPolicy(maximum_attempts=2,
                                                            initial_interval=0.01))
async def silent_after_three() -> object:
    info = rayline.activity_info()
    if info.attempt > 1:
        return [info.attempt, info.heartbeat_details]
    for done in (1, 2, 3):
        rayline.heartbeat(done)
    await asyncio.sleep(30)  # no more heartbeats: stopped and retried
    return "not stopped"


@rayline.workflow
async def resumes_from_heartbeat() -> object:
    return await workflow.execute_activity(silent_after_three)


HEEDED: list[str] = []


@rayline.activity
async def heartbeats_until_cancelled() -> str:
    try:
        for _ in range(3000):
            rayline.heartbeat("working")
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        HEEDED.append("cancelled")
        raise
    return "finished"


@rayline.workflow
async def runs_heartbeating() -> str:
    return await workflow.execute_activity(heartbeats_until_cancelled)


BIG = 600_064  # bytes (256 x 2344): above the 256 KiB from which values go by reference


@rayline.activity
def make_big(n: int) -> bytes:
    return bytes(range(256)) * (n // 256)


@rayline.activity
def measure(data: bytes, extra: bytes = b"") -> list[int]:
    return [len(data), data[1], len(extra)]


@rayline.workflow
async def big_then_measure(n: int) -> list[int]:
    data = await workflow.execute_activity(make_big, n)
    assert await workflow.condition("go") == "now"  # a host may die here
    return await workflow.execute_activity(measure, data)


@rayline.workflow
async def measures_input(data: bytes) -> object:
    extra = await workflow.condition("extra")
    return [await workflow.execute_activity(measure, data, extra), data[:3]]


@rayline.workflow
async def returns_its_input(data: bytes) -> bytes:
    await workflow.sleep(0.01)
    return data


@rayline.activity
def make_big_dict(n: int) -> dict[str, bytes]:
    return {"a": make_big.fn(n), "b": b"small"}


@rayline.activity
def measure_dict(data: dict[str, bytes]) -> int:
    return len(data["a"])


@rayline.workflow
async def typed_big_passed_on(n: int) -> int:
    data = await workflow.execute_activity(make_big_dict, n)
    return await workflow.execute_activity(measure_dict, data)  # validated, not copied


@rayline.activity(heartbeat_timeout=0.3, retry=RetryPolicy(maximum_attempts=2))
def watched_quick() -> str:
    return "ran"


@rayline.workflow
async def runs_watched_quick() -> object:
    return await workflow.execute_activity(watched_quick)


@rayline.workflow
async def exported(key: str) -> list[object]:
    """Three activities (the second fails once and is retried), a sleep, a signal and a
    child: what the export tests read."""
    workflow.patched("fast-path")  # rayline's own bookkeeping: a marker
    a = await workflow.execute_activity(add1, 1)
    b = await workflow.execute_activity(flaky, key, 1)
    await workflow.sleep(0.05)
    approved = await workflow.condition("approve")
    c = await workflow.execute_activity(double, 2)
    workflow.search(stage="done", score=0.5)
    kid = await workflow.execute_child(one_step, 10, workflow_id=f"{key}-kid")
    return [a, b, approved, c, kid]


RUNS: dict[str, int] = {}


@rayline.workflow
async def fails_first(key: str, times: int) -> str:
    """Raises on its first ``times`` attempts (counted outside the workflow: a test
    counter, not workflow state), then returns which attempt it was."""
    RUNS[key] = RUNS.get(key, 0) + 1
    attempt = workflow.info().attempt
    if attempt <= times:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"done on attempt {attempt}"


@rayline.workflow
async def handles_signals(n: int) -> list[object]:
    """Registers its handler only after a sleep: the signals sent before it are handed to
    it then, in order; waits on its own state for all ``n``."""
    got: list[object] = []
    await workflow.sleep(0.2)
    workflow.set_signal_handler("item", got.append)
    await workflow.condition(lambda: len(got) >= n)
    return got


@rayline.workflow
async def default_and_async_handlers() -> list[object]:
    seen: list[object] = []

    @workflow.on_signal("slow")
    async def slow(data: object) -> None:  # an async handler: a task of the workflow
        await workflow.sleep(0.01)
        seen.append(["slow", data])

    workflow.set_default_signal_handler(lambda name, data: seen.append([name, data]))
    done = await workflow.condition(lambda: len(seen) >= 3, timeout=30)
    timed_out = await workflow.condition(lambda: False, timeout=0.05)
    return [seen, done, timed_out]


@rayline.workflow
async def versioned_deprecated() -> str:
    """``versioned`` once its old branch is gone: the patch is deprecated."""
    workflow.deprecate_patch("v2")
    return await workflow.execute_activity(add1, 1) and "new"


@rayline.workflow
async def versioned_removed() -> str:
    """``versioned`` with its old branch and the patch call simply deleted."""
    return await workflow.execute_activity(add1, 1) and "new"


@rayline.workflow
async def tells_about_itself() -> dict[str, object]:
    workflow.search(stage="one")
    await workflow.execute_activity(add1, 1)
    info = workflow.info()
    return {"history": info.history_length, "search": info.search, "memo": info.memo,
            "suggested": info.is_continue_as_new_suggested(),
            "started": info.start_time.timestamp(), "continued_from": info.continued_from}


@rayline.workflow
async def hands_over(n: int) -> object:
    """Continues as new into another workflow (``one_step``) with its own arguments."""
    workflow.continue_as_new(n * 10, workflow=one_step)


@rayline.workflow
async def parent_of_retried_and_timed_out(key: str) -> list[str]:
    retried = await workflow.execute_child(
        fails_first, key, 2, workflow_id="retried-kid",
        retry=RetryPolicy(maximum_attempts=3, initial_interval=0.01))
    try:
        await workflow.execute_child(waits, None, workflow_id="slow-kid",
                                     execution_timeout="200ms")
    except rayline.ChildWorkflowError as exc:
        return [retried, f"{type(exc.__cause__).__name__}: {exc}"]
    return [retried, "no timeout"]


@rayline.workflow
async def fails_then_waits() -> object:
    """Fails its first attempt; the second waits for signal ``go`` and returns it."""
    if workflow.info().attempt == 1:
        raise ConnectionError("first attempt failed")
    return await workflow.condition("go")


@rayline.workflow
async def waits_on_state() -> str:
    try:
        await workflow.condition(lambda: False)
    except rayline.CancelledFailure:
        return "cancelled"
    return "not reached"


@rayline.workflow
async def writes_a_dict_field() -> str:
    """What an older rayline let a workflow write as a search field (any JSON)."""
    workflow.search(meta={"a": 1})
    return "ok"


@rayline.activity
def first_step(n: int) -> int:
    return n


@rayline.activity
def second_step(n: int) -> int:
    return n + 1


@rayline.workflow
async def two_steps(n: int) -> int:
    """One run in five takes a second step (what the replayer tests reorder)."""
    a = await workflow.execute_activity(first_step, n)
    if n % 5 == 0:
        a = await workflow.execute_activity(second_step, a)
    return a


NUMBERED: dict[str, object] = {"calls": [], "bug": True, "times": 10}


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def numbered_step(n: int) -> int:
    """Step ``n``: step 4 has a bug while ``NUMBERED["bug"]``; each call is counted."""
    NUMBERED["calls"].append(n)  # type: ignore[attr-defined]
    if n == 4 and NUMBERED["bug"]:
        raise KeyError("the bug in step 4")
    return n * int(NUMBERED["times"])  # type: ignore[call-overload]


@rayline.workflow
async def five_numbered() -> list[int]:
    done = []
    for n in range(1, 6):
        done.append(await workflow.execute_activity(numbered_step, n))
        if n == 2:
            workflow.enrich(second=await workflow.condition("after-2", timeout=0.01))
    return done


@rayline.workflow
async def gathers_children(n: int) -> int:
    """Starts ``n`` children that each wait for a "go" signal, and waits for them all."""
    me = workflow.info().workflow_id
    done = await asyncio.gather(*(workflow.execute_child(waits, None, workflow_id=f"{me}-{i}")
                                  for i in range(n)))
    return len(done)


@rayline.workflow
async def wanders(seed: int, steps: int) -> list[object]:
    """A random mix, fixed by ``seed``, of activities, timers, signals, side effects and
    gathers: each run a different history."""
    rng = random.Random(seed)
    acts = workflow.proxy_activities(add1, double)
    seen: list[object] = []
    for step in range(steps):
        kind = rng.choice(["activity", "gather", "timer", "signal", "random", "fields"])
        if kind == "activity":
            seen.append(await acts.add1(step))
        elif kind == "gather":
            seen.append(list(await asyncio.gather(acts.double(step), acts.add1(-step))))
        elif kind == "timer":
            await workflow.sleep(rng.choice([0.001, 0.01]))
        elif kind == "signal":
            seen.append(await workflow.condition("poke", timeout=rng.choice([0.01, 5.0])))
        elif kind == "random":
            seen.append(round(workflow.random(), 6))
        else:
            workflow.search(step=step)
    return seen
