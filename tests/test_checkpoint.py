"""The checkpoint format: safetensors + config.json, exact round trip, cut loading."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import padded_batch, tiny_model
from emodistill.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from emodistill.model import count_parameters


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_round_trip_reproduces_logits_exactly(tmp_path, family):
    model = tiny_model(family=family, student_head="lstm")
    path = save_checkpoint(model, tmp_path / "ckpt", metadata={"metrics": {"uar": torch.tensor(0.5)}})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(path)
    x, mask = padded_batch([9000, 6000])
    a, b = model(x, mask), loaded.model(x, mask)
    for name in model.exit_names:
        assert torch.equal(a.exits[name].logits, b.exits[name].logits)
    assert loaded.config.model.labels == model.labels
    assert loaded.config.metadata["metrics"]["uar"] == 0.5
    assert not loaded.model.training


def test_weights_are_safetensors_not_pickle(tmp_path):
    save_checkpoint(tiny_model(), tmp_path / "c")
    head = (tmp_path / "c" / "model.safetensors").read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    header = json.loads((tmp_path / "c" / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "heads.exit_1.classifier.weight" in header
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["format"] == "emodistill-checkpoint"
    assert config["backbone"]["model_type"] == "wav2vec2"
    assert list(config["model"]["heads"]) == ["exit_1", "exit_2", "exit_3", "exit_4"]


def test_loading_one_exit_builds_only_the_cut_model(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path / "c")
    x, mask = padded_batch([8000, 5000])
    full = model(x, mask)
    for name in model.exit_names:
        cut = load_checkpoint(tmp_path / "c", exit=name).model
        assert cut.exit_names == [name]
        assert count_parameters(cut) == count_parameters(model.cut(name))
        assert torch.equal(cut(x, mask).exits[name].logits, full.exits[name].logits)


def test_cut_model_saves_and_loads(tmp_path):
    cut = tiny_model().cut("exit_2")
    save_checkpoint(cut, tmp_path / "cut")
    again = load_checkpoint(tmp_path / "cut").model
    x, _ = padded_batch([8000])
    assert torch.equal(again(x).exits["exit_2"].logits, cut(x).exits["exit_2"].logits)
    assert len(again.backbone.encoder.layers) == 2


def test_overwrite_replaces_cleanly(tmp_path):
    save_checkpoint(tiny_model(seed=0), tmp_path / "c")
    second = tiny_model(seed=1)
    save_checkpoint(second, tmp_path / "c")
    x, _ = padded_batch([8000])
    assert torch.equal(load_checkpoint(tmp_path / "c").model(x).teacher.logits, second(x).teacher.logits)
    assert [p.name for p in tmp_path.iterdir()] == ["c"], "no temporary directories left behind"


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")
    save_checkpoint(tiny_model(), tmp_path / "c")
    with pytest.raises(ValueError, match="no exit 'exit_9'"):
        load_checkpoint(tmp_path / "c", exit="exit_9")
    (tmp_path / "c" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a valid emodistill-checkpoint"):
        read_checkpoint_config(tmp_path / "c")


def test_s3_checkpoints_use_the_configured_endpoint_and_keys(tmp_path, s3_explicit):
    """Checkpoint loading ignored the configured S3 endpoint and keys (only the AWS
    environment reached s3fs)."""
    bucket, options = s3_explicit
    model = tiny_model()
    uri = f"{bucket}/runs/ckpt"
    save_checkpoint(model, uri, metadata={"epoch": 3}, s3=options)
    loaded = load_checkpoint(uri, s3=options)
    x, mask = padded_batch([8000, 5000])
    assert torch.equal(loaded.model(x, mask).teacher.logits, model(x, mask).teacher.logits)
    assert read_checkpoint_config(uri, s3=options).training.epoch == 3
    cut = load_checkpoint(uri, exit="exit_2", s3=options).model
    assert cut.exit_names == ["exit_2"]


def test_typed_training_metadata_and_train_state(tmp_path):
    from emodistill.checkpoint import (
        Preprocessing,
        TrainingMetadata,
        TrainState,
        load_train_state,
        save_train_state,
    )
    from emodistill.data.batching import BatchOptions
    from emodistill.data.folds import Part, Selection

    selection = Selection(
        protocol="folds", train=Part(folds=[0, 1], exclude_speakers=["s1"]), val=Part(folds=[0, 1], speakers=["s1"]),
        test=Part(folds=[2]), speakers={"train": ["s0", "s2"], "val": ["s1"], "test": ["s3"]},
    )
    meta = TrainingMetadata(dataset="d", selection=selection, epoch=4, metrics={"val/teacher_uar": 0.5}, history=[{"epoch": 0}])
    prep = Preprocessing(train_batch=BatchOptions(mode="crop", max_seconds=3), val_batch=BatchOptions(mode="fixed", fixed_samples=16000))
    path = save_checkpoint(tiny_model(), tmp_path / "c", metadata=meta, preprocessing=prep)
    config = read_checkpoint_config(path)
    assert config.training == meta
    assert config.prep.val_batch.mode == "fixed" and config.prep.val_batch.fixed_samples == 16000
    state = TrainState(epoch=4, step={"micro_step": 7}, torch_rng=torch.get_rng_state())
    save_train_state(path, state)
    again = load_train_state(path)
    assert again.epoch == 4 and again.step == {"micro_step": 7} and torch.equal(again.torch_rng, state.torch_rng)
    with pytest.raises(FileNotFoundError, match="train_state.pt"):
        load_train_state(tmp_path)


def test_checkpoints_from_before_selections_still_read(tmp_path):
    """train_folds / val_folds keys: the held-out folds both selected and were reported."""
    config = read_checkpoint_config(save_checkpoint(tiny_model(), tmp_path / "c", metadata={"train_folds": [0, 1], "val_folds": [2]}))
    selection = config.training.selection
    assert selection.train.folds == [0, 1] and selection.val.folds == [2] and selection.test.folds == [2]
    assert config.prep.val_batch.mode == "full"
