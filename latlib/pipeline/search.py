"""Stage search: evolutionary search (and random search, the control, with as many
evaluations) on the search split; the frontier re-scored on dev and saved beside a copy
of the LAT model, which is then ready to ``set_budget``.

The store is keyed by what the scores depend on (weights, data), not by the search's own
knobs: a search with other sizes or another seed reuses every evaluation already made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import distributed
from ..anytime import FRONTIER_FILE
from ..distributed import is_main_process
from ..features import TaskData
from ..model import LengthAdaptiveModel
from ..search import SearchResult, evolutionary_search, random_search
from ..search_problem import ModelSearchProblem, frontier_from_search, search_problem
from ..store import EvaluatedConfig, SearchStore
from .params import TaskParams
from .paths import TaskPaths, record_timing, replace_dir, write_json
from .runs import task_data


def search(params: TaskParams, paths: TaskPaths, progress: bool = True) -> dict[str, Any]:
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
            problem,
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
    replace_dir(paths.lat_model, paths.anytime_model)
    frontier.save(paths.anytime_model / FRONTIER_FILE)
    write_json(paths.results / "search.json", summary)
    record_timing(
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


def params_search_problem(
    params: TaskParams,
    model: LengthAdaptiveModel,
    data: TaskData,
    model_dir: str | Path,
    reuse_batches: bool = True,
) -> ModelSearchProblem:
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
    problem: ModelSearchProblem,
    store: SearchStore,
    progress: bool = False,
    **sizes: int,
) -> SearchResult:
    """``evolutionary_search`` with the ``search`` section's sizes, seed and mutation
    probability; ``sizes`` overrides some (population_size, iterations, ...)."""
    section = params.search
    names = ("population_size", "mutation_size", "crossover_size", "iterations")
    return evolutionary_search(
        problem,
        store,
        mutation_prob=section["mutation_prob"],
        seed=section["seed"],
        progress=progress,
        **{**{name: section[name] for name in names}, **sizes},
    )
