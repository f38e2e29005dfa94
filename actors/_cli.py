"""The ``rayline`` command: operator tasks on a cluster.

    rayline resume [--address auto] [--storage URL] [--namespace NS]
    rayline list   [--status running] [--address auto] [--storage URL] [--namespace NS]
"""

from __future__ import annotations

import argparse
import sys

import rayline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["resume", "list"])
    parser.add_argument("--address", default=None, help="Ray address ('auto' joins a cluster)")
    parser.add_argument("--storage", default=None, help="default $RAYLINE_STORAGE or ./.rayline")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--status", default=None, help="list: only workflows in this state")
    args = parser.parse_args(argv)
    client = rayline.Client(address=args.address, storage=args.storage,
                            namespace=args.namespace)
    if args.command == "resume":
        hosts = client.resume()
        print(f"resumed unfinished workflows on {hosts} host(s) of namespace {args.namespace}")
    else:
        for summary in client.workflow.list(status=args.status):
            sys.stdout.write(summary.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
