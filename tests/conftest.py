"""Shared fixtures: tiny randomly initialised models, fixed clips, deterministic torch."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

LABELS = ["anger", "happiness", "neutral", "sadness"]


@pytest.fixture
def labels() -> list[str]:
    return list(LABELS)


def tiny_model(family: str = "wav2vec2", exits=(1, 2, 3), student_head="gru", teacher_head="mean", seed: int = 0):
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone=BackboneConfig(arch="tiny", family=family),
        exits=list(exits),
        student_head=student_head,
        teacher_head=teacher_head,
    )
    return build_model(cfg, LABELS).eval()


@pytest.fixture
def model():
    return tiny_model()


def padded_batch(lengths, seed: int = 0):
    """(waveforms (batch, max_len), mask (batch, max_len)) with zeros past each length."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    x = torch.zeros(len(lengths), width)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return x, mask


# ---- audio files and an S3 server ------------------------------------------------------


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, seed: int = 0, channels: int = 1):
    """A voiced-ish test signal (harmonics + a little noise), float32, (samples,) or (samples, channels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * 0.2
    wave = (wave + 0.01 * rng.standard_normal(t.size)).astype("float32")
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_audio(path, wave, rate: int = 16000, **kwargs):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, **kwargs)
    return path


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (all bound at once, so none repeats)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server as a separate process on 127.0.0.1: a real S3 API over HTTP."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """AWS environment pointing at the moto server, and a fresh bucket; yields 's3://bucket'."""
    import uuid

    import boto3
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{bucket}"


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster (2 CPUs), shared by the tests that need one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def make_pitch_corpus(root, speakers: int = 6, per_label: int = 4, seed: int = 0):
    """A small csv corpus whose three labels differ in pitch (learnable in a few epochs)."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(speakers):
        for label, freq in {"angry": 330.0, "happy": 240.0, "sad": 150.0}.items():
            for k in range(per_label):
                rel = f"wav/s{s}/{label}_{k}.wav"
                f = freq * (1 + 0.06 * (s - speakers / 2) / speakers) * float(rng.uniform(0.95, 1.05))
                write_audio(root / rel, tone(float(rng.uniform(0.8, 1.6)), freq=f, seed=s * 100 + k))
                rows.append((rel, label, f"s{s}"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "speaker"), *rows])
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """An ingested 3-class, 6-speaker, 3-fold dataset (local directory URI)."""
    from emodistill.data.ingest import IngestConfig, ingest

    root = make_pitch_corpus(tmp_path_factory.mktemp("pitch-corpus"))
    dest = tmp_path_factory.mktemp("pitch-data")
    ingest(IngestConfig(source=str(root), dest=str(dest), folds=3, workers=1), progress=False)
    return str(dest)


@pytest.fixture(scope="session")
def served_checkpoint(tiny_dataset, tmp_path_factory):
    """A tiny checkpoint (exits 1..4, mean heads) with the exit_profile.json that
    `emodistill evaluate` writes beside it: what the serving app needs."""
    from emodistill.checkpoint import save_checkpoint
    from emodistill.data.schema import read_info
    from emodistill.evaluate.report import EvaluateConfig, evaluate
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(0)
    labels = read_info(tiny_dataset).labels
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2, 3], student_head="mean")
    path = tmp_path_factory.mktemp("served") / "checkpoint"
    save_checkpoint(build_model(cfg, labels), path, metadata={"train_folds": [0, 1], "val_folds": [2]})
    evaluate(EvaluateConfig(checkpoint=str(path), dataset=tiny_dataset, repeats=3, latency_seconds=[1.0, 2.0]))
    return str(path)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_dataset, tmp_path_factory):
    """The tiny model (exits 1..3 + teacher 4, mean heads) trained in-process for a few
    dozen steps on folds 0-1 of ``tiny_dataset``, fold 2 held out, with the metadata a
    trained checkpoint carries. int8/bf16 checks need its margins: a random-init model
    answers every clip with near-ties, so any rounding flips answers."""
    import numpy as np

    from emodistill.checkpoint import save_checkpoint
    from emodistill.data.batching import BatchOptions, pad_batch, prepare
    from emodistill.data.rows import load_arrays
    from emodistill.data.schema import read_info
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(0)
    labels = read_info(tiny_dataset).labels
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2, 3], student_head="mean", head_dropout=0.0)
    model = build_model(cfg, labels).train()
    arrays = load_arrays(tiny_dataset, folds=[0, 1], options=BatchOptions(mode="full"))
    fixed = BatchOptions(mode="fixed", fixed_samples=19200)  # one shape: no kernel set-up per step
    waves, ids = [prepare(w, fixed) for w in arrays["waveform"]], np.asarray(arrays["label_id"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = rng.choice(len(waves), size=min(12, len(waves)), replace=False)
        values, mask = pad_batch([waves[i] for i in idx])
        out = model(values, mask)
        target = torch.as_tensor(ids[idx])
        loss = sum(torch.nn.functional.cross_entropy(e.logits, target) for e in out.exits.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metadata = {
        "dataset": tiny_dataset,
        "train_folds": [0, 1],
        "val_folds": [2],
        "epoch": 0,
        "train_config": {"model": cfg.model_dump(mode="json"), "loss": {"preset": "ce_only"}},
    }
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("trained") / "checkpoint", metadata=metadata)


@pytest.fixture
def s3_explicit(s3_server, monkeypatch):
    """The moto server reachable only through explicit S3Options (endpoint and keys), with
    no AWS_* environment to fall back on; yields ('s3://bucket', S3Options)."""
    import uuid

    import boto3
    import s3fs

    from emodistill.storage import S3Options

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{bucket}", S3Options(endpoint_url=s3_server, key="k", secret="s", region="us-east-1")
    s3fs.S3FileSystem.clear_instance_cache()
