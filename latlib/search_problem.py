"""A model on a data split, posed to the search; the searched frontier as the model's own.

``search.py`` knows configurations, scores and costs only. This module binds them to a
``LengthAdaptiveModel``: the score of a configuration is the task metric on a split
(every evaluation on the same batches, common layer prefixes shared through a
``PrefixCache``), its cost the mean real-token MACs there, the bounds those of the
LengthDrop training, and a fingerprint of the weights and data ties a search store to
them. ``frontier_from_search`` re-scores the searched frontier on dev: the
``anytime.Frontier`` saved beside the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .anytime import Frontier, FrontierPoint, weights_digest
from .evaluation import evaluate_model, macs_function
from .features import TaskData, primary_metric, split_batches
from .flops import paper_macs
from .lengths import full_config, smallest_config, to_model_lengths
from .model import LengthAdaptiveModel
from .prefix_cache import DEFAULT_MAX_BYTES, PrefixCache
from .search import SearchProblem
from .store import EvaluatedConfig


@dataclass
class ModelSearchProblem(SearchProblem):
    """A ``SearchProblem`` over a model, with the prefix cache its evaluations share."""

    cache: PrefixCache | None = None


def search_problem(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    model_dir: str | Path,
    length_drop_ratio_bound: float = 0.2,
    split: str = "search",
    batch_size: int = 64,
    cache_bytes: int = DEFAULT_MAX_BYTES,
    reuse_batches: bool = True,
) -> ModelSearchProblem:
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
    return ModelSearchProblem(
        evaluate=evaluate,
        cost=macs_function(model, task_data, split),
        lower=smallest_config(model.num_layers, max_length, length_drop_ratio_bound),
        upper=full_config(model.num_layers, max_length),
        max_length=max_length,
        fingerprint=fingerprint,
        cache=cache,
    )


def frontier_from_search(
    model: LengthAdaptiveModel,
    task_data: TaskData,
    problem: SearchProblem,
    points: Sequence[EvaluatedConfig],
    batch_size: int = 64,
) -> Frontier:
    """The search's frontier, each point re-evaluated on the dev set (the reported number),
    bound to the model's weights (``Frontier.load`` refuses it beside other weights)."""
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
        weights_sha256=problem.fingerprint.get("weights_sha256") or weights_digest(model),
    )
