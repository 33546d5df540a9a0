"""The pipeline's stages for one task, as functions: fine-tune -> LengthDrop -> search ->
evaluate, then a report over all tasks.

Each stage reads its parameters (``params.TaskParams``) and the previous stage's files,
writes its own files under ``models/``, ``results/`` and ``figures/`` (see ``TaskPaths``),
and returns what a notebook shows. Files meant for git hold only numbers that a rerun
reproduces exactly; wall-clock figures go to ``runs/<task>/timings.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import distributed, plots
from .anytime import FRONTIER_FILE
from .compare import CurvePoint, curve_hypervolume, summary_rows
from .distributed import is_main_process
from .experiment import (
    SearchProblem,
    TaskData,
    build_model,
    curve_point,
    evaluate_model,
    frontier_from_search,
    load_tokenizer,
    prepare_task_data,
    primary_metric,
    search_problem,
    train_model,
)
from .lengths import constant_rate_config, full_config, smallest_config, to_model_lengths
from .model import LengthAdaptiveModel
from .params import TaskParams, source_digest
from .search import (
    EvaluatedConfig,
    SearchResult,
    SearchStore,
    evolutionary_search,
    random_search,
)
from .train import TrainResult

# The curves of the paper's Figure 2, plus random search (same number of evaluations).
STANDARD_CONSTANT = "standard + constant rate"
LAT_CONSTANT = "LAT + constant rate"
LAT_EVOLUTIONARY = "LAT + evolutionary search"
LAT_RANDOM = "LAT + random search"
CURVES = (STANDARD_CONSTANT, LAT_CONSTANT, LAT_EVOLUTIONARY, LAT_RANDOM)

_TRAINING_SOURCES = (
    "train.py",
    "model.py",
    "lengths.py",
    "data.py",
    "experiment.py",
    "distributed.py",
)


@dataclass(frozen=True)
class TaskPaths:
    """Where one task's files live, relative to the project root."""

    task: str
    root: Path = Path(".")

    @property
    def standard_model(self) -> Path:
        return self.root / "models" / self.task / "standard"

    @property
    def lat_model(self) -> Path:
        return self.root / "models" / self.task / "lat"

    @property
    def anytime_model(self) -> Path:
        """The LAT model with its ``frontier.json``: what users load and ``set_budget`` on."""
        return self.root / "models" / self.task / "anytime"

    @property
    def results(self) -> Path:
        return self.root / "results" / "tasks" / self.task

    @property
    def runs(self) -> Path:
        """Checkpoints and search stores (not pipeline outputs: they survive a rerun)."""
        return self.root / "runs" / self.task

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=list) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
    return json.loads(path.read_text())


def _record_timing(paths: TaskPaths, stage: str, values: dict[str, Any]) -> None:
    """Wall-clock figures, kept apart from the reproducible results (and out of git: no
    two runs take the same time)."""
    file = paths.runs / "timings.json"
    timings = json.loads(file.read_text()) if file.is_file() else {}
    timings[stage] = values
    write_json(file, timings)


def task_data(params: TaskParams, tokenizer_from: str | Path, with_train: bool) -> TaskData:
    """The task's splits; ``with_train=False`` skips tokenising the training set."""
    kwargs = params.data_kwargs()
    if not with_train:
        kwargs["train_size"] = 1  # the search split is drawn before subsetting
    return prepare_task_data(params.task, load_tokenizer(tokenizer_from), **kwargs)


def _replace_dir(source: Path, destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination)


def training_run_dir(
    params: TaskParams, paths: TaskPaths, stage: str, prefix: str | None = None
) -> Path:
    """Same parameters and same training code -> same folder, so a killed stage resumes.
    ``prefix`` (default: the stage) names the folder, e.g. one per ablation variant."""
    here = Path(__file__).parent
    code = source_digest([here / name for name in _TRAINING_SOURCES])
    sections = ("model", "data", "finetune") + (("lengthdrop",) if stage == "lengthdrop" else ())
    return paths.runs / f"{prefix or stage}-{params.digest(*sections, extra=code)}"


def train_from(
    params: TaskParams, stage: str, init_from: str | Path, data: TaskData, run_dir: Path
) -> tuple[LengthAdaptiveModel, TrainResult]:
    """A model built from ``init_from``, trained with the ``stage`` section in ``run_dir``
    (resumed from its last checkpoint there)."""
    section = getattr(params, stage)
    model = build_model(
        init_from, data, length_mode=params.model["length_mode"], seed=section["seed"]
    )
    config = params.train_config(stage, run_dir)
    return model, train_model(model, data, config, batch_size=section["batch_size"])


def smallest_score(
    model: LengthAdaptiveModel, data: TaskData, ratio_bound: float, batch_size: int
) -> tuple[tuple[int, ...], float]:
    """LengthDrop's smallest configuration and its dev score."""
    smallest = smallest_config(model.num_layers, data.max_length, ratio_bound)
    lengths = to_model_lengths(smallest, model.config.length_mode, data.max_length)
    score = evaluate_model(model, data, "dev", lengths, batch_size)[primary_metric(data)]
    return smallest, score


def params_search_problem(
    params: TaskParams,
    model: LengthAdaptiveModel,
    data: TaskData,
    model_dir: str | Path,
    reuse_batches: bool = True,
) -> SearchProblem:
    """``search_problem`` with the settings of params.yaml (split, bound, batch, cache)."""
    return search_problem(
        model,
        data,
        model_dir,
        params.lengthdrop["length_drop_ratio_bound"],
        "dev" if params.data["search_on"] == "dev" else "search",
        params.search["eval_batch_size"],
        cache_bytes=params.search["cache_mb"] << 20,
        reuse_batches=reuse_batches,
    )


def params_evolutionary_search(
    params: TaskParams,
    problem: SearchProblem,
    store: SearchStore,
    progress: bool = False,
    **sizes: int,
) -> SearchResult:
    """``evolutionary_search`` with the ``search`` section's sizes, seed and mutation
    probability; ``sizes`` overrides some (population_size, iterations, ...)."""
    section = params.search
    names = ("population_size", "mutation_size", "crossover_size", "iterations")
    return evolutionary_search(
        *problem.arguments,
        store,
        mutation_prob=section["mutation_prob"],
        seed=section["seed"],
        progress=progress,
        **{**{name: section[name] for name in names}, **sizes},
    )


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
    _replace_dir(run_dir / "model", save_to)
    write_json(paths.results / f"{stage}.json", metrics)
    _record_timing(
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


def search(params: TaskParams, paths: TaskPaths, progress: bool = False) -> dict[str, Any]:
    """Evolutionary search (and random search with as many evaluations) on the search
    split; the frontier re-scored on dev, saved as ``results/<task>/frontier.json`` and
    beside a copy of the LAT model in ``models/<task>/anytime``."""
    section = params.search
    split = "dev" if params.data["search_on"] == "dev" else "search"
    progress = progress and is_main_process()
    model = LengthAdaptiveModel.from_pretrained(paths.lat_model).eval().to(distributed.device())
    data = task_data(params, paths.lat_model, with_train=False)
    problem = params_search_problem(params, model, data, paths.lat_model)
    # Keyed by what the scores depend on (weights, data), not by the search's own knobs:
    # a search with other sizes or another seed reuses every evaluation already made.
    store_dir = paths.runs / f"search-{params.digest(extra=problem.fingerprint)}"
    store_dir.mkdir(parents=True, exist_ok=True)
    evolutionary = params_evolutionary_search(
        params,
        problem,
        SearchStore(store_dir / "evolutionary.jsonl", problem.fingerprint),
        progress,
    )
    random_frontier: list[EvaluatedConfig] = []
    random_seconds = 0.0
    if section["random_search"]:
        randomly = random_search(
            *problem.arguments,
            SearchStore(store_dir / "random.jsonl", problem.fingerprint),
            num_evaluations=len(evolutionary.evaluated),
            seed=section["seed"],
            progress=progress,
        )
        random_frontier, random_seconds = randomly.frontier, randomly.seconds
    frontier = frontier_from_search(
        model, data, problem, evolutionary.frontier, section["eval_batch_size"]
    )
    frontier.metadata["evaluations"] = len(evolutionary.evaluated)
    summary = {
        "task": params.task,
        "split": split,
        "search_rows": problem.fingerprint["rows"],
        "evaluations": len(evolutionary.evaluated),
        "frontier_size": len(frontier.points),
        "lower": list(problem.lower),
        "upper": list(problem.upper),
        "evolutionary_frontier": [_scored(p) for p in evolutionary.frontier],
        "random_frontier": [_scored(p) for p in random_frontier],
    }
    if not is_main_process():
        return summary  # every process searched alike; the main one writes
    paths.results.mkdir(parents=True, exist_ok=True)
    frontier.save(paths.results / FRONTIER_FILE)
    _replace_dir(paths.lat_model, paths.anytime_model)
    frontier.save(paths.anytime_model / FRONTIER_FILE)
    write_json(paths.results / "search.json", summary)
    _record_timing(
        paths,
        "search",
        {
            "evolutionary_seconds": evolutionary.seconds,
            "random_seconds": random_seconds,
            "evaluations_per_minute": 60
            * len(evolutionary.evaluated)
            / max(evolutionary.seconds, 1e-9),
            "prefix_cache_layer_reuse": problem.cache.stats.reuse_fraction
            if problem.cache is not None
            else None,
        },
    )
    return summary


def _scored(point: EvaluatedConfig) -> dict[str, Any]:
    """A search result without its evaluation time (not reproducible)."""
    return {"config": list(point.config), "cost": point.cost, "score": point.score}


def evaluate(params: TaskParams, paths: TaskPaths) -> dict[str, Any]:
    """The four curves on the dev set, their hypervolumes, the paper-style table and the
    Pareto plots of one task."""
    tolerance = params.evaluate["tolerance"]
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

    curves: dict[str, list[CurvePoint]] = {
        LAT_EVOLUTIONARY: [
            curve_point(LAT_EVOLUTIONARY, lat, data, p.grid_config, p.dev_score)
            for p in frontier.points
        ],
        LAT_RANDOM: [
            curve_point(LAT_RANDOM, lat, data, p["config"], batch_size=batch)
            for p in searched["random_frontier"]
        ],
    }
    for name, model in ((STANDARD_CONSTANT, standard), (LAT_CONSTANT, lat)):
        curves[name] = [
            curve_point(
                name,
                model,
                data,
                constant_rate_config(num_layers, max_length, float(rate)),
                batch_size=batch,
            )
            for rate in params.search["constant_rates"]
        ]
    curves = {name: points for name, points in curves.items() if points}
    full = full_config(num_layers, max_length)
    standard_full = next(
        (p for p in curves.get(STANDARD_CONSTANT, []) if p.config == full),
        None,
    ) or curve_point(STANDARD_CONSTANT, standard, data, full, batch_size=batch)
    lat_full = curve_point("LAT", lat, data, full, frontier.full_dev_score)
    metric = primary_metric(data)

    all_points = [p for points in curves.values() for p in points]
    reference = (standard_full.macs * 1.0001, min(p.score for p in all_points))
    hypervolumes = {name: curve_hypervolume(points, *reference) for name, points in curves.items()}
    rows = summary_rows(
        standard_full, lat_full, curves[LAT_EVOLUTIONARY], tolerance=tolerance, metric=metric
    )
    table = pd.DataFrame(rows)
    table.insert(0, "task", params.task)
    curves_table = pd.DataFrame([asdict(p) for points in curves.values() for p in points])
    curves_table["config"] = curves_table["config"].map(lambda c: " ".join(map(str, c)))
    curves_table.insert(0, "task", params.task)

    cheapest = rows[-1]
    metrics = {
        "task": params.task,
        "metric": metric,
        "standard": standard_full.score,
        "lat_full": lat_full.score,
        "lat_best": rows[2][metric],
        "cheapest_within_tolerance": cheapest.get(metric),
        "cheapest_flops_reduction": cheapest.get("flops_reduction"),
        "cheapest_paper_flops_reduction": cheapest.get("paper_flops_reduction"),
        "tolerance": tolerance,
        "hypervolume": hypervolumes,
        "evaluations": searched["evaluations"],
        "frontier_size": searched["frontier_size"],
    }
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


def format_table(table: pd.DataFrame, metric: str) -> str:
    """The paper-style table as Markdown, rounded for reading."""
    shown = table.copy()
    shown["length_config"] = shown["length_config"].map(
        lambda c: " ".join(map(str, c)) if isinstance(c, list) else ""
    )
    for column in ("macs", "paper_macs"):
        shown[column] = shown[column].map(lambda v: f"{v / 1e9:.3f} G" if pd.notna(v) else "")
    for column in (metric, "delta_vs_standard"):
        shown[column] = shown[column].map(lambda v: f"{v:.2f}" if pd.notna(v) else "")
    for column in ("flops_reduction", "paper_flops_reduction"):
        shown[column] = shown[column].map(lambda v: f"{v:.2f}x" if pd.notna(v) else "")
    if "seed_mean" in shown:
        shown[f"{metric} over seeds"] = [
            _mean_and_spread(mean, std, n)
            for mean, std, n in zip(
                shown["seed_mean"], shown["seed_std"], shown["seeds"], strict=True
            )
        ]
        shown = shown.drop(columns=["seed_mean", "seed_std", "seeds"])
    return shown.to_markdown(index=False)


def _mean_and_spread(mean: float, std: float, seeds: float) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {std:.2f} (n={int(seeds)})"


def with_seed_spread(table: pd.DataFrame, paths: TaskPaths) -> pd.DataFrame:
    """The main table with the variance stage's mean and standard deviation over seeds
    (and their count) beside each row, when that stage has run."""
    spread_file = paths.results / "variance.csv"
    if not spread_file.is_file():
        return table
    spread = pd.read_csv(spread_file)[["model", "seeds", "mean", "std"]]
    spread = spread.drop_duplicates("model").rename(
        columns={"mean": "seed_mean", "std": "seed_std"}
    )
    return table.merge(spread, on="model", how="left")


def report(tasks: list[str], root: Path = Path(".")) -> dict[str, Any]:
    """All tasks together: one table (Markdown and CSV) and one figure with a panel each."""
    tables, curves, metrics = [], [], {}
    for task in tasks:
        paths = TaskPaths(task, root)
        tables.append(with_seed_spread(pd.read_csv(paths.results / "table.csv"), paths))
        curves.append(pd.read_csv(paths.results / "curves.csv"))
        metrics[task] = read_json(paths.results / "metrics.json")
    table = pd.concat(tables, ignore_index=True)
    results = root / "results"
    table.to_csv(results / "summary.csv", index=False)
    sections = []
    for task, task_table in zip(tasks, tables, strict=False):
        metric = metrics[task]["metric"]
        task_table["length_config"] = task_table["length_config"].map(
            lambda c: json.loads(c) if isinstance(c, str) else c
        )
        sections.append(f"### {task}\n\n{format_table(task_table, metric)}\n")
    (results / "summary.md").write_text("\n".join(sections))
    figure = plots.pareto_grid(pd.concat(curves, ignore_index=True), metrics)
    plots.save_figure(figure, root / "figures" / "pareto")
    return {"table": table, "metrics": metrics, "figure": figure}
