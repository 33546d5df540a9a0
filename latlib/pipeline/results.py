"""The committed results read back: each evaluated task's table, curves, metrics and
searched frontier, and a budget's choice on that frontier, with no model needed.

This is what the explore notebook shows on a fresh clone, where ``models/`` is empty
(models live in the DVC cache): ``results/tasks/<task>/frontier.json`` is the same file
the search saves beside the model, so picking a budget needs only it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..anytime import Frontier
from .paths import TaskPaths, read_json
from .report import evaluated_tasks


@dataclass
class TaskResults:
    task: str
    table: pd.DataFrame  # results/tasks/<task>/table.csv: the paper-style rows
    curves: pd.DataFrame  # curves.csv: every curve's points (dev score, MACs)
    metrics: dict[str, Any]  # metrics.json: scores, hypervolumes, what was scored on
    frontier: Frontier  # frontier.json: the searched points a budget picks from

    @property
    def metric(self) -> str:
        return self.metrics["metric"]

    def choose(self, budget: float) -> dict[str, Any]:
        """The frontier point ``set_budget(budget)`` would pick (``budget``: a fraction
        of the full model's real-token FLOPs), as a printable record."""
        return self.frontier.describe(self.frontier.select(fraction=budget))


def committed_results(tasks: list[str], root: Path = Path(".")) -> dict[str, TaskResults]:
    """Every evaluated task's committed results (tasks not evaluated yet are left out;
    ``report.evaluated_tasks`` names them)."""
    found = {}
    for task in evaluated_tasks(tasks, root)[0]:
        folder = TaskPaths(task, root).results
        found[task] = TaskResults(
            task=task,
            table=pd.read_csv(folder / "table.csv"),
            curves=pd.read_csv(folder / "curves.csv"),
            metrics=read_json(folder / "metrics.json"),
            frontier=Frontier.load(folder / "frontier.json"),
        )
    if not found:
        raise FileNotFoundError(
            f"no committed results for {', '.join(tasks)} under {root / 'results' / 'tasks'}: "
            "run `make repro`, or check out the repository's results/"
        )
    return found
