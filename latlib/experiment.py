"""One task's pieces put together: tokenised splits, a model to train, its evaluation.

The pipeline's notebooks and the command line call these; each is a thin composition of
``data``, ``model``, ``train`` and ``evaluation``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from . import data as data_lib
from .anytime import Frontier, FrontierPoint
from .backbones import is_random_backbone, random_backbone_config, tokenizer_source
from .compare import CurvePoint
from .distributed import is_main_process
from .evaluation import evaluate_classification, evaluate_squad
from .flops import example_macs, paper_macs
from .lengths import full_config, smallest_config, to_model_lengths
from .model import LengthAdaptiveConfig, LengthAdaptiveModel
from .prefix_cache import DEFAULT_MAX_BYTES, PrefixCache
from .search import EvaluatedConfig
from .train import TrainConfig, TrainResult, train

SearchOn = Literal["held_out", "dev"]


@dataclass
class TaskData:
    """Tokenised splits of one task. For SQuAD the ``*_examples`` hold the raw rows that
    answers are extracted against; for classification they are the same rows as features."""

    task: data_lib.TaskSpec
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    train: datasets.Dataset
    search: datasets.Dataset
    dev: datasets.Dataset
    search_examples: datasets.Dataset
    dev_examples: datasets.Dataset

    def split(self, name: str) -> tuple[datasets.Dataset, datasets.Dataset]:
        """(features, examples) of ``"search"`` or ``"dev"``."""
        if name == "search":
            return self.search, self.search_examples
        if name == "dev":
            return self.dev, self.dev_examples
        raise ValueError(f"split must be 'search' or 'dev', got {name!r}")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tokenizer_source(name_or_path))


def prepare_task_data(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: str | Path | None = None,
    max_length: int = 128,
    doc_stride: int = 128,
    train_size: int | None = None,
    search_size: int | float = 0.05,
    dev_size: int | None = None,
    search_on: SearchOn = "held_out",
    seed: int = 42,
) -> TaskData:
    """Load, split and tokenise a task.

    ``search_size`` rows of the training data are held out for the search (so that it
    never tunes on the dev set it reports); ``search_on="dev"`` is the paper's choice of
    searching on the dev set itself. ``train_size``/``dev_size`` take seeded subsets for
    CPU-sized runs.
    """
    spec = data_lib.get_task(task)
    if search_on not in ("held_out", "dev"):
        raise ValueError(f"search_on must be 'held_out' or 'dev', got {search_on!r}")
    train_rows = data_lib.load_task(task, "train", data_dir)
    dev_rows = data_lib.take_subset(data_lib.load_task(task, "dev", data_dir), dev_size, seed)
    if search_on == "held_out":
        train_rows, search_rows = data_lib.train_search_split(train_rows, search_size, seed)
    else:
        search_rows = dev_rows
    train_rows = data_lib.take_subset(train_rows, train_size, seed)

    if spec.kind == "classification":

        def features(rows: datasets.Dataset, training: bool) -> datasets.Dataset:
            return data_lib.tokenize_classification(rows, tokenizer, task, max_length)
    else:

        def features(rows: datasets.Dataset, training: bool) -> datasets.Dataset:
            prepare = (
                data_lib.prepare_squad_train_features
                if training
                else data_lib.prepare_squad_eval_features
            )
            return prepare(rows, tokenizer, max_length=max_length, doc_stride=doc_stride)

    return TaskData(
        task=spec,
        tokenizer=tokenizer,
        max_length=max_length,
        train=features(train_rows, True),
        search=features(search_rows, False),
        dev=features(dev_rows, False),
        search_examples=search_rows,
        dev_examples=dev_rows,
    )


def build_model(
    init_from: str | Path,
    task_data: TaskData,
    length_mode: str = "ratio",
    seed: int = 0,
    **hf_kwargs: Any,
) -> LengthAdaptiveModel:
    """A length-adaptive model for the task, from a backbone or a fine-tuned folder.

    ``init_from="random:tiny-bert"`` builds a small randomly initialised BERT (seeded by
    ``seed``) for smoke runs.
    """
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
    loader = data_lib.make_dataloader(
        task_data.train, task_data.tokenizer, batch_size, shuffle=True, seed=config.seed
    )
    result = train(model, loader, config, resume_from=resume_from)
    if is_main_process():
        final = Path(config.output_dir) / "model"
        model.save_pretrained(final)
        save_tokenizer(task_data.tokenizer, final)
    return result


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Save without the truncation/padding state of the last call: a fast tokenizer
    writes that state into tokenizer.json, and it differs when tokenised data came from
    the ``datasets`` cache, which would make two identical runs save different files."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    tokenizer.save_pretrained(directory)


def split_batches(
    task_data: TaskData, split: str, batch_size: int = 64
) -> list[dict[str, torch.Tensor]]:
    """The padded, length-bucketed evaluation batches of a split, made once to be read
    many times (a search scores every configuration on the same batches)."""
    features, _ = task_data.split(split)
    return list(
        data_lib.make_dataloader(features, task_data.tokenizer, batch_size, shuffle=False, seed=0)
    )


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
        batches = data_lib.make_dataloader(
            features, task_data.tokenizer, batch_size, shuffle=False, seed=0
        )
    if task_data.task.kind == "classification":
        return evaluate_classification(model, batches, features["labels"], length_config, cache)
    return evaluate_squad(model, batches, examples, features, length_config, cache)


def primary_metric(task_data: TaskData) -> str:
    """The number the search maximises and the tables report."""
    return "accuracy" if task_data.task.kind == "classification" else "f1"


# ---------------------------------------------------------------------------- search


@dataclass
class SearchProblem:
    """What the search sees of a model and a data split: two callables and the bounds."""

    evaluate: Callable[[tuple[int, ...]], float]
    cost: Callable[[tuple[int, ...]], float]
    lower: tuple[int, ...]
    upper: tuple[int, ...]
    max_length: int
    fingerprint: dict[str, Any]
    cache: PrefixCache | None = None

    @property
    def arguments(self) -> tuple[Any, ...]:
        """The leading arguments of ``search.evolutionary_search`` and ``random_search``:
        evaluate, cost, lower, upper, max_length."""
        return self.evaluate, self.cost, self.lower, self.upper, self.max_length


def search_problem(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    model_dir: str | Path,
    length_drop_ratio_bound: float = 0.2,
    split: str = "search",
    batch_size: int = 64,
    cache_bytes: int = DEFAULT_MAX_BYTES,
    reuse_batches: bool = True,
) -> SearchProblem:
    """Fitness = the task metric on ``split``; cost = mean real-token MACs on ``split``.

    The bounds are the LengthDrop training's: its smallest configuration and the full
    model. The fingerprint ties a search store to these weights and this data.
    Every evaluation reads the same batches, made once (``reuse_batches=False``: batched
    again each time, as a lone ``evaluate_model`` is), and shares the layers of common
    length prefixes through a ``PrefixCache`` of ``cache_bytes`` (0: none); the scores
    are the same either way.
    """
    features, _ = task_data.split(split)
    metric = primary_metric(task_data)
    mode, max_length = model.config.length_mode, task_data.max_length
    cache = PrefixCache(cache_bytes) if cache_bytes > 0 else None
    batches = split_batches(task_data, split, batch_size) if reuse_batches else None

    def evaluate(config: tuple[int, ...]) -> float:
        lengths = to_model_lengths(config, mode, max_length)
        scores = evaluate_model(model, task_data, split, lengths, batch_size, cache, batches)
        return scores[metric]

    fingerprint = {
        "model": str(Path(model_dir).resolve().name),
        "weights_sha256": weights_digest(model),
        "task": task_data.task.name,
        "split": split,
        "rows": len(features),
        "metric": metric,
        "length_mode": mode,
        "max_length": max_length,
        "cost": "latlib.flops.example_macs/v1",
    }
    return SearchProblem(
        evaluate=evaluate,
        cost=macs_function(model, task_data, split),
        lower=smallest_config(model.num_layers, max_length, length_drop_ratio_bound),
        upper=full_config(model.num_layers, max_length),
        max_length=max_length,
        fingerprint=fingerprint,
        cache=cache,
    )


def weights_digest(model: LengthAdaptiveModel) -> str:
    """A short hash of the weights, so a search store cannot be reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def frontier_from_search(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    problem: SearchProblem,
    points: Sequence[EvaluatedConfig],
    batch_size: int = 64,
) -> Frontier:
    """The search's frontier, each point re-evaluated on the dev set (the reported number)."""
    metric = primary_metric(task_data)
    mode, max_length = model.config.length_mode, problem.max_length
    dev_batches = split_batches(task_data, "dev", batch_size)
    frontier_points = []
    for point in points:
        lengths = to_model_lengths(point.config, mode, max_length)
        frontier_points.append(
            FrontierPoint(
                length_config=lengths,
                grid_config=tuple(point.config),
                macs=point.cost,
                paper_macs=float(
                    paper_macs(
                        model.hf_config, max_length, point.config, model.config.task_type
                    ).total
                ),
                score=point.score,
                dev_score=evaluate_model(
                    model, task_data, "dev", lengths, batch_size, batches=dev_batches
                )[metric],
            )
        )
    return Frontier(
        points=frontier_points,
        metric=metric,
        length_mode=mode,
        max_length=max_length,
        full_macs=problem.cost(problem.upper),
        full_paper_macs=float(
            paper_macs(model.hf_config, max_length, None, model.config.task_type).total
        ),
        full_score=problem.evaluate(problem.upper),
        full_dev_score=evaluate_model(
            model, task_data, "dev", None, batch_size, batches=dev_batches
        )[metric],
        metadata={"search": problem.fingerprint},
    )


def macs_function(
    model: LengthAdaptiveModel, task_data: TaskData, split: str = "dev"
) -> Callable[[Sequence[int]], float]:
    """grid configuration -> mean real-token MACs per example of ``split``."""
    features, _ = task_data.split(split)
    mode, max_length = model.config.length_mode, task_data.max_length
    real_lengths = data_lib.sequence_lengths(features).tolist()

    def macs(grid: Sequence[int]) -> float:
        lengths = to_model_lengths(grid, mode, max_length)
        return example_macs(model.hf_config, real_lengths, lengths, mode, model.config.task_type)

    return macs


def split_macs(
    model: LengthAdaptiveModel, task_data: TaskData, grid: Sequence[int], split: str = "dev"
) -> float:
    """Mean real-token MACs per example of ``split`` at a grid configuration."""
    return macs_function(model, task_data, split)(grid)


def curve_point(
    name: str,
    model: LengthAdaptiveModel,
    task_data: TaskData,
    grid: Sequence[int],
    score: float | None = None,
    split: str = "dev",
    batch_size: int = 64,
) -> CurvePoint:
    """One model at one grid configuration, scored on ``split`` (unless ``score`` is given)."""
    if score is None:
        lengths = to_model_lengths(grid, model.config.length_mode, task_data.max_length)
        score = evaluate_model(model, task_data, split, lengths, batch_size)[
            primary_metric(task_data)
        ]
    return CurvePoint(
        curve=name,
        config=tuple(grid),
        macs=split_macs(model, task_data, grid, split),
        paper_macs=float(
            paper_macs(model.hf_config, task_data.max_length, grid, model.config.task_type).total
        ),
        score=score,
    )
