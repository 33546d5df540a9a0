"""One training loop, on accelerate: standard fine-tuning and LengthDrop.

LengthDrop (Kim & Cho, 2021), each optimiser step:

1. the full model on the task loss (ground truth);
2. the smallest sub-model (``1 - p`` of the previous length at every layer);
3. ``num_sandwich`` random sub-models (``sample_length_config``);

sub-models learn by *inplace distillation* from the detached full-model output. Every
loss is divided by the number of sub-models and back-propagated on its own, so memory
stays that of one forward pass. LayerDrop skips whole layers of the sub-models (and, as
in the reference code, of the full-model pass too unless ``layer_drop_full=False``).

Checkpoints (``accelerate``'s ``save_state``: model, optimiser, scheduler, every RNG,
plus the LengthDrop sampler) are written atomically every ``checkpoint_every`` steps and
at the end; a run started again in the same ``output_dir`` resumes from the newest one
and ends with the same weights as an uninterrupted run.

Under ``accelerate launch`` with N processes the loader still yields *global* batches
(the same on every process) and each process trains on every N-th row of each, so the
global batch, and the LengthDrop sub-models (drawn from one seeded stream on every
process), are those of a one-process run. Only the main process writes files; the
logged losses are averaged over processes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import distributed
from .lengths import (
    sample_layer_keep,
    sample_length_config,
    smallest_config,
    to_model_lengths,
)
from .model import LengthAdaptiveModel

logger = logging.getLogger(__name__)

KLDirection = Literal["student_teacher", "teacher_student"]
KL_DIRECTIONS: tuple[str, ...] = ("student_teacher", "teacher_student")
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


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


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping; ``length_drop=None`` is standard fine-tuning.

    Defaults follow the reference GLUE settings (AdamW, lr 2e-5, batch 32, 3 epochs,
    linear decay, no warmup, no weight decay).
    """

    output_dir: str | Path
    learning_rate: float = 2e-5
    num_epochs: float = 3.0
    max_steps: int | None = None  # overrides num_epochs
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 20
    progress: bool = True
    length_drop: LengthDropConfig | None = None
    cpu: bool = False

    def validate(self, batches_per_epoch: int) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_steps is None and self.num_epochs <= 0:
            raise ValueError(f"num_epochs must be positive, got {self.num_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("weight_decay must be >= 0 and max_grad_norm > 0")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every, keep_checkpoints and log_every must be >= 1")
        if batches_per_epoch < 1:
            raise ValueError("the training data loader is empty: nothing to train on")
        if self.length_drop is not None:
            self.length_drop.validate()


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    seconds: float
    steps_per_second: float
    resumed_from: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


class _SamplerState:
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


def _output_logits(output) -> tuple[torch.Tensor, ...]:
    if getattr(output, "logits", None) is not None:
        return (output.logits,)
    return (output.start_logits, output.end_logits)


def _submodel_loss(output, teacher: tuple[torch.Tensor, ...], config: LengthDropConfig):
    if not config.inplace_distillation:
        return output.loss
    students = _output_logits(output)
    # span extraction: the mean of the start and end distributions' KLs
    losses = [
        distillation_loss(s, t, config.kl_direction) for s, t in zip(students, teacher, strict=True)
    ]
    return sum(losses) / len(losses)


def _loss_terms(
    model: LengthAdaptiveModel,
    batch: dict[str, torch.Tensor],
    accelerator: Accelerator,
    length_drop: LengthDropConfig | None,
    sampler: _SamplerState,
) -> dict[str, float]:
    """Forward and backward of one micro-batch; returns the loss terms (undivided)."""
    if length_drop is None:
        loss = model(**batch).loss
        accelerator.backward(loss)
        return {"loss": loss.item()}

    core = accelerator.unwrap_model(model)
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
    accelerator.backward(full.loss / divisor)
    teacher = tuple(t.detach() for t in _output_logits(full))
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
        loss = _submodel_loss(output, teacher, length_drop)
        accelerator.backward(loss / divisor)
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


def find_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (None if there is none)."""
    candidates = _checkpoints(Path(output_dir))
    return candidates[-1] if candidates else None


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (staging folders start with a dot)."""
    return sorted(
        (p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )


def read_checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    """The bookkeeping of a checkpoint; a clear error if it is missing or damaged."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist; pass an existing checkpoint folder "
            "or resume_from=None to start fresh"
        )
    state_file = checkpoint / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        int(state["global_step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint {checkpoint} is damaged ({state_file}: {error}); delete that folder to "
            "resume from the previous checkpoint, or choose another output_dir"
        ) from error
    return state


def train(
    model: LengthAdaptiveModel,
    train_loader: DataLoader,
    config: TrainConfig,
    resume_from: str | Path | Literal["auto"] | None = "auto",
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; see the module docstring.

    ``resume_from="auto"`` resumes from the newest checkpoint in ``config.output_dir`` when
    there is one; a path resumes from that checkpoint (an error if it is missing or
    damaged, never a silent fresh start); ``None`` starts fresh.
    The loader should have its own ``generator`` so that creating an iterator does not
    draw from the global RNG (``data.make_dataloader`` does this).
    """
    config.validate(batches_per_epoch=len(train_loader))
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    output_dir = Path(config.output_dir)
    checkpoint = find_checkpoint(output_dir) if resume_from == "auto" else resume_from
    resume_state = read_checkpoint_state(checkpoint) if checkpoint is not None else None
    if resume_state is not None:
        _check_same_run(resume_state.get("train_config"), config, checkpoint)

    total_steps = config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)
    set_seed(config.seed)
    layer_drop = config.length_drop is not None and config.length_drop.layer_dropout_prob > 0
    launched = distributed.launched_processes()
    accelerator = Accelerator(
        # accelerate forms a CPU process group only when told to run on the CPU
        cpu=config.cpu or (launched > 1 and not torch.cuda.is_available()),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # LayerDrop skips whole layers, so with several processes some weights get no
        # gradient in a step; DDP must be told to expect that.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=layer_drop)],
        # Each global batch is split across processes (``_shard``), so the scheduler
        # steps once per optimiser step, not once per process.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.weight_decay), lr=config.learning_rate
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    distributed.check_group(accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    sampler = _SamplerState(config.seed)
    accelerator.register_for_checkpointing(sampler)

    global_step, start_epoch, skip_batches = 0, 0, 0
    if resume_state is not None:
        accelerator.load_state(str(checkpoint))
        global_step = resume_state["global_step"]
        start_epoch, skip_batches = resume_state["epoch"], resume_state["batch_in_epoch"]
        logger.info("resumed from %s at step %d", checkpoint, global_step)
    main = accelerator.is_main_process
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    history = _read_history(metrics_path, up_to_step=global_step)
    if main:
        _write_history(metrics_path, history)

    model.train()
    progress = tqdm(
        total=total_steps,
        initial=global_step,
        disable=not config.progress or not accelerator.is_local_main_process,
        desc="train",
        unit="step",
    )
    started, steps_this_run = time.perf_counter(), 0
    window: list[dict[str, float]] = []
    epoch = start_epoch
    done = global_step >= total_steps
    while not done:
        batch_sampler = getattr(train_loader, "batch_sampler", None)
        if hasattr(batch_sampler, "set_epoch"):
            batch_sampler.set_epoch(epoch)
        batches = iter(train_loader)
        for batch_in_epoch, batch in enumerate(batches):
            if batch_in_epoch < skip_batches:
                continue
            batch = _shard(
                {k: v.to(accelerator.device) for k, v in batch.items() if k != "index"},
                accelerator.process_index,
                accelerator.num_processes,
            )
            with accelerator.accumulate(model):
                window.append(_loss_terms(model, batch, accelerator, config.length_drop, sampler))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            steps_this_run += 1
            progress.update(1)
            if global_step % config.log_every == 0 or global_step == total_steps:
                elapsed = time.perf_counter() - started
                row = {
                    "step": global_step,
                    "epoch": epoch + (batch_in_epoch + 1) / len(train_loader),
                    "learning_rate": scheduler.get_last_lr()[0],
                    **_mean_over_processes(accelerator, window),
                    "steps_per_second": steps_this_run / elapsed,
                    "elapsed_seconds": elapsed,
                }
                window = []
                history.append(row)
                if main:
                    _append_history(metrics_path, row)
                progress.set_postfix(loss=f"{row['loss']:.4f}")
            finished = global_step >= total_steps
            if global_step % config.checkpoint_every == 0 or finished:
                end_of_epoch = batch_in_epoch + 1 == len(train_loader)
                _save_checkpoint(
                    accelerator,
                    output_dir,
                    global_step,
                    epoch + int(end_of_epoch),
                    0 if end_of_epoch else batch_in_epoch + 1,
                    config,
                )
                if on_checkpoint is not None:
                    on_checkpoint(global_step)
            if finished:
                done = True
                break
        skip_batches = 0
        epoch += 1
    progress.close()
    seconds = time.perf_counter() - started
    model = accelerator.unwrap_model(model)
    model.eval()
    return TrainResult(
        output_dir=output_dir,
        global_step=global_step,
        seconds=seconds,
        steps_per_second=steps_this_run / seconds if seconds > 0 else 0.0,
        resumed_from=Path(checkpoint) if checkpoint is not None else None,
        history=history,
    )


def _shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """This process's rows of a global batch: every ``world``-th row from ``rank``."""
    if world == 1:
        return batch
    rows = next(iter(batch.values())).size(0)
    if rows < world:
        raise ValueError(
            f"a batch of {rows} rows cannot feed {world} processes; use a batch_size of at "
            f"least {world} (it is the global batch, split across processes)"
        )
    return {name: values[rank::world] for name, values in batch.items()}


def _mean_over_processes(
    accelerator: Accelerator, window: list[dict[str, float]]
) -> dict[str, float]:
    """The loss terms of the steps since the last log, averaged over steps and processes."""
    names = list(window[0])
    means = torch.tensor(
        [sum(w.get(name, 0.0) for w in window) / len(window) for name in names],
        dtype=torch.float64,
        device=accelerator.device,
    )
    if accelerator.num_processes > 1:
        means = accelerator.reduce(means, reduction="mean")
    return dict(zip(names, means.tolist(), strict=True))


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# Settings that change how a run is recorded, not what it computes: a run may resume
# with other values of these.
_BOOKKEEPING = ("output_dir", "progress", "log_every", "checkpoint_every", "keep_checkpoints")


def _check_same_run(saved: dict[str, Any] | None, config: TrainConfig, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint written with other hyperparameters."""
    if saved is None:
        return
    current = _jsonable(asdict(config))
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in _BOOKKEEPING and saved.get(key) != current.get(key)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(
            f"checkpoint {checkpoint} was written with other settings ({details}); resuming "
            "would mix two runs. Use another output_dir, or resume_from=None to start fresh"
        )


def _save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    global_step: int,
    epoch: int,
    batch_in_epoch: int,
    config: TrainConfig,
) -> Path:
    """Write to a temporary folder, then rename: a crash never leaves half a checkpoint.

    Every process takes part (each saves its own RNG state); the main one moves files."""
    final = output_dir / f"{CHECKPOINT_PREFIX}{global_step}"
    staging = output_dir / f".{CHECKPOINT_PREFIX}{global_step}.partial"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return final
    state = {
        "global_step": global_step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "train_config": _jsonable(asdict(config)),
    }
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    for old in _checkpoints(output_dir)[: -config.keep_checkpoints]:
        shutil.rmtree(old)
    return final


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read_history(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """Metrics logged up to the checkpoint we resume from (later rows are redone)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row["step"] <= up_to_step:
                rows.append(row)
    return rows


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _append_history(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
