"""LengthDrop (Kim & Cho, 2021, section 3): train one model for every length configuration.

Each optimiser step, on one batch:

1. the full model on the task loss (ground truth);
2. the smallest sub-model (``1 - p`` of the previous length at every layer);
3. ``num_sandwich`` random sub-models (``lengths.sample_length_config``);

sub-models learn by *inplace distillation* from the detached full-model output. Every
loss is divided by the number of sub-models and back-propagated on its own, so memory
stays that of one forward pass. LayerDrop skips whole layers of the sub-models (and, as
in the reference code, of the full-model pass too unless ``layer_drop_full=False``).
``train.train`` runs this step when its config has a ``length_drop`` part.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .lengths import (
    sample_layer_keep,
    sample_length_config,
    smallest_config,
    to_model_lengths,
)
from .model import LengthAdaptiveModel

KLDirection = Literal["student_teacher", "teacher_student"]
KL_DIRECTIONS: tuple[str, ...] = ("student_teacher", "teacher_student")


@dataclass
class LengthDropConfig:
    """LengthDrop's knobs; the defaults are the reference code's README settings.

    ``kl_direction="student_teacher"`` is what the reference code computes
    (``KLDivLoss(log_softmax(teacher), softmax(student))`` = KL(student || teacher),
    the gradient flowing through the target); ``"teacher_student"`` is the usual
    knowledge-distillation KL(teacher || student).
    """

    num_sandwich: int = 2
    length_drop_ratio_bound: float = 0.2
    layer_dropout_prob: float = 0.2
    use_smallest: bool = True  # the sandwich rule's lower slice
    inplace_distillation: bool = True  # False: sub-models learn from the labels
    kl_direction: KLDirection = "student_teacher"
    layer_drop_full: bool = True  # the reference quirk: LayerDrop on the full pass too
    min_length: int = 2

    def validate(self) -> None:
        if self.num_sandwich < 0:
            raise ValueError(f"num_sandwich must be >= 0, got {self.num_sandwich}")
        if not 0.0 <= self.length_drop_ratio_bound < 1.0:
            raise ValueError(
                f"length_drop_ratio_bound must be in [0, 1), got {self.length_drop_ratio_bound}"
            )
        if not 0.0 <= self.layer_dropout_prob < 1.0:
            raise ValueError(f"layer_dropout_prob must be in [0, 1), got {self.layer_dropout_prob}")
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(
                f"kl_direction must be one of {KL_DIRECTIONS}, got {self.kl_direction!r}"
            )
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")

    @property
    def num_submodels(self) -> int:
        """Forward passes per step, the full model included (the loss divisor)."""
        return 1 + int(self.use_smallest) + self.num_sandwich


class LengthDropSampler:
    """LengthDrop's own RNG, checkpointed with the rest (accelerate's custom-object hook)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, direction: KLDirection
) -> torch.Tensor:
    """KL between output distributions over the last axis, averaged over the batch."""
    student = F.log_softmax(student_logits, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach(), dim=-1)
    if direction == "teacher_student":  # KL(teacher || student)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    # KL(student || teacher), as the reference code computes it
    return F.kl_div(teacher, student, log_target=True, reduction="batchmean")


def output_logits(output) -> tuple[torch.Tensor, ...]:
    if getattr(output, "logits", None) is not None:
        return (output.logits,)
    return (output.start_logits, output.end_logits)


def submodel_loss(output, teacher: tuple[torch.Tensor, ...], config: LengthDropConfig):
    if not config.inplace_distillation:
        return output.loss
    students = output_logits(output)
    # span extraction: the mean of the start and end distributions' KLs
    losses = [
        distillation_loss(s, t, config.kl_direction) for s, t in zip(students, teacher, strict=True)
    ]
    return sum(losses) / len(losses)


def lengthdrop_step(
    model: Callable[..., Any],
    core: LengthAdaptiveModel,
    batch: dict[str, torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    length_drop: LengthDropConfig,
    sampler: LengthDropSampler,
) -> dict[str, float]:
    """Forward and backward of the full model and every sub-model on one micro-batch;
    returns the loss terms (undivided).

    ``model`` is what to call (possibly wrapped for data parallelism), ``core`` the
    ``LengthAdaptiveModel`` inside it, ``backward`` the accelerator's backward.
    """
    num_layers, rng = core.num_layers, sampler.rng
    mode, max_length = core.config.length_mode, core.config.max_length
    # Absolute lengths count slots of the padded input, so they are drawn on that grid.
    grid = max_length if mode == "ratio" else batch["input_ids"].shape[1]
    divisor = length_drop.num_submodels
    use_layer_drop = length_drop.layer_dropout_prob > 0

    keep_full = (
        sample_layer_keep(num_layers, length_drop.layer_dropout_prob, rng)
        if use_layer_drop and length_drop.layer_drop_full
        else None
    )
    full = model(**batch, layer_keep=keep_full)
    backward(full.loss / divisor)
    teacher = tuple(t.detach() for t in output_logits(full))
    terms = {"loss_full": full.loss.item()}

    plans = []
    if length_drop.use_smallest:
        keep = (
            sample_layer_keep(num_layers, length_drop.layer_dropout_prob, rng)
            if use_layer_drop
            else None
        )
        lengths = smallest_config(
            num_layers, grid, length_drop.length_drop_ratio_bound, length_drop.min_length
        )
        plans.append(("loss_smallest", lengths, keep))
    for _ in range(length_drop.num_sandwich):
        keep = (
            sample_layer_keep(num_layers, length_drop.layer_dropout_prob, rng)
            if use_layer_drop
            else None
        )
        lengths = sample_length_config(
            num_layers, grid, length_drop.length_drop_ratio_bound, rng, keep, length_drop.min_length
        )
        plans.append(("loss_random", lengths, keep))
    random_losses = []
    for name, lengths, keep in plans:
        output = model(
            **batch, length_config=to_model_lengths(lengths, mode, grid), layer_keep=keep
        )
        loss = submodel_loss(output, teacher, length_drop)
        backward(loss / divisor)
        if name == "loss_random":
            random_losses.append(loss.item())
        else:
            terms[name] = loss.item()
    if random_losses:
        terms["loss_random"] = sum(random_losses) / len(random_losses)
    terms["loss"] = (
        terms["loss_full"] + terms.get("loss_smallest", 0.0) + sum(random_losses)
    ) / divisor
    return terms
