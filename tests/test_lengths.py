"""Length configurations: sampling, the smallest sub-model and the constant-rate baseline."""

from __future__ import annotations

import random

import pytest

from latlib.lengths import (
    constant_rate_config,
    ratio_keep_count,
    sample_layer_keep,
    sample_length_config,
    smallest_config,
    to_model_lengths,
)


def test_smallest_is_the_constant_rate_at_one_minus_p():
    assert smallest_config(6, 128, 0.2) == (103, 83, 67, 54, 44, 36)
    assert smallest_config(6, 128, 0.2) == constant_rate_config(6, 128, 0.8, min_length=2)
    assert constant_rate_config(4, 10, 1.0) == (10, 10, 10, 10)
    assert smallest_config(8, 4, 0.5) == (2, 2, 2, 2, 2, 2, 2, 2)  # min length 2


def test_samples_stay_within_the_lengthdrop_band():
    rng = random.Random(0)
    lower = smallest_config(6, 128, 0.2)
    for _ in range(500):
        keep = sample_layer_keep(6, 0.2, rng)
        config = sample_length_config(6, 128, 0.2, rng, keep)
        previous = 128
        for layer, length in enumerate(config):
            assert length <= previous
            if keep[layer]:
                assert length >= max(2, -(-8 * previous // 10))
            else:
                assert length == previous
            previous = length
        assert all(c >= low for c, low in zip(config, lower, strict=True))


def test_ratio_keep_count_rounds_up_without_float_noise():
    assert ratio_keep_count(0.35, 20) == 7
    assert ratio_keep_count(0.5, 9) == 5
    assert ratio_keep_count(0.01, 3) == 1


def test_to_model_lengths():
    assert to_model_lengths((64, 32), "ratio", 128) == (0.5, 0.25)
    assert to_model_lengths((64, 32), "absolute", 128) == (64, 32)
    with pytest.raises(ValueError, match="length mode"):
        to_model_lengths((64,), "percent", 128)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_bounds(bad):
    with pytest.raises(ValueError, match="length_drop_ratio_bound"):
        smallest_config(6, 128, bad)
    with pytest.raises(ValueError, match="layer_dropout_prob"):
        sample_layer_keep(6, abs(bad) + 1.0, random.Random(0))
