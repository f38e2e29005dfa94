"""Metrics, spans and log lines on the session's Ray (docs/operations.md).

Metrics: a run of three activities shows in Ray's metrics endpoint (scraped as
Prometheus does, like test_cli). Spans and logs: a driver process of its own
(``observe_driver.py``) runs a job whose hosts and activity workers export spans and
write rayline's log records to files, kills the run's host half-way and finishes the
run; the tests read those files. Exports are asynchronous: every check polls with a
generous deadline and none asserts a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray

import rayline

from .conftest import _kill_namespace
from .observe_flows import three_steps

ROOT = Path(__file__).resolve().parents[2]


def _scrape() -> list[str]:
    port = ray.nodes()[0]["MetricsExportPort"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return text.decode().splitlines()


def _total(lines: list[str], name: str, *having: str) -> float:
    """The sum of the samples of metric ``name`` whose tags include all of ``having``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith(name + "{") and all(tag in line for tag in having))


def test_a_run_of_three_activities_shows_in_rays_metrics(client: rayline.Client) -> None:
    queue = "obs" + uuid.uuid4().hex[:8]  # its hosts' tag is this test's alone
    assert client.workflow.execute(three_steps, args=[False, False], task_queue=queue) == 60
    host = f'host="host-{queue}-'
    run = ('workflow_name="three_steps"', host)
    wanted = {
        ("ray_rayline_workflow_started_total", *run): 1,
        ("ray_rayline_workflow_closed_total", 'status="completed"', *run): 1,
        ("ray_rayline_activity_seconds_count", 'activity="step_act"', 'outcome="ok"',
         host): 3,
        ("ray_rayline_activity_seconds_bucket", 'activity="step_act"', 'outcome="ok"',
         'le="+Inf"', host): 3,
    }
    deadline = time.monotonic() + 90  # the host reports every 5 s, Ray's agent every 10 s
    while True:
        lines = _scrape()
        found = {key: _total(lines, *key) for key in wanted}
        steps = _total(lines, "ray_rayline_step_seconds_count", 'phase="acted"', host)
        creates = _total(lines, "ray_rayline_storage_seconds_count", 'op="create"', host)
        if (found == wanted and steps >= 3 and creates >= 1) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found == wanted
    assert steps >= 3 and creates >= 1  # each activity's result is a step; the run a create
    assert _total(lines, "ray_rayline_activity_failures_total", host) == 0


@pytest.fixture(scope="module")
def observed(ray_cluster: dict[str, Any], tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """The driver's run: its printed summary, and the spans and log records every
    process of its job wrote (killed host included)."""
    folder = tmp_path_factory.mktemp("observed")
    spans, logs = folder / "spans", folder / "logs"
    spans.mkdir()
    logs.mkdir()
    namespace = "observe-" + uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OBSERVE_SPANS=str(spans), OBSERVE_LOGS=str(logs))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.observe_driver", ray_cluster["address"],
             str(folder / "store"), namespace, "obs" + uuid.uuid4().hex[:8]],
            capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["result"] == 121  # 10 + 20 + 30, then the child: 60 + 1
        yield {**summary, "spans": spans, "logs": logs}
    finally:
        _kill_namespace(namespace)


def _records(folder: Path, expected: int, key: Any) -> list[dict[str, Any]]:
    """The JSON lines of every file in ``folder`` for which ``key`` holds, once there are
    ``expected`` of them (a process may still be writing), or all there are by then."""
    deadline = time.monotonic() + 30
    while True:
        found = [record for path in sorted(folder.glob("*.jsonl"))
                 for record in map(json.loads, path.read_text().splitlines()) if key(record)]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_one_run_is_one_span_with_its_activities_under_it_across_a_host_kill(
        observed: dict[str, Any]) -> None:
    def ours(span: dict[str, Any]) -> bool:
        return span["trace_id"] == observed["client_trace"]

    spans = _records(observed["spans"], 10, ours)
    names = Counter(span["name"] for span in spans)
    # the client's span; the run's and its child's; 3 attempts, each with the activity's
    # own span inside; the timer. Nothing twice: the replay after the kill emitted none
    assert names == {"client start": 1, "workflow three_steps": 1, "workflow child_flow": 1,
                     "activity step_act": 3, "user work": 3, "timer": 1}, names
    by_name = {span["name"]: span for span in spans}
    run = by_name["workflow three_steps"]
    assert run["parent_id"] == observed["client_span"]  # carried from the starting client
    assert run["attributes"]["rayline.workflow_id"] == "observed"
    assert run["attributes"]["rayline.status"] == "completed"
    attempts = [span for span in spans if span["name"] == "activity step_act"]
    assert {span["parent_id"] for span in attempts} == {run["span_id"]}
    assert sorted(span["attributes"]["rayline.seq"] for span in attempts) == [1, 2, 4]
    inside = {span["parent_id"] for span in spans if span["name"] == "user work"}
    assert inside == {span["span_id"] for span in attempts}  # carried into the workers
    assert {span["pid"] for span in spans if span["name"] == "user work"}.isdisjoint(
        {run["pid"]})
    assert by_name["timer"]["parent_id"] == run["span_id"]
    assert by_name["workflow child_flow"]["parent_id"] == run["span_id"]
    hosts = {span["pid"] for span in attempts}
    assert len(hosts) == 2 and run["pid"] in hosts  # before and after the kill


def test_workflow_logger_lines_appear_once_per_step_across_a_host_kill(
        observed: dict[str, Any]) -> None:
    def ours(record: dict[str, Any]) -> bool:
        return record["workflow_id"] == "observed"

    records = _records(observed["logs"], 6, ours)
    lines = Counter((r["logger"], r["message"].rsplit(": ", 1)[-1]) for r in records)
    assert lines == {("rayline.workflow", f"step {n} done"): 1 for n in (1, 2, 3)} | {
        ("rayline.activity", f"working on step {n}"): 1 for n in (1, 2, 3)}, lines
    steps = sorted(r["step"] for r in records if r["logger"] == "rayline.workflow")
    assert len(set(steps)) == 3  # each from a step of its own, the run's batch numbers
    hosts = {r["pid"] for r in records if r["logger"] == "rayline.workflow"}
    assert len(hosts) == 2  # steps 1-2 before the kill, step 3 after it (not replayed)
    assert all(r["message"].startswith("workflow observed (run ") for r in records
               if r["logger"] == "rayline.workflow")
    assert {r["attempt"] for r in records if r["logger"] == "rayline.activity"} == {1}
