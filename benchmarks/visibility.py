"""The visibility index at size: ``list`` and ``count`` over N workflows, the index's
bytes per workflow in storage, and how long a new registry takes to answer.

    python benchmarks/visibility.py [--workflows 100000] [--repeats 5]

The registry runs in this process over local files (``file://``, fsync'd), as it does
in its actor; N summaries are reported in batches of 500, as hosts send them (a tenth
running, search fields ``score``, ``region`` and ``tags``). Timed, median of the
repeats:

- ``list_newest``: the newest 100 (``list(limit=100)``), and ``list_page_5``: the fifth
  page of them (following ``next_page_token``);
- ``list_running_range``: running workflows with ``score >= 0.9``, 100 of them;
- ``count_by_status``: ``count(group_by="status")``;
- ``new_registry``: a new registry's first answer (reads the snapshot and logs, lists
  timelines and markers: the N workflows' timelines are not written here, so its
  reconcile reads none).

Also reported: the index's bytes in storage per workflow, and the registry's memory per
workflow (``tracemalloc``). Results go to ``benchmarks/results/visibility.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from rayline.engine import registry as registry_module
from rayline.engine.registry import Registry
from rayline.messages import CountRequest, ListRequest, RunStatus, RunSummary
from rayline.storage import RunStore, open_store

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class NoHosts:
    """The registry's ``Launcher``: this benchmark starts no host."""

    def nodes(self, labels: Any = None) -> list[str]:
        return []


def summary(i: int, n: int) -> RunSummary:
    running = i % 10 == 0
    return RunSummary(
        workflow_id=f"order-{i:07d}", run_id=f"{i:032x}", workflow_name="etl",
        host=f"host-q-{i % 4}", task_queue="q", status=1 if running else 0,
        state=RunStatus.RUNNING if running else RunStatus.COMPLETED,
        started_at=1.7e9 + i, closed_at=None if running else 1.7e9 + i + 5,
        updated_at=1.7e9 + i + 5, version="src-0123456789ab",
        search={"score": i / n, "region": ("eu", "us", "apac")[i % 3],
                "tags": ["gpu"] if i % 7 == 0 else []})


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> float:
    spent = []
    for _ in range(repeats):
        start = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


async def measure(n: int, repeats: int, root: str) -> dict[str, Any]:
    registry_module.INDEX_SAVE_EVERY = 0.05
    runs = RunStore(open_store(f"file://{root}"), "bench")
    tracemalloc.start()
    registry = Registry(runs, runs.store.url, NoHosts())  # type: ignore[arg-type]
    await registry.count(CountRequest())  # indexed (nothing yet)
    before = tracemalloc.get_traced_memory()[0]
    reported = time.perf_counter()
    for start in range(0, n, 500):
        await registry.report([summary(i, n) for i in range(start, min(n, start + 500))])
    memory = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    while registry._saving is not None and not registry._saving.done():
        await registry._saving
    report_s = time.perf_counter() - reported

    async def page(number: int) -> None:
        token = None
        for _ in range(number):
            token = (await registry.list(ListRequest(limit=100, page_token=token))
                     ).next_page_token

    out: dict[str, Any] = {
        "workflows": n, "report_and_save_s": round(report_s, 2),
        "list_newest_ms": await timed(lambda: page(1), repeats) * 1000,
        "list_page_5_ms": await timed(lambda: page(5), repeats) * 1000 / 5,
        "list_running_range_ms": await timed(lambda: registry.list(ListRequest(
            status=RunStatus.RUNNING, search={"score": {">=": 0.9}}, limit=100)),
            repeats) * 1000,
        "count_by_status_ms": await timed(lambda: registry.count(CountRequest(
            group_by="status")), repeats) * 1000,
    }
    index_dir = Path(root) / "bench" / "index"
    stored = sum(f.stat().st_size for f in index_dir.iterdir())
    out["index_files"] = sorted(f.name for f in index_dir.iterdir())
    out["index_bytes_per_workflow"] = round(stored / n, 1)  # zlib: these ids compress well
    out["summary_json_bytes"] = len(summary(n // 2, n).model_dump_json())  # before zlib
    out["registry_memory_bytes_per_workflow"] = round(memory / n)

    async def fresh() -> None:
        await Registry(runs, runs.store.url, NoHosts()).count(  # type: ignore[arg-type]
            CountRequest())
    out["new_registry_ms"] = await timed(fresh, 1) * 1000
    for key, value in list(out.items()):
        if key.endswith("_ms"):
            out[key] = round(value, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        result = asyncio.run(measure(args.workflows, args.repeats, root))
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "visibility.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {key} | {value} |" for key, value in result.items()
            if key not in ("machine", "index_files")]
    (RESULTS_DIR / "visibility.md").write_text(
        f"# Visibility index, {result['workflows']:,} workflows\n\n"
        "| measure | value |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Index files after the run: {', '.join(result['index_files'])}. "
        f"Machine: {result['machine']}.\n")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
