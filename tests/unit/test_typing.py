"""The typed surface as a user's type checker sees it: ``mypy --strict`` accepts the
README's code, and reports a wrong argument to an activity or a child, or a result used
as the wrong type."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def mypy(tmp_path: Any, **sources: str) -> dict[str, list[str]]:
    """Runs mypy (the project's strict settings) on ``sources`` (file stem -> code)
    against the package as it installs; each file's errors."""
    package = tmp_path / "tree" / "rayline"
    package.mkdir(parents=True)
    for entry in (ROOT / "runtime").iterdir():
        (package / entry.name).symlink_to(entry)
    (package / "actors").symlink_to(ROOT / "actors")
    files = []
    for stem, code in sources.items():
        path = tmp_path / f"{stem}.py"
        path.write_text(code)
        files.append(str(path))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path / "tree", capture_output=True, text=True,
        env={**os.environ, "MYPYPATH": str(tmp_path / "tree")})
    errors: dict[str, list[str]] = {stem: [] for stem in sources}
    for line in out.stdout.splitlines():
        stem = Path(line.split(":", 1)[0]).stem
        if stem in errors and ": error:" in line:
            errors[stem].append(line)
    assert out.returncode in (0, 1), out.stderr
    return errors


def test_the_readmes_code_passes_mypy_strict(tmp_path: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert "@rayline.workflow" in first and "proxy_activity" in first
    assert mypy(tmp_path, readme=first) == {"readme": []}


BAD = '''
import rayline
from rayline import workflow


@rayline.activity
def charge(order_id: str, cents: int) -> str:
    return order_id


@rayline.activity(start_to_close="1m")
async def ship(order_id: str) -> int:
    return 1


@rayline.workflow
async def child(n: int) -> str:
    return str(n)


@rayline.workflow
async def pay(order_id: str) -> str:
    run_charge = workflow.proxy_activity(charge)
    await run_charge(order_id, "12")  # wrong type: cents
    await workflow.execute_activity(ship)  # too few arguments
    parcels: str = await workflow.execute_activity(ship, order_id)  # it returns int
    await workflow.execute_child(child, "seven")  # wrong type: n
    return order_id


def main(client: rayline.Client) -> None:
    total: int = client.workflow.start(pay, args=["o-1"]).result()  # it returns str
'''


def test_mypy_reports_wrong_arguments_and_result_types(tmp_path: Any) -> None:
    errors = "\n".join(mypy(tmp_path, bad=BAD)["bad"])
    lines = {int(line.split(":")[1]) for line in errors.splitlines()}
    source = BAD.splitlines()
    expected = {i + 1 for i, text in enumerate(source) if text.endswith(("type: cents",
                "few arguments", "returns int", "type: n", "returns str"))}
    assert len(expected) == 5 and lines == expected, errors
