"""Option objects: retry policies and activity options. Defaults are written here once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from ._durations import Duration, optional_duration, parse_duration
from .errors import InvalidInputError

RAY_TASK_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "memory", "resources", "runtime_env", "accelerator_type",
    "scheduling_strategy", "label_selector", "max_calls", "placement_group",
    "placement_group_bundle_index",
})  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed activity is retried. Durations accept seconds, ``timedelta`` or ``"5s"``."""

    initial_interval: float = 1.0
    """Wait before the first retry."""
    backoff_coefficient: float = 2.0
    """Each wait is the previous one times this (>= 1)."""
    maximum_interval: float | None = None
    """Cap on a wait; defaults to 100x ``initial_interval``."""
    maximum_attempts: int = 3
    """Attempts in all, the first included; 0 means unlimited."""
    non_retryable_error_types: tuple[str, ...] = ()
    """Exception class names (``ValueError`` or ``pkg.mod.ValueError``) that are never retried."""

    def __init__(
        self,
        initial_interval: Duration = 1.0,
        backoff_coefficient: float = 2.0,
        maximum_interval: Duration | None = None,
        maximum_attempts: int = 3,
        non_retryable_error_types: tuple[str, ...] | list[str] = (),
    ) -> None:
        set_ = object.__setattr__
        set_(self, "initial_interval", parse_duration(initial_interval, what="initial_interval"))
        set_(self, "backoff_coefficient", float(backoff_coefficient))
        set_(self, "maximum_interval",
             optional_duration(maximum_interval, what="maximum_interval"))  # fmt: skip
        set_(self, "maximum_attempts", maximum_attempts)
        set_(self, "non_retryable_error_types", tuple(non_retryable_error_types))
        if self.backoff_coefficient < 1:
            raise InvalidInputError("RetryPolicy.backoff_coefficient must be >= 1")
        if not isinstance(maximum_attempts, int) or maximum_attempts < 0:
            raise InvalidInputError("RetryPolicy.maximum_attempts must be an int >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = self.maximum_interval or 100 * self.initial_interval
        return float(min(cap, self.initial_interval * self.backoff_coefficient ** (attempt - 1)))

    def allows_another(self, attempt: int) -> bool:
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts

    def retryable(self, error_type: str) -> bool:
        short = error_type.rsplit(".", 1)[-1]
        return not any(t in (error_type, short) for t in self.non_retryable_error_types)

    def to_json(self) -> dict[str, JsonValue]:
        return {**dataclasses.asdict(self),
                "non_retryable_error_types": list(self.non_retryable_error_types)}


@dataclass(frozen=True)
class ActivityOptions:
    """How one activity call runs. ``None`` means "not set here" so options can layer."""

    start_to_close: float | None = None
    """Longest time one attempt may run."""
    schedule_to_close: float | None = None
    """Longest time all attempts together may take."""
    heartbeat_timeout: float | None = None
    """Longest silence between two ``rayline.heartbeat`` calls of an attempt: past it the
    attempt is stopped and retried (not for local activities)."""
    retry: RetryPolicy | None = None
    """Retry policy; the default is ``RetryPolicy()``."""
    local: bool | None = None
    """Run in the workflow's host process (cheap steps), not as a Ray task: an async
    function on the host's event loop, a sync one on a host thread."""
    ray: dict[str, Any] = field(default_factory=dict)
    """Ray task options: num_cpus, num_gpus, memory, resources, runtime_env, ..."""

    @classmethod
    def build(cls, **options: Any) -> ActivityOptions:
        """Builds options from keyword arguments, with clear errors for unknown names."""
        ray = {k: options.pop(k) for k in list(options) if k in RAY_TASK_OPTIONS}
        if "task_queue" in options:
            raise InvalidInputError(
                "task_queue is not an activity option: an activity runs as a Ray task "
                "wherever Ray places it; choose nodes with Ray options (resources, "
                "label_selector, num_gpus) or run it in the host with local=True")
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)} - {"ray"}
        if unknown:
            raise InvalidInputError(f"unknown activity option(s): {', '.join(sorted(unknown))}")
        retry = options.get("retry")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        for name in ("start_to_close", "schedule_to_close", "heartbeat_timeout"):
            if options.get(name) is not None:
                options[name] = parse_duration(options[name], what=name)
        return cls(**options, ray={**options.pop("ray", {}), **ray})

    def merged(self, override: ActivityOptions) -> ActivityOptions:
        """These options with every field set in ``override`` replacing ours."""
        changes = {
            f.name: getattr(override, f.name)
            for f in dataclasses.fields(self)
            if f.name != "ray" and getattr(override, f.name) is not None
        }
        return dataclasses.replace(self, **changes, ray={**self.ray, **override.ray})

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.retry or RetryPolicy()

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {
            k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}) and k != "ray"
        }
        if self.retry is not None:
            out["retry"] = self.retry.to_json()
        ray = {k: v for k, v in self.ray.items() if k in ("num_cpus", "num_gpus", "memory",
                                                        "resources", "accelerator_type")}
        if ray:
            out["ray"] = ray
        return out


def retry_json(policy: Any) -> dict[str, Any] | None:
    """``retry=...`` of a start or a child, as a run keeps it.

    Raises:
        InvalidInputError: not a ``RetryPolicy``.
    """
    if policy is None:
        return None
    if not isinstance(policy, RetryPolicy):
        raise InvalidInputError(f"retry must be a rayline.RetryPolicy, got "
                                f"{type(policy).__name__}")
    return policy.to_json()
