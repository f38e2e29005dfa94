"""Writes the golden timelines into ``tests/golden/timelines``: ``python -m
tests.golden.make`` from the repository root, once per timeline format (the runs of
earlier formats stay). Runs the workflows of ``tests.golden.workflows`` on an
in-process host (no Ray): every kind of step, so that each format's objects are there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rayline import RetryPolicy, _serde
from rayline._code import CodeRef
from rayline.engine.host import Host
from rayline.messages import StartRequest
from rayline.storage import LocalStore, RunStore
from rayline.timeline import TIMELINE_VERSION, RunOptions

from ..unit.local import LocalBackend
from . import workflows as wf

ROOT = Path(__file__).parent / "timelines"
NAMESPACE = "golden"


def request(fn: Any, *args: Any, workflow_id: str, **extra: Any) -> StartRequest:
    return StartRequest(workflow_id=workflow_id, workflow_name=fn.name, code=CodeRef.of(fn),
                        args=_serde.encode_args(args, what="golden"), task_queue="default",
                        **extra)


async def make(prefix: str) -> None:
    runs = RunStore(LocalStore(str(ROOT), fsync=False), NAMESPACE)
    backend = LocalBackend()
    host = Host("h0", runs, backend, version="golden-a", park_after=None)
    backend.hosts["h0"] = host
    await host.recover()

    async def run(fn: Any, *args: Any, name: str, **extra: Any) -> str:
        workflow_id = f"{prefix}-{name}"
        await host.start(request(fn, *args, workflow_id=workflow_id, **extra))
        return workflow_id

    async def signal(workflow_id: str, name: str, data: Any) -> None:
        await host.signal(workflow_id, name, _serde.encode(data))

    done = [await run(wf.steps, 3, name="steps"),
            await run(wf.retried_step, f"{prefix}-key", name="retried-step"),
            await run(wf.parent, 5, name="parent"),
            await run(wf.patched_and_continued, 2, name="continued"),
            await run(wf.fails_once, name="retried-workflow", options=RunOptions(
                retry=RetryPolicy(maximum_attempts=2, initial_interval=0.01).to_json()))]
    signals = await run(wf.signals, 3, name="signals")
    for item in ("a", "b", "c"):
        await signal(signals, "item", item)
    await signal(signals, "done", True)
    counter = await run(wf.counter, 10, name="counter")
    for update_id, by in (("u1", 3), ("u2", 4), ("u3", 9)):  # u3 is refused
        try:
            await host.update(counter, update_id, "add", _serde.encode_args((by,), what="u"))
        except Exception as exc:
            print(f"{update_id}: {type(exc).__name__}: {exc}")
    await signal(counter, "stop", None)
    delayed = await run(wf.waits, name="delayed", start_delay=0.05)
    await signal(delayed, "go", "late")
    moved = await run(wf.waits, name="moved")  # then adopted by a host of another version
    other = Host("h1", runs, backend, version="golden-b", park_after=None)
    backend.hosts["h1"] = other
    await other.recover()
    assert await other.adopt(moved) is None
    await other.signal(moved, "go", _serde.encode("on golden-b"))
    for workflow_id in [*done, signals, counter, delayed]:
        print(workflow_id, (await host.result(workflow_id)).status.value)
    print(moved, (await other.result(moved)).status.value)


if __name__ == "__main__":
    asyncio.run(make(f"v{TIMELINE_VERSION}"))
