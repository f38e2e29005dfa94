"""DBOS Transact on W1-W4: in-process, with its system database in SQLite.

Runs with the ``dbos`` venv's python. On SQLite a waiting ``DBOS.recv`` is woken by
polling every ``notification_listener_polling_interval_sec``, so W4 is measured twice:
at the default interval (``W4``) and at 10 ms (``W4_10ms_poll``), each on a fresh launch.

    python benchmarks/peers/dbos_bench.py [--quick]   # last stdout line is JSON
"""
from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import version
from typing import Iterator

from _common import (
    SIGNAL_SETTLE_S,
    Report,
    Sizes,
    check,
    latency_ms,
    ms_per,
    new_id,
    per_second,
    sample,
    warm_timed,
)
from dbos import DBOS, SetWorkflowID


@DBOS.step()
def add1(x: int) -> int:
    """The one activity of every workload."""
    return x + 1


@DBOS.workflow()
def one(x: int) -> int:
    """W1/W2: one step."""
    return add1(x)


@DBOS.workflow()
def steps(n: int) -> int:
    """W3: ``n`` sequential steps."""
    x = 0
    for _ in range(n):
        x = add1(x)
    return x


@DBOS.workflow()
def wait_signal() -> int:
    """W4: blocks until a message on topic ``go``, returns it."""
    return DBOS.recv("go", timeout_seconds=60)


@contextmanager
def launched(db_path: str, polling_interval_s: float | None = None) -> Iterator[None]:
    """A launched DBOS on the SQLite file ``db_path``; destroyed on exit."""
    config = {"name": "bench", "system_database_url": f"sqlite:///{db_path}",
              "log_level": "WARNING"}
    if polling_interval_s is not None:
        config["notification_listener_polling_interval_sec"] = polling_interval_s
    DBOS(config=config)
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy()


def w1(sizes: Sizes) -> dict:
    """Start a 1-step workflow and wait for its result, sequentially."""
    return latency_ms(sample(lambda: check(DBOS.start_workflow(one, 1).get_result(), 2),
                             sizes.w1_runs, sizes.warmup))


def w2(sizes: Sizes) -> dict:
    """Start every 1-step workflow at once, then wait for all results."""
    n = sizes.w2_workflows
    start = time.perf_counter()
    handles = [DBOS.start_workflow(one, i) for i in range(n)]
    check([h.get_result() for h in handles], [i + 1 for i in range(n)])
    return {"wf_per_s": per_second(n, time.perf_counter() - start)}


def w3(sizes: Sizes) -> dict:
    """One workflow of sequential steps."""
    def run() -> None:
        check(DBOS.start_workflow(steps, sizes.w3_steps).get_result(), sizes.w3_steps)
    return {"ms_per_step": ms_per(sizes.w3_steps, warm_timed(run))}


def w4(sizes: Sizes) -> dict:
    """Send to a workflow blocked on ``recv``, then wait for its result."""
    def one_signal() -> float:
        wf_id = new_id()
        with SetWorkflowID(wf_id):
            handle = DBOS.start_workflow(wait_signal)
        time.sleep(SIGNAL_SETTLE_S)
        start = time.perf_counter()
        DBOS.send(wf_id, 1, "go")
        check(handle.get_result(), 1)
        return time.perf_counter() - start
    return latency_ms([one_signal() for _ in range(sizes.w4_runs)])


def main(sizes: Sizes) -> Report:
    """W1-W4 at the default polling interval, then W4 again at 10 ms."""
    report = Report("dbos", f"dbos {version('dbos')}")
    with tempfile.TemporaryDirectory(prefix="bench-dbos-") as workdir:
        db_path = f"{workdir}/dbos.sqlite"
        with launched(db_path):
            report.measure("W1", lambda: w1(sizes))
            report.measure("W2", lambda: w2(sizes))
            report.measure("W3", lambda: w3(sizes))
            report.measure("W4", lambda: w4(sizes))
        with launched(db_path, polling_interval_s=0.01):
            report.measure("W4_10ms_poll", lambda: w4(sizes))
    return report


if __name__ == "__main__":
    main(Sizes.for_run("--quick" in sys.argv[1:])).emit()
