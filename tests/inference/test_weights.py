"""Partial reads: the cut model of one exit comes out of model.safetensors without the
tensors of deeper blocks or other heads, locally (safe_open) and from S3 (byte ranges)."""

from __future__ import annotations

import pytest
import torch

from conftest import padded_batch, tiny_model
from emodistill.checkpoint import load_checkpoint, save_checkpoint
from emodistill.inference.weights import SafetensorsReader, load_cut, weights_version


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_model(exits=(1, 2, 3), student_head="gru")  # the paper's student heads
    return save_checkpoint(model, tmp_path_factory.mktemp("w") / "ckpt")


def _foreign(names: list[str], block: int, exit: str) -> list[str]:
    """Tensors that do not belong to the model cut after ``block`` with head ``exit``."""
    deeper = [n for n in names if n.startswith("backbone.encoder.layers.") and int(n.split(".")[3]) >= block]
    other_heads = [n for n in names if n.startswith("heads.") and not n.startswith(f"heads.{exit}.")]
    return deeper + other_heads


def test_reads_only_the_cut_models_tensors(checkpoint):
    cut = load_cut(checkpoint, "exit_1")
    file_names = SafetensorsReader(f"{checkpoint}/model.safetensors").keys()
    assert sorted(cut.stats.tensors) == sorted(cut.model.state_dict())
    assert not _foreign(cut.stats.tensors, 1, "exit_1")
    assert _foreign(file_names, 1, "exit_1")  # ... which the file does hold
    assert 0 < cut.stats.fraction < 0.8, cut.stats
    assert len(cut.model.backbone.encoder.layers) == 1 and list(cut.model.heads) == ["exit_1"]
    assert not any(t.is_meta for t in cut.model.state_dict().values())


def test_cut_answers_like_the_full_checkpoint_cut(checkpoint):
    x, mask = padded_batch([12000, 7000])
    for exit in ["exit_2", "exit_4"]:
        ours = load_cut(checkpoint, exit).model
        reference = load_checkpoint(checkpoint, exit=exit).model
        with torch.inference_mode():
            assert torch.equal(ours(x, mask).exits[exit].logits, reference(x, mask).exits[exit].logits)


def test_version_is_the_checkpoints_and_deepest_is_the_default(checkpoint):
    cut = load_cut(checkpoint)
    assert cut.exit == "exit_4"
    assert cut.version == weights_version(checkpoint) == load_checkpoint(checkpoint).version


def test_an_exit_the_checkpoint_lacks_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match=r"no exit 'exit_7'.*exit_1.*exit_4"):
        load_cut(checkpoint, "exit_7")


def test_from_s3_reads_byte_ranges_of_the_cut_only(checkpoint, s3):
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(f"{checkpoint}/", f"{s3[5:]}/ckpt", recursive=True)
    remote = load_cut(f"{s3}/ckpt", "exit_2")
    local = load_cut(checkpoint, "exit_2")
    assert remote.stats.bytes_read < 0.8 * remote.stats.file_bytes
    assert not _foreign(remote.stats.tensors, 2, "exit_2")
    for (name, a), (_, b) in zip(sorted(remote.model.state_dict().items()), sorted(local.model.state_dict().items())):
        assert torch.equal(a, b), name
