"""Large values by reference: a value above ``RAYLINE_LARGE_VALUE`` bytes is stored once
as ``objects/<sha256>`` and the timeline holds its reference; passing it on records the
same reference again; a restarted host reads it back from storage; clients write large
inputs and signals themselves and read large results; exports show the reference."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import cloudpickle
import pytest

from rayline import _serde
from rayline._values import Values
from rayline.client import AsyncClient
from rayline.errors import SerializationError, StorageError
from rayline.messages import RunStatus
from rayline.storage import LocalStore, RunStore

from . import flows
from .local import LocalBackend, LocalConnection, make_host
from .test_host import request, run, until


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def _stored(runs: RunStore) -> tuple[list[str], int]:
    """The objects kept in storage, and the bytes of everything else (timelines)."""
    root = runs.store.root  # type: ignore[attr-defined]
    objects, other = [], 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.sep + "objects" + os.sep in path:
                objects.append(name)
            else:
                other += os.path.getsize(path)
    return objects, other


def test_a_large_result_is_stored_once_and_passed_on_by_reference(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.big_then_measure, flows.BIG))
        await until(lambda: "wf" in host.executions
                    and host.executions["wf"].instance is not None
                    and host.executions["wf"].instance.waiting_only_on_outside())
        await host.signal("wf", "go", _serde.encode("now"))
        outcome = await host.result("wf")
        assert _serde.decode(outcome.result) == [flows.BIG, 1, 0]
        objects, timeline_bytes = _stored(runs)
        data = cloudpickle.dumps(flows.make_big.fn(flows.BIG))
        assert objects == [hashlib.sha256(data).hexdigest()]  # once: the arg is the same ref
        assert timeline_bytes < 10_000

    run(main)


def test_a_restarted_host_reads_a_large_value_back_from_storage(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        await host.start(request(flows.big_then_measure, flows.BIG))
        await until(lambda: [e[1] for e in backend.executions] == [1]
                    and host.executions["wf"].instance is not None
                    and host.executions["wf"].instance.waiting_only_on_outside())
        host.abandon()  # the value lived in that host's memory only
        fresh = await make_host(runs, LocalBackend())
        await fresh.signal("wf", "go", _serde.encode("now"))
        assert _serde.decode((await fresh.result("wf")).result) == [flows.BIG, 1, 0]
        assert len(_stored(runs)[0]) == 1

    run(main)


def test_a_client_stores_large_inputs_and_signals_and_reads_large_results(
        runs: RunStore, tmp_path: Any) -> None:
    async def main() -> None:
        backend = LocalBackend()
        await make_host(runs, backend)
        client = AsyncClient(storage=str(tmp_path), namespace="test",
                             connection=LocalConnection(backend))
        big = os.urandom(flows.BIG)
        handle = await client.workflow.start(flows.measures_input, args=[big],
                                             workflow_id="in")
        await handle.signal("extra", big[:400_000])
        assert await handle.result() == [[flows.BIG, big[1], 400_000], big[:3]]
        echo = await client.workflow.start(flows.returns_its_input, args=[big],
                                           workflow_id="echo")
        assert await echo.result() == big  # a large result, read from storage
        objects, timeline_bytes = _stored(runs)
        assert len(objects) == 2 and timeline_bytes < 20_000  # the input once, the signal
        exported = await handle.export_execution()
        started = [e for e in exported.events if e.event_type == "workflow_execution_started"]
        assert started[0].attributes["input"][0]["stored"] == "builtins.bytes"

    run(main)


def test_a_value_that_cannot_be_pickled_is_refused_by_name(runs: RunStore) -> None:
    values = Values(runs)
    with pytest.raises(SerializationError, match="the input.*generator"):
        _serde.encode((x for x in range(3)), what="the input", values=values)
    assert values.writes == {}


def test_a_large_value_passed_to_a_typed_parameter_is_stored_once(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.typed_big_passed_on, flows.BIG))
        assert _serde.decode((await host.result("wf")).result) == flows.BIG
        assert len(_stored(runs)[0]) == 1

    run(main)


def test_a_large_value_missing_from_storage_is_an_error_not_a_hang(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.big_then_measure, flows.BIG))
        await until(lambda: host.executions["wf"].instance is not None
                    and host.executions["wf"].instance.waiting_only_on_outside())
        host.abandon()
        for name in _stored(runs)[0]:  # storage lost the object under the run
            runs.store.delete(f"test/objects/{name}")
        fresh = await make_host(runs, LocalBackend())
        with pytest.raises(StorageError, match="missing from storage"):  # the cause, not
            await fresh.result("wf")  # the divergence it made in the replay
        assert "missing from storage" in (fresh.stuck["wf"].reason or "")

    run(main)


def test_a_signal_naming_a_missing_large_value_fails_the_run_rather_than_hanging(
        runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.step_then_wait, 1))
        await until(lambda: host.executions["wf"].instance is not None
                    and host.executions["wf"].instance.waiting_only_on_outside())
        lost: Any = {"r": {"digest": "0" * 64, "size": 1, "type": "builtins.bytes"}}
        await host.signal("wf", "go", lost)
        outcome = await host.result("wf")
        assert outcome.status is RunStatus.FAILED and outcome.failure is not None
        assert "missing from storage" in outcome.failure.message

    run(main)
