"""Guard rails that keep one workflow's mistakes from its neighbours, without Ray:
the determinism guards and the quarantine of a run that keeps killing its host (whose
host deaths are stood in for by an abandoned host whose blackbox names the run)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from rayline import _serde
from rayline.errors import InvalidInputError, QuarantinedError
from rayline.messages import RunStatus
from rayline.storage import LocalStore, RunStore
from rayline.timeline import RunOptions

from . import flows
from .local import LocalBackend, make_host
from .test_failure_paths import run, until
from .test_host import request, value


@pytest.fixture
def runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


@pytest.mark.parametrize(("kind", "call", "replacement"), [
    ("random", "random.random()", "workflow.random()"),
    ("datetime", "datetime.now()", "workflow.now()"),
    ("time", "time.time()", "workflow.now()"),
    ("uuid", "uuid.uuid4()", "workflow.uuid4()"),
    ("open", "open()", "an activity"),
])
def test_a_call_that_breaks_replay_is_reported_and_fails_a_strict_run(
        runs: RunStore, kind: str, call: str, replacement: str) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.slips, kind, workflow_id="lax"))
        described = await host.describe("lax")
        assert value(await host.result("lax")) == kind  # warned, not failed
        assert len(described.slips) == 1
        assert call in described.slips[0] and replacement in described.slips[0]
        assert "flows.py:" in described.slips[0]  # where the workflow made the call

        await host.start(request(flows.slips, kind, workflow_id="strict",
                                 options=RunOptions(strict=True)))
        outcome = await host.result("strict")
        assert outcome.status is RunStatus.FAILED and outcome.failure is not None
        assert outcome.failure.type.endswith("NonDeterministicCallError")
        assert call in outcome.failure.message and replacement in outcome.failure.message

    run(main)


@pytest.mark.parametrize("kind", ["logging", "workflow"])
def test_logging_and_the_workflow_api_are_not_slips(runs: RunStore, kind: str) -> None:
    async def main() -> None:
        host = await make_host(runs)
        await host.start(request(flows.slips, kind, options=RunOptions(strict=True)))
        assert value(await host.result("wf")) == kind
        assert (await host.describe("wf")).slips == []

    run(main)


def test_guards_leave_code_outside_workflows_alone(runs: RunStore) -> None:
    async def main() -> None:
        await make_host(runs)  # installs the guards in this process
        now = datetime.datetime.now()  # no activation runs: nothing to report
        assert isinstance(now, datetime.datetime)
        assert isinstance(datetime.datetime(2026, 1, 1), datetime.datetime)
        assert type(datetime.datetime.fromisoformat("2026-01-01T00:00:00")).__name__ == \
            "datetime"

    run(main)


def _die_while_running(host: Any, workflow_id: str) -> None:
    """The host process dies with ``workflow_id``'s code on its stack."""
    host.blackbox.running(workflow_id)
    host.abandon()


def test_a_run_that_keeps_killing_its_host_is_quarantined_and_its_neighbours_live(
        runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        await host.start(request(flows.waits, None, workflow_id="poison"))
        for i in range(5):
            await host.start(request(flows.waits, None, workflow_id=f"n{i}"))
        await until(lambda: all(host.executions[f"n{i}"].pending() for i in range(5)))

        _die_while_running(host, "poison")  # first death: recovered, but last
        host = await make_host(runs, backend)
        assert "poison" in host.executions and "poison" not in host.stuck

        _die_while_running(host, "poison")  # second death in a row: quarantined
        host = await make_host(runs, backend)
        assert "poison" not in host.executions
        described = await host.describe("poison")
        assert described.state is RunStatus.QUARANTINED and "2 times" in (described.error or "")
        with pytest.raises(QuarantinedError, match="release"):
            await host.signal("poison", "go", _serde.encode(1))
        for i in range(5):  # the neighbours run on
            await host.signal(f"n{i}", "go", _serde.encode(i))
            assert value(await host.result(f"n{i}")) == i

        # stays quarantined across a clean restart, until released
        host.abandon()
        host = await make_host(runs, backend)
        assert (await host.describe("poison")).state is RunStatus.QUARANTINED
        await host.release("poison")
        await host.signal("poison", "go", _serde.encode("fixed"))
        assert value(await host.result("poison")) == "fixed"
        with pytest.raises(InvalidInputError, match="not quarantined"):
            await host.release("poison")

    run(main)


def test_deaths_count_only_in_a_row(runs: RunStore) -> None:
    async def main() -> None:
        backend = LocalBackend()
        host = await make_host(runs, backend)
        for workflow_id in ("a", "b"):
            await host.start(request(flows.waits, None, workflow_id=workflow_id))
        for suspect in ("a", "b", "a", "b"):  # never twice in a row
            _die_while_running(host, suspect)
            host = await make_host(runs, backend)
        assert not host.stuck and {"a", "b"} <= set(host.executions)

    run(main)


def test_datetimes_pickle_while_the_guards_stand_in_for_the_class() -> None:
    """A workflow's result, a continue-as-new argument or a query answer holding a
    datetime is pickled in the host, where ``datetime.datetime`` is the guard's class."""
    import datetime as dt
    import pickle

    import cloudpickle

    from rayline.core import guards

    guards.install()
    if not guards.ENABLED:
        pytest.skip("RAYLINE_GUARDS=0")
    assert dt.datetime is not guards._ORIGINAL_DATETIME  # the guard stands in
    value = {"at": dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc),
             "naive": dt.datetime(2026, 12, 1)}
    for dumps in (pickle.dumps, cloudpickle.dumps):
        back = pickle.loads(dumps(value))
        assert back == value and type(back["at"]) is guards._ORIGINAL_DATETIME
