"""Config plumbing shared by every command: YAML in, validated pydantic objects out.

Every config in the project is a :class:`Config` (pydantic, unknown keys rejected, a
description on every field). ``key=value`` overrides from the command line are applied
to the raw YAML mapping before validation, so an override goes through exactly the same
checks as the file itself.

YAML is read with YAML 1.2's scalars (:func:`load_yaml`): only ``true``/``false`` are
booleans, so ``mixed_precision: no`` stays the string ``"no"`` (PyYAML's YAML 1.1 default
reads ``no``, ``off``, ``y`` as booleans), and ``1e-4`` is a number. Validation errors
name the dotted key, and an unknown key comes with "did you mean" the closest field.

String values may name environment variables, ``${NAME}`` or ``${NAME:-default}``
(``$${`` is a literal ``${``). They are expanded when a config is validated, in the
process that validates it: on Kubernetes the buckets are set once per cluster
(``EMODISTILL_DATA_URI``, ``EMODISTILL_RUNS_URI`` in k8s/overlays/*/settings.yaml) and
the same config file works on every cluster.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

C = TypeVar("C", bound="Config")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans and floats."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 scalars (``no``/``yes``/``on``/``off`` stay strings)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config that does not validate: one line per problem, dotted keys, suggestions."""


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
            raw = load_yaml(fh.read()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        return cls.from_raw(apply_overrides(raw, overrides or []), source=str(path))

    @classmethod
    def from_raw(cls: type[C], raw: dict[str, Any], source: str = "config") -> C:
        """Validate a raw mapping; a :class:`ConfigError` that reads well on a terminal."""
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(explain(cls, err, source)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def explain(cls: type[BaseModel], err: ValidationError, source: str = "config") -> str:
    """One line per validation error: ``a.b: message``; unknown keys get "did you mean"."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        where = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = field_names(cls, e["loc"][:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(known)}" if known else "")
            lines.append(f"  {where}: unknown key (not permitted here){hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = e.get("input")
            got = "" if isinstance(shown, (dict, list)) or e["type"] == "missing" else f" (got {shown!r})"
            lines.append(f"  {where}: {msg}{got}" if loc else f"  {msg}")
    noun = "problem" if len(lines) == 1 else "problems"
    return f"{source}: {len(lines)} {noun}\n" + "\n".join(lines)


def field_names(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` inside ``cls`` (empty if none)."""
    node: Any = cls
    for part in loc:
        model = _model_in(node)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            node = model.model_fields[part].annotation
            continue
        args = [a for a in typing.get_args(node) if a is not type(None)]
        origin = typing.get_origin(node)
        if origin in (dict, typing.Dict) and len(args) == 2:  # noqa: UP006
            node = args[1]
        elif origin in (list, typing.List) and args:  # noqa: UP006
            node = args[0]
        else:
            return []
    model = _model_in(node)
    return sorted(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class of an annotation (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


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
        node[parts[-1]] = load_yaml(text) if text.strip() else None
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
