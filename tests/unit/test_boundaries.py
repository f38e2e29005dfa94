"""What crosses a process is typed, and every call across Ray names its method.

Read from the source (no Ray is started): the Ray actors' methods, the protocols they
implement and the proxies that call them.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
from typing import Any

import pytest

from rayline.engine import api, reuse
from rayline.engine.host import Host
from rayline.errors import InvalidInputError
from rayline.messages import RunOutcome, RunStatus, StartRequest
from rayline.timeline import ParentRef, WorkflowStarted

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACTORS = ROOT / "actors"


def _methods(path: pathlib.Path, cls: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {f.name: f for f in node.body
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    raise AssertionError(f"no class {cls} in {path}")


def _annotations(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    out = [ast.unparse(a.annotation) for a in args if a.annotation is not None]
    return out + ([ast.unparse(fn.returns)] if fn.returns is not None else [])


@pytest.mark.parametrize(("path", "cls"), [
    (ACTORS / "host.py", "HostActor"), (ACTORS / "registry.py", "RegistryActor"),
    (ACTORS / "_directory.py", "RayHost"), (ACTORS / "_directory.py", "RayRegistry"),
])
def test_no_bare_dict_crosses_a_process(path: pathlib.Path, cls: str) -> None:
    for name, fn in _methods(path, cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        for annotation in _annotations(fn):
            assert "dict[str, Any]" not in annotation and annotation != "dict", (
                f"{cls}.{name} takes or returns {annotation}: use a typed message")


def test_the_ray_actors_and_proxies_answer_the_protocols_method_for_method() -> None:
    host_api = {n for n, _ in inspect.getmembers(api.HostAPI) if not n.startswith("_")}
    registry_api = {n for n, _ in inspect.getmembers(api.RegistryAPI) if not n.startswith("_")}
    assert host_api <= set(_methods(ACTORS / "host.py", "HostActor"))
    assert host_api <= set(_methods(ACTORS / "_directory.py", "RayHost"))
    assert host_api <= {n for n, _ in inspect.getmembers(Host)}
    assert registry_api <= set(_methods(ACTORS / "registry.py", "RegistryActor"))
    assert registry_api <= set(_methods(ACTORS / "_directory.py", "RayRegistry"))


def _sources() -> list[pathlib.Path]:
    return sorted([*ACTORS.glob("*.py"), *(ROOT / "runtime").rglob("*.py")])


def test_no_call_crosses_ray_by_a_method_name_in_a_string() -> None:
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            # getattr(x, name).remote(...) / getattr(x, name)(...) with a computed name
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) \
                    and isinstance(func.value.func, ast.Name) \
                    and func.value.func.id == "getattr":
                raise AssertionError(f"{path.name}:{node.lineno}: a call by attribute name")
            if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) \
                    and func.func.id == "getattr" and path.parent.name != "runtime":
                raise AssertionError(f"{path.name}:{node.lineno}: a call by attribute name")


# ----------------------------------------------------------------- reuse rules


def _latest(**fields: Any) -> WorkflowStarted:
    return WorkflowStarted(workflow_id="w", run_id="r1", epoch=3, workflow_name="f", args=[],
                           task_queue="q", host="h", time=0.0, seed=1, **fields)


def _request(**fields: Any) -> StartRequest:
    return StartRequest(workflow_id="w", task_queue="q", **fields)


def _closed(status: RunStatus) -> RunOutcome:
    return RunOutcome(status=status, run_id="r1", time=1.0)


PARENT = ParentRef(workflow_id="p", run_id="pr", seq=2, host="h")


@pytest.mark.parametrize(("request_fields", "latest_fields", "outcome", "want"), [
    ({"request_id": "a"}, {"request_id": "a"}, None, ("attach", 0)),
    ({"parent": PARENT}, {"parent": PARENT}, None, ("attach", 0)),
    ({}, {}, None, ("refuse", 0)),
    ({"id_reuse_policy": "terminate_if_running"}, {}, None, ("terminate", 4)),
    ({}, {}, _closed(RunStatus.CONTINUED), ("refuse", 0)),
    ({}, {}, _closed(RunStatus.COMPLETED), ("new", 4)),
    ({"id_reuse_policy": "reject_duplicate"}, {}, _closed(RunStatus.FAILED), ("refuse", 0)),
    ({"id_reuse_policy": "allow_duplicate_failed_only"}, {}, _closed(RunStatus.COMPLETED),
     ("refuse", 0)),
    ({"id_reuse_policy": "allow_duplicate_failed_only"}, {}, _closed(RunStatus.FAILED),
     ("new", 4)),
    ({"request_id": "b"}, {"request_id": "a"}, _closed(RunStatus.TERMINATED), ("new", 4)),
])
def test_reuse_rules(request_fields: dict[str, Any], latest_fields: dict[str, Any],
                     outcome: RunOutcome | None, want: tuple[str, int]) -> None:
    decision = reuse.decide(_request(**request_fields), _latest(**latest_fields), outcome)
    assert (decision.action, decision.epoch) == want


def test_an_unknown_reuse_policy_is_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="id_reuse_policy must be one of"):
        reuse.decide(_request(id_reuse_policy="sometimes"), _latest(), None)



@pytest.mark.parametrize("module", ["messages.py", "timeline.py", "_serde.py"])
def test_no_message_or_stored_record_has_an_untyped_dict_field(module: str) -> None:
    tree = ast.parse((ROOT / "runtime" / module).read_text())
    fields = [node for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
              for node in cls.body if isinstance(node, ast.AnnAssign)]
    assert len(fields) > 3
    for node in fields:
        shown = ast.unparse(node.annotation)
        assert "dict[str, Any]" not in shown and shown != "dict", (
            f"{module}:{node.lineno}: {shown}: type the field (a model, Fields, Payload)")
