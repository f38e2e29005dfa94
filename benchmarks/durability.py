"""Durability figures (issue: survive everything), outside ``make bench``:

    python benchmarks/durability.py parked 100000   # bytes per parked workflow
    python benchmarks/durability.py resume 1000     # whole Ray restart -> all resumed

``parked`` starts N workflows that sleep 10 minutes on one host, waits until all are
parked, and reports the host process's RSS growth per workflow, overall and for the
second half alone (the marginal cost, once the allocator has grown). ``resume`` starts N
workflows waiting on a signal in one Ray, ends that Ray, and in a new one times the first
``Client()`` (which resumes them) and the signals and results of all N. Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(BENCH_DIR.parent), str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]


def _ray(address: str | None = None) -> None:
    import ray

    ray.init(address=address or "local", include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})


async def _start_all(client: object, fn: object, n: int, prefix: str) -> float:
    began = time.perf_counter()
    for low in range(0, n, 1000):
        await asyncio.gather(*(client.workflow.start(fn, workflow_id=f"{prefix}{i}")  # type: ignore[attr-defined]
                               for i in range(low, min(n, low + 1000))))
    return time.perf_counter() - began


async def park_and_measure(client: object, namespace: str, n: int) -> dict[str, object]:
    """Starts ``n`` workflows that sleep 10 minutes in two halves, waiting each time until
    the host has parked them all; returns starts/s and the host's RSS growth per parked
    workflow, overall and for the second half alone (the marginal cost)."""
    import bench_defs
    import psutil
    import ray

    first = await client.workflow.start(bench_defs.one, args=[1])  # type: ignore[attr-defined]
    await first.result()
    name = (await first.describe()).host  # the host of this code version's pool
    host = ray.get_actor(name, namespace=f"rayline-{namespace}")
    proc = psutil.Process(await host.__ray_call__.remote(lambda self: os.getpid()))

    async def until_parked(count: int) -> None:
        while (await host.stats.remote()).parked < count:
            await asyncio.sleep(0.25)

    base = (await host.stats.remote()).parked
    before = proc.memory_info().rss
    first = await _start_all(client, bench_defs.parked, n // 2, "park-a")
    await until_parked(base + n // 2)
    middle = proc.memory_info().rss
    second = await _start_all(client, bench_defs.parked, n - n // 2, "park-b")
    await until_parked(base + n)
    after = proc.memory_info().rss
    return {"workflows": n, "starts_per_s": round(n / (first + second)),
            "bytes_per_wf": round((after - before) / n),
            "marginal_bytes_per_wf": round((after - middle) / (n - n // 2))}


def parked(n: int) -> dict[str, object]:
    import bench_defs
    import ray

    import rayline

    _ray()
    storage = tempfile.mkdtemp(prefix="rayline-parked-")

    async def main() -> dict[str, object]:
        async with rayline.AsyncClient(storage=storage, namespace="parked") as client:
            await client.workflow.execute(bench_defs.one, args=[1])
            return await park_and_measure(client, "parked", n)

    try:
        return asyncio.run(main())
    finally:
        ray.shutdown()


def resume(n: int) -> dict[str, object]:
    storage = tempfile.mkdtemp(prefix="rayline-resume-")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, __file__, "_before", str(n), storage], check=True, env=env)
    return json.loads(subprocess.run([sys.executable, __file__, "_after", str(n), storage],
                                     check=True, env=env, capture_output=True,
                                     text=True).stdout.splitlines()[-1])


def _phase(phase: str, n: int, storage: str) -> None:
    import bench_defs

    import rayline

    _ray()
    if phase == "_before":
        async def before() -> None:
            async with rayline.AsyncClient(storage=storage, namespace="resume") as client:
                await _start_all(client, bench_defs.wait_signal, n, "r")
        asyncio.run(before())
        return
    began = time.perf_counter()
    client = rayline.Client(storage=storage, namespace="resume")
    connected = time.perf_counter() - began

    async def after() -> None:
        aio = client.aio
        handles = [await aio.workflow.get_handle(f"r{i}") for i in range(n)]
        await asyncio.gather(*(h.signal("go", 1) for h in handles))
        assert await asyncio.gather(*(h.result() for h in handles)) == [1] * n

    client.run(after())
    print(json.dumps({"workflows": n, "first_client_s": round(connected, 2),
                      "all_signalled_and_done_s": round(time.perf_counter() - began, 2)}))


if __name__ == "__main__":
    command, count = sys.argv[1], int(sys.argv[2])
    if command.startswith("_"):
        _phase(command, count, sys.argv[3])
    else:
        print(json.dumps({"parked": parked, "resume": resume}[command](count)))
