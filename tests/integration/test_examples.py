"""The examples people copy, run at a small size against the session's Ray."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

import rayline
from examples import batch_inference, hyperparameter_sweep, ml_pipeline, order_workflow

from .conftest import host_actor


def test_order_workflow_approves_one_order_and_refunds_a_cancelled_one(
        client: rayline.Client) -> None:
    ended = order_workflow.run(client, tag="t")
    assert ended["approved"].startswith("charged 42.00 (order-A-t:")
    assert ended["approved"].endswith("approved by alice")
    assert ended["cancelled"] == "cancelled: refunded"
    assert ended["stages"] == ["shipped", "cancelled"]


def test_a_sweep_picks_the_best_trial_and_survives_its_host_being_killed(
        client: rayline.Client, namespace: str) -> None:
    alphas = [10 ** (i / 2 - 3) for i in range(8)]
    errors = {a: hyperparameter_sweep.fit.fn(a, 400, 7) for a in alphas}
    handle = client.workflow.start(hyperparameter_sweep.sweep, args=[alphas, 3, 400],
                                   workflow_id="sweep")
    deadline = time.monotonic() + 60
    while (handle.query_state(["trials_done"])["trials_done"] or 0) < 3:
        assert time.monotonic() < deadline and handle.status() > 0
        time.sleep(0.05)
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)  # mid-sweep
    result = handle.result(timeout=120)
    best = min(alphas, key=lambda a: errors[a])
    assert result == {"best_alpha": best, "best_error": errors[best], "trials": 8}


def test_batch_inference_continues_as_new_and_shows_its_progress(
        client: rayline.Client) -> None:
    found: dict[str, Any] = batch_inference.run(client, total=2_000, chunk=100,
                                                chunks_per_run=4)
    assert found["done"] == 2_000 and found["runs"] == 5
    assert found["positives"] == found["expected_positives"]
    assert found["progress_seen"] and found["progress_seen"][-1] <= 2_000


def test_ml_pipeline_deploys_once_approved_and_keeps_its_data_set_once(
        client: rayline.Client, storage: str) -> None:
    approved = ml_pipeline.run(client, samples=4_000, epochs=60, workflow_id="ml-approved")
    assert approved["accuracy"] >= 0.8 > approved["majority_baseline"]
    assert approved["outcome"].startswith("deployed a model of 64 weights")
    rejected = ml_pipeline.run(client, samples=4_000, epochs=60, approve=False,
                               workflow_id="ml-rejected")
    assert rejected["outcome"] == "kept the previous model: rejected by alice"
    kept = [name for _, _, names in os.walk(storage) for name in names
            if len(name) == 64]  # objects/<sha256>: the same data set, kept once
    assert len(kept) == 1
