"""Raw Ray baselines: what the substrate costs before any workflow engine is added.

Two columns of the results table come from here:

- ``ray_tasks``: plain Ray calls from the driver. W1 is one ``add1`` task round trip,
  W2 many tasks submitted at once (tasks/s), W3 sequential tasks (ms per step), and W4
  the round trip of an actor method call (delivering a signal is one such call).
- ``ray_floor``: the least a durable engine on Ray must do. A hand-written async actor
  that, per workflow, writes a start record and then, per step, awaits an ``add1`` Ray
  task and writes one fsync'd record (tmp file + fsync + ``os.replace``). A signal is
  one fsync'd record plus waking the waiting coroutine.

    python benchmarks/raw_ray.py [--quick]     # prints one JSON object
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402  (the environment must be set before Ray is imported)
from peers._common import (  # noqa: E402
    SIGNAL_SETTLE_S,
    Report,
    Sizes,
    check,
    export_pythonpath,
    latency_ms,
    ms_per,
    per_second,
    sample,
    warm_timed,
)


@ray.remote
def add1(x: int) -> int:
    """The one activity of every workload."""
    return x + 1


@ray.remote
class Echo:
    """A plain actor, for the method-call round trip."""

    def add1(self, x: int) -> int:
        """Same work as the task, as an actor method."""
        return x + 1


def durable_write(path: Path, payload: dict) -> None:
    """Write one small record atomically and durably: tmp file, fsync, rename."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@ray.remote
class FloorHost:
    """A minimal durable workflow host: one asyncio task per workflow in one async actor.

    It keeps no timeline, does no replay and has no registry: it is the floor under
    what any durable engine on Ray has to pay per start, per step and per signal.
    """

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.runs: dict[str, asyncio.Task] = {}
        self.signals: dict[str, asyncio.Future] = {}

    def _record(self, wf_id: str, key: str, value: object) -> None:
        durable_write(self.root / f"{wf_id}-{key}.json", {"key": key, "value": value})

    async def start(self, wf_id: str, steps: int) -> None:
        """Durably record the start, then run ``steps`` activities in the background."""
        self._record(wf_id, "start", steps)
        self.runs[wf_id] = asyncio.create_task(self._steps(wf_id, steps))

    async def _steps(self, wf_id: str, steps: int) -> int:
        x = 0
        for i in range(steps):
            x = await add1.remote(x)
            self._record(wf_id, f"step-{i}", x)
        return x

    async def start_waiting(self, wf_id: str) -> None:
        """Durably record the start of a workflow that waits for one signal."""
        self._record(wf_id, "start", None)
        self.signals[wf_id] = asyncio.get_running_loop().create_future()
        self.runs[wf_id] = asyncio.create_task(self._wait(wf_id))

    async def _wait(self, wf_id: str) -> object:
        value = await self.signals[wf_id]
        self._record(wf_id, "result", value)
        return value

    async def signal(self, wf_id: str, value: object) -> None:
        """Durably record the signal, then wake the workflow."""
        self._record(wf_id, "signal", value)
        self.signals.pop(wf_id).set_result(value)

    async def result(self, wf_id: str) -> object:
        """Wait for the workflow to finish and return its result."""
        return await self.runs.pop(wf_id)


def task_round_trips(sizes: Sizes) -> dict:
    """W1: sequential ``ray.get(add1.remote(x))`` from the driver."""
    return latency_ms(sample(lambda: check(ray.get(add1.remote(1)), 2),
                             sizes.w1_runs, sizes.warmup))


def task_throughput(sizes: Sizes) -> dict:
    """W2: submit every task at once, then get them all."""
    n = sizes.w2_workflows
    start = time.perf_counter()
    check(ray.get([add1.remote(i) for i in range(n)]), [i + 1 for i in range(n)])
    return {"wf_per_s": per_second(n, time.perf_counter() - start)}


def task_chain(sizes: Sizes) -> dict:
    """W3: one task after the other, each waiting for the previous result."""
    def chain() -> None:
        x = 0
        for _ in range(sizes.w3_steps):
            x = ray.get(add1.remote(x))
        check(x, sizes.w3_steps)
    return {"ms_per_step": ms_per(sizes.w3_steps, warm_timed(chain))}


def actor_round_trips(sizes: Sizes) -> dict:
    """W4 baseline: a method call on a live actor, from the driver."""
    echo = Echo.remote()
    return latency_ms(sample(lambda: check(ray.get(echo.add1.remote(1)), 2),
                             sizes.w1_runs, sizes.warmup))


def floor_latency(host, sizes: Sizes) -> dict:
    """W1 on the floor host: start a 1-step workflow, then wait for its result."""
    def one() -> None:
        wf_id = uuid.uuid4().hex
        ray.get(host.start.remote(wf_id, 1))
        check(ray.get(host.result.remote(wf_id)), 1)
    return latency_ms(sample(one, sizes.w1_runs, sizes.warmup))


def floor_throughput(host, sizes: Sizes) -> dict:
    """W2 on the floor host: start every 1-step workflow, then wait for all results."""
    ids = [uuid.uuid4().hex for _ in range(sizes.w2_workflows)]
    start = time.perf_counter()
    ray.get([host.start.remote(wf_id, 1) for wf_id in ids])
    check(ray.get([host.result.remote(wf_id) for wf_id in ids]), [1] * len(ids))
    return {"wf_per_s": per_second(len(ids), time.perf_counter() - start)}


def floor_steps(host, sizes: Sizes) -> dict:
    """W3 on the floor host: one workflow of sequential steps."""
    def run() -> None:
        wf_id = uuid.uuid4().hex
        ray.get(host.start.remote(wf_id, sizes.w3_steps))
        check(ray.get(host.result.remote(wf_id)), sizes.w3_steps)
    return {"ms_per_step": ms_per(sizes.w3_steps, warm_timed(run))}


def floor_signal(host, sizes: Sizes) -> dict:
    """W4 on the floor host: signal a waiting workflow, then wait for its result."""
    def one() -> float:
        wf_id = uuid.uuid4().hex
        ray.get(host.start_waiting.remote(wf_id))
        time.sleep(SIGNAL_SETTLE_S)
        start = time.perf_counter()
        ray.get(host.signal.remote(wf_id, 1))
        check(ray.get(host.result.remote(wf_id)), 1)
        return time.perf_counter() - start
    return latency_ms([one() for _ in range(sizes.w4_runs)])


def measure_tasks(sizes: Sizes) -> Report:
    """The ``ray_tasks`` column."""
    report = Report("ray_tasks", ray.__version__)
    report.measure("W1", lambda: task_round_trips(sizes))
    report.measure("W2", lambda: task_throughput(sizes))
    report.measure("W3", lambda: task_chain(sizes))
    report.measure("W4", lambda: actor_round_trips(sizes))
    return report


def measure_floor(sizes: Sizes, root: str) -> Report:
    """The ``ray_floor`` column, on one async host actor writing under ``root``."""
    report = Report("ray_floor", ray.__version__)
    host = FloorHost.remote(root)
    report.measure("W1", lambda: floor_latency(host, sizes))
    report.measure("W2", lambda: floor_throughput(host, sizes))
    report.measure("W3", lambda: floor_steps(host, sizes))
    report.measure("W4", lambda: floor_signal(host, sizes))
    ray.kill(host)
    return report


def run(quick: bool = False) -> dict:
    """Measure both baselines; returns ``{"ray_tasks": {...}, "ray_floor": {...}}``.

    Starts (and afterwards shuts down) a local Ray only if none is initialised yet.
    """
    sizes = Sizes.for_run(quick)
    export_pythonpath(str(Path(__file__).resolve().parent))
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address="local", include_dashboard=False,
                 namespace=f"bench-raw-{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory(prefix="rayline-floor-") as root:
            return {"ray_tasks": measure_tasks(sizes).as_dict(),
                    "ray_floor": measure_floor(sizes, root).as_dict()}
    finally:
        if owns_ray:
            ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:])))
