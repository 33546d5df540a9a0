"""Curves in the accuracy-vs-FLOPs plane, their hypervolumes, and the paper-style table.

A *curve* is a list of ``CurvePoint`` (one model at several length configurations):
the paper's Figure 2 has three (standard model + constant-rate reduction, LAT model +
constant-rate reduction, LAT + searched configurations); we add random search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..search import hypervolume, pareto_frontier
from ..store import EvaluatedConfig

# The curves of the paper's Figure 2, plus random search (same number of evaluations).
STANDARD_CONSTANT = "standard + constant rate"
LAT_CONSTANT = "LAT + constant rate"
LAT_EVOLUTIONARY = "LAT + evolutionary search"
LAT_RANDOM = "LAT + random search"
CURVES = (STANDARD_CONSTANT, LAT_CONSTANT, LAT_EVOLUTIONARY, LAT_RANDOM)
# Span extraction only: the searched configurations with dropped tokens gone for good
# (PoWER-BERT's way), against Drop-and-Restore (the paper's claim 3).
NO_RESTORE = "no Drop-and-Restore"
LAT_NO_RESTORE = f"LAT + evolutionary search, {NO_RESTORE}"
# Rows of the paper-style table named in more than one stage.
STANDARD_ROW = "standard"
SMALLEST_ROW = "LAT, smallest configuration"  # every layer at 1 - length_drop_ratio_bound


@dataclass(frozen=True)
class CurvePoint:
    """One configuration of one model: costs in MACs (real tokens; paper-style) and dev score."""

    curve: str
    config: tuple[int, ...]
    macs: float
    paper_macs: float
    score: float


def frontier_of(points: Sequence[CurvePoint], paper_style: bool = False) -> list[CurvePoint]:
    """The non-dominated points of a curve (by the chosen cost), cheapest first."""
    by_key = {}
    evaluated = []
    for point in points:
        cost = point.paper_macs if paper_style else point.macs
        key = EvaluatedConfig(config=point.config, cost=cost, score=point.score)
        by_key[(key.config, key.cost, key.score)] = point
        evaluated.append(key)
    return [by_key[(p.config, p.cost, p.score)] for p in pareto_frontier(evaluated)]


def curve_hypervolume(
    points: Sequence[CurvePoint], ref_cost: float, ref_score: float, paper_style: bool = False
) -> float:
    """Area dominated by the curve up to (ref_cost, ref_score), on a log10 cost axis."""
    front = frontier_of(points, paper_style)
    evaluated = [
        EvaluatedConfig(p.config, p.paper_macs if paper_style else p.macs, p.score) for p in front
    ]
    return hypervolume(evaluated, ref_cost, ref_score, log_cost=True)


def cheapest_within(
    points: Sequence[CurvePoint], target: float, tolerance: float, paper_style: bool = False
) -> CurvePoint | None:
    """The cheapest point scoring at least ``target - tolerance`` (None if there is none)."""
    good = [p for p in points if p.score >= target - tolerance - 1e-9]
    if not good:
        return None
    return min(good, key=lambda p: (p.paper_macs if paper_style else p.macs, -p.score))


def summary_row(
    name: str, point: CurvePoint | None, standard_full: CurvePoint, metric: str = "accuracy"
) -> dict:
    """One row of the paper-style table: a point's score and costs against the standard
    model at full length (only the name and an empty score when there is no point)."""
    if point is None:
        return {"model": name, metric: None}
    return {
        "model": name,
        "length_config": list(point.config),
        metric: point.score,
        "delta_vs_standard": point.score - standard_full.score,
        "macs": point.macs,
        "flops_reduction": standard_full.macs / point.macs,
        "paper_macs": point.paper_macs,
        "paper_flops_reduction": standard_full.paper_macs / point.paper_macs,
    }


def table_points(
    standard_full: CurvePoint,
    lat_full: CurvePoint,
    lat_points: Sequence[CurvePoint],
    smallest: CurvePoint,
    tolerance: float = 0.5,
) -> list[tuple[str, CurvePoint | None]]:
    """The paper's Table 2 rows for one task, as (row name, point): standard; LAT at full
    length, at its best searched point, at the cheapest searched point within
    ``tolerance`` of standard, and at LengthDrop's smallest configuration."""
    best = max(lat_points, key=lambda p: (p.score, -p.macs))
    cheapest = cheapest_within(lat_points, standard_full.score, tolerance)
    return [
        (STANDARD_ROW, standard_full),
        ("LAT, full length", lat_full),
        ("LAT, best point", best),
        (f"LAT, cheapest within {tolerance} of standard", cheapest),
        (SMALLEST_ROW, smallest),
    ]


def as_records(points: Sequence[CurvePoint]) -> list[dict]:
    return [asdict(p) for p in points]
