"""Shared fixtures: small random BERTs, the embedded backbone, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data: $LATLIB_DATA_DIR, else ../shared/data beside the repository."""
    path = Path(os.environ.get("LATLIB_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"no data folder at {path}: set LATLIB_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    from latlib import embedded_backbone_path

    return embedded_backbone_path()


def tiny_bert_config(num_layers: int = 4, num_labels: int = 3, **overrides):
    """A random BERT small enough for exhaustive checks."""
    from transformers import BertConfig

    settings = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    settings.update(overrides)
    return BertConfig(**settings)


FAMILIES = ("bert", "roberta", "distilbert")


def tiny_config(family: str = "bert", num_layers: int = 4, num_labels: int = 3, **overrides):
    """A random model of another supported family with the same sizes as tiny_bert_config."""
    if family == "bert":
        return tiny_bert_config(num_layers, num_labels, **overrides)
    if family == "roberta":
        from transformers import RobertaConfig

        settings = tiny_bert_config(num_layers, num_labels).to_dict()
        settings.pop("model_type", None)
        settings.update(pad_token_id=1, **overrides)
        return RobertaConfig(**settings)
    if family == "distilbert":
        from transformers import DistilBertConfig

        settings = dict(
            vocab_size=120,
            dim=32,
            n_layers=num_layers,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=64,
            num_labels=num_labels,
            dropout=0.1,
            attention_dropout=0.1,
        )
        settings.update(overrides)
        return DistilBertConfig(**settings)
    raise ValueError(f"unknown family {family!r}")


def random_batch(batch: int, lengths: list[int], vocab: int = 120, seed: int = 0):
    """input_ids/attention_mask/token_type_ids, right-padded to max(lengths), [CLS]=101 % vocab."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, vocab, (batch, width), generator=generator)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = ids * mask  # pad id 0
    ids[:, 0] = 2  # a fixed [CLS]-like first token
    types = torch.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
