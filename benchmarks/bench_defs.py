"""The activity and workflows that ``rayline_bench.py`` measures.

They live in an importable module (not ``__main__``) so that rayline records them by
import path and its Ray workers import them by name; the runner puts ``benchmarks/`` on
``PYTHONPATH``. Each is the same logic as in every peer's script.
"""
import rayline
from rayline import workflow


@rayline.activity
def add1(x: int) -> int:
    """The one activity of every workload."""
    return x + 1


@rayline.workflow
async def one(x: int) -> int:
    """W1/W2: one activity."""
    acts = workflow.proxy_activities(add1)
    return await acts.add1(x)


@rayline.workflow
async def steps(n: int) -> int:
    """W3: ``n`` sequential activities."""
    acts = workflow.proxy_activities(add1)
    x = 0
    for _ in range(n):
        x = await acts.add1(x)
    return x


@rayline.workflow
async def wait_signal() -> int:
    """W4: blocks until the ``go`` signal, returns its payload."""
    return await workflow.condition("go")


@rayline.workflow
async def parked() -> float:
    """W5: sleeps for ten minutes, long enough to stay parked for the measurement."""
    return await workflow.sleep("10m")


@rayline.activity(local=True)
def add1_local(x: int) -> int:
    """``add1`` run inline in the workflow's host (Temporal's local activities)."""
    return x + 1


@rayline.workflow
async def one_local(x: int) -> int:
    """W1 with a local activity."""
    return await workflow.execute_activity(add1_local, x)


@rayline.workflow
async def steps_local(n: int) -> int:
    """W3 with local activities."""
    x = 0
    for _ in range(n):
        x = await workflow.execute_activity(add1_local, x)
    return x


@rayline.activity
def stamp(x: int) -> list[float]:
    """W6: ``x + 1`` and the wall-clock time the step ran."""
    import time

    return [x + 1, time.time()]


@rayline.workflow
async def long_history(n: int, window: int) -> list[list[float]]:
    """W6: ``n`` steps; returns the step times of two windows, early and late."""
    acts = workflow.proxy_activities(stamp)
    early, late, x = [], [], 0
    for i in range(n):
        x, at = await acts.stamp(x)
        if window <= i < 2 * window:
            early.append(at)
        elif i >= n - window:
            late.append(at)
    return [early, late]


@rayline.workflow
async def steps_then_wait(n: int) -> int:
    """storage.py: ``n`` sequential activities, then it waits (parked) for ``go``."""
    acts = workflow.proxy_activities(add1)
    x = 0
    for _ in range(n):
        x = await acts.add1(x)
    return x + await workflow.condition("go")


@rayline.workflow
async def sum_signals(n: int) -> int:
    """storage.py: waits for ``n`` ``item`` signals (parking between them), returns their sum."""
    total = 0
    for _ in range(n):
        total += await workflow.condition("item")
    return total


@rayline.activity
def carry(data: bytes) -> bytes:
    """Returns its payload: a step whose argument and result are ``len(data)`` bytes."""
    return data


@rayline.workflow
async def steps_carrying(n: int, size: int) -> int:
    """``n`` sequential activities, each passed and returning ``size`` bytes."""
    data = b"x" * size
    for _ in range(n):
        data = await workflow.execute_activity(carry, data)
    return len(data)
