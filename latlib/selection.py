"""Which tokens leave a layer: PoWER-BERT's significance, top-k selection, Drop-and-Restore.

The significance of a token is the attention it *receives*, summed over heads and over
the real (non-padding) queries: ``s[b, k] = sum_h sum_q A[b, h, q, k]``. A layer keeps
its ``n`` most significant tokens (``[CLS]`` forced when asked, padding dropped first)
in their original order. For span tasks the dropped tokens are put back at their own
positions after the last layer (Drop-and-Restore), each with the vector of the last
layer that processed it. Plain functions of tensors: ``LengthAdaptiveModel`` calls them
between its attention and feed-forward sub-layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .lengths import ratio_keep_count


def keep_counts(
    keep: float | None,
    mode: str,
    real_lengths: Sequence[int],
    alive: Sequence[int],
    width: int,
) -> tuple[int, ...] | None:
    """Tokens each example keeps after a layer, or None when the layer keeps all it was
    given (then it needs no attention scores).

    ``keep`` is a ratio of each example's real length or an absolute count (``mode``);
    ``alive`` counts each example's real tokens entering the layer, ``width`` its slots.
    """
    if keep is None:
        return None
    if mode == "absolute":
        counts = (int(keep),) * len(alive)
        return None if keep >= width else counts
    counts = tuple(ratio_keep_count(keep, length) for length in real_lengths)
    if all(count >= now for count, now in zip(counts, alive, strict=True)):
        return None
    return counts


def counts_argument(
    counts: tuple[int, ...], mode: str, alive: Sequence[int], width: int, device: torch.device
) -> torch.Tensor | int:
    """``counts`` as ``select_tokens`` takes them: one int when a single top-k serves every
    example (absolute mode, one example, or one count and no padding), which skips the
    per-example masks and index juggling that dominate at batch size 1; else a [B] tensor."""
    single = mode == "absolute" or len(counts) == 1
    if single or (len(set(counts)) == 1 and min(alive) == width):
        return counts[0]
    return torch.tensor(counts, device=device)


def attention_and_significance(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    all_real: bool,
    dropout: float,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention context [B, h, L, d] and significance [B, L] of q, k, v [B, h, L, d].

    Training keeps the plain formulation, which also applies attention dropout; inference
    takes the faster twin below (the same numbers within float rounding).
    """
    if not training:
        return _inference_attention_and_significance(q, k, v, mask, all_real)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))  # [B, h, L, L]
    if not all_real:
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = scores.softmax(-1)
    # Attention each token receives, over heads and *real* queries only.
    if all_real:
        significance = probs.sum(dim=(1, 2))  # [B, L]
    else:
        significance = torch.einsum("bhqk,bq->bk", probs, mask.to(probs.dtype))
    context = F.dropout(probs, dropout, training) @ v
    return context, significance


def _inference_attention_and_significance(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, all_real: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same context and significance in fewer passes over the [B, h, L, L] scores.

    The scaling and the padding mask ride on the one batched matmul (``baddbmm``), and
    heads are summed before the real-query weighting, with no einsum copy. Measured at
    B=32, L=40: 1.24 ms against 1.69 ms, as fast as fused SDPA (which cannot return the
    probabilities)."""
    batch, heads, length, size = q.shape
    q3 = q.reshape(batch * heads, length, size)
    keys_t = k.reshape(batch * heads, length, size).transpose(1, 2)
    if all_real:
        scores = torch.bmm(q3, keys_t).mul_(1 / math.sqrt(size))
    else:
        bias = torch.zeros(batch, 1, length, dtype=q.dtype, device=q.device)
        bias.masked_fill_(~mask[:, None, :], torch.finfo(q.dtype).min)
        bias = bias.repeat_interleave(heads, dim=0)  # [B*h, 1, L]
        scores = torch.baddbmm(bias, q3, keys_t, alpha=1 / math.sqrt(size))
    probs = scores.softmax(-1)  # [B*h, L, L]
    by_key = probs.view(batch, heads, length, length).sum(1)  # [B, L(q), L(k)]
    if all_real:
        significance = by_key.sum(1)
    else:
        significance = torch.bmm(mask.to(q.dtype)[:, None, :], by_key).squeeze(1)
    context = torch.bmm(probs, v.reshape(batch * heads, length, size))
    return context.view(batch, heads, length, size), significance


def select_tokens(
    significance: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    counts: torch.Tensor | int,
    all_real: bool,
    keep_cls: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k slots by significance [B, L], returned in their original order, as
    (slot index [B, k], new mask [B, k], new positions [B, k]).

    Padding scores -inf so a real token is never dropped while padding is kept;
    ``[CLS]`` (always slot 0, since order is kept) scores +inf when ``keep_cls``.
    """
    if not all_real:
        significance = significance.masked_fill(~mask, float("-inf"))
    if keep_cls:
        significance[:, 0] = float("inf")
    if isinstance(counts, int):
        width = counts
        slot_valid = None
    else:
        width = int(counts.max())
        slot_valid = torch.arange(width, device=mask.device) < counts[:, None]  # [B, k]
    index = significance.topk(width, dim=-1, sorted=slot_valid is not None).indices  # [B, k]
    if slot_valid is not None:
        # Slots beyond an example's own count become padding: push them to the end.
        index = torch.where(slot_valid, index, index + mask.size(1))
    index = index.sort(-1).values
    if slot_valid is not None:
        slot_valid = index < mask.size(1)
        index = index.remainder(mask.size(1))
    new_mask = mask[:, :width] if all_real else mask.gather(1, index)
    if slot_valid is not None:
        new_mask = new_mask & slot_valid
    return index, new_mask, positions.gather(1, index)


def restore_index(
    input_mask: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, hidden_size: int
) -> torch.Tensor:
    """Scatter index [B, l, H] that writes the l live slots back to their input positions
    (Drop-and-Restore).

    A masked slot holding a real token (ratio mode: dropped for this example only) goes
    to the sink column (index L) so it cannot overwrite that token's restored vector;
    padding positions are written back as computed, as the library's model does.
    """
    padding = ~input_mask
    to_sink = ~mask & ~padding.gather(1, positions)
    sink = padding.size(1)
    index = positions.masked_fill(to_sink, sink)
    return index[..., None].expand(-1, -1, hidden_size)


def unrestored(
    hidden: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, input_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Without Drop-and-Restore: the survivors ``hidden`` [B, l, H] (at input ``positions``
    [B, l], live where ``mask``) back at their positions in a [B, L, H] sequence, zeros
    elsewhere, and which of the L positions hold no survivor [B, L].

    Unlike ``restore_index``, every slot without a live token, padding included, goes to
    the sink column (index L), which is cut off: nothing but survivors is written.
    """
    batch, _, size = hidden.shape
    slots = positions.masked_fill(~mask, input_length)  # [B, l]
    full = hidden.new_zeros(batch, input_length + 1, size)
    full.scatter_(1, slots[..., None].expand(-1, -1, size), hidden)
    kept = torch.zeros(batch, input_length + 1, dtype=torch.bool, device=hidden.device)
    kept.scatter_(1, slots, mask)
    return full[:, :input_length], ~kept[:, :input_length]


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, L, H], index [B, k] -> [B, k, H]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.size(-1)))
