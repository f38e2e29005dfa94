"""When a schedule fires and what it does when runs overlap: pure functions, no I/O.

A ``ScheduleSpec`` names the times of a schedule: a 5-field cron expression read by
croniter in an IANA time zone, or a fixed interval (``every``, with an ``offset``)
counted from the Unix epoch; either bounded by ``start_at`` and ``end_at``. Times are
seconds since the epoch (UTC) throughout; the scheduler workflow (``rayline.schedules``)
calls these functions with its own deterministic clock, so replaying it computes the
same times again.

Invariants:
- ``next_after(t)`` is strictly after ``t``; ``ticks(after, until)`` are exactly the
  times in ``(after, until]``, in order, so a cursor advanced to ``until`` never sees a
  time twice.
- Daylight saving (cron in a time zone), as ISC cron does it: a time skipped when the
  clocks go forward fires at the first valid time after the gap; a time in the hour
  repeated when they go back fires once, unless the hour field is a wildcard (``*``,
  ``*/2``), whose times fire in both passes through that hour.
- ``resolve`` decides every buffered start against the runs still open, in buffer
  order: each start is started, kept for later or skipped, never lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from croniter import croniter  # type: ignore[import-untyped]

from .errors import InvalidInputError

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other",
                  "allow_all"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(Overlap)
"""What a start does while a run the schedule started before is still open."""

MAX_COUNTED = 10_000
"""Missed times counted one by one at most per wake (a cron schedule down for long)."""
_EPS = 1e-6
_CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily",
                           "@midnight", "@hourly"})


class ScheduleSpec(pydantic.BaseModel):
    """The times of a schedule. Exactly one of ``cron`` and ``every`` is set."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    cron: str | None = None
    """A 5-field cron expression (minute hour day-of-month month day-of-week) or an
    alias such as ``@daily``, read by croniter in ``time_zone``."""
    every: float | None = None
    """Seconds between times, counted from the Unix epoch plus ``offset``."""
    offset: float = 0.0
    """Shifts ``every``'s times: ``every=3600, offset=900`` fires at a quarter past."""
    time_zone: str = "UTC"
    """The IANA time zone ``cron`` is read in (``America/New_York``)."""
    start_at: float | None = None
    """No time before this one (seconds since the epoch)."""
    end_at: float | None = None
    """No time after this one."""
    jitter: float = 0.0
    """Each fire waits a random part of this long (seconds) after its time."""

    @pydantic.model_validator(mode="after")
    def _checked(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron= and every=")
        if self.cron is not None:
            _check_cron(self.cron)
        if self.every is not None:
            if not math.isfinite(self.every) or self.every < 1:
                raise ValueError(f"every must be at least 1 second, got {self.every!r}")
            if not 0 <= self.offset < self.every:
                raise ValueError(f"offset must be at least 0 and less than every "
                                 f"({self.every:g}s), got {self.offset!r}")
        elif self.offset:
            raise ValueError("offset goes with every=, not cron=")
        zone(self.time_zone)
        if not math.isfinite(self.jitter) or self.jitter < 0:
            raise ValueError(f"jitter must be a non-negative duration, got {self.jitter!r}")
        if self.start_at is not None and self.end_at is not None \
                and self.end_at < self.start_at:
            raise ValueError("end_at is before start_at")
        return self

    @classmethod
    def build(cls, **fields: object) -> ScheduleSpec:
        """The spec of ``fields``, or ``InvalidInputError`` saying what is wrong."""
        try:
            return cls.model_validate(fields)
        except pydantic.ValidationError as exc:
            problems = "; ".join(_message(error) for error in exc.errors())
            raise InvalidInputError(f"schedule spec: {problems}") from None

    def next_after(self, after: float) -> float | None:
        """The first time strictly after ``after`` (``None``: past ``end_at``)."""
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _EPS
        time = self._every_after(after) if self.every is not None else self._cron_after(after)
        if self.end_at is not None and time > self.end_at:
            return None
        return time

    def ticks(self, after: float, until: float, limit: int) -> list[float]:
        """The times in ``(after, until]``, in order, at most ``limit`` of them."""
        out: list[float] = []
        time = self.next_after(after)
        while time is not None and time <= until and len(out) < limit:
            out.append(time)
            time = self.next_after(time)
        return out

    def count(self, after: float, before: float) -> int:
        """How many times lie in ``(after, before)`` (one by one up to ``MAX_COUNTED``
        for cron; exactly for ``every``)."""
        if before <= after:
            return 0
        if self.every is not None:
            first = self.next_after(after)
            if first is None or first >= before:
                return 0
            below = math.ceil((before - first) / self.every - 1e-9)  # first + k*every < before
            if self.end_at is not None:  # and <= end_at
                below = min(below, math.floor((self.end_at - first) / self.every + 1e-9) + 1)
            return max(0, below)
        return len(self.ticks(after, before - _EPS, MAX_COUNTED))

    def _every_after(self, after: float) -> float:
        assert self.every is not None
        time = self.offset + (math.floor((after - self.offset) / self.every) + 1) * self.every
        return time if time > after else time + self.every  # rounding at a time itself

    def _cron_after(self, after: float) -> float:
        assert self.cron is not None
        tz = zone(self.time_zone)
        wildcard_hour = self.cron.startswith("@hourly") or (
            not self.cron.startswith("@") and self.cron.split()[1].startswith("*"))
        times = croniter(self.cron, datetime.fromtimestamp(after, tz))
        while True:
            local: datetime = times.get_next(datetime)
            if wildcard_hour or not _second_pass(local, tz):
                return float(local.timestamp())


def _second_pass(local: datetime, tz: ZoneInfo) -> bool:
    """Whether ``local`` is the later of two instants with its wall-clock time (the
    hour repeated when the clocks go back)."""
    wall = local.replace(tzinfo=None)
    return bool(wall.replace(tzinfo=tz, fold=0).timestamp() != local.timestamp())


def _check_cron(expression: str) -> None:
    text = expression.strip()
    if text in _CRON_ALIASES:
        return
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(f"cron must be 5 fields (minute hour day month weekday) or an "
                         f"alias like @daily, got {expression!r}")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         f"'Europe/Paris')") from None


def _message(error: object) -> str:
    text = str(error.get("msg", error)) if isinstance(error, dict) else str(error)
    return text.removeprefix("Value error, ")


# ---------------------------------------------------------------- catching up


@dataclass(frozen=True)
class Due:
    """What a wake at ``now`` finds: the times to fire, in order, and how many older
    ones fell outside the catch-up window."""

    fire: list[float]
    missed: int


def due(spec: ScheduleSpec, cursor: float, now: float, catchup_window: float,
        limit: int = MAX_COUNTED) -> Due:
    """The times in ``(cursor, now]``: those at most ``catchup_window`` old fire (at
    most ``limit``, the newest kept), the older ones are missed."""
    oldest = now - catchup_window
    missed = spec.count(cursor, oldest)
    fire = spec.ticks(max(cursor, oldest - _EPS), now, limit + 1)
    if len(fire) > limit:  # more than one wake may start: keep the newest
        missed += len(fire) - limit
        fire = fire[-limit:]
    return Due(fire, missed)


# ---------------------------------------------------------------- overlapping


class Fire(pydantic.BaseModel):
    """A start the schedule owes: for ``at`` (its scheduled time), under ``overlap``.
    ``kind`` says where it came from: the spec, ``trigger`` or ``backfill``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    at: float
    overlap: Overlap
    kind: Literal["scheduled", "trigger", "backfill"] = "scheduled"


@dataclass
class Resolution:
    """What to do with the buffer: start these now, keep those for later, skip the
    rest; ``stop`` says to cancel or terminate the runs that are open."""

    start: list[Fire] = field(default_factory=list)
    keep: list[Fire] = field(default_factory=list)
    skipped: list[Fire] = field(default_factory=list)
    stop: Literal["cancel", "terminate"] | None = None


def resolve(buffer: list[Fire], running: int) -> Resolution:
    """Decides each buffered start, in order, with ``running`` runs open (a start
    decided here counts as open for the ones after it), as Temporal's overlap policies
    do: ``allow_all`` starts; with nothing open any start starts; else ``skip`` is
    skipped, ``buffer_one`` kept if nothing is kept yet (else skipped), ``buffer_all``
    kept, ``cancel_other``/``terminate_other`` kept alone (replacing what was kept, which
    is skipped) while the open runs are stopped."""
    out = Resolution()
    busy = running > 0
    for fire in buffer:
        policy = fire.overlap
        if policy == "allow_all" or not busy:
            out.start.append(fire)
            busy = True
        elif policy == "skip":
            out.skipped.append(fire)
        elif policy == "buffer_one":
            (out.skipped if out.keep else out.keep).append(fire)
        elif policy == "buffer_all":
            out.keep.append(fire)
        else:
            out.skipped.extend(out.keep)
            out.keep = [fire]
            out.stop = "cancel" if policy == "cancel_other" else "terminate"
    return out


# ---------------------------------------------------------------- naming runs


def iso(time: float) -> str:
    """``time`` as ISO 8601 UTC: ``2026-12-01T10:00:00Z``, with milliseconds when it
    has any (``...T10:00:00.250Z``)."""
    moment = datetime.fromtimestamp(round(time, 3), timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = moment.microsecond // 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def utc(time: float) -> datetime:
    """Seconds since the epoch as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(time, timezone.utc)
