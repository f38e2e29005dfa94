"""rayline's main example: a small ML-style pipeline of activities, run durably.

Run it with `make run`. It starts (or joins) a local Ray, stores timelines under
./.rayline, runs the workflow, prints its result and then its timeline.
"""

from __future__ import annotations

import asyncio
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import RetryPolicy, workflow  # noqa: E402


@rayline.activity
def load(shard: int) -> list[float]:
    return [shard + i / 10 for i in range(5)]


@rayline.activity(num_cpus=1, retry=RetryPolicy(maximum_attempts=3))
def train(data: list[float]) -> float:
    return round(sum(data) / len(data), 3)


@rayline.activity
def report(scores: list[float]) -> str:
    return f"best shard score {max(scores)} of {len(scores)}"


@rayline.workflow
async def pipeline(shards: int) -> str:
    run_load = workflow.proxy_activity(load, start_to_close="1m")  # typed like `load`
    run_train = workflow.proxy_activity(train, start_to_close="1m")
    data = await asyncio.gather(*(run_load(s) for s in range(shards)))
    scores = await asyncio.gather(*(run_train(d) for d in data))
    await workflow.sleep("200ms")
    return await workflow.execute_activity(report, list(scores), start_to_close="1m")


def main() -> None:
    client = rayline.Client(namespace="hello")
    handle = client.workflow.start(pipeline, args=[3], workflow_id=f"hello-{int(time.time())}")
    print("result:", handle.result())
    print(f"timeline of {handle.workflow_id} (run {handle.run_id}):")
    for event in handle.export_execution().events:
        key = event.attributes.get("timeline_key") or ""
        detail = " ".join(f"{k}={event.attributes[k]}" for k in (
            "workflow_type", "activity_type", "duration_ms", "input", "result")
            if event.attributes.get(k) is not None)
        print(f"  {event.event_id:>3}  {event.event_type:<32} {key:<11} {detail[:70]}")


if __name__ == "__main__":
    main()
