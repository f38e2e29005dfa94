"""Run the benchmark suite and write ``benchmarks/results/latest.{json,md,png}``.

    python benchmarks/run.py [--peers] [--quick] [--runs N]

Each engine runs in a subprocess of its own (Ray is one per process): the raw Ray
baselines and rayline with this interpreter (the project's venv), and with ``--peers``
Temporal, DBOS and Ray Workflows with their own venvs under ``benchmarks/.venvs/``,
created on first use. Every script prints one JSON object on its last stdout line.

With ``--runs N`` the whole suite runs N times, one after the other: each figure is the
median over the runs, each ratio the median of the ratios taken within each run, and the
targets table says for each target whether the median meets it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PEERS_DIR = BENCH_DIR / "peers"

from peers._common import log  # noqa: E402  (benchmarks/ is this script's directory)
from peers.setup_venvs import REQUIREMENTS, ensure_venv  # noqa: E402

# Seconds each script may take before it is stopped (full sizes; --quick is far below).
# Without --peers the two local scripts together stay under 10 minutes.
LOCAL_TIMEOUT_S = {"raw_ray.py": 100, "rayline_bench.py": 480}
PEER_TIMEOUT_S = 900
PEER_SCRIPTS = {peer: f"{peer}_bench.py" for peer in REQUIREMENTS}

COLUMNS = [("rayline", "rayline"), ("ray_tasks", "raw Ray tasks"),
           ("ray_floor", "raw async-actor floor"), ("temporal", "Temporal"),
           ("dbos", "DBOS"), ("rayworkflows", "Ray Workflows")]
PEER_COLUMNS = [(key, label) for key, label in COLUMNS if key in PEER_SCRIPTS]

# (row label, workload key, field) of the figures table.
ROWS = [("W1 p50 ms", "W1", "p50_ms"), ("W1 p99 ms", "W1", "p99_ms"),
        ("W2 workflows/s", "W2", "wf_per_s"), ("W3 ms/step", "W3", "ms_per_step"),
        ("W3 ms/step, local activities", "W3_local", "ms_per_step"),
        ("W4 p50 ms", "W4", "p50_ms"), ("W4 p50 ms, 10 ms poll", "W4_10ms_poll", "p50_ms"),
        ("W5 starts/s", "W5", "starts_per_s"), ("W5 bytes/workflow", "W5", "bytes_per_wf"),
        ("W5 bytes/workflow, marginal", "W5", "marginal_bytes_per_wf"),
        ("W1 p50 ms, local activity", "W1_local", "p50_ms"),
        ("W1 p50 ms, execute() (start and result in one call)", "W1_execute", "p50_ms"),
        ("W6 step cost late/early", "W6", "late_over_early"),
        ("W7 s from host kill to all moved on", "W7", "seconds"),
        ("replay events/s (core)", "replay", "events_per_s"),
        ("registry calls during a 100-step workflow", "registry", "calls")]
RATIO_ROWS = [row for row in ROWS if row[1] in ("W1", "W2", "W3", "W4")]
PLOTTED = [("W1 p50 (ms, lower is better)", "W1", "p50_ms"),
           ("W2 (workflows/s, higher is better)", "W2", "wf_per_s"),
           ("W3 (ms per step, lower is better)", "W3", "ms_per_step")]

# The targets of the speed issue: (name, its value in one run's engines, the limit, "le"
# if met at or under the limit, "ge" at or above). Ratios are taken within a run.
def _over(numerator: tuple[str, str, str], denominator: tuple[str, str, str]) -> Any:
    def value(engines: dict[str, dict]) -> float | None:
        top = figure(engines.get(numerator[0]), *numerator[1:])
        bottom = figure(engines.get(denominator[0]), *denominator[1:])
        return top / bottom if top is not None and bottom else None
    return value


def _alone(key: tuple[str, str, str]) -> Any:
    return lambda engines: figure(engines.get(key[0]), *key[1:])


def _w2_goal(engines: dict[str, dict]) -> float | None:
    """W2 over its goal: 1,000 workflows/s or 4x DBOS's, whichever is lower."""
    ours = figure(engines.get("rayline"), "W2", "wf_per_s")
    dbos = figure(engines.get("dbos"), "W2", "wf_per_s")
    goal = 1000.0 if dbos is None else min(1000.0, 4 * dbos)
    return None if ours is None else ours / goal


TARGETS: list[tuple[str, Any, float, str, str]] = [  # ..., and the unit shown
    ("W1 p50 <= 0.75x DBOS's", _over(("rayline", "W1", "p50_ms"), ("dbos", "W1", "p50_ms")),
     0.75, "le", "x"),
    ("W1 p50 <= 2.5x the raw Ray task round trip",
     _over(("rayline", "W1", "p50_ms"), ("ray_tasks", "W1", "p50_ms")), 2.5, "le", "x"),
    ("W3 per step <= 1.0x the raw Ray task round trip",
     _over(("rayline", "W3", "ms_per_step"), ("ray_tasks", "W3", "ms_per_step")), 1.0, "le",
     "x"),
    ("W3 per step <= 0.75x DBOS's",
     _over(("rayline", "W3", "ms_per_step"), ("dbos", "W3", "ms_per_step")), 0.75, "le", "x"),
    ("W3 local activities <= 0.5x Temporal's local activities",
     _over(("rayline", "W3_local", "ms_per_step"), ("temporal", "W3_local", "ms_per_step")),
     0.5, "le", "x"),
    ("W2 >= 1,000/s or 4x DBOS's, whichever is lower (shown: W2 over that goal)", _w2_goal,
     1.0, "ge", "x"),
    ("W4 p50 <= 0.5x Ray Workflows'",
     _over(("rayline", "W4", "p50_ms"), ("rayworkflows", "W4", "p50_ms")), 0.5, "le", "x"),
    ("W4 p50 <= 0.3x Temporal's",
     _over(("rayline", "W4", "p50_ms"), ("temporal", "W4", "p50_ms")), 0.3, "le", "x"),
    ("W5 >= 1,000 activity-free starts/s", _alone(("rayline", "W5", "starts_per_s")),
     1000.0, "ge", "/s"),
    ("W6 late/early <= 1.2 in every run", _alone(("rayline", "W6", "late_over_early")), 1.2,
     "le", ""),
]


def child_env(with_project_path: bool) -> dict[str, str]:
    """The environment of a benchmark subprocess."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    if with_project_path:
        paths = [str(REPO_ROOT), str(BENCH_DIR), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def run_script(python: Path | str, script: Path, quick: bool, timeout: float,
               env: dict[str, str]) -> dict:
    """Run one benchmark script; return its JSON result, or ``{"errors": [...]}``.

    The script runs in a session of its own, so that on a timeout exactly its process
    group (it and whatever servers it started) is stopped.
    """
    command = [str(python), str(script), *(["--quick"] if quick else [])]
    log(f"== {' '.join(command)}")
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return {"errors": [f"{script.name} timed out after {timeout} s"]}
    log(f"== {script.name} finished in {time.monotonic() - started:.0f} s")
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"errors": [f"{script.name} exited {proc.returncode} without a JSON line"]}


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate the process group led by ``proc`` (which we started), then kill it."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_local(quick: bool) -> dict[str, dict]:
    """raw Ray (two columns) and rayline, with this interpreter."""
    env = child_env(with_project_path=True)
    raw = run_script(sys.executable, BENCH_DIR / "raw_ray.py", quick,
                     LOCAL_TIMEOUT_S["raw_ray.py"], env)
    if "ray_tasks" not in raw:  # the script failed: both of its columns carry the error
        raw = {"ray_tasks": raw, "ray_floor": raw}
    engines = dict(raw)
    engines["rayline"] = run_script(sys.executable, BENCH_DIR / "rayline_bench.py", quick,
                                    LOCAL_TIMEOUT_S["rayline_bench.py"], env)
    return engines


def run_peers(quick: bool) -> dict[str, dict]:
    """Every peer, each with its own venv (set up first if needed)."""
    engines = {}
    for peer, script in PEER_SCRIPTS.items():
        try:
            python = ensure_venv(peer)
        except subprocess.CalledProcessError as exc:
            engines[peer] = {"errors": [f"venv setup failed: {exc}"]}
            continue
        engines[peer] = run_script(python, PEERS_DIR / script, quick, PEER_TIMEOUT_S,
                                   child_env(with_project_path=False))
    return engines


def machine_facts(engines: dict[str, dict], quick: bool) -> dict:
    """Where and when the figures were measured."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1),
            "cpu": cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(),
            "ray": engines.get("ray_tasks", {}).get("version"),
            "versions": {key: engines[key].get("version") for key, _ in COLUMNS
                         if key in engines},
            "quick": quick}


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def figure(engine: dict | None, workload: str, field: str) -> float | None:
    """One number of one engine, or None if it was not measured."""
    return ((engine or {}).get(workload) or {}).get(field)


def fmt(value: float | None) -> str:
    """A figure for the table: three significant digits or so; a dash if missing."""
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def figures_table(engines: dict[str, dict]) -> list[str]:
    """One row per metric that any engine measured, one column per engine."""
    present = [(key, label) for key, label in COLUMNS if key in engines]
    rows = [[name, *(fmt(figure(engines[key], w, f)) for key, _ in present)]
            for name, w, f in ROWS
            if any(figure(engines[key], w, f) is not None for key, _ in present)]
    return table(["metric", *(label for _, label in present)], rows)


def median_of(values: list[float | None]) -> float | None:
    """The median of the values measured; None if there are none."""
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def ratios_table(runs: list[dict[str, dict]]) -> list[str]:
    """rayline against raw Ray and the floor; every peer that ran against rayline."""
    peers = [(key, label) for key, label in PEER_COLUMNS if key in runs[0]]
    header = ["metric", "rayline / raw Ray", "rayline / floor",
              *(f"{label} / rayline" for _, label in peers)]
    rows = []
    for name, w, f in RATIO_ROWS:
        pairs = [(("rayline", w, f), (key, w, f)) for key in ("ray_tasks", "ray_floor")]
        pairs += [((key, w, f), ("rayline", w, f)) for key, _ in peers]
        cells = [median_of([_over(*pair)(engines) for engines in runs]) for pair in pairs]
        rows.append([name, *("–" if c is None else f"{c:.2f}x" for c in cells)])
    return table(header, rows)


def targets_table(runs: list[dict[str, dict]]) -> list[str]:
    """Each target: its ratio (or figure) in each run, the median, and whether it is met."""
    rows = []
    for name, value, limit, how, unit in TARGETS:
        per_run = [value(engines) for engines in runs]
        middle = median_of(per_run)
        if middle is None:
            continue
        met = middle <= limit if how == "le" else middle >= limit
        if name.startswith("W6"):  # flat in every run, not in the median only
            met = all(v is not None and v <= limit for v in per_run)
        rows.append([name, " / ".join("–" if v is None else f"{fmt(v)}{unit}"
                                      for v in per_run),
                     f"{fmt(middle)}{unit}", "yes" if met else "no"])
    return table(["target", "each run", "median", "met"], rows)


def median_engines(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per engine and workload, the median of each figure over the runs that measured it;
    versions and errors from every run."""
    merged: dict[str, dict] = {}
    for engines in runs:
        for key, engine in engines.items():
            into = merged.setdefault(key, {})
            for workload, fields in engine.items():
                if workload == "errors":
                    into.setdefault("errors", []).extend(fields)
                elif isinstance(fields, dict):
                    slot = into.setdefault(workload, {})
                    for name, value in fields.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            slot.setdefault(name, []).append(value)
                else:
                    into[workload] = fields
    for engine in merged.values():
        for workload, fields in engine.items():
            if workload != "errors" and isinstance(fields, dict):
                engine[workload] = {name: statistics.median(values)
                                    for name, values in fields.items()}
    return merged


def render_markdown(results: dict) -> str:
    """The figures table, the ratios table, the targets, notes, versions and errors."""
    engines, machine = results["engines"], results["machine"]
    runs = results.get("runs") or [engines]
    present = [(key, label) for key, label in COLUMNS if key in engines]
    several = len(runs) > 1
    lines = [f"# Benchmarks, {machine['date']}", "",
             f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
             f"Python {machine['python']}, Ray {machine['ray']}"
             f"{', quick sizes' if machine['quick'] else ''}"
             f"{f'; each figure the median of {len(runs)} runs' if several else ''}.", "",
             *figures_table(engines), "",
             "Ratios, each a figure divided by another from the same run"
             f"{', the median over the runs' if several else ''} "
             "(W2 is a rate: there, above 1x means the numerator is faster; "
             "elsewhere above 1x means it is slower).", "",
             *ratios_table(runs), "",
             "Targets (a ratio within each run; W6 must hold in every run):", "",
             *targets_table(runs), "",
             "Every activity is `add1(x) = x + 1`. For raw Ray tasks, W4 is the round "
             "trip of an actor method call from the driver (the least that delivering a "
             "signal costs). The floor is a hand-written async Ray actor that writes one "
             "fsync'd record per start, step and signal. See benchmarks/README.md.", "",
             "Versions: " + "; ".join(f"{label}: {machine['versions'].get(key)}"
                                      for key, label in present), ""]
    errors = [f"- {label}: {error}" for key, label in present
              for error in engines[key].get("errors", [])]
    if errors:
        lines += ["Errors:", "", *errors, ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Bar charts of W1 p50, W2 and W3 per engine; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        log("matplotlib is not installed: skipping the plot")
        return
    engines = results["engines"]
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(5 * len(PLOTTED), 4.5))
    for ax, (title, w, f) in zip(axes, PLOTTED, strict=True):
        bars = [(key, label, figure(engines.get(key), w, f)) for key, label in COLUMNS]
        bars = [bar for bar in bars if bar[2] is not None]
        ax.bar([label for _, label, _ in bars], [value for _, _, value in bars],
               color=["C1" if key == "rayline" else "C0" for key, _, _ in bars])
        for i, (_, _, value) in enumerate(bars):
            ax.annotate(fmt(value), (i, value), ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    runs = len(results.get("runs") or [engines])
    fig.suptitle(f"rayline benchmarks, {results['machine']['date']}, "
                 f"{results['machine']['cores']} cores"
                 f"{f', median of {runs} runs' if runs > 1 else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(results: dict) -> None:
    """latest.json, latest.md and latest.png under benchmarks/results/."""
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS_DIR / "latest.md").write_text(render_markdown(results))
    plot(results, RESULTS_DIR / "latest.png")
    log(f"wrote {RESULTS_DIR}/latest.{{json,md,png}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true",
                        help="also run Temporal, DBOS and Ray Workflows (own venvs)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--runs", type=int, default=1,
                        help="run the suite this many times; report medians")
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        if args.runs > 1:
            log(f"=== run {number + 1} of {args.runs}")
        engines = run_local(args.quick)
        if args.peers:
            engines.update(run_peers(args.quick))
        runs.append(engines)
    engines = median_engines(runs)
    results = {"machine": machine_facts(engines, args.quick), "engines": engines,
               "runs": runs}
    write_results(results)
    print((RESULTS_DIR / "latest.md").read_text())


if __name__ == "__main__":
    main()
