"""Cron starts: ``client.workflow.start(..., cron="*/5 * * * *")`` runs the workflow at
each time of the expression, each run a new run of the same id.

The expression is a 5-field cron string (or an alias such as ``@hourly``), read by
croniter in UTC, or in the IANA time zone a leading ``CRON_TZ=<zone>`` names (as cronie
and Temporal read it): ``"CRON_TZ=Europe/Paris 0 9 * * 1-5"``.
"""

from __future__ import annotations

from ._schedule_spec import ScheduleSpec
from .errors import InvalidInputError


def cron_spec(expression: str) -> ScheduleSpec:
    """The times of a cron start.

    Raises:
        InvalidInputError: not a cron expression croniter reads, or an unknown zone.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInputError("cron must be a cron expression string, e.g. '*/5 * * * *'")
    text, zone = expression.strip(), "UTC"
    if text.startswith("CRON_TZ="):
        zone, _, text = text[len("CRON_TZ="):].partition(" ")
    try:
        return ScheduleSpec.build(cron=text.strip(), time_zone=zone)
    except InvalidInputError as exc:
        raise InvalidInputError(f"cron {expression!r}: {exc}") from None
