"""Workflows and activities for the integration tests (importable by Ray workers)."""

from __future__ import annotations

import asyncio
import glob
import os
import threading
import time
import uuid

import rayline
from rayline import RetryPolicy, workflow


def count(folder: str, name: str) -> int:
    return len(glob.glob(os.path.join(folder, f"{name}.*")))


def _mark(folder: str, name: str) -> None:
    with open(os.path.join(folder, f"{name}.{uuid.uuid4().hex}"), "w"):
        pass


@rayline.activity
def step(folder: str, name: str, x: int, delay: float = 0.0) -> int:
    time.sleep(delay)
    _mark(folder, name)
    return x + 1


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def explode(message: str) -> None:
    raise KeyError(message)


@rayline.activity(retry=RetryPolicy(maximum_attempts=1), num_cpus=0)
def long_running(folder: str) -> str:
    _mark(folder, "long-started")
    try:
        for _ in range(600):
            time.sleep(0.1)
    except KeyboardInterrupt:  # how Ray cancels a running task
        _mark(folder, "long-cancelled")
        raise
    _mark(folder, "long-finished")
    return "done"


@rayline.activity(resources={"gpu_like": 1})
def needs_resource(x: int) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@rayline.activity
def refund(folder: str) -> str:
    _mark(folder, "refund")
    return "refunded"


@rayline.workflow
async def five_steps(folder: str, delay: float) -> list[int]:
    acts = workflow.proxy_activities(step)
    a, b, c = await asyncio.gather(acts.step(folder, "g1", 1, delay),
                                   acts.step(folder, "g2", 10, delay),
                                   acts.step(folder, "g3", 100, delay))
    d = await acts.step(folder, "s1", a + b + c, delay)
    e = await acts.step(folder, "s2", d, delay)
    return [a, b, c, d, e]


@rayline.workflow
async def add_one(x: int) -> int:
    return await workflow.execute_activity(step, "/tmp", "add-one-unused", x) if x < 0 else x + 1


@rayline.workflow(name="orderWorkflow")
async def order(order_id: str) -> str:
    return f"order {order_id} done"


@rayline.workflow
async def raises(message: str) -> None:
    raise RuntimeError(message)


@rayline.workflow
async def calls_exploding(message: str) -> None:
    await workflow.execute_activity(explode, message)


@rayline.workflow
async def fan_in() -> list[object]:
    return list(await asyncio.gather(workflow.condition("a"), workflow.condition("b")))


@rayline.workflow
async def collect(ids: list[str]) -> list[object]:
    return [await workflow.condition(signal_id) for signal_id in ids]


@rayline.workflow
async def wait_once(timeout: float | None) -> object:
    return await workflow.condition("go", timeout=timeout)


@rayline.workflow
async def nap(seconds: float) -> float:
    return await workflow.sleep(seconds)


@rayline.workflow
async def cancellable_order(folder: str) -> str:
    try:
        await workflow.sleep("1h")
        return "slept"
    except rayline.CancelledFailure:
        async with workflow.non_cancellable():
            await workflow.execute_activity(refund, folder)
        return "cancelled:refunded"


@rayline.workflow
async def leaves_child(folder: str, policy: str, child_id: str) -> str:
    return await workflow.start_child(cancellable_order, folder, workflow_id=child_id,
                                      parent_close_policy=policy)


@rayline.workflow
async def approvals(needed: int) -> list[str]:
    approved: list[str] = []

    def not_twice(name: str) -> None:
        if name in approved:
            raise ValueError(f"{name} is approved already")

    @workflow.update(validator=not_twice)
    async def approve(name: str) -> str:
        stamp = await workflow.condition(f"stamp-{name}")
        approved.append(name)
        return f"{name}:{stamp}"

    await workflow.condition(lambda: len(approved) >= needed)
    return approved


@rayline.workflow
async def not_cancellable_forever() -> str:
    await workflow.sleep("1h")
    return "slept"


@rayline.workflow
async def runs_long(folder: str) -> str:
    return await workflow.execute_activity(long_running, folder)


@rayline.workflow
async def uses_resource(x: int) -> str:
    return await workflow.execute_activity(needs_resource, x)


@rayline.workflow
async def tracked(folder: str) -> int:
    workflow.search(region="eu", step=0)
    state = {"n": 0}
    workflow.set_query_handler("n", lambda: state["n"])
    state["n"] = await workflow.execute_activity(step, folder, "t", 0)
    workflow.search(step=1)
    workflow.enrich(note="half way")
    await workflow.condition("finish")
    return state["n"]


UNPICKLABLE = threading.Lock()


@rayline.workflow
async def echo(value: object) -> object:
    return value


@rayline.workflow
async def step_then_fan_in(folder: str) -> list[object]:
    await workflow.execute_activity(step, folder, "before-wait", 0, 0.3)
    return list(await asyncio.gather(workflow.condition("a"), workflow.condition("b")))


@rayline.workflow
async def nap_then_collect(seconds: float, ids: list[str]) -> list[object]:
    await workflow.sleep(seconds)
    return [await workflow.condition(signal_id) for signal_id in ids]


@rayline.workflow
async def nap_then_wait(seconds: float, timeout: float) -> object:
    await workflow.sleep(seconds)
    return await workflow.condition("go", timeout=timeout)


@rayline.activity
def chaos_step(folder: str, key: str, x: int) -> int:
    _mark(folder, key)
    return x + 1


@rayline.workflow
async def ten_steps(folder: str, name: str, steps: int) -> int:
    x = 0
    for i in range(steps):
        x = await workflow.execute_activity(chaos_step, folder, f"{name}-{i}", x)
    return x


@rayline.workflow
async def parent_of_two(folder: str) -> list[object]:
    first = await workflow.execute_child(five_steps, folder, 0.0, workflow_id="kid-1")
    await workflow.sleep(0.1)
    got = await workflow.condition("extra", timeout=5)
    return [first[-1], got]


@rayline.workflow
async def blocks(seconds: float) -> str:
    time.sleep(seconds)  # the slip the host's watchdog reports
    return "woke"


@rayline.workflow
async def calls_random() -> float:
    import random
    return random.random()  # the slip the determinism guards report


@rayline.workflow
async def spins(steps: int) -> int:
    total = 0
    for i in range(steps):  # pure Python: blocks the loop, interruptible
        total += i
    return total


@rayline.workflow
async def poison(flag: str, on_replay: bool) -> str:
    """Kills its host process while the file ``flag`` exists: when it takes its signal,
    or (``on_replay``) whenever its timeline is replayed."""
    await workflow.execute_activity(doze, 0.0)
    if on_replay and workflow.info().is_replaying and os.path.exists(flag):
        os._exit(3)
    value = await workflow.condition("go")
    if not on_replay and os.path.exists(flag):
        os._exit(3)
    return f"survived {value}"


@rayline.workflow
async def neighbour(kind: str) -> str:
    if kind == "signal":
        return str(await workflow.condition("go"))
    if kind == "sleep":
        await workflow.sleep(4)
        return "slept"
    return str(await workflow.execute_activity(doze, 4.0, num_cpus=0.25))  # all at once


@rayline.activity
def doze(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@rayline.workflow
async def wakes_once(folder: str, name: str, timeout: float | None) -> object:
    """Waits for ``go`` (or ``timeout``), then marks ``name`` once: a run that woke twice
    or ran its step twice leaves two marks."""
    got = await workflow.condition("go", timeout=timeout)
    await workflow.execute_activity(step, folder, name, 0, local=True)  # in the host:
    return got  # the test is about hosts, and a Ray worker per node costs seconds here


@rayline.activity
def busy(folder: str, name: str, seconds: float) -> int:
    """A second or so of CPU; writes when it ran (``<name>.span``)."""
    began = time.time()
    while time.time() - began < seconds:
        pass
    with open(os.path.join(folder, f"{name}.span"), "w") as out:
        out.write(f"{began} {time.time()}")
    return 1


@rayline.workflow
async def busy_many(folder: str, n: int, seconds: float) -> int:
    calls = [workflow.execute_activity(busy, folder, f"busy{i}", seconds) for i in range(n)]
    return sum(await asyncio.gather(*calls))


@rayline.activity
def heeds_cancel(folder: str) -> str:
    """A default activity (a Ray task of 1 CPU) that heartbeats and notices a cancel."""
    _mark(folder, "heeds-started")
    try:
        for _ in range(600):
            rayline.heartbeat()
            time.sleep(0.1)
    except (rayline.ActivityCancelledError, KeyboardInterrupt):
        _mark(folder, "heeds-cancelled")
        raise
    return "finished"


@rayline.workflow
async def runs_heeding(folder: str) -> str:
    return await workflow.execute_activity(heeds_cancel, folder)


@rayline.activity(heartbeat_timeout=2, retry=RetryPolicy(maximum_attempts=2,
                                                          initial_interval=0.1))
def goes_silent(folder: str) -> object:
    """Attempt 1 reports progress 1, 2, 3, then hangs without heartbeats; attempt 2
    returns where attempt 1 got (its last heartbeat details)."""
    info = rayline.activity_info()
    if info.attempt > 1:
        return {"attempt": info.attempt, "resumed_from": info.heartbeat_details}
    for step_done in (1, 2, 3):
        rayline.heartbeat({"step": step_done})
    _mark(folder, "silent")
    time.sleep(120)  # stopped by the host once heartbeat_timeout passes
    return "not stopped"


@rayline.workflow
async def resumes_after_silence(folder: str) -> object:
    return await workflow.execute_activity(goes_silent, folder)


@rayline.activity(local=True)
def local_nap(folder: str, seconds: float) -> str:
    time.sleep(seconds)
    _mark(folder, "local-nap-done")
    return "napped"


@rayline.workflow
async def naps_locally(folder: str, seconds: float) -> str:
    return await workflow.execute_activity(local_nap, folder, seconds)


@rayline.activity
def make_array(megabytes: int) -> object:
    import numpy

    return numpy.arange(megabytes * 2**20 // 8, dtype=numpy.float64)


@rayline.activity
def summarise(array: object) -> list[float]:
    import numpy

    assert isinstance(array, numpy.ndarray)
    return [float(array.sum()), float(array.nbytes)]


@rayline.workflow
async def array_pipeline(megabytes: int, pause: bool) -> object:
    array = await workflow.execute_activity(make_array, megabytes)
    if pause:
        await workflow.condition("go")  # the host may be killed here
    return await workflow.execute_activity(summarise, array)


@rayline.activity
def put_array(megabytes: int) -> object:
    import ray

    return ray.put(make_array.fn(megabytes))


@rayline.workflow
async def object_ref_pipeline(megabytes: int) -> object:
    ref = await workflow.execute_activity(put_array, megabytes)
    return [type(ref).__name__, await workflow.execute_activity(summarise, ref)]


@rayline.workflow
async def waits_on_a_grandchild(tag: str) -> object:
    return await workflow.execute_child(wait_once, None, workflow_id=f"{tag}-b-grand")


@rayline.workflow
async def two_children(tag: str) -> list[object]:
    return list(await asyncio.gather(
        workflow.execute_child(wait_once, None, workflow_id=f"{tag}-a"),
        workflow.execute_child(waits_on_a_grandchild, tag, workflow_id=f"{tag}-b")))


@rayline.workflow
async def fails_early_attempts(times: int) -> str:
    attempt = workflow.info().attempt
    if attempt <= times:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"done on attempt {attempt}"


@rayline.workflow
async def handles_late(n: int) -> list[object]:
    """Sets its signal handler only once the signal ``ready`` came: the signals sent
    before are handed to it then, in order; then waits on its own state."""
    got: list[object] = []
    await workflow.condition("ready")
    workflow.set_signal_handler("item", got.append)
    await workflow.condition(lambda: len(got) >= n)
    return got


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def numbered(folder: str, n: int) -> int:
    """Step ``n`` (counted): step 4 has a bug until ``folder/fixed`` exists; ten times
    ``n``, or a hundred times once ``folder/times100`` exists (new code)."""
    _mark(folder, f"step-{n}")
    if n == 4 and not os.path.exists(os.path.join(folder, "fixed")):
        raise KeyError("the bug in step 4")
    return n * (100 if os.path.exists(os.path.join(folder, "times100")) else 10)


@rayline.workflow
async def five_numbered(folder: str) -> list[int]:
    return [await workflow.execute_activity(numbered, folder, n) for n in range(1, 6)]


@rayline.workflow
async def hops(n: int, pause: float) -> str:
    """Pauses ``pause`` seconds (a durable timer), then continues as new ``n`` times."""
    await workflow.sleep(pause)
    if n > 0:
        workflow.continue_as_new(n - 1, pause)
    return "landed"


@rayline.activity
def runner_id() -> str | None:
    """The actor this default activity ran in: a host's warm runner, or None (a task)."""
    import ray

    return ray.get_runtime_context().get_actor_id()


async def _on_a_runner() -> str:
    """Calls ``runner_id`` until a warm runner takes it (the first call starts one)."""
    for _ in range(100):
        found = await workflow.execute_activity(runner_id)
        if found is not None:
            return str(found)
        await workflow.sleep(0.1)
    raise RuntimeError("no warm runner took a default activity")


@rayline.workflow
async def finds_a_runner() -> list[str]:
    """The runner that takes a default activity, twice in a row."""
    return [await _on_a_runner(), await _on_a_runner()]


@rayline.activity(retry=RetryPolicy(maximum_attempts=3, initial_interval=0.1))
def exits_once(folder: str) -> str:
    """Ends its process on the first attempt (``exits.<actor id>``), returns on the next."""
    import ray

    if count(folder, "exits") == 0:
        with open(os.path.join(folder, f"exits.{ray.get_runtime_context().get_actor_id()}"),
                  "w"):
            pass
        os._exit(1)
    return "second attempt"


@rayline.workflow
async def runner_dies(folder: str) -> str:
    await _on_a_runner()
    return await workflow.execute_activity(exits_once, folder)


@rayline.activity(retry=RetryPolicy(maximum_attempts=1))
def sleeps_plainly(folder: str) -> str:
    """A default activity that never heartbeats: only an interrupt stops it."""
    import ray

    _mark(folder, f"plain-started-{ray.get_runtime_context().get_actor_id()}")
    try:
        for _ in range(600):
            time.sleep(0.1)
    except KeyboardInterrupt:
        _mark(folder, "plain-cancelled")
        raise
    return "finished"


@rayline.workflow
async def sleeps_on_a_runner(folder: str) -> str:
    await _on_a_runner()
    return await workflow.execute_activity(sleeps_plainly, folder)
