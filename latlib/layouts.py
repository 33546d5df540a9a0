"""Where each model family keeps the modules the length-adaptive encoder drives.

``LengthAdaptiveModel`` never forks a modeling file: it runs the library's own
embeddings, attention projections, output sub-layers and heads one by one, and a
``Layout`` names them per family (BERT: ``attention.self.query`` ..., ``attention.output``,
``intermediate``, ``output``; DistilBERT: ``attention.q_lin`` ..., ``sa_layer_norm``,
``ffn``). A new BERT-style family is one subclass here and one entry in ``LAYOUTS``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel


class Layout:
    """Where a BERT-style model family keeps the parts the wrapper drives (BERT here).

    Every method takes the library's own modules; none re-implements one. A family whose
    modules are named or wired differently overrides the methods that differ.
    """

    def layers(self, base: nn.Module) -> nn.ModuleList:
        return base.encoder.layer

    def embed(
        self, base: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # [B, L, H]

    def qkv(self, layer: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        attention = layer.attention.self
        return attention.query, attention.key, attention.value

    def attention_output(
        self, layer: nn.Module, context: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """Out-projection, residual and LayerNorm."""
        return layer.attention.output(context, hidden)

    def feed_forward(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """FFN, residual and LayerNorm."""
        return layer.output(layer.intermediate(hidden), hidden)

    def attention_dropout(self, hf_config: Any) -> float:
        return hf_config.attention_probs_dropout_prob

    def check_classification(self, backbone: PreTrainedModel) -> None:
        if getattr(backbone.base_model, "pooler", None) is None:
            raise ValueError("classification needs the backbone's pooler; this checkpoint has none")

    def classify(self, backbone: PreTrainedModel, sequence: torch.Tensor) -> torch.Tensor:
        pooled = backbone.base_model.pooler(sequence)  # reads slot 0, which is [CLS]
        return backbone.classifier(backbone.dropout(pooled))  # [B, num_labels]

    def span(self, backbone: PreTrainedModel, sequence: torch.Tensor) -> torch.Tensor:
        return backbone.qa_outputs(sequence)  # [B, L, 2]


class RobertaLayout(Layout):
    """RoBERTa: BERT's layers; its classification head reads ``<s>`` itself, no pooler."""

    def check_classification(self, backbone: PreTrainedModel) -> None:
        pass

    def classify(self, backbone: PreTrainedModel, sequence: torch.Tensor) -> torch.Tensor:
        return backbone.classifier(sequence[:, :1])  # the head reads slot 0


class DistilBertLayout(Layout):
    """DistilBERT: no token types, the out-projection inside the attention module,
    ``[CLS]`` -> ``pre_classifier`` -> ReLU for classification, dropout before the span head."""

    def layers(self, base: nn.Module) -> nn.ModuleList:
        return base.transformer.layer

    def embed(
        self, base: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return base.embeddings(input_ids)  # [B, L, H]; DistilBERT has no segment embeddings

    def qkv(self, layer: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        return layer.attention.q_lin, layer.attention.k_lin, layer.attention.v_lin

    def attention_output(
        self, layer: nn.Module, context: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        return layer.sa_layer_norm(layer.attention.out_lin(context) + hidden)

    def feed_forward(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return layer.output_layer_norm(layer.ffn(hidden) + hidden)

    def attention_dropout(self, hf_config: Any) -> float:
        return hf_config.attention_dropout

    def check_classification(self, backbone: PreTrainedModel) -> None:
        pass

    def classify(self, backbone: PreTrainedModel, sequence: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(backbone.pre_classifier(sequence[:, 0]))  # [B, H]
        return backbone.classifier(backbone.dropout(pooled))

    def span(self, backbone: PreTrainedModel, sequence: torch.Tensor) -> torch.Tensor:
        return backbone.qa_outputs(backbone.dropout(sequence))


LAYOUTS: dict[str, Layout] = {
    "bert": Layout(),
    "roberta": RobertaLayout(),
    "distilbert": DistilBertLayout(),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(LAYOUTS)
