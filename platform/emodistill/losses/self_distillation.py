"""The self-distillation loss of Ren et al. (2023), with the authors' defects corrected.

With the teacher t (deepest exit) and students s_1..s_K (shallower exits):

    total = w_teacher * CE(t)
          + w_exit    * mean_k CE(s_k)
          + w_kd      * mean_k KL(softmax(t/T) || softmax(s_k/T)) * T^2
          + w_feature * mean_k MSE(f(s_k), f(t))

KL is computed from log-probabilities on both sides (a true KL divergence, >= 0); the
authors' code fed probabilities where log-probabilities belong. ``detach_teacher`` stops
the KD and feature terms from pulling the teacher towards its students. f is the pooled
frame feature (``embedding``) or the head's first linear output (``linear``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from emodistill.config import Config
from emodistill.model.early_exit import EarlyExitOutput, ExitOutput

FeatureLevel = Literal["embedding", "linear"]


class LossConfig(Config):
    """Weights and knobs of the self-distillation loss (see module docstring)."""

    teacher_ce_weight: float = Field(1.0, ge=0.0, description="Weight of the teacher's cross-entropy.")
    exit_ce_weight: float = Field(1.0, ge=0.0, description="Weight of the mean cross-entropy over student exits.")
    kd_weight: float = Field(1.0, ge=0.0, description="Weight of the mean KL(teacher || student) over students.")
    feature_weight: float = Field(1.0, ge=0.0, description="Weight of the mean feature MSE over students.")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature T of the KD term (scaled by T^2).")
    detach_teacher: bool = Field(True, description="Stop KD and feature gradients from reaching the teacher.")
    feature_level: FeatureLevel = Field(
        "embedding", description="Features compared by the MSE term: pooled frames or first linear output."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of every cross-entropy.")


PRESETS: dict[str, LossConfig] = {
    # The authors' settings (all weights 1, T = 1, embedding features, teacher not
    # detached) with the KL corrected.
    "paper": LossConfig(temperature=1.0, detach_teacher=False, feature_level="embedding"),
    # Our default: the same weights, T = 2 (Hinton et al.'s usual softening, which gives
    # students the teacher's ranking of wrong classes, not just its arg-max) and a detached
    # teacher (as in BYOT-style self-distillation), so the deepest exit is trained by the
    # labels alone and shallow exits cannot drag it down.
    "default": LossConfig(),
    # Baselines of the paper's comparison: exits trained by labels only, and plain
    # fine-tuning (use with a model that has no student exits).
    "ce_only": LossConfig(kd_weight=0.0, feature_weight=0.0),
}


def preset(name: str) -> LossConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].model_copy()


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar, what backward() is called on
    terms: dict[str, torch.Tensor]  # teacher_ce, exit_ce, kd, feature (unweighted, detached)
    per_exit: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # exit_<b> -> {ce, kd, feature}

    def log_dict(self, prefix: str = "loss/") -> dict[str, float]:
        """Flat floats for metrics: loss/total, loss/kd, loss/exit_3/ce, ..."""
        out = {f"{prefix}total": float(self.total.detach())}
        out.update({f"{prefix}{k}": float(v) for k, v in self.terms.items()})
        for name, terms in self.per_exit.items():
            out.update({f"{prefix}{name}/{k}": float(v) for k, v in terms.items()})
        return out


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, mean over the batch. Inputs: (batch, classes)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


class SelfDistillationLoss(nn.Module):
    """Computes the loss above from an :class:`EarlyExitOutput` and integer labels."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def _feature(self, out: ExitOutput) -> torch.Tensor:
        return out.embedding if self.cfg.feature_level == "embedding" else out.linear

    def forward(self, outputs: EarlyExitOutput, labels: torch.Tensor) -> LossOutput:
        cfg = self.cfg
        names = list(outputs.exits)
        teacher = outputs.exits[names[-1]]
        students = {n: outputs.exits[n] for n in names[:-1]}

        teacher_ce = F.cross_entropy(teacher.logits, labels, label_smoothing=cfg.label_smoothing)
        t_logits = teacher.logits.detach() if cfg.detach_teacher else teacher.logits
        t_feature = self._feature(teacher)
        t_feature = t_feature.detach() if cfg.detach_teacher else t_feature

        zero = teacher_ce.new_zeros(())
        per_exit: dict[str, dict[str, torch.Tensor]] = {}
        for name, student in students.items():
            per_exit[name] = {
                "ce": F.cross_entropy(student.logits, labels, label_smoothing=cfg.label_smoothing),
                "kd": kd_kl(student.logits, t_logits, cfg.temperature) if cfg.kd_weight > 0 else zero,
                "feature": F.mse_loss(self._feature(student), t_feature) if cfg.feature_weight > 0 else zero,
            }

        def mean_of(key: str) -> torch.Tensor:
            if not per_exit:
                return zero
            return torch.stack([terms[key] for terms in per_exit.values()]).mean()

        terms = {"teacher_ce": teacher_ce, "exit_ce": mean_of("ce"), "kd": mean_of("kd"), "feature": mean_of("feature")}
        total = (
            cfg.teacher_ce_weight * terms["teacher_ce"]
            + cfg.exit_ce_weight * terms["exit_ce"]
            + cfg.kd_weight * terms["kd"]
            + cfg.feature_weight * terms["feature"]
        )
        detached = {k: v.detach() for k, v in terms.items()}
        per_exit_detached = {n: {k: v.detach() for k, v in t.items()} for n, t in per_exit.items()}
        return LossOutput(total=total, terms=detached, per_exit=per_exit_detached)
