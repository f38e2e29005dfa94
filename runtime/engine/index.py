"""The visibility index behind ``client.workflow.list``: the latest run of each workflow
id as a ``RunSummary``, fed by hosts' reports and rebuilt from storage."""

from __future__ import annotations

import logging

from ..messages import ListRequest, RunOutcome, RunStatus, RunSummary
from ..storage.runs import RunStore
from ..timeline import fields_of, home_of

log = logging.getLogger("rayline.index")


class Index:
    """Summaries by workflow id (the registry keeps one in memory)."""

    def __init__(self) -> None:
        self.summaries: dict[str, RunSummary] = {}

    def __len__(self) -> int:
        return len(self.summaries)

    def get(self, workflow_id: str) -> RunSummary | None:
        return self.summaries.get(workflow_id)

    def record(self, summaries: list[RunSummary]) -> None:
        for summary in summaries:
            self.summaries[summary.workflow_id] = summary

    def select(self, request: ListRequest) -> list[RunSummary]:
        """The summaries ``request`` asks for, newest first."""
        out = [s for s in self.summaries.values()
               if (request.status is None or s.state is request.status)
               and (request.workflow_name is None or s.workflow_name == request.workflow_name)
               and all(s.search.get(k) == v for k, v in (request.search or {}).items())]
        out.sort(key=lambda s: s.started_at, reverse=True)
        return out[:request.limit]

    def rebuild(self, runs: RunStore) -> None:
        """Adds every workflow in storage that no report told about (reads every one)."""
        for key in runs.all_workflow_keys():
            try:
                loaded = runs.load_latest(key)
            except Exception:
                log.exception("index: cannot read %s", key)
                continue
            if loaded is None or loaded[0].workflow_id in self.summaries:
                continue
            started, batches = loaded
            outcome = RunOutcome.of_run(batches)
            state = outcome.status if outcome else RunStatus.RUNNING
            host, version = home_of(started, batches)
            self.summaries[started.workflow_id] = RunSummary(
                workflow_id=started.workflow_id, run_id=started.run_id,
                workflow_name=started.workflow_name, host=host,
                task_queue=started.task_queue, started_at=started.time, state=state,
                status=state.code, search=fields_of(started, batches)[0],
                version=version)
