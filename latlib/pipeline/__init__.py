"""The replication's pipeline: params.yaml -> one function per DVC stage -> results/, figures/.

The library (``latlib``) holds the paper's parts; this package runs them the way
``dvc.yaml`` does, each stage a function of the parameters and the project root that
reads the previous stage's files and writes its own. The notebooks in ``notebooks/``
call these functions; so does ``python -m latlib stage NAME``. Nothing in the library
imports this package.

    finetune -> lengthdrop -> search -> evaluate -> report      (per task, then all tasks)
                          \\-> variance      search -> bench      finetune -> ablations
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .ablations import ablation_stage
from .bench import bench_stage
from .evaluate import evaluate
from .params import TaskParams, load_params, task_params
from .paths import TaskPaths, read_json
from .report import report
from .search import search
from .training import finetune, lengthdrop
from .variance import variance_stage

PER_TASK_STAGES = ("finetune", "lengthdrop", "search", "evaluate", "variance", "bench")
ALL_TASK_STAGES = ("ablations", "report")
STAGES = PER_TASK_STAGES + ALL_TASK_STAGES


def run_stage(
    name: str, params: dict[str, Any], task: str | None = None, root: str | Path = "."
) -> dict[str, Any]:
    """Run one stage as ``dvc repro`` does: ``params`` is the whole params.yaml (checked),
    ``task`` one of its tasks for a per-task stage."""
    root = Path(root)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if name == "report":
        return report(params["tasks"], root)
    if name == "ablations":
        return ablation_stage(params, root)
    if task is None:
        raise ValueError(f"the {name} stage needs a task (one of {params['tasks']})")
    if name == "variance":
        return variance_stage(params, task, root)
    per_task: dict[str, Callable[[TaskParams, TaskPaths], dict[str, Any]]] = {
        "finetune": finetune,
        "lengthdrop": lengthdrop,
        "search": search,
        "evaluate": evaluate,
    }
    paths = TaskPaths(task, root)
    if name == "bench":
        return bench_stage(task_params(params, task), paths, params["bench"])
    return per_task[name](task_params(params, task), paths)


__all__ = [
    "STAGES",
    "TaskParams",
    "TaskPaths",
    "ablation_stage",
    "bench_stage",
    "evaluate",
    "finetune",
    "lengthdrop",
    "load_params",
    "read_json",
    "report",
    "run_stage",
    "search",
    "task_params",
    "variance_stage",
]
