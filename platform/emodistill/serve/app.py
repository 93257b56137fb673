"""The Serve application: one deployment per exit behind an SLA router.

``build_app`` is the one app builder; ``serve_configs/*.yaml`` import it as
``emodistill.serve.app:build_app`` with :class:`ServeArgs` as ``args``::

    proxy -> RouterDeployment (FastAPI ingress: decode, SLA, policy)
               -> exit_1 (ExitDeployment: cut model of block 1, @serve.batch)
               -> exit_3 ...
               -> exit_<L>

The deployments are thin: the router logic is ``emodistill.serve.router.Router`` and the
model is ``emodistill.serve.predictor.ExitPredictor``, both usable without Ray.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from ray import serve
from ray.serve import metrics as serve_metrics
from ray.serve.handle import DeploymentHandle

from emodistill.checkpoint import read_checkpoint_config
from emodistill.exit_profile import parse_profile
from emodistill.exits import deepest as deepest_exit
from emodistill.serve.config import ServeArgs
from emodistill.serve.policy import SATURATED, UNAVAILABLE, ProfileSet
from emodistill.serve.predictor import BlockState, Prediction, make_predictor
from emodistill.serve.requests import parse_keys
from emodistill.serve.api import make_api
from emodistill.serve.router import ExitCallError, Router

log = logging.getLogger("emodistill.serve")


@serve.deployment
class ExitDeployment:
    """One exit's cut model, dynamically batched."""

    def __init__(
        self,
        checkpoint: str,
        exit: str,
        device: str,
        threads: int,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        runtime: str = "torch",
        onnx_model: str | None = None,
        profile_device: dict | None = None,
        profile_seconds: list[float] | None = None,
    ):
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.predictor = make_predictor(checkpoint, exit, runtime, onnx_model, device=device, threads=threads)
        self.predictor.warmup()
        self.measured = self._reprofile(device, runtime, profile_device, profile_seconds or [1.0, 3.0])
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.resume.set_max_batch_size(max_batch_size)
        self.resume.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def predict(self, waves: list[np.ndarray], return_state: list[bool]) -> list[Prediction]:
        return self.predictor.predict(waves, return_state=any(return_state))

    @serve.batch
    async def resume(self, states: list[BlockState], return_state: list[bool]) -> list[Prediction]:
        # one batch must start from one block; mixed batches (rare) run per start block
        by_block: dict[int, list[int]] = {}
        for i, s in enumerate(states):
            by_block.setdefault(s.block, []).append(i)
        out: list[Prediction | None] = [None] * len(states)
        for idx in by_block.values():
            for i, pred in zip(idx, self.predictor.resume([states[i] for i in idx], any(return_state))):
                out[i] = pred
        return out  # type: ignore[return-value]

    def _reprofile(self, device: str, runtime: str, profile_device: dict | None, seconds: list[float]) -> dict | None:
        """Time this replica now when the profile was measured elsewhere (another device or
        thread count) or with another runtime; None when the profile's numbers hold here."""
        if profile_device is None:
            return None
        from emodistill.exit_profile import DeviceInfo

        here, there = DeviceInfo.current(device), DeviceInfo.model_validate(profile_device)
        if runtime == "torch" and here.same_as(there):
            return None
        latency = self.predictor.measure_latency(seconds)
        log.info("%s: profile measured on %s, serving %s on %s: re-profiled at start-up: %s",
                 self.predictor.exit, there.describe(), runtime, here.describe(), latency)
        return {"device": here.model_dump(), "latency_ms": latency}

    def describe(self) -> dict:
        return {**self.predictor.describe(), "measured": self.measured}


class HandleExitClient:
    """An exit deployment seen through its handle, with Serve's failures as ExitCallError."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def predict(self, wave: np.ndarray, return_state: bool = False) -> Prediction:
        return await self._call(self.handle.predict, wave, return_state)

    async def resume(self, state: BlockState, return_state: bool = False) -> Prediction:
        return await self._call(self.handle.resume, state, return_state)

    @staticmethod
    async def _call(method, *args) -> Prediction:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        try:
            return await method.remote(*args)
        except BackPressureError as err:
            raise ExitCallError(SATURATED, str(err)) from err
        except (DeploymentUnavailableError, RayActorError, ActorDiedError, ActorUnavailableError) as err:
            raise ExitCallError(UNAVAILABLE, str(err)) from err


class ServeMetrics:
    """Requests, latency, SLA misses, degradations per tier and exit, exported by Ray (Prometheus)."""

    def __init__(self):
        tags = ("tier", "exit")
        self.requests = serve_metrics.Counter("emodistill_requests", "Answered requests.", tag_keys=tags)
        self.sla_misses = serve_metrics.Counter("emodistill_sla_misses", "Answers later than their budget.", tag_keys=tags)
        self.degraded = serve_metrics.Counter("emodistill_degraded", "Answers from a shallower exit than asked.", tag_keys=tags)
        self.errors = serve_metrics.Counter("emodistill_errors", "Refused requests by error code.", tag_keys=("code",))
        self.latency = serve_metrics.Histogram(
            "emodistill_latency_ms",
            "Router latency per answer, ms.",
            boundaries=[2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
            tag_keys=tags,
        )

    def record(self, tier: str, exit: str, latency_ms: float, sla_miss: bool, degraded: bool) -> None:
        tags = {"tier": tier, "exit": exit}
        self.requests.inc(tags=tags)
        self.latency.observe(latency_ms, tags=tags)
        if sla_miss:
            self.sla_misses.inc(tags=tags)
        if degraded:
            self.degraded.inc(tags=tags)

    def error(self, code: str) -> None:
        self.errors.inc(tags={"code": code})


@serve.deployment
@serve.ingress()
class RouterDeployment:
    """The HTTP entry: FastAPI app built per replica around a :class:`Router`."""

    async def __init__(self, args: dict, profile: str, labels: list[str], exits: dict[str, DeploymentHandle]):
        self.args = ServeArgs.model_validate(args)
        keys: list[str] = []
        if self.args.api_keys_env:
            keys = parse_keys(os.environ.get(self.args.api_keys_env))
            if not keys:
                raise ValueError(f"api_keys_env is {self.args.api_keys_env!r} but that variable holds no keys")
        self.keys = keys
        profiles = ProfileSet.from_json(profile, only=list(exits))
        # name and version of the weights actually served (the profile may be older)
        deepest = deepest_exit(exits)
        described = {name: await handle.describe.remote() for name, handle in exits.items()}  # also warms the handles
        for name, d in described.items():
            if d.get("measured"):  # the replica timed itself: its device or runtime is not the profile's
                profiles = profiles.with_latency(name, {float(k): v["p50"] for k, v in d["measured"]["latency_ms"].items()})
        served = described[deepest]
        model = {"name": served["model"], "version": served["version"]}
        if profiles.model.get("version") not in (None, served["version"]):
            log.warning(
                "exit profile was measured on weights %s, serving %s: latencies are corrected online",
                profiles.model.get("version"), served["version"],
            )
        clients = {name: HandleExitClient(handle) for name, handle in exits.items()}
        self.router = Router(self.args, profiles, clients, labels, model, metrics=ServeMetrics())

    def __serve_build_asgi_app__(self):
        return make_api(self.router, self.keys, echo_request_id=False)  # Ray's proxy sets X-Request-Id


def _read_text(uri: str) -> str:
    import fsspec

    try:
        with fsspec.open(uri, "r") as fh:
            return fh.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no exit profile at {uri}: run `emodistill evaluate CHECKPOINT DATASET` first "
            "(it writes report/exit_profile.json beside the checkpoint), or set `profile`"
        ) from err


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


def _check_export(uri: str, exit: str, labels: list[str]) -> None:
    """An ``onnx_model`` must be an ONNX export of this exit with the checkpoint's labels."""
    from emodistill.inference.package import read_export

    info, _ = read_export(uri)
    if info.model_format != "onnx":
        raise ValueError(f"onnx_model {uri} holds a {info.model_format} model; export with --format onnx")
    if info.exit != exit or list(info.labels) != list(labels):
        raise ValueError(f"onnx_model {uri} is an export of {info.exit} with labels {info.labels}; "
                         f"it cannot serve {exit} of a checkpoint with labels {labels}")


def default_profile(checkpoint: str) -> str:
    from emodistill.evaluate.report import default_out

    return f"{default_out(checkpoint)}/exit_profile.json"


def build_app(args: ServeArgs | dict[str, Any]) -> serve.Application:
    """The application: an exit deployment per requested exit plus the router (ingress)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    # relative local paths are relative to where `serve run` is started, not to the replicas' cwd
    args = args.model_copy(update={k: _absolute(getattr(args, k)) for k in ("checkpoint", "profile")})
    ckpt = read_checkpoint_config(args.checkpoint)
    available = list(ckpt.model.heads)
    exits = args.exits or available
    unknown = [e for e in exits if e not in available]
    if unknown:
        raise ValueError(f"{args.checkpoint} has no {unknown}; it has {available}")
    bad = sorted(set(args.per_exit) - set(exits))
    if bad:
        raise ValueError(f"per_exit names {bad}, which are not deployed ({exits})")
    profile_text = _read_text(args.profile or default_profile(args.checkpoint))
    ProfileSet.from_json(profile_text, only=exits)  # fails here, not in a replica, on a missing exit
    profile = parse_profile(profile_text)
    profile_device = profile.device.model_dump() if args.reprofile else None
    profile_seconds = [float(s) for s in next(iter(profile.exits.values())).latency_ms]
    handles = {}
    for name in exits:
        opts = args.options_for(name)
        threads = opts.torch_threads or max(1, int(opts.num_cpus))
        onnx_model = _absolute(opts.onnx_model) if opts.onnx_model else None
        if onnx_model:
            _check_export(onnx_model, name, ckpt.model.labels)
        handles[name] = ExitDeployment.options(**opts.serve_options(name)).bind(
            args.checkpoint, name, args.device, threads, opts.max_batch_size, opts.batch_wait_timeout_s,
            opts.runtime, onnx_model, profile_device, profile_seconds,
        )
    router = args.router
    return RouterDeployment.options(
        name="router",
        num_replicas=router.num_replicas,
        max_ongoing_requests=router.max_ongoing_requests,
        max_queued_requests=router.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": args.retry_after_s},
        ray_actor_options={"num_cpus": router.num_cpus},
    ).bind(args.model_dump(mode="json"), profile_text, ckpt.model.labels, handles)
