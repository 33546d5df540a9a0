"""The paper-style table as Markdown: rounded for reading, seeds' spread beside each row."""

from __future__ import annotations

import pandas as pd

# Metrics a table may show beside its primary one (SQuAD: exact match beside F1).
SECONDARY_METRICS = ("exact_match",)


def format_table(table: pd.DataFrame, metric: str) -> str:
    """The paper-style table as Markdown, rounded for reading."""
    shown = table.copy()
    shown["length_config"] = shown["length_config"].map(
        lambda c: " ".join(map(str, c)) if isinstance(c, list) else ""
    )
    for column in ("macs", "paper_macs"):
        shown[column] = shown[column].map(lambda v: f"{v / 1e9:.3f} G" if pd.notna(v) else "")
    for column in (metric, "delta_vs_standard", *SECONDARY_METRICS):
        if column not in shown:
            continue
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
