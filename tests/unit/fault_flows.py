"""Workflows and activities for the fault matrix (tests/unit/test_fault_matrix.py).

Each scenario ends in a wait for a signal, so a test can park, crash or arm faults at a
known point; every workflow returns what it received, so signals can be counted.
``pause`` is the length of each durable timer, in seconds (small: the matrix stays fast).
"""

from __future__ import annotations

import asyncio

import rayline
from rayline import workflow


@rayline.activity
def bump(x: int) -> int:
    return x + 1


@rayline.workflow
async def signals_flow(x: int, pause: float) -> list[object]:
    """An activity, a durable timer, two signals in order, another activity."""
    acts = workflow.proxy_activities(bump)
    a = await acts.bump(x)
    await workflow.sleep(pause)
    first = await workflow.condition("sig")
    second = await workflow.condition("sig")
    b = await acts.bump(a)
    return [a, first, second, b]


@rayline.workflow
async def kid_flow(y: int, pause: float) -> list[object]:
    """A child: an activity, an asyncio timer (durable in a workflow), one signal."""
    a = await workflow.execute_activity(bump, y)
    await asyncio.sleep(pause)
    got = await workflow.condition("sig")
    return [a, got]


@rayline.workflow
async def parent_flow(x: int, pause: float) -> list[object]:
    """An activity, then a child (``<id>-kid``) whose result it returns."""
    a = await workflow.execute_activity(bump, x)
    kid_id = f"{workflow.info().workflow_id}-kid"
    kid = await workflow.execute_child(kid_flow, a, pause, workflow_id=kid_id)
    return [a, kid]


@rayline.workflow
async def counter_flow(n: int, acc: int, pause: float) -> list[object]:
    """Continues as new ``n`` times carrying a counter; the last run waits for a signal."""
    a = await workflow.execute_activity(bump, acc)
    await workflow.sleep(pause)
    if n > 0:
        workflow.continue_as_new(n - 1, a, pause)
    got = await workflow.condition("sig")
    return [a, got]
