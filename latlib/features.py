"""Task data as model inputs: tokenising, SQuAD features, length-bucketed batches, and
``TaskData``, one task's tokenised splits (``prepare_task_data``).

Rows come from ``data.py``; every split is tokenised once with the model's own fast
tokenizer. Batches are padded per batch and drawn from buckets of similar lengths, so a
short sentence does not pay for a long one; every batch carries the rows' ``index`` so
that predictions can be put back in row order whatever order the batches came in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from .backbones import tokenizer_source
from .data import (
    MODEL_COLUMNS,
    BadRows,
    TaskSpec,
    data_source,
    get_task,
    load_task,
    take_subset,
    train_search_split,
)

SearchOn = Literal["held_out", "dev"]


# --------------------------------------------------------------------------- tokenising


def _require_fast(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast (Rust) tokenizer is required for offsets and overflow")


def tokenize_classification(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    task: str | TaskSpec,
    max_length: int,
) -> datasets.Dataset:
    """Tokenise a classification split: input_ids, attention_mask, [token_type_ids], labels.

    Truncates to ``max_length`` but does not pad (the dataloader pads per batch).
    """
    spec = get_task(task)
    if spec.kind != "classification":
        raise ValueError(f"{spec.name} is not a classification task")
    fields = spec.text_fields

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in fields]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        out = dict(enc)
        out["labels"] = batch["label"]
        return out

    return ds.map(
        encode, batched=True, remove_columns=ds.column_names, desc=f"tokenise {spec.name}"
    )


def _question_first_encode(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int
):
    if tokenizer.padding_side != "right":
        raise ValueError("SQuAD features assume right padding (question first)")
    if doc_stride >= max_length:
        raise ValueError(
            f"doc_stride ({doc_stride}) must be smaller than max_length ({max_length})"
        )
    # Some SQuAD questions start with spaces, which only waste window budget.
    questions = [q.lstrip() for q in batch["question"]]
    return tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def prepare_squad_train_features(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 384,
    doc_stride: int = 128,
) -> datasets.Dataset:
    """Windowed SQuAD training features with start/end token positions.

    A long context yields several windows overlapping by ``doc_stride`` tokens. A window
    that does not wholly contain the (first) gold answer points both positions at the
    CLS token (index 0).
    """
    _require_fast(tokenizer)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = _question_first_encode(batch, tokenizer, max_length, doc_stride)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets_all = enc.pop("offset_mapping")
        starts, ends = [], []
        for i, offsets in enumerate(offsets_all):
            answers = batch["answers"][sample_map[i]]
            seq_ids = enc.sequence_ids(i)
            cls = enc["input_ids"][i].index(tokenizer.cls_token_id)
            if not answers["text"]:
                starts.append(cls)
                ends.append(cls)
                continue
            a_start = answers["answer_start"][0]
            a_end = a_start + len(answers["text"][0])
            ctx = [j for j, s in enumerate(seq_ids) if s == 1]
            c0, c1 = ctx[0], ctx[-1]
            if not (offsets[c0][0] <= a_start and offsets[c1][1] >= a_end):
                starts.append(cls)
                ends.append(cls)
                continue
            # First context token that ends after the answer starts; last one that
            # starts before the answer ends.
            s = c0
            while s <= c1 and offsets[s][1] <= a_start:
                s += 1
            e = c1
            while e >= c0 and offsets[e][0] >= a_end:
                e -= 1
            starts.append(s)
            ends.append(e)
        out = dict(enc)
        out["start_positions"] = starts
        out["end_positions"] = ends
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="squad train features")


def prepare_squad_eval_features(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 384,
    doc_stride: int = 128,
) -> datasets.Dataset:
    """Windowed SQuAD evaluation features keeping ``example_id`` and ``offset_mapping``.

    Offsets of question and special tokens are None, so answer extraction can only pick
    context tokens.
    """
    _require_fast(tokenizer)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = _question_first_encode(batch, tokenizer, max_length, doc_stride)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets_all = enc.pop("offset_mapping")
        out = dict(enc)
        out["example_id"] = [batch["id"][k] for k in sample_map]
        out["offset_mapping"] = [
            [tuple(o) if s == 1 else None for o, s in zip(offs, enc.sequence_ids(i), strict=True)]
            for i, offs in enumerate(offsets_all)
        ]
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="squad eval features")


# --------------------------------------------------------------------------- batching

# Why a hand-written sampler: torch has no length-bucketing sampler, and the maintained
# option, transformers' ``trainer_pt_utils.LengthGroupedSampler`` (present in 5.x), is a
# Trainer internal that yields a flat index stream: it keeps each mega-batch's batches
# in sorted order (no shuffling of batch order), has no ``set_epoch``, and draws from a
# torch generator the caller must reseed. What we need is small enough to own.


class BucketBatchSampler(Sampler[list[int]]):
    """Seeded batches of similar-length rows.

    With ``shuffle``: permute the rows, cut the permutation into chunks of
    ``chunk_batches`` batches, sort each chunk by length, cut it into batches and shuffle
    the order of all batches. The result depends only on ``seed`` and the epoch set by
    :meth:`set_epoch` (call it each epoch, as with ``DistributedSampler``).

    Without ``shuffle``: rows sorted by length (longest first, ties in row order), so
    padding is minimal; callers map outputs back with the batch's ``index`` tensor.

    ``bucket=False`` turns off the sorting: a seeded permutation (``shuffle``) or the
    original order.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        bucket: bool = True,
        chunk_batches: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if chunk_batches < 1:
            raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.chunk_batches = chunk_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields next."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable") if self.bucket else np.arange(n)
            batches = [order[i : i + bs] for i in range(0, n, bs)]
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            perm = rng.permutation(n)
            batches = []
            chunk = bs * self.chunk_batches
            for c in range(0, n, chunk):
                part = perm[c : c + chunk]
                if self.bucket:
                    part = part[np.argsort(self.lengths[part], kind="stable")]
                batches.extend(part[i : i + bs] for i in range(0, len(part), bs))
            # Otherwise every chunk would run short-to-long.
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last:
            batches = [b for b in batches if len(b) == bs]
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        # Chunks hold whole batches, so only the very last batch can be short.
        return n // bs if self.drop_last else math.ceil(n / bs)


class _RowsWithIndex(torch.utils.data.Dataset):
    """Model columns of a tokenised dataset, each row tagged with its position."""

    def __init__(self, features: datasets.Dataset, columns: list[str]) -> None:
        self.data = features.select_columns(columns)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.data[i], "index": i}

    def __getitems__(self, idx: list[int]) -> list[dict[str, Any]]:
        # One Arrow slice per batch instead of one lookup per row.
        cols = self.data[idx]
        return [{k: v[j] for k, v in cols.items()} | {"index": i} for j, i in enumerate(idx)]


class _PadWithIndex:
    """Pad with ``DataCollatorWithPadding``, then attach the row indices as ``index``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, return_index: bool) -> None:
        self.inner = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")
        self.return_index = return_index

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        index = torch.tensor([r.pop("index") for r in rows], dtype=torch.long)
        batch = dict(self.inner(rows))
        if self.return_index:
            batch["index"] = index
        return batch


def sequence_lengths(features: datasets.Dataset) -> np.ndarray:
    """Token count of every row of a tokenised dataset (read from Arrow, no decoding)."""
    col = features.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
    return pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)


def make_dataloader(
    features: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    shuffle: bool,
    seed: int,
    bucket: bool = True,
    return_index: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over tokenised ``features`` with per-batch padding.

    Batches hold the model columns present in ``features`` (see :data:`MODEL_COLUMNS`)
    plus, if ``return_index``, ``index``: the row of ``features`` each batch entry came
    from. Pop ``index`` before ``model(**batch)``. The sampler is
    ``loader.batch_sampler`` (a :class:`BucketBatchSampler`); call its ``set_epoch``
    every epoch when shuffling.
    """
    columns = [c for c in MODEL_COLUMNS if c in features.column_names]
    if "input_ids" not in columns:
        raise ValueError(f"features need an input_ids column; found {features.column_names}")
    sampler = BucketBatchSampler(
        sequence_lengths(features),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        bucket=bucket,
        drop_last=drop_last,
    )
    return DataLoader(
        _RowsWithIndex(features, columns),
        batch_sampler=sampler,
        collate_fn=_PadWithIndex(tokenizer, return_index),
        num_workers=num_workers,
        # Its own generator: starting an epoch must not draw from the global RNG, or a
        # run resumed mid-epoch would get other dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )


# --------------------------------------------------------------------------- one task


@dataclass
class TaskData:
    """Tokenised splits of one task. For SQuAD the ``*_examples`` hold the raw rows that
    answers are extracted against; for classification they are the same rows as features."""

    task: TaskSpec
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    train: datasets.Dataset
    search: datasets.Dataset
    dev: datasets.Dataset
    search_examples: datasets.Dataset
    dev_examples: datasets.Dataset
    # Where each split was read (``data.data_source``): a file, or the hub's name and split.
    sources: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> tuple[datasets.Dataset, datasets.Dataset]:
        """(features, examples) of ``"search"`` or ``"dev"``."""
        if name == "search":
            return self.search, self.search_examples
        if name == "dev":
            return self.dev, self.dev_examples
        raise ValueError(f"split must be 'search' or 'dev', got {name!r}")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tokenizer_source(name_or_path))


def prepare_task_data(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: str | Path | None = None,
    max_length: int = 128,
    doc_stride: int = 128,
    train_size: int | None = None,
    search_size: int | float = 0.05,
    dev_size: int | None = None,
    search_on: SearchOn = "held_out",
    seed: int = 42,
    bad_rows: BadRows = "error",
) -> TaskData:
    """Load, split and tokenise a task.

    ``search_size`` rows of the training data are held out for the search (so that it
    never tunes on the dev set it reports); ``search_on="dev"`` is the paper's choice of
    searching on the dev set itself. ``train_size``/``dev_size`` take seeded subsets for
    CPU-sized runs. ``bad_rows`` (``data.load_task``): refuse a split with bad rows, or
    skip them; either way before anything is tokenised.
    """
    spec = get_task(task)
    if search_on not in ("held_out", "dev"):
        raise ValueError(f"search_on must be 'held_out' or 'dev', got {search_on!r}")
    train_rows = load_task(task, "train", data_dir, bad_rows)
    dev_rows = take_subset(load_task(task, "dev", data_dir, bad_rows), dev_size, seed)
    if search_on == "held_out":
        train_rows, search_rows = train_search_split(train_rows, search_size, seed)
    else:
        search_rows = dev_rows
    train_rows = take_subset(train_rows, train_size, seed)

    if spec.kind == "classification":

        def features(rows: datasets.Dataset, training: bool) -> datasets.Dataset:
            return tokenize_classification(rows, tokenizer, task, max_length)
    else:

        def features(rows: datasets.Dataset, training: bool) -> datasets.Dataset:
            prepare = prepare_squad_train_features if training else prepare_squad_eval_features
            return prepare(rows, tokenizer, max_length=max_length, doc_stride=doc_stride)

    return TaskData(
        task=spec,
        tokenizer=tokenizer,
        max_length=max_length,
        train=features(train_rows, True),
        search=features(search_rows, False),
        dev=features(dev_rows, False),
        search_examples=search_rows,
        dev_examples=dev_rows,
        sources={"train": data_source(train_rows), "dev": data_source(dev_rows)},
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Save without the truncation/padding state of the last call: a fast tokenizer
    writes that state into tokenizer.json, and it differs when tokenised data came from
    the ``datasets`` cache, which would make two identical runs save different files."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    tokenizer.save_pretrained(directory)


def split_batches(
    task_data: TaskData, split: str, batch_size: int = 64
) -> list[dict[str, torch.Tensor]]:
    """The padded, length-bucketed evaluation batches of a split, made once to be read
    many times (a search scores every configuration on the same batches)."""
    features, _ = task_data.split(split)
    return list(make_dataloader(features, task_data.tokenizer, batch_size, shuffle=False, seed=0))


def primary_metric(task_data: TaskData) -> str:
    """The number the search maximises and the tables report."""
    return "accuracy" if task_data.task.kind == "classification" else "f1"
