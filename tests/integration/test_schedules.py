"""Schedules on a real local Ray: the controls, the overlap policies, and catching up
after a whole Ray restart, exactly once. No test asserts a timing: each waits (with a
generous deadline) for what must happen, and checks what must not."""

from __future__ import annotations

import os
import textwrap
import time
from datetime import datetime, timezone
from typing import Any

import pytest

import rayline
from rayline.schedules import ScheduleDescription

from . import schedule_flows as sf
from .conftest import run_phase


def wait_until(predicate: Any, timeout: float = 90.0) -> None:
    """Waits for ``predicate()`` (a generous deadline: the machine may be busy), asking
    a few times a second so the asking does not load it further."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def runs_of(client: rayline.Client, schedule_id: str) -> list[rayline.RunSummary]:
    """The runs a schedule started (the visibility index), by scheduled time."""
    page = client.workflow.list(search={"schedule_id": schedule_id}, limit=1000)
    return sorted(page, key=lambda r: r.search["scheduled_at"])


def seconds(run: rayline.RunSummary) -> float:
    stamp = run.search["scheduled_at"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


@pytest.mark.timeout(300)
def test_pause_unpause_trigger_backfill_delete(client: rayline.Client) -> None:
    handle = client.schedule.create("tick", sf.stamp, every="1s", paused=True, note="later")
    with pytest.raises(rayline.ScheduleAlreadyExistsError, match="'tick'"):
        client.schedule.create("tick", sf.stamp, every="1s")
    wait_until(lambda: [s.schedule_id for s in client.schedule.list()] == ["tick"])
    time.sleep(2.5)  # paused: nothing may start meanwhile
    paused = handle.describe()
    assert (paused.paused, paused.note, paused.fired) == (True, "later", 0)
    assert runs_of(client, "tick") == []

    handle.unpause()
    wait_until(lambda: len(runs_of(client, "tick")) >= 2)

    handle.pause()
    wait_until(lambda: handle.describe().paused)
    before = handle.describe().fired
    handle.trigger()
    wait_until(lambda: handle.describe().fired == before + 1)
    triggered = [r.workflow_id for r in handle.describe().recent_actions
                 if r.kind == "trigger"]
    assert len(triggered) == 1
    wait_until(lambda: triggered[0] in {r.workflow_id for r in runs_of(client, "tick")})
    run = client.workflow.get_handle(triggered[0])
    assert run.result(timeout=60) == triggered[0].removeprefix("tick-")  # its scheduled time

    start = float(int(time.time()) - 3600)  # five seconds of an hour ago
    handle.backfill(start, start + 5, overlap="allow_all")
    in_range = lambda: [seconds(r) for r in runs_of(client, "tick")  # noqa: E731
                        if start < seconds(r) <= start + 5]
    wait_until(lambda: len(in_range()) >= 5)
    assert in_range() == [start + i for i in range(1, 6)]

    handle.update(every="1h", note="hourly")
    wait_until(lambda: handle.describe().spec.every == 3600.0)
    assert handle.describe().note == "hourly"

    handle.delete()
    with pytest.raises(rayline.ScheduleNotFoundError, match="'tick'"):
        handle.describe()
    with pytest.raises(rayline.ScheduleNotFoundError, match="'tick'"):
        handle.trigger()
    count = len(runs_of(client, "tick"))
    time.sleep(2)  # deleted: nothing more may start
    assert len(runs_of(client, "tick")) == count
    wait_until(lambda: client.schedule.list() == [])
    with pytest.raises(rayline.ScheduleNotFoundError, match="'nope'"):
        client.schedule.get_handle("nope")


def overlapping(runs: list[rayline.RunSummary]) -> bool:
    """Whether any run started before the one before it closed."""
    ordered = sorted(runs, key=lambda r: r.started_at)
    return any(b.started_at < (a.closed_at or float("inf"))
               for a, b in zip(ordered, ordered[1:], strict=False))


@pytest.mark.timeout(300)
def test_overlap_policies(client: rayline.Client) -> None:
    """skip drops the times while its run is open; buffer_one runs the first of them
    once that run ends; allow_all runs them side by side; terminate_other ends the open
    run for the new one."""
    handles = {name: client.schedule.create(name, sf.naps, args=[seconds], every="1s",
                                            overlap=name)
               for name, seconds in (("skip", 2.5), ("buffer_one", 2.5), ("allow_all", 3.0),
                                     ("terminate_other", 600.0))}

    def described(name: str) -> ScheduleDescription:
        return handles[name].describe()

    wait_until(lambda: described("allow_all").running.__len__() >= 2)
    wait_until(lambda: described("skip").skipped >= 2 and len(runs_of(client, "skip")) >= 2)
    wait_until(lambda: len([r for r in runs_of(client, "buffer_one") if r.closed_at]) >= 1
               and len(runs_of(client, "buffer_one")) >= 2)
    wait_until(lambda: [r.state.value for r in runs_of(client, "terminate_other")][:1]
               == ["terminated"])
    for handle in handles.values():
        handle.pause()

    assert not overlapping(runs_of(client, "skip"))
    first, second = runs_of(client, "buffer_one")[:2]
    assert seconds(second) == seconds(first) + 1  # the buffered time, not a later one
    assert second.started_at >= (first.closed_at or float("inf"))
    assert described("buffer_one").skipped >= 1
    assert overlapping(runs_of(client, "allow_all"))
    ended, after = runs_of(client, "terminate_other")[:2]
    assert after.started_at >= (ended.closed_at or float("inf"))
    for handle in handles.values():
        handle.delete()


RESTART_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    import rayline
    from tests.integration import schedule_flows as sf
    phase, storage, namespace, marks = sys.argv[1:5]
    c = rayline.Client(storage=storage, namespace=namespace)
    if phase == "before":
        h = c.schedule.create("beat", sf.marked, args=[marks], every="1s",
                              overlap="allow_all", catchup_window="1h")
        deadline = time.time() + 60
        while h.describe().fired < 2 and time.time() < deadline:
            time.sleep(0.05)
        print(json.dumps({"stopped": time.time()}))
    else:
        back = time.time()
        h = c.schedule.get_handle("beat")
        deadline = time.time() + 90
        while time.time() < deadline and not any(
                r.scheduled_at.timestamp() > back + 1 for r in h.describe().recent_actions):
            time.sleep(0.05)
        h.delete()
        last = rayline.ScheduleDescription.model_validate(  # its final description
            c.workflow.get_handle(h.workflow_id).result())
        deadline = time.time() + 60
        while time.time() < deadline and c.workflow.count(
                status="running", search={"schedule_id": "beat"}).count:
            time.sleep(0.05)
        print(json.dumps({"back": back, "fired": last.fired, "missed": last.missed,
                          "not_started": last.not_started}))
    ray.shutdown()
""")


@pytest.mark.timeout(400)
def test_whole_ray_restart_fires_each_missed_time_once(tmp_path: Any) -> None:
    storage, marks = str(tmp_path / "store"), str(tmp_path / "marks")
    os.makedirs(marks)
    script = tmp_path / "restart.py"
    script.write_text(RESTART_SCRIPT)

    def phase(name: str) -> dict[str, Any]:
        return run_phase(script, name, storage, "beat", marks)

    stopped = phase("before")["stopped"]  # that Ray is gone when the process exits
    time.sleep(3)  # the schedule's times keep coming while no Ray runs
    after = phase("after")
    back = after["back"]
    fired = [name.split(".")[0] for name in os.listdir(marks)]  # one mark per run
    stamps = sorted(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc).timestamp() for s in fired)
    assert len(fired) == len(set(fired)), "a time ran twice"
    assert stamps == [stamps[0] + i for i in range(len(stamps))], "a time was missed"
    assert stamps[0] < stopped and stamps[-1] > back + 1  # across the downtime
    assert (after["fired"], after["missed"], after["not_started"]) == (len(fired), 0, 0)
