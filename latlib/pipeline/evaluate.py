"""Stage evaluate: the paper's Figure 2 curves on dev, their hypervolumes, the paper-style
table and the Pareto plot of one task."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
import torch

from .. import distributed
from ..distributed import is_main_process
from ..evaluation import evaluate_model, macs_function
from ..features import TaskData, make_dataloader, primary_metric
from ..flops import paper_macs
from ..lengths import constant_rate_config, full_config, smallest_config, to_model_lengths
from ..model import LengthAdaptiveModel
from . import plots
from .curves import (
    LAT_CONSTANT,
    LAT_EVOLUTIONARY,
    LAT_NO_RESTORE,
    LAT_RANDOM,
    NO_RESTORE,
    SMALLEST_ROW,
    STANDARD_CONSTANT,
    STANDARD_ROW,
    CurvePoint,
    curve_hypervolume,
    summary_row,
    table_points,
)
from .params import TaskParams
from .paths import TaskPaths, read_json, write_json
from .runs import task_data
from .tables import format_table

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def evaluate(params: TaskParams, paths: TaskPaths) -> dict[str, Any]:
    """The four curves on the dev set, their hypervolumes, the paper-style table and the
    Pareto plots of one task."""
    tolerance = params.evaluate["tolerance"]
    bound = params.lengthdrop["length_drop_ratio_bound"]
    batch = params.search["eval_batch_size"]
    device = distributed.device()
    lat = LengthAdaptiveModel.from_pretrained(paths.anytime_model).eval().to(device)
    standard = (
        LengthAdaptiveModel.from_pretrained(
            paths.standard_model, length_mode=lat.config.length_mode
        )
        .eval()
        .to(device)
    )
    data = task_data(params, paths.lat_model, with_train=False)
    searched = read_json(paths.results / "search.json")
    frontier = lat.frontier
    num_layers, max_length = lat.num_layers, data.max_length

    full = full_config(num_layers, max_length)
    dev_cost = macs_function(lat, data, "dev")  # the same for both models: one backbone
    # Scores already known, by (model, configuration): each is computed once.
    known = {(id(lat), full): frontier.full_dev_score}

    def point(name: str, model: LengthAdaptiveModel, grid, score: float | None = None):
        key = (id(model), tuple(grid))
        scored = curve_point(
            name,
            model,
            data,
            grid,
            score if score is not None else known.get(key),
            batch_size=batch,
            cost=dev_cost,
        )
        known[key] = scored.score
        return scored

    standard_full = point(STANDARD_CONSTANT, standard, full)
    lat_full = point("LAT", lat, full)
    curves: dict[str, list[CurvePoint]] = {
        LAT_EVOLUTIONARY: [
            point(LAT_EVOLUTIONARY, lat, p.grid_config, p.dev_score) for p in frontier.points
        ],
        LAT_RANDOM: [point(LAT_RANDOM, lat, p["config"]) for p in searched["random_frontier"]],
    }
    for name, model in ((STANDARD_CONSTANT, standard), (LAT_CONSTANT, lat)):
        curves[name] = [
            point(name, model, constant_rate_config(num_layers, max_length, float(rate)))
            for rate in params.search["constant_rates"]
        ]
    curves = {name: points for name, points in curves.items() if points}
    metric = primary_metric(data)
    # The hypervolumes' reference point comes from the paper's curves alone.
    all_points = [p for points in curves.values() for p in points]
    reference = (standard_full.macs * 1.0001, min(p.score for p in all_points))
    smallest = point(SMALLEST_ROW, lat, smallest_config(num_layers, max_length, bound))
    picked = [
        (name, lat if name != STANDARD_ROW else standard, chosen)
        for name, chosen in table_points(
            standard_full, lat_full, curves[LAT_EVOLUTIONARY], smallest, tolerance
        )
    ]
    if lat.config.task_type == "span":
        # Claim 3: the same model at the same configurations, dropped tokens not restored.
        unrestored = without_drop_and_restore(lat)
        curves[LAT_NO_RESTORE] = [
            point(LAT_NO_RESTORE, unrestored, p.grid_config) for p in frontier.points
        ]
        picked += [
            (f"{name}, {NO_RESTORE}", unrestored, point(LAT_NO_RESTORE, unrestored, p.config))
            for name, _, p in picked[2:]
            if p is not None
        ]
    hypervolumes = {name: curve_hypervolume(points, *reference) for name, points in curves.items()}
    table_data, rescore = table_split(params, data, paths)
    # Span extraction reports exact match beside F1, so its table rows are scored with
    # every metric (on their own rows, or again on the curves' rows: a few points).
    other_scores: dict[tuple[int, tuple[int, ...]], dict[str, float]] = {}
    if rescore or lat.config.task_type == "span":
        table_cost = macs_function(lat, table_data, "dev") if rescore else dev_cost
        rescored: dict[tuple[int, tuple[int, ...]], CurvePoint] = {}

        def on_table_rows(name: str, model: LengthAdaptiveModel, p: CurvePoint) -> CurvePoint:
            key = (id(model), p.config)
            if key not in rescored:
                rescored[key], scores = scored_point(
                    name, model, table_data, p.config, batch_size=batch, cost=table_cost
                )
                other_scores[key] = {k: v for k, v in scores.items() if k != metric}
            return rescored[key]

        picked = [
            (name, model, None if p is None else on_table_rows(name, model, p))
            for name, model, p in picked
        ]
    standard_table = picked[0][2]
    rows = [
        {
            **summary_row(name, p, standard_table, metric),
            **(other_scores.get((id(model), p.config), {}) if p is not None else {}),
        }
        for name, model, p in picked
    ]
    table = pd.DataFrame(rows)
    table.insert(0, "task", params.task)
    table["dev_rows"] = len(table_data.dev_examples)
    curves_table = pd.DataFrame([asdict(p) for points in curves.values() for p in points])
    curves_table["config"] = curves_table["config"].map(lambda c: " ".join(map(str, c)))
    curves_table.insert(0, "task", params.task)

    cheapest = rows[3]
    metrics = {
        "task": params.task,
        "metric": metric,
        "table_dev_rows": len(table_data.dev_examples),
        "curve_dev_rows": len(data.dev_examples),
        "standard": rows[0][metric],
        "lat_full": rows[1][metric],
        "lat_best": rows[2][metric],
        "cheapest_within_tolerance": cheapest.get(metric),
        "cheapest_flops_reduction": cheapest.get("flops_reduction"),
        "cheapest_paper_flops_reduction": cheapest.get("paper_flops_reduction"),
        "lat_smallest": rows[4][metric],
        "tolerance": tolerance,
        "hypervolume": hypervolumes,
        "evaluations": searched["evaluations"],
        "frontier_size": searched["frontier_size"],
    }
    if lat.config.task_type == "span":
        metrics["drop_and_restore"] = restored_answer_shares(
            lat, data, smallest.config, batch_size=batch
        )
    if not is_main_process():
        return {"table": table, "curves": curves_table, "metrics": metrics, "figure": None}
    paths.results.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.results / "table.csv", index=False)
    (paths.results / "table.md").write_text(format_table(table, metric) + "\n")
    curves_table.to_csv(paths.results / "curves.csv", index=False)
    write_json(paths.results / "metrics.json", metrics)
    figure = plots.pareto_figure(
        curves, title=f"{params.task}: dev {metric} vs FLOPs", metric=metric
    )
    plots.save_figure(figure, paths.figures / f"{params.task}-pareto")
    return {"table": table, "curves": curves_table, "metrics": metrics, "figure": figure}


def table_split(params: TaskParams, data: TaskData, paths: TaskPaths) -> tuple[TaskData, bool]:
    """The dev rows the table is scored on (``evaluate.table_dev_size``; null: all of
    dev) and whether they differ from the curves' rows (``data.dev_size``), in which case
    the table's points are scored again on them."""
    size = params.evaluate.get("table_dev_size")
    if size == params.data["dev_size"]:
        return data, False
    table_params = replace(params, data={**params.data, "dev_size": size})
    table_data = task_data(table_params, paths.lat_model, with_train=False)
    return table_data, len(table_data.dev_examples) != len(data.dev_examples)


def without_drop_and_restore(model: LengthAdaptiveModel) -> LengthAdaptiveModel:
    """A copy of a span model whose dropped tokens stay dropped (PoWER-BERT's way)."""
    copied = copy.deepcopy(model)
    copied.config.drop_and_restore = False
    return copied


def scored_point(
    name: str,
    model: LengthAdaptiveModel,
    task_data: TaskData,
    grid: Sequence[int],
    batch_size: int = 64,
    cost: Callable[[Sequence[int]], float] | None = None,
) -> tuple[CurvePoint, dict[str, float]]:
    """``curve_point`` on the dev split, with every metric the task reports (SQuAD:
    exact match and F1)."""
    lengths = to_model_lengths(grid, model.config.length_mode, task_data.max_length)
    scores = evaluate_model(model, task_data, "dev", lengths, batch_size)
    primary = scores[primary_metric(task_data)]
    return curve_point(
        name, model, task_data, grid, primary, batch_size=batch_size, cost=cost
    ), scores


def curve_point(
    name: str,
    model: LengthAdaptiveModel,
    task_data: TaskData,
    grid: Sequence[int],
    score: float | None = None,
    split: str = "dev",
    batch_size: int = 64,
    cost: Callable[[Sequence[int]], float] | None = None,
) -> CurvePoint:
    """One model at one grid configuration, scored on ``split`` (unless ``score`` is given).

    ``cost``: ``evaluation.macs_function`` of this model and split, made once for many
    points (it reads every row's length)."""
    if score is None:
        lengths = to_model_lengths(grid, model.config.length_mode, task_data.max_length)
        score = evaluate_model(model, task_data, split, lengths, batch_size)[
            primary_metric(task_data)
        ]
    cost = cost or macs_function(model, task_data, split)
    return CurvePoint(
        curve=name,
        config=tuple(grid),
        macs=cost(grid),
        paper_macs=float(
            paper_macs(model.hf_config, task_data.max_length, grid, model.config.task_type).total
        ),
        score=score,
    )


@torch.inference_mode()
def restored_answer_shares(
    model: LengthAdaptiveModel, task_data: TaskData, grid: Sequence[int], batch_size: int = 64
) -> dict[str, Any]:
    """Where Drop-and-Restore matters for a span model at one grid configuration, on dev:
    the share of windows whose predicted start or end token (the argmax over context
    tokens) was dropped before the last layer, so that only a restored vector could
    answer there; and the share of windows holding the first gold answer whose answer
    start token was dropped (an answer no unrestored model can give)."""
    features, examples = task_data.split("dev")
    answer_starts = {
        row["id"]: row["answers"]["answer_start"][0] for row in examples if row["answers"]["text"]
    }
    lengths = to_model_lengths(grid, model.config.length_mode, task_data.max_length)
    device = next(model.parameters()).device
    predicted_dropped = windows = gold_dropped = gold_windows = 0
    for batch in make_dataloader(features, task_data.tokenizer, batch_size, shuffle=False, seed=0):
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, length_config=lengths, output_hidden_states=True)
        positions, alive = out.token_positions[-1], out.token_masks[-1]  # [B, l]
        for slot, row in enumerate(batch["index"].tolist()):
            offsets = features[row]["offset_mapping"]
            context = torch.tensor([o is not None for o in offsets])
            survivors = set(positions[slot][alive[slot]].tolist())
            start = out.start_logits[slot, : len(offsets)].cpu().masked_fill(~context, -torch.inf)
            end = out.end_logits[slot, : len(offsets)].cpu().masked_fill(~context, -torch.inf)
            windows += 1
            predicted_dropped += (
                int(start.argmax()) not in survivors or int(end.argmax()) not in survivors
            )
            answer = answer_starts.get(features[row]["example_id"])
            gold = [
                j
                for j, o in enumerate(offsets)
                if answer is not None and o is not None and o[0] <= answer < o[1]
            ]
            if gold:
                gold_windows += 1
                gold_dropped += gold[0] not in survivors
    return {
        "config": list(grid),
        "windows": windows,
        "predicted_on_dropped": predicted_dropped / max(windows, 1),
        "answer_windows": gold_windows,
        "answer_start_dropped": gold_dropped / max(gold_windows, 1),
    }
