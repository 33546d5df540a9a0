"""The length-adaptive encoder, over the transformers library's own modules.

``LengthAdaptiveModel`` holds an ordinary transformers task model (``backbone``, e.g. a
``BertForSequenceClassification``) and runs its embeddings, layers and head itself so
that tokens can be dropped between the attention and the feed-forward sub-layer of any
layer (PoWER-BERT's significance, Kim & Cho's LengthDrop). No modeling file is forked:
each layer is driven through its public sub-modules, which a small ``Layout`` per model
family names (``layouts.py``), so any BERT, RoBERTa or DistilBERT checkpoint loads and
the saved folder stays a plain transformers checkpoint. Which tokens survive a layer,
and how span tasks get them back, is ``selection.py``.

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

from .anytime import FRONTIER_FILE, Budget, Frontier, FrontierPoint
from .backbones import backbone_load_error, resolve_backbone
from .layouts import LAYOUTS, SUPPORTED_MODEL_TYPES
from .lengths import LENGTH_MODES, LengthMode, validate_length_config
from .selection import (
    attention_and_significance,
    counts_argument,
    gather_rows,
    keep_counts,
    restore_index,
    select_tokens,
    unrestored,
)

CONFIG_NAME = "length_adaptive_config.json"
TaskType = Literal["classification", "span"]
TASK_TYPES: tuple[str, ...] = ("classification", "span")


@dataclass
class LengthAdaptiveConfig:
    """What the wrapper adds to the backbone's own ``config.json``.

    ``max_length`` is the nominal sequence length of the task (the paper's
    ``max_seq_length``): the unit of the search grid and of paper-style FLOPs.
    ``keep_cls`` forces ``[CLS]`` to survive every layer; classification needs it (the
    pooler reads position 0). ``drop_and_restore`` (span extraction): dropped tokens come
    back at their positions after the last layer, so any position can be an answer; off,
    a dropped position cannot be one (its logits are the lowest value), as in PoWER-BERT.
    """

    task_type: TaskType = "classification"
    length_mode: LengthMode = "ratio"
    max_length: int = 128
    keep_cls: bool = True
    length_config: tuple | None = None  # used when forward() is given none (set_budget sets it)
    drop_and_restore: bool = True

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


@dataclass
class EncoderState:
    """The encoder between two layers (``start`` -> ``step`` ... -> ``finish``).

    ``hidden`` [B, l, H], ``mask``/``positions`` [B, l] for the l slots alive now;
    ``input_mask`` [B, L] is the input's attention mask; ``restored`` [B, L + 1, H] holds
    the last vector of every input position (Drop-and-Restore), or None.
    ``real_lengths``/``alive`` count each example's real tokens in the input and now, as
    Python ints: a layer's token counts come from them without a tensor operation.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    input_mask: torch.Tensor
    restored: torch.Tensor | None
    real_lengths: tuple[int, ...]
    alive: tuple[int, ...]


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
        self.layout = LAYOUTS[model_type]
        hf_config = backbone.config
        self.num_heads = hf_config.num_attention_heads
        self.head_size = hf_config.hidden_size // hf_config.num_attention_heads
        self.attention_dropout = self.layout.attention_dropout(hf_config)
        if config.task_type == "classification":
            self.layout.check_classification(backbone)

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
        try:
            backbone = auto_class.from_pretrained(str(name_or_path), **hf_kwargs)
        except OSError as error:  # the hub's own message names neither folder nor embedded
            raise OSError(backbone_load_error(name_or_path, error)) from error
        model = cls(backbone, config)
        frontier_file = Path(name_or_path) / FRONTIER_FILE
        if frontier_file.is_file():
            # Checked against these weights: a frontier copied beside another model
            # would pick configurations by scores this model never had.
            model.frontier = Frontier.load(frontier_file, model=model)
        return model.eval()  # as transformers does; call .train() to fine-tune

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

    def set_budget(
        self,
        fraction: float | None = None,
        *,
        macs: float | None = None,
        paper_style: bool = False,
    ) -> FrontierPoint:
        """Run from now on at the most accurate frontier configuration within the budget:
        a ``fraction`` of the full model's MACs in (0, 1] (``set_budget(0.6)``), or
        absolute ``macs`` per example (``set_budget(macs=1.2e9)``); give one."""
        budget = Budget.of(fraction=fraction, macs=macs)  # a bad budget fails first
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
        point = self.frontier.within(budget, paper_style)
        self.config.length_config = tuple(point.length_config)
        return point

    def train(self, mode: bool = True) -> LengthAdaptiveModel:
        """As ``nn.Module.train``; also lays the linear weights out for the mode
        (``set_linear_layout``: the inference layout is faster on short sequences)."""
        super().train(mode)
        set_linear_layout(self.backbone, inference=not mode)
        return self

    # Properties, not attributes: registering the backbone's modules a second time would
    # put every weight twice in state_dict() and confuse checkpointing.
    @property
    def layers(self) -> nn.ModuleList:
        return self.layout.layers(self.backbone.base_model)

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
        span = self.config.task_type == "span"
        encoded = self.encode(
            input_ids,
            attention_mask,
            token_type_ids,
            length_config=length_config,
            layer_keep=layer_keep,
            restore=span and self.config.drop_and_restore,
            output_hidden_states=output_hidden_states,
            length_mode=length_mode,
        )
        output = self.output(
            encoded.last_hidden_state,
            encoded.token_positions[-1],
            encoded.token_masks[-1],
            input_ids.size(1),
            labels,
            start_positions,
            end_positions,
        )
        if output_hidden_states:
            output.hidden_states = encoded.hidden_states
            output.token_positions = encoded.token_positions
            output.token_masks = encoded.token_masks
        return output

    def output(
        self,
        last_hidden: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        input_length: int,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> LengthAdaptiveClassifierOutput | LengthAdaptiveSpanOutput:
        """The task head on what the encoder's last layer returned: ``last_hidden`` is
        [B, L, H] for span tasks with Drop-and-Restore, else the survivors [B, l, H] at
        input ``positions`` [B, l], live where ``mask``."""
        dropped = None
        if self.config.task_type == "span" and not self.config.drop_and_restore:
            # Each survivor goes back to its input position, and every dropped position
            # (and padding) gets the lowest logit, so it is never chosen.
            last_hidden, dropped = unrestored(last_hidden, positions, mask, input_length)
        return self.head(last_hidden, labels, start_positions, end_positions, dropped)

    def head(
        self,
        sequence: torch.Tensor,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> LengthAdaptiveClassifierOutput | LengthAdaptiveSpanOutput:
        """The task head on the encoder's last hidden state (restored, for span tasks;
        ``dropped`` [B, L] marks positions that cannot be answers)."""
        if self.config.task_type == "span":
            logits = self.layout.span(self.backbone, sequence)  # [B, L, 2]
            if dropped is not None:
                logits = logits.masked_fill(dropped[..., None], torch.finfo(logits.dtype).min)
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
                loss=loss, start_logits=start_logits, end_logits=end_logits
            )
        logits = self.layout.classify(self.backbone, sequence)  # [B, num_labels]
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return LengthAdaptiveClassifierOutput(loss=loss, logits=logits)

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
        """The encoder alone: embeddings, then every layer with token selection (forward's
        first step, so an empty input fails here, before any layer)."""
        check_input_shape(input_ids)
        mode = length_mode or self.config.length_mode
        length_config = self.resolve_length_config(length_config, mode, input_ids.size(1))
        if layer_keep is not None and len(layer_keep) != self.num_layers:
            raise ValueError(
                f"layer_keep has {len(layer_keep)} entries but the model has {self.num_layers} layers"
            )
        state = self.start(input_ids, attention_mask, token_type_ids, restore)
        all_hidden = [state.hidden] if output_hidden_states else None
        token_positions, token_masks = [], []
        for index in range(self.num_layers):
            if layer_keep is None or layer_keep[index]:
                keep = None if length_config is None else length_config[index]
                state = self.step(index, state, keep, mode)
            token_positions.append(state.positions)
            token_masks.append(state.mask)
            if all_hidden is not None:
                all_hidden.append(state.hidden)
        hidden, mask = self.finish(state)
        return EncoderOutput(
            last_hidden_state=hidden,
            attention_mask=mask,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            token_positions=tuple(token_positions),
            token_masks=tuple(token_masks),
        )

    def resolve_length_config(
        self, length_config: Sequence[float] | None, mode: LengthMode, input_length: int
    ) -> tuple | None:
        """The configuration a forward pass runs: the given one, else ``config.length_config``
        (None: full length), checked against this model and input."""
        if length_config is None:
            length_config = self.config.length_config
        if length_config is None:
            return None
        return validate_length_config(
            length_config, self.num_layers, mode, input_length=input_length
        )

    # The encoder in three steps, so that a caller can stop after any layer and go on
    # later from the saved state (``prefix_cache`` shares layers between configurations).
    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        restore: bool = False,
    ) -> EncoderState:
        """The embeddings, as the state before the first layer."""
        batch, input_length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()  # [B, L]
        hidden = self.layout.embed(self.backbone.base_model, input_ids, token_type_ids)  # [B, L, H]
        # A dropped token keeps the vector of the last layer that fully processed it; the
        # extra last column is a sink for slots that hold no surviving token.
        restored = (
            torch.cat([hidden, hidden.new_zeros(batch, 1, hidden.size(-1))], 1) if restore else None
        )
        positions = torch.arange(input_length, device=input_ids.device).expand(batch, -1)
        real_lengths = tuple(mask.sum(-1).tolist())
        return EncoderState(hidden, mask, positions, mask, restored, real_lengths, real_lengths)

    def step(
        self, index: int, state: EncoderState, keep: float | None, mode: LengthMode
    ) -> EncoderState:
        """Layer ``index`` keeping ``keep`` (a ratio or a token count; None: every token)."""
        width = state.mask.size(1)
        counts = keep_counts(keep, mode, state.real_lengths, state.alive, width)
        restored = state.restored  # updated in place: a caller keeping a state copies it
        if restored is not None and counts is not None:
            restored.scatter_(1, _restore_index(state), state.hidden)
        selection = (
            None
            if counts is None
            else counts_argument(counts, mode, state.alive, width, state.mask.device)
        )
        all_real = min(state.alive) == width  # no padding slot in the batch
        hidden, mask, positions = self._layer_forward(
            self.layers[index], state.hidden, state.mask, state.positions, selection, all_real
        )
        alive = (
            state.alive
            if counts is None
            else tuple(min(count, now) for count, now in zip(counts, state.alive, strict=True))
        )
        return EncoderState(
            hidden, mask, positions, state.input_mask, restored, state.real_lengths, alive
        )

    def finish(self, state: EncoderState) -> tuple[torch.Tensor, torch.Tensor]:
        """The last hidden state and its mask: survivors only, or every input position
        (dropped ones restored) for span tasks."""
        if state.restored is None:
            return state.hidden, state.mask
        state.restored.scatter_(1, _restore_index(state), state.hidden)
        return state.restored[:, : state.input_mask.size(1)], state.input_mask

    def _layer_forward(
        self,
        layer: nn.Module,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        selection: torch.Tensor | int | None,
        all_real: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, _ = hidden.shape
        # [B, L, H] -> [B, h, L, d]
        q, k, v = (
            proj(hidden).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
            for proj in self.layout.qkv(layer)
        )
        dropout = self.attention_dropout if self.training else 0.0
        if selection is None:
            key_mask = None if all_real else mask[:, None, None, :]  # [B, 1, 1, L]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)
        else:
            context, significance = attention_and_significance(
                q, k, v, mask, all_real, dropout, self.training
            )
        context = context.transpose(1, 2).reshape(batch, length, -1)  # [B, L, H]

        if selection is not None:
            index, mask, positions = select_tokens(
                significance, mask, positions, selection, all_real, self.config.keep_cls
            )
            context = gather_rows(context, index)
            hidden = gather_rows(hidden, index)
        hidden = self.layout.attention_output(layer, context, hidden)  # out-proj, residual, LN
        hidden = self.layout.feed_forward(layer, hidden)  # FFN, residual, LayerNorm
        return hidden, mask, positions


def set_linear_layout(module: nn.Module, inference: bool) -> None:
    """Store every ``nn.Linear`` weight [out, in] of ``module`` as the transpose of a
    contiguous [in, out] tensor (``inference``), or contiguous again (training).

    ``F.linear`` computes ``x @ W.t()``. With ``W.t()`` contiguous, MKL's sgemm runs the
    few-row products of a short sequence much faster: on these CPUs, 11 rows x 384 ->
    1536 take 133 us instead of 228 us, 20 rows 178 us instead of 243 us, and from
    about 64 rows on both layouts are equal. Without it a layer's time barely falls with
    the tokens it keeps at batch size 1, the case LAT is for. Only strides change: the
    values, ``state_dict()`` and saved checkpoints are the same.
    """
    # torch has no switch for this; the layout is the one lever, so it is done here.
    with torch.no_grad(), torch.inference_mode(False):
        for layer in module.modules():
            if not isinstance(layer, nn.Linear) or min(layer.weight.shape) == 1:
                continue
            weight = layer.weight
            if inference and weight.is_contiguous():
                weight.data = weight.data.t().contiguous().t()
            elif not inference and not weight.is_contiguous():
                weight.data = weight.data.contiguous()


def _restore_index(state: EncoderState) -> torch.Tensor:
    return restore_index(state.input_mask, state.mask, state.positions, state.hidden.size(-1))


def check_input_shape(input_ids: torch.Tensor) -> None:
    """Refuse inputs with no examples or no tokens: token selection needs at least one."""
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}; "
            "add a batch dimension with input_ids[None]"
        )
    batch, tokens = input_ids.shape
    if batch == 0 or tokens == 0:
        empty = "examples" if batch == 0 else "tokens"
        raise ValueError(
            f"input_ids has no {empty}: shape {tuple(input_ids.shape)}; give at least one "
            "example of at least one token"
        )


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
