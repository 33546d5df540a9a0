"""Stages fine-tune and LengthDrop: train, score on dev, write the model and its metrics.

Both resume a killed run from its last checkpoint and reuse a finished one
(``runs.training_run_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..distributed import is_main_process
from ..evaluation import evaluate_model
from ..features import primary_metric
from .params import TaskParams
from .paths import TaskPaths, record_timing, replace_dir, write_json
from .runs import smallest_score, task_data, train_from, training_run_dir


def _train_stage(
    params: TaskParams, paths: TaskPaths, stage: str, init_from: str | Path, save_to: Path
) -> dict[str, Any]:
    section = getattr(params, stage)
    run_dir = training_run_dir(params, paths, stage)
    data = task_data(params, init_from, with_train=True)
    model, result = train_from(params, stage, init_from, data, run_dir)
    model.eval()
    metric = primary_metric(data)
    batch = section["eval_batch_size"]
    metrics: dict[str, Any] = {
        "task": params.task,
        "metric": metric,
        "train_source": data.sources.get("train"),
        "dev_source": data.sources.get("dev"),
        "train_rows": len(data.train),
        "dev_rows": len(data.dev),
        "steps": result.global_step,
        f"dev_{metric}_full": evaluate_model(model, data, "dev", None, batch)[metric],
    }
    if stage == "lengthdrop":
        smallest, score = smallest_score(model, data, section["length_drop_ratio_bound"], batch)
        metrics["smallest_config"] = list(smallest)
        metrics[f"dev_{metric}_smallest"] = score
    if not is_main_process():
        return {}  # every process evaluated its share; the main one writes
    replace_dir(run_dir / "model", save_to)
    write_json(paths.results / f"{stage}.json", metrics)
    record_timing(
        paths,
        stage,
        {
            "seconds": result.seconds,
            "steps_per_second": result.steps_per_second,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
        },
    )
    return metrics


def finetune(params: TaskParams, paths: TaskPaths) -> dict[str, Any]:
    """Standard fine-tuning of the backbone; writes ``models/<task>/standard``."""
    return _train_stage(params, paths, "finetune", params.model["backbone"], paths.standard_model)


def lengthdrop(params: TaskParams, paths: TaskPaths) -> dict[str, Any]:
    """LengthDrop training from the fine-tuned model; writes ``models/<task>/lat``."""
    return _train_stage(params, paths, "lengthdrop", paths.standard_model, paths.lat_model)
