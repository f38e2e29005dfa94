"""The replayer: stored runs against changed code, before it is deployed; and the golden
timelines of every format, replayed on this code."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

import rayline
from rayline import workflow
from rayline.actors._cli import main as cli
from rayline.storage import LocalStore, RunStore
from rayline.testing import History, Replayer
from rayline.timeline import TIMELINE_VERSION

from . import flows
from .local import make_host
from .test_host import request

GOLDEN = Path(__file__).parents[1] / "golden" / "timelines"


@rayline.workflow(name="two_steps")
async def two_steps_reordered(n: int) -> int:
    """``flows.two_steps`` with its second step moved first (what breaks replay)."""
    if n % 5 == 0:
        n = await workflow.execute_activity(flows.second_step, n)
    return await workflow.execute_activity(flows.first_step, n)


@pytest.fixture(scope="module")
def fifty(tmp_path_factory: Any) -> str:
    """A store holding 50 completed runs of ``flows.two_steps``."""
    folder = str(tmp_path_factory.mktemp("store"))

    async def main() -> None:
        host = await make_host(RunStore(LocalStore(folder, fsync=False), "test"))
        for n in range(50):
            await host.start(request(flows.two_steps, n, workflow_id=f"r{n}"))
        for n in range(50):
            assert (await host.result(f"r{n}")).status == "completed"

    asyncio.run(main())
    return folder


def test_unchanged_code_replays_every_stored_run(fifty: str) -> None:
    replayer = Replayer(storage=fifty, namespace="test")  # the code as stored (import path)
    histories = replayer.stored(workflow_name="two_steps")
    report = replayer.replay(histories)
    assert len(report.results) == 50 and report.ok, str(report)


def test_reordered_code_names_the_runs_it_would_break_and_where(fifty: str) -> None:
    replayer = Replayer([two_steps_reordered], storage=fifty, namespace="test")
    report = replayer.replay(replayer.stored())
    assert len(report.results) == 50 and not report.ok
    assert sorted(r.workflow_id for r in report.failed) == sorted(
        f"r{n}" for n in range(0, 50, 5))  # the runs that took the second step
    broken = report.failed[0]
    assert broken.activation == 1  # the first activation scheduled first_step
    assert broken.recorded == [("activity", 1, "first_step")]
    assert broken.produced == [("activity", 1, "second_step")]
    assert "BREAKS" in str(report) and "40 of 50 runs replay" in str(report)


def test_a_history_file_and_the_command_line(fifty: str, tmp_path: Any, capsys: Any) -> None:
    runs = RunStore(LocalStore(fifty, fsync=False), "test")
    history = History(*runs.load("r5"))
    path = tmp_path / "r5.json"
    path.write_text(history.to_json())
    assert History.from_file(path) == history
    with pytest.raises(ValueError, match="not a rayline timeline"):
        History.from_json('{"started": {}}')

    assert cli(["workflow", "timeline", "r5", "--storage", fifty,
                "--namespace", "test"]) == 0
    assert History.from_json(capsys.readouterr().out) == history
    assert cli(["replay", "--file", str(path)]) == 0
    assert "1 of 1 runs replay" in capsys.readouterr().out
    assert cli(["replay", "--storage", fifty, "--namespace", "test", "--limit", "10",
                "--module", "tests.unit.test_replayer", "--json"]) == 1  # reordered
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 10 and {line["ok"] for line in lines} == {True, False}


def test_the_golden_timelines_of_every_format_replay_on_this_code() -> None:
    runs = RunStore(LocalStore(str(GOLDEN), fsync=False), "golden")
    histories = [History(*runs.load(workflow_id, epoch))
                 for workflow_id in (runs.workflow_id_of_key(k) for k in runs.all_workflow_keys())
                 for epoch in runs.epochs(workflow_id)]
    assert len(histories) >= 14
    report = Replayer(storage=str(GOLDEN), namespace="golden").replay(histories)
    assert report.ok, str(report)
    formats = {int(v) for p in GOLDEN.rglob("*") if p.is_file()
               for v in re.findall(rb'"v":(\d+)', p.read_bytes())}
    assert formats == set(range(1, TIMELINE_VERSION + 1)), formats
