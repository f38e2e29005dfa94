"""The ``rayline`` command: operator tasks on a cluster.

    rayline resume [--address auto] [--storage URL] [--namespace NS]
    rayline list   [--status running] [--address auto] [--storage URL] [--namespace NS]
    rayline workflow release ID [--address auto] [--storage URL] [--namespace NS]
    rayline workflow terminate ID [--reason TEXT] [...]
    rayline workflow describe ID [...]
    rayline versions [...]
    rayline versions upgrade OLD NEW [--workflow ID ...] [...]
    rayline retire [...]
    rayline status [...]
    rayline hosts [...]
    rayline hosts drain HOST... | --node NODE_ID [...]

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

``release`` lets a quarantined workflow (one whose code crashed its host again and
again) load and run again, after its code was fixed.
"""

from __future__ import annotations

import argparse
import sys

import rayline
from rayline.messages import HostStats


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
    listing = commands.add_parser("list", parents=[common], help="workflows, newest first")
    listing.add_argument("--status", default=None, help="only workflows in this state")
    workflow = commands.add_parser("workflow", parents=[common], help="one workflow")
    workflow.add_argument("action", choices=["release", "terminate", "describe"])
    workflow.add_argument("workflow_id", help="its id")
    workflow.add_argument("--reason", default=None, help="terminate: why")
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
    client = rayline.Client(address=args.address, storage=args.storage,
                            namespace=args.namespace)
    if args.command == "resume":
        hosts = client.resume()
        print(f"resumed unfinished workflows on {hosts} host(s) of namespace {args.namespace}")
    elif args.command == "workflow":
        handle = client.workflow.get_handle(args.workflow_id)
        if args.action == "release":
            handle.release()
            print(f"released {args.workflow_id}")
        elif args.action == "terminate":
            handle.terminate(args.reason)
            print(f"terminated {args.workflow_id}")
        else:
            sys.stdout.write(handle.describe().model_dump_json(indent=2) + "\n")
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
    else:
        for summary in client.workflow.list(status=args.status):
            sys.stdout.write(summary.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
