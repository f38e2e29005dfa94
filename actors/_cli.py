"""The ``rayline`` command: operator tasks on a cluster.

    rayline resume [--address auto] [--storage URL] [--namespace NS]
    rayline list   [--status running] [--address auto] [--storage URL] [--namespace NS]
    rayline workflow release ID [--address auto] [--storage URL] [--namespace NS]
    rayline workflow terminate ID [--reason TEXT] [...]
    rayline workflow describe ID [...]
    rayline versions [...]
    rayline retire [...]

``versions`` lists the code versions with runs: how many in each state, the hosts of
their open runs, and the ``runtime_env`` that brings their code. ``retire`` stops now
the idle hosts the registry stops every ``RAYLINE_RETIRE_EVERY`` seconds (300): those of
a queue's older code versions and dedicated hosts, once they hold no run.

``release`` lets a quarantined workflow (one whose code crashed its host again and
again) load and run again, after its code was fixed.
"""

from __future__ import annotations

import argparse
import sys

import rayline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command",
                        choices=["resume", "list", "workflow", "versions", "retire"])
    parser.add_argument("action", nargs="?", choices=["release", "terminate", "describe"],
                        help="workflow: what to do with workflow ID")
    parser.add_argument("workflow_id", nargs="?", help="workflow: its id")
    parser.add_argument("--reason", default=None, help="workflow terminate: why")
    parser.add_argument("--address", default=None, help="Ray address ('auto' joins a cluster)")
    parser.add_argument("--storage", default=None, help="default $RAYLINE_STORAGE or ./.rayline")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--status", default=None, help="list: only workflows in this state")
    args = parser.parse_args(argv)
    if args.command == "workflow" and (args.action is None or args.workflow_id is None):
        parser.error("workflow needs an action and a workflow ID")
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
    elif args.command == "versions":
        for version in client.versions():
            sys.stdout.write(version.model_dump_json() + "\n")
    else:
        for summary in client.workflow.list(status=args.status):
            sys.stdout.write(summary.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
