"""The visibility index over real (in-memory) storage: list with filters, ranges and
pages, count, and a new registry that answers from what the index kept, reading only
the timelines it cannot vouch for."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from rayline._search import conditions, search_value
from rayline.engine import registry as registry_module
from rayline.engine.registry import Registry
from rayline.errors import InvalidInputError
from rayline.messages import CountRequest, ListRequest, RunStatus, RunSummary
from rayline.storage import MemoryStore, RunStore
from rayline.timeline import Batch, Terminated, WorkflowStarted

from .test_registry import Launcher

N = 10_000


class CountingStore(MemoryStore):
    """A memory store that counts the objects read under each kind of key."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: dict[str, int] = {}
        self.timelines: set[str] = set()  # the workflows whose timeline was read

    def get(self, key: str) -> bytes:
        kind = key.split("/")[1]  # <namespace>/<kind>/...
        self.reads[kind] = self.reads.get(kind, 0) + 1
        if kind == "wf":
            self.timelines.add(key.split("/")[2])
        return super().get(key)


def _summary(i: int) -> RunSummary:
    running = i % 10 == 0
    return RunSummary(
        workflow_id=f"wf-{i:05d}", run_id=f"r{i}", workflow_name="etl" if i % 2 else "ml",
        host="host-q-0", task_queue="q", status=1 if running else 0,
        state=RunStatus.RUNNING if running else RunStatus.COMPLETED,
        started_at=1_000_000.0 + i, closed_at=None if running else 1_000_000.0 + i + 5,
        updated_at=1_000_000.0 + i + (0 if running else 5),
        search={"score": i / N, "region": "eu" if i % 3 else "us",
                "tags": ["gpu"] if i % 7 == 0 else []})


def _store_run(runs: RunStore, i: int, closed: bool) -> None:
    """The run's timeline as its host would have left it (a start; a close when it did)."""
    started = WorkflowStarted(workflow_id=f"wf-{i:05d}", run_id=f"r{i}", epoch=1,
                              workflow_name="etl" if i % 2 else "ml", args=[], task_queue="q",
                              host="host-q-0", time=1_000_000.0 + i, seed=1)
    runs.create_run(started, Batch(seq=1, run_id=f"r{i}", time=started.time,
                                   owner="host-q-0"))
    if closed:
        runs.append(started.workflow_id, 1, Batch(seq=2, run_id=f"r{i}", time=started.time + 5,
                                                  terminated=Terminated(reason="done"),
                                                  owner="host-q-0"))
    else:
        runs.mark_open("host-q-0", started.workflow_id)


async def _all_pages(registry: Registry, **wanted: Any) -> list[RunSummary]:
    found: list[RunSummary] = []
    token = None
    while True:
        page = await registry.list(ListRequest(**wanted, limit=100, page_token=token))
        assert len(page.items) <= 100
        found += page.items
        token = page.next_page_token
        if token is None:
            return found


def _namespace(stored: int) -> tuple[CountingStore, RunStore, Registry]:
    """A fresh store holding the timelines of workflows ``0..stored-1`` as their hosts
    left them, and a registry over it that saves its index at once."""
    store = CountingStore(f"i-{uuid.uuid4().hex}")
    runs = RunStore(store, "t")
    for i in range(stored):
        _store_run(runs, i, closed=_summary(i).state is not RunStatus.RUNNING)
    return store, runs, Registry(runs, store.url, Launcher(runs))


@pytest.fixture(autouse=True)
def _save_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(registry_module, "INDEX_SAVE_EVERY", 0)


async def _saved(registry: Registry) -> None:
    """Waits until the registry has written what it knows to the index in storage."""
    while registry._saving is not None and not registry._saving.done():
        await registry._saving


def test_10000_workflows_listed_by_state_search_range_and_time_in_pages_and_counted() -> None:
    store, runs, registry = _namespace(N)
    summaries = [_summary(i) for i in range(N)]

    async def check(registry: Registry) -> None:
        running = await _all_pages(registry, status=RunStatus.RUNNING)
        assert [s.workflow_id for s in running] == [f"wf-{i:05d}" for i in
                                                    range(N - 10, -1, -10)]  # newest first
        ranged = await _all_pages(registry, search=conditions({"score": {">=": 0.9, "<": 0.95}}),
                            order_by="workflow_id")
        assert [s.workflow_id for s in ranged] == [f"wf-{i:05d}" for i in range(9000, 9500)]
        timed = await _all_pages(registry, started_after=1_000_000.0 + 100,
                           started_before=1_000_000.0 + 350, workflow_name="ml")
        assert sorted(s.workflow_id for s in timed) == [f"wf-{i:05d}" for i in
                                                        range(100, 350, 2)]
        closed = await _all_pages(registry, closed_after=1_000_000.0 + N - 20,
                            order_by="-closed_at")
        assert [s.closed_at for s in closed] == sorted(
            (1_000_000.0 + i + 5 for i in range(N - 25, N) if i % 10), reverse=True)
        tagged = await _all_pages(registry, search=conditions({"tags": "gpu", "region": "us"}))
        assert {s.workflow_id for s in tagged} == {f"wf-{i:05d}" for i in range(N)
                                                   if i % 7 == 0 and i % 3 == 0}
        counted = await registry.count(CountRequest(group_by="status"))
        assert counted.count == N and counted.groups == {"running": 1000, "completed": 9000}
        in_eu = await registry.count(CountRequest(
            search=conditions({"region": {"in": ["eu"]}}), status=RunStatus.RUNNING))
        assert in_eu.count == len([i for i in range(0, N, 10) if i % 3])

    async def main() -> None:
        for start in range(0, N, 500):  # hosts report in batches
            await registry.report(summaries[start:start + 500])
        await check(registry)
        await _saved(registry)
        # a new registry (the cluster restarted) answers from the index in storage: it
        # lists timelines and markers but reads none of them
        store.reads.clear()
        await check(Registry(runs, store.url, Launcher(runs)))
        assert store.reads.get("wf", 0) == 0 and store.reads.get("open", 0) == 0
        assert 0 < store.reads["index"] <= 25

    asyncio.run(main())


def test_a_new_registry_reads_only_the_timelines_whose_reports_were_lost() -> None:
    store, runs, registry = _namespace(50)
    reported = [_summary(i) for i in range(0, 50)]

    async def main() -> None:
        await registry.report(reported)
        await registry.count(CountRequest())
        await _saved(registry)
        _store_run(runs, 50, closed=False)  # started; its report never arrived
        _store_run(runs, 51, closed=True)  # started and closed; no report of either
        runs.append("wf-00020", 1, Batch(seq=2, run_id="r20", time=2e6, owner="host-q-0",
                                         terminated=Terminated(reason="x")))
        runs.clear_open("host-q-0", "wf-00020")  # closed; the report of it was lost
        runs.append("wf-00010", 1, Batch(seq=2, run_id="r10", time=2e6, owner="host-q-1"))
        runs.clear_open("host-q-0", "wf-00010")  # moved; the report of it was lost
        runs.mark_open("host-q-1", "wf-00010")

        store.reads.clear()
        store.timelines.clear()
        fresh = Registry(runs, store.url, Launcher(runs))
        found = {s.workflow_id: s for s in await _all_pages(fresh)}
        assert len(found) == 52 and len(store.timelines) == 4  # those four only
        assert found["wf-00010"].host == "host-q-1"
        assert found["wf-00050"].state is RunStatus.RUNNING
        assert found["wf-00051"].state is RunStatus.TERMINATED
        assert found["wf-00020"].state is RunStatus.TERMINATED and found["wf-00020"].closed_at

        await _saved(fresh)  # what it read is kept: the next registry reads nothing
        store.reads.clear()
        assert len(await _all_pages(Registry(runs, store.url, Launcher(runs)))) == 52
        assert store.reads.get("wf", 0) == 0

    asyncio.run(main())


def test_logs_become_a_snapshot_and_a_torn_one_falls_back_to_the_timelines(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(registry_module, "INDEX_MIN_SNAPSHOT", 10)
    store, runs, registry = _namespace(30)

    async def main() -> None:
        await registry.count(CountRequest())
        for i in range(70):  # one log per report: the logs outgrow the index, twice
            await registry.report([_summary(i % 30)])
            await _saved(registry)
        names = runs.index_names()
        snaps = [n for n in names if n.startswith("snap-")]
        assert len(snaps) == 1 and len(names) - 1 < 30  # older logs and snapshots went
        assert all(int(n[4:]) > int(snaps[0][5:]) for n in names if n.startswith("log-"))

        snapshot = max(n for n in names if n.startswith("snap-"))
        key = f"t/index/{snapshot}"
        store.put(key, store.get(key)[:-20])  # torn
        fresh = Registry(runs, store.url, Launcher(runs))
        assert len(await _all_pages(fresh)) == 30  # from the timelines it cannot vouch for

    asyncio.run(main())


def test_search_values_and_conditions_are_typed_and_bad_ones_named() -> None:
    when = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    assert search_value("at", when) == "2026-12-01T09:30:00.000000Z"
    assert search_value("at", when.replace(tzinfo=None)) == "2026-12-01T09:30:00.000000Z"
    assert conditions({"at": {">": when}, "n": 3}) == {
        "at": {">": "2026-12-01T09:30:00.000000Z"}, "n": {"=": 3}}
    with pytest.raises(InvalidInputError, match="'cfg'.*enrich"):
        search_value("cfg", {"a": 1})
    with pytest.raises(InvalidInputError, match="unknown operator '~'"):
        conditions({"score": {"~": 1}})
    registry = Registry(RunStore(MemoryStore(uuid.uuid4().hex), "t"), "memory://x",
                        Launcher())
    asyncio.run(registry.report([_summary(i) for i in range(3)]))
    with pytest.raises(InvalidInputError, match="page_token"):
        asyncio.run(registry.list(ListRequest(page_token="not-a-token")))
    first = asyncio.run(registry.list(ListRequest(limit=1)))
    with pytest.raises(InvalidInputError, match="order_by"):  # a token keeps its order
        asyncio.run(registry.list(ListRequest(limit=1, order_by="workflow_id",
                                              page_token=first.next_page_token)))


def test_a_registry_that_reports_before_it_lists_writes_after_the_snapshot(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(registry_module, "INDEX_MIN_SNAPSHOT", 1)
    store, runs, first = _namespace(0)

    async def main() -> None:
        await first.count(CountRequest())
        for i in range(3):
            await first.report([_summary(i)])
            await _saved(first)
        assert any(n.startswith("snap-") for n in runs.index_names())
        second = Registry(runs, store.url, Launcher(runs))  # restarted: hosts report
        await second.report([_summary(7)])  # before anyone lists
        await _saved(second)
        third = Registry(runs, store.url, Launcher(runs))
        assert "wf-00007" in {s.workflow_id for s in await _all_pages(third)}

    asyncio.run(main())


def test_what_storage_kept_never_rolls_back_a_report_of_the_same_age() -> None:
    """A host reports its run quarantined (no batch: the same age as its last summary)
    to a registry that has not read the index storage kept, which holds it running."""
    store, runs, old = _namespace(1)
    running = _summary(0)

    async def main() -> list[RunSummary]:
        await old.report([running])
        await _saved(old)
        registry = Registry(runs, store.url, Launcher(runs))  # its index not read yet
        await registry.report([running.model_copy(update={"state": RunStatus.QUARANTINED})])
        return (await registry.list(ListRequest(limit=10))).items

    assert [s.state for s in asyncio.run(main())] == [RunStatus.QUARANTINED]
