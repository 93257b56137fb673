"""What a person sees in the terminal: our own lines; Ray's output in a log file.

One owner for the terminal of every command that runs Ray (`train`, `tune`, `demo`):

- :func:`route_ray_output` sends everything Ray prints to ``<run folder>/.../ray.log``:
  the lines every Ray worker and actor writes (forwarded to the driver by Ray's log
  monitor: Ray Data's "Dataset ... execution finished", Ray Train's controller, the
  raylet's worker-startup warning, C++ core-worker lines of actors), the driver's own
  ``ray.*`` Python loggers (the token-auth notice, Ray Data's progress-bar notice) and
  Python warnings (Ray's deprecations). ``verbose`` (``--verbose`` or
  ``EMODISTILL_VERBOSE=1``) shows them on the terminal as well, with Ray's usual
  ``(actor pid=...)`` prefixes.
- :class:`ProgressBoard` carries what rank 0 of a training run says (steps, clips/s,
  loss; one record per epoch) to the driver, which draws a progress bar per epoch and one
  line per epoch with the per-exit metrics. Workers never print to the terminal: their
  lines would come back through Ray's log forwarding, one line per bar update.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

VERBOSE_ENV = "EMODISTILL_VERBOSE"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_state: dict[str, Any] = {"path": None, "handler": None}


def verbose() -> bool:
    """Whether Ray's own output is shown on the terminal too (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(value: bool) -> None:
    if value:
        os.environ[VERBOSE_ENV] = "1"


def log_path() -> Path | None:
    """The file Ray's output goes to in this process (None before :func:`route_ray_output`)."""
    return _state["path"]


def run_log(storage: str, name: str) -> Path:
    """Where a run's Ray log goes: ``<storage>/logs/<name>.log`` for local storage (beside
    Ray's run folder, which ``run.if_exists=overwrite`` replaces), ``runs/logs/<name>.log``
    when the run stores to ``s3://``."""
    base = Path("runs") if "://" in storage else Path(storage)
    return base / "logs" / f"{name}.log"


def _file_handler(path: Path) -> logging.Handler:
    if _state["handler"] is not None and _state["path"] == path:
        return _state["handler"]
    if _state["handler"] is not None:
        _state["handler"].close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    _state.update(path=path, handler=handler)
    return handler


def _is_terminal(handler: logging.Handler) -> bool:
    """A handler writing to the terminal (not a file, nor pytest's log capture)."""
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and not type(handler).__module__.startswith("_pytest")
    )


def quiet_python_loggers() -> None:
    """Move the terminal handlers of this process's ``ray.*`` loggers (and Python
    warnings) to the log file. Loggers that Ray configures on import (``ray.data``,
    ``ray.train``, ``ray.tune``, ``ray.serve``) are covered once imported: call again
    after importing them (``fit`` and ``run_sweep`` do)."""
    handler = _state["handler"]
    if handler is None or verbose():
        return
    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith(("ray.", "mlflow"))]
    for name in ["", "ray", *names]:  # "": the root logger, where ray.init's LoggingConfig adds a handler
        logger = logging.getLogger(name)
        terminal = [h for h in logger.handlers if _is_terminal(h)]
        for h in terminal:
            logger.removeHandler(h)
        if terminal and handler not in logger.handlers:
            logger.addHandler(handler)
    logging.captureWarnings(True)  # Ray's deprecation warnings: to the file, not the screen
    warn_logger = logging.getLogger("py.warnings")
    warn_logger.propagate = False
    if handler not in warn_logger.handlers:
        warn_logger.addHandler(handler)
    warnings.simplefilter("default")  # each distinct warning once, in the file


def _forwarded_line_writer(path: Path) -> Callable[[dict], None]:
    """A handler for Ray's stream of worker output (one dict per batch of lines)."""
    lock = threading.Lock()
    handle = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives as long as the driver)

    def write(data: dict) -> None:
        pid = data.get("pid")
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={pid}, ip={data.get('ip')})" if pid not in ("raylet", "autoscaler") else f"({pid})"
        stream = "stderr" if data.get("is_err") else "stdout"
        with lock:
            for line in data.get("lines", []):
                handle.write(f"{prefix} [{stream}] {line}\n")

    return write


def route_ray_output(path: str | Path) -> Path:
    """Send Ray's output of this driver to ``path`` (appended); returns it.

    Call before ``ray.init`` (the driver's own loggers) and again after it (the workers'
    forwarded lines, installed by :func:`hook_worker_output`): :func:`emodistill.cluster.init_ray`
    does both."""
    path = Path(path).absolute()
    _file_handler(path)
    quiet_python_loggers()
    return path


def hook_worker_output() -> bool:
    """After ``ray.init``: write the lines Ray forwards to the driver (every worker's and
    actor's output, and the raylet's messages such as its worker-startup warning) to the
    log file instead of the terminal (both with ``verbose``).

    Ray 2.60 prints both through ``ray._private.worker.print_worker_logs`` (called from the
    log-monitor handler and from the error-message listener); that function is swapped
    for one that writes to the file. Returns False where it is missing (the caller then
    starts Ray with ``log_to_driver=False``)."""
    path = _state["path"]
    if path is None:
        return False
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return False
    original = getattr(ray_worker, "print_worker_logs", None)
    if original is None:
        return False
    original = getattr(original, "__wrapped_by_emodistill__", original)
    write = _forwarded_line_writer(path)

    def print_worker_logs(data, print_file, ignore_prefix: bool = False):
        write(data)
        if verbose():
            original(data, print_file, ignore_prefix)

    print_worker_logs.__wrapped_by_emodistill__ = original
    ray_worker.print_worker_logs = print_worker_logs
    return True


def has_worker_hook() -> bool:
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return False
    return callable(getattr(ray_worker, "print_worker_logs", None))


# ---------------------------------------------------------------- progress of a training run


def epoch_line(metrics: dict, epochs: int, metric: str) -> str:
    """``epoch 3/12: loss 1.234, 41.0 clips/s | val UAR exit_1 0.41 ... | val/mean_exit_uar 0.52``."""
    from emodistill.evaluate.metrics import exits_in, metric_key

    uars = " ".join(f"{n} {metrics[metric_key(n, 'uar')]:.3f}" for n in exits_in(metrics))
    resumed = metrics.get("resumed_from_epoch", -1)
    note = f" (resumed after epoch {int(resumed) + 1})" if resumed is not None and resumed >= 0 else ""
    value = metrics.get(metric)
    score = f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
    return (
        f"epoch {int(metrics['epoch']) + 1}/{epochs}: loss {metrics['train/loss/total']:.3f}, "
        f"{metrics['train/clips_per_second']:.1f} clips/s | val UAR {uars} | {metric} {score}{note}"
    )


class _Board:
    """The Ray actor between rank 0 and the driver: rank 0 posts, the driver takes."""

    def __init__(self):
        self.items: list = []

    def post(self, item) -> None:
        self.items.append(item)

    def take(self) -> list:
        items, self.items = self.items, []
        return items


class ProgressBoard:
    """Driver side of a run's progress: a tiny actor that rank 0 posts to, and a thread
    drawing a tqdm bar per epoch (steps, clips/s, loss; only on a terminal) and printing
    one line per epoch (always). Use as a context manager around ``trainer.fit()``;
    pass :attr:`handle` to the workers (``train_loop_config["progress"]``)."""

    def __init__(self, epochs: int, metric: str, out=None, poll_s: float = 0.25, on_epoch=None):
        import ray

        self.epochs, self.metric, self.poll_s, self.on_epoch = epochs, metric, poll_s, on_epoch
        self.out = out or sys.stdout
        self.handle = ray.remote(num_cpus=0)(_Board).options(name=None).remote()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emodistill-progress", daemon=True)
        self._bar = None
        self._bar_epoch = None

    def __enter__(self) -> "ProgressBoard":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        self._close_bar()
        import ray

        try:
            ray.kill(self.handle)
        except Exception:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()

    def _drain(self) -> None:
        import ray

        try:
            items = ray.get(self.handle.take.remote(), timeout=30)
        except Exception:  # the cluster is going away: nothing more to show
            return
        for item in items:
            self.show(item)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def show(self, item: dict) -> None:
        if item.get("kind") == "step":
            self._step(item)
        elif item.get("kind") == "epoch":
            self._close_bar()
            print(epoch_line(item["metrics"], self.epochs, self.metric), file=self.out, flush=True)
            if self.on_epoch is not None:
                try:
                    self.on_epoch(item["metrics"])
                except Exception as err:  # tracking must never stop training; say so once, in the log
                    logging.getLogger("emodistill").warning("on_epoch failed: %r", err)

    def _step(self, item: dict) -> None:
        from tqdm import tqdm

        if self._bar_epoch != item["epoch"]:
            self._close_bar()
            self._bar_epoch = item["epoch"]
            self._bar = tqdm(
                total=item["steps"], desc=f"epoch {item['epoch'] + 1}/{self.epochs}", unit="step",
                leave=False, file=self.out, dynamic_ncols=True, disable=None,  # None: off when not a terminal
            )
        if self._bar is None:
            return
        self._bar.n = min(item["step"], self._bar.total or item["step"])
        self._bar.set_postfix_str(f"{item['clips_per_s']:.1f} clips/s, loss {item['loss']:.3f}", refresh=False)
        self._bar.refresh()


class StepReporter:
    """Worker side (rank 0 only): posts steps at most every ``every_s`` seconds and the
    epoch's metrics; fire-and-forget, so training never waits on the driver."""

    def __init__(self, handle, epoch: int, steps: int, every_s: float = 0.5):
        self.handle, self.epoch, self.steps, self.every_s = handle, epoch, steps, every_s
        self.started = time.perf_counter()
        self.last = 0.0
        self.clips = 0
        self.loss_sum = 0.0
        self.step = 0

    def update(self, clips: int, loss: float) -> None:
        self.step += 1
        self.clips += clips
        self.loss_sum += loss * clips
        now = time.perf_counter()
        if self.handle is not None and (now - self.last >= self.every_s or self.step >= self.steps):
            self.last = now
            elapsed = max(1e-9, now - self.started)
            self.handle.post.remote({
                "kind": "step", "epoch": self.epoch, "step": self.step, "steps": self.steps,
                "clips_per_s": self.clips / elapsed, "loss": self.loss_sum / max(1, self.clips),
            })

    def epoch_done(self, metrics: dict) -> None:
        if self.handle is not None:
            self.handle.post.remote({"kind": "epoch", "metrics": dict(metrics)})
