"""The id reuse rules: what a start of an id that already has a run does (pure)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import InvalidInputError
from ..messages import RunOutcome, RunStatus, StartRequest
from ..timeline import WorkflowStarted

POLICIES = ("allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate",
            "terminate_if_running")
"""``id_reuse_policy``: what a start does when the id's last run has closed
(``terminate_if_running`` also terminates an open one, as ``terminate_existing``)."""
CONFLICT_POLICIES = ("fail", "use_existing", "terminate_existing")
"""``id_conflict_policy``: what a start does when the id's run is open."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """``attach``: answer with the existing run (the same request again, or a parent
    re-issuing its child's start); ``new``: start run ``epoch``; ``terminate``: terminate
    the open run, then start run ``epoch``; ``refuse``: raise ``DuplicateWorkflowError``
    saying ``reason``."""

    action: Literal["attach", "new", "terminate", "refuse"]
    epoch: int = 0
    reason: str = ""
    existing: bool = False
    """``attach`` to the open run because of ``use_existing`` (its signals go to it)."""


def policy_of(request: StartRequest) -> str:
    """The request's reuse policy (``allow_duplicate`` by default), checked."""
    policy = request.id_reuse_policy or "allow_duplicate"
    if policy not in POLICIES:
        raise InvalidInputError(f"id_reuse_policy must be one of {POLICIES}, got {policy!r}")
    return policy


def conflict_of(request: StartRequest) -> str:
    """The request's conflict policy (``fail`` by default), checked."""
    policy = request.id_conflict_policy or "fail"
    if policy not in CONFLICT_POLICIES:
        raise InvalidInputError(f"id_conflict_policy must be one of {CONFLICT_POLICIES}, "
                                f"got {policy!r}")
    return policy


def decide(request: StartRequest, latest: WorkflowStarted,
           outcome: RunOutcome | None) -> Decision:
    """What a start of ``request.workflow_id`` does, given its latest run and how that
    run closed (``None``: still open)."""
    if request.request_id is not None and latest.request_id == request.request_id:
        return Decision("attach")
    if request.parent is not None and latest.parent == request.parent:
        return Decision("attach")
    policy, conflict = policy_of(request), conflict_of(request)
    running = outcome is None or outcome.status is RunStatus.CONTINUED
    if running:  # the conflict policy decides
        if conflict == "use_existing":
            return Decision("attach", existing=True)
        if conflict == "terminate_existing" or policy == "terminate_if_running":
            return Decision("terminate", epoch=latest.epoch + 1)
        reason = "id_reuse_policy=reject_duplicate" if policy == "reject_duplicate" else \
            "a run is still open (id_conflict_policy=fail)"
        return Decision("refuse", reason=reason)
    if policy == "reject_duplicate":  # closed: the reuse policy decides
        return Decision("refuse", reason="id_reuse_policy=reject_duplicate")
    if policy == "allow_duplicate_failed_only" and outcome is not None \
            and outcome.status is RunStatus.COMPLETED:
        return Decision("refuse", reason="last run completed "
                                         "(id_reuse_policy=allow_duplicate_failed_only)")
    return Decision("new", epoch=latest.epoch + 1)
