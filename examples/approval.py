"""An ML pipeline with children, a human approval signal, a query and search fields.

    .venv/bin/python examples/approval.py

Each shard trains in a child workflow; the parent waits (durably) for an "approve"
signal for up to a day, then deploys. The main program plays the human: it watches the
pipeline through a query, then approves it.
"""

from __future__ import annotations

import asyncio
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import RetryPolicy, workflow  # noqa: E402


@rayline.activity(num_cpus=1, retry=RetryPolicy(maximum_attempts=3))
def train(shard: int, epochs: int) -> float:
    return round(1.0 - 1.0 / (shard + epochs + 1), 3)


@rayline.activity
def deploy(score: float) -> str:
    return f"deployed model with score {score}"


@rayline.workflow
async def train_shard(shard: int) -> float:
    return await workflow.execute_activity(train, shard, 5, start_to_close="30m")


@rayline.workflow
async def pipeline(shards: int) -> str:
    workflow.search(stage="training")
    status = {"trained": 0}
    workflow.set_query_handler("progress", lambda: dict(status))

    async def one(shard: int) -> float:
        score = await workflow.execute_child(train_shard, shard)
        status["trained"] += 1
        return float(score)

    scores = await asyncio.gather(*(one(s) for s in range(shards)))
    workflow.search(stage="awaiting approval")
    approved = await workflow.condition("approve", timeout="1 day")
    if not approved:
        workflow.search(stage="expired")
        return "not approved in time"
    workflow.search(stage="deploying")
    return await workflow.execute_activity(deploy, max(scores))


def main() -> None:
    client = rayline.Client(namespace="examples")
    handle = client.workflow.start(pipeline, args=[3], workflow_id=f"approval-{int(time.time())}")
    while handle.query_state(["stage"])["stage"] != "awaiting approval":
        if handle.status() < 0:  # failed: result() raises with the workflow's error
            handle.result()
        time.sleep(0.1)
    print("progress:", handle.query("progress"))
    # the index behind list() is fed by hosts' reports, a few tens of ms behind the run
    deadline = time.monotonic() + 10
    waiting = client.workflow.list(search={"stage": "awaiting approval"})
    while handle.workflow_id not in [r.workflow_id for r in waiting] \
            and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = client.workflow.list(search={"stage": "awaiting approval"})
    print("awaiting approval:", [r.workflow_id for r in waiting])
    handle.signal("approve", {"by": "alice"})
    print("result:", handle.result())
    summary = handle.export_execution(mode="verbose").summary
    print("children:", summary.child_workflows, "signals:", summary.signals)


if __name__ == "__main__":
    main()
