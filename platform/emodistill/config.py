"""Config plumbing shared by every command: YAML in, validated pydantic objects out.

Every config in the project is a :class:`Config` (pydantic, unknown keys rejected, a
description on every field). ``key=value`` overrides from the command line are applied
to the raw YAML mapping before validation, so an override goes through exactly the same
checks as the file itself.

String values may name environment variables, ``${NAME}`` or ``${NAME:-default}``
(``$${`` is a literal ``${``). They are expanded when a config is validated, in the
process that validates it: on Kubernetes the buckets are set once per cluster
(``EMODISTILL_DATA_URI``, ``EMODISTILL_RUNS_URI`` in k8s/overlays/*/settings.yaml) and
the same config file works on every cluster.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every config: strict about unknown keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _expand_environment(cls, raw: Any) -> Any:
        """``${NAME}`` / ``${NAME:-default}`` in string values, from this process's environment."""
        return expand_env(raw)

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


_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, environ: dict[str, str] | None = None) -> Any:
    """``value`` with ``${NAME}`` and ``${NAME:-default}`` in its strings replaced.

    Walks mappings and lists; other values are returned as they are. ``${NAME:-default}``
    takes the default when NAME is unset or empty (as the shell does); ``${NAME}`` with
    NAME unset is an error naming the variable; ``$${NAME}`` stays ``${NAME}``.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(match: re.Match) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        found = env.get(name)
        if found:
            return found
        if default is not None:
            return default
        raise ValueError(f"{value!r} names the environment variable {name}, which is not set (or give a default: ${{{name}:-...}})")

    return _ENV_REF.sub(sub, value)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
