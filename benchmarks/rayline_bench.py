"""rayline on W1-W5, written against the public API (shared/API.md).

W1, W3 and W4 use the sync ``rayline.Client``; W2 and W5 the ``AsyncClient`` with
``asyncio.gather`` over every start. W5 parks many workflows on a 10-minute durable
sleep and reports starts/s and the memory they cost: the growth in the summed RSS of
the Ray processes this driver started (workers, raylet, GCS), per workflow. The
parked workflows are left behind: every run has its own temporary storage and
namespace, and the local Ray is shut down at the end.

    python benchmarks/rayline_bench.py [--quick]     # prints one JSON object
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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
    timed,
)

BENCH_DIR = Path(__file__).resolve().parent
# Time for the last started W5 workflows to reach their sleep before memory is read.
PARK_SETTLE_S = 5.0


class RaylineBench:
    """W1-W5 on one storage directory and one namespace.

    ``rayline`` and ``defs`` (the ``bench_defs`` module) are passed in, imported by
    :func:`run`, so that this file imports without rayline installed.
    """

    def __init__(self, rayline, defs, sizes: Sizes, storage: str) -> None:
        self.rayline = rayline
        self.defs = defs
        self.sizes = sizes
        self.storage = storage
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.client = rayline.Client(storage=storage, namespace=self.namespace)

    def async_client(self):
        """An ``AsyncClient`` on the same storage and namespace as the sync client."""
        return self.rayline.AsyncClient(storage=self.storage, namespace=self.namespace)

    def measure(self, report: Report) -> None:
        """Run every workload into ``report``."""
        report.measure("W1", self.w1)
        report.measure("W2", lambda: asyncio.run(self.w2()))
        report.measure("W3", self.w3)
        report.measure("W4", self.w4)
        report.measure("W5", lambda: asyncio.run(self.w5()))

    def w1(self) -> dict:
        """Start a 1-activity workflow and wait for its result, sequentially."""
        def one() -> None:
            check(self.client.workflow.start(self.defs.one, args=[1]).result(), 2)
        return latency_ms(sample(one, self.sizes.w1_runs, self.sizes.warmup))

    async def w2(self) -> dict:
        """Start every 1-activity workflow at once, then wait for all results."""
        n = self.sizes.w2_workflows
        async with self.async_client() as client:
            start = time.perf_counter()
            handles = await asyncio.gather(*(client.workflow.start(self.defs.one, args=[i])
                                             for i in range(n)))
            check(await asyncio.gather(*(h.result() for h in handles)),
                  [i + 1 for i in range(n)])
            return {"wf_per_s": per_second(n, time.perf_counter() - start)}

    def w3(self) -> dict:
        """One workflow of sequential activities."""
        n = self.sizes.w3_steps

        def run() -> None:
            check(self.client.workflow.execute(self.defs.steps, args=[n]), n)
        return {"ms_per_step": ms_per(n, timed(run))}

    def w4(self) -> dict:
        """Signal a workflow blocked on ``condition("go")``, then wait for its result."""
        def one() -> float:
            handle = self.client.workflow.start(self.defs.wait_signal)
            time.sleep(SIGNAL_SETTLE_S)
            start = time.perf_counter()
            handle.signal("go", 1)
            check(handle.result(), 1)
            return time.perf_counter() - start
        return latency_ms([one() for _ in range(self.sizes.w4_runs)])

    async def w5(self) -> dict:
        """Park many sleeping workflows: starts/s and bytes of Ray process memory each."""
        n = self.sizes.w5_workflows
        async with self.async_client() as client:
            before = ray_processes_rss()
            start = time.perf_counter()
            await asyncio.gather(*(client.workflow.start(self.defs.parked)
                                   for _ in range(n)))
            elapsed = time.perf_counter() - start
            await asyncio.sleep(PARK_SETTLE_S)
            growth = ray_processes_rss() - before
        return {"starts_per_s": per_second(n, elapsed), "bytes_per_wf": round(growth / n)}


def ray_processes_rss() -> int:
    """Summed RSS, in bytes, of every process this driver started (Ray's processes)."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(quick: bool = False) -> dict:
    """Measure rayline; returns its report as a JSON-able dict.

    If rayline cannot be imported the report says so and holds no figures.
    """
    sizes = Sizes.for_run(quick)
    export_pythonpath(str(BENCH_DIR.parent), str(BENCH_DIR))
    report = Report("rayline")
    try:
        import bench_defs
        import rayline
    except ImportError as exc:
        report.fail("import", exc)
        return report.as_dict()
    report.version = getattr(rayline, "__version__", None)

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-rayline-") as storage:
        try:
            RaylineBench(rayline, bench_defs, sizes, storage).measure(report)
        except Exception as exc:  # the client could not even start
            traceback.print_exc()
            report.fail("client", exc)
        finally:
            ray.shutdown()
    return report.as_dict()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:])))
