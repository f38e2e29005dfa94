"""Ray Workflows (``ray.workflow``, Ray 2.47, its last release) on W1-W4.

Runs with the ``rayworkflows`` venv's python, in a process of its own: it starts a local
Ray 2.47 with file storage in a temporary directory, and shuts it down at the end.

A workflow here is a DAG of Ray tasks: W1/W2 run ``add1.bind(x)``, W3 a chain of
``add1`` nodes. W4 uses ``workflow.wait_for_event`` with a custom event listener that
waits on a named mailbox actor; the signal is one call on that actor. (Ray's own HTTP
event provider needs Ray Serve, which ``ray[default]`` does not install.)

    python benchmarks/peers/rayworkflows_bench.py [--quick]   # last stdout line is JSON
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402  (the environment must be set before Ray is imported)
from _common import (  # noqa: E402
    SIGNAL_SETTLE_S,
    Report,
    Sizes,
    check,
    latency_ms,
    ms_per,
    new_id,
    per_second,
    sample,
    warm_timed,
)
from ray import workflow  # noqa: E402

MAILBOX = "bench-mailbox"
NAMESPACE = f"bench-rayworkflows-{uuid.uuid4().hex[:8]}"


@ray.remote
def add1(x: int) -> int:
    """The one activity of every workload."""
    return x + 1


@ray.remote
class Mailbox:
    """Holds one pending value per key; ``receive`` waits until ``send`` delivers it."""

    def __init__(self) -> None:
        self.slots: dict[str, asyncio.Future] = {}

    def _slot(self, key: str) -> asyncio.Future:
        return self.slots.setdefault(key, asyncio.get_running_loop().create_future())

    async def receive(self, key: str) -> object:
        value = await self._slot(key)
        del self.slots[key]
        return value

    async def send(self, key: str, value: object) -> None:
        self._slot(key).set_result(value)


class MailboxListener(workflow.EventListener):
    """A workflow event that arrives when the mailbox receives a value for ``key``."""

    async def poll_for_event(self, key: str) -> object:
        mailbox = ray.get_actor(MAILBOX, namespace=NAMESPACE)
        return await mailbox.receive.remote(key)


def w1(sizes: Sizes) -> dict:
    """Run a 1-task workflow, sequentially."""
    def one() -> None:
        check(workflow.run(add1.bind(1), workflow_id=new_id()), 2)
    return latency_ms(sample(one, sizes.w1_runs, sizes.warmup))


def w2(sizes: Sizes) -> dict:
    """Start every 1-task workflow at once, then wait for all results."""
    n = sizes.w2_workflows
    start = time.perf_counter()
    refs = [workflow.run_async(add1.bind(i), workflow_id=new_id()) for i in range(n)]
    check(ray.get(refs), [i + 1 for i in range(n)])
    return {"wf_per_s": per_second(n, time.perf_counter() - start)}


def w3(sizes: Sizes) -> dict:
    """One workflow whose DAG is a chain of tasks."""
    def run() -> None:
        dag = add1.bind(0)
        for _ in range(sizes.w3_steps - 1):
            dag = add1.bind(dag)
        check(workflow.run(dag, workflow_id=new_id()), sizes.w3_steps)
    return {"ms_per_step": ms_per(sizes.w3_steps, warm_timed(run))}


def w4(sizes: Sizes) -> dict:
    """Deliver the event a workflow waits for, then wait for its result."""
    mailbox = Mailbox.options(name=MAILBOX).remote()

    def one() -> float:
        key = new_id()
        ref = workflow.run_async(workflow.wait_for_event(MailboxListener, key),
                                 workflow_id=key)
        time.sleep(SIGNAL_SETTLE_S)
        start = time.perf_counter()
        ray.get(mailbox.send.remote(key, 1))
        check(ray.get(ref), 1)
        return time.perf_counter() - start
    return latency_ms([one() for _ in range(sizes.w4_runs)])


def main(sizes: Sizes) -> Report:
    """Start a local Ray 2.47 with file storage, run W1-W4, shut it down."""
    report = Report("rayworkflows", f"ray {ray.__version__} (ray.workflow)")
    with tempfile.TemporaryDirectory(prefix="bench-rayworkflows-") as storage:
        # Per-workflow INFO lines would otherwise be shipped to and printed by the driver.
        ray.init(address="local", include_dashboard=False, namespace=NAMESPACE,
                 storage=f"file://{storage}", log_to_driver=False,
                 logging_level=logging.WARNING)
        try:
            report.measure("W1", lambda: w1(sizes))
            report.measure("W2", lambda: w2(sizes))
            report.measure("W3", lambda: w3(sizes))
            report.measure("W4", lambda: w4(sizes))
        finally:
            ray.shutdown()
    return report


if __name__ == "__main__":
    main(Sizes.for_run("--quick" in sys.argv[1:])).emit()
