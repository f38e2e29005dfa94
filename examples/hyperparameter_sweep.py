"""A hyperparameter sweep: one child workflow per trial, at most ``parallel`` at once,
and the best trial picked from their metrics.

    .venv/bin/python examples/hyperparameter_sweep.py

Each trial fits a small ridge regression on numpy-generated data (no download) in an
activity and reports its validation error. The sweep is durable: kill the host (or the
node) mid-sweep and it goes on from the trials already recorded; no finished trial runs
again.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import RetryPolicy, workflow  # noqa: E402


@rayline.activity(retry=RetryPolicy(maximum_attempts=3))
def fit(alpha: float, samples: int, seed: int) -> float:
    """Validation mean squared error of ridge regression with penalty ``alpha``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(samples, 20))
    truth = rng.normal(size=20)
    target = features @ truth + rng.normal(scale=2.0, size=samples)
    split = samples * 3 // 4
    x, y = features[:split], target[:split]
    weights = np.linalg.solve(x.T @ x + alpha * np.eye(20), x.T @ y)
    error = features[split:] @ weights - target[split:]
    return float(np.mean(error ** 2))


@rayline.workflow
async def trial(alpha: float, samples: int) -> dict[str, float]:
    error = await workflow.execute_activity(fit, alpha, samples, 7, start_to_close="10m")
    return {"alpha": alpha, "error": error}


@rayline.workflow
async def sweep(alphas: list[float], parallel: int, samples: int) -> dict[str, Any]:
    results: list[dict[str, float]] = []
    workflow.set_query_handler("done", lambda: len(results))
    me = workflow.info().workflow_id
    for first in range(0, len(alphas), parallel):  # waves of at most `parallel` trials
        wave = alphas[first:first + parallel]
        results += await asyncio.gather(*(
            workflow.execute_child(trial, alpha, samples, workflow_id=f"{me}-trial-{i}")
            for i, alpha in enumerate(wave, start=first)))
        workflow.search(trials_done=len(results))
    best = min(results, key=lambda r: r["error"])
    return {"best_alpha": best["alpha"], "best_error": best["error"], "trials": len(results)}


def run(client: rayline.Client, trials: int = 12, parallel: int = 4,
        samples: int = 2_000) -> dict[str, Any]:
    alphas = [10 ** (i / 2 - 3) for i in range(trials)]
    handle = client.workflow.start(sweep, args=[alphas, parallel, samples],
                                   workflow_id=f"sweep-{int(time.time() * 1000)}")
    return handle.result()


def main() -> None:
    print(run(rayline.Client(namespace="examples")))


if __name__ == "__main__":
    main()
