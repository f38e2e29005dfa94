"""Heartbeats: an attempt that stops heartbeating past its ``heartbeat_timeout`` is
stopped and retried with the last details; ``describe()`` shows the details; a
heartbeat of an attempt the host no longer runs is told it is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rayline import _serde
from rayline._activity import ActivityInfo
from rayline.storage import LocalStore, RunStore

from . import flows
from .local import LocalBackend, make_host
from .test_host import request, run, until


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def test_a_silent_attempt_is_retried_with_its_last_heartbeat_details(runs: RunStore) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.resumes_from_heartbeat))
        outcome = await host.result("wf")
        assert _serde.decode(outcome.result) == [2, 3]
        assert host.beats == {}  # nothing kept once the call is over

    run(main)


def test_describe_shows_heartbeats_and_a_cancel_reaches_the_activity(
        runs: RunStore) -> None:
    async def main() -> None:
        flows.HEEDED.clear()
        host = await make_host(runs)
        await host.start(request(flows.runs_heartbeating))

        def beating() -> bool:
            pending = host._with_beats("wf", host.executions["wf"].pending())
            return any(work.heartbeat_details == "working" for work in pending)

        await until(beating)
        work = (await host.describe("wf")).pending[0]
        assert (work.kind, work.attempt, work.heartbeat_details) == ("activity", 1, "working")
        assert work.heartbeat_age is not None and work.heartbeat_age >= 0
        attempt = host.beats[("wf", work.seq)].info
        await host.cancel("wf")
        await until(lambda: flows.HEEDED == ["cancelled"])
        assert host.heartbeat(attempt, "late") is True  # that attempt is over
        stranger = ActivityInfo("nobody", "r", "a", 1, 1, host=host.host_name)
        assert host.heartbeat(stranger) is True
        await asyncio.sleep(0)

    run(main)


class QueuedBackend(LocalBackend):
    """Activities wait ``delay`` seconds before they run, as a Ray task waits for the
    resources it asked for."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def run_attempt(self, *args: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().run_attempt(*args)


def test_time_spent_waiting_to_run_is_not_silence(runs: RunStore) -> None:
    async def main() -> None:
        backend = QueuedBackend(delay=1.0)  # three heartbeat timeouts in the queue
        host = await make_host(runs, backend)
        await host.start(request(flows.runs_watched_quick))
        outcome = await host.result("wf")
        assert _serde.decode(outcome.result) == "ran"
        assert [attempt for _, _, attempt in backend.executions] == [1]

    run(main)
