"""An ML pipeline: prepare data, train, evaluate, wait for a person's approval, then
deploy the model or roll back.

    .venv/bin/python examples/ml_pipeline.py          # train on a CPU
    .venv/bin/python examples/ml_pipeline.py --gpu    # ask Ray for a GPU to train on

``prepare`` makes a classification data set with numpy (no download). The data set is
tens of megabytes: it moves between activities by reference, kept once in rayline's
storage and handed from Ray's object store to each activity that takes it, while the
timeline records only its digest. ``train`` fits a logistic regression by gradient
descent, heartbeating its progress each epoch so that a retried attempt (a preempted
node, say) resumes from the last epoch rather than from scratch; with ``--gpu`` it
reserves ``num_gpus=1``. ``evaluate`` measures accuracy on held-out data. The workflow
then waits, durably and parked out of memory, for an ``approve`` signal, and deploys the
model only if it was approved in time and is accurate enough.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import RetryPolicy, workflow  # noqa: E402

FEATURES = 64


@rayline.activity
def prepare(samples: int, seed: int) -> dict[str, Any]:
    """A labelled data set (features and 0/1 labels), split for training and testing."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, FEATURES))
    truth = rng.normal(size=FEATURES)
    y = (x @ truth + rng.normal(scale=2.0, size=samples) > 0).astype(np.float64)
    split = samples * 4 // 5
    return {"x_train": x[:split], "y_train": y[:split], "x_test": x[split:],
            "y_test": y[split:]}


@rayline.activity(heartbeat_timeout="2m", retry=RetryPolicy(maximum_attempts=5))
def train(data: dict[str, Any], epochs: int, rate: float) -> list[float]:
    """Logistic regression weights, by full-batch gradient descent."""
    import numpy as np

    x, y = data["x_train"], data["y_train"]
    progress = rayline.activity_info().heartbeat_details  # from a previous attempt
    start, weights = (progress["epoch"], np.array(progress["weights"])) if progress \
        else (0, np.zeros(FEATURES))
    for epoch in range(start, epochs):
        predicted = 1 / (1 + np.exp(-(x @ weights)))
        weights -= rate * x.T @ (predicted - y) / len(y)
        rayline.heartbeat({"epoch": epoch + 1, "weights": weights.tolist()})
    return [float(w) for w in weights]


@rayline.activity
def evaluate(data: dict[str, Any], weights: list[float]) -> dict[str, float]:
    import numpy as np

    predicted = data["x_test"] @ np.array(weights) > 0
    accuracy = float(np.mean(predicted == data["y_test"].astype(bool)))
    majority = float(max(np.mean(data["y_test"]), 1 - np.mean(data["y_test"])))
    return {"accuracy": accuracy, "majority_baseline": majority}


@rayline.activity(local=True)
def deploy(weights: list[float], accuracy: float) -> str:
    return f"deployed a model of {len(weights)} weights (accuracy {accuracy:.3f})"


@rayline.activity(local=True)
def roll_back(reason: str) -> str:
    return f"kept the previous model: {reason}"


@rayline.workflow
async def ml_pipeline(samples: int, epochs: int, use_gpu: bool, approval_timeout: str,
                      min_accuracy: float) -> dict[str, Any]:
    data = await workflow.execute_activity(prepare, samples, 7)
    resources = {"num_gpus": 1} if use_gpu else {}
    workflow.search(stage="training")
    weights = await workflow.execute_activity(train, data, epochs, 0.5,
                                              start_to_close="6h", **resources)
    metrics = await workflow.execute_activity(evaluate, data, weights)
    workflow.search(stage="awaiting-approval", accuracy=metrics["accuracy"])
    decision = await workflow.condition("approve", timeout=approval_timeout)
    if decision is False:
        outcome = await workflow.execute_activity(roll_back, "no approval in time")
    elif not decision.get("approved"):
        outcome = await workflow.execute_activity(roll_back, f"rejected by {decision['by']}")
    elif metrics["accuracy"] < min_accuracy:
        outcome = await workflow.execute_activity(
            roll_back, f"accuracy {metrics['accuracy']:.3f} is under {min_accuracy}")
    else:
        outcome = await workflow.execute_activity(deploy, weights, metrics["accuracy"])
    workflow.search(stage="done")
    return {**metrics, "outcome": outcome}


def run(client: rayline.Client, samples: int = 100_000, epochs: int = 200,
        use_gpu: bool = False, approve: bool = True, workflow_id: str | None = None
        ) -> dict[str, Any]:
    """Starts the pipeline, plays the reviewer once it waits, and returns its result."""
    handle = client.workflow.start(
        ml_pipeline, args=[samples, epochs, use_gpu, "1h", 0.8],
        workflow_id=workflow_id or f"ml-{int(time.time() * 1000)}")
    deadline = time.monotonic() + 600
    while handle.query_state(["stage"])["stage"] != "awaiting-approval":
        if time.monotonic() > deadline or handle.status() <= 0:
            return handle.result()  # raises its failure
        time.sleep(0.1)
    accuracy = handle.query_state(["accuracy"])["accuracy"]
    print(f"model accuracy {accuracy:.3f}: {'approving' if approve else 'rejecting'}")
    handle.signal("approve", {"approved": approve, "by": "alice"})
    return handle.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="train with num_gpus=1")
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()
    print(run(rayline.Client(namespace="examples"), samples=args.samples, use_gpu=args.gpu))


if __name__ == "__main__":
    main()
