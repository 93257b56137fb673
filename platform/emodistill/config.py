"""Config plumbing shared by every command: YAML in, validated pydantic objects out.

Every config in the project is a :class:`Config` (pydantic, unknown keys rejected, a
description on every field). ``key=value`` overrides from the command line are applied
to the raw YAML mapping before validation, so an override goes through exactly the same
checks as the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every config: strict about unknown keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: list[str] | None = None) -> C:
        """Load ``path`` (YAML), apply ``key.sub=value`` overrides, validate."""
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        return cls.model_validate(apply_overrides(raw, overrides or []))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``a.b.c=value`` overrides applied.

    Values are parsed as YAML scalars/flow collections (``3``, ``1e-4``, ``true``,
    ``[3, 8]``), so types match what the same value would have in the file.
    """
    out = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
