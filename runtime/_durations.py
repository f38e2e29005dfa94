"""Durations as users write them: seconds, ``timedelta`` or strings like ``"5s"``."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import InvalidInputError

Duration = float | int | str | timedelta

_UNITS = {
    "ms": 0.001, "msec": 0.001, "msecs": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Returns ``value`` in seconds.

    Accepts a non-negative number of seconds, a ``timedelta``, or a string of one or
    more ``<number><unit>`` parts (``"500ms"``, ``"5s"``, ``"10 minutes"``, ``"1h30m"``);
    a bare number string means seconds.

    Raises:
        InvalidInputError: naming ``what`` and the value, for anything else.
    """
    if isinstance(value, bool):
        raise InvalidInputError(f"{what} must be a duration, got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value, what)
    else:
        raise InvalidInputError(f"{what} must be seconds, a timedelta or a string like '5s', "
                                f"got {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidInputError(f"{what} must be a finite, non-negative duration, got {value!r}")
    return seconds


def _parse_text(text: str, what: str) -> float:
    lowered = text.strip().lower()
    if not lowered:
        raise InvalidInputError(f"{what} is an empty string")
    total, pos = 0.0, 0
    while pos < len(lowered):
        match = _PART.match(lowered, pos)
        if not match or match.end() == pos:
            raise InvalidInputError(
                f"cannot read {what} {text!r}: expected e.g. '5s', '10 minutes'")
        number, unit = match.groups()
        if unit not in _UNITS and unit != "":
            raise InvalidInputError(f"unknown unit {unit!r} in {what} {text!r}")
        total += float(number) * _UNITS.get(unit, 1.0)
        pos = match.end()
    return total


def optional_duration(value: Duration | None, *, what: str) -> float | None:
    """``parse_duration`` that lets ``None`` through."""
    return None if value is None else parse_duration(value, what=what)
