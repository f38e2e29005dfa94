"""The replayer: does changed workflow code still replay the runs already recorded?

Before new workflow code is deployed, replay recent runs against it: a run whose
timeline the new code does not reproduce would be stuck (``NonDeterminismError``) the
next time a host loads it. ``Replayer(workflows=[...]).replay(histories)`` replays each
history with the deterministic core (no Ray, no host, nothing written) and reports, for
each run that would break, the first activation where the code went another way, what
the timeline recorded there and what the code does now.

A history is one run's timeline: its run record and its batches. It comes from storage
(``Replayer.stored``: by id, or the latest runs of a workflow name), or from a JSON file
(``History.from_json``; ``History.to_json``, ``rayline workflow timeline ID`` writes
one). ``rayline replay`` runs the same from the command line for a CI job.

Invariants:
- Replaying reads; it never writes to storage and never runs an activity.
- A workflow is replayed with the definition given for its name in ``workflows``; a
  name not given is loaded as a host would (the run's stored import path or pickled
  code), so unchanged code needs no list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pydantic

from ._code import CodeRef
from ._definition import WorkflowDefinition, as_workflow
from ._values import Values
from .core.instance import replay_timeline
from .errors import NonDeterminismError, WorkflowNotFoundError
from .storage import RunStore, open_store
from .storage.codec import Codec, codec_of
from .timeline import BATCH_ADAPTER, Batch, WorkflowStarted


@dataclass(frozen=True)
class History:
    """One run's timeline: what a replay feeds the code."""

    started: WorkflowStarted
    batches: list[Batch]

    @property
    def workflow_id(self) -> str:
        return self.started.workflow_id

    def to_json(self) -> str:
        return json.dumps({"started": self.started.model_dump(mode="json"),
                           "batches": [b.model_dump(mode="json") for b in self.batches]})

    @classmethod
    def from_json(cls, text: str | bytes) -> History:
        """Reads ``to_json``'s output.

        Raises:
            ValueError: not a timeline (naming what is wrong).
        """
        try:
            data = json.loads(text)
            return cls(WorkflowStarted.model_validate(data["started"]),
                       [BATCH_ADAPTER.validate_python(b) for b in data["batches"]])
        except (KeyError, TypeError, json.JSONDecodeError, pydantic.ValidationError) as exc:
            raise ValueError(f"not a rayline timeline: {type(exc).__name__}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> History:
        return cls.from_json(Path(path).read_bytes())


@dataclass(frozen=True)
class ReplayResult:
    """How one run replayed: ``ok``, or why not."""

    workflow_id: str
    run_id: str
    workflow_name: str
    ok: bool
    error: str | None = None
    """The error's type and message when the run does not replay."""
    activation: int | None = None
    """The first batch where the code went another way (a divergence)."""
    recorded: list[tuple[Any, ...]] = field(default_factory=list)
    """The calls the timeline holds at ``activation``."""
    produced: list[tuple[Any, ...]] = field(default_factory=list)
    """The calls the code makes there now."""

    def __str__(self) -> str:
        where = f"{self.workflow_id} (run {self.run_id[:8]}, {self.workflow_name})"
        if self.ok:
            return f"ok      {where}"
        if self.activation is not None:
            return (f"BREAKS  {where} at activation {self.activation}: recorded "
                    f"{self.recorded}, the code now makes {self.produced}")
        return f"FAILS   {where}: {self.error}"


@dataclass(frozen=True)
class ReplayReport:
    """Every run replayed, in order; ``ok`` when all of them replay."""

    results: list[ReplayResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[ReplayResult]:
        return [r for r in self.results if not r.ok]

    def __str__(self) -> str:
        lines = [str(r) for r in self.results]
        lines.append(f"{len(self.results) - len(self.failed)} of {len(self.results)} runs "
                     "replay on this code")
        return "\n".join(lines)


class Replayer:
    """Replays recorded runs against workflow code (see the module docstring).

    Args:
        workflows: the definitions to replay with, by workflow name (the new code);
            other names are loaded from each run's stored code reference.
        storage: where ``stored`` reads runs (a storage URL, as for ``Client``); also
            where the large values a replay reads come from.
        namespace: the namespace of those runs.
        codec: the codec they were stored with, as ``AsyncClient``'s (by default
            ``$RAYLINE_CODEC``, keys from ``$RAYLINE_KEYS``).
    """

    def __init__(self, workflows: Sequence[WorkflowDefinition[Any, Any] | Callable[..., Any]]
                 = (), *, storage: str | None = None, namespace: str = "default",
                 codec: Codec | str | None = None) -> None:
        self.workflows = {d.name: d for d in (as_workflow(w) for w in workflows)}
        self._runs = RunStore(open_store(storage), namespace, codec_of(codec)) \
            if storage is not None else None

    def replay(self, histories: Iterable[History]) -> ReplayReport:
        """Replays each history; never raises for a run that does not replay."""
        return ReplayReport([self.replay_one(h) for h in histories])

    def replay_one(self, history: History) -> ReplayResult:
        s = history.started
        try:
            definition = self._definition(s)
            values = Values(self._runs) if self._runs is not None else None
            replay_timeline(definition, s, history.batches, values)
        except NonDeterminismError as exc:
            return ReplayResult(s.workflow_id, s.run_id, s.workflow_name, False,
                                f"NonDeterminismError: {exc}", exc.activation,
                                exc.recorded, exc.produced)
        except Exception as exc:  # its code cannot be loaded, a value cannot be read
            return ReplayResult(s.workflow_id, s.run_id, s.workflow_name, False,
                                f"{type(exc).__name__}: {exc}")
        return ReplayResult(s.workflow_id, s.run_id, s.workflow_name, True)

    def _definition(self, started: WorkflowStarted) -> WorkflowDefinition[Any, Any]:
        given = self.workflows.get(started.workflow_name)
        if given is not None:
            return given
        code = CodeRef.stored(started.code, started.code_pickle)
        if code is None:
            raise LookupError(f"workflow {started.workflow_name!r} has no stored code "
                              "reference: pass its definition in workflows=[...]")
        return as_workflow(code.load())

    def stored(self, workflow_ids: Iterable[str] | None = None, *,
               workflow_name: str | None = None, limit: int | None = None) -> list[History]:
        """Histories from storage: the latest run of each id given, else of every stored
        workflow (of ``workflow_name`` only, if given), the most recently updated first,
        at most ``limit``.

        Raises:
            ValueError: the replayer was made without ``storage``.
        """
        runs = self._runs
        if runs is None:
            raise ValueError("Replayer(storage=...) is needed to read stored runs")
        if workflow_ids is None:
            workflow_ids = []
            for key in runs.all_workflow_keys():
                try:
                    workflow_ids.append(runs.workflow_id_of_key(key))
                except WorkflowNotFoundError:
                    continue  # deleted (gc) while listed
        found = []
        for workflow_id in workflow_ids:
            try:
                started, batches = runs.load(workflow_id)
            except WorkflowNotFoundError:
                continue
            if workflow_name is None or started.workflow_name == workflow_name:
                found.append(History(started, batches))
        found.sort(key=lambda h: h.batches[-1].time if h.batches else h.started.time,
                   reverse=True)
        return found[:limit] if limit is not None else found
