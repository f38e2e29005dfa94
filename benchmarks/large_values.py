"""Passing a large numpy array from one activity to the next, against plain Ray tasks
passing the same ``ObjectRef`` (docs/ml-pipelines.md, "Large data").

    python benchmarks/large_values.py [--megabytes 200] [--repeats 3]

In one local Ray (``num_cpus=2``), each repeat times, end to end:

- ``ray``: ``summarise.remote(make_array.remote(mb))`` and its ``ray.get``: the array
  is made by one task and read by the next through Ray's object store;
- ``rayline``: a workflow whose first activity makes the array and second reads it
  (``client.workflow.execute``): rayline also keeps the array once in storage (local
  files, fsync'd) and records its reference;
- ``make``: ``make_array.remote(mb)`` alone, to show what the array's making costs.

The median of the repeats goes to ``benchmarks/results/large_values.{json,md}``; the
last stdout line is the JSON. The workflow's timeline size and the objects in storage
are reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray

import rayline
from rayline import workflow

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _make_array(megabytes: int) -> Any:
    import numpy

    return numpy.arange(megabytes * 2**20 // 8, dtype=numpy.float64)


def _summarise(array: Any) -> float:
    return float(array[-1])


# the same two functions, as plain Ray tasks and as rayline activities
make_array, summarise = ray.remote(_make_array), ray.remote(_summarise)
make_array_activity = rayline.activity(_make_array)
summarise_activity = rayline.activity(_summarise)


@rayline.workflow
async def pass_array(megabytes: int) -> float:
    array = await workflow.execute_activity(make_array_activity, megabytes)
    return await workflow.execute_activity(summarise_activity, array)  # type: ignore[no-any-return]


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _check(found: float, expected: float) -> None:
    if found != expected:
        raise SystemExit(f"wrong result: {found} != {expected}")


def _sizes(storage: str) -> tuple[int, int]:
    objects = timelines = 0
    for folder, _, files in os.walk(storage):
        for name in files:
            path = os.path.join(folder, name)
            if f"{os.sep}objects{os.sep}" in path:
                objects += 1
            elif f"{os.sep}wf{os.sep}" in path:
                timelines += os.path.getsize(path)
    return objects, timelines


def measure(megabytes: int, repeats: int) -> dict[str, Any]:
    expected = float(megabytes * 2**20 // 8 - 1)
    ray.init(num_cpus=2, logging_level="WARNING", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    times: dict[str, list[float]] = {"ray": [], "rayline": [], "make": []}
    with tempfile.TemporaryDirectory() as storage:
        client = rayline.Client(storage=storage, namespace="large")
        client.workflow.execute(pass_array, args=[1], workflow_id="warm-up")
        ray.get(summarise.remote(make_array.remote(1)))
        for i in range(repeats):
            times["make"].append(_timed(lambda: ray.get(make_array.remote(megabytes))))
            times["ray"].append(_timed(lambda: _check(ray.get(
                summarise.remote(make_array.remote(megabytes))), expected)))
            times["rayline"].append(_timed(lambda run_id=f"run-{i}": _check(
                client.workflow.execute(pass_array, args=[megabytes], workflow_id=run_id),
                expected)))
        objects, timeline_bytes = _sizes(storage)
        client.close()
    ray.shutdown()
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "megabytes": megabytes, "repeats": repeats,
        "seconds": {key: round(value, 3) for key, value in median.items()},
        "rayline_over_ray": round(median["rayline"] / median["ray"], 2),
        "objects_in_storage": objects,
        "timeline_bytes_per_run": timeline_bytes // (repeats + 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__},
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(found: dict[str, Any]) -> str:
    s = found["seconds"]
    return "\n".join([
        f"# A {found['megabytes']} MB array from one activity to the next",
        "",
        f"Median of {found['repeats']} runs, {found['when']}, {found['machine']['cpus']} "
        f"CPUs, Ray {found['machine']['ray']}.",
        "",
        "| | seconds |",
        "|---|---|",
        f"| plain Ray: task -> ObjectRef -> task | {s['ray']} |",
        f"| rayline: activity -> activity (stored once, by reference) | {s['rayline']} |",
        f"| making the array alone (one Ray task) | {s['make']} |",
        "",
        f"rayline / plain Ray: **{found['rayline_over_ray']}x**. Objects in storage after "
        f"all runs: {found['objects_in_storage']} (the same array each time); timeline "
        f"bytes per run: {found['timeline_bytes_per_run']}.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    found = measure(args.megabytes, args.repeats)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "large_values.json").write_text(json.dumps(found, indent=2) + "\n")
    (RESULTS_DIR / "large_values.md").write_text(render(found))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
