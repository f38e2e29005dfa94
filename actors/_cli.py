"""The ``rayline`` command: operator tasks on a cluster.

    rayline resume [--address auto] [--storage URL] [--namespace NS]
    rayline list   [--status running] [--name N] [--queue Q] [--version V]
                   [--search FIELD<OP>JSON ...] [--started-after T] [--started-before T]
                   [--closed-after T] [--closed-before T] [--order-by KEY] [--limit N]
                   [--page-token TOKEN] [--address auto] [--storage URL] [--namespace NS]
    rayline count  [the filters of list] [--group-by status|workflow_name|task_queue|version]
    rayline workflow start NAME [--id ID] [--queue Q] [--args JSON_LIST] [...]
    rayline workflow show ID [...]
    rayline workflow signal ID SIGNAL [--data JSON] [...]
    rayline workflow result ID [--timeout SECONDS] [...]
    rayline workflow export ID [--execution] [--json] [...]
    rayline workflow cancel|terminate ID [--reason TEXT] [...]
    rayline workflow describe ID [...]
    rayline workflow release ID [--address auto] [--storage URL] [--namespace NS]
    rayline versions [...]
    rayline versions upgrade OLD NEW [--workflow ID ...] [...]
    rayline retire [...]
    rayline status [...]
    rayline hosts [...]
    rayline hosts drain HOST... | --node NODE_ID [...]

``list`` prints one JSON line per workflow (the latest run of each id) meeting every
filter, newest first, a page at a time (``--limit``, 100): the token of the next page
goes to stderr. ``--search`` takes ``FIELD=VALUE`` or an operator (``!=``, ``>``, ``>=``,
``<``, ``<=``), the value as JSON when it parses (``score>=0.9``, ``region=eu``); times
are ISO 8601 (UTC unless they say) or seconds since the epoch. ``count`` prints how many
meet the filters, per group with ``--group-by``.

``versions`` lists the code versions with runs: how many in each state, the hosts of
their open runs, and the ``runtime_env`` that brings their code. ``versions upgrade``
moves the open runs of version OLD to NEW: each is replayed on NEW's code first and
moved only if that works; it prints what moved and why the others stayed (exit status
1 when any stayed). ``retire`` stops now
the idle hosts the registry stops every ``RAYLINE_RETIRE_EVERY`` seconds (300): those of
a queue's older code versions and dedicated hosts, once they hold no run.

``status`` shows the hosts of each Ray node as a table: live, parked and stuck runs, the
share of time each host's event loop was busy, and which ones drain. ``hosts`` lists the
same as JSON lines; ``hosts drain``
moves every run of the hosts named (or of every host on a Ray node) to the rest of
their pools and stops them, before a node is taken away.

``workflow start`` starts a workflow registered by name (``Worker.create(...,
workflows=[...])``) with JSON arguments and prints its id; ``show`` prints a workflow's
state, host, version and what it waits on; ``signal`` sends a signal with JSON data;
``result`` waits for the result and prints it as JSON (a failed workflow's error goes to
stderr, exit status 1); ``export`` prints the HotMesh-style export (``--execution``: the
event list), as JSON (``--json``: on one line).

Errors (an unknown id, no cluster at ``--address``, bad input) are one line on stderr
and exit status 2.

``release`` lets a quarantined workflow (one whose code crashed its host again and
again) load and run again, after its code was fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

import rayline
from rayline.messages import HostStats, WorkflowDescription


def status_table(hosts: list[HostStats]) -> str:
    """Hosts grouped by node, with their runs and load, and a total line."""
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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=None, help="Ray address ('auto' joins a cluster)")
    common.add_argument("--storage", default=None, help="default $RAYLINE_STORAGE or ./.rayline")
    common.add_argument("--namespace", default="default")
    parser = argparse.ArgumentParser(prog="rayline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("resume", parents=[common], help="resume unfinished workflows")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--status", default=None, help="only workflows in this state")
    filters.add_argument("--name", default=None, help="only this workflow name")
    filters.add_argument("--queue", default=None, help="only this task queue")
    filters.add_argument("--version", default=None, help="only this code version")
    filters.add_argument("--search", action="append", default=[], metavar="FIELD<OP>VALUE",
                         help="a search-field condition (repeatable)")
    for bound in ("started-after", "started-before", "closed-after", "closed-before"):
        filters.add_argument(f"--{bound}", default=None, metavar="TIME")
    listing = commands.add_parser("list", parents=[common, filters],
                                  help="workflows, newest first, a page at a time")
    listing.add_argument("--order-by", default="-started_at")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--page-token", default=None)
    counting = commands.add_parser("count", parents=[common, filters],
                                   help="how many workflows meet the filters")
    counting.add_argument("--group-by", default=None)
    workflow = commands.add_parser("workflow", parents=[common], help="one workflow")
    workflow.add_argument("action", choices=["start", "show", "signal", "result", "export",
                                             "cancel", "terminate", "describe", "release"])
    workflow.add_argument("workflow_id", help="its id (start: the workflow's name)")
    workflow.add_argument("signal", nargs="?", help="signal: the signal's name")
    workflow.add_argument("--reason", default=None, help="cancel, terminate: why")
    workflow.add_argument("--id", dest="new_id", default=None, help="start: the id to give")
    workflow.add_argument("--queue", default="default", help="start: the task queue")
    workflow.add_argument("--args", default="[]", help="start: a JSON list of arguments")
    workflow.add_argument("--data", default="null", help="signal: JSON data")
    workflow.add_argument("--timeout", type=float, default=None, help="result: seconds")
    workflow.add_argument("--execution", action="store_true",
                          help="export: the event list (export_execution)")
    workflow.add_argument("--json", action="store_true", help="export: one line")
    versions = commands.add_parser("versions", parents=[common],
                                   help="code versions; upgrade OLD NEW moves runs")
    versions.add_argument("action", nargs="?", choices=["upgrade"])
    versions.add_argument("old", nargs="?", help="upgrade: the version its runs leave")
    versions.add_argument("new", nargs="?", help="upgrade: the version they move to")
    versions.add_argument("--workflow", action="append", dest="workflow_ids", default=None,
                          help="upgrade: only this workflow id (repeatable)")
    commands.add_parser("retire", parents=[common], help="stop idle hosts now")
    commands.add_parser("status", parents=[common], help="hosts per node: runs and load")
    hosts = commands.add_parser("hosts", parents=[common],
                                help="hosts per node; drain HOST... empties and stops them")
    hosts.add_argument("action", nargs="?", choices=["drain"])
    hosts.add_argument("names", nargs="*", help="drain: the hosts")
    hosts.add_argument("--node", default=None, help="drain: every host on this Ray node")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "versions" and args.action == "upgrade" and not (args.old and args.new):
        parser.error("versions upgrade needs OLD and NEW")
    try:
        return _run(parser, args)
    except (rayline.RaylineError, ConnectionError) as exc:  # one line, no traceback
        message = " ".join(str(exc).split())
        print(f"rayline: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 2


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise rayline.InvalidInputError(f"{what} is not JSON: {exc}") from None


def _workflow(client: rayline.Client, args: argparse.Namespace,
              parser: argparse.ArgumentParser) -> int:
    if args.action == "start":
        arguments = _json(args.args, "--args")
        if not isinstance(arguments, list):
            raise rayline.InvalidInputError("--args must be a JSON list")
        handle = client.workflow.start(workflow_name=args.workflow_id, args=arguments,
                                       workflow_id=args.new_id, task_queue=args.queue)
        print(json.dumps({"workflow_id": handle.workflow_id}))
        return 0
    handle = client.workflow.get_handle(args.workflow_id)
    if args.action == "signal":
        if not args.signal:
            parser.error("workflow signal needs ID and SIGNAL")
        handle.signal(args.signal, _json(args.data, "--data"))
        print(f"signalled {args.workflow_id}: {args.signal}")
    elif args.action == "result":
        try:
            value = handle.result(timeout=args.timeout)
        except rayline.WorkflowFailedError as exc:
            print(f"rayline: {args.workflow_id} failed: {' '.join(str(exc).split())}",
                  file=sys.stderr)
            return 1
        print(json.dumps(value, default=repr))
    elif args.action == "export":
        exported = handle.export_execution() if args.execution else handle.export()
        print(exported.model_dump_json(indent=None if args.json else 2, exclude_none=True))
    elif args.action == "show":
        sys.stdout.write(show(handle.describe()))
    elif args.action == "cancel":
        handle.cancel()
        print(f"cancelled {args.workflow_id}")
    elif args.action == "release":
        handle.release()
        print(f"released {args.workflow_id}")
    elif args.action == "terminate":
        handle.terminate(args.reason)
        print(f"terminated {args.workflow_id}")
    else:
        sys.stdout.write(handle.describe().model_dump_json(indent=2) + "\n")
    return 0


def show(described: WorkflowDescription) -> str:
    """A workflow's description for people: one field per line, then what it waits on."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(described.started_at))
    lines = [f"workflow  {described.workflow_id} ({described.workflow_name})",
             f"state     {described.state.value}",
             f"run       {described.run_id} (attempt {described.attempt})",
             f"started   {when}",
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


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    client = rayline.Client(address=args.address, storage=args.storage,
                            namespace=args.namespace)
    if args.command == "resume":
        hosts = client.resume()
        print(f"resumed unfinished workflows on {hosts} host(s) of namespace {args.namespace}")
    elif args.command == "workflow":
        return _workflow(client, args, parser)
    elif args.command == "retire":
        retired = client.run(client.aio.retire_idle())
        print(f"retired {len(retired)} idle host(s): {' '.join(retired)}")
    elif args.command == "hosts" and args.action == "drain":
        if not args.names and args.node is None:
            parser.error("hosts drain needs HOST names or --node NODE_ID")
        reports = [client.drain(name) for name in args.names]
        if args.node is not None:
            reports += client.drain_node(args.node)
        for report in reports:
            sys.stdout.write(report.model_dump_json() + "\n")
        return 0 if all(r.retired for r in reports) else 1
    elif args.command == "hosts":
        for stats in client.hosts():
            sys.stdout.write(stats.model_dump_json() + "\n")
    elif args.command == "status":
        sys.stdout.write(status_table(client.hosts()))
    elif args.command == "versions" and args.action == "upgrade":
        upgrade = client.upgrade(args.old, args.new, workflow_ids=args.workflow_ids)
        sys.stdout.write(upgrade.model_dump_json(indent=2) + "\n")
        return 0 if not upgrade.left else 1
    elif args.command == "versions":
        for version in client.versions():
            sys.stdout.write(version.model_dump_json() + "\n")
    elif args.command == "count":
        counted = client.workflow.count(**_filters(args), group_by=args.group_by)
        sys.stdout.write(counted.model_dump_json() + "\n")
    else:
        page = client.workflow.list(**_filters(args), order_by=args.order_by,
                                    limit=args.limit, page_token=args.page_token)
        for summary in page:
            sys.stdout.write(summary.model_dump_json() + "\n")
        if page.next_page_token:
            sys.stderr.write(f"more: --page-token {page.next_page_token}\n")
    return 0


_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of ``list`` and ``count`` from the command line."""
    search: dict[str, dict[str, Any]] = {}
    for text in args.search:
        at = min((text.find(op), -len(op), op) for op in _OPERATORS if op in text) \
            if any(op in text for op in _OPERATORS) else None
        if at is None or at[0] == 0:
            raise rayline.InvalidInputError(f"--search {text!r}: write FIELD<OP>VALUE, with "
                                            f"OP one of {' '.join(_OPERATORS)}")
        field, op, raw = text[:at[0]], at[2], text[at[0] + len(at[2]):]
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word: a string
        search.setdefault(field, {})[op] = value
    return {"status": args.status, "workflow_name": args.name, "task_queue": args.queue,
            "version": args.version, "search": search or None,
            **{bound: _time(getattr(args, bound), bound) for bound in (
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


if __name__ == "__main__":
    sys.exit(main())
