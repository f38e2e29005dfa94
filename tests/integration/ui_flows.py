"""Workflows the web UI tests open in a browser (importable by Ray workers)."""

from __future__ import annotations

import asyncio
import time

import rayline
from rayline import RetryPolicy, workflow

SHARDS = 3
"""``pipeline`` runs this many ``train`` activities at once, then one ``evaluate``."""


class Opaque:
    """A value that is not JSON: it travels as a pickle, which the UI must never unpickle."""

    def __init__(self, secret: str) -> None:
        self.secret = secret


@rayline.activity(num_cpus=0)
def load(dataset: str) -> int:
    time.sleep(0.15)
    return len(dataset)


@rayline.activity(num_cpus=0)
def train(shard: int) -> float:
    time.sleep(0.2 + 0.15 * shard)
    return round(0.7 + shard * 0.07, 2)


@rayline.activity(num_cpus=0)
def evaluate(scores: list[float]) -> float:
    time.sleep(0.1)
    return max(scores)


@rayline.activity(num_cpus=0, retry=RetryPolicy(maximum_attempts=1))
def broken(reason: str) -> None:
    raise ValueError(reason)


@rayline.workflow
async def report(score: float) -> str:
    await workflow.execute_activity(load, "report")
    return f"score {score}"


@rayline.workflow
async def pipeline(dataset: str) -> dict[str, object]:
    """Loads, trains ``SHARDS`` shards at once, naps, evaluates, then a child reports."""
    workflow.search(dataset=dataset, stage="train")
    await workflow.execute_activity(load, dataset)
    acts = workflow.proxy_activities(train)
    scores = await asyncio.gather(*(acts.train(s) for s in range(SHARDS)))
    await workflow.sleep(0.3)
    best = await workflow.execute_activity(evaluate, list(scores))
    workflow.search(stage="report", score=best)
    summary = await workflow.execute_child(report, best,
                                           workflow_id=f"{workflow.info().workflow_id}-report")
    return {"best": best, "report": summary}


@rayline.workflow
async def approval(request: str) -> object:
    """Waits for the signal ``approve`` and returns its data."""
    workflow.search(request=request)
    return await workflow.condition("approve", timeout="1h")


@rayline.workflow
async def fails(reason: str) -> None:
    await workflow.execute_activity(broken, reason)


@rayline.workflow
async def echo(value: object) -> object:
    workflow.search(label=str(value))
    return value
