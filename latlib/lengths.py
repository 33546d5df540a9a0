"""Length configurations: what they mean, how they are checked, how LengthDrop samples them.

A *length configuration* has one entry per layer: how many tokens leave that layer.
Two modes:

- ``"absolute"`` (the paper's): token counts relative to the padded input length, e.g.
  ``(120, 100, 85, 70, 60, 50)`` for inputs padded to 128.
- ``"ratio"``: the fraction of each example's *own real tokens* that leaves the layer,
  e.g. ``(0.9, 0.8, 0.7, 0.6, 0.5, 0.4)``. An example of ``n`` real tokens keeps
  ``ceil(ratio * n)`` of them, so padding never counts and results do not depend on
  what an example is batched with.

Training and search work on an integer *grid*: lengths ``1..max_length`` (``max_length``
is the task's nominal sequence length, 128 for GLUE, 384 for SQuAD). ``to_model_lengths``
turns a grid configuration into what the model takes in either mode.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

LengthMode = Literal["absolute", "ratio"]
LENGTH_MODES: tuple[str, ...] = ("absolute", "ratio")

# Guards ceil() against float noise: 0.35 * 20 is 7.000000000000001, which must keep 7.
_CEIL_EPS = 1e-9


def ratio_keep_count(ratio: float, real_length: int) -> int:
    """Tokens an example of ``real_length`` real tokens keeps at ``ratio`` (at least 1)."""
    return max(1, math.ceil(ratio * real_length - _CEIL_EPS))


def validate_length_config(
    lengths: Sequence[float],
    num_layers: int,
    mode: LengthMode,
    input_length: int | None = None,
) -> tuple:
    """Check a length configuration and return it as a tuple.

    Raises ``ValueError`` naming the layer and the rule broken: wrong number of entries,
    a length that grows, zero or negative, longer than the input (absolute mode), a
    non-integer count (absolute mode), or a ratio outside (0, 1] (ratio mode).
    """
    if mode not in LENGTH_MODES:
        raise ValueError(f"length mode must be one of {LENGTH_MODES}, got {mode!r}")
    lengths = tuple(lengths)
    if len(lengths) != num_layers:
        raise ValueError(
            f"length configuration has {len(lengths)} entries but the model has "
            f"{num_layers} layers: give one length per layer"
        )
    previous = input_length if mode == "absolute" else 1.0
    for layer, length in enumerate(lengths):
        if mode == "absolute":
            if isinstance(length, bool) or not float(length).is_integer():
                raise ValueError(
                    f"layer {layer}: absolute lengths are token counts, got {length!r}; "
                    "use length_mode='ratio' for fractions"
                )
            if length <= 0:
                raise ValueError(f"layer {layer}: length must be positive, got {length}")
        elif not 0.0 < length <= 1.0:
            raise ValueError(f"layer {layer}: ratio must be in (0, 1], got {length}")
        if previous is not None and length > previous:
            if layer == 0 and mode == "absolute":
                raise ValueError(
                    f"layer 0: length {length} is longer than the input ({input_length} tokens)"
                )
            if layer > 0:
                raise ValueError(
                    f"layer {layer}: length {length} is larger than layer {layer - 1}'s "
                    f"{previous}; lengths must not increase from layer to layer"
                )
        previous = length
    if mode == "absolute":
        return tuple(int(length) for length in lengths)
    return tuple(float(length) for length in lengths)


def full_config(num_layers: int, max_length: int) -> tuple[int, ...]:
    """The grid configuration that keeps every token."""
    return (max_length,) * num_layers


def smallest_config(
    num_layers: int, max_length: int, length_drop_ratio_bound: float, min_length: int = 2
) -> tuple[int, ...]:
    """The paper's smallest sub-model: each layer keeps ``1 - p`` of the previous length."""
    _check_bound(length_drop_ratio_bound)
    return constant_rate_config(num_layers, max_length, 1 - length_drop_ratio_bound, min_length)


def sample_length_config(
    num_layers: int,
    max_length: int,
    length_drop_ratio_bound: float,
    rng: random.Random,
    layer_keep: Sequence[bool] | None = None,
    min_length: int = 2,
) -> tuple[int, ...]:
    """LengthDrop's random sub-model: layer i keeps a uniform draw in
    ``[ceil((1 - p) * l_{i-1}), l_{i-1}]`` tokens; a layer skipped by LayerDrop keeps all."""
    _check_bound(length_drop_ratio_bound)
    lengths, length = [], max_length
    for layer in range(num_layers):
        if layer_keep is None or layer_keep[layer]:
            low = max(min_length, math.ceil((1 - length_drop_ratio_bound) * length - _CEIL_EPS))
            length = rng.randint(min(low, length), length)
        lengths.append(length)
    return tuple(lengths)


def sample_layer_keep(num_layers: int, layer_dropout_prob: float, rng: random.Random) -> list[bool]:
    """LayerDrop: keep each layer with probability ``1 - layer_dropout_prob``."""
    if not 0.0 <= layer_dropout_prob < 1.0:
        raise ValueError(f"layer_dropout_prob must be in [0, 1), got {layer_dropout_prob}")
    return [rng.random() >= layer_dropout_prob for _ in range(num_layers)]


def constant_rate_config(
    num_layers: int, max_length: int, rate: float, min_length: int = 1
) -> tuple[int, ...]:
    """Every layer keeps ``ceil(rate * previous length)`` tokens (the paper's baseline).

    Rounded layer by layer, like LengthDrop's sampler, so ``rate = 1 - p`` gives exactly
    the smallest configuration LengthDrop trained (the search's lower bound).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    lengths, length = [], max_length
    for _ in range(num_layers):
        length = min(length, max(min_length, math.ceil(rate * length - _CEIL_EPS)))
        lengths.append(length)
    return tuple(lengths)


def to_model_lengths(grid_config: Sequence[int], mode: LengthMode, max_length: int) -> tuple:
    """A grid configuration as the model takes it: counts (absolute) or ``l / max_length`` (ratio)."""
    if mode == "absolute":
        return tuple(int(length) for length in grid_config)
    if mode == "ratio":
        return tuple(length / max_length for length in grid_config)
    raise ValueError(f"length mode must be one of {LENGTH_MODES}, got {mode!r}")


def _check_bound(length_drop_ratio_bound: float) -> None:
    if not 0.0 <= length_drop_ratio_bound < 1.0:
        raise ValueError(
            f"length_drop_ratio_bound must be in [0, 1), got {length_drop_ratio_bound}"
        )
