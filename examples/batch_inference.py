"""Batch inference over a long list, in chunks, with a bounded history: the workflow
continues as new every ``chunks_per_run`` chunks, and its progress is readable while it
runs.

    .venv/bin/python examples/batch_inference.py

Each chunk is scored by an activity (a stand-in model: a fixed linear scorer). After
``chunks_per_run`` chunks the run hands its position and running totals to a fresh run
of the same workflow id (``workflow.continue_as_new``), so no run's timeline grows with
the size of the input. ``handle.query_state(["done"])`` reads the progress.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import workflow  # noqa: E402


@rayline.activity(num_cpus=0.5)
def score(start: int, size: int) -> list[float]:
    """Scores items ``start`` .. ``start + size - 1`` (item i has features i % 7, i % 5)."""
    return [0.3 * (i % 7) + 0.7 * (i % 5) for i in range(start, start + size)]


@rayline.workflow
async def infer(total: int, chunk: int, chunks_per_run: int, done: int = 0,
                positives: int = 0, runs: int = 1) -> dict[str, int]:
    workflow.search(done=done)
    for _ in range(chunks_per_run):
        if done >= total:
            break
        scores = await workflow.execute_activity(score, done, min(chunk, total - done))
        positives += sum(1 for s in scores if s > 2.0)
        done += len(scores)
        workflow.search(done=done)
    if done >= total:
        return {"done": done, "positives": positives, "runs": runs}
    workflow.continue_as_new(total, chunk, chunks_per_run, done, positives, runs + 1)
    raise AssertionError("not reached")


def expected_positives(total: int) -> int:
    return sum(1 for i in range(total) if 0.3 * (i % 7) + 0.7 * (i % 5) > 2.0)


def run(client: rayline.Client, total: int = 10_000, chunk: int = 500,
        chunks_per_run: int = 5) -> dict[str, Any]:
    handle = client.workflow.start(infer, args=[total, chunk, chunks_per_run],
                                   workflow_id=f"infer-{int(time.time() * 1000)}")
    seen = []
    while handle.status() > 0:
        seen.append(handle.query_state(["done"])["done"])
        time.sleep(0.05)
    result = handle.result()
    return {**result, "progress_seen": sorted({s for s in seen if s is not None}),
            "expected_positives": expected_positives(total)}


def main() -> None:
    print(run(rayline.Client(namespace="examples")))


if __name__ == "__main__":
    main()
