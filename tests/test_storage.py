"""Remote model copies: one download per machine, however many workers ask at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import fsspec


def _localize(args):
    uri, options, barrier, cache = args
    import os

    os.environ["EMODISTILL_CACHE"] = cache
    from emodistill.model.backbone import localize

    barrier.wait()
    try:
        return localize(uri, options)
    except Exception as err:  # noqa: BLE001 - the test reports what each process saw
        return f"{type(err).__name__}: {err}"


def test_workers_on_one_node_share_one_copy_of_an_s3_backbone(tmp_path, s3_explicit):
    """Four processes localize the same s3:// backbone at once (Ray Train workers on one
    node): each used to download it and rename its copy into place, and all but the first
    failed with ENOTEMPTY. The configured endpoint and keys were ignored too."""
    bucket, options = s3_explicit
    fs = fsspec.filesystem("s3", **options.storage_options())
    model = f"{bucket}/models/w2v"
    fs.pipe({f"{model}/config.json": b'{"model_type": "wav2vec2"}', f"{model}/model.safetensors": b"\0" * 3_000_000})
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(4)
    with ctx.Pool(4) as pool:
        got = pool.map(_localize, [(model, options, barrier, cache)] * 4)
    assert len(set(got)) == 1, got
    local = Path(got[0])
    assert local.is_dir() and (local / "model.safetensors").stat().st_size == 3_000_000
    assert sorted(p.name for p in local.parent.iterdir() if not p.name.endswith(".lock")) == [local.name], "no partial copies"
