"""SelfDistillationLoss: a true KL, detach, weights, presets, a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from emodistill.losses import LossConfig, SelfDistillationLoss, kd_kl, preset
from emodistill.model.early_exit import EarlyExitOutput, ExitOutput


def make_outputs(student_logits, teacher_logits, student_feat=None, teacher_feat=None, requires_grad=False):
    def t(values):
        return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)

    s_logits, t_logits = t(student_logits), t(teacher_logits)
    s_feat = t(student_feat if student_feat is not None else [[0.0, 0.0]] * len(student_logits))
    t_feat = t(teacher_feat if teacher_feat is not None else [[0.0, 0.0]] * len(teacher_logits))
    exits = {
        "exit_1": ExitOutput(1, s_logits, s_feat, s_feat * 2),
        "exit_2": ExitOutput(2, t_logits, t_feat, t_feat * 2),
    }
    return EarlyExitOutput(exits=exits, frame_mask=None)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(8, 5)
    assert kd_kl(logits, logits.clone(), 2.0).abs().item() < 1e-6
    for _ in range(20):
        assert kd_kl(torch.randn(8, 5), torch.randn(8, 5), 1.0).item() > 0


def test_kl_is_not_the_authors_probability_version():
    # Feeding probabilities where log-probabilities belong can go negative; ours cannot.
    s, t = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]])
    wrong = torch.nn.functional.kl_div(s.softmax(-1), t.softmax(-1), reduction="batchmean")
    assert wrong.item() < 0 < kd_kl(s, t, 1.0).item()


def test_hand_computation_on_fixed_tensors():
    out = make_outputs([[2.0, 0.0]], [[0.0, 1.0]], student_feat=[[1.0, 3.0]], teacher_feat=[[0.0, 1.0]])
    labels = torch.tensor([1])
    cfg = LossConfig(teacher_ce_weight=1.0, exit_ce_weight=0.5, kd_weight=2.0, feature_weight=0.25, temperature=2.0)
    result = SelfDistillationLoss(cfg)(out, labels)

    def log_softmax(v):
        z = math.log(sum(math.exp(x) for x in v))
        return [x - z for x in v]

    teacher_ce = -log_softmax([0.0, 1.0])[1]
    exit_ce = -log_softmax([2.0, 0.0])[1]
    ps, pt = log_softmax([1.0, 0.0]), log_softmax([0.0, 0.5])  # logits / T
    kd = sum(math.exp(b) * (b - a) for a, b in zip(ps, pt)) * 4.0
    feature = ((1 - 0) ** 2 + (3 - 1) ** 2) / 2
    expected = teacher_ce + 0.5 * exit_ce + 2.0 * kd + 0.25 * feature
    assert result.terms["teacher_ce"].item() == pytest.approx(teacher_ce, rel=1e-5)
    assert result.terms["exit_ce"].item() == pytest.approx(exit_ce, rel=1e-5)
    assert result.terms["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert result.terms["feature"].item() == pytest.approx(feature, rel=1e-5)
    assert result.total.item() == pytest.approx(expected, rel=1e-5)
    assert result.per_exit["exit_1"]["kd"].item() == pytest.approx(kd, rel=1e-5)
    logged = result.log_dict()
    assert logged["loss/total"] == pytest.approx(expected, rel=1e-5)
    assert "loss/exit_1/feature" in logged


def test_linear_feature_level_uses_linear_outputs():
    out = make_outputs([[0.0, 0.0]], [[0.0, 0.0]], student_feat=[[1.0, 1.0]], teacher_feat=[[0.0, 0.0]])
    labels = torch.tensor([0])
    emb = SelfDistillationLoss(LossConfig(feature_level="embedding"))(out, labels).terms["feature"]
    lin = SelfDistillationLoss(LossConfig(feature_level="linear"))(out, labels).terms["feature"]
    assert emb.item() == pytest.approx(1.0) and lin.item() == pytest.approx(4.0)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_stops_distillation_gradients_at_the_teacher(detach):
    out = make_outputs([[1.0, -1.0, 0.5]], [[0.2, 0.3, -0.4]], [[1.0, 2.0]], [[0.5, -0.5]], requires_grad=True)
    cfg = LossConfig(teacher_ce_weight=0.0, exit_ce_weight=0.0, kd_weight=1.0, feature_weight=1.0, detach_teacher=detach)
    SelfDistillationLoss(cfg)(out, torch.tensor([0])).total.backward()
    teacher = out.exits["exit_2"]
    student = out.exits["exit_1"]
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    if detach:
        # the teacher's own CE (weight 0 here) may leave an all-zero gradient, nothing more
        for grad in (teacher.logits.grad, teacher.embedding.grad):
            assert grad is None or not grad.any()
    else:
        assert teacher.logits.grad.abs().sum() > 0 and teacher.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("term", ["teacher_ce", "exit_ce", "kd", "feature"])
def test_zero_weight_removes_its_term(term):
    out = make_outputs([[1.0, -1.0]], [[0.3, 0.1]], [[1.0, 2.0]], [[0.5, -0.5]])
    labels = torch.tensor([1])
    full = SelfDistillationLoss(LossConfig())(out, labels)
    without = SelfDistillationLoss(LossConfig(**{f"{term}_weight": 0.0}))(out, labels)
    assert full.terms[term].item() > 0
    assert without.total.item() == pytest.approx(full.total.item() - full.terms[term].item(), rel=1e-6)


def test_teacher_only_model_has_only_teacher_ce():
    logits = torch.tensor([[0.5, 0.1]])
    out = EarlyExitOutput(exits={"exit_4": ExitOutput(4, logits, torch.zeros(1, 2), torch.zeros(1, 2))}, frame_mask=None)
    result = SelfDistillationLoss(LossConfig())(out, torch.tensor([0]))
    assert result.total.item() == pytest.approx(result.terms["teacher_ce"].item())
    assert result.terms["kd"].item() == 0 and result.per_exit == {}


def test_presets():
    paper = preset("paper")
    assert (paper.teacher_ce_weight, paper.exit_ce_weight, paper.kd_weight, paper.feature_weight) == (1, 1, 1, 1)
    assert paper.temperature == 1.0 and paper.feature_level == "embedding" and paper.detach_teacher is False
    assert preset("ce_only").kd_weight == 0 and preset("ce_only").feature_weight == 0
    with pytest.raises(ValueError, match="unknown loss preset"):
        preset("nope")
