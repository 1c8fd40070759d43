"""Scripted faults: answers, delays and dropped connections for matching requests."""

import fnmatch
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from processor.sandbox.errors import ErrorAnswer, Json


@dataclass
class FaultRule:
    """A scripted misbehaviour for requests matching a method and a path glob."""

    path: str
    method: str = "*"
    status: int | None = None
    times: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    hold_after_create: float | None = None
    for_seconds: float | None = None
    started: float = field(default_factory=time.monotonic)

    FIELDS: ClassVar[dict[str, str]] = {
        "path": "path",
        "method": "method",
        "status": "status",
        "times": "times",
        "retryAfter": "retry_after",
        "delay": "delay",
        "drop": "drop",
        "holdAfterCreate": "hold_after_create",
        "forSeconds": "for_seconds",
    }

    TYPES: ClassVar[dict[str, type]] = {
        "method": str,
        "status": int,
        "times": int,
        "retryAfter": str,
        "delay": float,
        "drop": bool,
        "holdAfterCreate": float,
        "forSeconds": float,
    }

    @classmethod
    def from_json(cls, data: Any) -> "FaultRule":
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ValueError(f"A fault rule is an object with a 'path' glob, got {data!r}.")
        unknown = set(data) - set(cls.FIELDS)
        if unknown:
            raise ValueError(
                f"Unknown fault rule fields {sorted(unknown)}: expected {sorted(cls.FIELDS)}."
            )
        values = {}
        for key, value in data.items():
            kind = cls.TYPES.get(key, str)
            if value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"Fault rule field {key!r} must be true or false, got {value!r}.")
            try:
                values[cls.FIELDS[key]] = kind(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Fault rule field {key!r} must be a {kind.__name__}, got {value!r}."
                ) from None
        rule = cls(**values)
        rule.method = rule.method.upper()
        if rule.status is not None and not 400 <= rule.status <= 599:
            raise ValueError(f"Fault rule status must be a 4xx or 5xx, got {rule.status!r}.")
        if rule.times is None and rule.for_seconds is None:
            rule.times = 1
        return rule

    def to_json(self) -> Json:
        return {key: getattr(self, attr) for key, attr in self.FIELDS.items()}

    def expired(self, now: float) -> bool:
        return self.for_seconds is not None and now - self.started >= self.for_seconds

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatch.fnmatchcase(path, self.path)

    def error(self) -> ErrorAnswer:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else {}
        return ErrorAnswer(self.status or 500, headers=headers)


class Faults:
    """Fault rules in order; each matching request consumes one use of the first match."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def take(self, method: str, path: str) -> FaultRule | None:
        now = time.monotonic()
        self.rules = [rule for rule in self.rules if not rule.expired(now)]
        for rule in self.rules:
            if rule.matches(method, path):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None
