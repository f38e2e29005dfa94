"""The blocking watchdog over a real host (no Ray): a workflow that blocks its host's
event loop is reported with its id and the blocking frame, and failed with
``DeadlockError`` past the limit (or at once with ``strict``); its neighbours go on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from rayline import _serde
from rayline.engine.watchdog import Watchdog
from rayline.storage import MemoryStore, RunStore

from . import flows
from .local import LocalBackend, make_host
from .test_host import request, value


def _runs() -> RunStore:
    return RunStore(MemoryStore(f"w-{uuid.uuid4().hex}"), "t")


async def _host_with(runs: RunStore, **limits: Any) -> Any:
    host = await make_host(runs, LocalBackend())
    host.watchdog = Watchdog(host._on_blocked, **limits)
    return host


def test_a_blocking_workflow_is_reported_with_its_id_and_frame_and_neighbours_finish() -> None:
    async def main() -> None:
        host = await _host_with(_runs(), warn_after=0.2, fail_after=60)
        await host.start(request(flows.waits, None, workflow_id="neighbour"))
        await host.start(request(flows.blocks, 0.8, workflow_id="sleepy"))
        assert value(await host.result("sleepy")) == "woke"  # only reported: not failed
        report = (await host.describe("sleepy")).blocked or ""
        assert "workflow sleepy" in report and "time.sleep(seconds)" in report
        assert "workflow.sleep" in report  # says how to fix it
        await host.signal("neighbour", "go", _serde.encode("still here"))
        assert value(await host.result("neighbour")) == "still here"
        assert (await host.describe("neighbour")).blocked is None

    asyncio.run(asyncio.wait_for(main(), 30))


def test_strict_fails_a_workflow_that_blocks_with_deadlock_error() -> None:
    async def main() -> None:
        host = await _host_with(_runs(), warn_after=0.2, strict=True)
        await host.start(request(flows.blocks, 0.8, workflow_id="sleepy"))
        outcome = await host.result("sleepy")
        assert outcome.status == "failed" and outcome.failure is not None
        assert outcome.failure.type == "rayline.errors.DeadlockError"
        assert "workflow sleepy" in outcome.failure.message
        assert "time.sleep(seconds)" in outcome.failure.message
        await host.start(request(flows.one_step, 1, workflow_id="after"))
        assert value(await host.result("after")) == 2  # the host goes on

    asyncio.run(asyncio.wait_for(main(), 30))


def test_code_that_spins_past_the_limit_is_interrupted() -> None:
    async def main() -> None:
        host = await _host_with(_runs(), warn_after=0.2, fail_after=0.5)
        await host.start(request(flows.spins, 30.0, workflow_id="spinner"))
        outcome = await host.result("spinner")  # long before its 30 s are up
        assert outcome.failure is not None
        assert outcome.failure.type == "rayline.errors.DeadlockError"

    asyncio.run(asyncio.wait_for(main(), 20))


def test_quick_activations_are_never_hit() -> None:
    async def main() -> None:
        host = await _host_with(_runs(), warn_after=0.25, fail_after=0.6)
        for i in range(30):
            await host.start(request(flows.gather_then_chain, i, workflow_id=f"q{i}"))
        results = [value(await host.result(f"q{i}")) for i in range(30)]
        assert results[1] == [2, 2, 102, 107, 214]

    asyncio.run(asyncio.wait_for(main(), 60))
