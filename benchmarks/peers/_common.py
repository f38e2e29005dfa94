"""Helpers shared by every benchmark script: sizes, timing, percentiles, JSON output.

Standard library only, so that it imports in any engine's venv. Every script measures the
same workloads (each activity is ``add1(x) = x + 1``):

- W1 latency: a 1-activity workflow, start -> result, sequential runs after a warm-up.
- W2 throughput: many 1-activity workflows started concurrently; workflows/s from the
  first start to the last result.
- W3 step overhead: one workflow of sequential activities, timed after an untimed one;
  ms per step.
- W4 signal: a workflow blocked on a signal; time from signal() to result().
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Iterator

# How long to wait after starting a W4 workflow before signalling it, so that the
# signal finds the workflow blocked rather than buffered ahead of it.
SIGNAL_SETTLE_S = 0.2


@dataclass(frozen=True)
class Sizes:
    """How many runs each workload makes."""

    warmup: int
    w1_runs: int
    w2_workflows: int
    w3_steps: int
    w4_runs: int
    w5_workflows: int

    @classmethod
    def for_run(cls, quick: bool) -> "Sizes":
        """The full sizes (benchmarks/README.md), or small ones for a smoke run."""
        if quick:
            return cls(warmup=3, w1_runs=30, w2_workflows=100, w3_steps=30, w4_runs=10,
                       w5_workflows=200)
        return cls(warmup=10, w1_runs=200, w2_workflows=500, w3_steps=100, w4_runs=50,
                   w5_workflows=2000)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(samples_s: list[float]) -> dict[str, float]:
    """``{"p50_ms", "p99_ms"}`` from durations in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    return {"p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3)}


def per_second(count: int, elapsed_s: float) -> float:
    """A rate, rounded for reporting."""
    return round(count / elapsed_s, 2)


def ms_per(count: int, elapsed_s: float) -> float:
    """Milliseconds per item, rounded for reporting."""
    return round(elapsed_s * 1000.0 / count, 3)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by a call of ``fn`` after one untimed call (W3: the steady state)."""
    fn()
    return timed(fn)


async def warm_timed_async(fn: Callable[[], Awaitable[Any]]) -> float:
    """``warm_timed`` for a coroutine function."""
    await fn()
    return await timed_async(fn)


async def timed_async(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds taken by one await of ``fn()``."""
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def sample(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Durations of ``runs`` sequential calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(runs)]


async def sample_async(fn: Callable[[], Awaitable[Any]], runs: int,
                       warmup: int) -> list[float]:
    """Like :func:`sample`, for a coroutine function."""
    for _ in range(warmup):
        await fn()
    return [await timed_async(fn) for _ in range(runs)]


def one_line(error: BaseException) -> str:
    """A short reason for an error. Ray's remote errors carry the whole remote
    traceback in their message: take its last ``SomeError: ...`` line, else the
    message's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b", line)]
    detail = raised[-1] if raised else (lines[0] if lines else "")
    return f"{type(error).__name__}: {detail}"[:300]


def log(message: str) -> None:
    """Progress goes to stderr; stdout is kept for the result line."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_id() -> str:
    """A fresh workflow id."""
    return f"bench-{uuid.uuid4().hex}"


def check(value: Any, expected: Any) -> None:
    """Fail the workload if the engine returned a wrong result."""
    if value != expected:
        raise AssertionError(f"expected {expected!r}, got {value!r}")


@dataclass
class Report:
    """The one JSON object a benchmark script prints on its last stdout line."""

    engine: str
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def measure(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one workload; record its result under ``name``, or null and the error."""
        with self._recording(name):
            self.metrics[name] = fn()
        return self.metrics.get(name)

    async def measure_async(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Like :meth:`measure`, for a coroutine function."""
        with self._recording(name):
            self.metrics[name] = await fn()
        return self.metrics.get(name)

    @contextmanager
    def _recording(self, name: str) -> Iterator[None]:
        """Log a workload's progress to stderr; turn its exception into a null result."""
        log(f"[{self.engine}] {name} ...")
        try:
            yield
        except Exception as exc:  # a failed workload must not hide the others
            traceback.print_exc(file=sys.stderr)
            self.fail(name, exc)
        log(f"[{self.engine}] {name}: {self.metrics.get(name)}")

    def fail(self, name: str, error: BaseException | str) -> None:
        """Record ``name`` as failed (null) with a one-line reason."""
        self.metrics[name] = None
        reason = error if isinstance(error, str) else one_line(error)
        self.errors.append(f"{name}: {reason}")

    def as_dict(self) -> dict[str, Any]:
        """The flat JSON shape: engine, version, W1..Wn, errors."""
        data = asdict(self)
        return {"engine": data["engine"], "version": data["version"],
                **data["metrics"], "errors": data["errors"]}

    def emit(self) -> None:
        """Print the report as one JSON line on stdout."""
        print(json.dumps(self.as_dict()), flush=True)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop exactly the process we started: terminate, then kill if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def export_pythonpath(*dirs: str) -> None:
    """Prepend ``dirs`` to ``PYTHONPATH`` so Ray workers (which inherit the driver's
    environment) can import the benchmark modules by name."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [d for d in dirs if d not in current] + current)
