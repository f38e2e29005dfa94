"""Snapshots: a run read from storage is one snapshot plus the batches after it, and
exactly the run that reading every batch gives (in-process hosts over real storage)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
import uuid
from typing import Any, Callable

import pytest

from rayline import Codec, CodecError, Keyring, _serde
from rayline.core import replay_timeline
from rayline.errors import WorkflowClosedError
from rayline.messages import RunOutcome
from rayline.storage import LocalStore, MemoryStore, RunStore
from rayline.storage.runs import History

from . import flows
from .local import make_host
from .test_host import request, until, value


class CountingStore(MemoryStore):
    """A memory store that counts reads of one workflow's batches (``t/``) and snapshots
    (``s/``)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"snap-{uuid.uuid4().hex}")
        self.workflow_id = workflow_id
        self.reads = {"t": 0, "s": 0}

    def get(self, key: str) -> bytes:
        parts = key.split("/")  # <namespace>/wf/<id>/<kind>/<epoch>/<seq>
        if len(parts) == 6 and parts[2] == self.workflow_id and parts[3] in self.reads:
            self.reads[parts[3]] += 1
        return super().get(key)

    def reset(self) -> None:
        self.reads = {"t": 0, "s": 0}


def every_batch(runs: RunStore, workflow_id: str) -> History:
    """The latest run read batch by batch, ignoring its snapshots."""
    plain = RunStore(runs.store, runs.namespace, runs.codec)
    plain._snapshot_of = lambda record: None  # type: ignore[method-assign]
    return plain.load_history(workflow_id)


def signalled(runs: RunStore, signals: int, *, close: bool = False,
              snapshot_at: int | None = None, then: Callable[[], bool] | None = None) -> None:
    """Runs ``flows.waits_many`` as workflow "w" on an in-process host and sends it
    ``signals`` items, one batch each (with ``close``, its last one), then waits for the
    snapshot of ``snapshot_at`` batches, or until ``then()`` holds."""
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.waits_many, signals + (not close), workflow_id="w"))
        for i in range(signals):
            await host.signal("w", "item", _serde.encode(f"secret-{i}-payload"))
        if close:
            await host.result("w")
        if snapshot_at is not None:
            await until(lambda: runs.load_history("w").snapshot == snapshot_at)
        if then is not None:
            await until(then)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_parked_run_of_10000_batches_wakes_reading_one_snapshot_plus_n_batches() -> None:
    store = CountingStore("long")
    every = 64
    runs = RunStore(store, "test", snapshot_every=every)
    n = 10_000

    async def main() -> None:
        host = await make_host(runs, park_after=0.05)
        await host.start(request(flows.waits_many, n + 1, workflow_id="long"))
        for i in range(n):
            await host.signal("long", "item", _serde.encode(i))
        await until(lambda: "long" in host.parking.parked, timeout=30)
        assert len(every_batch(runs, "long").batches) > n  # a batch per signal at least
        store.reset()
        await host.signal("long", "item", _serde.encode(n))  # wakes it: reads the run
        outcome = await host.result("long")
        assert value(outcome) == list(range(n + 1))
        assert store.reads["s"] == 1
        assert store.reads["t"] <= every

    asyncio.run(asyncio.wait_for(main(), 120))


def test_a_fan_in_parent_of_200_children_reads_its_timeline_o_children_times() -> None:
    store = CountingStore("p")
    runs = RunStore(store, "test")
    children = 200

    async def main() -> None:
        host = await make_host(runs, park_after=0.01)
        await host.start(request(flows.gathers_children, children, workflow_id="p"))
        await until(lambda: "p" in host.parking.parked and
                    all(f"p-{i}" in host.parking.parked for i in range(children)), timeout=60)
        woken = collections.Counter[str]()
        resume_run = host.resume_run

        async def counted(workflow_id: str) -> Any:
            woken[workflow_id] += 1
            return await resume_run(workflow_id)

        host.resume_run = counted  # type: ignore[method-assign]
        store.reset()
        for i in range(children):  # one child at a time: the parent wakes for each
            await host.signal(f"p-{i}", "go", _serde.encode(i))
            if i < children - 1:
                await until(lambda n=i + 1: woken["p"] >= n and "p" in host.parking.parked
                            and host.parking.waking("p") is None, timeout=30)
        assert value(await host.result("p")) == children
        assert woken["p"] == children
        # each wake read a snapshot and at most 16 batches after it (a snapshot is written
        # at a park 16 batches after the last); reading every batch at each wake would be
        # about 200 * 400 / 2 = 40,000 reads
        assert store.reads["t"] + store.reads["s"] <= 18 * children
        # and no wake wrote the open children's starts again: its history is O(children)
        events = sum(len(b.events) for b in every_batch(runs, "p").batches)
        assert events <= 2 * children + 2

    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.mark.parametrize("seed", range(6))
def test_a_run_read_through_snapshots_is_the_run_read_batch_by_batch(
        tmp_path: Any, seed: int) -> None:
    rng = random.Random(seed)
    runs = RunStore(LocalStore(str(tmp_path), fsync=False), "test",
                    snapshot_every=rng.randint(1, 6),
                    snapshot_park_bytes=rng.choice([0, 1 << 20]),
                    snapshot_park_after=rng.randint(1, 4))
    ids = [f"w{i}" for i in range(3)]

    def same(workflow_id: str) -> bool:
        """Whether the run was read alike both ways (False: it moved on meanwhile)."""
        plain = every_batch(runs, workflow_id)
        through = runs.load_history(workflow_id)
        if every_batch(runs, workflow_id).bodies != plain.bodies:
            return False  # a batch was written between the reads: try again
        assert through.batches == plain.batches
        assert through.bodies == plain.bodies
        definition = flows.wanders
        replayed = [replay_timeline(definition, h.started, h.batches) for h in (through, plain)]
        (one, left_one), (two, left_two) = replayed
        assert left_one == left_two  # the same work to carry out
        assert one.pending_summary() == two.pending_summary()
        assert one.open_obligations() == two.open_obligations()
        assert RunOutcome.of_run(through.batches) == RunOutcome.of_run(plain.batches)
        return True

    async def main() -> None:
        host = await make_host(runs, park_after=rng.choice([0.005, 0.05]))
        for i, workflow_id in enumerate(ids):
            await host.start(request(flows.wanders, seed * 10 + i, 40, workflow_id=workflow_id))
        snapshotted, compared = False, 0
        while not all(await asyncio.gather(*(_closed(host, w) for w in ids))):
            for workflow_id in ids:
                if rng.random() < 0.5:
                    with contextlib.suppress(WorkflowClosedError):
                        await host.signal(workflow_id, "poke", _serde.encode(rng.randint(0, 9)))
                history = runs.load_history(workflow_id)
                snapshotted |= history.snapshot > 0
                compared += same(workflow_id)  # mid-run: what a wake or recovery reads
            await asyncio.sleep(rng.choice([0.0, 0.01, 0.03]))
        for workflow_id in ids:
            await host.result(workflow_id)
            assert same(workflow_id)
        assert snapshotted and compared > 0

    asyncio.run(asyncio.wait_for(main(), 60))


async def _closed(host: Any, workflow_id: str) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(host.result(workflow_id)), 0.001)
    except asyncio.TimeoutError:
        return False
    return True


def test_an_unusable_snapshot_is_said_and_every_batch_read(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    runs = RunStore(LocalStore(str(tmp_path), fsync=False), "test", snapshot_every=2)

    def snapshots() -> list[Any]:
        return sorted(p for p in (tmp_path / "test" / "wf" / "w" / "s").rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    # the newest snapshot is written, and the ones before it are gone
    signalled(runs, 6, close=True, then=lambda: [p.name for p in snapshots()] == ["00000006"])
    (name,) = snapshots()
    plain = every_batch(runs, "w")
    key = name.relative_to(tmp_path).as_posix()
    head, _, rest = runs._open(name.read_bytes(), key).partition(b"\n")
    assert b'"v": 2' in head
    for broken in (runs._seal(head.replace(b'"v": 2', b'"v": 99') + b"\n" + rest, key),
                   runs._seal(head + b"\n" + rest[:-10], key),  # whole, its inside cut
                   name.read_bytes()[:-10]):  # torn
        name.write_bytes(broken)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rayline.storage"):
            history = runs.load_history("w")
        assert history.snapshot == 0 and history.batches == plain.batches
        assert "snapshot unusable" in caplog.text and "reading every batch" in caplog.text


def test_gc_of_a_run_removes_its_snapshots(tmp_path: Any) -> None:
    runs = RunStore(LocalStore(str(tmp_path), fsync=False), "test", snapshot_every=2)
    signalled(runs, 2, close=True, snapshot_at=2)  # batches 1-3: one snapshot, no write left
    epoch = runs.read_run("w").epoch
    runs.delete_run("w", epoch)
    assert not [p for p in (tmp_path / "test" / "wf" / "w").rglob("*") if p.is_file()]


def test_an_encrypted_run_has_encrypted_snapshots_and_reads_through_them(tmp_path: Any) -> None:
    codec = Codec("aes-gcm", Keyring({"k1": b"k" * 32}))
    runs = RunStore(LocalStore(str(tmp_path), fsync=False), "test", codec, snapshot_every=2)
    signalled(runs, 4, snapshot_at=4)
    snapshots = [p for p in (tmp_path / "test" / "wf" / "w" / "s").rglob("0*") if p.is_file()]
    assert snapshots and all(b"secret-" not in p.read_bytes() for p in snapshots)
    assert runs.load_history("w").batches == every_batch(runs, "w").batches
    with pytest.raises(CodecError, match="k1"):  # without the key: refused, not read
        RunStore(runs.store, "test", Codec("aes-gcm", Keyring({"k2": b"q" * 32}))
                 ).load_history("w")


class RemoteStore(MemoryStore):
    """A memory store that behaves as a store of remote calls: not ``quick``, each read
    takes a little while, and the most reads in flight at once is kept."""

    quick = False

    def __init__(self) -> None:
        super().__init__(f"remote-{uuid.uuid4().hex}")
        self.in_flight = self.most = 0
        self.guard = threading.Lock()
        self.listed: list[str] = []

    def list(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return super().list(prefix)

    def get(self, key: str) -> bytes:
        with self.guard:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.002)
            return super().get(key)
        finally:
            with self.guard:
                self.in_flight -= 1


def test_a_remote_store_reads_a_runs_batches_several_at_a_time() -> None:
    store = RemoteStore()
    runs = RunStore(store, "test", snapshot_every=0)
    signalled(runs, 40)
    store.most = 0
    history = runs.load_history("w")
    assert store.most > 1  # read ahead, not one GET after another
    assert history.batches == RunStore(MemoryStore(store.url[len("memory://"):]), "test"
                                       ).load_history("w").batches
    assert [b.seq for b in history.batches] == list(range(1, len(history.batches) + 1))


def test_a_remote_store_reads_the_batches_after_a_snapshot_without_listing_them() -> None:
    store = RemoteStore()
    runs = RunStore(store, "test", snapshot_every=16)
    signalled(runs, 40, snapshot_at=32)
    store.listed.clear()
    history = runs.load_history("w")
    assert history.snapshot == 32 and len(history.batches) == 41
    assert not [p for p in store.listed if "/t/" in p]  # found by reading, not listing
    assert history.batches == every_batch(runs, "w").batches
