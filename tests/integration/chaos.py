"""Chaos: many workflows while host actors are killed at random. Used by the bounded test
(test_chaos.py) and, for as long as you like, as a soak script:

    python -m tests.integration.chaos --minutes 10 [--workflows 200 --steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import glob
import json
import os
import random
import tempfile
import threading
import time
import uuid
from typing import Any

import ray

import rayline
from rayline.actors._names import ray_namespace
from rayline.storage import RunStore, open_store

from . import wf


def _killer(namespace: str, hosts: list[str], every: tuple[float, float],
            stop: threading.Event, kills: list[str], max_kills: int) -> None:
    rng = random.Random(7)
    while len(kills) < max_kills and not stop.wait(rng.uniform(*every)):
        name = rng.choice(hosts)
        try:
            ray.kill(ray.get_actor(name, namespace=ray_namespace(namespace)), no_restart=False)
            kills.append(name)
        except ValueError:
            continue  # between restarts


def run_round(storage: str, namespace: str, folder: str, workflows: int, steps: int,
              every: tuple[float, float] = (0.3, 0.8), max_kills: int = 12) -> dict[str, Any]:
    """Runs ``workflows`` workflows of ``steps`` steps under host kills; returns a report
    and raises AssertionError if any result is wrong or any recorded result was lost."""
    client = rayline.Client(storage=storage, namespace=namespace)
    worker = rayline.Worker.create(client, task_queue="chaos", hosts=2)
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=_killer,
                              args=(namespace, worker.hosts, every, stop, kills, max_kills))

    async def main() -> list[Any]:
        aio = rayline.AsyncClient(storage=storage, namespace=namespace)
        handles = await asyncio.gather(*(
            aio.workflow.start(wf.ten_steps, args=[folder, f"c{i}", steps], task_queue="chaos",
                               workflow_id=f"c{i}") for i in range(workflows)))
        killer.start()
        return list(await asyncio.gather(*(h.result(timeout=300) for h in handles)))

    began = time.monotonic()
    try:
        results = asyncio.run(main())
    finally:
        stop.set()
        if killer.is_alive():
            killer.join()
    assert results == [steps] * workflows, results
    report = count_executions(RunStore(open_store(storage), namespace), folder, workflows, steps)
    return {"workflows": workflows, "steps": steps, "host_kills": len(kills), **report,
            "seconds": round(time.monotonic() - began, 1)}


def count_executions(runs: RunStore, folder: str, workflows: int, steps: int) -> dict[str, int]:
    """Checks every run's timeline against the activity executions left in ``folder``:
    each step's result is recorded exactly once, in order, with the value the workflow
    used, and came from at least one execution; returns the counts (re-runs are the
    executions whose result was not the one recorded)."""
    executions: collections.Counter[str] = collections.Counter(
        os.path.basename(path).split(".", 1)[0] for path in glob.glob(os.path.join(folder, "c*")))
    recorded = 0
    for i in range(workflows):
        started = runs.read_run(f"c{i}")
        completed = [(e.seq, e.result) for b in runs.read_batches(f"c{i}", started.epoch,
                                                                  started.run_id)
                     for e in b.events if e.type == "activity_completed"]
        assert completed == [(k + 1, {"j": k + 1}) for k in range(steps)], (i, completed)
        missing = [k for k in range(steps) if executions[f"c{i}-{k}"] < 1]
        assert not missing, f"c{i}: steps {missing} recorded without ever running"
        recorded += len(completed)
    expected = {f"c{i}-{k}" for i in range(workflows) for k in range(steps)}
    assert set(executions) == expected, set(executions) ^ expected  # nothing else ran
    total = sum(executions.values())
    return {"activity_executions": total, "recorded_results": recorded,
            "reruns": total - recorded,
            "steps_rerun": sum(1 for n in executions.values() if n > 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--kills", type=int, default=100, help="host kills per round at most")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}})
    deadline = time.monotonic() + args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        while time.monotonic() < deadline:
            folder = os.path.join(tmp, uuid.uuid4().hex)
            os.makedirs(folder)
            report = run_round(os.path.join(tmp, "store"), f"soak-{uuid.uuid4().hex[:6]}",
                               folder, args.workflows, args.steps, max_kills=args.kills)
            print(json.dumps(report), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
