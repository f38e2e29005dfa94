"""The replay core, without Ray: scripted events in, commands out, and replay."""

from __future__ import annotations

import asyncio

import pytest

from rayline import _serde
from rayline.errors import InvalidInputError, NonDeterminismError
from rayline.timeline import (
    CancelRequested,
    CancelTimer,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    DropSignal,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    SignalReceived,
    StartTimer,
    TimerFired,
    UpsertFields,
)

from . import flows
from .drive import Script


def result_of(script: Script) -> object:
    closing = script.instance.closing
    assert isinstance(closing, CompleteWorkflow), closing
    return _serde.decode(closing.result)


def assert_replays(script: Script) -> None:
    """Replaying the recorded timeline gives the same commands and leaves nothing to do."""
    instance, unfinished = script.replay()
    if script.instance.closing is not None:
        assert unfinished == []
        assert instance.closing == script.instance.closing
    assert instance.activate([], script.time) == []


def only_timer(commands: list) -> StartTimer:
    """The one timer among ``commands`` (a condition with a timeout also records its wait)."""
    timers = [c for c in commands if isinstance(c, StartTimer)]
    assert len(timers) == 1, commands
    return timers[0]


def signal(signal_id: str, data: object, **kw: object) -> SignalReceived:
    return SignalReceived(signal_id=signal_id, data=_serde.encode(data), **kw)


def test_one_activity_schedules_then_completes() -> None:
    script = Script(flows.one_step, 41)
    first = script.step()
    assert [type(c) for c in first] == [ScheduleActivity]
    assert first[0].seq == 1 and first[0].activity == "add1"
    script.run_to_end()
    assert result_of(script) == 42
    assert_replays(script)


def test_gather_schedules_all_at_once_and_keeps_order() -> None:
    script = Script(flows.gather_then_chain, 1)
    first = script.step()
    assert [c.seq for c in first] == [1, 2, 3]
    # answer out of order: results keep the gather's order
    events = [script.run_activity(first[2]), script.run_activity(first[0]),
              script.run_activity(first[1])]
    second = script.step(events)
    assert [(type(c), c.seq) for c in second] == [(ScheduleActivity, 4)]
    script.step([script.run_activity(second[0])])
    third = script.batches[-1].commands
    script.step([script.run_activity(third[0])])
    assert result_of(script) == [2, 2, 102, 107, 214]
    assert_replays(script)


def test_activity_error_is_caught_with_type_and_message() -> None:
    script = Script(flows.catches, "nope")
    script.run_to_end()
    assert result_of(script) == "caught KeyError: 'nope' then 2"
    assert_replays(script)


def test_uncaught_error_fails_the_workflow_with_stack() -> None:
    script = Script(flows.fails, "bad input")
    script.run_to_end()
    closing = script.instance.closing
    assert isinstance(closing, FailWorkflow)
    assert closing.failure.type == "builtins.ValueError"
    assert closing.failure.message == "bad input"
    assert "raise ValueError(message)" in closing.failure.stack
    assert_replays(script)


def test_retries_then_success_and_fatal_is_never_retried() -> None:
    flows.ATTEMPTS.clear()
    script = Script(flows.retries, 2)
    script.run_to_end()
    assert result_of(script) == "ok after 3"
    fatal = Script(flows.fatal_flow)
    fatal.run_to_end()
    assert result_of(fatal) == "598 after 1"


def test_durable_sleep_and_asyncio_sleep_are_timers() -> None:
    script = Script(flows.sleeper, 5)
    first = script.step()
    assert first == [StartTimer(seq=1, fire_at=script.time + 5, duration=5)]
    second = script.step([TimerFired(seq=1)], advance=5)
    assert [type(c) for c in second] == [StartTimer] and second[0].duration == 1
    script.step([TimerFired(seq=2)], advance=1)
    assert result_of(script) == 5
    assert_replays(script)


def test_condition_times_out_with_false() -> None:
    script = Script(flows.waits, 1.0)
    commands = script.step()
    assert [c.type for c in commands] == ["start_wait", "start_timer"]
    timer = only_timer(commands)
    assert isinstance(timer, StartTimer) and timer.duration == 1.0
    script.step([TimerFired(seq=timer.seq)], advance=1)
    assert result_of(script) is False
    assert_replays(script)


def test_signal_before_wait_is_buffered_and_cancels_no_timer() -> None:
    script = Script(flows.waits, None)
    commands = script.step([signal("go", {"ok": 1})])
    assert result_of(script) == {"ok": 1}
    assert not any(isinstance(c, StartTimer) for c in commands)
    assert_replays(script)


def test_signal_while_waiting_cancels_the_timeout_timer() -> None:
    script = Script(flows.waits, 30)
    timer = only_timer(script.step())
    commands = script.step([signal("go", "yes")])
    assert CancelTimer(seq=timer.seq) in commands
    assert result_of(script) == "yes"
    # a timer that fired anyway in the same race is ignored
    assert script.instance.activate([TimerFired(seq=timer.seq)], script.time) == []


def test_same_signal_id_many_times_keeps_every_payload_in_order() -> None:
    script = Script(flows.waits_many, 5)
    script.step([signal("item", i) for i in range(5)])
    assert result_of(script) == [0, 1, 2, 3, 4]
    assert_replays(script)


def test_duplicate_request_ids_are_delivered_once() -> None:
    script = Script(flows.waits_many, 2)
    script.step([signal("item", "a", request_id="r1"), signal("item", "a", request_id="r1")])
    assert script.instance.closing is None
    script.step([signal("item", "b", request_id="r2")])
    assert result_of(script) == ["a", "b"]


def test_expired_signal_is_dropped_and_recorded() -> None:
    script = Script(flows.waits, None)
    script.time += 0
    commands = script.instance.activate(
        [signal("go", "stale", expire_at=script.time - 1)], script.time)
    assert DropSignal(signal_id="go", expire_at=script.time - 1) in commands
    assert script.instance.closing is None


def test_fan_in_of_two_conditions() -> None:
    script = Script(flows.fan_in)
    script.step([signal("b", 2), signal("a", 1)])
    assert result_of(script) == [1, 2]
    assert_replays(script)


def test_cancel_wakes_sleep_and_cleanup_runs_in_non_cancellable() -> None:
    script = Script(flows.cancellable)
    (timer,) = script.step()
    commands = script.step([CancelRequested()])
    assert commands[0] == CancelTimer(seq=timer.seq)
    assert isinstance(commands[1], ScheduleActivity)
    script.step([script.run_activity(commands[1])])
    assert result_of(script) == "cancelled:refunded"
    assert_replays(script)


def test_random_uuid_and_now_are_the_same_on_replay() -> None:
    script = Script(flows.deterministic, seed=99)
    script.step()
    first = result_of(script)
    assert first[2] == script.time
    again = Script(flows.deterministic, seed=99)
    again.step()
    assert result_of(again) == first
    other = Script(flows.deterministic, seed=100)
    other.step()
    assert result_of(other) != first
    assert_replays(script)


def test_replay_with_changed_code_raises_non_determinism() -> None:
    script = Script(flows.gather_then_chain, 1)
    script.run_to_end()
    script.definition = flows.one_step
    with pytest.raises(NonDeterminismError, match="replay diverged"):
        script.replay()


def test_patched_is_true_live_and_false_for_runs_recorded_before_it() -> None:
    live = Script(flows.versioned)
    commands = live.step()
    assert commands[0] == RecordPatch(patch_id="v2")
    assert [type(c) for c in commands[1:]] == [ScheduleActivity]
    live.run_to_end()
    assert result_of(live) == "new"
    assert_replays(live)
    # a run recorded by the code as it was before the patch: no RecordPatch, no durable call
    old = Script(flows.versioned_before_patch)
    old.run_to_end()
    assert result_of(old) == "old"
    assert not any(isinstance(c, RecordPatch) for b in old.batches for c in b.commands)
    old.definition = flows.versioned  # the patched code replays it
    instance, unfinished = old.replay()
    assert unfinished == []
    assert isinstance(instance.closing, CompleteWorkflow)
    assert _serde.decode(instance.closing.result) == "old"
    assert instance.activate([], old.time) == []


def test_deprecate_patch_replays_runs_that_recorded_the_patch() -> None:
    recorded = Script(flows.versioned)  # a run with the patch recorded
    recorded.run_to_end()
    recorded.definition = flows.versioned_deprecated  # the old branch is gone
    _, unfinished = recorded.replay()
    assert unfinished == []
    recorded.definition = flows.versioned_removed  # deleted without deprecate_patch
    with pytest.raises(NonDeterminismError, match="replay diverged"):
        recorded.replay()
    fresh = Script(flows.versioned_deprecated)  # new runs record no marker
    fresh.run_to_end()
    assert result_of(fresh) == "new"
    assert not any(isinstance(c, RecordPatch) for b in fresh.batches for c in b.commands)


def test_info_tells_history_length_fields_and_start_time() -> None:
    script = Script(flows.tells_about_itself)
    script.run_to_end()
    told = result_of(script)
    assert told["history"] == 3  # upsert + schedule, then the activity's completion
    assert told["search"] == {"stage": "one"} and told["memo"] == {}
    assert told["suggested"] is False and told["continued_from"] is None
    assert told["started"] == script.started.time
    assert_replays(script)


def test_a_search_value_an_older_rayline_recorded_still_replays() -> None:
    from rayline.core import replay_timeline
    from rayline.timeline import Batch, UpsertFields

    from .drive import started_record
    started = started_record(flows.writes_a_dict_field)
    recorded = Batch(seq=1, run_id=started.run_id, time=started.time, commands=[
        UpsertFields(seq=1, fields={"meta": {"a": 1}}, indexed=True),
        CompleteWorkflow(result=_serde.encode("ok"))])
    instance, unfinished = replay_timeline(flows.writes_a_dict_field, started, [recorded])
    assert unfinished == [] and instance.search_fields == {"meta": {"a": 1}}
    live = Script(flows.writes_a_dict_field)  # new runs are refused such a value
    live.run_to_end()
    assert "search field 'meta'" in live.instance.closing.failure.message


def test_continue_as_new_closes_the_run_with_new_args() -> None:
    script = Script(flows.continues, 3)
    (command,) = script.step()
    assert isinstance(command, ContinueAsNewWorkflow)
    assert [_serde.decode(a) for a in command.args] == [2]
    assert_replays(script)


def test_search_enrich_and_query() -> None:
    script = Script(flows.searchable)
    commands = script.step()
    assert UpsertFields(seq=1, fields={"region": "eu", "stage": "start"}, indexed=True) in commands
    assert script.instance.query("count", ()) == 0
    script.run_to_end()
    assert result_of(script) == {"count": 3}
    assert script.instance.search_fields == {"region": "eu", "stage": "end"}
    assert script.instance.enrich_fields == {"done": True}
    replayed, _ = script.replay()
    assert replayed.search_fields == script.instance.search_fields


def test_pydantic_arguments_are_validated_and_round_trip() -> None:
    script = Script(flows.typed, flows.Order(sku="a", qty=3))
    script.run_to_end()
    assert result_of(script) == 30
    bad = Script(flows.typed, {"sku": "a", "qty": "many"})
    bad.run_to_end()
    assert isinstance(bad.instance.closing, FailWorkflow)
    assert "qty" in bad.instance.closing.failure.message


def test_wait_for_timeout_is_a_durable_timer() -> None:
    script = Script(flows.with_wait_for)
    timer = only_timer(script.step())
    assert isinstance(timer, StartTimer) and timer.duration == 5
    script.step([TimerFired(seq=timer.seq)], advance=5)
    assert result_of(script) == "timed out"
    assert_replays(script)


def test_workflow_api_outside_a_workflow_is_a_clear_error() -> None:
    from rayline import workflow

    with pytest.raises(InvalidInputError, match="inside a workflow"):
        workflow.random()
    with pytest.raises(InvalidInputError, match="inside a workflow"):
        asyncio.run(workflow.sleep(1))


def test_bad_durations_fail_inside_the_workflow() -> None:
    import rayline
    from rayline import workflow

    @rayline.workflow
    async def bad_sleep() -> None:
        await workflow.sleep("soon")

    script = Script(bad_sleep)
    script.step()
    closing = script.instance.closing
    assert isinstance(closing, FailWorkflow) and "soon" in closing.failure.message


def test_answers_to_calls_no_longer_open_are_not_novel() -> None:
    from rayline.timeline import ActivityCompleted

    script = Script(flows.waits, 30)
    timer = only_timer(script.step())
    script.step([signal("go", "yes")])
    assert script.instance.novel([TimerFired(seq=timer.seq)]) == []
    twice = Script(flows.one_step, 1)
    (command,) = twice.step()
    done = ActivityCompleted(seq=command.seq, result={"j": 2})
    assert twice.instance.novel([done, done]) == [done]


def test_a_cron_start_reads_its_expression_in_utc_or_in_its_cron_tz() -> None:
    from datetime import datetime, timezone

    from rayline._cron import cron_spec

    midnight = datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp()
    assert cron_spec("0 9 * * *").next_after(midnight) == midnight + 9 * 3600
    in_new_york = cron_spec("CRON_TZ=America/New_York 0 9 * * *")  # summer: UTC-4
    assert in_new_york.next_after(midnight) == midnight + 13 * 3600
    for bad in ("61 * * * *", "CRON_TZ=Mars/Base 0 * * * *", ""):
        with pytest.raises(InvalidInputError, match="cron"):
            cron_spec(bad)
