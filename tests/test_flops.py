"""The analytic FLOPs model against the reference figure and PyTorch's own counter."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_bert_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel, example_macs, model_macs, paper_macs
from latlib.flops import layer_macs


def test_bert_base_384_reference_figure():
    """The maintainers' 35.34 G MACs for BERT-base at length 384 (config only, no weights)."""
    macs = paper_macs(BertConfig(), 384, task_type="span").total
    assert abs(macs / 35.34e9 - 1) < 5e-4, macs


def test_reference_table_full_lengths():
    assert abs(paper_macs(BertConfig(), 128).total / 11.17e9 - 1) < 1e-3
    distil = BertConfig(num_hidden_layers=6)
    assert abs(paper_macs(distil, 384, task_type="span").total / 17.67e9 - 1) < 1e-3


def test_paper_style_is_the_reference_formula_on_a_reduced_configuration():
    """The paper's FLOPs: the output projection on every token entering a layer,
    4 a H^2 + 2 a^2 H + 2 b H F per layer, as the reference code runs it."""
    hidden, ffn = 768, 3072
    config = (300, 250, 200, 170, 140, 120, 100, 90, 80, 70, 60, 50)
    counts = (384, *config)
    formula = sum(
        4 * a * hidden**2 + 2 * a * a * hidden + 2 * b * hidden * ffn
        for a, b in zip(counts[:-1], counts[1:], strict=True)
    )
    breakdown = paper_macs(BertConfig(), 384, config, task_type="span")
    assert sum(breakdown.layers) == formula
    assert breakdown.total == formula + 384 * hidden * 2  # the span head at every position
    # What the model computes (real-token count) runs the projection after the selection.
    computed = model_macs(BertConfig(), 384, config, "absolute", "span")
    assert sum(computed.layers) < formula


def test_layer_formula_and_breakdown():
    config = tiny_bert_config(3)
    breakdown = model_macs(config, 20, (15, 10, 10), mode="absolute")
    assert breakdown.token_counts == (20, 15, 10, 10)
    assert (
        breakdown.layers[0] == 3 * 20 * 32 * 32 + 2 * 20 * 20 * 32 + 15 * 32 * 32 + 2 * 15 * 32 * 64
    )
    assert breakdown.layers[0] == layer_macs(20, 15, 32, 64)
    assert breakdown.total == sum(breakdown.layers) + breakdown.head


def test_example_macs_counts_real_tokens_only():
    config = tiny_bert_config(2)
    ratio = example_macs(config, [10, 20], (0.5, 0.5), mode="ratio")
    expected = (
        model_macs(config, 10, (0.5, 0.5), "ratio").total
        + model_macs(config, 20, (0.5, 0.5), "ratio").total
    ) / 2
    assert ratio == expected
    # absolute lengths longer than a short example keep all its real tokens
    assert model_macs(config, 6, (8, 4), "absolute").token_counts == (6, 6, 4)
    with pytest.raises(ValueError):
        example_macs(config, [], None)


def counted_macs(model, batch, **kwargs) -> float:
    # The CPU flash-attention kernel is not registered with FlopCounterMode; the math
    # backend runs the same attention as matmuls, which it does count.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**batch, **kwargs)
    return counter.get_total_flops() / 2


@pytest.mark.parametrize(
    "task_type,mode,config",
    [
        ("classification", "ratio", None),
        ("classification", "ratio", (0.9, 0.7, 0.5, 0.3)),
        ("classification", "absolute", (20, 14, 14, 6)),
        ("span", "ratio", (0.8, 0.8, 0.4, 0.4)),
    ],
)
def test_agrees_with_torch_flop_counter_random(task_type, mode, config):
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(
            4,
            num_labels=3 if task_type == "classification" else 2,
            hidden_size=64,
            intermediate_size=256,
        ),
        LengthAdaptiveConfig(task_type=task_type, length_mode=mode),
    ).eval()
    batch = random_batch(1, [30])
    counted = counted_macs(model, batch, length_config=config)
    analytic = model_macs(model.hf_config, 30, config, mode, task_type).total
    assert abs(counted / analytic - 1) < 0.02, (counted, analytic)


@pytest.mark.parametrize(
    "config", [None, (0.9, 0.8, 0.7, 0.6, 0.5, 0.4), (0.8, 0.64, 0.52, 0.41, 0.33, 0.27)]
)
def test_agrees_with_torch_flop_counter_embedded(embedded_path, config):
    model = LengthAdaptiveModel.from_pretrained(embedded_path, num_labels=2).eval()
    batch = random_batch(1, [64], vocab=30000)
    counted = counted_macs(model, batch, length_config=config)
    analytic = model_macs(model.hf_config, 64, config, "ratio").total
    assert abs(counted / analytic - 1) < 0.02, (counted, analytic)
