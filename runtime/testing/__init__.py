"""rayline.testing: workflows and activities under test, without Ray.

``WorkflowEnvironment`` runs rayline's own hosts, registry, storage and replay core in
this process (no Ray is started or imported), with a client that has the whole client
API; ``start_time_skipping()`` makes its time skip ahead to the next timer while the
test waits, so a workflow that waits 7 days for an approval times out in milliseconds.
``ActivityEnvironment`` runs one activity function with a given ``ActivityInfo``,
recording its heartbeats and cancelling it as a real attempt is cancelled.
``Replayer`` replays stored runs against changed workflow code before it is deployed
and names each run the change would break (``rayline replay`` on the command line).

    from rayline.testing import WorkflowEnvironment

    async def test_expires() -> None:
        async with await WorkflowEnvironment.start_time_skipping() as env:
            handle = await env.client.workflow.start(approval, args=["order-1"])
            assert await handle.result() == "expired"

See docs/testing.md for what runs for real and what does not.
"""

from .._replayer import History, Replayer, ReplayReport, ReplayResult
from ._activity_env import ActivityEnvironment
from ._cluster import Activities
from ._environment import SyncWorkflowEnvironment, WorkflowEnvironment

__all__ = ["Activities", "ActivityEnvironment", "History", "ReplayReport", "ReplayResult",
           "Replayer", "SyncWorkflowEnvironment", "WorkflowEnvironment"]
