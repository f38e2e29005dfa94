"""Checks call arguments against a function's signature and annotations (pydantic)."""

from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Any, Callable

import pydantic

from ._serde import _is_json
from .errors import InvalidInputError
from .storage.runs import validate_id

_CONFIG = pydantic.ConfigDict(arbitrary_types_allowed=True)


@lru_cache(maxsize=4096)
def _adapters(fn: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: check arity only
        hints = {}
    adapters: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        hint = hints.get(name)
        if hint is None or hint is Any or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        try:
            adapters[name] = pydantic.TypeAdapter(hint, config=_CONFIG)
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError):
            continue
    return signature, adapters


def validate_args(fn: Callable[..., Any], args: tuple[Any, ...], *, what: str) -> tuple[Any, ...]:
    """Binds ``args`` to ``fn`` and validates each against its annotation.

    Returns the arguments after validation (a dict passed for a pydantic model
    parameter becomes the model).

    Raises:
        InvalidInputError: naming ``what`` and the parameter, when binding or validation fails.
    """
    signature, adapters = _adapters(fn)
    try:
        bound = signature.bind(*args)
    except TypeError as exc:
        raise InvalidInputError(f"bad arguments for {what}: {exc}") from None
    if not adapters:
        return args
    out = list(args)
    for index, (name, value) in enumerate(bound.arguments.items()):
        adapter = adapters.get(name)
        if adapter is None or index >= len(out):
            continue
        try:
            out[index] = adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidInputError(f"argument {name!r} of {what} is invalid: {exc}") from None
    return tuple(out)


MAX_TASK_QUEUE_LENGTH = 100


def validate_task_queue(name: object) -> str:
    """Returns ``name`` if it can name a task queue (it names host actors and folders)."""
    queue = validate_id(name, what="task queue")
    if len(queue) > MAX_TASK_QUEUE_LENGTH:
        raise InvalidInputError(f"task queue {queue[:40]!r}... is {len(queue)} characters; the "
                                f"limit is {MAX_TASK_QUEUE_LENGTH}")
    if queue == "dedicated" or queue.startswith("dedicated-"):  # its hosts' names would be
        raise InvalidInputError(  # those of workflows' own hosts (host-dedicated-<id>)
            f"task queue {queue!r} is reserved: a pool's hosts are named host-<queue>-<n>, "
            "and host-dedicated-... names a workflow's own host (start(dedicated=True))")
    return queue


def validate_fields(fields: object, *, what: str) -> None:
    """Refuses ``search``/``memo`` values that cannot be stored as JSON (NaN included)."""
    if fields is None:
        return
    if not isinstance(fields, dict):
        raise InvalidInputError(f"{what} must be a dict, got {type(fields).__name__}")
    for key, value in fields.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{what} keys must be strings, got {key!r}")
        if not _is_json(value):
            raise InvalidInputError(f"{what} field {key!r} must be a JSON value (finite "
                                    f"numbers, strings, lists, dicts), got {value!r:.80}")
