"""The pipeline's parameters (``params.yaml``): one section per stage, read per task.

Each stage section holds the values for every task, plus an optional ``overrides``
mapping with per-task exceptions (``finetune.overrides.squad.learning_rate``). Unknown
keys, wrongly typed values and values out of range are refused here, before any data is
loaded or a model is trained, with the key's full name in the message
(``finetune.overrides.squad.eval_batch_size must be >= 1, got 0``). ``load_params`` checks
every section, those that the bench, variance and ablations stages read included;
``python -m latlib check-params`` runs it alone.

The run folders of training and search (``runs/<task>/...``) are keyed by a digest of
everything that determines their result, so a killed stage resumes its own checkpoints
and a changed parameter never resumes someone else's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..backbones import backbone_problem
from ..data import TASKS
from ..lengthdrop import KL_DIRECTIONS, LengthDropConfig
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
# Sections that other stages read with their own parsers (bench.py, variance.py,
# ablations.py); load_params checks them too. Any other top-level key is a typo.
OTHER_SECTIONS = ("bench", "variance", "ablations")
TOP_LEVEL = ("profile", "tasks", *STAGES, *OTHER_SECTIONS)


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``text`` for the message, ``test`` to check it."""

    text: str
    test: Callable[[Any], bool]


def at_least(low: float) -> Rule:
    return Rule(f">= {low:g}", lambda v: v >= low)


def above(low: float) -> Rule:
    return Rule(f"> {low:g}", lambda v: v > low)


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
    """``low..high``, either end open; written as an interval, e.g. ``in [0, 1)``."""
    text = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Rule(
        text,
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
    )


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {list(choices)}", lambda v: v in choices)


def _search_size_ok(value: int | float) -> bool:
    # data.train_search_split: an int counts rows, a float is a fraction of train.
    return value >= 1 if isinstance(value, int) else 0 < value < 1


def _rates_ok(value: list) -> bool:
    return bool(value) and all(
        isinstance(r, int | float) and not isinstance(r, bool) and 0 < r <= 1 for r in value
    )


_SEED = at_least(0)  # numpy's generators refuse negative seeds
# The range of every key above that holds a number or one of a few words (checked
# after its type; null, where the type allows it, is always fine). The training rules
# are TrainConfig.validate's and LengthDropConfig.validate's, the search's are
# evolutionary_search's, so a value accepted here is accepted where it is used.
_TRAIN_RANGES: dict[str, Rule] = {
    "learning_rate": above(0),
    "num_epochs": above(0),
    "max_steps": at_least(1),
    "batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "warmup_ratio": within(0, 1, high_open=True),
    "weight_decay": at_least(0),
    "max_grad_norm": above(0),
    "seed": _SEED,
    "checkpoint_every": at_least(1),
    "eval_batch_size": at_least(1),
}
RANGES: dict[str, dict[str, Rule]] = {
    "model": {
        "backbone": Rule("a non-empty name or folder", lambda v: bool(v.strip())),
        "length_mode": one_of("ratio", "absolute"),
    },
    "data": {
        "seed": _SEED,
        "search_on": one_of("held_out", "dev"),
        "bad_rows": one_of("error", "skip"),
        "max_length": at_least(2),  # [CLS] and at least one token
        "doc_stride": at_least(1),
        "train_size": at_least(1),
        "search_size": Rule("a row count >= 1 or a fraction in (0, 1)", _search_size_ok),
        "dev_size": at_least(1),
    },
    "finetune": dict(_TRAIN_RANGES),
    "lengthdrop": {
        **_TRAIN_RANGES,
        "num_sandwich": at_least(0),
        # Open at 0 too (LengthDropConfig allows 0): a bound of 0 drops nothing, which
        # leaves the search a single configuration.
        "length_drop_ratio_bound": within(0, 1, low_open=True, high_open=True),
        "layer_dropout_prob": within(0, 1, high_open=True),
        "kl_direction": one_of(*KL_DIRECTIONS),
    },
    "search": {
        "population_size": at_least(1),
        "mutation_size": at_least(0),
        "crossover_size": at_least(0),
        "mutation_prob": within(0, 1),
        "iterations": at_least(0),
        "seed": _SEED,
        "constant_rates": Rule("a non-empty list of rates in (0, 1]", _rates_ok),
        "eval_batch_size": at_least(1),
        "cache_mb": at_least(0),  # 0: no prefix cache
    },
    "evaluate": {"tolerance": at_least(0), "table_dev_size": at_least(1)},
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
    """Read and check a params file: every section (those of the bench, variance and
    ablations stages too), every task's overrides, every value's type and range."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; copy one of profiles/*.yaml there (make profile-default)"
        )
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(params, dict):
        raise ValueError(f"{path} must map section names to sections, got {type(params).__name__}")
    check_params(params, source=str(path))
    return params


def check_params(params: dict[str, Any], source: str = "params") -> None:
    """Raise ``ValueError`` naming the first unknown, missing, mistyped or out-of-range
    key of any section, for every task of ``tasks``."""
    unknown = sorted(set(params) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; known: {list(TOP_LEVEL)}")
    if not isinstance(params.get("profile", ""), str):
        raise ValueError(f"{source}: 'profile' must be a name, got {params['profile']!r}")
    tasks = params.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{source}: 'tasks' must be a non-empty list, e.g. [sst2]")
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"{source}: unknown task {task!r} in 'tasks'; known: {sorted(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"{source}: 'tasks' names a task twice: {tasks}")
    for stage in STAGES:
        section = params.get(stage)
        if not isinstance(section, dict):
            raise ValueError(f"{source}: the section {stage!r} is missing")
        overrides = section.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{source}: {stage}.overrides must map a task to its values")
        base = {k: v for k, v in section.items() if k != "overrides"}
        check_section(stage, base, SCHEMA[stage], RANGES[stage], source)
        missing = set(SCHEMA[stage]) - set(section)
        if missing:
            raise ValueError(f"{source}: {stage} lacks {sorted(missing)}")
        for task, values in overrides.items():
            if task not in TASKS:
                raise ValueError(f"{source}: {stage}.overrides names unknown task {task!r}")
            if not isinstance(values, dict):
                raise ValueError(f"{source}: {stage}.overrides.{task} must be a mapping")
            # Every override, also of a task this profile does not run: a later
            # `tasks: [..., squad]` must not meet a bad value only then.
            name = f"{stage}.overrides.{task}"
            check_section(name, values, SCHEMA[stage], RANGES[stage], source)
    for task in tasks:
        task_params(params, task, source)  # value checks that need the merged section
    check_other_sections(params, source)


def check_section(
    name: str,
    values: dict[str, Any],
    schema: dict[str, type | tuple[type, ...]],
    ranges: dict[str, Rule] | None = None,
    source: str = "",
) -> None:
    """Refuse a key of ``values`` that ``schema`` does not know, or whose value has the
    wrong type or lies outside its rule in ``ranges``; ``name`` is the section's dotted
    name in the file (``finetune.overrides.squad``), ``source`` the file's."""
    prefix = f"{source}: " if source else ""
    for key, value in values.items():
        if key not in schema:
            raise ValueError(f"{prefix}unknown key {name}.{key}; known: {sorted(schema)}")
        error = value_problem(value, schema[key], (ranges or {}).get(key))
        if error:
            raise ValueError(f"{prefix}{name}.{key} {error}")


def value_problem(value: Any, expected: type | tuple[type, ...], rule: Rule | None) -> str | None:
    """What is wrong with ``value`` (``"must be ..., got ..."``), or None if nothing."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    nullable = type(None) in expected
    if isinstance(value, bool):
        typed = bool in expected
    elif float in expected and isinstance(value, int):
        typed = True  # an int where a float goes (num_epochs: 1)
    else:
        typed = isinstance(value, expected)
    if not typed:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
        hint = " (write floats like 5.0e-5: YAML reads 5e-5 as text)" if float in expected else ""
        return f"must be {names}, got {value!r}{hint}"
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if rule is not None and not rule.test(value):
        return f"must be {'null or ' if nullable else ''}{rule.text}, got {value!r}"
    return None


def task_params(params: dict[str, Any], task: str, source: str = "params") -> TaskParams:
    """Every stage's section for ``task``, its overrides applied and values validated
    (``source``: the file, for the messages)."""
    if task not in params.get("tasks", []):
        raise ValueError(f"task {task!r} is not in this profile's tasks {params.get('tasks')}")
    merged = {}
    for stage in STAGES:
        base = {k: v for k, v in params[stage].items() if k != "overrides"}
        override = (params[stage].get("overrides") or {}).get(task, {})
        check_section(stage, base, SCHEMA[stage], RANGES[stage], source)
        check_section(f"{stage}.overrides.{task}", override, SCHEMA[stage], RANGES[stage], source)
        merged[stage] = {**base, **override}
    result = TaskParams(task=task, profile=str(params.get("profile", "custom")), **merged)
    _check_merged(params, result, source)
    return result


def _key_name(params: dict[str, Any], stage: str, key: str, task: str) -> str:
    """The dotted name of the key that gives ``task`` its value (its override, if any)."""
    overrides = params[stage].get("overrides") or {}
    return f"{stage}.overrides.{task}.{key}" if key in overrides.get(task, {}) else f"{stage}.{key}"


def _check_merged(params: dict[str, Any], merged: TaskParams, source: str) -> None:
    """Checks that involve several keys, on one task's merged sections."""
    task = merged.task

    def name(stage: str, key: str) -> str:
        return _key_name(params, stage, key, task)

    problem = backbone_problem(merged.model["backbone"])
    if problem:
        raise ValueError(f"{source}: {name('model', 'backbone')}: {problem}")
    data = merged.data
    # Span tasks cut a long context into windows overlapping by doc_stride tokens
    # (features._question_first_encode); classification never reads it.
    if TASKS[task].kind == "span" and data["doc_stride"] >= data["max_length"]:
        raise ValueError(
            f"{source}: {name('data', 'doc_stride')} ({data['doc_stride']}) must be smaller "
            f"than {name('data', 'max_length')} ({data['max_length']}) for {task}"
        )
    for stage in ("finetune", "lengthdrop"):
        # RANGES already holds these rules under the keys' names; asking TrainConfig too
        # catches a rule added there and not here.
        try:
            merged.train_config(stage, output_dir=".").validate(batches_per_epoch=1)
        except ValueError as error:
            raise ValueError(f"{source}: {stage} ({task}): {error}") from None


# --------------------------------------------------------------- the other stages' sections
# The bench, variance and ablations sections are read by their stages (bench.py,
# variance.py, ablations.py build their settings from what these functions return);
# their rules live here so that load_params refuses a bad value before any stage runs,
# and a stage's dvc deps stay its own modules.


def _positive_ints(value: list) -> bool:
    return bool(value) and all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in value
    )


def _example_limits(value: dict) -> bool:
    """Batch size (>= 1) -> examples per pass (>= 1, or null: every row)."""
    return _positive_ints(list(value) or [1]) and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
        for v in value.values()
    )


BENCH_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "batch_sizes": list,
    "repeats": int,
    "max_examples": (dict, type(None)),
    "max_points": int,
    "threads": (int, type(None)),
    "search_iterations": int,
}
BENCH_RANGES: dict[str, Rule] = {
    "batch_sizes": Rule("a non-empty list of batch sizes >= 1", _positive_ints),
    "repeats": Rule(">= 3 (a median and a spread)", lambda v: v >= 3),
    "max_examples": Rule("a map of batch size >= 1 to a count >= 1 or null", _example_limits),
    "max_points": at_least(1),
    "threads": at_least(1),
    "search_iterations": Rule(">= 0 (0: no search timing)", lambda v: v >= 0),
}
# The ablations' search sets these; a variant changes LengthDrop's own knobs and its
# optimiser's, each by the lengthdrop section's rule (min_length is LengthDropConfig's
# own, not a params key).
ABLATION_SEARCH_KEYS = ("population_size", "mutation_size", "crossover_size", "iterations")
VARIANT_KEYS = frozenset(
    {f.name for f in fields(LengthDropConfig)} | {"learning_rate", "warmup_ratio", "seed"}
)
_VARIANT_SCHEMA = {**SCHEMA["lengthdrop"], "min_length": int}
_VARIANT_RANGES = {**RANGES["lengthdrop"], "min_length": at_least(1)}


def check_other_sections(params: dict[str, Any], source: str = "params") -> None:
    """The ``bench``, ``variance`` and ``ablations`` sections for every task, as their
    stages will read them (a section left out is left to its stage)."""
    tasks = params["tasks"]
    try:
        if "bench" in params:
            for task in tasks:
                bench_section(params["bench"] or {}, task)
        if "variance" in params:
            variance_section(params["variance"], tasks)
        if "ablations" in params:  # each variant's values by the lengthdrop rules
            ablations_section(params["ablations"] or {}, tasks)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def bench_section(section: dict[str, Any], task: str | None = None) -> dict[str, Any]:
    """The ``bench`` values of ``task``: the section with ``overrides[task]`` applied,
    every key of it and of every override checked."""
    if not isinstance(section, dict):
        raise ValueError(f"bench must map settings to values, got {section!r}")
    section = dict(section)
    overrides = section.pop("overrides", None) or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ValueError(
            "bench.overrides must map a task to its values, e.g. {squad: {repeats: 3}}"
        )
    check_section("bench", section, BENCH_SCHEMA, BENCH_RANGES)
    for name, values in overrides.items():  # bad values fail for every task alike
        check_section(f"bench.overrides.{name}", values, BENCH_SCHEMA, BENCH_RANGES)
    return {**section, **(overrides.get(task, {}) if task is not None else {})}


def variance_section(section: dict[str, Any] | None, tasks: list[str] | None) -> dict[str, list]:
    """``seeds`` and ``tasks`` of the ``variance`` section, checked; ``tasks``: the
    pipeline's tasks, which must include every task of ``variance.tasks``."""
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError(f"variance must map 'seeds' and 'tasks' to values, got {section!r}")
    unknown = set(section) - {"seeds", "tasks"}
    if unknown:
        raise ValueError(f"unknown key(s) variance.{sorted(unknown)}; known: ['seeds', 'tasks']")
    variance_tasks = section.get("tasks", [])
    if not isinstance(variance_tasks, list) or not all(isinstance(t, str) for t in variance_tasks):
        raise ValueError(f"variance.tasks must be a list of task names, got {variance_tasks!r}")
    outside = [t for t in variance_tasks if tasks is not None and t not in tasks]
    if outside:
        raise ValueError(
            f"variance.tasks names {outside}, which 'tasks' ({tasks}) does not run; "
            "add them to 'tasks' or remove them from variance.tasks"
        )
    seeds = section.get("seeds") or []
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and _SEED.test(s) for s in seeds
    ):
        raise ValueError(f"variance.seeds must be a list of ints {_SEED.text}, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"variance.seeds repeats a seed: {seeds}")
    return {"seeds": seeds, "tasks": variance_tasks}


def ablations_section(section: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The ``ablations`` section, checked: its keys, its search's values by the search
    section's rules, each variant's by the lengthdrop section's."""
    if not isinstance(section, dict):
        raise ValueError(f"ablations must be a mapping, got {section!r}")
    known = {"task", "max_steps", "search", "variants"}
    unknown = set(section) - known
    if unknown:
        raise ValueError(f"unknown key(s) ablations.{sorted(unknown)}; known: {sorted(known)}")
    missing = known - set(section)
    if missing:
        raise ValueError(f"ablations lacks {sorted(missing)}")
    if section["task"] not in tasks:
        raise ValueError(
            f"ablations.task {section['task']!r} is not in tasks {tasks}: the ablations "
            "start from that task's fine-tuned model"
        )
    max_steps = section["max_steps"]
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"ablations.max_steps must be a positive int, got {max_steps!r}")
    search = section["search"] or {}
    if not isinstance(search, dict) or set(search) != set(ABLATION_SEARCH_KEYS):
        raise ValueError(f"ablations.search must set exactly {list(ABLATION_SEARCH_KEYS)}")
    check_section("ablations.search", search, SCHEMA["search"], RANGES["search"])
    variants = section["variants"] or {}
    if not isinstance(variants, dict) or len(variants) < 2:
        raise ValueError("ablations.variants needs at least two variants to compare")
    for name, changes in variants.items():
        changes = changes or {}
        if not isinstance(changes, dict):
            raise ValueError(f"ablations.variants.{name} must map settings to values")
        bad = set(changes) - VARIANT_KEYS
        if bad:
            raise ValueError(
                f"ablations.variants.{name} changes {sorted(bad)}, which are not LengthDrop "
                f"settings; allowed: {sorted(VARIANT_KEYS)}"
            )
        check_section(f"ablations.variants.{name}", changes, _VARIANT_SCHEMA, _VARIANT_RANGES)
    return {
        "task": section["task"],
        "max_steps": max_steps,
        "search": {k: search[k] for k in ABLATION_SEARCH_KEYS},
        "variants": {name: dict(changes or {}) for name, changes in variants.items()},
    }
