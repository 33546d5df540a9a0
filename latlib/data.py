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

Bad rows are found before anything is tokenised: a line that is not UTF-8, not JSON or
has the wrong number of fields, an empty text, an unknown label, a SQuAD answer that is
not where its ``answer_start`` says. By default (``bad_rows="error"``) the split is
refused with the file, each row's line (or SQuAD question id), the count and the first
few; ``bad_rows="skip"`` leaves them out and warns how many were skipped, and where.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np

Split = Literal["train", "dev"]
SPLITS: tuple[str, ...] = ("train", "dev")
BadRows = Literal["error", "skip"]
BAD_ROWS: tuple[str, ...] = ("error", "skip")
# How many bad rows a message quotes; the count covers them all.
_QUOTED_ROWS = 5
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


def load_task(
    task: str, split: Split, data_dir: str | Path | None = None, bad_rows: BadRows = "error"
) -> datasets.Dataset:
    """Load one split of a task, normalised to the schema described in the module docstring.

    ``bad_rows="error"`` refuses a split with bad rows (each named); ``"skip"`` leaves
    them out with a warning, and the split's source (:func:`data_source`) says so.
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if bad_rows not in BAD_ROWS:
        raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
    root = resolve_data_dir(data_dir)
    if root is None:
        source = f"hub {'/'.join(p for p in spec.hub_path if p)}:{spec.hub_splits[split]}"
        ds = _select_columns(spec, _load_from_hub(spec, split), source)
        rows = _Rows(ds[:], _hub_places(spec, ds))
    else:
        path = find_local_file(spec, split, root)
        source = str(path)
        rows = _read_squad(path) if spec.kind == "span" else _read_table(spec, path)
    problems = _row_problems(spec, rows)
    bad = rows.bad(problems)
    if bad:
        total = len(rows.places) + len(rows.unreadable)
        source = _report_bad_rows(spec, split, source, bad, total, bad_rows)
    keep = [i for i in range(len(rows.places)) if i not in problems]
    if root is None:
        ds = ds.select(keep) if problems else ds
    else:
        ds = _to_dataset(spec, {name: [col[i] for i in keep] for name, col in rows.columns.items()})
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


@dataclass
class _Rows:
    """A split's rows as columns of the fields its task needs; ``places[i]`` says where
    row ``i`` is (``line 12``, ``question id 5733be28``); ``unreadable`` lists the rows
    that could not be read at all: how many readable rows came before each, where it
    is, and why."""

    columns: dict[str, list[Any]]
    places: list[str]
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)

    def skip(self, place: str, why: str) -> None:
        """Record a row that cannot be read."""
        self.unreadable.append((len(self.places), place, why))

    def bad(self, problems: dict[int, str]) -> list[tuple[str, str]]:
        """Every bad row, unreadable or not, in file order."""
        keyed = [(after, 0, (place, why)) for after, place, why in self.unreadable]
        keyed += [(i, 1, (self.places[i], why)) for i, why in problems.items()]
        return [row for *_, row in sorted(keyed, key=lambda k: k[:2])]


def _hub_places(spec: TaskSpec, ds: datasets.Dataset) -> list[str]:
    if spec.kind == "span":
        return [f"question id {i}" for i in ds.select_columns(["id"])[:]["id"]]
    return [f"row {i}" for i in range(len(ds))]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered raw lines (decoded one by one, so a bad byte is pinned to its line)."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
        yield from enumerate(fh, start=1)


def _decode(raw: bytes) -> tuple[str, str | None]:
    """A line without its line break, or why it is not UTF-8."""
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as err:
        return "", (
            f"not UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line); "
            "save the file as UTF-8"
        )


def _base_suffix(path: Path) -> str:
    """Format suffix, looking through a trailing ``.gz``."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _field_names(spec: TaskSpec, names: list[str], path: Path) -> dict[str, str]:
    """Which column holds each field the task needs (GLUE's MNLI names included)."""
    required = [*spec.text_fields, "label"]
    glue = {v: k for k, v in _GLUE_MNLI_RENAMES.items()} if spec.name == "mnli" else {}
    # GLUE TSV: gold_label, not label1 (the first annotator's vote).
    chosen = {f: glue[f] if glue.get(f) in names else f for f in required}
    missing = [f for f, name in chosen.items() if name not in names]
    if missing:
        raise ValueError(
            f"{path} lacks required column(s) {missing} for task {spec.name}; found {names}"
        )
    return chosen


def _read_table(spec: TaskSpec, path: Path) -> _Rows:
    """A TSV (header line first) or JSONL file, one row per non-blank line."""
    tsv = _base_suffix(path) == ".tsv"
    lines = _lines(path)
    header: list[str] | None = None
    chosen: dict[str, str] = {}
    rows = _Rows({f: [] for f in (*spec.text_fields, "label")}, [])
    for number, raw in lines:
        text, problem = _decode(raw)
        if tsv and number == 1:
            if problem:
                raise ValueError(f"{path}, line 1 (the header): {problem}")
            header = text.split("\t") if text else []
            chosen = _field_names(spec, header, path)
            continue
        if problem:
            rows.skip(f"line {number}", problem)
            continue
        if not text.strip():
            continue
        record, problem = _split_tsv(text, header) if tsv else _parse_json_line(text)
        if problem:
            rows.skip(f"line {number}", problem)
            continue
        if not chosen:  # JSONL: the first record's keys say which columns there are
            chosen = _field_names(spec, list(record), path)
        for name, column in chosen.items():
            rows.columns[name].append(record.get(column))
        rows.places.append(f"line {number}")
    if not rows.places and not rows.unreadable:
        raise ValueError(f"{path} has no data rows (empty file or header only)")
    return rows


def _split_tsv(text: str, header: list[str]) -> tuple[dict[str, str], str | None]:
    # GLUE TSVs are not CSV-quoted: a '"' is literal text, and words such as "null" or
    # "nan" are sentences, not missing values.
    values = text.split("\t")
    if len(values) != len(header):
        return {}, f"{len(values)} tab-separated fields where the header has {len(header)}"
    return dict(zip(header, values, strict=True)), None


def _parse_json_line(text: str) -> tuple[dict[str, Any], str | None]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, f"not JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return {}, f"not a JSON object but {type(record).__name__}"
    return record, None


def _read_squad(path: Path) -> _Rows:
    """Flatten SQuAD's nested ``data[].paragraphs[].qas[]`` JSON into one row per question."""
    raw_bytes = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        raw = json.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = raw_bytes.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw_bytes[err.start]:02x}); save the "
            "file as UTF-8"
        ) from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err.msg} (line {err.lineno})") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise ValueError(f"{path} is not SQuAD JSON: missing the top-level 'data' list")
    rows = _Rows({k: [] for k in ("id", "title", "context", "question", "answers")}, [])
    try:
        for article in raw["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    place = f"question id {qa['id']}"
                    try:
                        starts = [int(a["answer_start"]) for a in qa["answers"]]
                    except (ValueError, TypeError) as err:
                        rows.skip(place, f"answer_start is not a number ({err})")
                        continue
                    rows.columns["id"].append(qa["id"])
                    rows.columns["title"].append(article.get("title", ""))
                    rows.columns["context"].append(para["context"])
                    rows.columns["question"].append(qa["question"])
                    texts = [a["text"] for a in qa["answers"]]
                    rows.columns["answers"].append({"text": texts, "answer_start": starts})
                    rows.places.append(place)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not SQuAD JSON: missing key {err}") from err
    if not rows.places and not rows.unreadable:
        raise ValueError(f"{path} has no questions")
    return rows


# --------------------------------------------------------------------------- bad rows


def _row_problems(spec: TaskSpec, rows: _Rows) -> dict[int, str]:
    """What is wrong with each row that would train or score wrongly (by row index)."""
    check = _squad_problems if spec.kind == "span" else _classification_problems
    return check(spec, rows.columns)


def _text_problem(name: str, value: Any) -> str | None:
    if value is None:
        return f"{name} is missing"
    if not isinstance(value, str):
        return f"{name} is not text: {value!r}"
    return f"{name} is empty" if not value.strip() else None


def _classification_problems(spec: TaskSpec, columns: dict[str, list[Any]]) -> dict[int, str]:
    problems = {}
    for i, label in enumerate(columns["label"]):
        found = [_text_problem(f, columns[f][i]) for f in spec.text_fields]
        if _label_id(spec, label) is None:
            found.append(
                f"label {label!r} is none of {list(spec.label_names)} or "
                f"0..{len(spec.label_names) - 1}"
            )
        if any(found):
            problems[i] = "; ".join(p for p in found if p)
    return problems


def _squad_problems(spec: TaskSpec, columns: dict[str, list[Any]]) -> dict[int, str]:
    problems, seen = {}, set()
    for i, (qid, context, question, answers) in enumerate(
        zip(*(columns[k] for k in ("id", "context", "question", "answers")), strict=True)
    ):
        found = [_text_problem("question", question), _text_problem("context", context)]
        if qid in seen:
            found.append("its id is used by an earlier question too")
        seen.add(qid)
        if not found[1]:
            found += _answer_problems(context, answers["text"], answers["answer_start"])
        if any(found):
            problems[i] = "; ".join(p for p in found if p)
    return problems


def _answer_problems(context: str, texts: list[str], starts: list[int]) -> list[str]:
    """Answers that are not where ``answer_start`` says: trained on, such a question
    would learn "no answer" (its span lies in no window)."""
    if len(texts) != len(starts):
        return [f"{len(texts)} answer texts but {len(starts)} answer_start values"]
    found = []
    for k, (text, start) in enumerate(zip(texts, starts, strict=True), start=1):
        if not isinstance(text, str) or not text.strip():
            found.append(f"answer {k} is empty")
        elif not 0 <= start < len(context):
            found.append(
                f"answer {k} starts at {start}, outside its context (0..{len(context) - 1})"
            )
        elif not _answer_at(context, text, start):
            at = context[start : start + len(text)]
            found.append(f"answer {k} {text!r} is not at {start} in the context ({at!r} is)")
    return found


def _answer_at(context: str, text: str, start: int) -> bool:
    """The answer's text at ``start``, whitespace around it aside (an answer copied
    with a leading space still marks the same tokens)."""
    if context.startswith(text, start):
        return True
    stripped = text.strip()
    skipped = len(context) - start - len(context[start:].lstrip())
    return context.startswith(stripped, start + skipped)


def _report_bad_rows(
    spec: TaskSpec, split: str, source: str, bad: list[tuple[str, str]], total: int, mode: str
) -> str:
    """Refuse the split (``mode="error"``) or warn about the rows left out; returns the
    source as the loaded split records it."""
    listing = "\n".join(f"  - {place}: {why}" for place, why in bad[:_QUOTED_ROWS])
    more = f"\n  ... and {len(bad) - _QUOTED_ROWS} more" if len(bad) > _QUOTED_ROWS else ""
    count = f"{len(bad)} bad row{'s' if len(bad) > 1 else ''} of {total}"
    if mode == "error":
        raise ValueError(
            f"{source}: {count} in {spec.name} {split!r}, nothing loaded:\n{listing}{more}\n"
            "Fix: correct these rows, or leave them out with bad_rows='skip' "
            "(params.yaml: data.bad_rows: skip)"
        )
    places = ", ".join(place for place, _ in bad[:_QUOTED_ROWS]) + (", ..." if more else "")
    warnings.warn(
        f"{source}: skipped {count} in {spec.name} {split!r}:\n{listing}{more}",
        RuntimeWarning,
        stacklevel=3,
    )
    return f"{source} (skipped {count}: {places})"


def _select_columns(spec: TaskSpec, ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """Only the columns the task needs (a hub split carries others, e.g. ``idx``)."""
    required = list(SQUAD_FEATURES) if spec.kind == "span" else [*spec.text_fields, "label"]
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source} lacks required column(s) {missing}; found {ds.column_names}")
    return ds.select_columns(required)


def _to_dataset(spec: TaskSpec, columns: dict[str, list[Any]]) -> datasets.Dataset:
    """Rows read from a local file as a dataset (its labels as ids: a JSONL file may mix
    names and numbers, which one Arrow column cannot hold)."""
    if spec.kind == "span":
        return datasets.Dataset.from_dict(columns, features=SQUAD_FEATURES)
    columns = {**columns, "label": [_label_id(spec, v) for v in columns["label"]]}
    features = datasets.Features(
        {f: datasets.Value("string") for f in spec.text_fields} | {"label": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict(columns, features=features)


def _normalise(spec: TaskSpec, ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """Reduce to the canonical columns and types, whatever the source."""
    ds = _select_columns(spec, ds, source)
    if spec.kind == "span":
        return ds.cast(SQUAD_FEATURES) if ds.features != SQUAD_FEATURES else ds
    return _normalise_labels(spec, ds)


def _label_id(spec: TaskSpec, value: Any) -> int | None:
    """A label's id; -1 for "no gold label" (None, "", "-" in MNLI, the hub's -1 for
    unlabelled test rows), which is dropped; None for a label that is not the task's."""
    if value is None:
        return -1
    if isinstance(value, str):
        v = value.strip()
        if v in ("", "-"):
            return -1
        if v in spec.label_names:
            return spec.label_names.index(v)
        if not v.lstrip("-").isdigit():
            return None
        value = int(v)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -1 <= value < len(spec.label_names) else None


def _normalise_labels(spec: TaskSpec, ds: datasets.Dataset) -> datasets.Dataset:
    names = spec.label_names
    label_feature = ds.features["label"]
    if isinstance(label_feature, datasets.ClassLabel) and tuple(label_feature.names) != names:
        raise ValueError(f"{spec.name}: label names {label_feature.names} != expected {names}")
    # Unknown labels were refused or skipped as bad rows before.
    ids = [_label_id(spec, v) for v in ds.select_columns(["label"])[:]["label"]]
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
