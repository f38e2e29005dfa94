"""Elastic host pools on a ``ray.cluster_utils.Cluster``: throughput, parked capacity
and drain time as the cluster grows (docs/scaling.md).

    python benchmarks/scaling.py [--quick] [--nodes 1,2,4] [--drain-at 2]
                                 [--drain-parked 10000] [--drain-live 100]
    python benchmarks/scaling.py --render benchmarks/results/scaling.json  # the .md again

For each N in ``--nodes`` a Cluster of a head (num_cpus=1) and N worker nodes
(``--cpus-per-node``, default 1) is made in a process of its own, and rayline runs on
it with no ``Worker.create``: the default queue's pool is elastic, one host per alive
node. Measured per N:

- W2: 500 one-activity workflows started at once (``AsyncClient``), every result
  awaited: workflows/s, and the hosts and nodes that ran them; the raw Ray baseline in
  the same cluster: 500 ``add1.remote()`` tasks at once, tasks/s.
- W5: 2,000 workflows each sleeping 10 minutes, started at once: starts/s, parked runs
  per host once parked, and the hosts' RSS growth per parked workflow (all nodes run on
  this machine, so the host processes' pids are readable here).

Then, in a Cluster of its own with N = ``--drain-at`` worker nodes: ``--drain-parked``
runs parked on a signal and ``--drain-live`` live runs (a short activity, then a pause
under ``RAYLINE_PARK_AFTER``, until signalled) spread over the pool; one worker node is
drained (``client.drain_node``) and timed; then every moved parked run, a sample of
the others and every live run is signalled and its result checked.

Every node of such a Cluster runs on this one machine: added nodes add Ray processes,
not CPU, so throughput cannot grow with N here. Results go to
``benchmarks/results/scaling.{json,md}``; the last stdout line is the JSON.

This module is also imported by the rayline hosts (for ``ticking``): ``benchmarks/`` is
on their ``PYTHONPATH`` and nothing runs at import.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_defs

import rayline
from rayline import workflow

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
NAMESPACE = "scaling"


@rayline.workflow
async def ticking(pause: float) -> int:
    """A live run: ``add1``, then a pause of ``pause`` seconds (under
    ``RAYLINE_PARK_AFTER``, so it never parks), again and again until signal ``stop``;
    returns how many activities it ran."""
    acts = workflow.proxy_activities(bench_defs.add1)
    x = 0
    while True:
        x = await acts.add1(x)
        if await workflow.condition("stop", timeout=pause) is not False:
            return x


# ------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def project_pythonpath() -> str:
    parts = [str(REPO_ROOT), str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


class ClusterRun:
    """A Cluster of a head (num_cpus=1) and ``workers`` worker nodes, Ray joined with the
    project on every worker's PYTHONPATH, and a temporary storage directory; all of it
    stopped and removed by ``close``."""

    def __init__(self, workers: int, cpus: int) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.storage = tempfile.mkdtemp(prefix="rayline-scaling-")
        began = time.perf_counter()
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False})
        try:
            self.head = self.cluster.head_node.node_id
            self.workers = [self.cluster.add_node(num_cpus=cpus).node_id
                            for _ in range(workers)]
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, logging_level="ERROR",
                     runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
        except BaseException:
            self.close()
            raise
        self.start_s = round(time.perf_counter() - began, 1)
        log(f"cluster: head + {workers} worker node(s) up in {self.start_s} s")

    def close(self) -> None:
        import shutil

        import ray

        try:
            ray.shutdown()
        finally:
            try:
                self.cluster.shutdown()
            finally:
                shutil.rmtree(self.storage, ignore_errors=True)


def host_actor(name: str) -> Any:
    import ray

    return ray.get_actor(name, namespace=f"rayline-{NAMESPACE}")


def host_pids(names: list[str]) -> dict[str, int]:
    import ray

    pids = {}
    for name in names:
        try:
            pids[name] = ray.get(host_actor(name).__ray_call__.remote(
                lambda self: os.getpid()), timeout=60)
        except Exception as exc:
            log(f"no pid for {name}: {exc}")
    return pids


def rss(pids: dict[str, int]) -> dict[str, int]:
    import psutil

    found = {}
    for name, pid in pids.items():
        try:
            found[name] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return found


def registry_calls() -> dict[str, int]:
    import ray

    registry = ray.get_actor("registry", namespace=f"rayline-{NAMESPACE}")
    return dict(ray.get(registry.stats.remote(), timeout=60).calls)


async def until(predicate: Any, what: str, timeout: float, every: float = 0.5) -> float:
    """Awaits ``predicate()`` (a coroutine function) until it is true; seconds taken."""
    began = time.perf_counter()
    while not await predicate():
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{what}: not after {timeout} s")
        await asyncio.sleep(every)
    return time.perf_counter() - began


async def start_all(client: Any, fn: Any, ids: list[str], args: list[Any] | None = None,
                    chunk: int = 1000) -> tuple[list[Any], float]:
    """Starts ``fn`` under each id, ``chunk`` at a time concurrently; handles, seconds."""
    began = time.perf_counter()
    handles: list[Any] = []
    for low in range(0, len(ids), chunk):
        handles += await asyncio.gather(*(
            client.workflow.start(fn, args=args or [], workflow_id=w)
            for w in ids[low:low + chunk]))
    return handles, time.perf_counter() - began


# ---------------------------------------------------------- one cluster size


def measure_size(workers: int, cpus: int, w2_n: int, raw_n: int, w5_n: int) -> dict[str, Any]:
    """W2, the raw Ray baseline and W5 on a head + ``workers`` Cluster."""
    import ray

    out: dict[str, Any] = {"worker_nodes": workers, "nodes": workers + 1,
                           "declared_cpus": 1 + workers * cpus, "load_before": load()}
    run = ClusterRun(workers, cpus)
    try:
        out["cluster_start_s"] = run.start_s
        node_names = {run.head: "head", **{n: f"worker{i + 1}"
                                           for i, n in enumerate(run.workers)}}

        @ray.remote
        def add1(x: int) -> int:
            return x + 1

        ray.get([add1.remote(i) for i in range(50)])  # warm workers on every node
        began = time.perf_counter()
        assert ray.get([add1.remote(i) for i in range(raw_n)]) == [i + 1 for i in range(raw_n)]
        raw_s = time.perf_counter() - began
        out["raw_ray"] = {"tasks": raw_n, "tasks_per_s": round(raw_n / raw_s, 1)}
        log(f"N={workers}: raw Ray {out['raw_ray']}")

        async def main() -> None:
            async with rayline.AsyncClient(address=run.cluster.address, storage=run.storage,
                                           namespace=NAMESPACE) as client:
                warm, _ = await start_all(client, bench_defs.one,
                                          [f"warm{i}" for i in range(40)], [1])
                await asyncio.gather(*(h.result() for h in warm))
                hosts = await client.hosts()
                out["pool"] = [{"host": s.host, "node": node_names.get(s.node, s.node)}
                               for s in hosts]
                # W2
                calls_before = registry_calls()
                began = time.perf_counter()
                handles = await asyncio.gather(*(
                    client.workflow.start(bench_defs.one, args=[i],
                                          workflow_id=f"w2-{i}") for i in range(w2_n)))
                results = await asyncio.gather(*(h.result() for h in handles))
                w2_s = time.perf_counter() - began
                assert results == [i + 1 for i in range(w2_n)], "W2: wrong results"
                calls_after = registry_calls()
                ran_on = [d.host for d in await asyncio.gather(*(h.describe()
                                                                for h in handles))]
                node_of = {s.host: node_names.get(s.node, s.node) for s in hosts}
                per_host: dict[str, int] = {}
                for host in ran_on:
                    per_host[host] = per_host.get(host, 0) + 1
                out["W2"] = {
                    "workflows": w2_n, "wf_per_s": round(w2_n / w2_s, 1),
                    "seconds": round(w2_s, 2), "hosts": len(per_host),
                    "nodes": len({node_of.get(h) for h in per_host}),
                    "per_host": {h: {"runs": c, "node": node_of.get(h)}
                                 for h, c in sorted(per_host.items())},
                    "registry_calls": {k: calls_after.get(k, 0) - calls_before.get(k, 0)
                                       for k in calls_after
                                       if calls_after.get(k, 0) != calls_before.get(k, 0)}}
                out["W2"]["vs_raw_ray"] = round(out["W2"]["wf_per_s"]
                                                / out["raw_ray"]["tasks_per_s"], 3)
                log(f"N={workers}: W2 {w2_n} wf in {w2_s:.2f} s = {out['W2']['wf_per_s']} "
                    f"wf/s on {out['W2']['hosts']} host(s), {out['W2']['nodes']} node(s)")
                # W5
                names = [s.host for s in hosts]
                pids = host_pids(names)
                base = sum(s.parked for s in await client.hosts())
                before = rss(pids)
                _, start_s = await start_all(client, bench_defs.parked,
                                             [f"w5-{i}" for i in range(w5_n)])

                async def all_parked() -> bool:
                    return sum(s.parked for s in await client.hosts()) >= base + w5_n
                parked_s = await until(all_parked, "W5: not all parked", 600)
                after = rss(pids)
                stats = await client.hosts()
                growth = {n: after[n] - before[n] for n in after if n in before}
                out["W5"] = {
                    "workflows": w5_n, "starts_per_s": round(w5_n / start_s, 1),
                    "start_s": round(start_s, 2),
                    "parked_s_after_starts": round(parked_s, 1),
                    "parked_per_host": {s.host: {"parked": s.parked, "running": s.running,
                                                 "node": node_names.get(s.node, s.node)}
                                        for s in stats},
                    "rss_growth_per_host": growth,
                    "bytes_per_parked_wf": round(sum(growth.values()) / w5_n)
                    if len(growth) == len(names) else None}
                log(f"N={workers}: W5 {w5_n} starts at {out['W5']['starts_per_s']}/s, "
                    f"{out['W5']['bytes_per_parked_wf']} B/parked wf, per host "
                    f"{[s.parked for s in stats]}")

        asyncio.run(main())
    finally:
        run.close()
        out["load_after"] = load()
    return out


# ------------------------------------------------------------------- drain


def measure_drain(workers: int, cpus: int, parked_n: int, live_n: int, pause: float,
                  verify_unmoved: int) -> dict[str, Any]:
    """Parks ``parked_n`` runs on a signal, keeps ``live_n`` runs live, drains one worker
    node, and checks that the moved runs still answer."""
    import ray
    import scaling

    out: dict[str, Any] = {"worker_nodes": workers, "nodes": workers + 1,
                           "declared_cpus": 1 + workers * cpus, "parked": parked_n,
                           "live": live_n, "live_pause_s": pause, "load_before": load()}
    run = ClusterRun(workers, cpus)
    try:
        c = rayline.Client(address=run.cluster.address, storage=run.storage,
                           namespace=NAMESPACE)
        aio = c.aio
        node_names = {run.head: "head", **{n: f"worker{i + 1}"
                                           for i, n in enumerate(run.workers)}}

        def snapshot() -> list[dict[str, Any]]:
            return [{"host": s.host, "node": node_names.get(s.node, s.node),
                     "running": s.running, "parked": s.parked, "stuck": s.stuck,
                     "draining": s.draining} for s in c.hosts()]

        parked_ids = [f"p{i}" for i in range(parked_n)]
        live_ids = [f"l{i}" for i in range(live_n)]

        async def park() -> None:
            warm, _ = await start_all(aio, bench_defs.one,
                                      [f"warm{i}" for i in range(40)], [1])
            await asyncio.gather(*(h.result() for h in warm))  # the pool is up
            _, start_s = await start_all(aio, bench_defs.wait_signal, parked_ids)
            out["parked_start_s"] = round(start_s, 1)
            out["parked_starts_per_s"] = round(parked_n / start_s, 1)
            log(f"drain: {parked_n} parked runs started in {start_s:.1f} s")

            async def all_parked() -> bool:
                return sum(s.parked for s in await aio.hosts()) >= parked_n
            out["parked_wait_s"] = round(await until(all_parked, "not all parked", 900), 1)
            await start_all(aio, scaling.ticking, live_ids, [pause])

            async def all_live() -> bool:
                stats = await aio.hosts()
                return sum(s.running for s in stats) >= live_n
            await until(all_live, "live runs not running", 300)
            await asyncio.sleep(3 * pause)  # a few rounds of activity and pause

        c.run(park())
        before = snapshot()
        out["before"] = before
        if sum(h["parked"] for h in before) != parked_n:
            log(f"drain: parked count {sum(h['parked'] for h in before)} != {parked_n}")
        target = next(n for n in run.workers
                      if any(s.node == n for s in c.hosts()))  # a worker node with a host
        out["drained_node"] = node_names[target]
        on_target = [h for h in before if h["node"] == node_names[target]]
        out["on_drained_node"] = {"hosts": [h["host"] for h in on_target],
                                  "parked": sum(h["parked"] for h in on_target),
                                  "running": sum(h["running"] for h in on_target)}
        log(f"drain: draining {node_names[target]}: {out['on_drained_node']}")

        progress: list[tuple[float, int, int]] = []
        stop = threading.Event()
        began = time.perf_counter()

        def watch() -> None:  # the drained hosts' counts over time
            handles = [host_actor(h["host"]) for h in on_target]
            while not stop.is_set():
                try:
                    stats = ray.get([h.stats.remote() for h in handles], timeout=10)
                    progress.append((round(time.perf_counter() - began, 1),
                                     sum(s.parked for s in stats),
                                     sum(s.running for s in stats)))
                except Exception:
                    return  # retired
                stop.wait(1.0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        reports = c.drain_node(target)
        drain_s = time.perf_counter() - began
        stop.set()
        watcher.join(15)
        moved = [w for r in reports for w in r.moved]
        left = {w: why for r in reports for w, why in r.left.items()}
        out["drain"] = {
            "seconds": round(drain_s, 2), "moved": len(moved),
            "moved_parked": sum(w.startswith("p") for w in moved),
            "moved_live": sum(w.startswith("l") for w in moved),
            "moved_twice_in_report": len(moved) - len(set(moved)),
            "left": len(left), "left_sample": dict(list(left.items())[:5]),
            "retired": [r.retired for r in reports], "hosts": [r.host for r in reports],
            "moved_per_s": round(len(set(moved)) / drain_s, 1),
            "progress": progress[:: max(1, len(progress) // 40)]}
        log(f"drain: {len(moved)} moved, {len(left)} left in {drain_s:.1f} s; "
            f"retired {out['drain']['retired']}")
        time.sleep(1)
        after = snapshot()
        out["after"] = after
        out["hosts_left_on_drained_node"] = [h["host"] for h in after
                                             if h["node"] == node_names[target]]

        moved_parked = sorted({w for w in moved if w.startswith("p")}, key=lambda w: int(w[1:]))
        unmoved = sorted(set(parked_ids) - set(moved_parked))
        sample = random.Random(1).sample(unmoved, min(verify_unmoved, len(unmoved)))

        async def verify() -> dict[str, Any]:
            began = time.perf_counter()
            wrong: list[Any] = []
            errors: list[str] = []
            checked = moved_parked + sample

            async def one(workflow_id: str, signal_id: str, data: Any) -> Any:
                try:
                    handle = await aio.workflow.get_handle(workflow_id)
                    await handle.signal(signal_id, data)
                    return await handle.result(timeout=600)
                except Exception as exc:
                    errors.append(f"{workflow_id}: {type(exc).__name__}: {exc}"[:300])
                    return exc
            for low in range(0, len(checked), 1000):
                part = checked[low:low + 1000]
                got = await asyncio.gather(*(one(w, "go", int(w[1:])) for w in part))
                wrong += [(w, repr(g)) for w, g in zip(part, got, strict=True) if g != int(w[1:])]
            live = await asyncio.gather(*(one(w, "stop", 1) for w in live_ids))
            bad_live = [(w, repr(g)) for w, g in zip(live_ids, live, strict=True)
                        if not isinstance(g, int) or g < 1]
            return {"seconds": round(time.perf_counter() - began, 1),
                    "moved_parked_checked": len(moved_parked),
                    "unmoved_parked_checked": len(sample), "live_checked": len(live_ids),
                    "wrong": len(wrong) + len(bad_live),
                    "wrong_sample": (wrong + bad_live)[:5], "errors": errors[:5],
                    "live_activities": sorted(g for g in live if isinstance(g, int))[::10]}

        out["verify"] = c.run(verify())
        log(f"drain: verified {out['verify']}")
        out["final"] = snapshot()
    finally:
        run.close()
        out["load_after"] = load()
    return out


# ---------------------------------------------------------------- the runner


def child(args: list[str], timeout: float) -> dict[str, Any]:
    """Runs this script with ``args`` in a session of its own; its last stdout line. On a
    timeout, that process group only is stopped (SIGTERM: its finally blocks shut its
    Cluster down; SIGKILL after 90 s)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = project_pythonpath()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
                            start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        return {"error": f"{' '.join(args)}: stopped after {timeout} s"}
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"{' '.join(args)}: exit code {proc.returncode}"}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def code() -> dict[str, Any]:
    """Which rayline ran: its path, and the git commit of this tree (if it is one)."""
    found: dict[str, Any] = {"rayline": str(Path(rayline.__file__).parent)}
    try:
        found["commit"] = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
            text=True, timeout=10, check=True).stdout.strip()
        found["uncommitted"] = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "runtime", "actors"],
            capture_output=True, text=True, timeout=10).stdout.splitlines()[:20]
    except (OSError, subprocess.SubprocessError):
        found["commit"] = None
    return found


def machine() -> dict[str, Any]:
    import psutil
    import ray

    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), None)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "ray": ray.__version__,
            "rayline": getattr(rayline, "__version__", None),
            "note": "every node of the Cluster runs on this one machine and shares its "
                    "cores: added nodes add Ray processes, not CPU"}


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, (int, float)) else str(value)


def _code_line(code: dict[str, Any]) -> str:
    if not code.get("commit"):
        return ""
    dirty = " plus uncommitted changes" if code.get("uncommitted") else ""
    return f"; rayline at commit {code['commit'][:7]}{dirty}."


def _loads(phase: dict[str, Any]) -> str:
    """The machine's 1-minute load average before and after a phase (it is shared)."""
    return ", ".join(fmt(phase[k][0], 1) if phase.get(k) else "–"
                     for k in ("load_before", "load_after"))


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Scaling benchmark, {report['date']}", "",
             f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
             f"Ray {m['ray']}. Every node of the `ray.cluster_utils.Cluster` runs on this one "
             "machine and shares its cores: added nodes add Ray processes, not CPU. "
             f"Command: `{report['command']}`" + (" (quick sizes)" if report["quick"] else "")
             + _code_line(report.get("code") or {}),
             "", "| worker nodes (+ head) | declared CPUs | raw Ray tasks/s | W2 workflows/s "
             "| W2 / raw Ray | W2 hosts / nodes used | registry `hosts_for` calls in W2 "
             "| W5 starts/s | W5 parked per host | W5 bytes per parked wf | 1-min load "
             "before, after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in report["sizes"]:
        if "error" in size:
            lines.append(f"| {size.get('worker_nodes', '?')} | – | – | – | – | – | – | – | – "
                         f"| – | {size['error']} |")
            continue
        w2, w5, raw = size.get("W2") or {}, size.get("W5") or {}, size.get("raw_ray") or {}
        parked = " / ".join(fmt(h["parked"]) for h in
                            (w5.get("parked_per_host") or {}).values())
        lines.append(
            f"| {size['worker_nodes']} | {size['declared_cpus']} | "
            f"{fmt(raw.get('tasks_per_s'))} | {fmt(w2.get('wf_per_s'))} | "
            f"{fmt(w2.get('vs_raw_ray'), 2)}x | {w2.get('hosts', '–')} / "
            f"{w2.get('nodes', '–')} | {(w2.get('registry_calls') or {}).get('hosts_for', 0)} "
            f"| {fmt(w5.get('starts_per_s'))} | {parked or '–'} | "
            f"{fmt(w5.get('bytes_per_parked_wf'))} | {_loads(size)} |")
    d = report.get("drain")
    if d:
        lines += ["", "Drain of one worker node:", ""]
        if "error" in d:
            lines.append(f"failed: {d['error']}")
        else:
            dr, v, on = d["drain"], d["verify"], d["on_drained_node"]
            checked = (v["moved_parked_checked"] + v["unmoved_parked_checked"]
                       + v["live_checked"])
            lines += [
                "| worker nodes | parked / live runs | starting the parked runs | on the "
                "drained node (parked / live) | drain s | moved (parked / live) | moved/s | "
                "left | host retired | moved runs answering after | 1-min load before, "
                "after |", "|---|---|---|---|---|---|---|---|---|---|---|",
                f"| {d['worker_nodes']} | {fmt(d['parked'])} / {fmt(d['live'])} | "
                f"{fmt(d['parked_start_s'], 1)} s ({fmt(d['parked_starts_per_s'])}/s) | "
                f"{fmt(on['parked'])} / {fmt(on['running'])} | {fmt(dr['seconds'], 1)} | "
                f"{fmt(dr['moved'])} ({fmt(dr['moved_parked'])} / {fmt(dr['moved_live'])}) | "
                f"{fmt(dr['moved_per_s'], 1)} | {dr['left']} | "
                f"{', '.join(map(str, dr['retired']))} | "
                f"{fmt(checked - v['wrong'])} of {fmt(checked)} (all moved parked, a sample "
                f"of the unmoved, all live) | {_loads(d)} |"]
    if report["errors"]:
        lines += ["", "Errors: " + "; ".join(report["errors"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--nodes", default=None,
                        help="worker node counts (default 1,2,4; 1,2 with --quick)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--drain-at", type=int, default=2,
                        help="worker nodes of the drain scenario (0: skip it)")
    parser.add_argument("--drain-parked", type=int, default=None)
    parser.add_argument("--drain-live", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS_DIR / "scaling"),
                        help="results path without extension")
    parser.add_argument("--render", metavar="JSON",
                        help="only write the markdown of an earlier run's JSON (to --out)")
    opts = parser.parse_args()
    if opts.render:
        Path(opts.out).with_suffix(".md").write_text(
            markdown(json.loads(Path(opts.render).read_text())))
        return
    quick = opts.quick
    w2_n, raw_n, w5_n = (100, 100, 200) if quick else (500, 500, 2000)
    parked_n = opts.drain_parked if opts.drain_parked is not None else (
        500 if quick else 10_000)
    live_n = opts.drain_live if opts.drain_live is not None else (10 if quick else 100)
    nodes = [int(n) for n in (opts.nodes or ("1,2" if quick else "1,2,4")).split(",")
             if n.strip()]
    began = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/scaling.py", *sys.argv[1:]]),
        "quick": quick, "machine": machine(), "code": code(), "sizes": [], "drain": None,
        "errors": [],
        "workloads": {"W2": w2_n, "raw_ray": raw_n, "W5": w5_n,
                      "drain": {"parked": parked_n, "live": live_n}}}
    for n in nodes:
        log(f"--- head + {n} worker node(s)")
        got = child(["_size", str(n), str(opts.cpus_per_node), str(w2_n), str(raw_n),
                     str(w5_n)], timeout=900)
        got.setdefault("worker_nodes", n)
        report["sizes"].append(got)
        if "error" in got:
            report["errors"].append(got["error"])
    if opts.drain_at > 0:
        log(f"--- drain: head + {opts.drain_at} worker node(s), {parked_n} parked, "
            f"{live_n} live")
        got = child(["_drain", str(opts.drain_at), str(opts.cpus_per_node), str(parked_n),
                     str(live_n), "1.5", "100"], timeout=2400)
        report["drain"] = got
        if "error" in got:
            report["errors"].append(got["error"])
    report["total_s"] = round(time.perf_counter() - began, 1)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    log(f"done in {report['total_s']} s: {out}.json, {out}.md")
    print(json.dumps(report), flush=True)


def _child_main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    kind, rest = argv[0], argv[1:]
    if kind == "_size":
        workers, cpus, w2_n, raw_n, w5_n = map(int, rest)
        result = measure_size(workers, cpus, w2_n, raw_n, w5_n)
    else:
        workers, cpus, parked_n, live_n = map(int, rest[:4])
        result = measure_drain(workers, cpus, parked_n, live_n, float(rest[4]), int(rest[5]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _child_main(sys.argv[1:])
    else:
        main()
