"""The ablations' settings, table and reading (the stage itself runs in test_pipeline)."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from latlib.pipeline.ablations import AblationSettings, ablation_table, reading, variant_params
from latlib.pipeline.curves import CurvePoint
from latlib.pipeline.params import load_params, task_params


@pytest.fixture
def raw():
    return load_params(REPO_ROOT / "profiles" / "default.yaml")


def test_every_profile_has_valid_ablations():
    for path in sorted((REPO_ROOT / "profiles").glob("*.yaml")):
        params = yaml.safe_load(path.read_text())
        settings = AblationSettings.from_params(params["ablations"], params["tasks"])
        base = task_params(params, settings.task)
        for changes in settings.variants.values():
            assert variant_params(base, changes, settings.max_steps).lengthdrop["max_steps"] > 0


def test_variant_params_change_only_their_keys(raw):
    base = task_params(raw, "sst2")
    changed = variant_params(base, {"layer_dropout_prob": 0.0}, 300)
    assert changed.lengthdrop["layer_dropout_prob"] == 0.0
    assert changed.lengthdrop["max_steps"] == 300
    assert changed.lengthdrop["checkpoint_every"] <= 300
    assert base.lengthdrop["layer_dropout_prob"] == 0.2  # the base is untouched
    same = {k: v for k, v in changed.lengthdrop.items() if k not in ("layer_dropout_prob",)}
    assert same["num_sandwich"] == base.lengthdrop["num_sandwich"]
    with pytest.raises(ValueError, match="kl_direction"):
        variant_params(base, {"kl_direction": "sideways"}, 300)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.update(task="qnli"), "not in tasks"),
        (lambda s: s.update(max_steps=0), "max_steps must be a positive int"),
        (lambda s: s["variants"].update(bad={"hidden_size": 3}), "not LengthDrop settings"),
        (lambda s: s.update(variants={"only": {}}), "at least two variants"),
        (lambda s: s["search"].pop("iterations"), "ablations.search must set exactly"),
        (lambda s: s.update(seeds=3), "unknown key"),
    ],
)
def test_bad_ablation_settings_are_refused(raw, edit, message):
    section = copy.deepcopy(raw["ablations"])
    edit(section)
    with pytest.raises(ValueError, match=message):
        AblationSettings.from_params(section, raw["tasks"])


def point(name, macs, score):
    return CurvePoint(curve=name, config=(1,), macs=macs, paper_macs=macs, score=score)


def test_table_shares_one_reference_and_reading_names_the_worst(raw):
    settings = AblationSettings.from_params(raw["ablations"], raw["tasks"])
    names = list(settings.variants)[:3]
    outcomes = [
        {
            "variant": names[0],
            "full": point(names[0], 100.0, 90.0),
            "smallest_score": 85.0,
            "frontier": [point(names[0], 50.0, 89.0), point(names[0], 100.0, 90.0)],
            "evaluations": 10,
        },
        {
            "variant": names[1],
            "full": point(names[1], 100.0, 89.0),
            "smallest_score": 80.0,
            "frontier": [point(names[1], 80.0, 88.0)],
            "evaluations": 10,
        },
        {
            "variant": names[2],
            "full": point(names[2], 100.0, 90.5),
            "smallest_score": 86.0,
            "frontier": [point(names[2], 40.0, 89.5), point(names[2], 100.0, 90.5)],
            "evaluations": 10,
        },
    ]
    table = ablation_table(outcomes, settings, "accuracy", standard_score=90.0, tolerance=0.5)
    assert list(table["variant"]) == names
    hv = dict(zip(table["variant"], table["hypervolume"], strict=True))
    assert hv[names[2]] > hv[names[0]] > hv[names[1]] >= 0
    # cheapest within 0.5 of 90.0: 89.5 at 40 for the third, none for the second
    reductions = table["flops_reduction_within_0.5"].tolist()
    assert reductions[2] == pytest.approx(100.0 / 40.0)
    assert reductions[1] is None or reductions[1] != reductions[1]  # None/NaN
    lines = reading(table)
    assert lines[0].startswith(f"Against {names[0]}")
    assert f"{names[1]} loses the most" in lines[0] and f"{names[2]} does better" in lines[0]
    assert len(lines) == 3
    assert reading(table.iloc[:1]) == []
