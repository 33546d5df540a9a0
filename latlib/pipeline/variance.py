"""How far do the results move with the training seed? The main run plus more seeds.

Each extra seed fine-tunes the backbone and LengthDrop-trains the result again: the
``finetune`` and ``lengthdrop`` sections with their ``seed`` replaced, while the data,
its search split and the length configurations stay those of the main run. Every seed's
two models are scored on dev at the main table's rows (standard; LAT at full length, at
its smallest configuration, and at the configurations the main search picked), so the
spread reported is that of training at fixed configurations: the search is not repeated
per seed, which would cost a search per seed and mix two sources of variance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..distributed import barrier, device, is_main_process
from ..features import primary_metric
from ..lengths import full_config
from ..model import LengthAdaptiveModel
from . import plots
from .curves import NO_RESTORE, SMALLEST_ROW, STANDARD_ROW, CurvePoint
from .evaluate import curve_point, table_split, without_drop_and_restore
from .params import TaskParams, task_params, variance_section
from .paths import TaskPaths, read_json
from .runs import task_data, train_from, training_run_dir


@dataclass(frozen=True)
class VarianceSettings:
    """The ``variance`` section of params.yaml."""

    seeds: tuple[int, ...]
    tasks: tuple[str, ...] = ()  # the tasks whose seeds are trained again (dvc.yaml's foreach)

    @classmethod
    def from_params(
        cls, section: dict[str, Any] | None, tasks: list[str] | None = None
    ) -> VarianceSettings:
        """The section, checked; ``tasks``: the pipeline's tasks, which must include
        every task of ``variance.tasks``."""
        checked = variance_section(section, tasks)  # the rules live with params.yaml's
        return cls(seeds=tuple(checked["seeds"]), tasks=tuple(checked["tasks"]))

    def all_seeds(self, main_seed: int) -> tuple[int, ...]:
        """The main run's seed first, then the extra ones (the main seed listed again is
        not run twice)."""
        return (main_seed, *(s for s in self.seeds if s != main_seed))


def seed_params(params: TaskParams, seed: int) -> TaskParams:
    """The task's parameters with ``seed`` for both trainings."""
    return replace(
        params,
        finetune={**params.finetune, "seed": seed},
        lengthdrop={**params.lengthdrop, "seed": seed},
    )


def main_seed(params: TaskParams) -> int:
    """The seed of the main run; both trainings must share it to name a run by one seed."""
    if params.finetune["seed"] != params.lengthdrop["seed"]:
        raise ValueError(
            f"finetune.seed ({params.finetune['seed']}) and lengthdrop.seed "
            f"({params.lengthdrop['seed']}) differ; the variance stage names a run by one "
            "seed: set them equal"
        )
    return params.finetune["seed"]


def train_seed(params: TaskParams, paths: TaskPaths, seed: int) -> tuple[Path, Path]:
    """The standard and LAT model folders of one seed, trained if need be (resumed from
    their run folders, which a main run with that seed would share)."""
    if seed == main_seed(params):
        return paths.standard_model, paths.lat_model
    seeded = seed_params(params, seed)
    data = task_data(seeded, seeded.model["backbone"], with_train=True)
    finetune_dir = training_run_dir(seeded, paths, "finetune")
    train_from(seeded, "finetune", seeded.model["backbone"], data, finetune_dir)
    barrier()  # the main process has saved the model that every process loads next
    lengthdrop_dir = training_run_dir(seeded, paths, "lengthdrop")
    train_from(seeded, "lengthdrop", finetune_dir / "model", data, lengthdrop_dir)
    barrier()
    return finetune_dir / "model", lengthdrop_dir / "model"


def table_configurations(
    table: pd.DataFrame, smallest: list[int], num_layers: int, max_length: int
) -> dict[str, tuple[int, ...]]:
    """Row name -> grid configuration, for every row of the main table that has one,
    plus LengthDrop's smallest configuration."""
    rows: dict[str, tuple[int, ...]] = {}
    for _, row in table.iterrows():
        config = row["length_config"]
        if isinstance(config, str):
            config = json.loads(config)
        if isinstance(config, list):
            rows[row["model"]] = tuple(config)
    rows.setdefault(STANDARD_ROW, full_config(num_layers, max_length))
    rows.setdefault(SMALLEST_ROW, tuple(smallest))
    return rows


def score_seed(
    standard: LengthAdaptiveModel,
    lat: LengthAdaptiveModel,
    data: Any,
    configurations: dict[str, tuple[int, ...]],
    batch_size: int,
) -> list[CurvePoint]:
    """One seed's dev scores: the standard model on its row, LAT on every other (without
    Drop-and-Restore on the rows that say so)."""
    # Only span tasks have such rows: the copy is made when one is there.
    unrestored = (
        without_drop_and_restore(lat)
        if any(name.endswith(NO_RESTORE) for name in configurations)
        else None
    )

    def model_of(name: str) -> LengthAdaptiveModel:
        if name == STANDARD_ROW:
            return standard
        return unrestored if name.endswith(NO_RESTORE) else lat

    return [
        curve_point(name, model_of(name), data, grid, None, "dev", batch_size)
        for name, grid in configurations.items()
    ]


def spread_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (n - 1), min and max over seeds of every row, and of its
    difference from the same seed's standard model."""
    standard = per_seed[per_seed["model"] == STANDARD_ROW].set_index("seed")["score"]
    frame = per_seed.assign(delta=per_seed["score"] - per_seed["seed"].map(standard))
    order = list(dict.fromkeys(per_seed["model"]))
    summary = (
        frame.groupby("model", sort=False)
        .agg(
            seeds=("seed", "count"),
            mean=("score", "mean"),
            std=("score", "std"),
            min=("score", "min"),
            max=("score", "max"),
            delta_mean=("delta", "mean"),
            delta_std=("delta", "std"),
        )
        .reindex(order)
        .reset_index()
    )
    return summary


def variance_stage(raw_params: dict[str, Any], task: str, root: str | Path = ".") -> dict[str, Any]:
    """The pipeline's variance stage for one task: train the extra seeds, score every seed
    at the main table's configurations, write ``results/tasks/<task>/seeds.csv`` (every
    seed), ``variance.{csv,md}`` (the spread) and ``figures/<task>-variance.{png,svg}``."""
    settings = VarianceSettings.from_params(raw_params.get("variance"), raw_params["tasks"])
    params = task_params(raw_params, task)
    paths = TaskPaths(task, Path(root))
    seeds = settings.all_seeds(main_seed(params))
    table = pd.read_csv(paths.results / "table.csv")
    smallest = read_json(paths.results / "lengthdrop.json")["smallest_config"]
    batch = params.search["eval_batch_size"]
    # The rows the main table was scored on, so each row's spread sits beside its score.
    data, _ = table_split(params, task_data(params, paths.standard_model, with_train=False), paths)
    num_layers = len(smallest)
    configurations = table_configurations(table, smallest, num_layers, data.max_length)
    rows = []
    for seed in seeds:
        standard_dir, lat_dir = train_seed(params, paths, seed)
        standard = LengthAdaptiveModel.from_pretrained(standard_dir).eval().to(device())
        lat = LengthAdaptiveModel.from_pretrained(lat_dir).eval().to(device())
        for point in score_seed(standard, lat, data, configurations, batch):
            rows.append(
                {
                    "seed": seed,
                    "model": point.curve,
                    "length_config": " ".join(map(str, point.config)),
                    "score": point.score,
                }
            )
    per_seed = pd.DataFrame(rows)
    per_seed.insert(0, "task", task)
    summary = spread_table(per_seed)
    summary.insert(0, "task", task)
    metric = primary_metric(data)
    if not is_main_process():
        return {"per_seed": per_seed, "summary": summary, "figure": None, "metric": metric}
    paths.results.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(paths.results / "seeds.csv", index=False)
    summary.to_csv(paths.results / "variance.csv", index=False)
    (paths.results / "variance.md").write_text(
        summary.to_markdown(index=False, floatfmt=".2f") + "\n"
    )
    figure = plots.seed_figure(per_seed, f"{task}: dev {metric} of {len(seeds)} seeds", metric)
    plots.save_figure(figure, paths.figures / f"{task}-variance")
    return {"per_seed": per_seed, "summary": summary, "figure": figure, "metric": metric}
