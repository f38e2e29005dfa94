"""Speed figures beside ``make bench`` (outside it):

    python benchmarks/speed.py [--quick]

For each of fsync on and off (``RAYLINE_FSYNC``), and eager dispatch on and off
(``RAYLINE_EAGER``), a fresh local Ray measures W1 (start -> result, and ``execute()``:
both in one call), W3 (ms per step of 100 sequential activities), and W3 with 10 KB and
1 MB passed through each step. Then the cold start: a new Python process's ``ray.init``
alone, and ``ray.init`` + ``rayline.Client()`` + its first ``execute()`` result. Writes
``results/speed.json`` and ``results/speed.md``; ratios are within this run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(BENCH_DIR.parent), str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

SETTINGS = [("fsync on, eager on", "1", "1"), ("fsync on, eager off", "1", "0"),
            ("fsync off, eager on", "0", "1"), ("fsync off, eager off", "0", "0")]


def measure(quick: bool) -> dict[str, float]:
    """One setting's figures, in this process (its environment holds the setting)."""
    import bench_defs
    import ray

    import rayline

    runs, steps, big_steps = (30, 30, 5) if quick else (200, 100, 20)
    ray.init(include_dashboard=False, logging_level="ERROR")
    try:
        client = rayline.Client(storage=tempfile.mkdtemp(prefix="bench-speed-"),
                                namespace="speed")
        for _ in range(10):  # warm: the host, its worker processes, the code
            client.workflow.execute(bench_defs.one, args=[1])

        def p50(call: object) -> float:
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                call()  # type: ignore[operator]
                samples.append(time.perf_counter() - began)
            return round(statistics.median(samples) * 1000, 2)

        def per_step(n: int, *args: object, fn: object = bench_defs.steps) -> float:
            best = []
            for _ in range(2):
                began = time.perf_counter()
                client.workflow.execute(fn, args=[n, *args])
                best.append(time.perf_counter() - began)
            return round(min(best) * 1000 / n, 2)

        return {
            "W1 p50 ms": p50(lambda: client.workflow.start(bench_defs.one, args=[1]).result()),
            "W1 p50 ms, execute()": p50(lambda: client.workflow.execute(bench_defs.one,
                                                                         args=[1])),
            "W3 ms/step": per_step(steps),
            "W3 ms/step, 10 KB": per_step(steps, 10_000, fn=bench_defs.steps_carrying),
            "W3 ms/step, 1 MB": per_step(big_steps, 1_000_000, fn=bench_defs.steps_carrying),
        }
    finally:
        ray.shutdown()


COLD = """
import os, sys, tempfile, time
began = time.perf_counter()
import ray
ray.init(include_dashboard=False, logging_level="ERROR")
inited = time.perf_counter()
if sys.argv[1] == "rayline":
    import rayline, bench_defs
    client = rayline.Client(storage=tempfile.mkdtemp(prefix="bench-cold-"), namespace="cold")
    assert client.workflow.execute(bench_defs.one, args=[1]) == 2
print(inited - began, time.perf_counter() - began)
ray.shutdown()
"""


def cold_start(quick: bool) -> dict[str, float]:
    """Seconds from a new process to ``ray.init`` done, and to a first rayline result."""
    times: dict[str, list[float]] = {"ray.init": [], "first result": []}
    for _ in range(1 if quick else 3):
        for what in ("ray", "rayline"):
            out = subprocess.run([sys.executable, "-c", COLD, what], capture_output=True,
                                 text=True, timeout=300, check=True)
            inited, total = map(float, out.stdout.split()[-2:])
            times["ray.init" if what == "ray" else "first result"].append(
                inited if what == "ray" else total)
    return {key: round(statistics.median(values), 2) for key, values in times.items()}


def table(figures: dict[str, dict[str, float]], cold: dict[str, float], quick: bool) -> str:
    rows = list(next(iter(figures.values())))
    lines = [
        "# Speed: fsync, eager dispatch, payload sizes, cold start", "",
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}, {os.cpu_count()} "
        f"cores{' (--quick)' if quick else ''}. Each column is a fresh local Ray with that "
        "setting (`RAYLINE_FSYNC`, `RAYLINE_EAGER`); each activity runs on the host's warm "
        "runner (or, with none idle, as a Ray task). Times move with the machine: compare "
        "within this table.", "",
        "| figure | " + " | ".join(figures) + " |",
        "|---|" + "---|" * len(figures)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(str(f[row]) for f in figures.values()) + " |")
    lines += ["", "Cold start, a new Python process (median of runs): `ray.init` done in "
              f"{cold['ray.init']} s; `ray.init` + `rayline.Client()` + the first "
              f"`execute()` result in {cold['first result']} s "
              f"({cold['first result'] - cold['ray.init']:.2f} s for rayline: its registry "
              "and host actors start, and the host's first worker for the activity)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    if "--one" in sys.argv[1:]:  # a child: one setting, from its environment
        print(json.dumps(measure(quick)))
        return
    figures = {}
    for label, fsync, eager in SETTINGS:
        env = dict(os.environ, RAYLINE_FSYNC=fsync, RAYLINE_EAGER=eager)
        out = subprocess.run([sys.executable, __file__, "--one", *sys.argv[1:]], env=env,
                             capture_output=True, text=True, timeout=900, check=True)
        figures[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(label, figures[label], file=sys.stderr)
    cold = cold_start(quick)
    result = {"figures": figures, "cold_start_s": cold, "quick": quick,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "speed.md").write_text(table(figures, cold, quick))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
