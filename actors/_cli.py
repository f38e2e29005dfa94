"""The ``rayline`` command: workflows and the cluster's hosts, from a terminal.

    rayline workflow start NAME [--id ID] [--queue Q] [--args JSON_LIST]
    rayline workflow list|count [FILTERS]            (also: rayline list|count)
    rayline workflow show|describe|history|result|export ID
    rayline workflow signal ID SIGNAL [--data JSON]
    rayline workflow query ID NAME [--args JSON_LIST]
    rayline workflow cancel|terminate|release ID [--reason TEXT] [--descend]
    rayline workflow reset ID [--to POINT] | fork ID [--from POINT] [--new-id ID]
    rayline workflow batch signal|cancel|terminate|reset [FILTERS] [--job-id J]
    rayline status                                   the cluster at a glance
    rayline hosts [drain HOST... | drain --node NODE_ID]
    rayline versions [upgrade OLD NEW [--workflow ID ...]]
    rayline resume | retire | gc [--dry-run] [--older-than DURATION]
    rayline replay [--workflow-name N | --workflow-id ID... | --file F...] [--module M]
    rayline workflow timeline ID                     the raw timeline, for replay --file
    rayline ui [--port N] [--host ADDR] [--read-only]   the web UI

Every command takes ``--address`` (a Ray cluster; ``auto`` joins the local one),
``--storage`` and ``--namespace``; every command that reads takes ``--json`` (one JSON
document, or one per line for lists). Without ``--json``, reads are tables.

``list`` shows the workflows (the latest run of each id) meeting every filter, newest
first, a page at a time (``--limit``, 100); the token of the next page goes to stderr.
``--search`` takes ``FIELD=VALUE`` or an operator (``!=``, ``>``, ``>=``, ``<``,
``<=``), the value as JSON when it parses (``score>=0.9``, ``region=eu``); times are ISO
8601 (UTC unless they say) or seconds since the epoch. ``count`` counts them, per group
with ``--group-by``.

``show`` prints a workflow's state, then its timeline as a table with durations, and a
waterfall of its activities when the terminal is wide enough; ``history`` lists every
event; ``export`` prints the HotMesh export (``--execution``: the event list) as JSON.
``result`` waits for the result and prints it as JSON (a failed workflow's error goes to
stderr, exit status 1).

``status`` shows the cluster: the hosts of each Ray node with their live, parked and
stuck runs and load, the code versions, and the workflows per status. ``hosts drain``
moves every run of the hosts named (or of every host on a Ray node) to the rest of their
pools and stops them, before a node is taken away. ``versions upgrade`` moves the open
runs of version OLD to NEW, each only if it replays there (exit status 1 when any
stayed). ``retire`` stops now the idle hosts of older code versions and dedicated hosts
(the registry does it every ``RAYLINE_RETIRE_EVERY`` seconds). ``release`` lets a
quarantined workflow load and run again, after its code was fixed.

``replay`` replays stored runs (the latest ``--limit`` ones, 100) against the workflow
code importable where it runs, before that code is deployed: each run it would break is
named with the first activation where the code went another way (exit status 1). It and
``workflow timeline`` read storage only (``--storage``, ``--namespace``): no Ray.

Storage is read and written through the codec of ``$RAYLINE_CODEC``, with keys from
``$RAYLINE_KEYS`` (docs/codec.md): the CLI takes no keys on its command line.

Errors (an unknown id, bad JSON, no cluster at ``--address``, unreachable storage, a
wrong option) are one line on stderr, ``rayline: error: ...``, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar

import click
from rich.console import Console
from rich.table import Table

import rayline
from rayline._definition import WorkflowDefinition
from rayline.export import ExecutionEvent, WorkflowExecution
from rayline.messages import HostStats, RunSummary, WorkflowDescription
from rayline.storage import RunStore, open_store
from rayline.storage.codec import Codec
from rayline.testing import History, Replayer

F = TypeVar("F", bound=Callable[..., Any])
PIPE_WIDTH = 200
"""Columns of a table written to a file or pipe."""
WATERFALL_WIDTH = 110
"""Terminal columns from which ``show`` draws its waterfall of activities."""


class Failed(Exception):
    """A command that ran and reports failure (exit status 1), its message on stderr."""


# ------------------------------------------------------------------- plumbing

def _console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (made per call, so tests capture it); to a
    file or pipe, as wide as a table needs (nothing wraps)."""
    file = sys.stderr if stderr else sys.stdout
    terminal = hasattr(file, "isatty") and file.isatty()
    return Console(file=file, highlight=False, soft_wrap=False,
                   width=None if terminal else PIPE_WIDTH)


def connection(fn: F) -> F:
    """Adds ``--address``, ``--storage`` and ``--namespace``."""
    for option in (
            click.option("--namespace", default="default", show_default=True,
                         help="The rayline namespace."),
            click.option("--storage", default=None, help="Storage URL (default "
                         "$RAYLINE_STORAGE or ./.rayline)."),
            click.option("--address", default=None,
                         help="Ray address ('auto' joins a running cluster).")):
        fn = option(fn)
    return fn


def connected(fn: F) -> F:
    """Adds the connection options and passes a ``client`` made with them."""
    @connection
    @functools.wraps(fn)
    def wrapper(*args: Any, address: str | None, storage: str | None, namespace: str,
                **kwargs: Any) -> Any:
        client = rayline.Client(address=address, storage=storage, namespace=namespace)
        return fn(client, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def as_json(fn: F) -> F:
    return click.option("--json", "json_out", is_flag=True,
                        help="JSON instead of a table.")(fn)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise rayline.InvalidInputError(f"{what} is not JSON: {exc}") from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


# ------------------------------------------------------------------- the group

@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             help="Durable workflows on Ray, from a terminal.",
             epilog="\b\n" + __doc__.split("\n\n")[1].replace("    rayline", "rayline")
             + "\n\nReads take --json; errors are one line on stderr, exit status 2.")
def cli() -> None:
    pass


@cli.command(help="Resume every unfinished workflow found in storage.")
@connected
def resume(client: rayline.Client) -> None:
    hosts = client.resume()
    click.echo(f"resumed unfinished workflows on {hosts} host(s)")


@cli.command(help="Stop the idle hosts of older code versions and dedicated hosts now.")
@connected
def retire(client: rayline.Client) -> None:
    retired = client.run(client.aio.retire_idle())
    click.echo(f"retired {len(retired)} idle host(s): {' '.join(retired)}")


# ------------------------------------------------------------------- list, count

_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")


def filtered(fn: F) -> F:
    """The filters ``list`` and ``count`` share."""
    for option in reversed([
            click.option("--status", default=None, help="Only workflows in this state."),
            click.option("--name", default=None, help="Only this workflow name."),
            click.option("--queue", default=None, help="Only this task queue."),
            click.option("--version", default=None, help="Only this code version."),
            click.option("--search", multiple=True, metavar="FIELD<OP>VALUE",
                         help="A search-field condition (repeatable)."),
            click.option("--started-after", default=None, metavar="TIME"),
            click.option("--started-before", default=None, metavar="TIME"),
            click.option("--closed-after", default=None, metavar="TIME"),
            click.option("--closed-before", default=None, metavar="TIME")]):
        fn = option(fn)
    return fn


def _filters(options: dict[str, Any]) -> dict[str, Any]:
    """The filters of ``list`` and ``count`` from the command line."""
    search: dict[str, dict[str, Any]] = {}
    for text in options.pop("search"):
        found = [(text.find(op), -len(op), op) for op in _OPERATORS if op in text]
        if not found or min(found)[0] == 0:
            raise rayline.InvalidInputError(f"--search {text!r}: write FIELD<OP>VALUE, with "
                                            f"OP one of {' '.join(_OPERATORS)}")
        at, _, op = min(found)
        field, raw = text[:at], text[at + len(op):]
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word: a string
        search.setdefault(field, {})[op] = value
    return {"status": options.pop("status"), "workflow_name": options.pop("name"),
            "task_queue": options.pop("queue"), "version": options.pop("version"),
            "search": search or None,
            **{bound: _time(options.pop(bound), bound) for bound in (
                "started_after", "started_before", "closed_after", "closed_before")}}


def _time(text: str | None, what: str) -> float | datetime | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise rayline.InvalidInputError(f"--{what.replace('_', '-')} {text!r}: give an ISO "
                                        "8601 time or seconds since the epoch") from None


@click.command("list", help="Workflows meeting the filters, newest first, a page at a time.")
@connected
@filtered
@click.option("--order-by", default="-started_at", show_default=True)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--page-token", default=None)
@as_json
def list_(client: rayline.Client, order_by: str, limit: int, page_token: str | None,
          json_out: bool, **options: Any) -> None:
    page = client.workflow.list(**_filters(options), order_by=order_by, limit=limit,
                                page_token=page_token)
    if json_out:
        for summary in page:
            click.echo(summary.model_dump_json())
    else:
        _console().print(_runs_table(page))
    if page.next_page_token:
        click.echo(f"more: --page-token {page.next_page_token}", err=True)


def _runs_table(runs: list[RunSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("WORKFLOW", "NAME", "STATE", "STARTED (UTC)", "CLOSED", "QUEUE", "HOST"):
        table.add_column(column, no_wrap=column != "WORKFLOW")
    for run in runs:
        table.add_row(run.workflow_id, run.workflow_name, run.state.value,
                      _when(run.started_at), _when(run.closed_at), run.task_queue, run.host)
    return table


@click.command(help="How many workflows meet the filters (per group with --group-by).")
@connected
@filtered
@click.option("--group-by", default=None,
              type=click.Choice(["status", "workflow_name", "task_queue", "version"]))
@as_json
def count(client: rayline.Client, group_by: str | None, json_out: bool,
          **options: Any) -> None:
    counted = client.workflow.count(**_filters(options), group_by=group_by)
    if json_out:
        click.echo(counted.model_dump_json())
        return
    click.echo(f"{counted.count} workflow(s)")
    for group, n in sorted(counted.groups.items(), key=lambda item: -item[1]):
        click.echo(f"  {group or '-':<24} {n}")


cli.add_command(list_)
cli.add_command(count)


# ------------------------------------------------------------------- one workflow

@cli.group(help="One workflow: start, show, signal, result, export, ...")
def workflow() -> None:
    pass


workflow.add_command(list_)
workflow.add_command(count)


@workflow.command(help="Start a workflow registered by name (Worker.create) and print its id.")
@connected
@click.argument("name")
@click.option("--id", "workflow_id", default=None, help="The id to give it.")
@click.option("--queue", default="default", show_default=True, help="Its task queue.")
@click.option("--args", "arguments", default="[]", help="A JSON list of arguments.")
def start(client: rayline.Client, name: str, workflow_id: str | None, queue: str,
          arguments: str) -> None:
    values = _json_arg(arguments, "--args")
    if not isinstance(values, list):
        raise rayline.InvalidInputError("--args must be a JSON list")
    handle = client.workflow.start(workflow_name=name, args=values, workflow_id=workflow_id,
                                   task_queue=queue)
    click.echo(json.dumps({"workflow_id": handle.workflow_id}))


@workflow.command(help="State, what it waits on, and its timeline with durations.")
@connected
@click.argument("workflow_id")
@as_json
def show(client: rayline.Client, workflow_id: str, json_out: bool) -> None:
    handle = client.workflow.get_handle(workflow_id)
    described = handle.describe()
    execution = handle.export_execution()
    if json_out:
        click.echo(json.dumps({"describe": described.model_dump(mode="json"),
                               "execution": execution.model_dump(mode="json")}))
        return
    console = _console()
    console.print(describe_text(described), end="")
    console.print(_timeline_table(execution))
    if console.width >= WATERFALL_WIDTH:
        waterfall = _waterfall(execution, console.width - 50)
        if waterfall is not None:
            console.print(waterfall)


def describe_text(described: WorkflowDescription) -> str:
    """A workflow's description for people: one field per line, then what it waits on."""
    lines = [f"workflow  {described.workflow_id} ({described.workflow_name})",
             f"state     {described.state.value}",
             f"run       {described.run_id} (attempt {described.attempt})",
             f"started   {_when(described.started_at)} UTC",
             f"queue     {described.task_queue} on {described.host}",
             f"version   {described.version or '-'}"]
    if described.search:
        lines.append(f"search    {json.dumps(described.search)}")
    if described.error:
        lines.append(f"error     {' '.join(described.error.split())}")
    for work in described.pending:
        detail = f" {work.signal_id!r}" if work.signal_id else \
            f" (attempt {work.attempt})" if work.attempt else ""
        lines.append(f"waits on  {work.kind}{detail}, call {work.seq}")
    return "\n".join(lines) + "\n"


def _calls(execution: WorkflowExecution) -> Iterator[tuple[ExecutionEvent,
                                                           ExecutionEvent | None]]:
    """Each durable call's opening event and the event that ended it (or ``None``)."""
    ended: dict[int, ExecutionEvent] = {}
    for event in execution.events:
        for ref in ("scheduled_event_id", "initiated_event_id", "started_event_id",
                    "wait_event_id"):
            origin = event.attributes.get(ref)
            if origin is not None and not event.attributes.get("retrying"):
                ended[origin] = event
    for event in execution.events:
        if event.event_type in ("activity_task_scheduled", "timer_started",
                                "signal_wait_started", "child_workflow_execution_started",
                                "signal_external_workflow_execution_initiated"):
            yield event, ended.get(event.event_id)


def _timeline_table(execution: WorkflowExecution) -> Table:
    table = Table(title="timeline", title_justify="left", box=None, header_style="bold")
    for column in ("CALL", "KIND", "WHAT", "STARTED (UTC)", "TOOK", "OUTCOME"):
        table.add_column(column, no_wrap=True)
    for opened, ended in _calls(execution):
        attrs = opened.attributes
        what = attrs.get("activity_type") or attrs.get("signal_name") or \
            attrs.get("child_workflow_id") or _seconds(attrs.get("duration_ms"))
        outcome = "running" if ended is None else ended.event_type.rsplit("_", 1)[-1]
        if ended is not None and ended.attributes.get("attempt", 1) > 1:
            outcome += f" (attempt {ended.attributes['attempt']})"
        table.add_row(attrs.get("timeline_key", ""), opened.category, str(what),
                      opened.event_time[11:23], _seconds(ended.duration_ms) if ended else "",
                      outcome)
    return table


def _waterfall(execution: WorkflowExecution, width: int) -> Table | None:
    """Bars of the run's activities on one time axis (from start to the last end)."""
    bars = [(o, e) for o, e in _calls(execution) if o.category == "activity"]
    if not bars:
        return None
    start = datetime.fromisoformat(execution.start_time).timestamp()

    def at(event: ExecutionEvent) -> float:
        return datetime.fromisoformat(event.event_time).timestamp() - start

    end = max([at(e) for _, e in bars if e is not None] + [at(o) for o, _ in bars]) or 1.0
    table = Table(title=f"activities over {end:.2f} s", title_justify="left", box=None,
                  show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    for opened, ended in bars:
        first = int(at(opened) / end * (width - 1))
        last = int(at(ended) / end * (width - 1)) if ended else width - 1
        bar = " " * first + "█" * max(1, last - first + 1)
        table.add_row(f"{opened.attributes['timeline_key']} "
                      f"{opened.attributes['activity_type'].rsplit('.', 1)[-1][:16]}", bar)
    return table


@workflow.command(help="Every event of the run, numbered, with durations.")
@connected
@click.argument("workflow_id")
@as_json
def history(client: rayline.Client, workflow_id: str, json_out: bool) -> None:
    execution = client.workflow.get_handle(workflow_id).export_execution()
    if json_out:
        for event in execution.events:
            click.echo(event.model_dump_json())
        return
    table = Table(box=None, header_style="bold")
    for column in ("#", "EVENT", "TIME (UTC)", "TOOK", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for event in execution.events:
        detail = " ".join(f"{k}={v}" for k, v in event.attributes.items()
                          if k not in ("kind", "execution_index") and v is not None)
        table.add_row(str(event.event_id), event.event_type, event.event_time[11:23],
                      _seconds(event.duration_ms), detail[:160])
    _console().print(table)


@workflow.command(help="The run's description (JSON).")
@connected
@click.argument("workflow_id")
@as_json
def describe(client: rayline.Client, workflow_id: str, json_out: bool) -> None:
    described = client.workflow.get_handle(workflow_id).describe()
    click.echo(described.model_dump_json(indent=None if json_out else 2))


@workflow.command(help="Wait for the result and print it as JSON.")
@connected
@click.argument("workflow_id")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
def result(client: rayline.Client, workflow_id: str, timeout: float | None) -> None:
    handle = client.workflow.get_handle(workflow_id)
    with _console(stderr=True).status(f"waiting for {workflow_id}"):
        try:
            value = handle.result(timeout=timeout)
        except rayline.WorkflowFailedError as exc:
            raise Failed(f"{workflow_id} failed: {' '.join(str(exc).split())}") from None
    click.echo(json.dumps(value, default=repr))


@workflow.command(help="Send a signal with JSON data.")
@connected
@click.argument("workflow_id")
@click.argument("signal")
@click.option("--data", default="null", help="JSON data.")
def signal(client: rayline.Client, workflow_id: str, signal: str, data: str) -> None:
    client.workflow.get_handle(workflow_id).signal(signal, _json_arg(data, "--data"))
    click.echo(f"signalled {workflow_id}: {signal}")


@workflow.command(help="Ask a running workflow's query handler.")
@connected
@click.argument("workflow_id")
@click.argument("name")
@click.option("--args", "arguments", default="[]", help="A JSON list of arguments.")
@as_json
def query(client: rayline.Client, workflow_id: str, name: str, arguments: str,
          json_out: bool) -> None:
    values = _json_arg(arguments, "--args")
    if not isinstance(values, list):
        raise rayline.InvalidInputError("--args must be a JSON list")
    answer = client.workflow.get_handle(workflow_id).query(name, *values)
    click.echo(json.dumps(answer, default=repr, indent=None if json_out else 2))


@workflow.command(help="The HotMesh export (--execution: the event list), as JSON.")
@connected
@click.argument("workflow_id")
@click.option("--execution", is_flag=True, help="export_execution instead of export.")
@click.option("--verbose", is_flag=True, help="With --execution: children nested.")
@click.option("--omit-results", is_flag=True, help="Leave every payload out.")
@as_json
def export(client: rayline.Client, workflow_id: str, execution: bool, verbose: bool,
           omit_results: bool, json_out: bool) -> None:
    handle = client.workflow.get_handle(workflow_id)
    exported = handle.export_execution(mode="verbose" if verbose else "sparse",
                                       omit_results=omit_results) if execution \
        else handle.export(values=not omit_results)
    click.echo(exported.model_dump_json(indent=None if json_out else 2, exclude_none=True))


def _point(text: str) -> int | str:
    return int(text) if text.isdigit() else text


@workflow.command(help="Re-run a workflow from a point of its latest run with the code the "
                  "hosts have now: the steps before it are not run again. Prints the new "
                  "run's id.")
@connected
@click.argument("workflow_id")
@click.option("--to", default="last_failure", show_default=True,
              help="An export event id, a marker key (-proxy-3-), last_failure, "
              "first_activity_failure or last_replayable.")
@click.option("--reason", default=None, help="Why (kept with both runs).")
@click.option("--no-signals", is_flag=True, help="Do not apply again the signals recorded "
              "after the point.")
def reset(client: rayline.Client, workflow_id: str, to: str, reason: str | None,
          no_signals: bool) -> None:
    handle = client.workflow.get_handle(workflow_id)
    handle.reset(_point(to), reason=reason, reapply_signals=not no_signals)
    click.echo(handle.run_id)


@workflow.command(help="A new workflow that takes over a run's steps before a point (as "
                  "reset's --to) and goes on with the current code. Prints its id.")
@connected
@click.argument("workflow_id")
@click.option("--from", "from_", default="last_failure", show_default=True,
              help="As reset's --to.")
@click.option("--new-id", default=None, help="The new workflow's id (default: a new guid).")
def fork(client: rayline.Client, workflow_id: str, from_: str, new_id: str | None) -> None:
    click.echo(client.workflow.fork(workflow_id, _point(from_),
                                    new_workflow_id=new_id).workflow_id)


@workflow.command(help="Apply ACTION (signal, cancel, terminate, reset) to every workflow "
                  "the filters match, as a job kept in storage: the same command again "
                  "resumes it after an interruption. Exit status 1 if any failed.")
@connected
@click.argument("action", type=click.Choice(["signal", "cancel", "terminate", "reset"]))
@filtered
@click.option("--signal", "signal_id", default=None, help="signal: its name.")
@click.option("--data", default="null", help="signal: its JSON data.")
@click.option("--reason", default=None, help="terminate, reset: why.")
@click.option("--to", default="last_failure", show_default=True,
              help="reset: where (an event id, a marker key, last_failure, ...).")
@click.option("--job-id", default=None, help="Name the job (default: from the command).")
@click.option("--rate", type=float, default=50.0, show_default=True,
              help="Actions per second at most.")
@as_json
def batch(client: rayline.Client, action: str, signal_id: str | None, data: str,
          reason: str | None, to: str, job_id: str | None, rate: float, json_out: bool,
          **options: Any) -> None:
    query = {k: v for k, v in _filters(options).items() if v is not None}
    if not query:
        raise rayline.InvalidInputError("a batch needs at least one filter")
    arguments: dict[str, Any] = {
        "signal": {"signal_id": signal_id, "data": _json_arg(data, "--data")},
        "terminate": {"reason": reason}, "cancel": {},
        "reset": {"to": _point(to), "reason": reason}}[action]
    console = _console(stderr=True)

    def progress(done: int, matched: int) -> None:
        if not json_out and (done % 50 == 0 or done == matched):
            console.print(f"{action}: {done} of {matched} done", markup=False)

    report = client.workflow.batch(query, action, job_id=job_id, rate=rate,
                                   progress=progress, **arguments)
    if json_out:
        click.echo(json.dumps(dataclasses.asdict(report)))
    else:
        _console().print(f"job {report.job_id}: {action} matched {report.matched}, "
                         f"{report.succeeded} done ({report.resumed} by an earlier call), "
                         f"{len(report.failed)} failed", markup=False)
        for workflow_id, error in sorted(report.failed.items()):
            _console().print(f"  {workflow_id}: {error}", markup=False)
    if report.failed:
        raise Failed(f"{len(report.failed)} of {report.matched} failed")


@cli.command(help="Delete from storage the closed runs whose expire has passed (with "
             "--older-than, also closed runs without one that closed that long ago), early "
             "signals past their expiry, and the index entries of the workflows removed. "
             "Open runs are never touched.")
@connected
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Also closed runs without an expire that closed this long ago (30d).")
@as_json
def gc(client: rayline.Client, dry_run: bool, older_than: str | None,
       json_out: bool) -> None:
    report = client.gc(dry_run=dry_run, older_than=older_than)
    if json_out:
        click.echo(json.dumps(dataclasses.asdict(report)))
        return
    verb = "would delete" if dry_run else "deleted"
    _console().print(f"{verb} {len(report.runs)} run(s) ({len(report.workflows)} workflow(s) "
                     f"whole) and {report.early_signals} early signal(s); "
                     f"{report.kept_open} open workflow(s) kept", markup=False)


def stored(fn: F) -> F:
    """Adds ``--storage`` and ``--namespace`` (a command that reads storage only: no Ray)."""
    for option in (
            click.option("--namespace", default="default", show_default=True,
                         help="The rayline namespace."),
            click.option("--storage", default=None, help="Storage URL (default "
                         "$RAYLINE_STORAGE or ./.rayline).")):
        fn = option(fn)
    return fn


@workflow.command(help="The latest run's raw timeline as JSON (what `rayline replay "
                  "--file` reads). Reads storage only.")
@stored
@click.argument("workflow_id")
def timeline(workflow_id: str, storage: str | None, namespace: str) -> None:
    runs = RunStore(open_store(storage), namespace, Codec.from_env())
    click.echo(History(*runs.load(workflow_id)).to_json())


@cli.command(help="Replay stored runs against the workflow code importable here (a run's "
             "stored import path, or a definition from --module by name): names each run "
             "the code would break and where. Exit status 1 if any would. Reads storage "
             "only; runs no activity.")
@stored
@click.option("--workflow-name", default=None, help="Only runs of this workflow.")
@click.option("--workflow-id", "workflow_ids", multiple=True, help="This run (repeatable).")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A timeline JSON file (`rayline workflow timeline`), instead of storage.")
@click.option("--module", "modules", multiple=True,
              help="Import this module: its workflows replay the runs of their names.")
@click.option("--limit", type=int, default=100, show_default=True,
              help="The most recently updated runs, at most this many.")
@as_json
def replay(storage: str | None, namespace: str, workflow_name: str | None,
           workflow_ids: tuple[str, ...], files: tuple[str, ...], modules: tuple[str, ...],
           limit: int, json_out: bool) -> None:
    sys.path.insert(0, os.getcwd())
    definitions = [value for name in modules
                   for value in vars(importlib.import_module(name)).values()
                   if isinstance(value, WorkflowDefinition)]
    replayer = Replayer(definitions, storage=storage, namespace=namespace)
    histories = [History.from_file(path) for path in files] if files else replayer.stored(
        workflow_ids or None, workflow_name=workflow_name, limit=limit)
    report = replayer.replay(histories)
    if json_out:
        for result in report.results:
            click.echo(json.dumps(dataclasses.asdict(result)))
    else:
        _console().print(str(report), markup=False)
    if not report.ok:
        raise Failed(f"{len(report.failed)} of {len(report.results)} runs would not replay")


def _closing(action: str) -> click.Command:
    @connected
    @click.argument("workflow_id")
    @click.option("--reason", default=None, help="terminate: why (kept with the run).")
    @click.option("--descend", is_flag=True, help="terminate: its open children too, "
                  "down the tree.")
    def command(client: rayline.Client, workflow_id: str, reason: str | None,
                descend: bool) -> None:
        handle = client.workflow.get_handle(workflow_id)
        if action == "cancel":
            handle.cancel()
        elif action == "terminate":
            handle.terminate(reason, descend=descend)
        else:
            handle.release()
        click.echo(f"{action}{'d' if action.endswith('e') else 'led'} {workflow_id}")
    helps = {"cancel": "Ask the workflow to cancel (it may clean up).",
             "terminate": "Stop the run now; no workflow code runs after.",
             "release": "Let a quarantined workflow load and run again."}
    return click.command(action, help=helps[action])(command)


for _action in ("cancel", "terminate", "release"):
    workflow.add_command(_closing(_action))


# ------------------------------------------------------------------- the cluster

def status_table(hosts: list[HostStats]) -> str:
    """Hosts grouped by node, with their runs and load, and a total line (plain text)."""
    rows = [("NODE", "HOST", "LIVE", "PARKED", "STUCK", "LOAD", "")]
    for stats in sorted(hosts, key=lambda s: (s.node or "", s.host)):
        rows.append(((stats.node or "?")[:12], stats.host, str(stats.running),
                     str(stats.parked), str(stats.stuck), f"{stats.load:.0%}",
                     "draining" if stats.draining else ""))
    nodes = len({s.node for s in hosts})
    rows.append((f"{nodes} node(s)", f"{len(hosts)} host(s)",
                 str(sum(s.running for s in hosts)), str(sum(s.parked for s in hosts)),
                 str(sum(s.stuck for s in hosts)), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip() + "\n" for row in rows)


@cli.command(help="The cluster at a glance: hosts per node, versions, workflows per status.")
@connected
@as_json
def status(client: rayline.Client, json_out: bool) -> None:
    hosts = client.hosts()
    versions = client.versions()
    counted = client.workflow.count(group_by="status")
    if json_out:
        click.echo(json.dumps({
            "namespace": client.namespace, "hosts": [h.model_dump(mode="json") for h in hosts],
            "versions": [v.model_dump(mode="json") for v in versions],
            "workflows": {"total": counted.count, **counted.groups}}))
        return
    console = _console()
    console.print(f"namespace {client.namespace}: {counted.count} workflow(s) "
                  + ", ".join(f"{n} {state}" for state, n in sorted(counted.groups.items())))
    console.print(status_table(hosts), end="")
    for version in versions:
        runs = ", ".join(f"{n} {state}" for state, n in sorted(version.runs.items()))
        console.print(f"version {version.id or '-'}: {runs}")


@cli.group(invoke_without_command=True, help="Hosts per node; drain HOST... empties them.")
@click.pass_context
@connection
@as_json
def hosts(context: click.Context, address: str | None, storage: str | None, namespace: str,
          json_out: bool) -> None:
    if context.invoked_subcommand is not None:
        return
    found = rayline.Client(address=address, storage=storage, namespace=namespace).hosts()
    if json_out:
        for stats in found:
            click.echo(stats.model_dump_json())
    else:
        click.echo(status_table(found), nl=False)


@hosts.command(help="Move every run of these hosts (or of a node's) away and stop them.")
@connected
@click.argument("names", nargs=-1)
@click.option("--node", default=None, help="Every host on this Ray node.")
def drain(client: rayline.Client, names: tuple[str, ...], node: str | None) -> None:
    if not names and node is None:
        raise click.UsageError("hosts drain needs HOST names or --node NODE_ID")
    with _console(stderr=True).status("draining: moving runs"):
        reports = [client.drain(name) for name in names]
        if node is not None:
            reports += client.drain_node(node)
    for report in reports:
        click.echo(report.model_dump_json())
    if not all(r.retired for r in reports):
        raise Failed("some runs could not move; their hosts stay")


@cli.group(invoke_without_command=True, help="Code versions; upgrade OLD NEW moves runs.")
@click.pass_context
@connection
@as_json
def versions(context: click.Context, address: str | None, storage: str | None,
             namespace: str, json_out: bool) -> None:
    if context.invoked_subcommand is not None:
        return
    client = rayline.Client(address=address, storage=storage, namespace=namespace)
    for version in client.versions():
        if json_out:
            click.echo(version.model_dump_json())
        else:
            runs = ", ".join(f"{n} {state}" for state, n in sorted(version.runs.items()))
            click.echo(f"{version.id or '-'}: {runs}; hosts {', '.join(version.hosts) or '-'}")


@versions.command(help="Move the open runs of OLD to NEW, each only if it replays there.")
@connected
@click.argument("old")
@click.argument("new")
@click.option("--workflow", "workflow_ids", multiple=True, help="Only this workflow id.")
def upgrade(client: rayline.Client, old: str, new: str,
            workflow_ids: tuple[str, ...]) -> None:
    with _console(stderr=True).status(f"moving the runs of {old} to {new}"):
        report = client.upgrade(old, new, workflow_ids=list(workflow_ids) or None)
    click.echo(report.model_dump_json(indent=2))
    if report.left:
        raise Failed(f"{len(report.left)} run(s) stayed on {old}")


# ------------------------------------------------------------------- the web UI

@cli.command(help="Serve the web UI on a local port (needs pip install 'rayline[ui]').")
@connection
@click.option("--port", type=int, default=8266, show_default=True,
              help="The port to serve on (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to bind: this machine only by default (reach it from "
              "elsewhere by port-forwarding).")
@click.option("--read-only", is_flag=True,
              help="No actions: signal, cancel, terminate, pause, unpause, trigger.")
def ui(address: str | None, storage: str | None, namespace: str, port: int, host: str,
       read_only: bool) -> None:
    importlib.import_module("rayline.actors.ui")  # without the ui extra: says what to install
    client = rayline.Client(address=address, storage=storage, namespace=namespace)
    server = client.ui(port, host=host, read_only=read_only, block=False)
    click.echo(f"rayline UI of namespace {namespace!r} on {server.url}"
               f"{' (read-only)' if read_only else ''}; Ctrl-C stops it")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: bound to {host}: whoever reaches this port can read "
                   f"workflows{'' if read_only else ' and act on them'}", err=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()


# ------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    """Runs the ``rayline`` command; returns its exit status (0 done, 1 the command
    reports failure, 2 an error: one line on stderr)."""
    try:
        cli.main(args=argv, prog_name="rayline", standalone_mode=False)
    except Failed as exc:
        click.echo(f"rayline: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("rayline: aborted", err=True)
        return 2
    except click.ClickException as exc:  # a wrong option or argument: one line too
        click.echo(f"rayline: error: {' '.join(exc.format_message().split())}", err=True)
        return 2
    except Exception as exc:  # rayline's errors, Ray's, anything: one line, no traceback
        message = " ".join(str(exc).split())[:2000]
        click.echo(f"rayline: error: {type(exc).__name__}: {message}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
