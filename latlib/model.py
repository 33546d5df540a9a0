"""The length-adaptive encoder, over the transformers library's own BERT modules.

``LengthAdaptiveModel`` holds an ordinary transformers task model (``backbone``, e.g. a
``BertForSequenceClassification``) and runs its embeddings, layers and head itself so
that tokens can be dropped between the attention and the feed-forward sub-layer of any
layer (PoWER-BERT's significance, Kim & Cho's LengthDrop). No modeling file is forked:
each layer is driven through its public sub-modules (``attention.self.query`` ...,
``attention.output``, ``intermediate``, ``output``), so any BERT-family checkpoint loads
and the saved folder stays a plain transformers checkpoint.

One layer, with ``a`` tokens in and ``b`` tokens out (B batch, h heads, d head size)::

    x [B, a, H] -> q, k, v [B, h, a, d]
               -> attention            ctx [B, a, H]    (SDPA when the layer drops nothing)
               -> significance         s [B, a]         = sum_heads sum_real_queries A[., ., q, k]
               -> keep top-b by s      idx [B, b]       ([CLS] forced, padding last, order kept)
               -> out-proj + residual + LayerNorm on the kept rows only  [B, b, H]
               -> FFN                  [B, b, H]

The output projection, residual and LayerNorm act row by row, so running them after the
selection gives the same numbers as the reference (which ran them before) for less work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.utils import ModelOutput

from .anytime import FRONTIER_FILE, Frontier, FrontierPoint
from .backbones import resolve_backbone
from .lengths import LENGTH_MODES, LengthMode, validate_length_config

CONFIG_NAME = "length_adaptive_config.json"
TaskType = Literal["classification", "span"]
TASK_TYPES: tuple[str, ...] = ("classification", "span")
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("bert",)


@dataclass
class LengthAdaptiveConfig:
    """What the wrapper adds to the backbone's own ``config.json``.

    ``max_length`` is the nominal sequence length of the task (the paper's
    ``max_seq_length``): the unit of the search grid and of paper-style FLOPs.
    ``keep_cls`` forces ``[CLS]`` to survive every layer; classification needs it (the
    pooler reads position 0). Span extraction always restores dropped tokens.
    """

    task_type: TaskType = "classification"
    length_mode: LengthMode = "ratio"
    max_length: int = 128
    keep_cls: bool = True
    length_config: tuple | None = None  # used when forward() is given none (set_budget sets it)

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        if self.length_mode not in LENGTH_MODES:
            raise ValueError(f"length_mode must be one of {LENGTH_MODES}, got {self.length_mode!r}")
        if self.task_type == "classification" and not self.keep_cls:
            raise ValueError("classification reads [CLS] at the last layer: keep_cls must be True")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.length_config is not None:
            self.length_config = tuple(self.length_config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LengthAdaptiveClassifierOutput(ModelOutput):
    """``logits`` [B, num_labels]; the trace fields are filled when asked for."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    token_positions: tuple[torch.Tensor, ...] | None = None
    token_masks: tuple[torch.Tensor, ...] | None = None


@dataclass
class LengthAdaptiveSpanOutput(ModelOutput):
    """``start_logits``/``end_logits`` [B, L] over every input position (Drop-and-Restore)."""

    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    token_positions: tuple[torch.Tensor, ...] | None = None
    token_masks: tuple[torch.Tensor, ...] | None = None


@dataclass
class EncoderOutput:
    """What ``LengthAdaptiveModel.encode`` returns.

    ``last_hidden_state`` is [B, L_last, H] over the surviving tokens, or [B, L, H] over
    every input position when ``restore=True``. ``token_positions[i]``/``token_masks[i]``
    [B, L_i] say which input positions leave layer i (mask False: padding slot).
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    token_positions: tuple[torch.Tensor, ...] = field(default_factory=tuple)
    token_masks: tuple[torch.Tensor, ...] = field(default_factory=tuple)


class LengthAdaptiveModel(nn.Module):
    """A transformers BERT-family task model that runs at any per-layer sequence length.

    >>> model = LengthAdaptiveModel.from_pretrained("bert-base-uncased", task_type="span")
    >>> out = model(**batch, length_config=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, ...))
    """

    def __init__(self, backbone: PreTrainedModel, config: LengthAdaptiveConfig):
        super().__init__()
        model_type = backbone.config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model type {model_type!r} is not supported yet; supported: {SUPPORTED_MODEL_TYPES}"
            )
        self.backbone = backbone
        self.config = config
        self.frontier: Frontier | None = None  # set by a search; see set_budget
        base = backbone.base_model
        hf_config = backbone.config
        self.num_heads = hf_config.num_attention_heads
        self.head_size = hf_config.hidden_size // hf_config.num_attention_heads
        self.attention_dropout = hf_config.attention_probs_dropout_prob
        if config.task_type == "classification" and getattr(base, "pooler", None) is None:
            raise ValueError("classification needs the backbone's pooler; this checkpoint has none")

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        task_type: TaskType | None = None,
        num_labels: int | None = None,
        length_mode: LengthMode | None = None,
        max_length: int | None = None,
        **hf_kwargs: Any,
    ) -> LengthAdaptiveModel:
        """Load a latlib folder, a local transformers checkpoint, or a hub name.

        Arguments left as ``None`` come from the folder's ``length_adaptive_config.json``
        when it has one, else from the defaults of ``LengthAdaptiveConfig``.
        """
        name_or_path = resolve_backbone(name_or_path)
        saved = _read_saved_config(name_or_path)
        overrides = {
            "task_type": task_type,
            "length_mode": length_mode,
            "max_length": max_length,
        }
        settings = {**saved, **{k: v for k, v in overrides.items() if v is not None}}
        config = LengthAdaptiveConfig(**settings)
        auto_class = (
            AutoModelForSequenceClassification
            if config.task_type == "classification"
            else AutoModelForQuestionAnswering
        )
        if num_labels is not None:
            hf_kwargs["num_labels"] = num_labels
        backbone = auto_class.from_pretrained(str(name_or_path), **hf_kwargs)
        model = cls(backbone, config)
        frontier_file = Path(name_or_path) / FRONTIER_FILE
        if frontier_file.is_file():
            model.frontier = Frontier.load(frontier_file)
        return model

    @classmethod
    def from_config(
        cls, hf_config: Any, config: LengthAdaptiveConfig | None = None
    ) -> LengthAdaptiveModel:
        """A randomly initialised model (tests, smoke runs) from a transformers config."""
        config = config or LengthAdaptiveConfig()
        auto_class = (
            AutoModelForSequenceClassification
            if config.task_type == "classification"
            else AutoModelForQuestionAnswering
        )
        return cls(auto_class.from_config(hf_config), config)

    def save_pretrained(self, save_directory: str | Path, **hf_kwargs: Any) -> None:
        """Write the backbone as a plain transformers checkpoint plus our config."""
        save_directory = Path(save_directory)
        self.backbone.save_pretrained(save_directory, **hf_kwargs)
        (save_directory / CONFIG_NAME).write_text(
            json.dumps(self.config.to_dict(), indent=2) + "\n"
        )
        frontier = getattr(self, "frontier", None)
        if frontier is not None:
            frontier.save(save_directory / FRONTIER_FILE)

    def set_budget(self, budget: float, paper_style: bool = False) -> FrontierPoint:
        """Run from now on at the most accurate frontier configuration within ``budget``
        (a fraction of the full model's MACs if <= 1, else absolute MACs)."""
        if self.frontier is None:
            raise ValueError(
                "this model has no frontier.json: run the search (notebooks/03_search.py or "
                "`dvc repro`) and save the model with its frontier first"
            )
        if self.frontier.length_mode != self.config.length_mode:
            raise ValueError(
                f"the frontier was searched in {self.frontier.length_mode!r} mode but the model "
                f"runs in {self.config.length_mode!r} mode"
            )
        point = self.frontier.select(budget, paper_style)
        self.config.length_config = tuple(point.length_config)
        return point

    # Properties, not attributes: registering the backbone's modules a second time would
    # put every weight twice in state_dict() and confuse checkpointing.
    @property
    def embeddings(self) -> nn.Module:
        return self.backbone.base_model.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.base_model.encoder.layer

    @property
    def hf_config(self) -> Any:
        return self.backbone.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        length_config: Sequence[float] | None = None,
        layer_keep: Sequence[bool] | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        length_mode: LengthMode | None = None,
        **_unused: Any,
    ) -> LengthAdaptiveClassifierOutput | LengthAdaptiveSpanOutput:
        """Run the task model; ``length_config=None`` uses ``config.length_config``
        (full length when that is None too). ``layer_keep`` is LayerDrop's mask."""
        is_span = self.config.task_type == "span"
        encoded = self.encode(
            input_ids,
            attention_mask,
            token_type_ids,
            length_config=length_config,
            layer_keep=layer_keep,
            restore=is_span,
            output_hidden_states=output_hidden_states,
            length_mode=length_mode,
        )
        trace = {
            "hidden_states": encoded.hidden_states,
            "token_positions": encoded.token_positions if output_hidden_states else None,
            "token_masks": encoded.token_masks if output_hidden_states else None,
        }
        sequence = encoded.last_hidden_state
        if is_span:
            logits = self.backbone.qa_outputs(sequence)  # [B, L, 2]
            start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, -1))
            loss = None
            if start_positions is not None and end_positions is not None:
                # As transformers does: positions past the input are ignored, not an error.
                ignored = start_logits.size(1)
                loss = (
                    F.cross_entropy(
                        start_logits, start_positions.clamp(0, ignored), ignore_index=ignored
                    )
                    + F.cross_entropy(
                        end_logits, end_positions.clamp(0, ignored), ignore_index=ignored
                    )
                ) / 2
            return LengthAdaptiveSpanOutput(
                loss=loss, start_logits=start_logits, end_logits=end_logits, **trace
            )
        pooled = self.backbone.base_model.pooler(sequence)  # reads slot 0, which is [CLS]
        logits = self.backbone.classifier(self.backbone.dropout(pooled))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return LengthAdaptiveClassifierOutput(loss=loss, logits=logits, **trace)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        length_config: Sequence[float] | None = None,
        layer_keep: Sequence[bool] | None = None,
        restore: bool = False,
        output_hidden_states: bool = False,
        length_mode: LengthMode | None = None,
    ) -> EncoderOutput:
        """The encoder alone: embeddings, then every layer with token selection."""
        batch, input_length = input_ids.shape
        mode = length_mode or self.config.length_mode
        if length_config is None:
            length_config = self.config.length_config
        if length_config is not None:
            length_config = validate_length_config(
                length_config, self.num_layers, mode, input_length=input_length
            )
        if layer_keep is not None and len(layer_keep) != self.num_layers:
            raise ValueError(
                f"layer_keep has {len(layer_keep)} entries but the model has {self.num_layers} layers"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()  # [B, L]
        padding = ~mask
        real_lengths = mask.sum(-1)  # [B]
        positions = torch.arange(input_length, device=input_ids.device).expand(batch, -1)

        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # [B, L, H]
        # A dropped token keeps the vector of the last layer that fully processed it; the
        # extra last column is a sink for slots that hold no surviving token.
        restored = (
            torch.cat([hidden, hidden.new_zeros(batch, 1, hidden.size(-1))], 1) if restore else None
        )
        all_hidden = [hidden] if output_hidden_states else None
        token_positions, token_masks = [], []
        for index, layer in enumerate(self.layers):
            if layer_keep is not None and not layer_keep[index]:
                token_positions.append(positions)
                token_masks.append(mask)
                if all_hidden is not None:
                    all_hidden.append(hidden)
                continue
            keep = None if length_config is None else length_config[index]
            keep_counts = self._keep_counts(keep, mode, mask, real_lengths)
            if restore and keep_counts is not None:
                restored.scatter_(1, self._restore_index(positions, mask, padding, hidden), hidden)
            hidden, mask, positions = self._layer_forward(
                layer, hidden, mask, positions, keep_counts
            )
            token_positions.append(positions)
            token_masks.append(mask)
            if all_hidden is not None:
                all_hidden.append(hidden)
        if restore:
            restored.scatter_(1, self._restore_index(positions, mask, padding, hidden), hidden)
            hidden = restored[:, :input_length]
            mask = attention_mask.bool()
        return EncoderOutput(
            last_hidden_state=hidden,
            attention_mask=mask,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            token_positions=tuple(token_positions),
            token_masks=tuple(token_masks),
        )

    # ------------------------------------------------------------------ internals
    def _keep_counts(
        self, keep: float | None, mode: str, mask: torch.Tensor, real_lengths: torch.Tensor
    ) -> torch.Tensor | int | None:
        """Tokens to keep after this layer: an int (absolute), a [B] tensor (ratio), or
        None when the layer keeps everything it was given (then it needs no scores)."""
        if keep is None:
            return None
        current = mask.size(1)
        if mode == "absolute":
            return None if keep >= current else int(keep)
        counts = torch.ceil(real_lengths * keep - 1e-9).clamp(min=1).long()  # ratio_keep_count
        if bool((counts >= mask.sum(-1)).all()):
            return None
        return counts

    def _layer_forward(
        self,
        layer: nn.Module,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        keep_counts: torch.Tensor | int | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, _ = hidden.shape
        self_attention = layer.attention.self
        # [B, L, H] -> [B, h, L, d]
        q, k, v = (
            proj(hidden).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
            for proj in (self_attention.query, self_attention.key, self_attention.value)
        )
        dropout = self.attention_dropout if self.training else 0.0
        all_real = bool(mask.all())
        if keep_counts is None:
            key_mask = None if all_real else mask[:, None, None, :]  # [B, 1, 1, L]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # [B, h, L, L]
            if not all_real:
                scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            # Attention each token receives, over heads and *real* queries only.
            significance = torch.einsum("bhqk,bq->bk", probs, mask.to(probs.dtype))  # [B, L]
            context = F.dropout(probs, dropout, self.training) @ v
        context = context.transpose(1, 2).reshape(batch, length, -1)  # [B, L, H]

        if keep_counts is not None:
            index, mask, positions = self._select(significance, mask, positions, keep_counts)
            context = _gather_rows(context, index)
            hidden = _gather_rows(hidden, index)
        hidden = layer.attention.output(context, hidden)  # out-proj, residual, LayerNorm
        hidden = layer.output(layer.intermediate(hidden), hidden)  # FFN, residual, LayerNorm
        return hidden, mask, positions

    @staticmethod
    def _restore_index(
        positions: torch.Tensor, mask: torch.Tensor, padding: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        """Scatter index [B, k, H] for Drop-and-Restore.

        A masked slot holding a real token (ratio mode: dropped for this example only) goes
        to the sink column so it cannot overwrite that token's restored vector; padding
        positions are written back as computed, as the library's model does.
        """
        to_sink = ~mask & ~padding.gather(1, positions)
        sink = padding.size(1)
        return positions.masked_fill(to_sink, sink)[..., None].expand(-1, -1, like.size(-1))

    def _select(
        self,
        significance: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        keep_counts: torch.Tensor | int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k slots by significance, returned in their original order.

        Padding scores -inf so a real token is never dropped while padding is kept;
        ``[CLS]`` (always slot 0, since order is kept) scores +inf when forced.
        """
        significance = significance.masked_fill(~mask, float("-inf"))
        if self.config.keep_cls:
            significance[:, 0] = float("inf")
        if isinstance(keep_counts, int):
            width = keep_counts
            slot_valid = None
        else:
            width = int(keep_counts.max())
            slot_valid = torch.arange(width, device=mask.device) < keep_counts[:, None]  # [B, k]
        index = significance.topk(width, dim=-1, sorted=slot_valid is not None).indices  # [B, k]
        if slot_valid is not None:
            # Slots beyond an example's own count become padding: push them to the end.
            index = torch.where(slot_valid, index, index + mask.size(1))
        index = index.sort(-1).values
        if slot_valid is not None:
            slot_valid = index < mask.size(1)
            index = index.remainder(mask.size(1))
        new_mask = mask.gather(1, index)
        if slot_valid is not None:
            new_mask = new_mask & slot_valid
        return index, new_mask, positions.gather(1, index)


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, L, H], index [B, k] -> [B, k, H]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.size(-1)))


def _read_saved_config(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path) / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-save the model") from error


def load_hf_config(name_or_path: str | Path, **kwargs: Any) -> Any:
    """The backbone's transformers config alone (for FLOPs without weights)."""
    return AutoConfig.from_pretrained(str(name_or_path), **kwargs)
