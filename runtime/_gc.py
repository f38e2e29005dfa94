"""Retention: deleting what storage keeps of closed workflows once they expire.

``start(..., expire="30d")`` (or ``Client(expire=...)`` for every start of a client)
keeps in the run record how long after it closes a run may be deleted; children,
continue-as-new, retries and cron runs keep their run's. ``client.gc()`` / ``rayline
gc`` then deletes each closed run whose time is up (with ``older_than``, also closed
runs that have no ``expire`` of their own), the early signals past their expiry, and
the index entries of the workflows it removed whole.

Invariants:
- Only closed runs are deleted: an open run (running, parked, stuck, waiting to retry
  or for its cron time) is never touched, nor anything of an id whose latest run is
  open but the closed runs before it that have expired.
- A run's batches go before its record, so while it is being deleted its epoch is still
  listed and a new run of the id (a start racing the gc) takes the next epoch.
- Large values (``objects/``) are shared by content and are not deleted here.
- On local files, the folders a deleted workflow leaves empty are removed, so listings
  (the index check, the Replayer, the next gc) stop naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import RunOutcome, RunStatus
from .storage import RunStore


@dataclass
class GcReport:
    """What a gc deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    runs: list[tuple[str, str]] = field(default_factory=list)
    """(workflow id, run id) of each run deleted."""
    workflows: dict[str, str] = field(default_factory=dict)
    """Workflows deleted whole: id -> the run id of their last run."""
    early_signals: int = 0
    kept_open: int = 0
    """Workflows whose latest run is open (kept)."""


def collect(runs: RunStore, now: float, *, dry_run: bool = False,
            older_than: float | None = None) -> GcReport:
    """Deletes the expired closed runs and early signals of ``runs``' namespace."""
    report = GcReport(dry_run=dry_run)
    for key in runs.all_workflow_keys():
        epochs = runs.key_epochs(key)
        if not epochs:
            continue
        gone = 0
        last_run = ""
        for epoch in epochs:
            try:
                started, last = runs.last_of_key(key, epoch)
            except FileNotFoundError:
                gone += 1  # deleted meanwhile (another gc)
                continue
            last_run = started.run_id
            outcome = None if last is None else RunOutcome.of(last)
            if outcome is None or outcome.status is RunStatus.RUNNING:
                if epoch == epochs[-1]:
                    report.kept_open += 1
                continue
            keep_for = started.options.expire if started.options.expire is not None \
                else older_than
            if keep_for is None or outcome.time + keep_for > now:
                continue
            if not dry_run:
                runs.delete_run(key, epoch)
            report.runs.append((started.workflow_id, started.run_id))
            gone += 1
            if gone == len(epochs):
                report.workflows[started.workflow_id] = last_run
                if not dry_run:
                    runs.prune(key)
    for path, signal in runs.early_signals():
        if signal is None or (signal.expire_at is not None and signal.expire_at < now):
            if not dry_run:
                runs.delete(path)
            report.early_signals += 1
    if report.early_signals and not dry_run:
        runs.prune("early")
    return report
