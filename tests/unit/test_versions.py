"""Code versions as a driver derives them: given, from its Ray job's runtime_env, or from
the source of its own modules (real files, imported for real)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

from rayline import versions
from rayline.errors import InvalidInputError


def test_a_given_version_is_checked_and_kept_with_the_jobs_runtime_env() -> None:
    env: dict[str, Any] = {"working_dir": "gcs://_ray_pkg_ab.zip"}
    given = versions.of_runtime_env(env, "2026-11-30")
    assert given is not None and given.id == "2026-11-30" and given.runtime_env == env
    for bad in ("", "../up", "a b", "x" * 41, 7):
        with pytest.raises(InvalidInputError, match="version must be"):
            versions.of_runtime_env({}, bad)  # type: ignore[arg-type]


def test_a_jobs_runtime_env_names_its_version_by_content() -> None:
    assert versions.of_runtime_env({}) is None  # no runtime_env: the source decides
    a = versions.of_runtime_env({"working_dir": "gcs://_ray_pkg_aa.zip"})
    b = versions.of_runtime_env({"working_dir": "gcs://_ray_pkg_bb.zip"})
    again = versions.of_runtime_env({"working_dir": "gcs://_ray_pkg_aa.zip"})
    assert a is not None and b is not None and again is not None
    assert a.id.startswith("env-") and a.id != b.id and a.id == again.id


def test_the_source_version_follows_the_drivers_own_modules(tmp_path: Any) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    module = tmp_path / "pkg" / "flow.py"
    module.write_text("VERSION = 'v1'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        flow = importlib.import_module("pkg.flow")
        own = {"pkg": sys.modules["pkg"], "pkg.flow": flow, "json": sys.modules["json"],
               "pytest": sys.modules["pytest"], "rayline": sys.modules["rayline"]}
        found = versions.user_modules(own)
        assert [(name, root) for name, _, root in found] == [
            ("pkg", str(tmp_path)), ("pkg.flow", str(tmp_path))]  # no stdlib, no libraries
        v1 = versions.of_source(own)
        assert v1.id.startswith("src-") and versions.of_source(own) == v1
        assert str(tmp_path) in str(v1.runtime_env["env_vars"])  # hosts can import it
        module.write_text("VERSION = 'v2'\n")
        assert versions.of_source(own).id != v1.id
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("pkg.flow", "pkg"):
            sys.modules.pop(name, None)
