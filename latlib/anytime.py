"""Use anytime: the searched frontier saved next to the model, and budget -> configuration.

``frontier.json`` lives in the model folder; ``LengthAdaptiveModel.from_pretrained``
loads it, ``model.set_budget(fraction=0.5)`` picks the most accurate frontier point that
costs at most half the full model (``set_budget(macs=1.2e9)``: at most that many MACs per
example), and ``python -m latlib select --model DIR --budget-fraction 0.5`` (or
``--budget-macs``) prints that choice.

A frontier holds only for the weights it was searched on, and its scores are what the
search measured: the file records a fingerprint of those weights (``weights_sha256``,
:func:`weights_digest`, the one search stores are keyed by) and a digest of its whole
content (``content_sha256``). ``Frontier.load`` refuses a file whose content does not
match its digest; given the model (as ``from_pretrained`` does) it also refuses a
frontier of other weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FRONTIER_FILE = "frontier.json"
# Version 2 added weights_sha256 and content_sha256; a version 1 file (no digest) is
# refused like an edited one: the search writes it again.
FRONTIER_VERSION = 2
DIGEST_KEY = "content_sha256"


class FrontierIntegrityError(ValueError):
    """A frontier file that cannot be trusted: edited or damaged after the search wrote
    it, written without a digest, or beside weights it was not searched on."""


def weights_digest(model: Any) -> str:
    """A short hash of a model's weights (its state dict, in name order): what a search
    store and a frontier are bound to, so neither is reused for other weights."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the same bits
            tensor = tensor.view(torch.int16)
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def content_digest(payload: dict[str, Any]) -> str:
    """sha256 of a frontier file's fields (all but the digest) in canonical JSON. It
    catches edits and damage, not forgery: there is no secret key."""
    fields = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# A budget's units and what each means. A later unit (say latency_ms) joins here and in
# Budget.limit.
BUDGET_UNITS: dict[str, str] = {
    "fraction": "a fraction of the full model's MACs, in (0, 1]",
    "macs": "MACs per example, > 0",
}


@dataclass(frozen=True)
class Budget:
    """A compute budget in one explicit unit (a key of ``BUDGET_UNITS``), checked."""

    unit: str
    value: float

    def __post_init__(self) -> None:
        problem = budget_problem(self.unit, self.value)
        if problem:
            raise ValueError(problem)

    @classmethod
    def of(
        cls,
        fraction: float | None = None,
        macs: float | None = None,
        names: dict[str, str] | None = None,
    ) -> Budget:
        """The one budget given. ``names`` are the arguments' names for the messages
        (the command line's ``--budget-fraction``); by default the units'."""
        names = {unit: unit for unit in BUDGET_UNITS} | (names or {})
        given = {u: v for u, v in (("fraction", fraction), ("macs", macs)) if v is not None}
        if len(given) != 1:
            options = " or ".join(f"{names[u]} ({text})" for u, text in BUDGET_UNITS.items())
            got = f"both {' and '.join(names[u] for u in given)}" if given else "neither"
            raise ValueError(f"give exactly one budget, {options}; got {got}")
        ((unit, value),) = given.items()
        problem = budget_problem(unit, value, names)
        if problem:
            raise ValueError(problem)
        return cls(unit, float(value))

    def limit(self, full_macs: float) -> float:
        """The budget in MACs, given the full model's."""
        return self.value * full_macs if self.unit == "fraction" else self.value

    def __str__(self) -> str:
        return (
            f"{self.value:g} of the full model"
            if self.unit == "fraction"
            else f"{self.value:.4g} MACs"
        )


def budget_problem(unit: str, value: Any, names: dict[str, str] | None = None) -> str | None:
    """What is wrong with ``value`` as a budget in ``unit``, or None; ``names``: how the
    messages call each unit's argument."""
    names = {u: u for u in BUDGET_UNITS} | (names or {})
    if unit not in BUDGET_UNITS:
        return f"unknown budget unit {unit!r}; known: {list(BUDGET_UNITS)}"
    name = names[unit]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{name} must be a number, got {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"{name} must be a finite number > 0, got {value!r}"
    if unit == "fraction" and value > 1:
        return (
            f"{name} must be in (0, 1] ({BUDGET_UNITS['fraction']}), got {value:g}; "
            f"for an absolute budget give {names['macs']} instead"
        )
    return None


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
    # The weights the points were measured on (``weights_digest``); None for a frontier
    # bound to no model (made by hand), which no model loads.
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a frontier needs at least one point")
        self.points = sorted(self.points, key=lambda p: (p.macs, -p.score))

    def save(self, path: str | Path) -> None:
        """Write the file with its content digest (``Frontier.load`` checks it)."""
        payload = json.loads(json.dumps({"version": FRONTIER_VERSION, **asdict(self)}))
        payload[DIGEST_KEY] = content_digest(payload)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, model: Any | None = None) -> Frontier:
        """Read a frontier file and check its content digest; given ``model``, also check
        that the frontier was searched on these weights. ``FrontierIntegrityError`` says
        what does not match and how to write the file again."""
        path = Path(path)
        payload = _read_payload(path)
        _verify_content(path, payload)
        try:
            payload.pop("version")
            payload.pop(DIGEST_KEY)
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
            frontier = cls(**payload)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a latlib frontier file ({error}); run the search again"
            ) from error
        if model is not None:
            frontier.check_weights(model, path)
        return frontier

    def check_weights(self, model: Any, path: str | Path = FRONTIER_FILE) -> None:
        """Refuse (``FrontierIntegrityError``) unless this frontier was searched on
        ``model``'s weights: its scores and costs say nothing about other weights."""
        if self.weights_sha256 is None:
            raise FrontierIntegrityError(
                f"{path} does not name the weights it was searched on (no weights_sha256), "
                f"so it cannot be trusted for this model. {self._rerun_hint()}"
            )
        loaded = weights_digest(model)
        if loaded != self.weights_sha256:
            raise FrontierIntegrityError(
                f"{path} was searched on other weights: it records weights_sha256 "
                f"{self.weights_sha256}, the weights being loaded are {loaded}. A frontier "
                "copied beside another model (or a model changed, or loaded in another "
                "dtype, after its search) would pick configurations by scores these weights "
                f"never had. {self._rerun_hint()}"
            )

    def _rerun_hint(self) -> str:
        return rerun_hint(self.metadata.get("search", {}).get("task"))

    def cost(self, point: FrontierPoint, paper_style: bool = False) -> float:
        return point.paper_macs if paper_style else point.macs

    def select(
        self,
        fraction: float | None = None,
        *,
        macs: float | None = None,
        paper_style: bool = False,
    ) -> FrontierPoint:
        """The most accurate point (search score, then cheaper) whose cost fits the budget:
        a ``fraction`` of the full model's MACs in (0, 1], or absolute ``macs``; give one.
        A budget below the cheapest point raises ``ValueError`` naming that point."""
        return self.within(Budget.of(fraction=fraction, macs=macs), paper_style)

    def within(self, budget: Budget, paper_style: bool = False) -> FrontierPoint:
        """``select`` for a ``Budget`` already made (the command line makes its own)."""
        full = self.full_paper_macs if paper_style else self.full_macs
        limit = budget.limit(full)
        affordable = [p for p in self.points if self.cost(p, paper_style) <= limit * (1 + 1e-9)]
        if not affordable:
            cheapest = min(self.points, key=lambda p: self.cost(p, paper_style))
            cost = self.cost(cheapest, paper_style)
            in_macs = "" if budget.unit == "macs" else f" ({limit:.4g} MACs)"
            raise ValueError(
                f"budget {budget}{in_macs} is below the cheapest frontier point: "
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


def rerun_hint(task: str | None) -> str:
    """How to write a task's frontier again."""
    task = task or "<task>"
    return (
        f"Run the search again to write it: `python -m latlib stage search --task {task}` "
        f"(or `dvc repro search@{task}`)"
    )


def _read_payload(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a latlib frontier file ({error}); run the search again"
        ) from error
    if not isinstance(payload, dict) or "version" not in payload or "points" not in payload:
        raise ValueError(
            f"{path} is not a latlib frontier file (no version or points); run the search again"
        )
    return payload


def _verify_content(path: Path, payload: dict[str, Any]) -> None:
    """Refuse a file whose content its digest does not vouch for."""
    metadata = payload.get("metadata")
    search = metadata.get("search") if isinstance(metadata, dict) else None
    hint = rerun_hint(search.get("task") if isinstance(search, dict) else None)
    version = payload.get("version")
    if version != FRONTIER_VERSION:
        raise FrontierIntegrityError(
            f"{path} is a frontier file of version {version!r}, not {FRONTIER_VERSION}: "
            f"older files carry no digest, so their scores cannot be verified. {hint}"
        )
    stored = payload.get(DIGEST_KEY)
    if stored is None:
        raise FrontierIntegrityError(
            f"{path} has no {DIGEST_KEY}: its scores cannot be verified. {hint}"
        )
    if stored != content_digest(payload):
        raise FrontierIntegrityError(
            f"{path}: its content does not match its {DIGEST_KEY}; the file was edited or "
            f"damaged after the search wrote it, so its scores cannot be trusted. {hint}"
        )


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
