"""The pipeline's parameters (``params.yaml``): one section per stage, read per task.

Each stage section holds the values for every task, plus an optional ``overrides``
mapping with per-task exceptions (``finetune.overrides.squad.learning_rate``). Unknown
keys and wrongly typed values are refused here, before any data is loaded or a model is
trained, with the key's full name in the message.

The run folders of training and search (``runs/<task>/...``) are keyed by a digest of
everything that determines their result, so a killed stage resumes its own checkpoints
and a changed parameter never resumes someone else's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..data import TASKS
from ..lengthdrop import LengthDropConfig
from ..train import TrainConfig

STAGES = ("model", "data", "finetune", "lengthdrop", "search", "evaluate")

# Every key a stage section may hold, with its type (float accepts ints too; None is
# allowed where the default is None).
_TRAIN_KEYS: dict[str, type | tuple[type, ...]] = {
    "learning_rate": float,
    "num_epochs": float,
    "max_steps": (int, type(None)),
    "batch_size": int,
    "gradient_accumulation_steps": int,
    "warmup_ratio": float,
    "weight_decay": float,
    "max_grad_norm": float,
    "seed": int,
    "checkpoint_every": int,
    "eval_batch_size": int,
}
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "model": {"backbone": str, "length_mode": str},
    "data": {
        "data_dir": (str, type(None)),
        "seed": int,
        "search_on": str,
        "max_length": int,
        "doc_stride": int,
        "train_size": (int, type(None)),
        "search_size": (int, float),
        "dev_size": (int, type(None)),
        "bad_rows": str,
    },
    "finetune": dict(_TRAIN_KEYS),
    "lengthdrop": {
        **_TRAIN_KEYS,
        "num_sandwich": int,
        "length_drop_ratio_bound": float,
        "layer_dropout_prob": float,
        "use_smallest": bool,
        "inplace_distillation": bool,
        "kl_direction": str,
        "layer_drop_full": bool,
    },
    "search": {
        "population_size": int,
        "mutation_size": int,
        "crossover_size": int,
        "mutation_prob": float,
        "iterations": int,
        "seed": int,
        "constant_rates": list,
        "random_search": bool,
        "eval_batch_size": int,
        "cache_mb": int,
    },
    "evaluate": {"tolerance": float, "table_dev_size": (int, type(None))},
}


@dataclass
class TaskParams:
    """The parameters of every stage for one task, overrides applied."""

    task: str
    profile: str
    model: dict[str, Any]
    data: dict[str, Any]
    finetune: dict[str, Any]
    lengthdrop: dict[str, Any]
    search: dict[str, Any]
    evaluate: dict[str, Any]

    def train_config(self, stage: str, output_dir: str | Path, progress: bool = False):
        """``TrainConfig`` of ``"finetune"`` or ``"lengthdrop"`` (with its LengthDrop part)."""
        section = getattr(self, stage)
        names = {f.name for f in fields(TrainConfig)}
        length_drop = None
        if stage == "lengthdrop":
            drop_names = {f.name for f in fields(LengthDropConfig)}
            length_drop = LengthDropConfig(**{k: v for k, v in section.items() if k in drop_names})
        return TrainConfig(
            output_dir=output_dir,
            progress=progress,
            length_drop=length_drop,
            **{k: v for k, v in section.items() if k in names},
        )

    def data_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``experiment.prepare_task_data``."""
        return dict(self.data)

    def digest(self, *stages: str, extra: Any = None) -> str:
        """A short hash of the named sections (and ``extra``), for run folder names."""
        payload = {stage: getattr(self, stage) for stage in stages}
        payload["task"], payload["extra"] = self.task, extra
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and check a params file (every section, every task's overrides)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; copy one of profiles/*.yaml there (make profile-default)"
        )
    params = yaml.safe_load(path.read_text()) or {}
    check_params(params, source=str(path))
    return params


def check_params(params: dict[str, Any], source: str = "params") -> None:
    """Raise ``ValueError`` naming the first unknown, missing or mistyped key."""
    tasks = params.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{source}: 'tasks' must be a non-empty list, e.g. [sst2]")
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"{source}: unknown task {task!r} in 'tasks'; known: {sorted(TASKS)}")
    for stage in STAGES:
        section = params.get(stage)
        if not isinstance(section, dict):
            raise ValueError(f"{source}: the section {stage!r} is missing")
        overrides = section.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{source}: {stage}.overrides must map a task to its values")
        _check_section(stage, {k: v for k, v in section.items() if k != "overrides"}, source)
        missing = set(SCHEMA[stage]) - set(section)
        if missing:
            raise ValueError(f"{source}: {stage} lacks {sorted(missing)}")
        for task, values in overrides.items():
            if task not in TASKS:
                raise ValueError(f"{source}: {stage}.overrides names unknown task {task!r}")
            if not isinstance(values, dict):
                raise ValueError(f"{source}: {stage}.overrides.{task} must be a mapping")
            _check_section(f"{stage}.overrides.{task}", values, source, schema=SCHEMA[stage])
    for task in tasks:
        task_params(params, task)  # value checks that need the merged section


def _check_section(
    name: str, section: dict[str, Any], source: str, schema: dict | None = None
) -> None:
    schema = schema if schema is not None else SCHEMA[name]
    for key, value in section.items():
        if key not in schema:
            raise ValueError(f"{source}: unknown key {name}.{key}; known: {sorted(schema)}")
        expected = schema[key]
        expected = expected if isinstance(expected, tuple) else (expected,)
        if float in expected and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
            hint = (
                " (write floats like 5.0e-5: YAML reads 5e-5 as text)" if float in expected else ""
            )
            raise ValueError(f"{source}: {name}.{key} must be {names}, got {value!r}{hint}")


def task_params(params: dict[str, Any], task: str) -> TaskParams:
    """Every stage's section for ``task``, its overrides applied and values validated."""
    if task not in params.get("tasks", []):
        raise ValueError(f"task {task!r} is not in this profile's tasks {params.get('tasks')}")
    merged = {}
    for stage in STAGES:
        section = {k: v for k, v in params[stage].items() if k != "overrides"}
        section.update((params[stage].get("overrides") or {}).get(task, {}))
        merged[stage] = section
    result = TaskParams(task=task, profile=str(params.get("profile", "custom")), **merged)
    for stage in ("finetune", "lengthdrop"):
        result.train_config(stage, output_dir=".").validate(batches_per_epoch=1)
    if merged["model"]["length_mode"] not in ("ratio", "absolute"):
        raise ValueError(f"model.length_mode must be 'ratio' or 'absolute' ({task})")
    if merged["data"]["search_on"] not in ("held_out", "dev"):
        raise ValueError(f"data.search_on must be 'held_out' or 'dev' ({task})")
    if merged["data"]["bad_rows"] not in ("error", "skip"):
        raise ValueError(f"data.bad_rows must be 'error' or 'skip' ({task})")
    if merged["search"]["cache_mb"] < 0:
        raise ValueError(f"search.cache_mb must be >= 0 (0: no prefix cache) ({task})")
    for rate in merged["search"]["constant_rates"]:
        if not 0 < float(rate) <= 1:
            raise ValueError(f"search.constant_rates must lie in (0, 1], got {rate} ({task})")
    return result
