"""Metrics, spans and loggers without Ray: a host in this process (docs/operations.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections import Counter
from typing import Any, Iterator

import pytest

import rayline
from rayline import _serde, _tracing, workflow
from rayline._activity import ActivityInfo
from rayline._code import CodeRef
from rayline.core import replay_timeline
from rayline.engine.activities import invoke
from rayline.engine.host import Host
from rayline.engine.metrics import MeasuredStore, MetricsBuffer
from rayline.errors import ConflictError, StorageError
from rayline.messages import StartRequest
from rayline.storage import MemoryStore, RunStore

from .local import LocalBackend


@rayline.activity
def triple(n: int) -> int:
    rayline.activity_logger.info("tripling %d", n)
    return n * 3


@rayline.workflow
async def three_steps(wait: bool) -> int:
    total = 0
    for step in (1, 2, 3):
        total += await workflow.execute_activity(triple, step)
        workflow.logger.info("step %d done", step)
        if wait and step == 2:
            await workflow.condition("go")
    return total


def request(workflow_id: str, *args: Any, **extra: Any) -> StartRequest:
    return StartRequest(workflow_id=workflow_id, workflow_name=three_steps.name,
                        code=CodeRef.of(three_steps), task_queue="default",
                        args=_serde.encode_args(args, what="test"), **extra)


async def host_on(runs: RunStore, backend: LocalBackend, **options: Any) -> Host:
    host = Host("h0", runs, backend, park_after=None, **options)
    backend.hosts["h0"] = host
    await host.recover()
    return host


async def until(predicate: Any, timeout: float = 10) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def batches_with_results(runs: RunStore, workflow_id: str) -> int:
    started = runs.read_run(workflow_id)
    return sum(e.type == "activity_completed" for b in
               runs.read_batches(workflow_id, started.epoch, started.run_id) for e in b.events)


# --------------------------------------------------------------------- logs


def test_workflow_logger_tells_the_run_and_step_and_says_nothing_in_replay(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rayline.workflow")
    runs = RunStore(MemoryStore("logs"), "test")

    async def main() -> None:
        host = await host_on(runs, LocalBackend())
        await host.start(request("logged", False))
        await host.result("logged")

    asyncio.run(main())
    run_id = runs.read_run("logged").run_id
    live = [r for r in caplog.records if r.name == "rayline.workflow"]
    # step n + 1 is the activation that got activity n's result (the batch it is in)
    assert [r.getMessage() for r in live] == [
        f"workflow logged (run {run_id}, step {n + 1}): step {n} done" for n in (1, 2, 3)]
    assert [(r.workflow_id, r.run_id, r.step) for r in live] == [  # type: ignore[attr-defined]
        ("logged", run_id, n + 1) for n in (1, 2, 3)]
    assert live[0].funcName == "three_steps"  # the workflow's own line, not the adapter's
    caplog.clear()
    started = runs.read_run("logged")
    instance, _ = replay_timeline(three_steps, started,
                                  runs.read_batches("logged", started.epoch, started.run_id))
    assert instance.closing is not None
    assert [r for r in caplog.records if r.name == "rayline.workflow"] == []


def test_loggers_outside_a_run_log_plainly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rayline")
    workflow.logger.info("plain %s", "line")
    rayline.activity_logger.warning("%(what)s too", {"what": "this"})
    assert [r.getMessage() for r in caplog.records] == ["plain line", "this too"]


def test_activity_logger_tells_the_workflow_call_and_attempt(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rayline.activity")
    info = ActivityInfo("wf-9", "run-9", "triple", 4, 2)
    assert invoke(triple, (5,), info) == ("ok", 15)
    [record] = caplog.records
    assert record.getMessage() == ("activity triple of workflow wf-9 (run run-9, call 4, "
                                   "attempt 2): tripling 5")
    assert (record.workflow_id, record.attempt, record.seq) == ("wf-9", 2, 4)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ metrics


def test_a_host_counts_runs_attempts_steps_storage_calls_signals_and_replays() -> None:
    buffer = MetricsBuffer()
    runs = RunStore(MeasuredStore(MemoryStore("metrics-host"), buffer), "test")

    async def main() -> None:
        backend = LocalBackend()
        host = await host_on(runs, backend, metrics=buffer)
        await host.start(request("plain", False))
        assert (await host.result("plain")).status.value == "completed"
        await host.start(request("waits", True))
        await until(lambda: batches_with_results(runs, "waits") == 2)
        host.abandon()  # a crash: the next host replays the run
        again = await host_on(runs, LocalBackend(), metrics=buffer)
        await again.signal("waits", "go", _serde.encode(None))
        assert (await again.result("waits")).status.value == "completed"

    asyncio.run(main())
    report = buffer.take()
    assert report.started == {"three_steps": 2}
    assert report.closed == {("three_steps", "completed"): 2}
    assert {name: len(samples) for name, samples in report.attempts["ok"].items()} == {
        "triple": 6}
    assert report.attempts["failed"] == report.attempts["cancelled"] == {}
    assert len(report.durable) == len(report.acted) >= 6  # a step per activity result at least
    assert all(0 <= d <= a for d, a in zip(report.durable, report.acted, strict=True))
    assert len(report.signals) == 1 and len(report.replays) == 1
    # the run objects and their batches (exclusive creates), markers, the recovery's reads
    assert len(report.storage["create"]) >= 8 and {"put", "get", "list"} <= set(report.storage)
    assert report.storage_errors == {} and report.dropped == 0
    assert buffer.take().started == {}  # taken: the next report starts empty


class _Failing(MemoryStore):
    def get(self, key: str) -> bytes:
        if key.startswith("boom"):
            raise StorageError("down")
        return super().get(key)


def test_measured_store_counts_failures_not_missing_or_taken_keys() -> None:
    buffer = MetricsBuffer()
    store = MeasuredStore(_Failing("measured"), buffer)
    store.put("d/a", b"1", exclusive=True)
    with pytest.raises(ConflictError):
        store.put("d/a", b"2", exclusive=True)
    with pytest.raises(FileNotFoundError):
        store.get("missing")
    with pytest.raises(StorageError):
        store.get("boom")
    assert store.list("d") == ["a"] and store.url == "memory://measured"
    report = buffer.take()
    assert {op: len(samples) for op, samples in report.storage.items()} == {
        "create": 2, "get": 2, "list": 1}
    assert report.storage_errors == {"get": 1}


# -------------------------------------------------------------------- spans


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    assert _tracing.configure(SimpleSpanProcessor(exporter))
    yield exporter
    _tracing.shutdown()


def test_a_run_is_one_span_over_its_attempts_also_when_recovered(spans: Any) -> None:
    from opentelemetry import trace

    runs = RunStore(MemoryStore("spans"), "test")
    tracer = trace.get_tracer("tests")

    async def main() -> None:
        host = await host_on(runs, LocalBackend())
        with tracer.start_as_current_span("client") as client_span:
            await host.start(request("traced", True, trace=_tracing.carrier()))
        await until(lambda: batches_with_results(runs, "traced") == 2)
        host.abandon()  # a crash: the new host replays two steps, emitting nothing for them
        again = await host_on(runs, LocalBackend())
        await again.signal("traced", "go", _serde.encode(None))
        assert (await again.result("traced")).status.value == "completed"
        return client_span.get_span_context()

    client = asyncio.run(main())
    found = spans.get_finished_spans()
    assert Counter(s.name for s in found) == {"client": 1, "workflow three_steps": 1,
                                              "activity triple": 3}
    [run] = [s for s in found if s.name == "workflow three_steps"]
    assert run.parent.span_id == client.span_id and run.context.trace_id == client.trace_id
    recorded = runs.read_run("traced")  # the start's context, kept for the recovery
    assert recorded.trace is not None and recorded.v == 4
    assert f"{client.trace_id:032x}-{client.span_id:016x}" in recorded.trace["traceparent"]
    attempts = [s for s in found if s.name == "activity triple"]
    assert {s.parent.span_id for s in attempts} == {run.context.span_id}
    assert sorted(s.attributes["rayline.seq"] for s in attempts) == [1, 2, 4]


def test_tracing_is_off_and_nothing_breaks_without_opentelemetry(tmp_path: Any) -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import asyncio, rayline\n"
        "from rayline import _tracing\n"
        "from rayline.storage import MemoryStore, RunStore\n"
        "from tests.unit.test_observability import host_on, request\n"
        "from tests.unit.local import LocalBackend\n"
        "async def main():\n"
        "    host = await host_on(RunStore(MemoryStore('x'), 'test'), LocalBackend())\n"
        "    await host.start(request('wf', False))\n"
        "    return (await host.result('wf')).status.value\n"
        "print(asyncio.run(main()), _tracing.enabled(), _tracing.carrier())\n")
    env = {**os.environ, "RAYLINE_OTEL_EXPORTER": "tests.integration.observe_flows:span_processor",
           "OBSERVE_SPANS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["completed", "False", "None"]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- docs, dashboard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_metric_is_in_the_operations_doc_and_the_dashboard_queries_only_those() -> None:
    import json
    import re

    with open(os.path.join(ROOT, "actors", "_metrics.py")) as f:
        defined = set(re.findall(r'"(rayline_[a-z_]+)"', f.read()))
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        doc = f.read()
    assert len(defined) >= 17
    exported = {name: f"ray_{name}" for name in defined}
    missing = [name for name, shown in exported.items() if f"`{shown}" not in doc]
    assert missing == [], f"not in docs/operations.md: {missing}"
    with open(os.path.join(ROOT, "deploy", "grafana-rayline.json")) as f:
        dashboard = json.load(f)
    queried = {re.sub(r"_(total|bucket|count|sum)$", "", name).removeprefix("ray_")
               for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"ray_rayline_[a-z_]+", target["expr"])}
    assert queried and queried <= defined, queried - defined
    assert len(dashboard["panels"]) >= 6
