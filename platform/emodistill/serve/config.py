"""Arguments of the serving application (``build_app``), validated before anything starts.

A Serve YAML names ``emodistill.serve.app:build_app`` and passes these as ``args``; every
field has a default except the checkpoint, so the smallest config is one line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from emodistill.config import Config
from emodistill.exits import is_exit_name, sort_exits
from emodistill.serve.policy import PolicyConfig

TIER_AUTO = "auto"  # the confidence cascade; not a fixed-budget tier
TIER_CUSTOM = "custom"  # a request that sets X-Latency-Budget-Ms without a tier


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
        16, ge=1, description="Requests one replica accepts at once (its batch queue holds these)."
    )
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting for a replica beyond which callers are refused (-1: unbounded)."
    )
    max_batch_size: int = Field(8, ge=1, description="Most clips in one batch (1: no batching).")
    max_batch_audio_s: float | None = Field(
        16.0,
        gt=0,
        description="Most padded audio seconds in one batch (clips x the longest clip): a long clip is "
        "not padded together with many short ones. None: batches bounded by count only.",
    )
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="How long a batch waits for more clips before it runs, seconds. 0: a clip arriving at "
        "an idle replica runs at once; clips that arrive while a batch runs form the next one.",
    )
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
    nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Niceness of the model computation (Linux): above 0, exit replicas that share cores with "
        "the proxy and router yield to them, so refusals and short answers are not queued behind a batch.",
    )
    health_check_period_s: float = Field(10.0, gt=0, description="How often Serve calls the replica's check_health, seconds.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="How long a health check may take before it counts as failed, seconds.")

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

    @property
    def min_replicas(self) -> int:
        """Replicas always running (the router counts at least these)."""
        return max(1, self.autoscaling.min_replicas) if self.autoscaling else self.num_replicas

    def serve_options(self, name: str) -> dict:
        """Keyword arguments for ``Deployment.options``."""
        options: dict = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
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
        True,
        description="Continue from the shallower exit's block output instead of the waveform (asked for only "
        "when a deeper step can still fit the deadline).",
    )
    state_dtype: Literal["float32", "float16"] = Field(
        "float16", description="Precision of the block output passed between exits (float16 halves what moves)."
    )
    state_by_reference: bool = Field(
        True,
        description="Keep the block output in Ray's object store and pass a reference, so it moves from one "
        "exit replica to the next without a round trip through the router.",
    )


class RouterOptions(Config):
    """The HTTP ingress deployment."""

    num_replicas: int = Field(1, ge=1, description="Router replicas (ignored when autoscaling is set).")
    autoscaling: AutoscalingOptions | None = Field(
        None, description="Autoscale the router like the exits (the router's admission keeps its own queue short)."
    )
    max_ongoing_requests: int = Field(
        256,
        ge=1,
        description="Requests one router replica takes at once. Keep it high: the router refuses what it cannot "
        "answer in time itself (JSON, in milliseconds) before Serve's own queue would.",
    )
    max_queued_requests: int = Field(
        -1, ge=-1, description="Requests queued at the proxy beyond which Serve answers a plain 503 (-1: unbounded)."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs per router replica (it decodes audio).")

    def serve_options(self, retry_after_s: int) -> dict:
        """Keyword arguments for ``Deployment.options``."""
        options: dict = {
            "name": "router",
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": retry_after_s},
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }
        if self.autoscaling:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas
        return options


class PlanningOptions(Config):
    """How the router estimates each exit's latency (see ``emodistill.serve.policy``)."""

    quantile: float = Field(
        0.95, ge=0.5, le=0.999, description="Latency quantile the router plans on, from the profile and from what it observes."
    )
    half_life_s: float = Field(10.0, gt=0, description="Age at which an observed latency counts half as much as a new one, seconds.")
    prior_weight: float = Field(
        1.0,
        gt=0,
        description="How many fresh observations the profile's latency is worth (it never ages). Planning on "
        "p95, an exit looks faster than its profile only after about 19 x this many recent observations.",
    )
    window: int = Field(64, ge=4, description="Observations kept per exit.")
    prior_overhead_ms: float = Field(
        2.0, ge=0, description="Call overhead beyond model time and queue assumed before any is observed, ms."
    )
    min_headroom: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Under pressure (requests refused for load, late, or given up on), a deep exit must be "
        "expected within this share of the time left, else the soonest exit that fits answers: depth is "
        "shed before requests are. 1: never.",
    )
    recover_s: float = Field(10.0, gt=0, description="Seconds without misses to recover from min_headroom to the whole budget.")
    stall_factor: float | None = Field(
        3.0,
        gt=1,
        description="Give up on an exit call after this many times its expected latency (at least 20 ms more) "
        "while a shallower exit can still answer in time: a restarting replica or a wedged batch does not "
        "eat the fallback's time (null: wait until only the fallback's time is left).",
    )
    fallback_factor: float = Field(
        1.5,
        ge=1,
        description="Time kept for a fallback while waiting on a deeper exit: this many times the shallower "
        "exit's expected latency, plus fallback_margin_ms (giving up, cancelling and re-planning take time too).",
    )
    fallback_margin_ms: float = Field(
        10.0, ge=0, description="Time kept for a fallback beyond fallback_factor x its expected latency, ms."
    )
    response_margin_ms: float = Field(
        2.0, ge=0, description="Time kept back from every budget for the answer's way back to the client, ms."
    )
    report_ttl_s: float = Field(2.0, gt=0, description="How long a queue depth reported by an exit replica counts, seconds.")
    replica_ttl_s: float = Field(
        30.0, gt=0, description="A replica not heard from for this long is no longer counted, seconds."
    )
    probe_interval_s: float | None = Field(
        5.0,
        gt=0,
        description="Probe an exit this router has not heard from for this long with a short synthetic clip, "
        "seconds (null: never), so no exit is shunned for good on old numbers.",
    )


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
    timeline_max_seconds: float = Field(
        3600.0, gt=0, description="Longest recording POST /v1/timeline accepts, seconds (422 beyond, or an error line "
        "when a stream that did not declare its length runs over it)."
    )
    timeline_max_body_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Largest POST /v1/timeline body, bytes (413 beyond). It is spooled to a temporary file "
        "(memory holds at most 1 MiB of it) and decoded block by block, never whole.",
    )
    timeline_body_timeout_s: float = Field(
        600.0, gt=0, description="Longest time to receive a whole POST /v1/timeline body, seconds (408); the idle "
        "timeout between pieces is body_idle_timeout_s."
    )
    timeline_streams: int = Field(
        2, ge=1, description="Timelines a router replica segments at once (each on its own thread: decoding and "
        "voice-activity detection); more get a fast 503 busy with Retry-After."
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
    degrade_tiers: list[str] = Field(
        default_factory=list,
        description="Tiers (names, `auto`, or `custom` for X-Latency-Budget-Ms) that, when no exit is expected "
        "within budget, answer from the soonest exit flagged degraded (over_budget, and late if it is) "
        "instead of a 503 with Retry-After.",
    )
    planning: PlanningOptions = Field(default_factory=PlanningOptions, description="Latency estimates of the router.")
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
    eject_after_failures: int = Field(
        3, ge=1, description="Failed calls in a row (errors, dead replicas) after which an exit is skipped."
    )
    unavailable_cooldown_s: float = Field(
        5.0,
        ge=0,
        description="How long an ejected exit is skipped, seconds (doubling while it keeps failing); then it gets "
        "one call at a time until one succeeds. Each request tries an exit at most once, so 0 cannot loop.",
    )
    max_cooldown_s: float = Field(60.0, ge=0, description="Longest ejection, seconds.")
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
        if TIER_CUSTOM in value:
            raise ValueError(f"tier name {TIER_CUSTOM!r} is reserved for requests that set X-Latency-Budget-Ms")
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
        bad = sorted(set(self.degrade_tiers) - set(self.tiers) - {TIER_AUTO, TIER_CUSTOM})
        if bad:
            raise ValueError(f"degrade_tiers names {bad}, which are not tiers ({sorted(self.tiers)}, {TIER_AUTO}, {TIER_CUSTOM})")
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

    def policy_config(self) -> PolicyConfig:
        """The knobs of the router's :class:`~emodistill.serve.policy.LoadState`."""
        p = self.planning
        return PolicyConfig(
            quantile=p.quantile,
            half_life_s=p.half_life_s,
            prior_weight=p.prior_weight,
            window=p.window,
            prior_overhead_ms=p.prior_overhead_ms,
            report_ttl_s=p.report_ttl_s,
            replica_ttl_s=p.replica_ttl_s,
            probe_interval_s=p.probe_interval_s,
            min_headroom=p.min_headroom,
            recover_s=p.recover_s,
            eject_after_failures=self.eject_after_failures,
            cooldown_s=self.unavailable_cooldown_s,
            max_cooldown_s=self.max_cooldown_s,
        )
