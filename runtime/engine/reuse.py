"""The id reuse rules: what a start of an id that already has a run does (pure)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import InvalidInputError
from ..messages import RunOutcome, RunStatus, StartRequest
from ..timeline import WorkflowStarted

POLICIES = ("allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate",
            "terminate_if_running")


@dataclasses.dataclass(frozen=True)
class Decision:
    """``attach``: answer with the existing run (the same request again, or a parent
    re-issuing its child's start); ``new``: start run ``epoch``; ``terminate``: terminate
    the open run, then start run ``epoch``; ``refuse``: raise ``DuplicateWorkflowError``
    saying ``reason``."""

    action: Literal["attach", "new", "terminate", "refuse"]
    epoch: int = 0
    reason: str = ""


def policy_of(request: StartRequest) -> str:
    """The request's reuse policy (``allow_duplicate`` by default), checked."""
    policy = request.id_reuse_policy or "allow_duplicate"
    if policy not in POLICIES:
        raise InvalidInputError(f"id_reuse_policy must be one of {POLICIES}, got {policy!r}")
    return policy


def decide(request: StartRequest, latest: WorkflowStarted,
           outcome: RunOutcome | None) -> Decision:
    """What a start of ``request.workflow_id`` does, given its latest run and how that
    run closed (``None``: still open)."""
    if request.request_id is not None and latest.request_id == request.request_id:
        return Decision("attach")
    if request.parent is not None and latest.parent == request.parent:
        return Decision("attach")
    policy = policy_of(request)
    running = outcome is None or outcome.status is RunStatus.CONTINUED
    if policy == "reject_duplicate":
        return Decision("refuse", reason="id_reuse_policy=reject_duplicate")
    if running:
        if policy == "terminate_if_running":
            return Decision("terminate", epoch=latest.epoch + 1)
        return Decision("refuse", reason="a run is still open")
    if policy == "allow_duplicate_failed_only" and outcome is not None \
            and outcome.status is RunStatus.COMPLETED:
        return Decision("refuse", reason="last run completed "
                                         "(id_reuse_policy=allow_duplicate_failed_only)")
    return Decision("new", epoch=latest.epoch + 1)
