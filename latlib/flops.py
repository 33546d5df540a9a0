"""Analytic multiply-accumulates (MACs) of the length-adaptive model.

Per layer, with ``a`` tokens in, ``b`` tokens out, hidden ``H`` and FFN width ``F``::

    3 a H^2      Q, K, V projections (every token that enters)
    2 a^2 H      attention scores and A @ V
    b H^2        output projection (run after the selection, see model.py)
    2 b H F      feed-forward

The reference code runs the output projection on every token entering the layer, ``a``,
and the paper's FLOPs are that code's count: ``4 a H^2 + 2 a^2 H + 2 b H F``. The paper-style
count below uses that formula; the real-token count uses what this model computes. The
two agree at full length, where the maintainers' figure for BERT-base at length 384
(35.34 G MACs) is reproduced.
Embedding look-ups and LayerNorms are not multiply-accumulates and are left out, as in
``torch.utils.flop_counter`` (whose FLOPs are 2 x MACs).

Two ways to count, both reported:

- *real tokens* (``example_macs``): each example at its own real length, averaged over
  a data set: what the model costs on that data;
- *paper-style* (``paper_macs``): one unpadded input of the nominal ``max_length``, on the
  reference code's formula, the paper's FLOPs axis (on SST-2 it mostly counts padding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .lengths import LengthMode, ratio_keep_count, validate_length_config


@dataclass(frozen=True)
class MacsBreakdown:
    """MACs of one forward pass of one example, per part."""

    layers: tuple[int, ...]
    head: int
    token_counts: tuple[int, ...]  # input length, then the length leaving each layer

    @property
    def total(self) -> int:
        return sum(self.layers) + self.head


def layer_macs(
    tokens_in: int, tokens_out: int, hidden: int, ffn: int, reference: bool = False
) -> int:
    """MACs of one transformer layer that takes ``tokens_in`` and keeps ``tokens_out``;
    ``reference``: the output projection on every token in, as the reference code runs it."""
    a, b = tokens_in, tokens_out
    projected = a if reference else b
    return (
        3 * a * hidden * hidden
        + 2 * a * a * hidden
        + projected * hidden * hidden
        + 2 * b * hidden * ffn
    )


def ffn_size(hf_config) -> int:
    """The feed-forward width: ``intermediate_size`` (BERT, RoBERTa), ``hidden_dim`` (DistilBERT)."""
    size = getattr(hf_config, "intermediate_size", None) or getattr(hf_config, "hidden_dim", None)
    if size is None:
        raise ValueError(f"cannot find the feed-forward width in a {type(hf_config).__name__}")
    return size


def head_macs(hf_config, task_type: str, input_length: int) -> int:
    """MACs of the task head: pooler + classifier, or the span projection at every position."""
    hidden = hf_config.hidden_size
    if task_type == "classification":
        return hidden * hidden + hidden * hf_config.num_labels
    if task_type == "span":
        return input_length * hidden * 2
    raise ValueError(f"task_type must be 'classification' or 'span', got {task_type!r}")


def token_counts(
    input_length: int, length_config: Sequence[float] | None, mode: LengthMode, num_layers: int
) -> tuple[int, ...]:
    """Tokens entering the first layer, then leaving each layer, for one unpadded example."""
    if length_config is None:
        return (input_length,) * (num_layers + 1)
    length_config = validate_length_config(length_config, num_layers, mode)
    counts = [input_length]
    for keep in length_config:
        if mode == "ratio":
            kept = ratio_keep_count(keep, input_length)
        else:
            kept = int(keep)
        counts.append(min(kept, counts[-1]))
    return tuple(counts)


def model_macs(
    hf_config,
    input_length: int,
    length_config: Sequence[float] | None = None,
    mode: LengthMode = "absolute",
    task_type: str = "classification",
    reference: bool = False,
) -> MacsBreakdown:
    """MACs of one unpadded example of ``input_length`` tokens at a length configuration
    (``reference``: on the reference code's formula, see ``layer_macs``)."""
    counts = token_counts(input_length, length_config, mode, hf_config.num_hidden_layers)
    hidden, ffn = hf_config.hidden_size, ffn_size(hf_config)
    layers = tuple(
        layer_macs(a, b, hidden, ffn, reference)
        for a, b in zip(counts[:-1], counts[1:], strict=True)
    )
    return MacsBreakdown(layers, head_macs(hf_config, task_type, input_length), counts)


def paper_macs(
    hf_config,
    max_length: int,
    length_config: Sequence[int] | None = None,
    task_type: str = "classification",
) -> MacsBreakdown:
    """The paper's FLOPs axis: one unpadded input of ``max_length`` tokens, absolute
    lengths, counted as the reference code computes (``4 a H^2 + 2 a^2 H + 2 b H F``)."""
    return model_macs(hf_config, max_length, length_config, "absolute", task_type, reference=True)


def example_macs(
    hf_config,
    real_lengths: Iterable[int],
    length_config: Sequence[float] | None = None,
    mode: LengthMode = "ratio",
    task_type: str = "classification",
) -> float:
    """Mean MACs per example over a data set, each example at its own real length.

    In absolute mode an example shorter than a layer's length keeps all its tokens there
    (padding is not counted).
    """
    total, count = 0, 0
    cache: dict[int, int] = {}
    for length in real_lengths:
        if length not in cache:
            cache[length] = model_macs(hf_config, length, length_config, mode, task_type).total
        total += cache[length]
        count += 1
    if count == 0:
        raise ValueError("example_macs needs at least one example length")
    return total / count
