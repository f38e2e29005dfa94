"""The fault matrix: every storage call on the host's path, failed every way, must leave
every workflow with its right result, every acknowledged signal consumed exactly once,
and no workflow waiting.

Cells are (path, kind, scenario). A path is an operation (see ``faults.classify``), the
host mode (live, parking, crash and recovery) and the point where one fault is armed
(see ``Path``); a kind is how the call fails (see ``faults``); a scenario is a workflow
(see ``fault_flows``). A client starts, signals (retrying a failed signal with the same
request id) and waits for results the way a real one does; every wait is bounded and a
cell that hangs fails naming where.

    pytest -q tests/unit/test_fault_matrix.py               # matrix + bounded random
    pytest -q tests/unit/test_fault_matrix.py -m soak       # the longer randomized soak
    RAYLINE_SOAK_SEEDS=500 pytest -q tests/unit/test_fault_matrix.py -m soak
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import pytest

from rayline import _serde
from rayline._code import CodeRef
from rayline.engine.host import Host
from rayline.errors import (
    DuplicateWorkflowError,
    InvalidInputError,
    RaylineError,
    StorageError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from rayline.messages import RunOutcome, StartRequest
from rayline.storage import LocalStore, MemoryStore, RunStore, Store

from . import fault_flows
from .faults import KINDS, OPS, EndpointConnectionError, FaultyStore, classify
from .local import LocalBackend, make_host

NAMESPACE = "test"
HOST = "h0"
RESULT_TIMEOUT = float(os.environ.get("RAYLINE_FAULT_TIMEOUT", "30"))
CALL_TIMEOUT = min(10.0, RESULT_TIMEOUT)  # one start or signal call; a hung call fails
WAIT_TIMEOUT = min(10.0, RESULT_TIMEOUT)  # reaching a point the test waits for
ATTEMPTS = 8  # client retries of one start, signal or result
TIMES = int(os.environ.get("RAYLINE_FAULT_TIMES", "1"))  # consecutive failures per cell
PAUSE = 0.01  # each durable timer of a workflow
PARK_AFTER = 0.02  # with parking: idle runs are parked after this
PARKED_PAUSE = 0.1  # with parking: timers long enough for their runs to park


# ------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    """A workflow to start, whom to signal and how often, and what it must return."""

    name: str
    flow: Any
    args: tuple[Any, ...]
    signals: int
    expected: Callable[[list[str]], Any]
    kid: bool = False  # the signals go to the child ``<id>-kid``

    def target(self, workflow_id: str) -> str:
        return f"{workflow_id}-kid" if self.kid else workflow_id


SCENARIOS = {
    s.name: s for s in (
        Scenario("signals", fault_flows.signals_flow, (10,), 2,
                 lambda d: [11, d[0], d[1], 12]),
        Scenario("child", fault_flows.parent_flow, (10,), 1,
                 lambda d: [11, [12, d[0]]], kid=True),
        Scenario("continue", fault_flows.counter_flow, (2, 0), 1,
                 lambda d: [3, d[0]]),
    )
}


@dataclass(frozen=True)
class Path:
    """An operation, the host mode it runs in, and where its fault is armed."""

    name: str
    op: str
    mode: str  # live (no parking), park (park_after small), crash (crash, then a fresh host)
    arm: str  # start: before the client's start; nested: once it returned (the child's or
    #           the next run's start); parked: once a run parked (its timer wakes it);
    #           waiting: once every workflow waits for its signal (in crash mode: the
    #           old host is gone, the fresh one not yet started)
    scenarios: tuple[str, ...] = ("signals", "child", "continue")


PATHS = (
    Path("create_run-start", "create_run", "live", "start"),
    Path("create_run-nested", "create_run", "live", "nested", ("child", "continue")),
    Path("open_marker-start", "open_marker", "live", "start"),
    Path("open_marker-nested", "open_marker", "live", "nested", ("child", "continue")),
    Path("append-live", "append", "live", "start"),
    Path("append-signal", "append", "live", "waiting"),  # the batch holding a signal
    Path("clear-close", "clear", "live", "start"),
    Path("list-start", "list", "live", "start"),  # early signals of a new run
    # a child's start lists its id's early signals; the next run of a continue-as-new
    # does not (signals buffered before an id had a run are for its first run only)
    Path("list-nested", "list", "live", "nested", ("child",)),
    Path("park_hint-park", "park_hint", "park", "start"),
    Path("read-wake", "read", "park", "parked"),  # waking replays the timeline
    Path("list-wake", "list", "park", "parked"),
    Path("open_marker-wake", "open_marker", "park", "parked"),  # a woken run's plain marker
    Path("list-recovery", "list", "crash", "waiting"),  # open markers, then timelines
    Path("read-recovery", "read", "crash", "waiting"),
    Path("clear-recovery", "clear", "crash", "waiting"),  # closing recovered runs
)
assert {p.op for p in PATHS} == set(OPS)


# -------------------------------------------------------------------- driving


class CellFailure(AssertionError):
    pass


@dataclass
class Signal:
    data: str
    request_id: str
    acked: bool = False
    error: str = ""  # why the client gave up on it


@dataclass
class Flow:
    """One workflow of a cell, as the client sees it."""

    scenario: Scenario
    workflow_id: str
    signals: list[Signal] = field(default_factory=list)
    outcome: RunOutcome | None = None
    kid_outcome: RunOutcome | None = None

    @property
    def target(self) -> str:
        return self.scenario.target(self.workflow_id)


async def until(predicate: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> bool:
    """Polls ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def described(exc: BaseException) -> str:
    return f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}: {str(exc)[:90]}"


def crash(host: Host) -> None:
    """What a dead process leaves: storage only."""
    host.abandon()


class Driver:
    """A client and the host(s) of one cell, over a ``FaultyStore``."""

    def __init__(self, label: str, store: FaultyStore, park_after: float | None,
                 pause: float) -> None:
        self.label = label
        self.pause = pause
        self.store = store
        self.runs = RunStore(store, NAMESPACE)
        self.park_after = park_after
        self.host: Host | None = None
        self.seen: list[str] = []  # errors the client saw (and retried or gave up on)
        self.failures: list[str] = []
        self.phase = "boot"

    def fail(self, tag: str, detail: str) -> None:
        self.failures.append(f"{tag}: {detail}")

    async def boot(self) -> Host:
        """A host named ``h0`` over the store; a failed recovery is kept, as a host
        actor keeps serving after its recovery task raised."""
        backend = LocalBackend()
        try:
            self.host = await make_host(self.runs, backend, HOST, park_after=self.park_after)
        except Exception as exc:
            self.seen.append(f"recover() raised {described(exc)}")
            self.host = backend.hosts[HOST]
        return self.host

    def request(self, flow: Flow) -> StartRequest:
        fn = flow.scenario.flow
        return StartRequest(
            workflow_id=flow.workflow_id, workflow_name=fn.name, code=CodeRef.of(fn),
            args=_serde.encode_args((*flow.scenario.args, self.pause), what="test"),
            task_queue="default")

    async def _attempts(self, what: str, call: Callable[[], Awaitable[Any]],
                        stop: tuple[type[BaseException], ...]) -> tuple[bool, Any]:
        """Calls until it returns (True, value), a ``stop`` error (False, error) or
        ``ATTEMPTS`` failures; a call that hangs fails the cell."""
        error: BaseException | None = None
        for attempt in range(ATTEMPTS):
            self.phase = f"{what} (attempt {attempt + 1})"
            try:
                return True, await asyncio.wait_for(call(), CALL_TIMEOUT)
            except asyncio.TimeoutError:
                raise CellFailure(f"HANG({what}): no answer in {CALL_TIMEOUT:.0f}s") from None
            except stop as exc:
                return False, exc
            except Exception as exc:
                error = exc
                self.seen.append(f"{what}: {described(exc)}")
                await asyncio.sleep(min(0.05 * 2 ** attempt, 0.5))
        return False, error

    async def start(self, flow: Flow) -> None:
        """Starts ``flow``; a failed start is sent again (a duplicate then means that an
        earlier attempt landed)."""
        host = self.host
        assert host is not None
        first = True

        async def call() -> Any:
            nonlocal first
            try:
                return await host.start(self.request(flow))
            except DuplicateWorkflowError:
                if first:
                    raise
                self.seen.append(f"start {flow.workflow_id}: duplicate on a retry")
                return None
            finally:
                first = False

        ok, error = await self._attempts(f"start {flow.workflow_id}", call,
                                         (InvalidInputError, DuplicateWorkflowError))
        if not ok:
            raise CellFailure(f"START_FAILED({flow.workflow_id}): {described(error)}")

    async def signal(self, flow: Flow, index: int) -> None:
        """Sends one logical signal to ``flow``'s target, retried with its request id."""
        host = self.host
        assert host is not None
        sig = Signal(f"{flow.workflow_id}-s{index}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex)
        flow.signals.append(sig)
        payload = _serde.encode(sig.data)

        async def call() -> Any:
            return await host.signal(flow.target, "sig", payload, None, sig.request_id, False)

        sig.acked, error = await self._attempts(
            f"signal {index} to {flow.target}", call,
            (WorkflowClosedError, WorkflowNotFoundError, InvalidInputError))
        if not sig.acked:
            sig.error = f"signal {index} to {flow.target}: {described(error)}"

    async def result(self, workflow_id: str) -> dict[str, Any] | None:
        """The outcome, retrying errors, all under ``RESULT_TIMEOUT``."""
        host = self.host
        assert host is not None
        deadline = time.monotonic() + RESULT_TIMEOUT
        error: BaseException | None = None
        for attempt in range(ATTEMPTS):
            self.phase = f"result {workflow_id} (attempt {attempt + 1})"
            try:
                return await asyncio.wait_for(host.result(workflow_id),
                                              max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.fail("HANG(result)", f"{workflow_id} not done in {RESULT_TIMEOUT:.0f}s")
                return None
            except Exception as exc:
                error = exc
                self.seen.append(f"result {workflow_id}: {described(exc)}")
                await asyncio.sleep(min(0.05 * 2 ** attempt, 0.5))
        self.fail("RESULT_ERROR", f"{workflow_id}: {described(error)}" if error else workflow_id)
        return None

    # ---------------------------------------------------------------- points

    def waiting(self, flows: list[Flow], parked: bool | None) -> bool:
        """Every target waits for its signal and nothing else is in flight; ``parked``:
        parked (True), in memory (False), either (None)."""
        host = self.host
        assert host is not None
        if not all(a.parkable() for a in host.executions.values()):
            return False
        for flow in flows:
            in_lot = host.parking.parked.get(flow.target) == math.inf
            actor = host.executions.get(flow.target)
            live = actor is not None and any(p.kind == "wait" for p in actor.pending())
            if parked is True and not (in_lot and not host.executions):
                return False
            if parked is False and not live:
                return False
            if parked is None and not (in_lot or live):
                return False
        return True

    def settled(self, flow: Flow) -> bool:
        """``flow``'s workflow closed for good (not continued into a next run)."""
        host = self.host
        assert host is not None
        workflow_id = flow.workflow_id
        actor = host._finished.get(workflow_id)
        if workflow_id in host.executions or workflow_id in host.parking or actor is None \
                or actor.outcome is None:
            return False
        if actor.outcome.status != "continued":
            return True
        successor = host._continuing.get(workflow_id)
        return successor is not None and successor.done()  # the next run could not start

    async def reach_waiting(self, flows: list[Flow], parked: bool | None) -> None:
        """Waits until every target waits for its signal; a workflow that closed before
        that fails the cell with its outcome."""
        self.phase = "waiting for the signal waits"
        if not await until(lambda: self.waiting(flows, parked)
                           or any(self.settled(f) for f in flows)):
            raise CellFailure("HANG(before signals): never all waiting for a signal "
                              f"{self.state(flows)}")
        early = [f for f in flows if self.settled(f)]
        for flow in early:
            flow.outcome = await self.result(flow.workflow_id)
            self.check(flow)
        if early:
            raise CellFailure(f"CLOSED_EARLY: {[f.workflow_id for f in early]} closed before "
                              f"waiting for a signal {self.state(flows)}")

    def state(self, flows: list[Flow]) -> dict[str, str]:
        """Where each workflow of ``flows`` is, for a failure message."""
        host = self.host
        assert host is not None
        out = {}
        for flow in flows:
            for workflow_id in dict.fromkeys([flow.workflow_id, flow.target]):
                actor = host.executions.get(workflow_id)
                if workflow_id in host.parking.parked:
                    due = host.parking.parked[workflow_id] - host.now()
                    out[workflow_id] = f"parked (due in {due:.2f}s)"
                elif actor is not None:
                    out[workflow_id] = f"live {[p['kind'] for p in actor.pending()]}" + (
                        " fenced" if actor.fenced else "")
                elif workflow_id in getattr(host, "stuck", {}):
                    out[workflow_id] = "stuck"
                else:
                    out[workflow_id] = "closed" if workflow_id in host._finished else "absent"
        return out

    # ---------------------------------------------------------------- checks

    def check(self, flow: Flow) -> None:
        """Right result; acknowledged signals consumed once, in the result and stored."""
        datas = [s.data for s in flow.signals]
        if flow.outcome is not None:
            failure = flow.outcome.failure
            if flow.outcome.status != "completed" or flow.outcome.result is None:
                self.fail("WRONG_RESULT", f"{flow.workflow_id} {flow.outcome.status}: "
                          f"{failure and failure.type}: {str(failure and failure.message)[:160]}")
            else:
                got = _serde.decode(flow.outcome.result)
                want = flow.scenario.expected(datas)
                if got != want:
                    self.fail("WRONG_RESULT", f"{flow.workflow_id}: {got!r} != {want!r}")
                for sig in flow.signals:
                    n = occurrences(got, sig.data)
                    if n > 1 or (sig.acked and n != 1):
                        self.fail("SIGNAL_IN_RESULT", f"{sig.data} appears {n} times")
        clean = RunStore(self.store.inner, NAMESPACE)
        try:
            stored = stored_signals(clean, flow.target)
        except Exception as exc:
            self.fail("UNREADABLE", f"timeline of {flow.target}: {described(exc)}")
            return
        for sig in flow.signals:
            n = stored.count(sig.request_id)
            if n > 1:
                self.fail("DUP_SIGNAL", f"{sig.data} stored {n} times in {flow.target}")
            elif sig.acked and n != 1:
                self.fail("LOST_SIGNAL", f"acknowledged {sig.data} stored {n} times")
            elif not sig.acked and n == 1:
                self.fail("ACK_LOST", f"delivered, but the client gave up: {sig.error}")
            elif not sig.acked:
                self.fail("NOT_ACKED", sig.error)

    def report(self, caplog: pytest.LogCaptureFixture | None) -> str:
        fired = ", ".join(f"{f.op}/{f.kind}" for f in self.store.fired[:12]) or "none"
        lines = [f"CELL {self.label}: " + "; ".join(self.failures),
                 f"  faults fired: {fired}"]
        if self.seen:
            lines.append("  client saw: " + " | ".join(dict.fromkeys(self.seen))[:900])
        if caplog is not None:
            logged = dict.fromkeys(
                f"{r.name}: {r.getMessage()[:110]}"
                + (f" [{described(r.exc_info[1])}]" if r.exc_info and r.exc_info[1] else "")
                for r in caplog.records
                if r.levelno >= logging.ERROR and r.name.startswith(("rayline", "asyncio")))
            if logged:
                lines.append("  logged: " + " | ".join(list(logged)[:6]))
        return "\n".join(lines)


def occurrences(value: Any, needle: str) -> int:
    if isinstance(value, (list, tuple)):
        return sum(occurrences(v, needle) for v in value)
    return int(value == needle)


def stored_signals(runs: RunStore, workflow_id: str) -> list[str]:
    """The request ids of the signals stored in every run of ``workflow_id``."""
    ids = []
    for epoch in runs.epochs(workflow_id):
        _, batches = runs.load(workflow_id, epoch)
        ids += [e.request_id for b in batches for e in b.events
                if e.type == "signal_received" and e.request_id is not None]
    return ids


def make_store(kind: str, tmp_path: Any) -> FaultyStore:
    inner: Store = (LocalStore(str(tmp_path / "store"), fsync=False) if kind == "local"
                    else MemoryStore(f"faults-{uuid.uuid4().hex}"))
    return FaultyStore(inner)


async def finish(driver: Driver, flows: list[Flow]) -> None:
    """Signals every flow (in order within one flow), then collects every result."""
    await asyncio.gather(*(signal_all(driver, flow) for flow in flows))
    for flow in flows:
        flow.outcome = await driver.result(flow.workflow_id)
        if flow.scenario.kid:
            flow.kid_outcome = await driver.result(flow.target)
    host = driver.host
    assert host is not None
    await until(lambda: not host._background)  # work after a close (clearing its marker)
    for flow in flows:
        driver.check(flow)


async def signal_all(driver: Driver, flow: Flow) -> None:
    for index in range(flow.scenario.signals):
        await driver.signal(flow, index)


def run_cell(driver: Driver, body: Callable[[], Awaitable[None]],
             caplog: pytest.LogCaptureFixture | None) -> None:
    """Runs ``body`` on a fresh event loop; fails with the cell's report."""
    async def main() -> None:
        try:
            await body()
        except CellFailure as exc:
            driver.failures.append(str(exc))

    asyncio.run(main())
    driver.host = None
    gc.collect()  # asyncio logs here the tasks whose exceptions nobody retrieved
    if driver.failures:
        pytest.fail(driver.report(caplog), pytrace=False)


# --------------------------------------------------------------------- matrix


CELLS = [pytest.param(path, kind, scenario, id=f"{path.name}-{kind}-{scenario}")
         for path in PATHS for kind in KINDS for scenario in path.scenarios]


@pytest.mark.parametrize(("path", "kind", "scenario"), CELLS)
def test_fault_matrix(path: Path, kind: str, scenario: str, tmp_path: Any,
                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    store = make_store("local" if path.mode == "crash" else "memory", tmp_path)
    parks = path.mode == "park"
    driver = Driver(f"{path.name}-{kind}-{scenario}", store, PARK_AFTER if parks else None,
                    PARKED_PAUSE if parks else PAUSE)
    flow = Flow(SCENARIOS[scenario], scenario)

    async def body() -> None:
        await driver.boot()
        if path.arm == "start":
            store.inject(path.op, kind, TIMES)
        await driver.start(flow)
        if path.arm == "nested":
            store.inject(path.op, kind, TIMES)
        if path.arm == "parked":
            host = driver.host
            assert host is not None
            if not await until(lambda: bool(host.parking.parked)):
                raise CellFailure("NEVER_PARKED: no run parked (broken cell)")
            store.inject(path.op, kind, TIMES)
        await driver.reach_waiting([flow], parked=path.mode == "park")
        if path.mode == "crash":
            assert driver.host is not None
            crash(driver.host)
        if path.arm == "waiting":
            store.inject(path.op, kind, TIMES)
        if path.mode == "crash":
            await driver.boot()
        await finish(driver, [flow])
        store.disarm()
        if store.fired_count(path.op, kind) < 1:
            driver.fail("NOT_FIRED", f"the {kind} fault on {path.op} never fired (broken cell)")

    run_cell(driver, body, caplog)


# ------------------------------------------------------------------ randomized


def randomized(seed: int, workflows: int, max_faults: int, rate: float, tmp_path: Any,
               caplog: pytest.LogCaptureFixture | None, parks: bool | None = None,
               crashes: bool | None = None) -> None:
    """Several workflows of every scenario under random faults on every operation and
    kind (at most ``max_faults``); parking and a crash as given, else chosen by ``seed``."""
    rng = random.Random(seed)
    parks = rng.random() < 0.5 if parks is None else parks
    crashes = rng.random() < 0.5 if crashes is None else crashes
    store = make_store(rng.choice(["memory", "local"]), tmp_path)
    driver = Driver(f"random seed={seed} parks={parks} crashes={crashes}", store,
                    PARK_AFTER if parks else None, PARKED_PAUSE if parks else PAUSE)
    names = sorted(SCENARIOS)
    flows = []
    for i in range(workflows):
        scenario = SCENARIOS[rng.choice(names)]
        flows.append(Flow(scenario, f"{scenario.name}-w{i}"))

    async def body() -> None:
        store.randomize(seed, rate, KINDS, OPS, max_faults)
        await driver.boot()
        await asyncio.gather(*(driver.start(flow) for flow in flows))
        await driver.reach_waiting(flows, parked=None)
        if crashes:
            assert driver.host is not None
            crash(driver.host)
            await driver.boot()
        await finish(driver, flows)
        store.disarm()

    run_cell(driver, body, caplog)


@pytest.mark.chaos
@pytest.mark.parametrize(("seed", "parks", "crashes"),
                         [(1, False, False), (2, True, False), (3, False, True), (4, True, True)])
def test_random_faults_bounded(seed: int, parks: bool, crashes: bool, tmp_path: Any,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    randomized(seed, 6, max_faults=20, rate=0.08, tmp_path=tmp_path, caplog=caplog,
               parks=parks, crashes=crashes)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 100 + int(os.environ.get("RAYLINE_SOAK_SEEDS", "60"))))
def test_random_faults_soak(seed: int, tmp_path: Any, caplog: pytest.LogCaptureFixture,
                            request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a soak: run it with -m soak")
    caplog.set_level(logging.WARNING)
    randomized(seed, 24, max_faults=60, rate=0.1, tmp_path=tmp_path, caplog=caplog)


def test_the_faulty_store_classifies_and_counts() -> None:
    """The hook itself: each operation is recognised and each kind behaves as named."""
    store = FaultyStore(MemoryStore(f"faults-{uuid.uuid4().hex}"))
    marker, hint = b'{"id": "w", "parked_until": null}', b'{"id": "w", "parked_until": 12.0}'
    assert [classify("put", k, d) for k, d in [
        ("ns/wf/w/runs/00000001", b""), ("ns/wf/w/t/00000001/00000002", b""),
        ("ns/open/h0/w", marker), ("ns/open/h0/w", hint), ("ns/early/w/1", b"")]] == \
        ["create_run", "append", "open_marker", "park_hint", "early"]
    assert classify("delete", "ns/open/h0/w") == "clear"
    assert classify("delete", "ns/early/w/1") == "delete"
    store.inject("park_hint", "landed")
    with pytest.raises(StorageError):
        store.put("ns/open/h0/w", hint)
    assert store.get("ns/open/h0/w") == hint  # it landed
    store.inject("read", "os_error")
    with pytest.raises(OSError):
        store.get("ns/open/h0/w")
    store.inject("clear", "foreign")
    with pytest.raises(EndpointConnectionError):
        store.delete("ns/open/h0/w")
    assert not issubclass(EndpointConnectionError, (OSError, RaylineError))
    store.inject("list", "slow")
    store.inject("open_marker", "storage_error")
    assert store.list("ns/open/h0") == ["w"]
    store.put("ns/wf/w/t/00000001/00000002", b"x")  # not the armed operation
    with pytest.raises(StorageError):
        store.put("ns/open/h0/w", marker)
    assert store.get("ns/open/h0/w") == hint  # it did not land
    assert store.injected == {("park_hint", "landed"): 1, ("read", "os_error"): 1,
                              ("clear", "foreign"): 1, ("list", "slow"): 1,
                              ("open_marker", "storage_error"): 1}
