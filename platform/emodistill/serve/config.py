"""Arguments of the serving application (``build_app``), validated before anything starts.

A Serve YAML names ``emodistill.serve.app:build_app`` and passes these as ``args``; every
field has a default except the checkpoint, so the smallest config is one line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from emodistill.config import Config
from emodistill.exits import is_exit_name, sort_exits

TIER_AUTO = "auto"  # the confidence cascade; not a fixed-budget tier


class AutoscalingOptions(Config):
    """Ray Serve autoscaling of one deployment (replaces a fixed ``num_replicas``)."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas kept running.")
    max_replicas: int = Field(4, ge=1, description="Most replicas the autoscaler may start.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests in flight per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(5.0, ge=0, description="How long load must stay high before adding replicas.")
    downscale_delay_s: float = Field(60.0, ge=0, description="How long load must stay low before removing replicas.")

    @model_validator(mode="after")
    def _order(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class DeploymentOptions(Config):
    """Replicas, queues, batching and resources of one deployment."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is set).")
    autoscaling: AutoscalingOptions | None = Field(None, description="Autoscale instead of a fixed replica count.")
    max_ongoing_requests: int = Field(
        16, ge=1, description="Requests one replica works on at once (the @serve.batch queue feeds from these)."
    )
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting for a replica beyond which callers get a 503 (-1: unbounded)."
    )
    max_batch_size: int = Field(8, ge=1, description="Largest dynamic batch (clips padded together).")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill, seconds.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (fractions share a GPU).")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per replica (default: the reserved CPUs, at least 1)."
    )
    runtime: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="What runs the cut model: torch (from the checkpoint) or onnxruntime (`onnx_model`, or "
        "the fp32 graph exported from the checkpoint when the replica starts). onnxruntime exits answer "
        "waveforms only: a cascade cannot continue from their block output (set cascade.reuse_hidden_states: false).",
    )
    onnx_model: str | None = Field(
        None,
        description="With runtime onnxruntime: an `emodistill export --format onnx` directory of this exit "
        "(local or s3://; e.g. --quantize int8). Default: export the fp32 graph at start-up.",
    )

    @model_validator(mode="after")
    def _runtime(self) -> DeploymentOptions:
        if self.onnx_model is not None and self.runtime != "onnxruntime":
            raise ValueError(f"onnx_model is set but runtime is {self.runtime!r}; set runtime: onnxruntime")
        return self

    @property
    def capacity(self) -> int:
        """Requests the deployment takes before it queues: replicas x max_ongoing_requests."""
        replicas = self.autoscaling.max_replicas if self.autoscaling else self.num_replicas
        return replicas * self.max_ongoing_requests

    def serve_options(self, name: str) -> dict:
        """Keyword arguments for ``Deployment.options``."""
        options: dict = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas
        return options


class CascadeConfig(Config):
    """Tier ``auto``: run the shallowest exit, go deeper only while unsure and within budget."""

    threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Stop at the first exit whose top-1 minus top-2 probability reaches this "
        "(pick it from the early_exit_margin sweep of `emodistill evaluate`).",
    )
    budget_ms: float = Field(200.0, gt=0, description="Latency budget of the whole cascade, ms.")
    reuse_hidden_states: bool = Field(
        True, description="Continue from the shallower exit's block output instead of the waveform."
    )


class RouterOptions(Config):
    """The HTTP ingress deployment."""

    num_replicas: int = Field(1, ge=1, description="Router replicas.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one router replica handles at once.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests queued at the proxy beyond which clients get a 503 (-1: unbounded)."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs per router replica (it decodes audio).")


class InputLimits(Config):
    """What one request may send, checked before the work it would cause (hostile input:
    headers that lie, decode bombs, multipart floods, slow uploads)."""

    min_sample_rate: int = Field(8000, ge=1, description="Lowest sample rate accepted, Hz (422 below).")
    max_sample_rate: int = Field(192000, ge=1, description="Highest sample rate accepted, Hz (422 above).")
    max_channels: int = Field(8, ge=1, description="Most channels accepted (422 beyond); they are averaged to mono.")
    max_decoded_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Most bytes a clip may decode to (frames x channels x 4); decoding stops there (422).",
    )
    decode_workers: int = Field(2, ge=1, description="Threads per router replica that decode audio and parse multipart bodies.")
    decode_queue: int = Field(
        64, ge=0, description="Jobs waiting for a decode thread beyond which requests get a fast 503 with Retry-After."
    )
    long_decode_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="Clips declared to decode to more than this (frames x channels x 4), or of undeclared "
        "length, are decoded one at a time on their own thread, so short clips never wait behind them.",
    )
    long_decode_queue: int = Field(4, ge=0, description="Long clips waiting for their thread beyond which they get a 503.")
    body_idle_timeout_s: float = Field(
        5.0, gt=0, description="Longest pause between two pieces of a request body before it is refused (408)."
    )
    body_timeout_s: float = Field(30.0, gt=0, description="Longest time to receive a whole request body (408).")
    multipart_max_parts: int = Field(8, ge=1, description="Most parts a multipart/form-data body may have (400 beyond).")
    multipart_max_field_bytes: int = Field(
        64 * 1024, ge=0, description="Largest multipart part other than `file`, bytes (413 beyond)."
    )

    @model_validator(mode="after")
    def _rates(self) -> InputLimits:
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("min_sample_rate exceeds max_sample_rate")
        return self


class ServeArgs(Config):
    """Everything ``build_app`` needs; the ``args`` of a Serve config."""

    checkpoint: str = Field(description="Checkpoint directory, local or s3:// (from `emodistill train`).")
    exits: list[str] | None = Field(
        None, description="Exits to deploy, e.g. [exit_1, exit_4] (default: every exit of the checkpoint)."
    )
    profile: str | None = Field(
        None,
        description="exit_profile.json from `emodistill evaluate` (default: report/exit_profile.json "
        "beside the checkpoint): expected latency per exit and clip length.",
    )
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"realtime": 20.0, "interactive": 100.0, "batch": 2000.0},
        description="Latency tier name -> budget in ms, chosen with the X-Latency-Tier header.",
    )
    default_tier: str = Field("interactive", description="Tier of requests that name none.")
    cascade: CascadeConfig = Field(default_factory=CascadeConfig, description="Tier `auto` (confidence cascade).")
    deployment: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Options of every exit deployment."
    )
    per_exit: dict[str, DeploymentOptions] = Field(
        default_factory=dict, description="Options for single exits, replacing `deployment` for them."
    )
    router: RouterOptions = Field(default_factory=RouterOptions, description="The HTTP router (ingress).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest request body, bytes; larger bodies get 413."
    )
    max_audio_seconds: float = Field(30.0, gt=0, description="Longest clip accepted, seconds (422 beyond).")
    min_audio_seconds: float = Field(0.1, gt=0, description="Shortest clip accepted, seconds (422 below).")
    input: InputLimits = Field(
        default_factory=InputLimits, description="Limits on uploads and audio headers, checked before decoding."
    )
    api_keys_env: str | None = Field(
        None,
        description="Environment variable holding comma-separated API keys; when set, every "
        "/v1 request needs `Authorization: Bearer <key>` (off when unset).",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After of 503 answers, seconds.")
    ewma_alpha: float = Field(
        0.2, gt=0, le=1, description="Weight of each new latency observation in the online correction."
    )
    unavailable_cooldown_s: float = Field(
        5.0, ge=0, description="How long an exit that failed a call is skipped before it is tried again."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where exit models run (auto: cuda if a GPU is reserved).")
    reprofile: bool = Field(
        True,
        description="A replica whose device, thread count or runtime differs from the exit profile's times "
        "itself at start-up (a short warm-up measurement at the profile's clip lengths); the router plans "
        "with those numbers instead of the foreign ones.",
    )

    @field_validator("exits")
    @classmethod
    def _exit_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [v for v in value if not is_exit_name(v)]
        if bad or not value:
            raise ValueError(f"exits must be a non-empty list of exit_<block> names, got {value}")
        return sort_exits(value)

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one tier is needed")
        if TIER_AUTO in value:
            raise ValueError(f"tier name {TIER_AUTO!r} is reserved for the confidence cascade (see `cascade`)")
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"tier budgets must be positive milliseconds, got {bad}")
        return value

    @model_validator(mode="after")
    def _default_tier(self) -> ServeArgs:
        if self.default_tier not in self.tiers and self.default_tier != TIER_AUTO:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of {sorted(self.tiers)} or {TIER_AUTO!r}")
        if self.min_audio_seconds >= self.max_audio_seconds:
            raise ValueError("min_audio_seconds must be below max_audio_seconds")
        return self

    @model_validator(mode="after")
    def _onnx_exits(self) -> ServeArgs:
        onnx = [n for n, o in {"deployment": self.deployment, **self.per_exit}.items() if o.runtime == "onnxruntime"]
        if onnx and self.cascade.reuse_hidden_states:
            raise ValueError(
                f"{onnx} run onnxruntime, which answers waveforms only; the cascade cannot continue from "
                "their block output: set cascade.reuse_hidden_states: false"
            )
        return self

    def options_for(self, exit: str) -> DeploymentOptions:
        return self.per_exit.get(exit, self.deployment)
