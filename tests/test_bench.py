"""The benchmark's arithmetic and settings (no timed assertions: machines are noisy)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import random_batch, tiny_bert_config

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.pipeline.bench import (
    BenchCase,
    BenchSettings,
    ceiling_case,
    cut_batch,
    cut_lengths,
    expected_lengthdrop_cost,
    machine_description,
    spread_points,
    summarize,
    time_cases,
)


def test_spread_points_keeps_both_ends():
    points = list(range(10))
    assert spread_points(points, 3) == [0, 4, 9] or spread_points(points, 3) == [0, 5, 9]
    assert spread_points(points, 1) == [0]
    assert spread_points(points, 20) == points


def test_summary_ratios_come_from_the_same_repetition():
    cases = [BenchCase("plain", None, macs=100.0), BenchCase("half", None, macs=50.0)]
    times = pd.DataFrame(
        [
            {"case": "plain", "repeat": 0, "seconds": 2.0},
            {"case": "half", "repeat": 0, "seconds": 1.0},
            {"case": "plain", "repeat": 1, "seconds": 4.0},  # a slow moment hits both
            {"case": "half", "repeat": 1, "seconds": 2.0},
            {"case": "plain", "repeat": 2, "seconds": 2.0},
            {"case": "half", "repeat": 2, "seconds": 1.25},
        ]
    )
    table = summarize(cases, times, examples=10, batch_size=5).set_index("case")
    assert table.loc["half", "flops_ratio"] == 2.0
    assert table.loc["half", "speedup"] == pytest.approx(2.0)  # median of 2, 2, 1.6
    assert table.loc["half", "efficiency"] == pytest.approx(1.0)
    # no "latlib, full length" case here: the plain model stands in for it
    assert table.loc["half", "speedup_over_full"] == pytest.approx(2.0)
    assert table.loc["half", "efficiency_over_full"] == pytest.approx(1.0)
    assert table.loc["plain", "median_seconds"] == 2.0
    assert table.loc["half", "latency_ms_per_batch"] == pytest.approx(1000 * 1.25 / 2)


def test_time_cases_runs_every_case_every_repetition():
    calls = []
    cases = [BenchCase(name, lambda batch, n=name: calls.append(n), 1.0) for name in "abc"]
    times = time_cases(cases, [{}, {}], repeats=3, warmup=0)
    assert sorted(times["case"].value_counts().items()) == [("a", 3), ("b", 3), ("c", 3)]
    assert len(calls) == 3 * 3 * 2
    # rotated order: each case goes first once
    firsts = [calls[i * 6] for i in range(3)]
    assert sorted(firsts) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "section,message",
    [
        ({"repeats": 2}, "repeats must be >= 3"),
        ({"batch_sizes": [0]}, "bench.batch_sizes must be a non-empty list"),
        ({"batch_sizes": []}, "bench.batch_sizes must be"),
        ({"threads": 0}, "bench.threads must be null or >= 1, got 0"),
        ({"max_points": 0}, "bench.max_points must be >= 1"),
        ({"search_iterations": -1}, "bench.search_iterations must be >= 0"),
        ({"max_examples": {32: -1}}, "bench.max_examples must be null or a map"),
        ({"repeats": 5.0}, "bench.repeats must be int"),
        ({"max_point": 3}, "unknown key"),
        ({"overrides": {"squad": {"repeat": 3}}}, r"bench\.overrides\.squad"),
        ({"overrides": {"squad": 3}}, "must map a task"),
    ],
)
def test_bad_bench_settings_are_refused(section, message):
    with pytest.raises(ValueError, match=message):
        BenchSettings.from_params(section)


def test_a_task_override_replaces_the_sections_value_for_that_task_only():
    section = {"repeats": 5, "overrides": {"squad": {"repeats": 3, "max_examples": {32: 64}}}}
    assert BenchSettings.from_params(section, "squad").repeats == 3
    assert BenchSettings.from_params(section, "squad").max_examples == {32: 64}
    assert BenchSettings.from_params(section, "sst2").repeats == 5


def test_expected_lengthdrop_cost():
    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(4), LengthAdaptiveConfig(length_mode="ratio", max_length=32)
    )
    lengths = [32, 20, 12]
    alone = expected_lengthdrop_cost(model, lengths, 0, 0.2, 0.0, use_smallest=False)
    assert alone == pytest.approx(1.0)
    with_smallest = expected_lengthdrop_cost(model, lengths, 0, 0.2, 0.0)
    assert 1.3 < with_smallest < 2.0  # the smallest sub-model costs under the full one
    sandwich = expected_lengthdrop_cost(model, lengths, 2, 0.2, 0.0)
    assert with_smallest + 2 * (with_smallest - 1) < sandwich < with_smallest + 2
    dropped = expected_lengthdrop_cost(model, lengths, 2, 0.2, 0.2)
    assert dropped == pytest.approx(0.8 * sandwich, rel=0.05)


def test_bench_cases_compute_what_evaluation_computes(embedded_path, tmp_path):
    from latlib.pipeline.bench import standard_cases

    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(4, num_labels=2, vocab_size=30522, max_position_embeddings=64),
        LengthAdaptiveConfig(length_mode="ratio", max_length=16),
    ).eval()
    model.save_pretrained(tmp_path)
    import datasets

    features = datasets.Dataset.from_dict({"input_ids": [[101, 7, 8, 102], [101, 9, 102]]})
    cases = standard_cases(model, tmp_path, features, [(0.75, 0.5, 0.5, 0.5)])
    batch = random_batch(2, [10, 6], vocab=30522)
    with torch.inference_mode():
        plain = cases[0].run(batch).logits
        ours = cases[1].run(batch).logits
        reduced = cases[2].run(batch).logits
        expected = model(**batch, length_config=(0.75, 0.5, 0.5, 0.5)).logits
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(reduced, expected)
    assert cases[2].macs < cases[1].macs == cases[0].macs


def test_cut_lengths_reach_the_flops_ratio_and_no_further():
    from latlib.flops import model_macs

    config = tiny_bert_config(4)

    def macs(length):
        return model_macs(config, length, None, "absolute", "classification").total

    lengths = [40, 17, 5, 2]
    kept = cut_lengths(config, lengths, 1.8, "classification")
    for length, cut in zip(lengths, kept, strict=True):
        assert 2 <= cut <= length
        assert cut == 2 or macs(cut) <= macs(length) / 1.8 < macs(cut + 1)
    assert cut_lengths(config, lengths, 1.0, "classification") == lengths


def test_cut_batch_keeps_the_first_tokens_and_the_last():
    batch = {
        "input_ids": torch.tensor([[101, 5, 6, 7, 8, 102], [101, 9, 102, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
    }
    cut = cut_batch(batch, [4, 2])
    assert cut["input_ids"].tolist() == [[101, 5, 6, 102], [101, 102, 0, 0]]
    assert cut["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_ceiling_case_times_its_own_shorter_batches():
    from latlib.flops import example_macs

    config = tiny_bert_config(4)
    seen = []
    plain = BenchCase("plain", lambda batch: seen.append(batch["input_ids"].shape[1]), 1.0)
    batches = [random_batch(2, [30, 12], seed=0), random_batch(1, [20], seed=1)]
    ceiling = ceiling_case(plain, batches, 2.0, config, "classification")
    assert ceiling.kind == "ceiling" and len(ceiling.inputs) == len(batches)
    half = example_macs(config, [30, 12, 20], None, "absolute", "classification") / 2.0
    assert 0.85 * half < ceiling.macs <= half
    time_cases([ceiling], batches, repeats=1, warmup=0)
    assert seen == [int(b["attention_mask"].sum(-1).max()) for b in ceiling.inputs]
    assert all(
        width < int(b["attention_mask"].sum(-1).max())
        for width, b in zip(seen, batches, strict=True)
    )


def test_machine_description_names_the_vector_unit():
    text = machine_description()
    assert torch.backends.cpu.get_cpu_capability() in text and torch.__version__ in text


def test_the_bench_schema_covers_every_setting():
    from dataclasses import fields

    from latlib.pipeline.params import BENCH_RANGES, BENCH_SCHEMA

    names = {f.name for f in fields(BenchSettings)}
    assert set(BENCH_SCHEMA) == names and set(BENCH_RANGES) == names
