"""Use anytime: the searched frontier saved next to the model, and budget -> configuration.

``frontier.json`` lives in the model folder; ``LengthAdaptiveModel.from_pretrained``
loads it, ``model.set_budget(0.5)`` picks the most accurate frontier point that costs at
most half the full model, and ``python -m latlib select --model DIR --budget 0.5``
prints that choice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FRONTIER_FILE = "frontier.json"
FRONTIER_VERSION = 1


@dataclass(frozen=True)
class FrontierPoint:
    """One searched configuration.

    ``macs``: mean MACs per example on real tokens of the search data; ``paper_macs``:
    the paper's one unpadded input of ``max_length``; ``score``: the search split's
    metric (what the search optimised and what selection uses); ``dev_score``: the same
    configuration re-evaluated on the dev set (what is reported).
    """

    length_config: tuple[float, ...]
    grid_config: tuple[int, ...]
    macs: float
    paper_macs: float
    score: float
    dev_score: float | None = None


@dataclass
class Frontier:
    """A Pareto frontier of length configurations for one model, cheapest first."""

    points: list[FrontierPoint]
    metric: str
    length_mode: str
    max_length: int
    full_macs: float
    full_paper_macs: float
    full_score: float | None = None
    full_dev_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a frontier needs at least one point")
        self.points = sorted(self.points, key=lambda p: (p.macs, -p.score))

    def save(self, path: str | Path) -> None:
        payload = {"version": FRONTIER_VERSION, **asdict(self)}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Frontier:
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
            if payload.pop("version") != FRONTIER_VERSION:
                raise ValueError("unknown version")
            payload["points"] = [
                FrontierPoint(
                    **{
                        **p,
                        "length_config": tuple(p["length_config"]),
                        "grid_config": tuple(p["grid_config"]),
                    }
                )
                for p in payload["points"]
            ]
            return cls(**payload)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a latlib frontier file ({error}); run the search again"
            ) from error

    def cost(self, point: FrontierPoint, paper_style: bool = False) -> float:
        return point.paper_macs if paper_style else point.macs

    def select(self, budget: float, paper_style: bool = False) -> FrontierPoint:
        """The most accurate point (search score, then cheaper) whose cost fits ``budget``.

        ``budget`` <= 1 is a fraction of the full model's MACs; larger is absolute MACs.
        A budget below the cheapest point raises ``ValueError`` naming that point.
        """
        if budget <= 0:
            raise ValueError(f"budget must be positive, got {budget}")
        full = self.full_paper_macs if paper_style else self.full_macs
        limit = budget * full if budget <= 1 else budget
        affordable = [p for p in self.points if self.cost(p, paper_style) <= limit * (1 + 1e-9)]
        if not affordable:
            cheapest = min(self.points, key=lambda p: self.cost(p, paper_style))
            cost = self.cost(cheapest, paper_style)
            raise ValueError(
                f"budget {budget:g} ({limit:.4g} MACs) is below the cheapest frontier point: "
                f"{cheapest.length_config} at {cost:.4g} MACs ({cost / full:.3f} of the full model, "
                f"{self.metric} {cheapest.score:.2f}); ask for at least that"
            )
        return max(affordable, key=lambda p: (p.score, -self.cost(p, paper_style)))

    def describe(self, point: FrontierPoint) -> dict[str, Any]:
        """A point as a flat, printable record (costs also as fractions of the full model)."""
        return {
            "length_config": list(point.length_config),
            "length_mode": self.length_mode,
            "macs": point.macs,
            "macs_fraction": point.macs / self.full_macs,
            "speedup_flops": self.full_macs / point.macs,
            "paper_macs": point.paper_macs,
            "paper_macs_fraction": point.paper_macs / self.full_paper_macs,
            f"search_{self.metric}": point.score,
            f"dev_{self.metric}": point.dev_score,
        }


def surviving_tokens(
    model: Any, tokenizer: Any, text: str, text_pair: str | None = None
) -> tuple[list[str], list[list[int]]]:
    """The tokens of one input and, per layer, the positions that leave it, at the
    model's current length configuration (``set_budget`` sets it)."""
    import torch

    inputs = tokenizer(
        text, text_pair, truncation=True, max_length=model.config.max_length, return_tensors="pt"
    )
    with torch.no_grad():
        encoded = model.encode(**inputs)
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    kept = [
        positions[0][mask[0]].tolist()
        for positions, mask in zip(encoded.token_positions, encoded.token_masks, strict=True)
    ]
    return tokens, kept
