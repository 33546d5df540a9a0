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
from latlib.anytime import Frontier, FrontierPoint, weights_digest


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
    [(1.0, 88.0), (0.9, 88.0), (0.89, 85.0), (0.6, 85.0), (0.45, 80.0), (65.0, 85.0)],
)
def test_select_best_within_budget(budget, expected):
    assert make_frontier().select(budget).score == expected


def test_select_paper_style_budget():
    assert make_frontier().select(0.6, paper_style=True).score == 85.0


def test_budget_below_cheapest_names_the_cheapest():
    with pytest.raises(
        ValueError, match=r"below the cheapest frontier point: \(0.5, 0.4\).*0.400 of the full"
    ):
        make_frontier().select(0.3)
    with pytest.raises(ValueError, match="must be positive"):
        make_frontier().select(0)


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
    shown = subprocess.run([*run, "--budget", "0.5"], capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["length_config"] == [0.5, 0.4]
    refused = subprocess.run([*run, "--budget", "0.1"], capture_output=True, text=True)
    assert refused.returncode == 2 and "below the cheapest" in refused.stderr


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
