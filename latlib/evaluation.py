"""Evaluate a model at any length configuration: accuracy (SST-2, MNLI-m), EM/F1 (SQuAD),
and what it costs there (mean real-token MACs per example of a split)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

from . import distributed
from .features import TaskData, make_dataloader, sequence_lengths
from .flops import example_macs
from .lengths import to_model_lengths
from .metrics import accuracy, postprocess_span_predictions, squad_em_f1
from .model import LengthAdaptiveModel
from .prefix_cache import PrefixCache


@torch.inference_mode()
def predict_logits(
    model: LengthAdaptiveModel,
    loader: DataLoader | Iterable[dict[str, torch.Tensor]],
    length_config: Sequence[float] | None = None,
    cache: PrefixCache | None = None,
) -> dict[str, np.ndarray]:
    """Logits for every row of the loader's data set, in row order.

    The loader (or a list of its batches, to read again) must yield an ``index`` tensor
    (``data.make_dataloader`` does), so batches may come in any order (length-sorted for
    speed). Span logits are [rows, longest row],
    with ``-inf`` past each row's real tokens. With a ``cache`` (one per data set and
    batch order), layers whose lengths an earlier configuration shared are not rerun.
    In a distributed run each process scores every N-th batch and all receive every row.
    """
    model.eval()
    device = next(model.parameters()).device
    is_span = model.config.task_type == "span"
    names = ("start_logits", "end_logits") if is_span else ("logits",)
    rows: dict[str, dict[int, np.ndarray]] = {name: {} for name in names}
    rank, world = distributed.rank_and_world()
    for number, batch in enumerate(loader):
        if number % world != rank:
            continue
        rows_tensor = batch["index"]  # read, not popped: a list of batches may be reused
        index = rows_tensor.tolist()
        inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if k in batch}
        if cache is None:
            out = model(**inputs, length_config=length_config)
        else:
            out = cache.forward(model, number, rows_tensor, inputs, length_config)
        real_lengths = batch["attention_mask"].sum(-1).tolist()
        for name in names:
            values = getattr(out, name).float().cpu().numpy()
            for slot, row in enumerate(index):
                rows[name][row] = values[slot, : real_lengths[slot]] if is_span else values[slot]
    if world > 1:
        rows = {
            name: {row: v for part in distributed.gather(rows[name]) for row, v in part.items()}
            for name in names
        }
    count = len(rows[names[0]])
    if sorted(rows[names[0]]) != list(range(count)):
        raise ValueError(
            "the loader did not yield every row exactly once; use data.make_dataloader"
        )
    result = {}
    for name in names:
        ordered = [rows[name][row] for row in range(count)]
        if is_span:
            width = max(len(r) for r in ordered)
            padded = np.full((count, width), -np.inf, dtype=np.float32)
            for row, values in enumerate(ordered):
                padded[row, : len(values)] = values
            result[name] = padded
        else:
            result[name] = np.stack(ordered)
    return result


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def evaluate_classification(
    model: LengthAdaptiveModel,
    loader: DataLoader | Iterable[dict[str, torch.Tensor]],
    labels: Sequence[int] | np.ndarray,
    length_config: Sequence[float] | None = None,
    cache: PrefixCache | None = None,
) -> dict[str, float]:
    """Accuracy (percent) of the model at ``length_config`` on the loader's rows."""
    logits = predict_logits(model, loader, length_config, cache)["logits"]
    return {"accuracy": accuracy(logits.argmax(-1), np.asarray(labels))}


def evaluate_squad(
    model: LengthAdaptiveModel,
    loader: DataLoader | Iterable[dict[str, torch.Tensor]],
    examples: datasets.Dataset,
    features: datasets.Dataset,
    length_config: Sequence[float] | None = None,
    cache: PrefixCache | None = None,
    **postprocess: Any,
) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (percent) of the model at ``length_config``."""
    logits = predict_logits(model, loader, length_config, cache)
    predictions = postprocess_span_predictions(
        examples, features, logits["start_logits"], logits["end_logits"], **postprocess
    )
    references = {row["id"]: row["answers"]["text"] for row in examples}
    return squad_em_f1(predictions, references)


def evaluate_model(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    split: str = "dev",
    length_config: Sequence[float] | None = None,
    batch_size: int = 64,
    cache: PrefixCache | None = None,
    batches: Sequence[dict[str, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """The task metric on ``"dev"`` or ``"search"`` at a length configuration.

    ``batches``: this split's ``split_batches`` at ``batch_size``, to skip batching it
    again. A ``cache`` must serve this split and batch size only (see ``prefix_cache``).
    """
    features, examples = task_data.split(split)
    if batches is None:
        batches = make_dataloader(features, task_data.tokenizer, batch_size, shuffle=False, seed=0)
    if task_data.task.kind == "classification":
        return evaluate_classification(model, batches, features["labels"], length_config, cache)
    return evaluate_squad(model, batches, examples, features, length_config, cache)


def macs_function(
    model: LengthAdaptiveModel, task_data: TaskData, split: str = "dev"
) -> Callable[[Sequence[int]], float]:
    """grid configuration -> mean real-token MACs per example of ``split``."""
    features, _ = task_data.split(split)
    mode, max_length = model.config.length_mode, task_data.max_length
    real_lengths = sequence_lengths(features).tolist()

    def macs(grid: Sequence[int]) -> float:
        lengths = to_model_lengths(grid, mode, max_length)
        return example_macs(model.hf_config, real_lengths, lengths, mode, model.config.task_type)

    return macs
