"""Figures: the paper's Figure 2 (score vs FLOPs, log axis) and which tokens survive.

Saved figures are byte-reproducible (fixed SVG ids, no dates), so a rerun of the
pipeline leaves git clean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker

from .curves import CurvePoint

plt.rcParams["svg.hashsalt"] = "latlib"  # deterministic element ids in SVG output


def _finished(figure: plt.Figure) -> plt.Figure:
    """Close the figure in pyplot: Jupyter then shows it once (as the returned value),
    not a second time when the cell ends; saving it still works."""
    plt.close(figure)
    return figure


COST_AXES = (
    ("macs", "GMACs per example, real tokens"),
    ("paper_macs", "GMACs, paper-style (one max-length input)"),
)
CURVE_ORDER = (
    "standard + constant rate",
    "LAT + constant rate",
    "LAT + random search",
    "LAT + evolutionary search",
    "LAT + evolutionary search, no Drop-and-Restore",
)


def _curves_frame(curves: Mapping[str, Sequence[CurvePoint]]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for points in curves.values() for p in points])


def _draw(ax: Any, frame: pd.DataFrame, cost: str, label: str, metric: str) -> None:
    order = [c for c in CURVE_ORDER if c in set(frame["curve"])]
    order += sorted(set(frame["curve"]) - set(order))
    frame = frame.assign(**{cost: frame[cost] / 1e9}).sort_values(cost)
    sns.lineplot(
        data=frame,
        x=cost,
        y="score",
        hue="curve",
        hue_order=order,
        style="curve",
        style_order=order,
        markers=True,
        dashes=False,
        sort=False,
        estimator=None,
        ax=ax,
    )
    ax.set_xscale("log")
    # Curves span well under a decade, where matplotlib's log ticks crowd or vanish:
    # five evenly spaced (on the log axis) ticks with short labels instead.
    low, high = frame[cost].min(), frame[cost].max()
    ticks = np.geomspace(low, high, 5) if high > low else np.array([low])
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.set_ylabel(f"dev {metric}")
    ax.grid(True, which="both", alpha=0.3)


def pareto_figure(
    curves: Mapping[str, Sequence[CurvePoint]], title: str, metric: str = "accuracy"
) -> plt.Figure:
    """Score against FLOPs for every curve, real-token MACs left, paper-style MACs right."""
    frame = _curves_frame(curves)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, (cost, label) in zip(axes, COST_AXES, strict=False):
        _draw(ax, frame, cost, label, metric)
    axes[1].get_legend().remove()
    figure.suptitle(title)
    return _finished(figure)


def pareto_grid(curves: pd.DataFrame, metrics: Mapping[str, Mapping[str, Any]]) -> plt.Figure:
    """One row per task (``curves`` as written to ``results/<task>/curves.csv``)."""
    tasks = list(metrics)
    figure, axes = plt.subplots(
        len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False, constrained_layout=True
    )
    for row, task in zip(axes, tasks, strict=False):
        frame = curves[curves["task"] == task]
        for ax, (cost, label) in zip(row, COST_AXES, strict=False):
            _draw(ax, frame, cost, label, metrics[task]["metric"])
            ax.set_title(task)
        row[1].get_legend().remove()
    return _finished(figure)


def frontier_figure(frontier: Any, selected: Any | None = None) -> plt.Figure:
    """A saved frontier (``anytime.Frontier``): dev score against FLOPs fraction, with the
    selected point marked."""
    frame = pd.DataFrame(
        {
            "fraction": [p.macs / frontier.full_macs for p in frontier.points],
            "score": [p.dev_score if p.dev_score is not None else p.score for p in frontier.points],
        }
    )
    figure, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(frame["fraction"], frame["score"], marker="o", label="searched frontier (dev)")
    if frontier.full_dev_score is not None:
        ax.scatter([1.0], [frontier.full_dev_score], marker="s", color="black", label="full model")
    if selected is not None:
        score = selected.dev_score if selected.dev_score is not None else selected.score
        ax.scatter(
            [selected.macs / frontier.full_macs],
            [score],
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label="chosen for the budget",
        )
    ax.set_xlabel("FLOPs as a fraction of the full model (real tokens)")
    ax.set_ylabel(f"dev {frontier.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return _finished(figure)


def token_survival_figure(
    tokens: Sequence[str], kept_per_layer: Sequence[Sequence[int]], title: str = ""
) -> plt.Figure:
    """A grid: one row per layer, one column per token; filled where the token is kept."""
    grid = [[1 if i in set(kept) else 0 for i in range(len(tokens))] for kept in kept_per_layer]
    frame = pd.DataFrame(grid, columns=range(len(tokens)))
    frame.index = [f"layer {i + 1}" for i in range(len(kept_per_layer))]
    width = max(6.0, 0.38 * len(tokens))
    figure, ax = plt.subplots(figsize=(width, 0.45 * len(kept_per_layer) + 1.6))
    sns.heatmap(frame, cmap="Blues", cbar=False, linewidths=0.5, linecolor="white", ax=ax)
    ax.set_xticks([i + 0.5 for i in range(len(tokens))], tokens, rotation=60, ha="right")
    ax.set_title(title or "tokens kept after each layer (blue)")
    figure.tight_layout()
    return _finished(figure)


def save_figure(figure: plt.Figure, stem: str | Path) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg``, without timestamps."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, metadata in ((".png", {"Software": None}), (".svg", {"Date": None})):
        path = stem.with_suffix(suffix)
        figure.savefig(path, dpi=120, metadata=metadata)
        written.append(path)
    return written


def latency_figure(bench: pd.DataFrame, title: str = "") -> plt.Figure:
    """Measured time against FLOPs, one panel per batch size (``bench.summarize`` rows):
    points on the dashed line would turn every saved FLOP into saved time; the ceiling
    points (the plain model on inputs cut to the same FLOPs, if timed) show how close this
    machine lets any token dropping get."""
    sizes = sorted(bench["batch_size"].unique())
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    series = (
        ("latlib", "o", "latlib (full length and frontier points)"),
        ("ceiling", "^", "plain model, inputs cut to the same FLOPs"),
    )
    for ax, size in zip(axes[0], sizes, strict=True):
        rows = bench[bench["batch_size"] == size]
        reference = rows.iloc[0]
        for kind, marker, label in series:
            points = rows[rows["kind"] == kind]
            if points.empty:
                continue
            relative_time = 1.0 / points["speedup"]
            ax.errorbar(
                1.0 / points["flops_ratio"],
                relative_time,
                yerr=[
                    relative_time - 1.0 / points["speedup_q75"],
                    1.0 / points["speedup_q25"] - relative_time,
                ],
                fmt=marker,
                capsize=3,
                label=label,
            )
        ax.scatter([1.0], [1.0], marker="s", color="black", zorder=3, label=reference["case"])
        line = np.linspace(min((1.0 / rows["flops_ratio"]).min(), 1.0) * 0.95, 1.02, 10)
        ax.plot(line, line, linestyle="--", color="grey", label="time proportional to FLOPs")
        ax.set_xlabel("FLOPs relative to the plain model")
        ax.set_ylabel("time relative to the plain model")
        ax.set_title(f"batch size {size}, {int(rows['threads'].iloc[0])} threads")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _finished(figure)


def seed_figure(per_seed: pd.DataFrame, title: str = "", metric: str = "accuracy") -> plt.Figure:
    """Every seed's score on each row of the main table, with the mean and a one-standard-
    deviation bar (``variance.variance_stage`` rows)."""
    figure, ax = plt.subplots(figsize=(7.5, 0.6 * per_seed["model"].nunique() + 1.6))
    sns.stripplot(data=per_seed, x="score", y="model", hue="seed", ax=ax, size=7, jitter=0.08)
    sns.pointplot(
        data=per_seed,
        x="score",
        y="model",
        errorbar="sd",
        color="black",
        markers="|",
        linestyles="none",
        capsize=0.25,
        ax=ax,
    )
    ax.set_xlabel(f"dev {metric}")
    ax.set_ylabel("")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(title="seed", fontsize=8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return _finished(figure)
