"""Stage report: every task together, one table (Markdown and CSV), one figure with a
panel per task, and the paper's claims judged per task (``claims.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from . import plots
from .claims import paper_claims
from .paths import TaskPaths, read_json
from .tables import format_table


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


def _scored_on(metrics: dict[str, Any]) -> str:
    """Which dev rows the task's table and curves were scored on."""
    table_rows, curve_rows = metrics.get("table_dev_rows"), metrics.get("curve_dev_rows")
    if table_rows is None:
        return f"{metrics['metric']} on dev."
    line = f"{metrics['metric']} on {table_rows:,} dev examples"
    if curve_rows != table_rows:
        line += f"; the curves on a separate fixed, seeded sample of {curve_rows:,}"
    return line + "."


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
        sections.append(
            f"### {task}\n\n{_scored_on(metrics[task])}\n\n{format_table(task_table, metric)}\n"
        )
    (results / "summary.md").write_text("\n".join(sections))
    figure = plots.pareto_grid(pd.concat(curves, ignore_index=True), metrics)
    plots.save_figure(figure, root / "figures" / "pareto")
    ablation_file = results / "ablations" / "table.csv"
    ablations = pd.read_csv(ablation_file) if ablation_file.is_file() else pd.DataFrame()
    claims = paper_claims(metrics, dict(zip(tasks, tables, strict=True)), ablations)
    claims.to_csv(results / "claims.csv", index=False)
    (results / "claims.md").write_text(claims.to_markdown(index=False) + "\n")
    return {"table": table, "metrics": metrics, "figure": figure, "claims": claims}
