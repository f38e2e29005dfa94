"""rayline on W1-W7, written against the public API (shared/API.md).

W1, W3 and W4 use the sync ``rayline.Client``; W2, W5 and W7 the ``AsyncClient`` with
``asyncio.gather`` over every start. W5 parks many workflows on a 10-minute durable
sleep and reports starts/s and the host process's memory growth per parked workflow,
overall and marginal (see durability.py). W6 compares step costs early and late in a
long history; W7 kills the host under many in-flight workflows. Also: the core's replay
speed and the registry calls made during a 100-step workflow. The parked workflows are
left behind: every run has its own temporary storage and namespace, and the local Ray
is shut down at the end.

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
    warm_timed,
)

BENCH_DIR = Path(__file__).resolve().parent


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
        report.measure("W1", lambda: self.w1(self.defs.one))
        report.measure("W1_local", lambda: self.w1(self.defs.one_local))
        report.measure("W1_execute", lambda: self.w1(self.defs.one, execute=True))
        report.measure("W2", lambda: asyncio.run(self.w2()))
        report.measure("W3", lambda: self.w3(self.defs.steps))
        report.measure("W3_local", lambda: self.w3(self.defs.steps_local))
        report.measure("W4", self.w4)
        report.measure("W6", self.w6)
        report.measure("replay", replay_speed)
        report.measure("registry", self.registry_calls)
        report.measure("W7", lambda: asyncio.run(self.w7()))  # kills the host: near the end
        report.measure("W5", lambda: asyncio.run(self.w5()))  # leaves workflows parked: last

    def w1(self, workflow, execute: bool = False) -> dict:
        """Start a 1-activity workflow and wait for its result, sequentially (with
        ``execute``: both in one call)."""
        def one() -> None:
            if execute:
                check(self.client.workflow.execute(workflow, args=[1]), 2)
            else:
                check(self.client.workflow.start(workflow, args=[1]).result(), 2)
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

    def w3(self, workflow) -> dict:
        """One workflow of sequential activities."""
        n = self.sizes.w3_steps

        def run() -> None:
            check(self.client.workflow.execute(workflow, args=[n]), n)
        return {"ms_per_step": ms_per(n, warm_timed(run))}

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

    def w6(self) -> dict:
        """Per-step cost late in a long history against early in it (flat means ~1.0), on
        a host of its own so the earlier workloads' runs do not share its process."""
        n = 2_000 if self.sizes.w3_steps < 100 else 10_000
        window = 100
        fresh = self.rayline.Client(storage=self.storage, namespace=f"{self.namespace}-w6")
        early, late = fresh.workflow.execute(self.defs.long_history, args=[n, window])

        def per_step(times: list[float]) -> float:
            return (times[-1] - times[0]) / (len(times) - 1) * 1000
        return {"steps": n, "ms_per_step_early": round(per_step(early), 3),
                "ms_per_step_late": round(per_step(late), 3),
                "late_over_early": round(per_step(late) / per_step(early), 3)}

    async def w7(self) -> dict:
        """Kill the host under many in-flight workflows; time until all have moved on."""
        import ray

        n = 200 if self.sizes.w3_steps < 100 else 1_000
        async with self.async_client() as client:
            handles = await asyncio.gather(*(
                client.workflow.start(self.defs.wait_signal, workflow_id=f"w7-{i}")
                for i in range(n)))
            name = (await handles[0].describe()).host  # the pool of this code version
            host = ray.get_actor(name, namespace=f"rayline-{self.namespace}")
            killed = time.perf_counter()
            ray.kill(host, no_restart=False)
            await asyncio.gather(*(h.signal("go", 1) for h in handles))
            check(await asyncio.gather(*(h.result() for h in handles)), [1] * n)
            return {"workflows": n, "seconds": round(time.perf_counter() - killed, 3)}

    def registry_calls(self) -> dict:
        """Calls the registry received while one 100-step workflow ran (it is off the path)."""
        import ray

        registry = ray.get_actor("registry", namespace=f"rayline-{self.namespace}")
        before = ray.get(registry.stats.remote()).calls
        self.client.workflow.execute(self.defs.steps, args=[100])
        after = ray.get(registry.stats.remote()).calls
        return {"steps": 100, "calls": sum(after.values()) - sum(before.values()),
                "awaited_calls": sum(v for k, v in after.items() if k != "report")
                - sum(v for k, v in before.items() if k != "report")}

    async def w5(self) -> dict:
        """Park many sleeping workflows: starts/s and host memory per parked workflow."""
        from durability import park_and_measure

        async with self.async_client() as client:
            return await park_and_measure(client, self.namespace, self.sizes.w5_workflows)


def replay_speed() -> dict:
    """Events per second the core replays (no Ray, no storage): a 5,000-step timeline."""
    import bench_defs

    from rayline import _serde
    from rayline.core import WorkflowInstance, replay_timeline
    from rayline.timeline import ActivityCompleted, Batch, WorkflowStarted

    started = WorkflowStarted(workflow_id="r", run_id="r", epoch=1, workflow_name="steps",
                              args=_serde.encode_args((5_000,), what="n"), task_queue="q",
                              host="h", time=0.0, seed=1)
    live = WorkflowInstance(bench_defs.steps, started)
    batches, events, x = [], [], 0
    while live.closing is None:
        commands = live.activate(events, float(len(batches)))
        batches.append(Batch(seq=len(batches) + 1, run_id="r", time=float(len(batches)),
                             events=events, commands=commands))
        x += 1
        events = [ActivityCompleted(seq=c.seq, result={"j": x}) for c in commands
                  if c.type == "schedule_activity"]
    count = sum(len(b.events) + len(b.commands) for b in batches)
    began = time.perf_counter()
    replay_timeline(bench_defs.steps, started, batches)
    return {"events": count, "events_per_s": round(count / (time.perf_counter() - began))}


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
