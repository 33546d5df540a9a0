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


EVALUATE_OUTPUTS = ("table.csv", "curves.csv", "metrics.json")


def evaluated_tasks(tasks: list[str], root: Path = Path(".")) -> tuple[list[str], list[str]]:
    """The tasks whose evaluate stage has written its outputs, and the others."""
    done = [
        task
        for task in tasks
        if all((TaskPaths(task, root).results / name).is_file() for name in EVALUATE_OUTPUTS)
    ]
    return done, [task for task in tasks if task not in done]


def report(tasks: list[str], root: Path = Path(".")) -> dict[str, Any]:
    """All tasks together: one table (Markdown and CSV) and one figure with a panel each.

    A task whose evaluate stage has not run yet (one task's chain at a time, on a small
    machine) is named in the summary, not silently left out; with none evaluated, the
    report is refused."""
    evaluated, pending = evaluated_tasks(tasks, root)
    if not evaluated:
        raise FileNotFoundError(
            f"no task is evaluated yet ({', '.join(tasks)}): run `dvc repro evaluate@{tasks[0]}` "
            "(or `make repro`) first"
        )
    tables, curves, metrics = [], [], {}
    for task in evaluated:
        paths = TaskPaths(task, root)
        tables.append(with_seed_spread(pd.read_csv(paths.results / "table.csv"), paths))
        curves.append(pd.read_csv(paths.results / "curves.csv"))
        metrics[task] = read_json(paths.results / "metrics.json")
    table = pd.concat(tables, ignore_index=True)
    results = root / "results"
    table.to_csv(results / "summary.csv", index=False)
    sections = []
    for task, task_table in zip(evaluated, tables, strict=True):
        metric = metrics[task]["metric"]
        task_table["length_config"] = task_table["length_config"].map(
            lambda c: json.loads(c) if isinstance(c, str) else c
        )
        sections.append(
            f"### {task}\n\n{_scored_on(metrics[task])}\n\n{format_table(task_table, metric)}\n"
        )
    if pending:
        sections.append(
            "Not evaluated yet: "
            + ", ".join(f"{task} (`dvc repro evaluate@{task}`)" for task in pending)
            + ".\n"
        )
    (results / "summary.md").write_text("\n".join(sections))
    figure = plots.pareto_grid(pd.concat(curves, ignore_index=True), metrics)
    plots.save_figure(figure, root / "figures" / "pareto")
    ablation_file = results / "ablations" / "table.csv"
    ablations = pd.read_csv(ablation_file) if ablation_file.is_file() else pd.DataFrame()
    claims = paper_claims(metrics, dict(zip(evaluated, tables, strict=True)), ablations)
    claims.to_csv(results / "claims.csv", index=False)
    (results / "claims.md").write_text(claims.to_markdown(index=False) + "\n")
    return {
        "table": table,
        "metrics": metrics,
        "figure": figure,
        "claims": claims,
        "pending": pending,
    }


# The table rows the headline shows, by the name evaluate gives them (a prefix for the
# row whose name carries the tolerance).
HEADLINE_ROWS = (
    ("standard", "standard"),
    ("LAT, full length", "LAT, full length"),
    ("LAT, best point", "LAT, best searched point"),
    ("LAT, cheapest within", "LAT, cheapest within tolerance"),
    ("LAT, smallest configuration", "LAT, smallest trained configuration"),
)
PRIMARY_METRICS = ("accuracy", "f1")


def headline_table(summary: pd.DataFrame) -> str:
    """The README's results table from ``results/summary.csv``: per task, each headline
    row's score with its real-token FLOPs reduction (the README test compares the two)."""
    lines = [
        "| task | metric | " + " | ".join(label for _, label in HEADLINE_ROWS) + " |",
        "|---" * (len(HEADLINE_ROWS) + 2) + "|",
    ]
    for task, rows in summary.groupby("task", sort=False):
        metric = next(m for m in PRIMARY_METRICS if m in rows and rows[m].notna().any())
        cells = []
        for prefix, _ in HEADLINE_ROWS:
            found = rows[
                rows["model"].str.startswith(prefix) & ~rows["model"].str.contains("no Drop")
            ]
            row = found.iloc[0] if len(found) else None
            if row is None or pd.isna(row[metric]):
                cells.append("n/a")
            elif prefix in ("standard", "LAT, full length"):
                cells.append(f"{row[metric]:.2f}")
            else:
                cells.append(f"{row[metric]:.2f} at {row['flops_reduction']:.2f}x")
        dev_rows = (
            rows["dev_rows"].iloc[0]
            if "dev_rows" in rows and rows["dev_rows"].notna().any()
            else None
        )
        label = f"{metric} ({int(dev_rows):,} dev)" if dev_rows else f"{metric} (dev)"
        lines.append(f"| {task} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
