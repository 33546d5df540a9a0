"""Does each part of LengthDrop matter? One variant per part switched off or changed.

Every variant starts from the same fine-tuned model, trains LengthDrop for the same
number of steps with the ``lengthdrop`` section of params.yaml plus its own changes,
then runs the same (small) evolutionary search on the search split. Variants are
compared on the dev set: accuracy at full length and at the smallest trained
configuration, the dev frontier, and its hypervolume against one reference point shared
by all variants (so the numbers compare across rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..distributed import is_main_process
from ..evaluation import macs_function
from ..features import TaskData, primary_metric
from ..lengths import full_config
from ..store import SearchStore
from . import plots
from .curves import CurvePoint, cheapest_within, curve_hypervolume
from .evaluate import curve_point
from .params import TaskParams, ablations_section, task_params
from .paths import TaskPaths, read_json
from .runs import smallest_score, task_data, train_from, training_run_dir
from .search import params_evolutionary_search, params_search_problem


@dataclass(frozen=True)
class AblationSettings:
    """The ``ablations`` section of params.yaml."""

    task: str
    max_steps: int
    search: dict[str, int]
    variants: dict[str, dict[str, Any]]

    @classmethod
    def from_params(cls, section: dict[str, Any], tasks: list[str]) -> AblationSettings:
        return cls(**ablations_section(section, tasks))  # the rules live with params.yaml's


def variant_params(params: TaskParams, changes: dict[str, Any], max_steps: int) -> TaskParams:
    """The task's parameters with the variant's LengthDrop changes and step budget."""
    lengthdrop = {**params.lengthdrop, **changes, "max_steps": max_steps}
    lengthdrop["checkpoint_every"] = min(lengthdrop["checkpoint_every"], max_steps)
    changed = replace(params, lengthdrop=lengthdrop)
    changed.train_config("lengthdrop", output_dir=".").validate(batches_per_epoch=1)
    return changed


def run_variant(
    name: str, params: TaskParams, settings: AblationSettings, data: TaskData, paths: TaskPaths
) -> dict[str, Any]:
    """Train, search and score one variant; checkpoints and the search store live in a
    run folder keyed by its parameters and the training version, so a killed stage
    resumes and a finished one is reused."""
    run_dir = training_run_dir(params, paths, "lengthdrop", prefix=f"ablation-{name}")
    model, result = train_from(params, "lengthdrop", paths.standard_model, data, run_dir)
    model.eval()
    problem = params_search_problem(params, model, data, run_dir / "model")
    store = SearchStore(run_dir / "search.jsonl", problem.fingerprint)
    searched = params_evolutionary_search(params, problem, store, **settings.search)
    batch = params.search["eval_batch_size"]
    _, smallest = smallest_score(model, data, params.lengthdrop["length_drop_ratio_bound"], batch)
    dev_cost = macs_function(model, data, "dev")
    full = full_config(model.num_layers, data.max_length)
    return {
        "variant": name,
        "steps": result.global_step,
        "full": curve_point(name, model, data, full, cost=dev_cost),
        "smallest_score": smallest,
        "frontier": [
            curve_point(name, model, data, point.config, batch_size=batch, cost=dev_cost)
            for point in searched.frontier
        ],
        "evaluations": len(searched.evaluated),
        "seconds": result.seconds + searched.seconds,
    }


def ablation_table(
    outcomes: list[dict[str, Any]],
    settings: AblationSettings,
    metric: str,
    standard_score: float,
    tolerance: float,
) -> pd.DataFrame:
    """One row per variant; hypervolumes share one reference point (full-length MACs,
    the lowest dev score of any variant's frontier). The FLOPs reduction is that of the
    cheapest frontier point within ``tolerance`` of the standard model, as in the main
    table."""
    all_points = [p for o in outcomes for p in o["frontier"]]
    reference = (
        max(o["full"].macs for o in outcomes) * 1.0001,
        min(p.score for p in all_points),
    )
    rows = []
    for outcome in outcomes:
        full: CurvePoint = outcome["full"]
        cheapest = cheapest_within(outcome["frontier"], standard_score, tolerance)
        rows.append(
            {
                "variant": outcome["variant"],
                "changes": " ".join(
                    f"{k}={v}" for k, v in settings.variants[outcome["variant"]].items()
                )
                or "(as configured)",
                f"{metric}_full": full.score,
                f"{metric}_smallest": outcome["smallest_score"],
                "hypervolume": curve_hypervolume(outcome["frontier"], *reference),
                "frontier_size": len(outcome["frontier"]),
                "evaluations": outcome["evaluations"],
                f"flops_reduction_within_{tolerance}": (
                    full.macs / cheapest.macs if cheapest is not None else None
                ),
            }
        )
    return pd.DataFrame(rows)


def reading(table: pd.DataFrame, metric: str = "accuracy") -> list[str]:
    """Sentences on an ablation table, each variant against the first (the reference)."""
    if len(table) < 2:
        return []
    reference, others = table.iloc[0], table.iloc[1:]
    lines = []
    for _, row in others.iterrows():
        lines.append(
            f"{row['variant']} ({row['changes']}): hypervolume "
            f"{row['hypervolume'] - reference['hypervolume']:+.3f}, full length "
            f"{row[f'{metric}_full'] - reference[f'{metric}_full']:+.2f} points, smallest "
            f"configuration {row[f'{metric}_smallest'] - reference[f'{metric}_smallest']:+.2f}"
        )
    worst = others.loc[others["hypervolume"].idxmin()]
    best = others.loc[others["hypervolume"].idxmax()]
    summary = (
        f"Against {reference['variant']} (hypervolume {reference['hypervolume']:.3f}), "
        f"{worst['variant']} loses the most ({worst['hypervolume']:.3f})"
    )
    if best["hypervolume"] > reference["hypervolume"]:
        summary += f" and {best['variant']} does better ({best['hypervolume']:.3f})"
    return [summary + ".", *lines]


def ablation_stage(raw_params: dict[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """The pipeline's ablations stage: every variant of the ``ablations`` section, then
    ``results/ablations/{table,curves}`` and ``figures/ablations.{png,svg}``."""
    settings = AblationSettings.from_params(raw_params.get("ablations") or {}, raw_params["tasks"])
    base = task_params(raw_params, settings.task)
    variants = {
        name: variant_params(base, changes, settings.max_steps)
        for name, changes in settings.variants.items()
    }  # every variant checked before any training
    paths = TaskPaths(settings.task, Path(root))
    if not paths.standard_model.is_dir():
        raise FileNotFoundError(
            f"{paths.standard_model} is missing: run the finetune stage of {settings.task} first"
        )
    data = task_data(base, paths.standard_model, with_train=True)
    outcomes = []
    for name, params in variants.items():
        print(f"ablation {name}: {settings.variants[name] or 'as configured'}", flush=True)
        outcomes.append(run_variant(name, params, settings, data, paths))
    metric = primary_metric(data)
    standard = read_json(paths.results / "finetune.json")[f"dev_{metric}_full"]
    table = ablation_table(outcomes, settings, metric, standard, base.evaluate["tolerance"])
    table.insert(0, "task", settings.task)
    curves = {o["variant"]: [*o["frontier"], o["full"]] for o in outcomes}
    curves_table = pd.DataFrame([asdict(p) for points in curves.values() for p in points])
    curves_table["config"] = curves_table["config"].map(lambda c: " ".join(map(str, c)))
    if not is_main_process():  # every process trained and searched alike
        return {"table": table, "curves": curves_table, "figure": None, "standard": standard}
    out = paths.root / "results" / "ablations"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    curves_table.to_csv(out / "curves.csv", index=False)
    figure = plots.pareto_figure(
        curves, f"{settings.task}: LengthDrop ablations ({settings.max_steps} steps each)", metric
    )
    plots.save_figure(figure, paths.figures / "ablations")
    return {"table": table, "curves": curves_table, "figure": figure, "standard": standard}
