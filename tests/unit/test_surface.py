"""The public surface: exports, no Ray in the runtime, errors that survive pickling."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import subprocess
import sys
from types import ModuleType
from typing import Any, Callable

import cloudpickle
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
    module = importlib.import_module("rayline.workflow")
    assert module.__all__ == sorted(module.__all__)
    # `from rayline import workflow` has every function of the in-workflow module
    missing = [name for name in module.__all__ if name not in vars(type(workflow))]
    assert missing == [], f"add to WorkflowAPI: {missing}"


def test_the_runtime_imports_without_ray() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "import rayline, rayline.workflow, rayline.core, rayline.storage, rayline.export\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def error_classes() -> list[type[BaseException]]:
    """Every exception class defined in ``rayline.errors``, found rather than listed."""
    return [v for v in vars(errors).values()
            if inspect.isclass(v) and issubclass(v, BaseException)
            and v.__module__ == errors.__name__]


# constructor arguments for the error classes whose __init__ needs more than a message
ERROR_ARGS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "WorkflowNotFoundError": (("wf", "gone"), {}),
    "DuplicateWorkflowError": (("wf", "open"), {}),
    "WorkflowClosedError": (("wf", "signal"), {}),
    "WorkflowFailedError": (("boom",), {"cause_type": "builtins.ValueError", "code": 501,
                                        "stack": "s"}),
    "WorkflowTerminatedError": (("stopped",), {"stack": "s"}),
    "ChildWorkflowError": (("failed",), {"workflow_id": "kid", "cause_type": "E", "code": 410}),
    "UpdateRejectedError": (("no",), {"cause_type": "builtins.ValueError"}),
    "UpdateFailedError": (("failed",), {"cause_type": "builtins.KeyError", "stack": "s"}),
    "ScheduleAlreadyExistsError": (("nightly",), {}),
    "ScheduleNotFoundError": (("nightly", "deleted"), {}),
    "ActivityError": (("m",), {"activity": "a", "cause_type": "KeyError", "stack": "s",
                               "attempt": 3}),
    "MaxedError": (("m",), {"activity": "a", "attempt": 5, "code": 597}),
    "TimeoutFailure": (("t",), {"activity": "a", "code": 596}),
    "ContinueAsNew": (((1, 2),), {}),
}


def build_error(cls: type[BaseException]) -> BaseException:
    args, kwargs = ERROR_ARGS.get(cls.__name__, (("a message",), {}))
    try:
        return cls(*args, **kwargs)
    except TypeError as exc:
        problem = str(exc)
    pytest.fail(f"cannot build {cls.__name__}{args}: add its arguments to ERROR_ARGS ({problem})")


def test_error_args_name_only_existing_errors() -> None:
    assert set(ERROR_ARGS) <= {cls.__name__ for cls in error_classes()}


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps],
                         ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_survives_pickling_with_its_fields(
    cls: type[BaseException], dumps: Callable[[object], bytes]
) -> None:
    error = build_error(cls)
    copy = pickle.loads(dumps(error))
    assert type(copy) is cls
    assert copy.args == error.args
    assert copy.__dict__ == error.__dict__
    assert str(copy) == str(error)


def public_modules() -> dict[str, ModuleType]:
    """``rayline`` and every public module under it, except ``rayline.actors`` (it needs Ray).

    Walks the package's directories without importing anything private or Ray's.
    """
    found: dict[str, ModuleType] = {rayline.__name__: rayline}
    todo = [rayline]
    while todo:
        package = todo.pop()
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            last = info.name.rsplit(".", 1)[-1]
            if last.startswith("_") or info.name == "rayline.actors":
                continue
            module = importlib.import_module(info.name)
            found[info.name] = module
            if info.ispkg:
                todo.append(module)
    return found


def defined_in(obj: object) -> str:
    return obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "")


def test_every_public_name_has_exactly_one_public_home() -> None:
    modules = public_modules()
    assert {"rayline.workflow", "rayline.errors", "rayline.storage", "rayline.client",
            "rayline.export", "rayline.worker"} <= set(modules)
    assert "rayline.actors" not in modules
    exported = {name: getattr(rayline, name) for name in rayline.__all__}
    # one public name per object at the top level: no aliases
    aliases = [name for name, obj in exported.items()
               if [n for n, o in exported.items() if o is obj] != [name]]
    assert aliases == [], f"one object under several names: {aliases}"
    for name, obj in exported.items():
        home = defined_in(obj)
        assert home == "rayline" or home.startswith("rayline."), (name, home)
        # defined once: no other public module defines another object by this name
        definers = {m for m, module in modules.items()
                    if defined_in(getattr(module, name, None)) == m}
        assert definers <= {home}, f"{name} is defined in {sorted(definers)}"
        # exported once: only its own public module (or none, when it is defined in a private
        # module) lists it in __all__, beside the top-level re-export
        exporters = {m for m, module in modules.items() if m != "rayline"
                     for listed in getattr(module, "__all__", ())
                     if listed == name or getattr(module, listed, None) is obj}
        allowed = {home} if home in modules else set()
        extra = sorted(exporters - allowed)
        assert extra == [], f"{name} (defined in {home}) is also exported by {extra}"


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
    with pytest.raises(errors.InvalidInputError, match="task_queue is not an activity option"):
        rayline.activity(task_queue="gpu")  # Ray places activities: say it, do not ignore it
    act = rayline.activity(num_gpus=1, start_to_close="1m")(lambda x: x)
    layered = act.options(num_cpus=2, retry=rayline.RetryPolicy(maximum_attempts=7))
    assert layered.defaults.ray == {"num_gpus": 1, "num_cpus": 2}
    assert layered.defaults.start_to_close == 60
    assert layered.defaults.retry_policy.maximum_attempts == 7
