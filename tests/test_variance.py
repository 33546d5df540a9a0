"""The variance stage's parts: its settings, the seeds' parameters, the configurations
it scores and the spread it reports (the training itself runs in test_pipeline)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from latlib.pipeline.params import task_params
from latlib.pipeline.paths import TaskPaths
from latlib.pipeline.report import with_seed_spread
from latlib.pipeline.tables import format_table
from latlib.pipeline.variance import (
    STANDARD_ROW,
    VarianceSettings,
    main_seed,
    seed_params,
    spread_table,
    table_configurations,
)


@pytest.fixture
def params():
    raw = yaml.safe_load((REPO_ROOT / "profiles" / "default.yaml").read_text())
    return task_params(raw, "sst2")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"seeds": [1, 1]}, "repeats a seed"),
        ({"seeds": "1, 2"}, "list of ints"),
        ({"seeds": [1.5]}, "list of ints"),
        ({"seeds": [True]}, "list of ints"),
        ({"seeds": [1], "runs": 3}, "unknown key"),
    ],
)
def test_bad_settings_are_refused(section, message):
    with pytest.raises(ValueError, match=message):
        VarianceSettings.from_params(section)


def test_variance_tasks_must_be_tasks_the_pipeline_runs():
    settings = VarianceSettings.from_params({"seeds": [1], "tasks": ["sst2"]}, ["sst2", "squad"])
    assert settings.tasks == ("sst2",)
    with pytest.raises(ValueError, match="add them to 'tasks'"):
        VarianceSettings.from_params({"seeds": [1], "tasks": ["mnli"]}, ["sst2"])
    with pytest.raises(ValueError, match="list of task names"):
        VarianceSettings.from_params({"seeds": [1], "tasks": "sst2"}, ["sst2"])


def test_the_main_seed_comes_first_and_runs_once():
    settings = VarianceSettings.from_params({"seeds": [43, 42, 44]})
    assert settings.all_seeds(42) == (42, 43, 44)
    assert VarianceSettings.from_params(None).all_seeds(7) == (7,)


def test_a_seed_changes_both_trainings_and_nothing_else(params):
    seeded = seed_params(params, 43)
    assert seeded.finetune["seed"] == seeded.lengthdrop["seed"] == 43
    assert params.finetune["seed"] == 42  # the original is untouched
    for section in ("model", "data", "search", "evaluate"):
        assert getattr(seeded, section) == getattr(params, section)
    without_seed = {k: v for k, v in seeded.lengthdrop.items() if k != "seed"}
    assert without_seed == {k: v for k, v in params.lengthdrop.items() if k != "seed"}


def test_two_different_training_seeds_are_refused(params):
    params.lengthdrop["seed"] = 7
    with pytest.raises(ValueError, match="set them equal"):
        main_seed(params)


def test_the_main_tables_configurations_are_scored(tmp_path):
    table = pd.DataFrame(
        {
            "model": [
                "standard",
                "LAT, full length",
                "LAT, best point",
                "LAT, cheapest within 0.5 of standard",
            ],
            "length_config": ["[8, 8, 8]", "[8, 8, 8]", "[7, 5, 3]", None],
        }
    )
    table.to_csv(tmp_path / "table.csv", index=False)
    configurations = table_configurations(
        pd.read_csv(tmp_path / "table.csv"), [6, 5, 4], num_layers=3, max_length=8
    )
    assert configurations == {
        "standard": (8, 8, 8),
        "LAT, full length": (8, 8, 8),
        "LAT, best point": (7, 5, 3),  # the row with no configuration is left out
        "LAT, smallest configuration": (6, 5, 4),
    }


def per_seed_rows() -> pd.DataFrame:
    scores = {
        1: {STANDARD_ROW: 90.0, "LAT, full length": 89.0},
        2: {STANDARD_ROW: 88.0, "LAT, full length": 88.0},
        3: {STANDARD_ROW: 89.0, "LAT, full length": 87.0},
    }
    return pd.DataFrame(
        [
            {"seed": seed, "model": model, "score": score}
            for seed, rows in scores.items()
            for model, score in rows.items()
        ]
    )


def test_the_spread_is_the_sample_deviation_over_seeds_and_of_paired_deltas():
    summary = spread_table(per_seed_rows()).set_index("model")
    assert list(summary.index) == [STANDARD_ROW, "LAT, full length"]
    lat = summary.loc["LAT, full length"]
    assert lat["seeds"] == 3
    assert lat["mean"] == pytest.approx(88.0)
    assert lat["std"] == pytest.approx(1.0)  # n - 1 in the denominator
    assert (lat["min"], lat["max"]) == (87.0, 89.0)
    # deltas against the same seed's standard model: -1, 0, -2
    assert lat["delta_mean"] == pytest.approx(-1.0)
    assert lat["delta_std"] == pytest.approx(1.0)
    assert summary.loc[STANDARD_ROW, "delta_mean"] == 0.0


def test_the_main_table_shows_mean_and_spread_when_the_stage_ran(tmp_path):
    paths = TaskPaths("sst2", tmp_path)
    paths.results.mkdir(parents=True)
    table = pd.DataFrame(
        {
            "model": [STANDARD_ROW, "LAT, full length", "LAT, best point"],
            "length_config": [[8, 8], [8, 8], [6, 4]],
            "accuracy": [90.0, 89.0, 89.5],
            "delta_vs_standard": [0.0, -1.0, -0.5],
            "macs": [2e8, 2e8, 1e8],
            "flops_reduction": [1.0, 1.0, 2.0],
            "paper_macs": [1e9, 1e9, 5e8],
            "paper_flops_reduction": [1.0, 1.0, 2.0],
        }
    )
    assert with_seed_spread(table, paths) is table  # no variance stage: unchanged
    spread_table(per_seed_rows()).to_csv(paths.results / "variance.csv", index=False)
    shown = format_table(with_seed_spread(table, paths), "accuracy")
    assert "89.00 ± 1.00 (n=3)" in shown  # standard: 90, 88, 89
    assert "88.00 ± 1.00 (n=3)" in shown
    assert shown.count("(n=3)") == 2  # the best point has no row in the variance table


@pytest.mark.parametrize("profile", sorted((REPO_ROOT / "profiles").glob("*.yaml")), ids=str)
def test_every_profile_runs_several_seeds(profile):
    raw = yaml.safe_load(profile.read_text())
    settings = VarianceSettings.from_params(raw["variance"])
    assert len(settings.all_seeds(raw["finetune"]["seed"])) >= 2
    for task in raw["tasks"]:
        main_seed(task_params(raw, task))
