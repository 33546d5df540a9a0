"""Task data as rows of text: loading, normalising, splitting (``features.py`` tokenises).

Where the data comes from, in this order:

1. the ``data_dir`` argument of :func:`load_task` (a folder laid out like
   ``shared/data``: ``sst2/``, ``mnli/``, ``squad/``);
2. the environment variable ``LATLIB_DATA_DIR`` (same layout);
3. the Hugging Face hub (``glue/sst2``, ``glue/mnli``, ``squad``) when neither is set.

A folder that is given but lacks the files is an error, never a silent fall-back to the
hub: a run should not change data source without saying so.

Whatever the source, a classification task comes back with its text field(s) and an
integer ``label`` (a :class:`datasets.ClassLabel`), and SQuAD comes back in the hub's
``squad`` schema (``id``, ``title``, ``context``, ``question``,
``answers={"text": [...], "answer_start": [...]}``). Our split names are ``"train"``
and ``"dev"``.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np

Split = Literal["train", "dev"]
SPLITS: tuple[str, ...] = ("train", "dev")
DATA_DIR_ENV = "LATLIB_DATA_DIR"
SOURCE_PREFIX = "latlib source: "
logger = logging.getLogger(__name__)

# Columns a BERT-style model (or its loss) consumes; everything else is dropped before
# collation because the collator cannot pad strings or nested offset lists.
MODEL_COLUMNS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one task: where its data lives and what it looks like."""

    name: str
    kind: Literal["classification", "span"]
    num_labels: int | None
    text_fields: tuple[str, ...]
    hub_path: tuple[str, str | None]
    hub_splits: dict[str, str]
    local_files: dict[str, tuple[str, ...]]
    metric_name: str
    label_names: tuple[str, ...] = field(default=())


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        kind="classification",
        num_labels=2,
        text_fields=("sentence",),
        hub_path=("glue", "sst2"),
        hub_splits={"train": "train", "dev": "validation"},
        local_files={
            "train": ("sst2/train.tsv", "sst2/train.tsv.gz"),
            "dev": ("sst2/dev.tsv", "sst2/dev.tsv.gz"),
        },
        metric_name="accuracy",
        label_names=("negative", "positive"),
    ),
    "mnli": TaskSpec(
        name="mnli",
        kind="classification",
        num_labels=3,
        text_fields=("premise", "hypothesis"),
        hub_path=("glue", "mnli"),
        hub_splits={"train": "train", "dev": "validation_matched"},
        # The full train set first, then the largest verified sample (29,526 pairs, a
        # superset of the 10k sample), the 10k sample last.
        local_files={
            "train": (
                "mnli/train.jsonl",
                "mnli/train.jsonl.gz",
                "mnli/train.tsv",
                "mnli/train.tsv.gz",
                "mnli/train_sample_29k.jsonl",
                "mnli/train_sample_29k.jsonl.gz",
                "mnli/train_subset_10k.jsonl",
                "mnli/train_subset_10k.jsonl.gz",
            ),
            "dev": (
                "mnli/dev_matched.jsonl",
                "mnli/dev_matched.jsonl.gz",
                "mnli/dev_matched.tsv",
                "mnli/dev_matched.tsv.gz",
            ),
        },
        metric_name="accuracy",
        label_names=("entailment", "neutral", "contradiction"),
    ),
    "squad": TaskSpec(
        name="squad",
        kind="span",
        num_labels=None,
        text_fields=("question", "context"),
        hub_path=("squad", None),
        hub_splits={"train": "train", "dev": "validation"},
        local_files={
            "train": (
                "squad/train-v1.1.json",
                "squad/train-v1.1.json.gz",
                "squad/train-v1.1.explorer-reconstructed.json.gz",
            ),
            "dev": ("squad/dev-v1.1.json", "squad/dev-v1.1.json.gz"),
        },
        metric_name="squad",
    ),
}

# GLUE's MNLI TSV names the columns differently from the jsonl copies and the hub.
_GLUE_MNLI_RENAMES = {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}

SQUAD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)


class DataUnavailableError(RuntimeError):
    """No local folder was configured and the hub could not provide the data."""


# --------------------------------------------------------------------------- loading


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Return the :class:`TaskSpec` for ``task`` (a name or a spec)."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The local data folder: ``data_dir`` if given, else ``$LATLIB_DATA_DIR``, else None (hub)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else None


def find_local_file(spec: TaskSpec, split: str, root: Path) -> Path:
    """First existing candidate file for ``spec``/``split`` under ``root``."""
    tried = [root / rel for rel in spec.local_files[split]]
    for path in tried:
        if path.is_file():
            return path
    listing = "\n".join(f"  - {p}" for p in tried)
    raise FileNotFoundError(
        f"no {spec.name} {split!r} data under {root}; tried, in order:\n{listing}\n"
        f"Fix: pass data_dir=<folder with {spec.name}/...>, set {DATA_DIR_ENV} to such a "
        "folder, or unset both to download from the Hugging Face hub (needs network)."
    )


def load_task(task: str, split: Split, data_dir: str | Path | None = None) -> datasets.Dataset:
    """Load one split of a task, normalised to the schema described in the module docstring."""
    spec = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = resolve_data_dir(data_dir)
    if root is None:
        ds = _load_from_hub(spec, split)
        source = f"hub {'/'.join(p for p in spec.hub_path if p)}:{spec.hub_splits[split]}"
    else:
        path = find_local_file(spec, split, root)
        ds = _load_local(spec, path)
        source = str(path)
    ds = _normalise(spec, ds, source)
    if len(ds) == 0:
        raise ValueError(f"{spec.name} {split!r} from {source} has no usable rows")
    ds.info.description = f"{SOURCE_PREFIX}{source}"
    logger.info("%s %s: read %s (%d rows)", spec.name, split, source, len(ds))
    return ds


def data_source(ds: datasets.Dataset) -> str | None:
    """Where ``load_task`` read a split from (a file, or the hub's name and split)."""
    description = ds.info.description or ""
    return (
        description.removeprefix(SOURCE_PREFIX) if description.startswith(SOURCE_PREFIX) else None
    )


def _load_from_hub(spec: TaskSpec, split: str) -> datasets.Dataset:
    hub_split = spec.hub_splits[split]
    try:
        return datasets.load_dataset(*spec.hub_path, split=hub_split)
    except Exception as err:  # any hub/network/cache failure: say where we looked
        name = "/".join(p for p in spec.hub_path if p)
        raise DataUnavailableError(
            f"could not load {spec.name} {split!r}: no local folder (data_dir argument not "
            f"given, {DATA_DIR_ENV} not set) and the Hugging Face hub ({name}, split "
            f"{hub_split!r}) failed: {type(err).__name__}: {err}. Fix: pass data_dir or set "
            f"{DATA_DIR_ENV} to a folder laid out like shared/data, or go online."
        ) from err


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else path.open(encoding="utf-8")
    )


def _base_suffix(path: Path) -> str:
    """Format suffix, looking through a trailing ``.gz``."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _peek_columns(path: Path) -> tuple[list[str], bool]:
    """Column names and whether any data row follows, read from the first lines only.

    Lets us reject a wrong or empty file before handing it to ``datasets``, whose own
    errors for these cases ("corresponds to no data") do not name the problem.
    """
    with _open_text(path) as fh:
        if _base_suffix(path) == ".tsv":
            header = fh.readline().rstrip("\r\n")
            cols = header.split("\t") if header else []
            has_rows = any(line.strip() for line in fh)
            return cols, has_rows
        for line in fh:  # jsonl: the first non-blank line carries the keys
            if line.strip():
                return list(json.loads(line).keys()), True
        return [], False


def _load_local(spec: TaskSpec, path: Path) -> datasets.Dataset:
    if spec.kind == "span":
        return _load_squad_json(path)
    cols, has_rows = _peek_columns(path)
    if not has_rows:
        raise ValueError(f"{path} has no data rows (empty file or header only)")
    required = set(spec.text_fields) | {"label"}
    present = {_GLUE_MNLI_RENAMES.get(c, c) for c in cols} if spec.name == "mnli" else set(cols)
    missing = sorted(required - present)
    if missing:
        raise ValueError(
            f"{path} lacks required column(s) {missing} for task {spec.name}; found {cols}"
        )
    if _base_suffix(path) == ".tsv":
        ds = datasets.load_dataset(
            "csv",
            data_files=str(path),
            delimiter="\t",
            # GLUE TSVs are not CSV-quoted: a '"' is literal text, and words such as
            # "null" or "nan" are sentences, not missing values.
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_filter=False,
            split="train",
        )
    else:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    if spec.name == "mnli":
        # GLUE TSV: keep gold_label, not label1 (the first annotator's vote).
        renames = {k: v for k, v in _GLUE_MNLI_RENAMES.items() if k in ds.column_names}
        if renames:
            ds = ds.remove_columns([c for c in ("label",) if c in ds.column_names])
            ds = ds.rename_columns(renames)
    return ds


def _load_squad_json(path: Path) -> datasets.Dataset:
    """Flatten SQuAD's nested ``data[].paragraphs[].qas[]`` JSON into one row per question."""
    with _open_text(path) as fh:
        raw = json.load(fh)
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise ValueError(f"{path} is not SQuAD JSON: missing the top-level 'data' list")
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "title", "context", "question", "answers")}
    try:
        for article in raw["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    cols["id"].append(qa["id"])
                    cols["title"].append(article.get("title", ""))
                    cols["context"].append(para["context"])
                    cols["question"].append(qa["question"])
                    cols["answers"].append(
                        {
                            "text": [a["text"] for a in qa["answers"]],
                            "answer_start": [int(a["answer_start"]) for a in qa["answers"]],
                        }
                    )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not SQuAD JSON: missing key {err}") from err
    if not cols["id"]:
        raise ValueError(f"{path} has no questions")
    return datasets.Dataset.from_dict(cols, features=SQUAD_FEATURES)


def _normalise(spec: TaskSpec, ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """Reduce to the canonical columns and types, whatever the source."""
    if spec.kind == "span":
        required = list(SQUAD_FEATURES)
    else:
        required = [*spec.text_fields, "label"]
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source} lacks required column(s) {missing}; found {ds.column_names}")
    ds = ds.select_columns(required)
    if spec.kind == "span":
        return ds.cast(SQUAD_FEATURES) if ds.features != SQUAD_FEATURES else ds
    return _normalise_labels(spec, ds)


def _normalise_labels(spec: TaskSpec, ds: datasets.Dataset) -> datasets.Dataset:
    names = spec.label_names
    label_feature = ds.features["label"]
    if isinstance(label_feature, datasets.ClassLabel) and tuple(label_feature.names) != names:
        raise ValueError(f"{spec.name}: label names {label_feature.names} != expected {names}")
    labels = ds.select_columns(["label"])[:]["label"]
    name_to_id = {n: i for i, n in enumerate(names)}

    def to_id(value: Any) -> int:
        # String labels (MNLI jsonl / GLUE TSV) map by name; "-", "" or None (no gold
        # label) and the hub's -1 (unlabelled test rows) become -1 and are dropped.
        if value is None:
            return -1
        if isinstance(value, str):
            v = value.strip()
            if v in name_to_id:
                return name_to_id[v]
            return int(v) if v.lstrip("-").isdigit() else -1
        return int(value)

    ids = [to_id(v) for v in labels]
    bad = sorted({i for i in ids if i != -1 and not 0 <= i < len(names)})
    if bad:
        raise ValueError(f"{spec.name}: label id(s) {bad[:5]} outside 0..{len(names) - 1}")
    keep = [i for i, v in enumerate(ids) if v != -1]
    features = datasets.Features(
        {f: datasets.Value("string") for f in spec.text_fields}
        | {"label": datasets.ClassLabel(names=list(names))}
    )
    ds = ds.remove_columns("label").add_column("label", ids)
    if len(keep) != len(ds):
        ds = ds.select(keep)
    return ds.cast(features)


# --------------------------------------------------------------------------- subsets


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def train_search_split(
    ds: datasets.Dataset, search_size: int | float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold out a seeded random search split; returns ``(train_rest, search)``.

    ``search_size`` is a row count (int) or a fraction in (0, 1) (float). Both parts keep
    the original row order.
    """
    n = len(ds)
    if isinstance(search_size, bool) or not isinstance(search_size, int | float):
        raise ValueError(f"search_size must be an int or a float, got {search_size!r}")
    if isinstance(search_size, float):
        if not 0.0 < search_size < 1.0:
            raise ValueError(f"a fractional search_size must be in (0, 1), got {search_size}")
        k = max(1, round(search_size * n))
    else:
        k = search_size
    if not 0 < k < n:
        raise ValueError(
            f"search_size={search_size!r} gives {k} search rows out of {n}; need 1..{n - 1}"
        )
    perm = _rng(seed).permutation(n)
    search_idx = np.sort(perm[:k])
    train_idx = np.sort(perm[k:])
    return ds.select(train_idx), ds.select(search_idx)


def take_subset(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """Seeded random ``n`` rows (original order kept); ``ds`` itself if ``n`` is None or >= len."""
    if n is None or n >= len(ds):
        return ds
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    idx = np.sort(_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.select(idx)
