"""Frontier files, budget selection, and a whole (tiny) search on real SST-2 rows."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import random_batch, tiny_bert_config

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.anytime import Budget, Frontier, FrontierPoint, weights_digest


def make_frontier() -> Frontier:
    points = [
        FrontierPoint((0.5, 0.4), (8, 6), macs=40.0, paper_macs=400.0, score=80.0, dev_score=79.0),
        FrontierPoint(
            (0.8, 0.6), (13, 10), macs=60.0, paper_macs=600.0, score=85.0, dev_score=84.0
        ),
        FrontierPoint(
            (0.9, 0.9), (15, 15), macs=90.0, paper_macs=900.0, score=88.0, dev_score=88.5
        ),
    ]
    return Frontier(points[::-1], "accuracy", "ratio", 16, full_macs=100.0, full_paper_macs=1000.0)


def test_points_sorted_by_cost():
    assert [p.macs for p in make_frontier().points] == [40.0, 60.0, 90.0]


@pytest.mark.parametrize(
    "budget,expected",
    [(1.0, 88.0), (0.9, 88.0), (0.89, 85.0), (0.6, 85.0), (0.45, 80.0)],
)
def test_select_best_within_budget(budget, expected):
    assert make_frontier().select(budget).score == expected
    assert make_frontier().select(fraction=budget).score == expected


@pytest.mark.parametrize("macs,expected", [(100.0, 88.0), (65, 85.0), (40.0, 80.0), (1e9, 88.0)])
def test_select_within_absolute_macs(macs, expected):
    assert make_frontier().select(macs=macs).score == expected


@pytest.mark.parametrize(
    "budget,message",
    [
        (
            {"fraction": 2.0},
            r"fraction must be in \(0, 1\].*got 2; for an absolute budget give macs",
        ),
        ({"fraction": float("nan")}, "fraction must be a finite number > 0, got nan"),
        ({"fraction": float("inf")}, "fraction must be a finite number > 0, got inf"),
        ({"fraction": 0}, "fraction must be a finite number > 0, got 0"),
        ({"fraction": -0.5}, "fraction must be a finite number > 0, got -0.5"),
        ({"macs": float("inf")}, "macs must be a finite number > 0, got inf"),
        ({"macs": 0.0}, "macs must be a finite number > 0, got 0.0"),
        ({"macs": -1e9}, "macs must be a finite number > 0"),
        ({"fraction": "0.5"}, "fraction must be a number, got '0.5'"),
        ({"fraction": True}, "fraction must be a number"),
        ({}, "give exactly one budget, fraction .* or macs .*; got neither"),
        ({"fraction": 0.5, "macs": 60.0}, "got both fraction and macs"),
    ],
)
def test_bad_budgets_are_refused_naming_the_argument(budget, message):
    with pytest.raises(ValueError, match=message):
        make_frontier().select(**budget)
    model = tiny_model()
    model.frontier = make_frontier()
    with pytest.raises(ValueError, match=message):
        model.set_budget(**budget)
    assert model.config.length_config is None  # nothing changed


def test_budget_names_units_for_messages():
    assert str(Budget.of(fraction=0.6)) == "0.6 of the full model"
    assert str(Budget.of(macs=1.2e9)) == "1.2e+09 MACs"
    assert Budget.of(macs=60).limit(100.0) == 60.0
    assert Budget.of(fraction=0.6).limit(100.0) == pytest.approx(60.0)
    names = {"fraction": "--budget-fraction", "macs": "--budget-macs"}
    with pytest.raises(ValueError, match="--budget-fraction must be in .* give --budget-macs"):
        Budget.of(fraction=1.5, names=names)


def test_select_paper_style_budget():
    assert make_frontier().select(0.6, paper_style=True).score == 85.0


def test_budget_below_cheapest_names_the_cheapest():
    with pytest.raises(
        ValueError, match=r"below the cheapest frontier point: \(0.5, 0.4\).*0.400 of the full"
    ):
        make_frontier().select(0.3)
    with pytest.raises(ValueError, match="budget 39 MACs is below the cheapest"):
        make_frontier().select(macs=39.0)


def test_frontier_file_round_trip_and_corruption(tmp_path):
    frontier = make_frontier()
    frontier.save(tmp_path / "frontier.json")
    assert Frontier.load(tmp_path / "frontier.json") == frontier
    (tmp_path / "bad.json").write_text('{"points": []}')
    with pytest.raises(ValueError, match="not a latlib frontier file"):
        Frontier.load(tmp_path / "bad.json")


def tiny_model():
    torch.manual_seed(0)
    return LengthAdaptiveModel.from_config(
        tiny_bert_config(2, num_labels=2), LengthAdaptiveConfig(length_mode="ratio", max_length=16)
    ).eval()


def test_model_set_budget_uses_the_chosen_configuration(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="no frontier.json"):
        model.set_budget(0.5)
    model.frontier = replace(make_frontier(), weights_sha256=weights_digest(model))
    model.save_pretrained(tmp_path)
    loaded = LengthAdaptiveModel.from_pretrained(tmp_path).eval()
    assert loaded.frontier == model.frontier
    point = loaded.set_budget(0.7)
    assert point.length_config == (0.8, 0.6)
    assert loaded.set_budget(macs=95.0).length_config == (0.9, 0.9)
    assert loaded.set_budget(fraction=0.7, paper_style=True).length_config == (0.8, 0.6)
    batch = random_batch(2, [12, 7])
    with torch.no_grad():
        budgeted = loaded(**batch).logits
        explicit = loaded(**batch, length_config=(0.8, 0.6)).logits
        full = loaded(**batch, length_config=(1.0, 1.0)).logits
    assert torch.equal(budgeted, explicit)
    assert not torch.equal(budgeted, full)


def test_select_command_line(tmp_path):
    make_frontier().save(tmp_path / "frontier.json")
    run = [sys.executable, "-m", "latlib", "select", "--model", str(tmp_path)]
    shown = subprocess.run(
        [*run, "--budget-fraction", "0.5"], capture_output=True, text=True, check=True
    )
    assert json.loads(shown.stdout)["length_config"] == [0.5, 0.4]
    refused = subprocess.run([*run, "--budget-fraction", "0.1"], capture_output=True, text=True)
    assert refused.returncode == 2 and "below the cheapest" in refused.stderr


@pytest.mark.parametrize(
    "options,expected",
    [
        (["--budget-fraction", "0.65"], [0.8, 0.6]),
        (["--budget", "0.65"], [0.8, 0.6]),  # the old name of --budget-fraction
        (["--budget-macs", "65"], [0.8, 0.6]),
        (["--budget-macs", "2.0e9"], [0.9, 0.9]),
        (["--budget-macs", "600", "--paper-style"], [0.8, 0.6]),
    ],
)
def test_select_command_line_units(tmp_path, capsys, options, expected):
    from latlib.pipeline.cli import main

    make_frontier().save(tmp_path / "frontier.json")
    main(["select", "--model", str(tmp_path), *options])
    assert json.loads(capsys.readouterr().out)["length_config"] == expected


@pytest.mark.parametrize(
    "options,message",
    [
        (["--budget", "2.0"], "--budget must be in (0, 1]"),
        (["--budget", "2.0"], "give --budget-macs instead"),
        (["--budget-fraction", "2.0"], "--budget-fraction must be in (0, 1]"),
        (["--budget-fraction", "inf"], "--budget-fraction must be a finite number > 0, got inf"),
        (["--budget-fraction", "nan"], "--budget-fraction must be a finite number > 0, got nan"),
        (["--budget-macs", "0"], "--budget-macs must be a finite number > 0, got 0.0"),
        (["--budget-macs", "-5"], "--budget-macs must be a finite number > 0"),
        (["--budget-macs", "1"], "below the cheapest frontier point"),
        (["--budget-fraction", "0.5", "--budget-macs", "60"], "not allowed with argument"),
        ([], "one of the arguments --budget-fraction --budget-macs --budget is required"),
    ],
)
def test_select_command_line_refuses_unclear_budgets(tmp_path, capsys, options, message):
    from latlib.pipeline.cli import main

    make_frontier().save(tmp_path / "frontier.json")
    with pytest.raises(SystemExit) as refused:
        main(["select", "--model", str(tmp_path), *options])
    assert refused.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_search_on_real_sst2(tmp_path, data_dir, embedded_path):
    from latlib.features import load_tokenizer, prepare_task_data
    from latlib.search import evolutionary_search
    from latlib.search_problem import frontier_from_search, search_problem
    from latlib.store import SearchStore

    tokenizer = load_tokenizer(embedded_path)
    data = prepare_task_data(
        "sst2", tokenizer, data_dir, max_length=16, train_size=32, search_size=48, dev_size=48
    )
    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(3, num_labels=2, vocab_size=tokenizer.vocab_size),
        LengthAdaptiveConfig(length_mode="ratio", max_length=16),
    ).eval()
    problem = search_problem(model, data, tmp_path / "model", length_drop_ratio_bound=0.3)
    store = SearchStore(tmp_path / "store.jsonl", problem.fingerprint)
    result = evolutionary_search(
        problem,
        store,
        population_size=4,
        mutation_size=3,
        crossover_size=3,
        iterations=1,
        progress=False,
    )
    assert result.new_evaluations == len(store) >= 4
    # Batches made once and the prefix cache change nothing: the same scores as a lone
    # evaluation of each configuration.
    from_scratch = search_problem(
        model, data, tmp_path / "model", 0.3, cache_bytes=0, reuse_batches=False
    )
    for record in result.evaluated:
        assert from_scratch.evaluate(record.config) == record.score
    frontier = frontier_from_search(model, data, problem, result.frontier)
    assert [p.macs for p in frontier.points] == sorted(p.macs for p in frontier.points)
    assert all(0 <= p.dev_score <= 100 for p in frontier.points)
    assert frontier.full_macs >= max(p.macs for p in frontier.points)
    # the same store opened for other weights is refused
    with pytest.raises(ValueError, match="weights_sha256"):
        SearchStore(tmp_path / "store.jsonl", {**problem.fingerprint, "weights_sha256": "0" * 16})


def test_a_budget_made_directly_is_checked_too():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        Budget("fraction", 2.0)
    with pytest.raises(ValueError, match="unknown budget unit 'latency_ms'"):
        Budget("latency_ms", 5.0)
