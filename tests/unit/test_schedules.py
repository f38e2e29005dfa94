"""Schedules without Ray: the spec's times (cron in a time zone, every), catching up,
overlap decisions, and the scheduler workflow driven through scripted activations."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import rayline
from rayline import _serde
from rayline._schedule_spec import Fire, ScheduleSpec, due, iso, resolve
from rayline.errors import InvalidInputError, ScheduleAlreadyExistsError, ScheduleNotFoundError
from rayline.schedules import (
    ScheduleDescription,
    ScheduleRun,
    ScheduleState,
    ScheduleTarget,
    schedule,
)
from rayline.timeline import (
    CancelExternal,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    Command,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    Event,
    Failure,
    ScheduleActivity,
    SignalReceived,
    StartChild,
    StartTimer,
    TimerFired,
)

from .drive import START, Script

NY = ZoneInfo("America/New_York")
UTC = timezone.utc


def ny(*parts: int) -> float:
    return datetime(*parts, tzinfo=NY).timestamp()  # type: ignore[misc]


def local(times: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, NY).strftime("%m-%d %H:%M %Z") for t in times]


# ---------------------------------------------------------------- the spec's times


def test_cron_in_new_york_follows_its_clock_across_both_dst_changes() -> None:
    nine = ScheduleSpec.build(cron="0 9 * * *", time_zone="America/New_York")
    times = nine.ticks(ny(2026, 10, 30), ny(2026, 11, 3), 10)
    assert local(times) == ["10-30 09:00 EDT", "10-31 09:00 EDT", "11-01 09:00 EST",
                            "11-02 09:00 EST"]
    assert [datetime.fromtimestamp(t, UTC).hour for t in times] == [13, 13, 14, 14]


def test_cron_time_skipped_by_spring_forward_fires_at_the_first_valid_time() -> None:
    spec = ScheduleSpec.build(cron="30 2 * * *", time_zone="America/New_York")
    times = spec.ticks(ny(2026, 3, 7), ny(2026, 3, 10), 10)
    assert local(times) == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]


def test_cron_time_in_the_repeated_hour_fires_once_unless_the_hour_is_a_wildcard() -> None:
    daily = ScheduleSpec.build(cron="30 1 * * *", time_zone="America/New_York")
    times = daily.ticks(ny(2026, 10, 31), ny(2026, 11, 3), 10)
    assert local(times) == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]
    hourly = ScheduleSpec.build(cron="30 * * * *", time_zone="America/New_York")
    times = hourly.ticks(ny(2026, 11, 1, 0, 0), ny(2026, 11, 1, 3, 0), 10)
    assert local(times) == ["11-01 00:30 EDT", "11-01 01:30 EDT", "11-01 01:30 EST",
                            "11-01 02:30 EST"]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [3600.0] * 3


def test_every_counts_from_the_epoch_with_its_offset_within_its_bounds() -> None:
    spec = ScheduleSpec.build(every=60, offset=15, start_at=1000, end_at=1200)
    assert spec.ticks(0, 10_000, 10) == [1035, 1095, 1155]
    assert spec.next_after(1155) is None
    assert spec.next_after(1034.9) == 1035 and spec.next_after(1035) == 1095
    assert spec.count(0, 1155) == 2 and spec.count(0, 1155.5) == 3


@pytest.mark.parametrize("fields,problem", [
    ({"cron": "* * * *"}, "5 fields"),
    ({"cron": "0 0 * * * *"}, "5 fields"),
    ({"cron": "61 * * * *"}, "5 fields"),
    ({}, "exactly one"),
    ({"cron": "@daily", "every": 60}, "exactly one"),
    ({"every": 0.5}, "at least 1 second"),
    ({"every": 60, "offset": 60}, "offset"),
    ({"cron": "@hourly", "time_zone": "Mars/Olympus"}, "unknown time zone"),
    ({"every": 60, "start_at": 10, "end_at": 5}, "end_at is before start_at"),
])
def test_bad_specs_say_what_is_wrong(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        ScheduleSpec.build(**fields)


def test_run_ids_name_the_scheduled_time() -> None:
    assert iso(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()) == "2026-12-01T10:00:00Z"
    assert iso(datetime(2026, 12, 1, 10, 0, 0, 250_000, tzinfo=UTC).timestamp()) == \
        "2026-12-01T10:00:00.250Z"


# ---------------------------------------------------------------- catching up


def test_catch_up_fires_the_times_inside_the_window_and_counts_the_older_ones() -> None:
    spec = ScheduleSpec.build(every=10)
    found = due(spec, cursor=100, now=1000, catchup_window=35)
    assert found.fire == [970, 980, 990, 1000]  # at most 35 s old
    assert found.missed == 86  # 110 .. 960
    assert due(spec, cursor=1000, now=1009, catchup_window=35).fire == []
    cron = ScheduleSpec.build(cron="* * * * *")
    found = due(cron, cursor=0, now=3600, catchup_window=120)
    assert found.fire == [3480, 3540, 3600] and found.missed == 57


# ---------------------------------------------------------------- overlapping


def fires(*policies: str) -> list[Fire]:
    return [Fire(at=float(i), overlap=p) for i, p in enumerate(policies)]  # type: ignore[arg-type]


@pytest.mark.parametrize("policies,running,start,keep,skipped,stop", [
    (["skip"], 0, [0], [], [], None),
    (["skip", "skip"], 0, [0], [], [1], None),
    (["skip"], 1, [], [], [0], None),
    (["buffer_one", "buffer_one", "buffer_one"], 1, [], [0], [1, 2], None),
    (["buffer_all", "buffer_all"], 1, [], [0, 1], [], None),
    (["allow_all", "allow_all"], 3, [0, 1], [], [], None),
    (["cancel_other", "cancel_other"], 1, [], [1], [0], "cancel"),
    (["terminate_other"], 1, [], [0], [], "terminate"),
    (["terminate_other"], 0, [0], [], [], None),
])
def test_overlap_policies(policies: list[str], running: int, start: list[int], keep: list[int],
                          skipped: list[int], stop: str | None) -> None:
    plan = resolve(fires(*policies), running)
    assert [f.at for f in plan.start] == start
    assert [f.at for f in plan.keep] == keep
    assert [f.at for f in plan.skipped] == skipped
    assert plan.stop == stop


# ---------------------------------------------------------------- the scheduler, scripted


class Driver:
    """The scheduler workflow on scripted activations: timers fire when asked, children
    start and end when told."""

    def __init__(self, overlap: str = "skip", every: float = 10, **state: Any) -> None:
        spec = ScheduleSpec.build(every=every, jitter=state.pop("jitter", 0))
        self.state = ScheduleState(
            schedule_id="s", spec=spec, overlap=overlap,  # type: ignore[arg-type]
            target=ScheduleTarget(workflow_name="one_step", code="tests.unit.flows:one_step",
                                  workflow_id_prefix="s"), **state)
        self.script = Script(schedule, self.state.model_dump(mode="json"), [41])
        self.timer: StartTimer | None = None
        self.children: dict[str, int] = {}  # workflow id -> seq
        self.started: list[str] = []
        self.commands = self.feed([])

    def feed(self, events: list[Event], advance: float = 0.0) -> list[Command]:
        commands = self.script.step(events, advance)
        for command in commands:
            if isinstance(command, StartTimer):
                self.timer = command
            if isinstance(command, StartChild):
                self.children[command.workflow_id] = command.seq
                self.started.append(command.workflow_id)
        self.commands = commands
        return commands

    def tick(self, late: float = 0.0) -> list[str]:
        """Fires the pending timer (``late`` seconds after its time); the runs started."""
        assert self.timer is not None
        timer, before = self.timer, len(self.started)
        self.timer = None
        self.feed([TimerFired(seq=timer.seq)], timer.fire_at - self.script.time + late)
        new = self.started[before:]
        if new:  # the hosts start them
            self.feed([ChildStarted(seq=self.children[w], workflow_id=w, run_id="r")
                       for w in new])
        return new

    def end(self, workflow_id: str, event: str = "completed") -> list[str]:
        seq, before = self.children[workflow_id], len(self.started)
        outcome: Event = ChildCompleted(seq=seq, result={"j": 42}) if event == "completed" \
            else ChildFailed(seq=seq, failure=Failure(type="x.Dup", message="exists",
                                                       code=409, kind="error"))
        self.feed([outcome])
        return self.started[before:]

    def signal(self, name: str, data: Any = None) -> list[Command]:
        return self.feed([SignalReceived(signal_id=name, data=_serde.encode(data or {}),
                                         request_id=uuid.uuid4().hex)])

    def describe(self) -> ScheduleDescription:
        return ScheduleDescription.model_validate(self.script.instance.query("describe", ()))


def at(seconds: float) -> str:
    return f"s-{iso(START + seconds)}"


def test_each_time_starts_one_child_named_by_it_and_the_timeline_replays() -> None:
    d = Driver("allow_all")
    assert d.tick() == [at(10)] and d.tick() == [at(20)] and d.tick() == [at(30)]
    child = next(c for c in d.script.batches[1].commands if isinstance(c, StartChild))
    assert child.options.memo == {"schedule_id": "s", "scheduled_at": iso(START + 10)}
    assert child.options.search["scheduled_at"].startswith(iso(START + 10)[:19])
    assert child.options.parent_close_policy == "abandon"
    assert child.options.id_reuse_policy == "reject_duplicate"
    assert d.describe().fired == 3 and d.describe().running == [at(10), at(20), at(30)]
    instance, _ = d.script.replay()  # raises NonDeterminismError if it diverged
    assert {c.workflow_id for c in instance.unfinished_commands(started_children=True)
            if isinstance(c, StartChild)} == {at(10), at(20), at(30)}


def test_skip_skips_while_its_run_is_open() -> None:
    d = Driver("skip")
    assert d.tick() == [at(10)]
    assert d.tick() == [] and d.tick() == []
    assert d.end(at(10)) == []  # nothing owed: the skipped times are gone
    assert d.tick() == [at(40)]
    assert (d.describe().skipped, d.describe().fired) == (2, 2)


def test_buffer_one_starts_one_kept_time_when_the_run_ends() -> None:
    d = Driver("buffer_one")
    d.tick()
    assert d.tick() == [] and d.tick() == []
    assert d.describe().buffered == 1 and d.describe().skipped == 1
    assert d.end(at(10)) == [at(20)]


def test_cancel_other_cancels_the_open_run_then_starts() -> None:
    d = Driver("cancel_other")
    d.tick()
    d.tick()
    assert [c.workflow_id for c in d.commands if isinstance(c, CancelExternal)] == [at(10)]
    assert d.end(at(10)) == [at(20)]


def test_terminate_other_terminates_through_the_client_activity() -> None:
    d = Driver("terminate_other", storage="file:///s", namespace="ns")
    d.tick()
    d.tick()
    activities = [c for c in d.commands if isinstance(c, ScheduleActivity)]
    assert [a.activity for a in activities] == ["rayline.schedule.terminate"]
    assert _serde.decode(activities[0].args[2]) == at(10)


def test_a_late_wake_catches_up_inside_the_window_and_counts_the_rest() -> None:
    d = Driver("allow_all", catchup_window=35)
    assert d.tick(late=100) == [at(80), at(90), at(100), at(110)]
    assert d.describe().missed == 7  # 10 .. 70: more than 35 s old at 110
    assert d.tick() == [at(120)]


def test_pause_trigger_backfill_unpause_delete() -> None:
    d = Driver("allow_all")
    d.signal("pause", {"note": "maintenance"})
    assert d.timer is not None and d.describe().paused and d.describe().note == "maintenance"
    assert d.describe().next_fire_times == []
    d.feed([], advance=100)
    d.signal("trigger")
    d.signal("backfill", {"start": START - 30, "end": START, "overlap": "allow_all"})
    assert d.started == [f"s-{iso(START + 100)}", at(-20), at(-10), at(0)]
    d.signal("unpause")
    assert not d.describe().paused
    assert d.describe().next_fire_times[0].timestamp() == START + 110
    assert d.tick() == [at(110)]  # the paused times are not owed
    commands = d.signal("delete")
    done = [c for c in commands if isinstance(c, CompleteWorkflow)]
    assert ScheduleDescription.model_validate(_serde.decode(done[0].result)).fired == 5


def test_a_backfilled_time_that_ran_already_is_not_started_again() -> None:
    d = Driver("allow_all")
    d.tick()
    d.end(at(10))
    d.signal("backfill", {"start": START, "end": START + 10, "overlap": "allow_all"})
    assert d.started == [at(10), at(10)]  # the start is refused by the id's reuse policy
    d.end(at(10), "duplicate")
    assert d.describe().not_started == 1 and "has run already" in str(d.describe().last_error)


def test_update_changes_the_spec_and_policy_from_now_on() -> None:
    d = Driver("skip")
    d.tick()
    spec = ScheduleSpec.build(every=25).model_dump()
    d.signal("update", {"spec": spec, "overlap": "allow_all", "args": [7], "note": "n"})
    assert d.timer is not None and d.timer.fire_at == START + 25
    assert d.tick() == [at(25)]  # allow_all: the open run does not hold it back
    started = [c for c in d.script.batches[-2].commands if isinstance(c, StartChild)]
    assert [_serde.decode(a) for a in started[0].args] == [7]
    assert (d.describe().overlap, d.describe().note) == ("allow_all", "n")


def test_update_merges_a_spec_change_into_the_current_spec() -> None:
    from rayline._schedule_client import _new_spec

    every = ScheduleSpec.build(every=60, offset=5, jitter=3)
    cron = _new_spec(every, {"cron": "0 9 * * *", "time_zone": "Europe/Paris"})
    assert (cron.cron, cron.every, cron.offset, cron.jitter, cron.time_zone) == \
        ("0 9 * * *", None, 0.0, 3.0, "Europe/Paris")
    back = _new_spec(cron, {"every": "2m"})
    assert (back.cron, back.every) == (None, 120.0)
    with pytest.raises(InvalidInputError, match="offset"):
        _new_spec(cron, {"offset": "5s"})


def test_a_bad_signal_is_reported_and_does_not_fail_the_schedule() -> None:
    d = Driver()
    d.signal("trigger", {"overlap": "sometimes"})
    d.signal("backfill", {"start": "yesterday"})
    assert d.script.instance.closing is None
    assert "signal backfill" in str(d.describe().last_error)
    assert d.tick() == [at(10)]


def test_it_continues_as_new_with_its_state_when_no_run_is_open() -> None:
    d = Driver("allow_all", continue_after=2)
    d.tick()
    d.tick()
    assert d.script.instance.closing is None  # runs open: it waits for a quiet moment
    d.end(at(10))
    d.end(at(20))
    closing = [c for c in d.commands if isinstance(c, ContinueAsNewWorkflow)]
    assert len(closing) == 1
    assert all(set(p) == {"j"} for p in closing[0].args)  # JSON: nothing pickled
    state, args = (_serde.decode(p) for p in closing[0].args)
    state = ScheduleState.model_validate(state)
    assert args == [41]
    assert (state.fired, state.running) == (2, []) and state.cursor == pytest.approx(START + 20)
    assert [r.workflow_id for r in state.recent] == [at(10), at(20)]
    again = Script(schedule, state.model_dump(mode="json"), args)
    first = again.step()
    assert [c.fire_at for c in first if isinstance(c, StartTimer)] == [START + 30]


def test_runs_carried_over_a_continue_as_new_are_awaited_by_an_activity() -> None:
    run = ScheduleRun(scheduled_at=datetime.fromtimestamp(START, UTC),
                      started_at=datetime.fromtimestamp(START, UTC), workflow_id=at(0))
    d = Driver("skip", running=[run], cursor=START, storage="memory://", namespace="ns")
    awaits = [c for c in d.commands if isinstance(c, ScheduleActivity)]
    assert [a.activity for a in awaits] == ["rayline.schedule.await"]
    assert d.tick() == []  # still open: skipped
    assert d.describe().running == [at(0)]


def test_jitter_delays_each_time_by_a_drawn_amount_the_same_on_replay() -> None:
    d = Driver("allow_all", every=40, jitter=30)  # START is a multiple of 40
    waits = []
    for _ in range(5):
        assert d.timer is not None
        waits.append(d.timer.fire_at - (START + 40 * (len(waits) + 1)))
        d.tick()
    assert all(0 <= w < 30 for w in waits) and len(set(waits)) == 5
    d.script.replay()


def test_schedule_errors_name_the_schedule_and_survive_pickling() -> None:
    for error in (ScheduleNotFoundError("nightly", "it was deleted"),
                  ScheduleAlreadyExistsError("nightly")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.__dict__ == error.__dict__
        assert "'nightly'" in str(copy) and copy.workflow_id == "rayline:schedule:nightly"
    assert isinstance(ScheduleNotFoundError("x"), rayline.WorkflowNotFoundError)
    assert isinstance(ScheduleAlreadyExistsError("x"), rayline.DuplicateWorkflowError)


@pytest.mark.parametrize("options,problem", [
    ({"cron": "0 9 * * *", "every": "1h"}, "exactly one"),
    ({"every": "1s", "overlap": "sometimes"}, "overlap must be one of"),
    ({"every": "1s", "catchup_window": "10ms"}, "catchup_window"),
    ({"every": "soon"}, "every"),
    ({"cron": "0 9 * * *", "time_zone": "Nowhere/City"}, "time zone"),
    ({"every": "1s", "args": [1, 2]}, "bad arguments"),
    ({"every": "1s", "paused": "yes"}, "paused"),
])
def test_create_refuses_bad_input_before_sending_anything(options: dict[str, Any],
                                                          problem: str) -> None:
    from . import flows

    client = rayline.AsyncClient(storage="memory://", connection=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=problem):
        asyncio.run(client.schedule.create("nightly", flows.one_step,
                                           **{"args": [1], **options}))
    with pytest.raises(InvalidInputError, match="schedule id"):
        asyncio.run(client.schedule.create("../x", flows.one_step, args=[1], every="1s"))
