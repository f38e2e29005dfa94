"""Search fields: the types they take, how a value is kept, and the conditions
``client.workflow.list`` and ``count`` accept on them."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidInputError
from .messages import SEARCH_OPERATORS


def search_value(key: str, value: Any) -> Any:
    """``value`` as a search field keeps it: ``str``, ``int``, ``float``, ``bool``,
    ``None`` and lists of ``str`` as they are; a ``datetime`` as an ISO 8601 UTC string
    (``2026-12-01T09:30:00.000000Z``; naive means UTC), which sorts as the times do.

    Raises:
        InvalidInputError: any other type.
    """
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidInputError(
        f"search field {key!r} must be a str, int, float, bool, datetime or list of str "
        f"(write other values with workflow.enrich), got {type(value).__name__}")


def search_fields(fields: object) -> dict[str, Any]:
    """``search=`` of a start, each value as ``search_value`` keeps it.

    Raises:
        InvalidInputError: not a dict of str keys, or a value of another type.
    """
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise InvalidInputError(f"search must be a dict, got {type(fields).__name__}")
    for key in fields:
        if not isinstance(key, str):
            raise InvalidInputError(f"search keys must be strings, got {key!r}")
    return {key: search_value(key, value) for key, value in fields.items()}


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else \
        value.astimezone(timezone.utc)


def conditions(search: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """``list(search=...)`` in the index's form: a plain value means ``=``; a dict maps
    operators (``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``) to values.

    Raises:
        InvalidInputError: an unknown operator, or a value no search field could hold.
    """
    if search is None:
        return None
    if not isinstance(search, dict):
        raise InvalidInputError(f"search must be a dict of field conditions, got "
                                f"{type(search).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, condition in search.items():
        pairs = condition.items() if isinstance(condition, dict) else [("=", condition)]
        out[key] = {}
        for op, value in pairs:
            if op not in SEARCH_OPERATORS:
                raise InvalidInputError(
                    f"search field {key!r}: unknown operator {op!r} (use one of "
                    f"{', '.join(SEARCH_OPERATORS)})")
            if op == "in":
                if not isinstance(value, (list, tuple)):
                    raise InvalidInputError(f"search field {key!r}: 'in' takes a list")
                out[key][op] = [search_value(key, item) for item in value]
            else:
                out[key][op] = search_value(key, value)
    return out


def timestamp(value: float | datetime | None, what: str) -> float | None:
    """A time bound as seconds since the epoch: a number as it is, a ``datetime`` (naive
    means UTC) converted.

    Raises:
        InvalidInputError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidInputError(f"{what} must be a datetime or seconds since the epoch, got "
                            f"{value!r}")
