"""Retention: gc deletes expired closed runs and early signals, and nothing open, also
while workflows start and close beside it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rayline import _serde
from rayline._gc import collect
from rayline.storage import LocalStore, RunStore
from rayline.timeline import RunOptions, SignalReceived

from . import flows
from .local import make_host
from .test_host import request, run, until, value


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def expiring(seconds: float | None) -> RunOptions:
    return RunOptions(expire=seconds)


def test_gc_deletes_expired_closed_runs_and_early_signals_and_keeps_the_rest(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        for workflow_id, options in (("done", expiring(0)), ("kept", expiring(None)),
                                     ("later", expiring(3600))):
            await host.start(request(flows.one_step, 1, workflow_id=workflow_id,
                                     options=options))
            assert value(await host.result(workflow_id)) == 2
        await host.start(request(flows.waits, None, workflow_id="open", options=expiring(0)))
        await host.start(request(flows.waits, None, workflow_id="parked",
                                 options=expiring(0)))
        await until(lambda: "parked" in host.parking.parked and "open" in host.parking.parked)
        await host.start(request(flows.one_step, 1, workflow_id="again", options=expiring(0)))
        await host.result("again")
        await host.start(request(flows.waits, None, workflow_id="again",
                                 options=expiring(0)))  # a second run, open
        runs.buffer_early_signal("nobody", SignalReceived(
            signal_id="s", data=_serde.encode(1), expire_at=time.time() - 1))
        runs.buffer_early_signal("somebody", SignalReceived(
            signal_id="s", data=_serde.encode(2), expire_at=time.time() + 3600))

        dry = collect(runs, time.time(), dry_run=True)
        assert dry.workflows == {"done": runs.read_run("done").run_id}
        assert runs.latest_epoch("done") == 1  # a dry run deletes nothing
        report = collect(runs, time.time())
        assert sorted(w for w, _ in report.runs) == ["again", "done"]  # again: its run 1
        assert list(report.workflows) == ["done"] and report.early_signals == 1
        assert report.kept_open == 3  # open, parked, again
        assert runs.latest_epoch("done") is None
        assert "done" not in runs.all_workflow_keys()  # no empty folder left to list
        assert "nobody" not in runs.store.list(f"{runs.namespace}/early")
        assert runs.epochs("again") == [2] and runs.epochs("kept") == [1]
        assert [s.data for _, s in runs.take_early_signals("somebody")] == [_serde.encode(2)]
        for workflow_id in ("open", "parked", "again"):
            await host.signal(workflow_id, "go", _serde.encode(workflow_id))
            assert value(await host.result(workflow_id)) == workflow_id  # untouched
        swept = collect(runs, time.time(), older_than=0)  # runs without an expire of their own
        assert swept.workflows.keys() == {"kept", "open", "parked", "again"}  # not "later"

    run(main)


def test_gc_racing_starts_and_closes_loses_nothing_open(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        stop = False
        collected: list[str] = []

        async def gc_loop() -> None:
            while not stop:
                report = await asyncio.to_thread(collect, runs, time.time())
                collected.extend(report.workflows)
                await asyncio.sleep(0)

        loop = asyncio.ensure_future(gc_loop())
        for round_ in range(3):  # ids reused: a new run races the gc of the last one
            for i in range(20):
                await host.start(request(flows.waits, None, workflow_id=f"w{i}",
                                         options=expiring(0)))
            for i in range(20):
                await host.signal(f"w{i}", "go", _serde.encode(round_))
                assert value(await host.result(f"w{i}")) == round_
        stop = True
        await loop
        assert collected  # the gc did delete closed runs meanwhile
        for workflow_id in {f"w{i}" for i in range(20)}:
            for epoch in runs.epochs(workflow_id):  # what is left reads whole
                started, batches = runs.load(workflow_id, epoch)
                assert batches and batches[-1].run_id == started.run_id

    run(main)
