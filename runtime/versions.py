"""Code versions: which code a run runs, so that a changed module never runs old code by
surprise and old runs finish on the code they started with.

A version is an id and the Ray ``runtime_env`` that brings its code to a process. Hosts
are per task queue *and* version (``host-<queue>-<version>-<n>``), created with that
``runtime_env``; a run stays on a host of its version for its whole life (restarts and
wakes included), and its activities inherit the host's ``runtime_env``.

A client's version is, in this order:

- the one it is given (``Client(version="2026-11-30")``), with its job's ``runtime_env``;
- ``env-<digest>`` of its Ray job's ``runtime_env`` when it has one (``ray job submit
  --working-dir``, ``ray.init(runtime_env=...)``): Ray names uploaded packages by their
  content, so a changed ``working_dir`` is a new version;
- ``src-<digest>`` of the source files of the modules the driver has imported that are
  neither the standard library, installed packages nor rayline (the driver's own code),
  with their folders on the hosts' ``PYTHONPATH``. Code defined in ``__main__`` travels
  pickled with each start and does not count.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import site
import sys
import sysconfig
from types import ModuleType
from typing import Mapping

from ._serde import Fields
from .errors import InvalidInputError
from .messages import CodeVersion

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def validate_version(value: object) -> str:
    """A version id given by a user: up to 40 letters, digits, ``.``, ``_`` and ``-`` (it
    is part of host names)."""
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise InvalidInputError(
            f"version must be 1 to 40 letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit), got {value!r}")
    return value


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def of_runtime_env(runtime_env: Fields, explicit: str | None = None) -> CodeVersion | None:
    """The version of a job with this ``runtime_env``; ``None`` when it has none and no
    version was given (then the source decides)."""
    if explicit is not None:
        return CodeVersion(id=validate_version(explicit), runtime_env=runtime_env)
    if not runtime_env:
        return None
    text = json.dumps(runtime_env, sort_keys=True, default=str)
    return CodeVersion(id=f"env-{_digest(text.encode())}", runtime_env=runtime_env)


def _library_roots() -> tuple[str, ...]:
    """Folders whose modules are not the driver's own code: the interpreter's, installed
    packages and rayline's own (``rayline.actors`` may live apart, in a source tree)."""
    actors = importlib.util.find_spec("rayline.actors")
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
             site.getusersitepackages(), *sysconfig.get_paths().values(),
             os.path.dirname(os.path.abspath(__file__)),
             *(actors.submodule_search_locations or [] if actors else [])}
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def user_modules(modules: Mapping[str, ModuleType | None]) -> list[tuple[str, str, str]]:
    """``(name, file, root)`` of each imported module that is the driver's own code:
    a ``.py`` file outside the standard library, installed packages and rayline;
    ``root`` is the ``sys.path`` folder it was imported from."""
    libraries = _library_roots()
    found = []
    for name, module in sorted(modules.items()):
        path = getattr(module, "__file__", None)
        if name == "__main__" or not path or not path.endswith(".py"):
            continue
        path = os.path.realpath(path)
        if path.startswith(libraries):
            continue
        root = os.path.dirname(path)
        for _ in range(name.count(".") + (path.endswith("__init__.py"))):
            root = os.path.dirname(root)
        found.append((name, path, root))
    return found


def of_source(modules: Mapping[str, ModuleType | None] | None = None) -> CodeVersion:
    """``src-<digest>`` of the driver's own modules (see the module docstring)."""
    h = hashlib.sha256()
    roots: list[str] = []
    for name, path, root in user_modules(dict(sys.modules) if modules is None else modules):
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError:  # gone since it was imported: its name still counts
            body = b""
        h.update(name.encode() + b"\0" + body + b"\0")
        if root not in roots:
            roots.append(root)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = os.pathsep.join(dict.fromkeys(roots + inherited))
    runtime_env: Fields = {"env_vars": {"PYTHONPATH": path}} if path else {}
    return CodeVersion(id=f"src-{h.hexdigest()[:12]}", runtime_env=runtime_env)
