"""Dedicated hosts on a real Ray: a workflow's own host process ends soon after its run
closes (without a ``retire_idle`` round), stays while the run is open, and comes back
when the workflow is called again."""

from __future__ import annotations

import os
import time

import psutil
import pytest
import ray

import rayline
from rayline import RetryPolicy
from rayline.actors._names import REGISTRY
from rayline.messages import RegistryStats

from . import wf
from .conftest import host_actor
from .test_foundation import wait_until

GONE_WITHIN = 60.0
"""Seconds a dedicated host with no run may take to exit (it lingers a few seconds)."""


def _pid(namespace: str, name: str) -> int:
    """The process id of host actor ``name``."""
    return int(ray.get(host_actor(namespace, name).__ray_call__.remote(
        lambda _: os.getpid()), timeout=30))


def _registered(namespace: str) -> list[str]:
    """The hosts the registry holds as started."""
    stats: RegistryStats = ray.get(host_actor(namespace, REGISTRY).stats.remote(), timeout=30)
    return stats.hosts


def _gone(namespace: str, name: str, pid: int) -> bool:
    """Whether host ``name`` has exited: Ray has no actor by that name, the registry has
    forgotten it and its process is over."""
    try:
        host_actor(namespace, name)
        return False
    except ValueError:
        pass
    return name not in _registered(namespace) and not psutil.pid_exists(pid)


def test_a_dedicated_host_exits_once_its_run_closes_and_the_workflow_still_answers(
        client: rayline.Client, namespace: str) -> None:
    assert "RAYLINE_RETIRE_EVERY" not in os.environ  # no retire_idle round meanwhile
    handle = client.workflow.start(wf.add_one, args=[1], workflow_id="solo", dedicated=True)
    assert handle.result(timeout=60) == 2
    name = handle.describe().host
    assert name.startswith("host-dedicated-")
    pid = _pid(namespace, name)
    wait_until(lambda: _gone(namespace, name, pid), GONE_WITHIN)
    # a call about the closed workflow starts its host again, which answers from storage
    assert handle.result(timeout=60) == 2
    back = _pid(namespace, name)
    assert back != pid
    described = handle.describe()
    assert (described.host, described.state, described.status) == (name, "completed", 0)
    exported = handle.export()
    assert exported.status == 0 and exported.data is not None
    again = client.workflow.get_handle("solo")  # a new handle finds it by the registry
    assert again.result(timeout=60) == 2
    assert again.describe().state == "completed"
    wait_until(lambda: _gone(namespace, name, back), GONE_WITHIN)  # and goes again


def test_a_parked_dedicated_workflow_keeps_its_host_and_a_late_signal_reaches_it(
        client: rayline.Client, namespace: str) -> None:
    handle = client.workflow.start(wf.wait_once, args=[None], workflow_id="patient",
                                   dedicated=True)
    name = handle.describe().host
    pid = _pid(namespace, name)

    def parked() -> bool:
        return any(s.host == name and s.parked == 1 for s in client.hosts())

    wait_until(parked)
    # well past the host's linger: it holds the parked run, so it stays
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        assert _pid(namespace, name) == pid and name in _registered(namespace)
        time.sleep(0.5)
    handle.signal("go", "at last")
    assert handle.result(timeout=60) == "at last"
    wait_until(lambda: _gone(namespace, name, pid), GONE_WITHIN)


@pytest.mark.soak  # the in-process host tests cover it in make test; this is Ray's
def test_a_continue_as_new_chain_keeps_its_dedicated_host(client: rayline.Client,
                                                          namespace: str) -> None:
    handle = client.workflow.start(wf.hops, args=[4, 1.5], workflow_id="hopper",
                                   dedicated=True)  # no parent: continues as new 4 times
    name = handle.describe().host
    pid = _pid(namespace, name)
    assert handle.result(timeout=90) == "landed"
    stats = {s.host: s for s in client.hosts()}[name]  # the same process ran each run
    assert (stats.started, stats.closed) == (5, {"continued": 4, "completed": 1})
    assert _pid(namespace, name) == pid
    wait_until(lambda: _gone(namespace, name, pid), GONE_WITHIN)


@pytest.mark.soak  # the in-process host tests cover it in make test; this is Ray's
def test_a_retry_backoff_keeps_its_dedicated_host(client: rayline.Client,
                                                  namespace: str) -> None:
    # the failed run waits out its backoff (longer than the host's linger) on its host
    handle = client.workflow.start(wf.fails_early_attempts, args=[1], workflow_id="retried",
                                   dedicated=True,
                                   retry=RetryPolicy(initial_interval=8, maximum_attempts=2))
    name = handle.describe().host
    pid = _pid(namespace, name)
    assert handle.result(timeout=90) == "done on attempt 2"
    stats = {s.host: s for s in client.hosts()}[name]
    assert (stats.started, stats.closed) == (2, {"continued": 1, "completed": 1})
    wait_until(lambda: _gone(namespace, name, pid), GONE_WITHIN)


@pytest.mark.soak  # the in-process host tests cover it in make test; this is Ray's
def test_a_reset_of_a_closed_dedicated_workflow_brings_its_host_back(
        client: rayline.Client, namespace: str, marks: str) -> None:
    handle = client.workflow.start(wf.five_numbered, args=[marks], workflow_id="fixme",
                                   dedicated=True)
    with pytest.raises(rayline.WorkflowFailedError, match="the bug in step 4"):
        handle.result(timeout=60)
    name = handle.describe().host
    pid = _pid(namespace, name)
    wait_until(lambda: _gone(namespace, name, pid), GONE_WITHIN)
    open(os.path.join(marks, "fixed"), "w").close()  # the fix
    handle.reset("last_failure", reason="fixed step 4")
    assert handle.result(timeout=60) == [10, 20, 30, 40, 50]
    assert handle.describe().host == name
    back = _pid(namespace, name)
    wait_until(lambda: _gone(namespace, name, back), GONE_WITHIN)

