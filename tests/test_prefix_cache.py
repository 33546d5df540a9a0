"""The search's prefix cache: the same outputs as running every layer, and layers reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_batch, tiny_bert_config

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.evaluation import predict_logits
from latlib.prefix_cache import PrefixCache

# Configurations that share first layers, as a search's mutants and children do.
CONFIGS = {
    "ratio": [
        (0.9, 0.8, 0.6, 0.5),
        (0.9, 0.8, 0.6, 0.3),
        (0.9, 0.8, 0.4, 0.3),
        (0.9, 0.7, 0.6, 0.5),
        None,
        (1.0, 1.0, 1.0, 0.5),
        (0.9, 0.8, 0.6, 0.5),
    ],
    "absolute": [(10, 8, 6, 4), (10, 8, 6, 2), (10, 7, 6, 4), (12, 8, 6, 4), (10, 8, 5, 5)],
}


def model_and_batches(task_type: str, mode: str, drop_and_restore: bool = True):
    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(4, num_labels=2),
        LengthAdaptiveConfig(
            task_type=task_type,
            length_mode=mode,
            max_length=16,
            drop_and_restore=drop_and_restore,
        ),
    ).eval()
    batches = []
    for number, lengths in enumerate(([14, 11, 6], [16, 9], [12, 12, 12, 3])):
        batch = random_batch(len(lengths), lengths, seed=number)
        start = sum(len(b["index"]) for b in batches)
        batch["index"] = torch.arange(start, start + len(lengths))
        batches.append(batch)
    return model, batches


def run(model, batches, config, cache=None):
    loader = [dict(batch) for batch in batches]  # predict_logits pops "index"
    return predict_logits(model, loader, config, cache=cache)


# A span model without Drop-and-Restore (claim 3's comparison) must stay so when cached.
@pytest.mark.parametrize(
    "task_type, drop_and_restore",
    [("classification", True), ("span", True), ("span", False)],
)
@pytest.mark.parametrize("mode", ["ratio", "absolute"])
def test_cached_outputs_equal_full_runs(task_type, drop_and_restore, mode):
    model, batches = model_and_batches(task_type, mode, drop_and_restore)
    cache = PrefixCache()
    for config in CONFIGS[mode]:
        plain = run(model, batches, config)
        cached = run(model, batches, config, cache)
        for name, values in plain.items():
            # span logits are -inf past each row's tokens: compare with allclose
            np.testing.assert_allclose(cached[name], values, rtol=0, atol=1e-5)
    assert cache.stats.layers_reused > 0
    assert 0 < cache.stats.reuse_fraction < 1
    # The repeated configuration reuses its first three layers on every batch.
    assert len(cache) > 0 and cache.bytes > 0


def test_budget_evicts_oldest_and_zero_budget_keeps_nothing():
    model, batches = model_and_batches("span", "ratio")
    tiny = PrefixCache(max_bytes=20_000)
    nothing = PrefixCache(max_bytes=0)
    for config in CONFIGS["ratio"]:
        expected = run(model, batches, config)
        for cache in (tiny, nothing):
            got = run(model, batches, config, cache)
            np.testing.assert_allclose(
                got["start_logits"], expected["start_logits"], rtol=0, atol=1e-5
            )
        assert tiny.bytes <= tiny.max_bytes
    assert tiny.stats.evictions > 0
    assert len(nothing) == 0 and nothing.stats.layers_reused == 0


def test_a_cache_refuses_other_data():
    model, batches = model_and_batches("classification", "ratio")
    cache = PrefixCache()
    run(model, batches, CONFIGS["ratio"][0], cache)
    shuffled = [batches[1], batches[0], batches[2]]
    with pytest.raises(ValueError, match="holds other rows"):
        run(model, shuffled, CONFIGS["ratio"][0], cache)
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(max_bytes=-1)
