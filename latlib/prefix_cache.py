"""Share the first layers between length configurations during a search.

Two configurations that keep the same tokens in their first k layers compute the same
encoder state after layer k on the same batch (the same operations on the same inputs,
so bit for bit). In ratio mode the key is what each example keeps, not the ratio: on a
batch of short sentences, ratios 0.90 and 0.91 usually keep the same token counts.
``PrefixCache`` keeps those states, least recently used out first within a memory
budget, and ``PrefixCache.forward`` runs only the layers after the longest prefix it
holds. Written here because no library caches partial forward passes keyed by
per-layer lengths.

One cache serves one sequence of batches (a search split read in a fixed order): it
remembers which rows each batch number held and refuses a batch that differs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .lengths import ratio_keep_count
from .model import EncoderState, LengthAdaptiveModel

DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: about one SST-2 search generation (64-row batches)


@dataclass
class CacheStats:
    """Layers run and layers skipped because a cached prefix covered them."""

    layers_run: int = 0
    layers_reused: int = 0
    evictions: int = 0

    @property
    def reuse_fraction(self) -> float:
        total = self.layers_run + self.layers_reused
        return self.layers_reused / total if total else 0.0


class PrefixCache:
    """Encoder states after layer k, keyed by (batch number, the first k layer lengths)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._states: OrderedDict[tuple, EncoderState] = OrderedDict()
        self._rows: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
        self._rows.clear()
        self.bytes = 0

    @torch.inference_mode()
    def forward(
        self,
        model: LengthAdaptiveModel,
        batch_number: int,
        rows: torch.Tensor,
        inputs: dict[str, torch.Tensor],
        length_config: Sequence[float] | None,
    ):
        """``model(**inputs, length_config=...)`` for batch ``batch_number`` (holding data
        set rows ``rows``), reusing and filling the cache. Returns the model's output."""
        self._check_rows(batch_number, rows)
        mode = model.config.length_mode
        lengths = model.resolve_length_config(length_config, mode, inputs["input_ids"].size(1))
        keeps = (None,) * model.num_layers if lengths is None else tuple(lengths)
        layer_keys = _layer_keys(keeps, mode, inputs)
        done, state = self._longest(batch_number, layer_keys)
        if state is None:
            state = model.start(
                inputs["input_ids"],
                inputs.get("attention_mask"),
                inputs.get("token_type_ids"),
                restore=model.config.task_type == "span" and model.config.drop_and_restore,
            )
        self.stats.layers_reused += done
        for index in range(done, model.num_layers):
            state = model.step(index, state, keeps[index], mode)
            self.stats.layers_run += 1
            self._put((batch_number, layer_keys[: index + 1]), state)
        hidden, _ = model.finish(state)
        return model.output(hidden, state.positions, state.mask, inputs["input_ids"].size(1))

    # ---------------------------------------------------------------- internals
    def _check_rows(self, batch_number: int, rows: torch.Tensor) -> None:
        seen = self._rows.setdefault(batch_number, rows.clone())
        if not torch.equal(seen, rows):
            raise ValueError(
                f"batch {batch_number} holds other rows than when it was cached: a PrefixCache "
                "serves one data set read in one fixed order; make a new cache for other data"
            )

    def _longest(self, batch_number: int, keeps: tuple) -> tuple[int, EncoderState | None]:
        # Up to every layer: on short sentences, nearby ratios keep the same token counts
        # at every layer, and then only the head runs again.
        for done in range(len(keeps), 0, -1):
            key = (batch_number, keeps[:done])
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return done, _own_copy(state)
        return 0, None

    def _put(self, key: tuple, state: EncoderState) -> None:
        if key in self._states:
            self._states.move_to_end(key)
            return
        size = _state_bytes(state)
        if size > self.max_bytes:
            return
        self._states[key] = _own_copy(state)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._states.popitem(last=False)
            self.bytes -= _state_bytes(old)
            self.stats.evictions += 1


def _layer_keys(keeps: tuple, mode: str, inputs: dict[str, torch.Tensor]) -> tuple:
    """What decides each layer's computation on this batch: the token count every example
    keeps (ratio mode), or the length (absolute mode). The counts of the layers so far
    also decide which layers keep everything, so a prefix of keys fixes the state."""
    if mode != "ratio":
        return keeps
    mask = inputs.get("attention_mask")
    batch, length = inputs["input_ids"].shape
    real = mask.sum(-1).tolist() if mask is not None else [length] * batch
    return tuple(
        None if keep is None else tuple(ratio_keep_count(keep, n) for n in real) for keep in keeps
    )


def _own_copy(state: EncoderState) -> EncoderState:
    """The model updates ``restored`` in place, so a kept state gets its own copy of it;
    the other tensors are never written to after a layer made them."""
    if state.restored is None:
        return state
    return replace(state, restored=state.restored.clone())


def _state_bytes(state: EncoderState) -> int:
    tensors = (state.hidden, state.mask, state.positions, state.restored)
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
