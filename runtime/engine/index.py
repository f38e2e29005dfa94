"""The visibility index behind ``client.workflow.list`` and ``count``: the latest run of
each workflow id as a ``RunSummary``, fed by hosts' reports, kept in storage, and
reconciled with the timelines without reading them all.

In storage (``<ns>/index/``), in the order the registry writes it:
- ``log-<seq>``: the summaries reported since the log before (written every
  ``INDEX_SAVE_EVERY`` seconds while reports come in; an exclusive create);
- ``snap-<seq>``: every summary known up to log ``seq``, written once the logs since the
  last snapshot hold as many summaries as the index (so each summary is written a bounded
  number of times); the logs and snapshots before it are then removed.

A registry that starts reads the newest readable snapshot and the logs after it, then
reconciles: it lists the workflows in storage and the hosts' open markers (listing, not
reading) and reads only the timelines the index cannot vouch for: a workflow it does not
know (its report was lost), one it holds as open without a marker or as closed with one
(a close or new run whose report was lost), and one whose marker is on another host than
it says (a move whose report was lost). Hosts report again every run they resume into
memory. What listings cannot show (a search field written, or a closed run replaced by
another closed run, while reports were lost) stays as last reported until the next
report of that workflow.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import logging
import zlib
from typing import Any, Iterable

import pydantic

from ..errors import (
    ConflictError,
    CorruptTimelineError,
    IncompatibleTimelineError,
    InvalidInputError,
)
from ..messages import (
    CountReply,
    CountRequest,
    ListReply,
    ListRequest,
    RunOutcome,
    RunStatus,
    RunSummary,
    WorkflowFilter,
)
from ..storage.runs import RunStore, id_key
from ..timeline import Batch, WorkflowStarted, fields_of, home_of

log = logging.getLogger("rayline.index")

OPEN = (RunStatus.RUNNING, RunStatus.STUCK, RunStatus.QUARANTINED)
_UNREADABLE = (CorruptTimelineError, IncompatibleTimelineError, FileNotFoundError, ValueError,
               zlib.error)
"""A snapshot or log that is torn, altered or newer: the reconcile covers what it held."""
_SUMMARIES = pydantic.TypeAdapter(list[RunSummary])


class Index:
    """Summaries by workflow id (the registry keeps one in memory)."""

    def __init__(self) -> None:
        self.summaries: dict[str, RunSummary] = {}

    def __len__(self) -> int:
        return len(self.summaries)

    def get(self, workflow_id: str) -> RunSummary | None:
        return self.summaries.get(workflow_id)

    def record(self, summaries: Iterable[RunSummary], *,
               ties: bool = True) -> list[RunSummary]:
        """Keeps each summary unless the index holds a later one of its workflow (a later
        run, or the same run updated later); returns those kept. A summary as old as the
        one held replaces it only with ``ties``: a host's report does (its run's state can
        change without a batch: stuck, quarantined), what storage kept or a timeline says
        does not (a host told the index something newer than they know)."""
        kept = []
        for summary in summaries:
            held = self.summaries.get(summary.workflow_id)
            if held is None or _age(summary) > _age(held) or (
                    ties and _age(summary) == _age(held)):
                self.summaries[summary.workflow_id] = summary
                kept.append(summary)
        return kept

    def select(self, request: ListRequest) -> ListReply:
        """One page of the summaries ``request`` asks for, in its order."""
        if request.limit < 1:
            raise InvalidInputError(f"limit must be at least 1, got {request.limit}")
        field, descending = request.order_by.lstrip("-"), request.order_by.startswith("-")
        after = _read_token(request.page_token, request.order_by)
        matching = self._matching(request)
        if after is not None:
            matching = [s for s in matching if _beyond(_key(s, field), after, descending)]
        present = [s for s in matching if getattr(s, field) is not None]
        wanted = request.limit + 1  # one more tells whether a next page exists

        def by_key(summary: RunSummary) -> tuple[Any, str]:
            return getattr(summary, field), summary.workflow_id

        page = (heapq.nlargest if descending else heapq.nsmallest)(wanted, present, key=by_key)
        if len(page) < wanted:  # then the runs with no value for the key, by id
            missing = [s for s in matching if getattr(s, field) is None]
            page += heapq.nsmallest(wanted - len(page), missing, key=lambda s: s.workflow_id)
        more = len(page) > request.limit
        page = page[:request.limit]
        token = _token(request.order_by, _key(page[-1], field)) if more else None
        return ListReply(items=page, next_page_token=token)

    def _matching(self, wanted: WorkflowFilter) -> list[RunSummary]:
        if not any(value is not None for value in wanted.model_dump(
                include=set(WorkflowFilter.model_fields)).values()):
            return list(self.summaries.values())  # no condition: no test per summary
        return [s for s in self.summaries.values() if matches(s, wanted)]

    def count(self, request: CountRequest) -> CountReply:
        matching = self._matching(request)
        groups: dict[str, int] = {}
        if request.group_by is not None:
            for summary in matching:
                value = getattr(summary, "state" if request.group_by == "status"
                                else request.group_by)
                name = value.value if isinstance(value, RunStatus) else (value or "")
                groups[name] = groups.get(name, 0) + 1
        return CountReply(count=len(matching), groups=groups)

    def snapshot(self) -> list[RunSummary]:
        return list(self.summaries.values())


def _age(summary: RunSummary) -> tuple[float, float]:
    return summary.started_at, summary.updated_at


# ------------------------------------------------------------------- filtering

def matches(summary: RunSummary, wanted: WorkflowFilter) -> bool:
    """Whether ``summary`` meets every condition of ``wanted``."""
    if wanted.status is not None and summary.state is not wanted.status:
        return False
    for name in ("workflow_name", "task_queue", "version"):
        value = getattr(wanted, name)
        if value is not None and getattr(summary, name) != value:
            return False
    if not _within(summary.started_at, wanted.started_after, wanted.started_before):
        return False
    if wanted.closed_after is not None or wanted.closed_before is not None:
        if summary.closed_at is None or not _within(summary.closed_at, wanted.closed_after,
                                                     wanted.closed_before):
            return False
    for field, conditions in (wanted.search or {}).items():
        if field not in summary.search:
            return False  # no condition holds on a field the run never wrote
        stored = summary.search[field]
        if not all(holds(stored, op, value) for op, value in conditions.items()):
            return False
    return True


def _within(value: float, after: float | None, before: float | None) -> bool:
    return (after is None or value >= after) and (before is None or value < before)


def holds(stored: Any, op: str, value: Any) -> bool:
    """One search condition on a stored field: ``=`` and ``!=`` compare values of the
    same type (on a list field, ``=`` holds when it contains the value), ``in`` takes a
    list of values, and ranges compare numbers with numbers and strings with strings
    (datetimes are stored as ISO 8601 UTC strings, which sort as the times do)."""
    if op == "=":
        return _equal(stored, value) or (isinstance(stored, list)
                                         and any(_equal(item, value) for item in stored))
    if op == "!=":
        return not holds(stored, "=", value)
    if op == "in":
        return isinstance(value, list) and any(holds(stored, "=", item) for item in value)
    if not _comparable(stored, value):
        return False
    return bool({"<": stored < value, "<=": stored <= value, ">": stored > value,
                 ">=": stored >= value}[op])


def _equal(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or \
        (isinstance(a, str) and isinstance(b, str))


# ------------------------------------------------------------------- paging

def _key(summary: RunSummary, field: str) -> tuple[bool, Any, str]:
    """Where a summary sorts: (no value for the key, the value, its id)."""
    value = getattr(summary, field)
    return value is None, value, summary.workflow_id


def _beyond(key: tuple[bool, Any, str], after: tuple[bool, Any, str], descending: bool) -> bool:
    """Whether a summary at ``key`` comes after the last one of the page before."""
    missing, value, workflow_id = key
    if after[0]:  # the page before ended among the runs with no value
        return missing and workflow_id > after[2]
    if missing:
        return True
    return (value, workflow_id) < (after[1], after[2]) if descending else \
        (value, workflow_id) > (after[1], after[2])


def _token(order_by: str, key: tuple[bool, Any, str]) -> str:
    raw = json.dumps([order_by, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str | None, order_by: str) -> tuple[bool, Any, str] | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        found, missing, value, workflow_id = json.loads(raw)
    except (ValueError, binascii.Error, TypeError):
        raise InvalidInputError(f"page_token {token[:40]!r} is not one list() gave") from None
    if found != order_by:
        raise InvalidInputError(f"page_token was made for order_by={found!r}, not "
                                f"{order_by!r}: keep the order across pages")
    return bool(missing), value, str(workflow_id)


# ------------------------------------------------------------------- storage

def summary_of(started: WorkflowStarted, batches: list[Batch]) -> RunSummary:
    """A run's summary as its timeline tells it (what a report would have said)."""
    outcome = RunOutcome.of_run(batches)
    state = outcome.status if outcome else RunStatus.RUNNING
    host, version = home_of(started, batches)
    last = batches[-1].time if batches else started.time
    return RunSummary(
        workflow_id=started.workflow_id, run_id=started.run_id,
        workflow_name=started.workflow_name, host=host, task_queue=started.task_queue,
        started_at=started.time, state=state, status=state.code,
        search=fields_of(started, batches)[0], version=version,
        closed_at=last if outcome else None, updated_at=last)


class IndexStore:
    """The index's snapshots and logs in storage (see the module docstring)."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs
        self.seq = 0
        """The number of the last log or snapshot written or read."""
        self._listed = False  # whether seq has been taken from storage
        self.logged = 0
        """Summaries in the logs since the last snapshot."""
        self.reads = 0
        """Objects read by ``load`` and ``reconcile`` (timelines included)."""

    def load(self) -> list[RunSummary]:
        """The summaries kept: the newest readable snapshot, then the logs after it."""
        names = self.runs.index_names()
        logs = sorted(_seq(n) for n in names if n.startswith("log-"))
        snaps = sorted((_seq(n) for n in names if n.startswith("snap-")), reverse=True)
        self.seq = max([*logs, *snaps, self.seq])
        self._listed = True
        found: list[RunSummary] = []
        base = 0
        for seq in snaps:
            try:
                found = self._read(f"snap-{seq:012d}")
                base = seq
                break
            except _UNREADABLE as exc:
                log.warning("index: snapshot %d cannot be read (%s); using an older one",
                            seq, exc)
        self.logged = 0
        for seq in (s for s in logs if s > base):
            try:
                entries = self._read(f"log-{seq:012d}")
            except _UNREADABLE as exc:
                log.warning("index: log %d cannot be read (%s); reconciling covers it",
                            seq, exc)
                continue
            found += entries
            self.logged += len(entries)
        return found

    def _read(self, name: str) -> list[RunSummary]:
        self.reads += 1
        return _SUMMARIES.validate_json(zlib.decompress(self.runs.get_index(name)))

    def append(self, summaries: list[RunSummary]) -> None:
        """Writes a log of ``summaries`` after the last one."""
        self.seq = self._write("log", summaries)
        self.logged += len(summaries)

    def compact(self, everything: list[RunSummary]) -> None:
        """Writes ``everything`` as a snapshot at the last log and removes what it covers."""
        upto = self.seq
        self._write("snap", everything, upto)
        self.logged = 0
        for name in self.runs.index_names():
            if _seq(name) < upto or (name.startswith("log-") and _seq(name) == upto):
                self.runs.delete_index(name)

    def _write(self, kind: str, summaries: list[RunSummary], seq: int | None = None) -> int:
        data = zlib.compress(_SUMMARIES.dump_json(summaries), 1)
        if seq is not None:
            self.runs.put_index(f"{kind}-{seq:012d}", data)
            return seq
        if not self._listed:  # after what is there (a log below a snapshot is not read)
            self.seq = max([self.seq, *(_seq(n) for n in self.runs.index_names())])
            self._listed = True
        while True:  # an exclusive create: a registry that overlapped this one wrote seq
            seq = self.seq + 1
            try:
                self.runs.put_index(f"{kind}-{seq:012d}", data, exclusive=True)
                return seq
            except ConflictError:
                self.seq = max([self.seq + 1, *(_seq(n) for n in self.runs.index_names())])

    def reconcile(self, known: dict[str, RunSummary]) -> list[RunSummary]:
        """The summaries of the workflows the index cannot vouch for, read from their
        timelines (see the module docstring)."""
        by_key = {id_key(workflow_id): s for workflow_id, s in list(known.items())}
        marked: dict[str, set[str]] = {}  # key -> the hosts with its open marker
        for host in self.runs.open_hosts():
            for key in self.runs.open_keys(host):
                marked.setdefault(key, set()).add(host)
        doubtful = [key for key in self.runs.all_workflow_keys()
                    if key not in by_key or (by_key[key].state in OPEN) != (key in marked)
                    or (key in marked and by_key[key].host not in marked[key])]
        found = []
        for key in doubtful:
            self.reads += 1
            try:
                loaded = self.runs.load_latest(key)
            except Exception:
                log.exception("index: cannot read %s", key)
                continue
            if loaded is not None:
                found.append(summary_of(*loaded))
        return found


def _seq(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1

