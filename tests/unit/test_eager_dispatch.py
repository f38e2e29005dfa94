"""Eager dispatch: an activity starts while the batch that schedules it is being written,
its result is recorded only after that batch, and a signal's sender is answered only
once the batch holding the signal is durable."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

from rayline import _serde
from rayline.storage import LocalStore, RunStore

from . import flows
from .local import LocalBackend, make_host
from .test_host import request, run, until

_BATCH = re.compile(r"/wf/[^/]+/t/\d+/\d+$")


class GatedStore(LocalStore):
    """A local store whose batch writes wait while the gate is closed."""

    def __init__(self, root: str) -> None:
        super().__init__(root, fsync=False)
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0

    def put(self, key: str, data: bytes, *, exclusive: bool = False, **options: Any) -> None:
        if _BATCH.search(key) and not self.gate.is_set():
            self.held += 1
            self.gate.wait(10)
        super().put(key, data, exclusive=exclusive, **options)


def test_an_activity_starts_while_its_batch_is_written_and_its_result_comes_after(
        tmp_path: Any) -> None:
    store = GatedStore(str(tmp_path))
    runs = RunStore(store, "test")

    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        await host.start(request(flows.step_then_wait, 1))
        await until(lambda: [e[1] for e in backend.executions] == [1]
                    and host.executions["wf"].pending()[0].kind == "wait")
        store.gate.clear()  # the next batch (the signal, scheduling step 2) hangs
        signalled = asyncio.ensure_future(host.signal("wf", "go", _serde.encode("now")))
        await until(lambda: [e[1] for e in backend.executions] == [1, 3])
        assert store.held == 1 and not signalled.done()  # not answered before it is durable
        store.gate.set()
        await signalled
        assert _serde.decode((await host.result("wf")).result) == [2, "now", 3]
        _, batches = runs.load("wf")
        kinds = [[type(x).__name__ for x in [*b.events, *b.commands]] for b in batches]
        scheduled = next(i for i, k in enumerate(kinds) if "SignalReceived" in k)
        assert "ScheduleActivity" in kinds[scheduled]
        assert "ActivityCompleted" in kinds[scheduled + 1]  # recorded after its schedule

    run(main)
