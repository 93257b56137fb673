"""`emodistill tune` configs: a train config, the values to search and how to search them.

Searched values are named by their dotted path in the train config, the same names as
``key=value`` overrides: ``loss.exit_ce_weight``, ``loss.kd_weight``,
``loss.feature_weight``, ``loss.temperature``, ``optim.lr_backbone``, ``model.exits``.
They are the result columns too.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from emodistill.config import Config, apply_overrides, load_yaml
from emodistill.train.config import TrainConfig
from emodistill.evaluate.objectives import OBJECTIVES


class Dimension(Config):
    """One searched value: a list to choose from, or a range."""

    kind: Literal["choice", "uniform", "loguniform"] = Field(description="choice (of values), uniform or loguniform.")
    values: list[Any] | None = Field(None, description="The candidates of a choice.")
    low: float | None = Field(None, description="Lower end of a range.")
    high: float | None = Field(None, description="Upper end of a range.")

    @model_validator(mode="after")
    def _shape(self) -> Dimension:
        if self.kind == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.kind} range needs low < high, got low={self.low}, high={self.high}")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs low > 0")
        return self

    def sample_values(self) -> list[Any]:
        """Values that must validate in the train config (the ends, or every choice)."""
        return list(self.values) if self.kind == "choice" else [self.low, self.high]

    def to_tune(self, grid: bool = False):
        from ray import tune

        if self.kind == "choice":
            return tune.grid_search(list(self.values)) if grid else tune.choice(list(self.values))
        return tune.uniform(self.low, self.high) if self.kind == "uniform" else tune.loguniform(self.low, self.high)


class AshaOptions(Config):
    """ASHA: stop poor trials early, at rungs of reported epochs."""

    grace_period: int = Field(1, ge=1, description="Epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="Keep the best 1/reduction_factor at each rung.")


class SweepConfig(Config):
    """Everything `emodistill tune` needs."""

    train_config: str = Field(description="The train config every trial starts from (a YAML path).")
    train_overrides: list[str] = Field(
        default_factory=list, description="key=value changes of that config for every trial (e.g. optim.epochs=3)."
    )
    search: dict[str, Dimension] = Field(
        description="Dotted train-config path -> dimension, e.g. loss.kd_weight: {kind: uniform, low: 0, high: 2}."
    )
    objective: Literal[OBJECTIVES] = Field(
        "uar_latency_auc", description=f"What to maximise; every trial reports all of {list(OBJECTIVES)}."
    )
    latency_budget_ms: float = Field(
        100.0, gt=0, description="The budget of `budget_uar`: UAR of the deepest exit this fast (batch 1, p50)."
    )
    latency_seconds: float = Field(3.0, gt=0, description="Clip length at which exit latencies are measured.")
    latency_profile: str | None = Field(
        None,
        description="exit_profile.json (from `emodistill evaluate` on the serving hardware) to take exit "
        "latencies from; default: measure the cut models on the sweep's driver.",
    )
    latency_device: str | None = Field(
        None,
        description="Where the sweep's driver measures the cut models when there is no latency_profile: "
        "cpu, cuda or cuda:<n> (default cpu). With latency_profile, its kind must match the profile's device.",
    )
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Trials run first with exactly these values (every searched key), e.g. the paper's "
        "all-ones weights as a reference that the searched trials are ranked against.",
    )
    num_samples: int = Field(
        8, ge=1, description="Trials, points_to_evaluate included (with search_alg grid: repeats of the grid)."
    )
    search_alg: Literal["random", "grid"] = Field(
        "random", description="random: sample every dimension; grid: every combination of the choices."
    )
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops poor trials early; fifo runs all.")
    asha: AshaOptions = Field(default_factory=AshaOptions, description="ASHA settings.")
    max_concurrent_trials: int = Field(1, ge=1, description="Trials running at once (each runs its own trainer).")
    name: str = Field("sweep", description="Experiment name (a folder under storage_path).")
    storage_path: str = Field("runs/tune", description="Experiment state: local directory or s3:// prefix.")
    out_dir: str = Field("runs/tune/out", description="results.csv, results.md, pareto.png and best/ go here.")
    seed: int = Field(0, description="Seed of the search.")

    @model_validator(mode="after")
    def _search_and_points(self) -> SweepConfig:
        if not self.search:
            raise ValueError("`search` names no values to search")
        for i, point in enumerate(self.points_to_evaluate):
            if set(point) != set(self.search):
                raise ValueError(
                    f"points_to_evaluate[{i}] must give every searched value {sorted(self.search)}, got {sorted(point)}"
                )
        if self.search_alg == "grid" and self.points_to_evaluate:
            raise ValueError("points_to_evaluate needs search_alg random (a grid already lists its points)")
        return self

    def base_train_raw(self) -> dict:
        """The raw (unvalidated) train mapping every trial starts from, with relative local
        paths made absolute here: Tune runs each trial in a working directory of its own."""
        with open(self.train_config) as fh:
            raw = load_yaml(fh.read()) or {}
        raw = apply_overrides(raw, self.train_overrides)
        data = raw.get("data") or {}
        if isinstance(data.get("dataset"), str):
            data["dataset"] = _absolute(data["dataset"])
        backbone = (raw.get("model") or {}).get("backbone") or {}
        if isinstance(backbone.get("pretrained"), str) and os.path.isdir(backbone["pretrained"]):
            backbone["pretrained"] = _absolute(backbone["pretrained"])  # a local model directory, not a hub id
        return raw

    def trial_train_config(self, values: dict[str, Any], raw: dict | None = None) -> TrainConfig:
        """The train config of a trial with ``values`` (dotted path -> value)."""
        raw = self.base_train_raw() if raw is None else raw
        overrides = [f"{key}={_yaml_scalar(value)}" for key, value in values.items()]
        return TrainConfig.model_validate(apply_overrides(raw, overrides))

    def check(self) -> TrainConfig:
        """Validate the base config and every searched value in it (before any trial runs)."""
        raw = self.base_train_raw()
        base = TrainConfig.from_raw(raw, source=f"{self.train_config} (train_config)")
        for key, dim in self.search.items():
            for value in dim.sample_values():
                try:
                    self.trial_train_config({key: value}, raw)
                except ValueError as err:
                    raise ValueError(f"search.{key} = {value!r} is not valid in the train config: {err}") from err
        for i, point in enumerate(self.points_to_evaluate):
            try:
                self.trial_train_config(point, raw)
            except ValueError as err:
                raise ValueError(f"points_to_evaluate[{i}] is not valid in the train config: {err}") from err
        return base


def _absolute(uri: str) -> str:
    """A relative local path as an absolute one; URIs (s3://...) unchanged."""
    return uri if "://" in uri else os.path.abspath(uri)


def _yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: numbers, lists and strings round-trip through overrides
