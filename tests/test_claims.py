"""The paper's claims judged from a task's metrics, table and the ablation table."""

import pandas as pd

from latlib.pipeline.claims import paper_claims
from latlib.pipeline.curves import (
    LAT_CONSTANT,
    LAT_EVOLUTIONARY,
    LAT_NO_RESTORE,
    LAT_RANDOM,
    STANDARD_CONSTANT,
)


def _metrics(task, metric, standard, lat_full, volumes):
    return {
        "task": task,
        "metric": metric,
        "standard": standard,
        "lat_full": lat_full,
        "tolerance": 0.5,
        "hypervolume": volumes,
    }


SST2 = _metrics(
    "sst2",
    "accuracy",
    89.0,
    88.7,
    {LAT_EVOLUTIONARY: 1.2, LAT_CONSTANT: 1.0, STANDARD_CONSTANT: 0.6, LAT_RANDOM: 1.1},
)
SQUAD = _metrics(
    "squad",
    "f1",
    66.0,
    66.5,
    {LAT_EVOLUTIONARY: 1.2, LAT_CONSTANT: 1.3, STANDARD_CONSTANT: 0.6, LAT_NO_RESTORE: 0.4},
)
SQUAD_TABLE = pd.DataFrame(
    {
        "model": [
            "standard",
            "LAT, best point",
            "LAT, best point, no Drop-and-Restore",
            "LAT, smallest configuration",
            "LAT, smallest configuration, no Drop-and-Restore",
        ],
        "f1": [66.0, 66.8, 40.0, 60.0, 20.0],
    }
)
ABLATIONS = pd.DataFrame(
    {
        "task": ["sst2"] * 3,
        "variant": ["lengthdrop", "no_sandwich", "no_distillation"],
        "hypervolume": [1.5, 1.4, 1.6],
    }
)


def test_each_claim_gets_a_verdict_with_its_numbers():
    claims = paper_claims(
        {"sst2": SST2, "squad": SQUAD},
        {"sst2": pd.DataFrame({"model": ["standard"], "accuracy": [89.0]}), "squad": SQUAD_TABLE},
        ABLATIONS,
    )
    verdicts = {(row.claim, row.task): row.verdict for row in claims.itertuples()}
    assert verdicts == {
        (1, "sst2"): "within tolerance",  # -0.3
        (1, "squad"): "yes",
        (2, "sst2"): "yes",
        (2, "squad"): "no",  # constant-rate LAT above the searched points
        (3, "squad"): "yes",  # claim 3 only for the span task
        (4, "sst2"): "partly",  # no_distillation scored higher
    }
    restore = claims[claims["claim"] == 3]["evidence"].iloc[0]
    assert "best point 66.8 vs 40.0" in restore and "smallest configuration 60.0 vs 20.0" in restore


def test_claim_3_says_where_dropped_tokens_would_answer():
    shares = {
        "config": [10, 8],
        "windows": 200,
        "predicted_on_dropped": 0.25,
        "answer_windows": 150,
        "answer_start_dropped": 0.5,
    }
    claims = paper_claims(
        {"squad": {**SQUAD, "drop_and_restore": shares}}, {"squad": SQUAD_TABLE}, ABLATIONS
    )
    restore = claims[claims["claim"] == 3]["evidence"].iloc[0]
    assert "25.0% of 200 windows predict a start or end on a dropped token" in restore
    assert "dropped in 50.0% of the 150 windows holding it" in restore


def test_no_ablations_means_no_claim_4():
    claims = paper_claims({"sst2": SST2}, {"sst2": pd.DataFrame()}, pd.DataFrame())
    assert set(claims["claim"]) == {1, 2}
