"""Reset and fork: a new run that takes over the first batches of an old one.

``handle.reset(to=...)`` and ``client.workflow.fork(...)`` make a run whose timeline
begins with the old run's batches up to a point: those steps replay (their recorded
results are used, nothing runs again) and the code goes on live from there, with the
code the host has now. What the point is (``to``):

- ``"last_failure"``: just before the last failed activity or child outcome (it runs
  again); with none, before the batch that closed the run.
- ``"first_activity_failure"``: just before the first failed activity outcome.
- ``"last_replayable"``: as many batches as the current code replays (a run stuck on
  ``NonDeterminismError`` after a code change goes on from where the code agrees).
- an export event id (``export_execution().events[i].event_id``): that event and all
  after it happen again. A command recorded in activation ``k`` (a scheduled activity,
  a timer, a child) keeps batches 1..k: the call is issued again; an input recorded in
  activation ``k`` (a result, a signal) keeps batches 1..k-1.
- a marker key (``"-proxy-3-"``, an event's ``timeline_key``): the call that key names
  is issued again.

Invariants:
- The kept batches never include the batch that closed the run (nor a termination).
- The kept prefix replays on the current code, or the reset is refused (naming the
  activation where the code goes another way) before anything is written.
- Signals recorded after the point go to the new run (unless told not to), with their
  request ids, so each is taken once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .._values import Values
from ..core.instance import replay_timeline
from ..errors import InvalidInputError, NonDeterminismError
from ..export import build_execution
from ..timeline import (
    CLOSING_COMMANDS,
    ActivityFailed,
    Batch,
    ChildFailed,
    SignalReceived,
    WorkflowStarted,
)

ResetPoint = int | str
NAMED_POINTS = ("last_failure", "first_activity_failure", "last_replayable")


def open_batches(batches: Sequence[Batch]) -> int:
    """How many batches come before the one that closed the run (all of an open run)."""
    for index, batch in enumerate(batches):
        if batch.terminated is not None or batch.reset is not None or any(
                isinstance(c, CLOSING_COMMANDS) for c in batch.commands):
            return index
    return len(batches)


def kept_batches(started: WorkflowStarted, batches: Sequence[Batch], to: ResetPoint,
                 replayed: Callable[[], int] | None = None) -> int:
    """How many of ``batches`` a reset to ``to`` keeps (see the module docstring).

    ``replayed()``: how many leading batches replay on the current code (for
    ``"last_replayable"``; see ``replayed``).

    Raises:
        InvalidInputError: ``to`` names nothing in this run.
    """
    limit = open_batches(batches)
    if to == "last_failure" or to == "first_activity_failure":
        kinds = (ActivityFailed,) if to == "first_activity_failure" else \
            (ActivityFailed, ChildFailed)
        failed = [i for i, b in enumerate(batches[:limit + 1])
                  if any(isinstance(e, kinds) for e in b.events)]
        if failed:
            return min(limit, failed[0] if to == "first_activity_failure" else failed[-1])
        if to == "first_activity_failure":
            raise InvalidInputError(f"workflow {started.workflow_id}: no activity failed "
                                    "in its run")
        return limit
    if to == "last_replayable":
        assert replayed is not None
        return min(limit, replayed())
    if isinstance(to, str):
        return min(limit, _marker(started, batches, to))
    if isinstance(to, int) and not isinstance(to, bool):
        return min(limit, _event(started, batches, to))
    raise InvalidInputError(f"reset to {to!r}: give an event id, a marker key or one of "
                            f"{', '.join(NAMED_POINTS)}")


def _marker(started: WorkflowStarted, batches: Sequence[Batch], key: str) -> int:
    parts = key.strip("-").split("-")
    if len(parts) != 2 or not parts[1].isdigit():
        raise InvalidInputError(f"reset to {key!r}: not a marker key (like '-proxy-3-')")
    seq = int(parts[1])
    for index, batch in enumerate(batches):
        if any(getattr(c, "seq", None) == seq for c in batch.commands):
            return index + 1  # the call is issued again
    raise InvalidInputError(f"reset to {key!r}: workflow {started.workflow_id} made no "
                            f"call {seq}")


def _event(started: WorkflowStarted, batches: Sequence[Batch], event_id: int) -> int:
    events = build_execution(started, list(batches), omit_results=True).events
    found = next((e for e in events if e.event_id == event_id), None)
    if found is None:
        raise InvalidInputError(f"reset to event {event_id}: workflow {started.workflow_id} "
                                f"has events 1 to {len(events)}")
    if found.activation is None:  # the run's start: everything happens again
        return 0
    return found.activation if found.from_command else found.activation - 1


def signals_after(batches: Sequence[Batch], kept: int) -> list[SignalReceived]:
    """The signals recorded after the first ``kept`` batches, in order."""
    return [e for b in batches[kept:] for e in b.events if isinstance(e, SignalReceived)]


def rebased(batches: Sequence[Batch], run_id: str, owner: str) -> list[Batch]:
    """``batches`` as batches of run ``run_id``, owned by ``owner``."""
    return [b.model_copy(update={"run_id": run_id, "owner": owner, "version": None})
            for b in batches]


def replayed(definition: Any, started: WorkflowStarted, batches: Sequence[Batch],
             values: Values | None) -> int:
    """How many leading ``batches`` the code replays: all, or those before the
    activation where it first goes another way (one replay, not one per prefix)."""
    try:
        replay_timeline(definition, started, list(batches), values)
    except NonDeterminismError as exc:
        return max(0, (exc.activation or 1) - 1)
    return len(batches)


def check_replays(definition: Any, started: WorkflowStarted, batches: Sequence[Batch],
                  values: Values | None) -> None:
    """Raises ``InvalidInputError`` naming where the current code does not replay
    ``batches``."""
    try:
        replay_timeline(definition, started, list(batches), values)
    except NonDeterminismError as exc:
        raise InvalidInputError(
            f"workflow {started.workflow_id}: the current code does not replay the "
            f"{len(batches)} batch(es) a reset would keep (activation {exc.activation}: "
            f"recorded {exc.recorded}, the code makes {exc.produced}); reset to an "
            "earlier point, or to 'last_replayable'") from None
