"""rayline: durable workflows on Ray.

A workflow is an ``async def`` that calls activities (Ray tasks), sleeps, waits for
signals and starts children; every step is checkpointed to a timeline in storage, so
it survives the loss of any process, node or cluster and resumes where it was.

    import rayline
    from rayline import workflow

    @rayline.activity
    def add(x: int, y: int) -> int:
        return x + y

    @rayline.workflow
    async def total(n: int) -> int:
        acts = workflow.proxy_activities(add)
        return await acts.add(n, 1)

    client = rayline.Client()
    print(client.workflow.execute(total, args=[41]))
"""

from . import errors, schedules
from ._activity import ActivityDefinition, ActivityInfo, activity, heartbeat
from ._activity import info as activity_info
from ._definition import WorkflowDefinition
from ._logging import activity_logger
from ._options import ActivityOptions, RetryPolicy
from ._schedule_client import (
    AsyncScheduleClient,
    AsyncScheduleHandle,
    ScheduleClient,
    ScheduleHandle,
)
from .client import (
    AsyncClient,
    AsyncUpdateHandle,
    AsyncWorkflowClient,
    AsyncWorkflowHandle,
    Client,
    UpdateHandle,
    WorkflowClient,
    WorkflowHandle,
)
from .errors import (
    ActivityCancelledError,
    ActivityError,
    CancelledFailure,
    ChildWorkflowError,
    ClusterUnavailableError,
    CodecError,
    CodeUnavailableError,
    ConflictError,
    CorruptTimelineError,
    DeadlockError,
    DuplicateWorkflowError,
    FatalError,
    HostDiedError,
    IncompatibleTimelineError,
    IntegrityError,
    InvalidInputError,
    MaxedError,
    NonDeterminismError,
    NonDeterministicCallError,
    NotHereError,
    QuarantinedError,
    QueryError,
    RaylineError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    SerializationError,
    StorageError,
    TimeoutFailure,
    UpdateFailedError,
    UpdateRejectedError,
    WorkflowClosedError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTerminatedError,
    is_cancellation,
)
from .messages import (
    CountReply,
    RunOutcome,
    RunStatus,
    RunSummary,
    WorkflowDescription,
    WorkflowPage,
)
from .schedules import ScheduleDescription
from .storage.codec import Codec, Keyring
from .worker import Worker
from .workflow import api as workflow  # the decorator and the in-workflow API

__version__ = "0.1.0"

__all__ = [
    "ActivityCancelledError",
    "ActivityDefinition",
    "ActivityError",
    "ActivityInfo",
    "ActivityOptions",
    "AsyncClient",
    "AsyncScheduleClient",
    "AsyncScheduleHandle",
    "AsyncUpdateHandle",
    "AsyncWorkflowClient",
    "AsyncWorkflowHandle",
    "CancelledFailure",
    "ChildWorkflowError",
    "Client",
    "ClusterUnavailableError",
    "CodeUnavailableError",
    "Codec",
    "CodecError",
    "ConflictError",
    "CorruptTimelineError",
    "CountReply",
    "DeadlockError",
    "DuplicateWorkflowError",
    "FatalError",
    "HostDiedError",
    "IncompatibleTimelineError",
    "IntegrityError",
    "InvalidInputError",
    "Keyring",
    "MaxedError",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "NotHereError",
    "QuarantinedError",
    "QueryError",
    "RaylineError",
    "RetryPolicy",
    "RunOutcome",
    "RunStatus",
    "RunSummary",
    "ScheduleAlreadyExistsError",
    "ScheduleClient",
    "ScheduleDescription",
    "ScheduleHandle",
    "ScheduleNotFoundError",
    "SerializationError",
    "StorageError",
    "TimeoutFailure",
    "UpdateFailedError",
    "UpdateHandle",
    "UpdateRejectedError",
    "Worker",
    "WorkflowClient",
    "WorkflowClosedError",
    "WorkflowDefinition",
    "WorkflowDescription",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowPage",
    "WorkflowTerminatedError",
    "activity",
    "activity_info",
    "activity_logger",
    "errors",
    "heartbeat",
    "is_cancellation",
    "schedules",
    "workflow",
]
