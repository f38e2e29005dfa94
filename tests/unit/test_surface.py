"""The public surface: exports, no Ray in the runtime, errors that survive pickling."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys

import pytest

import rayline
from rayline import errors, workflow


def test_all_is_sorted_public_and_complete() -> None:
    assert rayline.__all__ == sorted(rayline.__all__)
    assert all(not name.startswith("_") for name in rayline.__all__)
    for name in rayline.__all__:
        assert hasattr(rayline, name), name
    public_errors = {n for n, v in vars(errors).items()
                     if inspect.isclass(v) and issubclass(v, BaseException)
                     and v.__module__ == errors.__name__ and not n.startswith("_")}
    assert public_errors - {"ControlFlow", "ContinueAsNew"} <= set(rayline.__all__)
    assert workflow.__all__ == sorted(workflow.__all__)


def test_the_runtime_imports_without_ray() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "import rayline, rayline.workflow, rayline.core, rayline.storage, rayline.export\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


ERRORS = [
    errors.RaylineError("x"),
    errors.InvalidInputError("bad"),
    errors.SerializationError("cannot"),
    errors.WorkflowNotFoundError("wf", "gone"),
    errors.DuplicateWorkflowError("wf", "open"),
    errors.WorkflowClosedError("wf", "signal"),
    errors.WorkflowFailedError("boom", cause_type="builtins.ValueError", code=500, stack="s"),
    errors.WorkflowTerminatedError("stopped"),
    errors.ActivityError("m", activity="a", cause_type="KeyError", stack="s", attempt=3),
    errors.MaxedError("m", activity="a", attempt=5, code=597),
    errors.TimeoutFailure("t", activity="a", code=596),
    errors.FatalError("no retry"),
    errors.IncompatibleTimelineError("newer"),
    errors.NonDeterminismError("diverged"),
    errors.NotHereError("moved"),
    errors.QueryError("q"),
    errors.StorageError("disk"),
    errors.ConflictError("fenced"),
    errors.CorruptTimelineError("torn"),
    errors.CancelledFailure("cancelled"),
    errors.ContinueAsNew((1, 2)),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling_with_its_fields(error: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_control_flow_is_not_swallowed_by_except_exception() -> None:
    assert not issubclass(errors.CancelledFailure, Exception)
    assert errors.is_cancellation(errors.CancelledFailure())
    wrapped = errors.WorkflowFailedError("x")
    wrapped.__cause__ = errors.CancelledFailure()
    assert errors.is_cancellation(wrapped)
    assert not errors.is_cancellation(ValueError())


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("5s", 5), ("10 minutes", 600),
                                          ("1h", 3600), ("1h30m", 5400), ("2 days", 172800),
                                          ("7", 7)])
def test_durations(text: str, seconds: float) -> None:
    from datetime import timedelta

    from rayline._durations import parse_duration

    assert parse_duration(text) == seconds
    assert parse_duration(timedelta(seconds=seconds)) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "5 parsecs", "", float("nan"), -3, True, [1]])
def test_bad_durations_name_the_problem(bad: object) -> None:
    from rayline._durations import parse_duration

    with pytest.raises(errors.InvalidInputError, match="sleep"):
        parse_duration(bad, what="sleep")  # type: ignore[arg-type]


def test_activity_options_reject_unknown_names_and_layer() -> None:
    with pytest.raises(errors.InvalidInputError, match="colour"):
        rayline.activity(colour="red")
    act = rayline.activity(num_gpus=1, start_to_close="1m")(lambda x: x)
    layered = act.options(num_cpus=2, retry=rayline.RetryPolicy(maximum_attempts=7))
    assert layered.defaults.ray == {"num_gpus": 1, "num_cpus": 2}
    assert layered.defaults.start_to_close == 60
    assert layered.defaults.retry_policy.maximum_attempts == 7
