"""What storage costs: the calls and bytes behind a step, a workflow and a wake-up.

    python benchmarks/storage.py [--quick]

Every figure comes from an in-process host (``rayline.testing``'s ``make_host`` over a
``LocalBackend``: activities run inline, no Ray), so what is timed is the engine and its
store, not Ray. The store is wrapped in ``Counting``, which counts each call (``create``
is an exclusive put) and the bytes written and read, by kind of key: the run object
(``wf/<id>/runs/<epoch>``), batches (``wf/<id>/t/...``), snapshots (``wf/<id>/s/...``),
open markers (``open/<host>/<id>``) and everything else (early signals, config, ...).
Stores: ``file://`` (a temporary folder, fsync on, as by default) and S3 served by moto
on 127.0.0.1 (every call a local HTTP request, no network latency).

- ``steps``: one workflow of 100 sequential ``add1`` activities, after one warm-up run;
  per step: time (start to result / 100), objects written, bytes written, reads; with
  no codec and with ``Codec("zstd,aes-gcm", keys)``.
- ``concurrent``: 200 one-activity workflows started at once on one host; per workflow.
- ``wake``: a run of N batches parked on a signal is woken (``host.parking.wake``: its
  timeline read and replayed); with snapshots off (``RunStore(snapshot_every=0)``: no
  snapshot objects) and on (the defaults). The run is built once in memory by a host and
  its objects copied to the store under test. S3 uses fewer batches (each read is a
  request to moto). ``read_s`` is ``RunStore.load_history`` alone (no replay).

``--quick`` shrinks the repeats, the concurrent workflows and the wake-up's runs.
Results go to ``benchmarks/results/storage.{json,md}``; the last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))

import bench_defs  # noqa: E402

from rayline import Codec, Keyring, _serde  # noqa: E402
from rayline._code import CodeRef  # noqa: E402
from rayline.messages import StartRequest  # noqa: E402
from rayline.storage import LocalStore, MemoryStore, RunStore, Store, open_store  # noqa: E402
from rayline.testing._local import make_host  # noqa: E402

KINDS = ("run", "batch", "snapshot", "marker", "other")
OPS = ("create", "put", "get", "list", "delete")
NAMESPACE = "bench"


def kind_of(key: str) -> str:
    """The kind of a key (or listed prefix) under ``<namespace>/``."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[1] == "open":
        return "marker"
    if len(parts) >= 4 and parts[1] == "wf":
        return {"runs": "run", "t": "batch", "s": "snapshot"}.get(parts[3], "other")
    return "other"


class Counting:
    """A ``Store`` that counts its calls and bytes by operation and kind of key. A call
    counts whatever it answers (a missing key, a taken one)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.quick = inner.quick
        self._lock = threading.Lock()
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.written: collections.Counter[str] = collections.Counter()
        self.read: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:  # check_writable
        return getattr(self.inner, name)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.written.clear()
            self.read.clear()

    def _count(self, op: str, key: str, written: int = 0, read: int = 0) -> None:
        kind = kind_of(key)
        with self._lock:
            self.calls[op, kind] += 1
            self.written[kind] += written
            self.read[kind] += read

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        self._count("create" if exclusive else "put", key, written=len(data))
        self.inner.put(key, data, exclusive=exclusive, durable=durable)

    def get(self, key: str) -> bytes:
        try:
            data = self.inner.get(key)
        except FileNotFoundError:
            self._count("get", key)
            raise
        self._count("get", key, read=len(data))
        return data

    def delete(self, key: str) -> None:
        self._count("delete", key)
        self.inner.delete(key)

    def list(self, prefix: str) -> list[str]:
        self._count("list", prefix)
        return self.inner.list(prefix)

    def totals(self, per: float = 1.0) -> dict[str, Any]:
        """Calls and bytes (divided by ``per``): totals, and by operation and kind."""
        with self._lock:
            calls, written, read = dict(self.calls), dict(self.written), dict(self.read)

        def r(x: float) -> float:
            return round(x / per, 2)
        by_op = {op: sum(n for (o, _), n in calls.items() if o == op) for op in OPS}
        return {
            "writes": r(by_op["create"] + by_op["put"]),
            "bytes_written": r(sum(written.values())),
            "reads": r(by_op["get"]), "lists": r(by_op["list"]),
            "deletes": r(by_op["delete"]), "bytes_read": r(sum(read.values())),
            "calls": {op: {k: r(calls.get((op, k), 0)) for k in KINDS
                           if calls.get((op, k))} for op in OPS if by_op[op]},
            "bytes_written_by_kind": {k: r(v) for k, v in written.items() if v},
            "bytes_read_by_kind": {k: r(v) for k, v in read.items() if v},
        }


# ------------------------------------------------------------------- stores


class S3:
    """A moto S3 server on 127.0.0.1 for this process (as tests/unit/s3.py starts one)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        os.environ.update(AWS_ENDPOINT_URL_S3=self.endpoint, AWS_ACCESS_KEY_ID="test",
                          AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")

    def bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}/rayline"

    def stop(self) -> None:
        self.server.stop()


class Stores:
    """Fresh, empty stores by name: ``file`` (a temporary folder) and ``s3`` (a bucket)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._s3: S3 | None = None

    def open(self, name: str) -> Store:
        if name == "file":
            return LocalStore(tempfile.mkdtemp(dir=self.root, prefix="store-"))
        if self._s3 is None:
            self._s3 = S3()
        return open_store(self._s3.bucket())

    def close(self) -> None:
        if self._s3 is not None:
            self._s3.stop()


def keyed_codec() -> Codec:
    return Codec("zstd,aes-gcm", Keyring({"bench": os.urandom(32)}))


def request(fn: Any, *args: Any, workflow_id: str) -> StartRequest:
    return StartRequest(workflow_id=workflow_id, workflow_name=fn.name, code=CodeRef.of(fn),
                        args=_serde.encode_args(args, what="bench"), task_queue="default")


async def settle(host: Any) -> None:
    """Waits for the host's background work (marker removal after a close, snapshots)."""
    for _ in range(500):
        if not host._background and not host._markers:
            return
        await asyncio.sleep(0.01)


def _check(outcome: Any, expected: Any) -> None:
    found = _serde.decode(outcome.result) if outcome.result is not None else None
    if found != expected:
        raise SystemExit(f"wrong result: {found!r} != {expected!r} ({outcome.status})")


# ------------------------------------------------------------------- figures


async def steps(store: Store, codec: Codec | None, n: int, repeats: int) -> dict[str, Any]:
    """A workflow of ``n`` sequential activities, ``repeats`` times after a warm-up."""
    counting = Counting(store)
    host = await make_host(RunStore(counting, NAMESPACE, codec))
    await host.start(request(bench_defs.steps, n, workflow_id="warm-up"))
    _check(await host.result("warm-up"), n)
    await settle(host)
    counting.reset()
    spent = []
    for i in range(repeats):
        began = time.perf_counter()
        await host.start(request(bench_defs.steps, n, workflow_id=f"steps-{i}"))
        _check(await host.result(f"steps-{i}"), n)
        spent.append(time.perf_counter() - began)
        await settle(host)
    host.abandon()
    return {"ms_per_step": round(statistics.median(spent) * 1000 / n, 3),
            "per_step": counting.totals(repeats * n), "per_run": counting.totals(repeats)}


async def concurrent(store: Store, codec: Codec | None, n: int) -> dict[str, Any]:
    """``n`` one-activity workflows started at once on one host."""
    counting = Counting(store)
    host = await make_host(RunStore(counting, NAMESPACE, codec))
    await host.start(request(bench_defs.one, 0, workflow_id="warm-up"))
    _check(await host.result("warm-up"), 1)
    await settle(host)
    counting.reset()
    began = time.perf_counter()
    await asyncio.gather(*(host.start(request(bench_defs.one, i, workflow_id=f"c-{i}"))
                           for i in range(n)))
    outcomes = await asyncio.gather(*(host.result(f"c-{i}") for i in range(n)))
    spent = time.perf_counter() - began
    for i, outcome in enumerate(outcomes):
        _check(outcome, i + 1)
    await settle(host)
    host.abandon()
    return {"workflows": n, "wf_per_s": round(n / spent, 1),
            "per_workflow": counting.totals(n)}


async def build_parked(steps_before: int, snapshots: bool
                       ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The objects of a run of ``steps_before`` activities parked on a signal, written by
    a host in memory (with the default snapshots, or none), and what it wrote."""
    memory = MemoryStore(f"bench-{uuid.uuid4().hex}")
    counting = Counting(memory)
    runs = RunStore(counting, NAMESPACE, **({} if snapshots else {"snapshot_every": 0}))
    host = await make_host(runs, park_after=0.05)
    await host.start(request(bench_defs.steps_then_wait, steps_before, workflow_id="long"))
    await parked(host)
    host.abandon()
    objects = dict(memory._objects)
    memory._objects.clear()
    return objects, counting.totals()


async def parked(host: Any) -> None:
    """Waits until the run ``long`` is parked and the host has written what follows."""
    for _ in range(60_000):
        if "long" in host.parking.parked:
            break
        await asyncio.sleep(0.01)
    await settle(host)


def copy_into(store: Store, objects: dict[str, bytes]) -> None:
    """Writes ``objects`` to ``store`` (8 at a time), as their writer left them."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: store.put(*item), objects.items()))


async def wake(store: Store, objects: dict[str, bytes], snapshots: bool,
               steps_before: int, repeats: int) -> dict[str, Any]:
    """Wakes the parked run in ``objects`` (copied to ``store``) ``repeats`` times (it
    parks again in between) and counts the calls of the first wake."""
    copy_into(LocalStore(store.root, fsync=False) if isinstance(store, LocalStore) else store,
              objects)
    counting = Counting(store)
    runs = RunStore(counting, NAMESPACE, **({} if snapshots else {"snapshot_every": 0}))
    host = await make_host(runs, park_after=0.05)
    if "long" not in host.parking.parked:
        raise SystemExit("the copied run is not parked")
    spent, woke = [], None
    for _ in range(repeats):
        counting.reset()
        began = time.perf_counter()
        await host.parking.wake("long")
        spent.append(time.perf_counter() - began)
        await parked(host)  # its marker rewritten, then it parks again
        woke = woke or counting.totals()
    counting.reset()
    began = time.perf_counter()
    history = await asyncio.to_thread(runs.load_history, "long")
    read = time.perf_counter() - began
    began = time.perf_counter()  # the listing of every batch name a read starts with
    await asyncio.to_thread(store.list, runs._timeline("long", history.started.epoch))
    listed = time.perf_counter() - began
    await host.signal("long", "go", _serde.encode(1))
    _check(await host.result("long"), steps_before + 1)
    host.abandon()
    return {"batches": len(history.batches), "snapshot_at": history.snapshot,
            "history_bytes": sum(len(b) for b in history.bodies), "repeats": repeats,
            "wake_s": round(statistics.median(spent), 3), "read_s": round(read, 3),
            "list_batches_s": round(listed, 3),
            "wake": woke}


async def park_cycles(store: Store, n: int) -> dict[str, Any]:
    """A run that parks after each of ``n`` signals (a signal wakes it, it writes one
    batch, then parks again with a snapshot while its history is small enough)."""
    counting = Counting(store)
    host = await make_host(RunStore(counting, NAMESPACE), park_after=0.02)
    await host.start(request(bench_defs.sum_signals, n, workflow_id="long"))
    await parked(host)
    counting.reset()
    began = time.perf_counter()
    for i in range(n):
        await host.signal("long", "item", _serde.encode(1))
        if i < n - 1:
            await until_parked_again(host)
    _check(await host.result("long"), n)
    spent = time.perf_counter() - began
    await settle(host)
    host.abandon()
    return {"signals": n, "ms_per_signal": round(spent * 1000 / n, 2),
            "per_signal": counting.totals(n)}


async def until_parked_again(host: Any) -> None:
    """Waits until ``long`` is awake, then parked again with what follows written."""
    for _ in range(60_000):
        if "long" in host.parking.parked and "long" not in host.executions:
            break
        await asyncio.sleep(0.005)
    await settle(host)


# ------------------------------------------------------------------- the run


def measure(quick: bool, root: str) -> dict[str, Any]:
    sizes = {"steps": 100, "repeats": 1 if quick else 3, "concurrent": 50 if quick else 200,
             "wake_file": 2_050 if quick else 10_050, "wake_s3": 350 if quick else 2_050,
             "wake_repeats_file": 1 if quick else 3, "park_signals": 50 if quick else 200}
    stores = Stores(root)
    out: dict[str, Any] = {"sizes": sizes, "steps": {}, "concurrent": {}, "wake": {},
                           "park_cycles": {}}
    began = time.perf_counter()
    try:
        for name in ("file", "s3"):
            for codec in ("none", "zstd,aes-gcm"):
                make = keyed_codec() if codec != "none" else None
                label = f"{name} {codec}"
                out["steps"][label] = asyncio.run(steps(
                    stores.open(name), make, sizes["steps"], sizes["repeats"]))
                out["concurrent"][label] = asyncio.run(concurrent(
                    stores.open(name), make, sizes["concurrent"]))
                log(f"{label}: {out['steps'][label]['ms_per_step']} ms/step, "
                    f"{out['concurrent'][label]['wf_per_s']} wf/s")
        out["park_cycles"]["file"] = asyncio.run(park_cycles(stores.open("file"),
                                                             sizes["park_signals"]))
        log(f"park cycles: {out['park_cycles']['file']['ms_per_signal']} ms/signal")
        for name in ("file", "s3"):
            # a run that parks after n-1 steps has n batches then (the run object's first)
            n = sizes[f"wake_{name}"] - 1
            for snapshots in (False, True):
                objects, built = asyncio.run(build_parked(n, snapshots))
                label = f"{name} snapshots {'on' if snapshots else 'off'}"
                out["wake"][label] = asyncio.run(wake(
                    stores.open(name), objects, snapshots, n,
                    sizes["wake_repeats_file"] if name == "file" else 1))
                out["wake"][label]["owner_wrote"] = built
                log(f"{label}: {out['wake'][label]['batches']} batches, woken in "
                    f"{out['wake'][label]['wake_s']} s")
    finally:
        stores.close()
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


def machine(quick: bool, root: str) -> dict[str, Any]:
    import ray

    import rayline

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "cpu": _cpu(), "platform": platform.platform(),
            "python": platform.python_version(), "rayline": rayline.__version__,
            "ray": ray.__version__, "file_system": _filesystem(root), "quick": quick}


def _cpu() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), None)
    except OSError:
        return None


def _filesystem(path: str) -> str | None:
    """The type of the file system ``path`` is on (from /proc/mounts)."""
    best: tuple[int, str] | None = None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, mount, kind, *_ = line.split()
                if path.startswith(mount) and (best is None or len(mount) > best[0]):
                    best = (len(mount), kind)
    except OSError:
        return None
    return best[1] if best else None


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------- output


def _counts_row(label: str, figure: float, counts: dict[str, Any]) -> str:
    """A table row: ``label``, its time or rate, then the calls and bytes counted."""
    return (f"| {label} | {figure} | {counts['writes']} | {counts['bytes_written']:,.0f} | "
            f"{counts['reads']} | {counts['lists']} | {counts['deletes']} |")


def _kinds(calls: dict[str, dict[str, float]]) -> Iterator[str]:
    for kind in KINDS:
        parts = [f"{op} {calls[op][kind]:g}" for op in OPS if kind in calls.get(op, {})]
        if parts:
            yield f"{kind}: {', '.join(parts)}"


def render(found: dict[str, Any]) -> str:
    m, sizes = found["machine"], found["sizes"]
    lines = [
        "# Storage costs", "",
        f"{m['date']}, {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"temporary files on {m['file_system']}{', quick sizes' if m['quick'] else ''}. "
        "Every figure is from an in-process host (no Ray): activities run inline, so "
        "the times are the engine and its store. S3 is moto on 127.0.0.1 (a local HTTP "
        "server: each call costs a request, but no network latency). Calls and bytes "
        "are counted exactly; times move with the machine (compare within a column).",
        "",
        f"## One workflow of {sizes['steps']} sequential activities", "",
        f"Median of {sizes['repeats']} run(s) after a warm-up; per step, the run's start "
        "and close included.", "",
        "| store, codec | ms/step | writes/step | bytes written/step | reads/step | "
        "lists/step | deletes/step |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_counts_row(label, row["ms_per_step"], row["per_step"])
              for label, row in found["steps"].items()]
    lines += ["", "Per run of the workflow, by kind of key:", ""]
    for label, row in found["steps"].items():
        r = row["per_run"]
        lines.append(f"- {label}: {'; '.join(_kinds(r['calls']))}. Bytes written: "
                     + ", ".join(f"{k} {v:,.0f}" for k, v in r['bytes_written_by_kind'].items()))
    lines += [
        "", f"## {sizes['concurrent']} one-activity workflows started at once", "",
        "| store, codec | workflows/s | writes/wf | bytes written/wf | reads/wf | "
        "lists/wf | deletes/wf |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_counts_row(label, row["wf_per_s"], row["per_workflow"])
              for label, row in found["concurrent"].items()]
    lines += ["", "Per workflow, by kind of key:", ""]
    for label, row in found["concurrent"].items():
        lines.append(f"- {label}: {'; '.join(_kinds(row['per_workflow']['calls']))}")
    lines += [
        "", "## Waking a parked run", "",
        "The run is read (its timeline through `RunStore.load_history`) and replayed. "
        f"S3 uses {sizes['wake_s3']:,} batches, not {sizes['wake_file']:,}: each read is "
        "a request. `read s` is the read alone; `wake s` the read and the replay; `list s` one "
        "listing of the run's batch names (a read with a snapshot lists them on local files; "
        "on S3 it reads the names after the snapshot 16 at a time instead).", "",
        "| store, snapshots | batches | newest snapshot | wake s | read s | list s | reads | "
        "lists | bytes read |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in found["wake"].items():
        w = row["wake"]
        reads = ", ".join(f"{k} {v:g}" for k, v in w["calls"].get("get", {}).items())
        lines.append(f"| {label} | {row['batches']:,} | {row['snapshot_at'] or '-'} | "
                     f"{row['wake_s']} | {row['read_s']} | {row['list_batches_s']} | "
                     f"{w['reads']:g} ({reads}) | "
                     f"{w['lists']:g} | {w['bytes_read']:,.0f} |")
    lines += ["", "What the run's owner wrote to build it (its batches, and its snapshots "
              "with snapshots on):", ""]
    for label, row in found["wake"].items():
        by_kind = row["owner_wrote"]["bytes_written_by_kind"]
        puts = row["owner_wrote"]["calls"].get("put", {}).get("snapshot", 0)
        lines.append(f"- {label}: batches {by_kind.get('batch', 0):,.0f} bytes, snapshots "
                     f"{by_kind.get('snapshot', 0):,.0f} bytes in {puts:g} objects")
    park = found["park_cycles"]["file"]
    p = park["per_signal"]
    lines += [
        "", f"## A run that parks between signals ({park['signals']} signals, file://)", "",
        "Each signal wakes the run (a read of its snapshot and the batches after it), writes "
        "one batch, and the run parks again; every `RAYLINE_SNAPSHOT_PARK_AFTER` (16) "
        "batches a park writes a snapshot of the whole history while that is at most "
        "`RAYLINE_SNAPSHOT_PARK_BYTES`. Per signal:", "",
        "| ms per cycle (a 20 ms wait to park included) | writes | bytes written: batch | "
        "snapshot | marker | reads | bytes read | lists | deletes |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {park['ms_per_signal']} | {p['writes']} | "
        f"{p['bytes_written_by_kind'].get('batch', 0):,.0f} | "
        f"{p['bytes_written_by_kind'].get('snapshot', 0):,.0f} | "
        f"{p['bytes_written_by_kind'].get('marker', 0):,.0f} | {p['reads']} | "
        f"{p['bytes_read']:,.0f} | {p['lists']} | {p['deletes']} |",
    ]
    lines += ["", "History of the parked runs: "
              + ", ".join(f"{label} {row['history_bytes']:,} bytes"
                          for label, row in found["wake"].items()) + ".",
              "", f"Whole run: {found['seconds']} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="rayline-storage-bench-") as root:
        tempfile.tempdir = root  # stores and the hosts' crash records go here, then away
        try:
            found = measure(args.quick, root)
            found["machine"] = machine(args.quick, root)
        finally:
            tempfile.tempdir = None
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "storage.json").write_text(json.dumps(found, indent=2) + "\n")
    (RESULTS_DIR / "storage.md").write_text(render(found))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
