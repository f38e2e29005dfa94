"""The in-workflow API: ``from rayline import workflow``.

Every function here is one line into the running workflow instance (the event loop
that runs the workflow's code). Called outside a workflow they raise ``RuntimeError``'s
sibling :class:`rayline.errors.InvalidInputError`, naming the function.

``rayline.workflow`` (what ``from rayline import workflow`` gives) is :data:`api`, an
object that is both the decorator (``@rayline.workflow``,
``@rayline.workflow(name="orderWorkflow")``) and this module's functions as attributes
(``workflow.sleep``): one object that type checkers see whole, both uses typed. The
functions stay in this plain module too (``from rayline.workflow import sleep``).

Typed calls: ``execute_activity(defn, *args)``, ``proxy_activity(defn)`` and
``execute_child(defn, *args)`` check the arguments against the activity's or workflow's
signature and return its result type (positional arguments; options are keywords).
``proxy_activities(...)`` (several activities by attribute) is dynamic, typed ``Any``.
"""

from __future__ import annotations

import asyncio
import types
import uuid as _uuid
from datetime import datetime, timezone
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

import pydantic
from typing_extensions import TypeVarTuple, Unpack

from ._activity import ActivityDefinition, as_activity
from ._code import CodeRef
from ._definition import WorkflowDecorator, WorkflowDefinition, as_workflow, define
from ._durations import Duration, optional_duration, parse_duration
from ._logging import WorkflowLogger, workflow_logger
from ._options import ActivityOptions, retry_json
from ._search import search_fields
from ._validate import validate_fields, validate_task_queue
from .core.instance import WorkflowInfo, WorkflowInstance, _shielded
from .errors import ContinueAsNew, InvalidInputError
from .timeline import ChildOptions

__all__ = [
    "ExternalWorkflowHandle",
    "WorkflowInfo",
    "condition",
    "continue_as_new",
    "deprecate_patch",
    "enrich",
    "execute_activity",
    "execute_child",
    "get_external_handle",
    "info",
    "logger",
    "non_cancellable",
    "now",
    "on_signal",
    "patched",
    "proxy_activities",
    "proxy_activity",
    "random",
    "search",
    "set_default_signal_handler",
    "set_query_handler",
    "set_signal_handler",
    "set_update_handler",
    "signal",
    "sleep",
    "start_child",
    "update",
    "uuid4",
]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


def _runtime(name: str) -> WorkflowInstance:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, WorkflowInstance):
        raise InvalidInputError(f"workflow.{name}() can only be called inside a workflow")
    return loop


class _Proxy:
    """``workflow.proxy_activities(...)``: attributes are awaitable activity calls."""

    def __init__(self, activities: dict[str, ActivityDefinition[Any, Any]],
                 options: ActivityOptions) -> None:
        self._activities = activities
        self._options = options

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            definition = self._activities[name]
        except KeyError:
            known = ", ".join(sorted(self._activities))
            raise AttributeError(f"no activity {name!r} in this proxy (has: {known})") from None
        options = definition.defaults.merged(self._options)

        def call(*args: Any) -> asyncio.Future[Any]:
            return _runtime("proxy_activities").schedule_activity(definition, args, options)

        return call


def proxy_activities(*activities: Any, **options: Any) -> Any:
    """An object whose attributes call the given activities durably.

    Args:
        *activities: ``@rayline.activity`` functions, plain functions, or modules (every
            activity defined in the module).
        **options: ``start_to_close``, ``schedule_to_close``, ``heartbeat_timeout``,
            ``retry``, ``local`` and any Ray resource option; they apply over each
            activity's own defaults.
    """
    table: dict[str, ActivityDefinition[Any, Any]] = {}
    for item in activities:
        if isinstance(item, types.ModuleType):
            table.update({d.name: d for d in vars(item).values()
                          if isinstance(d, ActivityDefinition)})
        else:
            definition = as_activity(item)
            table[definition.name] = definition
    return _Proxy(table, ActivityOptions.build(**options))


class _ExecuteActivity(Protocol):
    """The type of ``execute_activity``: the activity's arguments and result."""

    @overload
    def __call__(self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]], /, *args: Unpack[Ts],
                 **options: Any) -> Coroutine[Any, Any, R]: ...
    @overload
    def __call__(self, fn: Callable[[Unpack[Ts]], R], /, *args: Unpack[Ts],
                 **options: Any) -> Coroutine[Any, Any, R]: ...


class _ProxyActivity(Protocol):
    """The type of ``proxy_activity``."""

    @overload
    def __call__(self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]], /,
                 **options: Any) -> Callable[[Unpack[Ts]], Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[[Unpack[Ts]], R], /,
                 **options: Any) -> Callable[[Unpack[Ts]], Awaitable[R]]: ...


class _ExecuteChild(Protocol):
    """The type of ``execute_child``: the child's arguments and result (by definition)."""

    @overload
    def __call__(self, fn_or_name: Callable[[Unpack[Ts]], Awaitable[R]], /, *args: Unpack[Ts],
                 workflow_id: str | None = None, task_queue: str | None = None,
                 **options: Any) -> Coroutine[Any, Any, R]: ...
    @overload
    def __call__(self, fn_or_name: str, /, *args: Any, workflow_id: str | None = None,
                 task_queue: str | None = None, **options: Any) -> Coroutine[Any, Any, Any]: ...


class _StartChild(Protocol):
    """The type of ``start_child``."""

    @overload
    def __call__(self, fn_or_name: Callable[[Unpack[Ts]], Awaitable[Any]], /, *args: Unpack[Ts],
                 workflow_id: str | None = None, task_queue: str | None = None,
                 **options: Any) -> Coroutine[Any, Any, str]: ...
    @overload
    def __call__(self, fn_or_name: str, /, *args: Any, workflow_id: str | None = None,
                 task_queue: str | None = None, **options: Any) -> Coroutine[Any, Any, str]: ...


async def _execute_activity(fn: Any, /, *args: Any, **options: Any) -> Any:
    """Runs one activity durably and returns its result (``options`` as for
    ``proxy_activities``, over the activity's own defaults)."""
    definition = as_activity(fn)
    merged = definition.defaults.merged(ActivityOptions.build(**options))
    return await _runtime("execute_activity").schedule_activity(definition, args, merged)


execute_activity = cast(_ExecuteActivity, _execute_activity)


def _proxy_activity(fn: Any, /, **options: Any) -> Any:
    """One activity as an awaitable function with these options, typed like the
    activity: ``charge = workflow.proxy_activity(charge_card, start_to_close="1m")``,
    then ``await charge(order_id, cents)``."""
    definition = as_activity(fn)
    merged = definition.defaults.merged(ActivityOptions.build(**options))

    def call(*args: Any) -> Awaitable[Any]:
        return _runtime("proxy_activity").schedule_activity(definition, args, merged)

    return call


proxy_activity = cast(_ProxyActivity, _proxy_activity)


async def sleep(duration: Duration) -> float:
    """A durable timer; returns the seconds slept. Survives crashes and restarts."""
    seconds = parse_duration(duration, what="sleep duration")
    return await _runtime("sleep").sleep(seconds)


async def condition(signal_id: str | Callable[[], Any],
                    timeout: Duration | None = None) -> Any:
    """Waits for signal ``signal_id`` and returns its data; or, given a function of no
    arguments, until it returns something true (it is checked whenever the workflow's
    code has run, e.g. after a signal handler) and returns ``True``. ``False`` once
    ``timeout`` (a durable timer) passes first."""
    seconds = optional_duration(timeout, what="condition timeout")
    if callable(signal_id):
        waiting = _runtime("condition").wait_predicate(signal_id)
        if seconds is None:
            return await waiting
        try:
            return await asyncio.wait_for(waiting, seconds)
        except asyncio.TimeoutError:
            return False
    if not isinstance(signal_id, str) or not signal_id:
        raise InvalidInputError("condition() needs a signal id string or a predicate")
    return await _runtime("condition").condition(signal_id, seconds)


def set_signal_handler(name: str, fn: Callable[..., Any]) -> None:
    """Calls ``fn(data)`` (a function, or an async one run as a task of the workflow) for
    each signal ``name``, in the order they arrive; the signals that came before it was
    set are handed to it now, in order. A handled signal does not reach ``condition``.
    What ``fn`` raises fails the workflow."""
    if not isinstance(name, str) or not name or not callable(fn):
        raise InvalidInputError("set_signal_handler() needs a signal name and a function")
    _runtime("set_signal_handler").set_signal_handler(name, fn)


def set_default_signal_handler(fn: Callable[..., Any]) -> None:
    """Calls ``fn(signal_id, data)`` for each signal no handler of its own takes and no
    ``condition`` waits for (those buffered until now first, in arrival order)."""
    if not callable(fn):
        raise InvalidInputError("set_default_signal_handler() needs a function")
    _runtime("set_default_signal_handler").set_signal_handler(None, fn)


def on_signal(name: str | None = None) -> Callable[[F], F]:
    """Decorator form of ``set_signal_handler`` inside a workflow: the function handles
    signal ``name`` (default: the function's own name)."""
    def register(fn: F) -> F:
        set_signal_handler(name or fn.__name__, fn)
        return fn
    return register


def set_update_handler(name: str, fn: Callable[..., Any],
                       validator: Callable[..., Any] | None = None) -> None:
    """Answers ``handle.execute_update(name, *args)``: ``fn(*args)`` (a function, or an
    async one that may await activities, timers and signals) runs as a task of the
    workflow and its return value is the caller's answer, once durable; what it raises
    fails the update, not the workflow. ``validator(*args)``, if given, runs first on
    the workflow's state as it is (it must only read it): if it raises, the update is
    refused and nothing is recorded. Updates for a name with no handler are refused."""
    if not isinstance(name, str) or not name or not callable(fn):
        raise InvalidInputError("set_update_handler() needs an update name and a function")
    if validator is not None and not callable(validator):
        raise InvalidInputError("an update validator must be a function")
    _runtime("set_update_handler").set_update_handler(name, fn, validator)


def update(fn: F | None = None, *, name: str | None = None,
           validator: Callable[..., Any] | None = None) -> Any:
    """Decorator form of ``set_update_handler`` inside a workflow, bare or with options:
    the function handles update ``name`` (default: its own name)."""
    def register(handler: F) -> F:
        set_update_handler(name or handler.__name__, handler, validator)
        return handler
    return register(fn) if fn is not None else register


def _child_ref(fn_or_name: Any) -> tuple[str, tuple[str | None, str | None]]:
    """(name, (import path, pickled definition)) of a child workflow; a name alone is
    resolved by the child's host among the workflows registered on its queue."""
    if isinstance(fn_or_name, str):
        return fn_or_name, (None, None)
    definition: WorkflowDefinition[Any, Any] = as_workflow(fn_or_name)
    code = CodeRef.of(definition)
    return definition.name, (code.path, code.pickled)


def _child_options(options: dict[str, Any]) -> ChildOptions:
    unknown = set(options) - set(ChildOptions.model_fields)
    if unknown:
        raise InvalidInputError(f"unknown child workflow option(s): {', '.join(sorted(unknown))}")
    validate_fields(options.get("memo"), what="memo")
    if "retry" in options:
        options = {**options, "retry": retry_json(options["retry"])}
    if options.get("execution_timeout") is not None:
        options = {**options, "execution_timeout": parse_duration(
            options["execution_timeout"], what="child execution_timeout")}
    if options.get("search") is not None:
        try:
            options = {**options, "search": search_fields(options["search"])}
        except InvalidInputError:  # an older rayline took any JSON: its runs replay
            if not _runtime("start_child").is_replaying:
                raise
            validate_fields(options["search"], what="search")
    try:
        return ChildOptions(**options)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(f"child workflow options: {exc}") from None


def _open_child(fn_or_name: Any, args: tuple[Any, ...], workflow_id: str | None,
                task_queue: str | None, options: dict[str, Any], *, wait: bool,
                what: str) -> tuple[asyncio.Future[str], asyncio.Future[Any]]:
    name, code = _child_ref(fn_or_name)
    return _runtime(what).start_child(name, code, args, workflow_id, task_queue,
                                      _child_options(options), wait=wait)


async def _execute_child(fn_or_name: Any, /, *args: Any, workflow_id: str | None = None,
                         task_queue: str | None = None, **options: Any) -> Any:
    """Starts a child workflow and returns its result.

    Options: ``search``, ``memo``, ``id_reuse_policy``, ``dedicated``, ``retry`` (a
    ``RetryPolicy`` for the child's runs), ``execution_timeout``,
    ``parent_close_policy`` (what the parent's close does to the child while it runs:
    ``"terminate"``, the default, ``"request_cancel"`` or ``"abandon"``), and
    ``cancellation_type`` (when the parent cancels it: ``"wait_cancellation_completed"``,
    the default, waits until the child has ended; ``"try_cancel"`` raises at once).

    Raises:
        ChildWorkflowError: the child failed, timed out or was terminated; its own
            error is the ``__cause__``.
    """
    return await _open_child(fn_or_name, args, workflow_id, task_queue, options, wait=True,
                             what="execute_child")[1]


execute_child = cast(_ExecuteChild, _execute_child)


async def _start_child(fn_or_name: Any, /, *args: Any, workflow_id: str | None = None,
                       task_queue: str | None = None, **options: Any) -> str:
    """Starts a child workflow and returns its workflow id without waiting for it (the
    options of ``execute_child``; with the default ``parent_close_policy`` the child is
    terminated when this run closes, so pass ``"abandon"`` to let it outlive the parent)."""
    return await _open_child(fn_or_name, args, workflow_id, task_queue, options, wait=False,
                             what="start_child")[0]


start_child = cast(_StartChild, _start_child)


async def signal(workflow_id: str, signal_id: str, data: Any = None) -> None:
    """Signals another workflow, exactly once across replays."""
    await _runtime("signal").signal_external(workflow_id, signal_id, data)


class ExternalWorkflowHandle:
    """Another workflow, seen from inside a workflow: its open run, or with ``run_id``
    that run only (a call raises ``WorkflowClosedError`` once it has closed, even if a
    later run of the id is open)."""

    def __init__(self, workflow_id: str, run_id: str | None = None) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id

    async def signal(self, signal_id: str, data: Any = None) -> None:
        await _runtime("signal").signal_external(self.workflow_id, signal_id, data,
                                                 self.run_id)

    async def cancel(self) -> None:
        await _runtime("cancel").cancel_external(self.workflow_id, self.run_id)


def get_external_handle(workflow_id: str, run_id: str | None = None) -> ExternalWorkflowHandle:
    """A handle to signal or cancel another workflow (``run_id``: that run only)."""
    return ExternalWorkflowHandle(workflow_id, run_id)


def continue_as_new(*args: Any, workflow: Any = None, task_queue: str | None = None) -> None:
    """Ends this run and starts a fresh run of the same workflow id with ``args``: of
    this workflow, or of ``workflow`` (a workflow function, or a name registered on the
    task queue) to hand over to another one; on this run's task queue, or on
    ``task_queue`` (its hosts run the next run)."""
    _runtime("continue_as_new")
    if task_queue is not None:
        validate_task_queue(task_queue)
    raise ContinueAsNew(args, workflow, task_queue)


def search(**fields: Any) -> None:
    """Writes indexed key-value fields on this workflow (``client.workflow.list(search=)``)."""
    _runtime("search").upsert(fields, indexed=True)


def enrich(**fields: Any) -> None:
    """Writes key-value fields on this workflow that are stored but not indexed."""
    _runtime("enrich").upsert(fields, indexed=False)


def random() -> float:
    """A float in [0, 1), the same on every replay."""
    return _runtime("random").random()


def uuid4() -> _uuid.UUID:
    """A UUID, the same on every replay."""
    return _runtime("uuid4").uuid4()


def now() -> datetime:
    """The current activation's time (UTC), the same on every replay."""
    return datetime.fromtimestamp(_runtime("now").now(), tz=timezone.utc)


def patched(patch_id: str) -> bool:
    """True on runs that reach this point with the new code; False when replaying old runs."""
    return _runtime("patched").patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Says the code has dropped the branch from before patch ``patch_id`` (call it where
    ``patched(patch_id)`` was): runs that recorded the patch replay without the call, and
    new runs record nothing. Do it once no run from before the patch is open."""
    if not isinstance(patch_id, str) or not patch_id:
        raise InvalidInputError("deprecate_patch() needs a patch id string")
    _runtime("deprecate_patch").deprecate_patch(patch_id)


def info() -> WorkflowInfo:
    """workflow_id, run_id, workflow_name, task_queue, attempt, is_replaying, parent,
    start_time, namespace, continued_from, history_length, search, memo, and
    ``is_continue_as_new_suggested()``."""
    return _runtime("info").info()


logger: WorkflowLogger = workflow_logger
"""A ``logging.LoggerAdapter`` (logger ``rayline.workflow``) whose records carry the
run's ``workflow_id``, ``run_id`` and ``step``, and which logs nothing while the run
replays: ``workflow.logger.info("charged %s", order)`` appears once per step however
often the run is recovered or woken (see docs/operations.md)."""


def set_query_handler(name: str, fn: Callable[..., Any]) -> None:
    """Answers ``handle.query(name, ...)`` from the live workflow's state."""
    _runtime("set_query_handler").set_query_handler(name, fn)


class non_cancellable:  # noqa: N801 - used like a function: `async with non_cancellable():`
    """Holds back cancellation inside the block, for cleanup work after a cancel."""

    async def __aenter__(self) -> None:
        _runtime("non_cancellable")
        self._token = _shielded.set(_shielded.get() + 1)

    async def __aexit__(self, *exc: object) -> None:
        _shielded.reset(self._token)


class WorkflowAPI:
    """``rayline.workflow``: the workflow decorator, with this module's functions as
    attributes (see the module docstring)."""

    ExternalWorkflowHandle = ExternalWorkflowHandle
    WorkflowInfo = WorkflowInfo
    condition = staticmethod(condition)
    continue_as_new = staticmethod(continue_as_new)
    deprecate_patch = staticmethod(deprecate_patch)
    enrich = staticmethod(enrich)
    execute_activity: _ExecuteActivity = staticmethod(execute_activity)  # type: ignore[assignment]
    execute_child: _ExecuteChild = staticmethod(execute_child)  # type: ignore[assignment]
    get_external_handle = staticmethod(get_external_handle)
    info = staticmethod(info)
    logger = logger
    non_cancellable = non_cancellable
    now = staticmethod(now)
    on_signal = staticmethod(on_signal)
    patched = staticmethod(patched)
    proxy_activities = staticmethod(proxy_activities)
    proxy_activity: _ProxyActivity = staticmethod(proxy_activity)  # type: ignore[assignment]
    random = staticmethod(random)
    search = staticmethod(search)
    set_default_signal_handler = staticmethod(set_default_signal_handler)
    set_query_handler = staticmethod(set_query_handler)
    set_signal_handler = staticmethod(set_signal_handler)
    set_update_handler = staticmethod(set_update_handler)
    signal = staticmethod(signal)
    sleep = staticmethod(sleep)
    start_child: _StartChild = staticmethod(start_child)  # type: ignore[assignment]
    update = staticmethod(update)
    uuid4 = staticmethod(uuid4)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> WorkflowDefinition[P, R]: ...
    @overload
    def __call__(self, *, name: str | None = None) -> WorkflowDecorator: ...
    def __call__(  # type: ignore[misc]
            self, fn: Callable[P, Awaitable[R]] | None = None, /, *,
            name: str | None = None) -> WorkflowDefinition[P, R] | WorkflowDecorator:
        """``@rayline.workflow`` or ``@rayline.workflow(name="orderWorkflow")``."""
        return define(fn) if fn is not None else define(name=name)

    def __reduce__(self) -> Any:  # pickled (with workflow code) by reference
        return (_the_api, ())

    def __repr__(self) -> str:
        return "<rayline.workflow>"


api = WorkflowAPI()
"""What ``from rayline import workflow`` gives."""


def _the_api() -> WorkflowAPI:
    return api
