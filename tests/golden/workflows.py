"""The workflows of the golden timelines (``tests/golden/timelines``): frozen.

Their stored runs must replay on this code for as long as rayline reads the timeline
format they were written in. Never change a workflow here: add a new one (and runs of it,
with ``python -m tests.golden.make``) instead.
"""

from __future__ import annotations

import asyncio

import rayline
from rayline import RetryPolicy, workflow

ATTEMPTS: dict[str, int] = {}


@rayline.activity
def double(x: int) -> int:
    return 2 * x


@rayline.activity(retry=RetryPolicy(maximum_attempts=3, initial_interval=0.01))
def flaky(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise ConnectionError("the first attempt fails")
    return key


@rayline.workflow
async def steps(x: int) -> list[int]:
    """Activities in parallel, then in a chain, with a durable timer between."""
    first = await asyncio.gather(*(workflow.execute_activity(double, x + i) for i in range(3)))
    await workflow.sleep(0.01)
    return [*first, await workflow.execute_activity(double, sum(first))]


@rayline.workflow
async def retried_step(key: str) -> str:
    """An activity that fails once and is retried (its outcome lists the retry)."""
    return await workflow.execute_activity(flaky, key)


@rayline.workflow
async def signals(n: int) -> list[object]:
    """A signal handler, a predicate wait, a signal wait with a timeout, search fields."""
    got: list[object] = []
    workflow.set_signal_handler("item", got.append)
    await workflow.condition(lambda: len(got) >= n)
    workflow.search(items=len(got))
    done = await workflow.condition("done", timeout=60)
    return [*got, done]


@rayline.workflow
async def child(x: int) -> int:
    return await workflow.execute_activity(double, x)


@rayline.workflow
async def parent(x: int) -> list[object]:
    """A child awaited, and one started with its own close policy."""
    awaited = await workflow.execute_child(child, x, workflow_id=f"{workflow.info().workflow_id}-a")
    started = await workflow.start_child(child, x + 1, parent_close_policy="abandon",
                                         workflow_id=f"{workflow.info().workflow_id}-b")
    return [awaited, started]


@rayline.workflow
async def counter(limit: int) -> int:
    """An update with a validator, answered by a handler that awaits an activity."""
    count = 0

    def below_limit(by: int) -> None:
        if count + by > limit:
            raise ValueError("over the limit")

    @workflow.update(validator=below_limit)
    async def add(by: int) -> int:
        nonlocal count
        count += await workflow.execute_activity(double, by) // 2
        return count

    await workflow.condition("stop")
    return count


@rayline.workflow
async def patched_and_continued(n: int) -> str:
    """A patch marker, then continue-as-new until ``n`` reaches 0."""
    tag = "new" if workflow.patched("golden-patch") else "old"
    if n > 0:
        workflow.continue_as_new(n - 1)
    return tag


@rayline.workflow
async def fails_once() -> str:
    """Fails its first attempt (workflow retry), succeeds on the second."""
    if workflow.info().attempt == 1:
        raise ConnectionError("the first attempt fails")
    return "second attempt"


@rayline.workflow
async def waits() -> object:
    return await workflow.condition("go")
