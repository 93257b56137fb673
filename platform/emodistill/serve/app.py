"""The Serve application: one deployment per exit behind an SLA router.

``build_app`` is the one app builder; ``serve_configs/*.yaml`` import it as
``emodistill.serve.app:build_app`` with :class:`ServeArgs` as ``args``::

    proxy -> RouterDeployment (FastAPI ingress: decode, SLA, policy)
               -> exit_1 (ExitDeployment: cut model of block 1, length-bounded batches)
               -> exit_3 ...
               -> exit_<L>

The deployments are thin: the router logic is ``emodistill.serve.router.Router`` (its
policy ``emodistill.serve.policy.LoadState``), an exit replica is
``emodistill.serve.replica.ExitWorker`` around ``emodistill.serve.predictor.ExitPredictor``
(or ``OnnxExitPredictor``: ``runtime: onnxruntime``); all of them run without Ray. A replica
whose device or runtime is not the exit profile's times itself at start-up (``reprofile``)
and the router's ``LoadState`` plans with those numbers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve import metrics as serve_metrics
from ray.serve.handle import DeploymentHandle

from emodistill.checkpoint import read_checkpoint_config
from emodistill.exit_profile import parse_profile
from emodistill.exits import deepest as deepest_exit
from emodistill.serve.api import make_api
from emodistill.serve.config import ServeArgs
from emodistill.serve.policy import ERROR, SATURATED, TIMEOUT, UNAVAILABLE
from emodistill.serve.predictor import BlockState, make_predictor
from emodistill.serve.replica import ExitAnswer, ExitWorker, to_wire
from emodistill.serve.requests import parse_keys
from emodistill.serve.router import ExitCallError, Router

log = logging.getLogger("emodistill.serve")


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


@serve.deployment
class ExitDeployment:
    """One exit's cut model behind a deadline-aware, length-bounded batch queue
    (:class:`~emodistill.serve.replica.ExitWorker`)."""

    def __init__(
        self,
        checkpoint: str,
        exit: str,
        device: str,
        threads: int,
        worker_options: dict,
        state_dtype: str = "float32",
        state_by_reference: bool = True,
        runtime: str = "torch",
        onnx_model: str | None = None,
        profile_device: dict | None = None,
        profile_seconds: list[float] | None = None,
    ):
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        predictor = make_predictor(checkpoint, exit, runtime, onnx_model, device=device, threads=threads)
        predictor.warmup()
        self.measured = reprofile(predictor, device, runtime, profile_device, profile_seconds or [1.0, 3.0])
        self.worker = ExitWorker(predictor, state_dtype=state_dtype, replica=_replica_id(), **worker_options)
        self.by_reference = state_by_reference

    async def predict(self, wave: np.ndarray, left_ms: float, return_state: bool = False) -> ExitAnswer:
        """Answer one clip unless ``left_ms`` (the caller's patience) runs out before its batch starts."""
        return self._shipped(await self.worker.predict(wave, left_ms, return_state))

    async def resume(self, state: BlockState | ray.ObjectRef, left_ms: float, return_state: bool = False) -> ExitAnswer:
        """Continue from a shallower exit's block output (or a reference to it in the object store)."""
        if isinstance(state, ray.ObjectRef):
            state = await state
        return self._shipped(await self.worker.resume(state, left_ms, return_state))

    def _shipped(self, answer: ExitAnswer) -> ExitAnswer:
        """The block output goes into the object store: the next exit fetches it from here."""
        pred = answer.prediction
        if self.by_reference and pred is not None and pred.state is not None:
            answer.state_ref = ray.put(pred.state)
            pred.state = None
        return answer

    def check_health(self) -> None:
        """Serve's health check: fails when the model keeps failing (Serve replaces the replica)."""
        self.worker.check_health()

    def describe(self) -> dict:
        return {**self.worker.predictor.describe(), "measured": self.measured}

    def stats(self) -> dict:
        """What this replica did with its calls: received, computed, expired, cancelled, failed, batches."""
        return {"replica": self.worker.replica, "depth": self.worker.depth, **asdict(self.worker.stats)}

    def inject_fault(self, kind: str | None, delay_s: float = 0.0, calls: int | None = None) -> None:
        """Resilience testing: make this replica's next ``calls`` batches ``raise`` or run
        ``slow`` (``delay_s`` more); None clears. Not reachable over HTTP."""
        self.worker.inject_fault(kind, delay_s, calls)


def reprofile(predictor, device: str, runtime: str, profile_device: dict | None, seconds: list[float]) -> dict | None:
    """Time ``predictor`` now when the exit profile was measured elsewhere (another device or
    thread count) or with another runtime: {"device", "latency_ms": {"<s>": {"p50", "p95"}}};
    None when the profile's numbers hold here (or re-profiling is off)."""
    if profile_device is None:
        return None
    from emodistill.exit_profile import DeviceInfo

    here, there = DeviceInfo.current(device), DeviceInfo.model_validate(profile_device)
    if runtime == "torch" and here.same_as(there):
        return None
    latency = predictor.measure_latency(seconds)
    log.info("%s: profile measured on %s, serving %s on %s: re-profiled at start-up: %s",
             predictor.exit, there.describe(), runtime, here.describe(), latency)
    return {"device": here.model_dump(), "latency_ms": latency}


class HandleExitClient:
    """An exit deployment seen through its handle: gives up after the time it was given
    (cancelling the call, so Serve drops it from its queue or the replica's), Serve's
    failures as ExitCallError."""

    def __init__(self, name: str, handle: DeploymentHandle):
        self.name = name
        self.handle = handle

    async def call(self, method: str, payload: Any, left_ms: float, return_state: bool) -> ExitAnswer:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

        if method == "predict":
            payload = to_wire(payload)
        response = getattr(self.handle, method).remote(payload, left_ms, return_state)
        try:
            return await asyncio.wait_for(_result(response), max(left_ms, 0.0) / 1000.0)
        except (asyncio.TimeoutError, RequestCancelledError) as err:
            # cancel once the fallback call is on its way: cancelling talks to the replica
            asyncio.get_running_loop().call_soon(response.cancel)
            raise ExitCallError(TIMEOUT, f"{self.name} gave no answer within {left_ms:.0f} ms") from err
        except asyncio.CancelledError:  # the request itself was cancelled: so is its exit call
            response.cancel()
            raise
        except BackPressureError as err:
            raise ExitCallError(SATURATED, f"{self.name} refused the call: {err}") from err
        except (DeploymentUnavailableError, RayActorError, ActorDiedError, ActorUnavailableError) as err:
            raise ExitCallError(UNAVAILABLE, f"{self.name} is unreachable: {type(err).__name__}") from err
        except Exception as err:  # the replica raised (RayTaskError wraps it)
            cause = getattr(err, "cause", None) or err
            raise ExitCallError(ERROR, f"{self.name} failed: {type(cause).__name__}: {str(cause)[:200]}") from err


async def _result(response):
    return await response


class ServeMetrics:
    """Answers, latency, late answers, degradations per tier and exit; refusals by code
    (exported by Ray to Prometheus)."""

    def __init__(self):
        tags = ("tier", "exit")
        self.requests = serve_metrics.Counter("emodistill_requests", "Answered requests.", tag_keys=tags)
        # the metric keeps its name (dashboards use it); an SLA miss is an answer with late: true
        self.sla_misses = serve_metrics.Counter(
            "emodistill_sla_misses", "Answers later than their budget (late: true).", tag_keys=tags
        )
        self.degraded = serve_metrics.Counter("emodistill_degraded", "Answers from a shallower exit than planned.", tag_keys=tags)
        self.errors = serve_metrics.Counter("emodistill_errors", "Refused requests by error code.", tag_keys=("code",))
        self.latency = serve_metrics.Histogram(
            "emodistill_latency_ms",
            "Router latency per answer (from arrival), ms.",
            boundaries=[2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
            tag_keys=tags,
        )

    def record(self, tier: str, exit: str, latency_ms: float, late: bool, degraded: bool) -> None:
        tags = {"tier": tier, "exit": exit}
        self.requests.inc(tags=tags)
        self.latency.observe(latency_ms, tags=tags)
        if late:
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
        doc = parse_profile(profile).only(list(exits))
        # name and version of the weights actually served (the profile may be older)
        deepest = deepest_exit(exits)
        described = {name: await handle.describe.remote() for name, handle in exits.items()}  # also warms the handles
        for name, d in described.items():
            if d.get("measured"):  # the replica timed itself: its device or runtime is not the profile's
                doc = doc.with_latency(name, d["measured"]["latency_ms"])  # LoadState plans with these
        served = described[deepest]
        model = {"name": served["model"], "version": served["version"]}
        if doc.model.get("version") not in (None, served["version"]):
            log.warning(
                "exit profile was measured on weights %s, serving %s: latencies are corrected online",
                doc.model.get("version"), served["version"],
            )
        clients = {name: HandleExitClient(name, handle) for name, handle in exits.items()}
        self.router = Router(self.args, doc, clients, labels, model, metrics=ServeMetrics(), replica=_replica_id())

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
    profile = parse_profile(profile_text).only(exits)  # fails here, not in a replica, on a missing exit
    profile_device = profile.device.model_dump() if args.reprofile else None
    profile_seconds = [float(s) for s in next(iter(profile.exits.values())).latency_ms]
    handles = {}
    for name in exits:
        opts = args.options_for(name)
        threads = opts.torch_threads or max(1, int(opts.num_cpus))
        onnx_model = _absolute(opts.onnx_model) if opts.onnx_model else None
        if onnx_model:
            _check_export(onnx_model, name, ckpt.model.labels)
        worker_options = {
            "max_batch_size": opts.max_batch_size,
            "max_batch_audio_s": opts.max_batch_audio_s,
            "batch_wait_s": opts.batch_wait_timeout_s,
            "nice": opts.nice,
        }
        handles[name] = ExitDeployment.options(**opts.serve_options(name)).bind(
            args.checkpoint, name, args.device, threads, worker_options, args.cascade.state_dtype,
            args.cascade.state_by_reference, opts.runtime, onnx_model, profile_device, profile_seconds,
        )
    return RouterDeployment.options(**args.router.serve_options(args.retry_after_s)).bind(
        args.model_dump(mode="json"), profile_text, ckpt.model.labels, handles
    )
