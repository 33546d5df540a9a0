"""One training loop, on accelerate: standard fine-tuning and LengthDrop.

``train`` runs the optimiser steps of a ``TrainConfig``; with a ``length_drop`` part each
step is LengthDrop's (``lengthdrop.lengthdrop_step``), else the task loss alone.
``build_model`` and ``train_model`` put a task's data and model around it.

Checkpoints (``checkpoints.py``) are written atomically every ``checkpoint_every`` steps
and at the end; a run started again in the same ``output_dir`` resumes from the newest
one that loads and ends with the same weights as an uninterrupted run. Damaged newer
ones are named with what is wrong and set aside, never deleted. A checkpoint records
the run's settings and ``TRAINING_VERSIONS``: a run with other settings, or from code
that computes something else, is refused rather than continued.

Under ``accelerate launch`` with N processes the loader still yields *global* batches
(the same on every process) and each process trains on every N-th row of each, so the
global batch, and the LengthDrop sub-models (drawn from one seeded stream on every
process), are those of a one-process run. Only the main process writes files; the
logged losses are averaged over processes.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.std import tqdm
from transformers import get_linear_schedule_with_warmup

from . import distributed
from .backbones import is_random_backbone, random_backbone_config
from .checkpoints import (
    CheckpointChoice,
    append_history,
    check_same_run,
    choose_checkpoint,
    explicit_checkpoint,
    jsonable,
    read_history,
    save_checkpoint,
    set_aside,
    write_history,
)
from .features import TaskData, make_dataloader, save_tokenizer
from .lengthdrop import LengthDropConfig, LengthDropSampler, lengthdrop_step
from .model import LengthAdaptiveConfig, LengthAdaptiveModel

logger = logging.getLogger(__name__)

# What a training run computes, per path. Bump a number when a change alters the weights
# that path produces (its loss, sampling, data order, tokenisation, or the model's
# forward): finished runs and checkpoints of the old number are then never reused. A
# move, a rename or a refactor keeps the numbers, and every finished run stays reusable.
# tests/test_training_version.py records each path's result on a tiny model and fails
# when that result changes while the number did not.
TRAINING_VERSIONS: dict[str, int] = {"finetune": 1, "lengthdrop": 1}


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
    keep_checkpoints: int = 2  # >= 2: the previous one is the fallback for a damaged newest
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
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.keep_checkpoints < 2:
            raise ValueError(
                f"keep_checkpoints must be >= 2, got {self.keep_checkpoints}: the previous "
                "checkpoint is what a run resumes from when the newest is damaged"
            )
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
    # Damaged checkpoints found on resume, where they were renamed to.
    set_aside: list[Path] = field(default_factory=list)


def train(
    model: LengthAdaptiveModel,
    train_loader: DataLoader,
    config: TrainConfig,
    resume_from: str | Path | Literal["auto"] | None = "auto",
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; see the module docstring.

    ``resume_from="auto"`` resumes from the newest checkpoint in ``config.output_dir``
    that loads: newer, damaged ones are named in a warning with each bad file and
    renamed ``checkpoint-N.damaged``; if checkpoints exist but none loads, the run is
    refused (``checkpoints.choose_checkpoint`` says why), never restarted. A path
    resumes from that checkpoint (an error if it is missing or damaged, never a silent
    fresh start); ``None`` starts fresh.
    The loader should have its own ``generator`` so that creating an iterator does not
    draw from the global RNG (``data.make_dataloader`` does this).
    """
    config.validate(batches_per_epoch=len(train_loader))
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    output_dir = Path(config.output_dir)
    if resume_from == "auto":
        choice = choose_checkpoint(output_dir)
    elif resume_from is None:
        choice = CheckpointChoice(None, None)
    else:
        choice = explicit_checkpoint(resume_from)
    checkpoint, resume_state = choice.checkpoint, choice.state
    if resume_state is not None:
        check_same_run(resume_state.get("train_config"), run_settings(config), checkpoint)

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
    sampler = LengthDropSampler(config.seed)
    accelerator.register_for_checkpointing(sampler)

    set_aside_to = _set_aside_damaged(accelerator, choice)
    global_step, start_epoch, skip_batches = 0, 0, 0
    if resume_state is not None:
        accelerator.load_state(str(checkpoint))
        global_step = resume_state["global_step"]
        start_epoch, skip_batches = resume_state["epoch"], resume_state["batch_in_epoch"]
        logger.info("resumed from %s at step %d", checkpoint, global_step)
    main = accelerator.is_main_process
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    history = read_history(metrics_path, up_to_step=global_step)
    if main:
        write_history(metrics_path, history)

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
                window.append(_step_losses(model, batch, accelerator, config.length_drop, sampler))
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
                    append_history(metrics_path, row)
                progress.set_postfix(loss=f"{row['loss']:.4f}")
            finished = global_step >= total_steps
            if global_step % config.checkpoint_every == 0 or finished:
                end_of_epoch = batch_in_epoch + 1 == len(train_loader)
                save_checkpoint(
                    accelerator,
                    output_dir,
                    global_step,
                    epoch + int(end_of_epoch),
                    0 if end_of_epoch else batch_in_epoch + 1,
                    run_settings(config),
                    config.keep_checkpoints,
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
        set_aside=set_aside_to,
    )


def _set_aside_damaged(accelerator: Accelerator, choice: CheckpointChoice) -> list[Path]:
    """Warn about each damaged checkpoint newer than the one resumed from and rename it
    aside (main process, once every process has chosen): kept, but out of retention's
    count and of the way of the new checkpoint of its step."""
    if not choice.damaged:
        return []
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return list(choice.damaged)
    moved = [set_aside(path) for path in choice.damaged]
    found = "; ".join(
        f"{path.name} does not load ({', '.join(problems)}), kept as {aside.name}"
        for (path, problems), aside in zip(choice.damaged.items(), moved, strict=True)
    )
    warnings.warn(
        f"{found}; resuming from {choice.checkpoint.name} instead",
        RuntimeWarning,
        stacklevel=3,
    )
    accelerator.wait_for_everyone()
    return moved


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


def training_path(config: TrainConfig) -> str:
    """``"lengthdrop"`` or ``"finetune"``: the key of ``TRAINING_VERSIONS`` for a config."""
    return "finetune" if config.length_drop is None else "lengthdrop"


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint records of its run, and a resumed run must match: the config
    and the version of what its training path computes."""
    settings = jsonable(asdict(config))
    settings["training_version"] = TRAINING_VERSIONS[training_path(config)]
    return settings


def _step_losses(
    model: LengthAdaptiveModel,
    batch: dict[str, torch.Tensor],
    accelerator: Accelerator,
    length_drop: LengthDropConfig | None,
    sampler: LengthDropSampler,
) -> dict[str, float]:
    """Forward and backward of one micro-batch; returns the loss terms (undivided)."""
    if length_drop is None:
        loss = model(**batch).loss
        accelerator.backward(loss)
        return {"loss": loss.item()}
    core = accelerator.unwrap_model(model)
    return lengthdrop_step(model, core, batch, accelerator.backward, length_drop, sampler)


def build_model(
    init_from: str | Path,
    task_data: TaskData,
    length_mode: str = "ratio",
    seed: int = 0,
    **hf_kwargs: Any,
) -> LengthAdaptiveModel:
    """The model a training run on ``task_data`` starts from: a backbone or a fine-tuned
    folder with the task's head, or for ``init_from="random:tiny-bert"`` a small randomly
    initialised BERT (seeded by ``seed``) for smoke runs."""
    task_type = "classification" if task_data.task.kind == "classification" else "span"
    extra = {"num_labels": task_data.task.num_labels} if task_type == "classification" else {}
    if is_random_backbone(init_from):
        hf_config = random_backbone_config(
            str(init_from), len(task_data.tokenizer), **extra, **hf_kwargs
        )
        torch.manual_seed(seed)
        config = LengthAdaptiveConfig(
            task_type=task_type, length_mode=length_mode, max_length=task_data.max_length
        )
        return LengthAdaptiveModel.from_config(hf_config, config)
    return LengthAdaptiveModel.from_pretrained(
        init_from,
        task_type=task_type,
        length_mode=length_mode,
        max_length=task_data.max_length,
        **extra,
        **hf_kwargs,
    )


def train_model(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    config: TrainConfig,
    batch_size: int = 32,
    resume_from: str | Path | Literal["auto"] | None = "auto",
) -> TrainResult:
    """Train on the task's training split, then save the model and tokenizer to
    ``<output_dir>/model``."""
    loader = make_dataloader(
        task_data.train, task_data.tokenizer, batch_size, shuffle=True, seed=config.seed
    )
    result = train(model, loader, config, resume_from=resume_from)
    if distributed.is_main_process():
        final = Path(config.output_dir) / "model"
        model.save_pretrained(final)
        save_tokenizer(task_data.tokenizer, final)
    return result
