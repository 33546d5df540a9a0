"""Task metrics: accuracy, SQuAD v1.1 exact match / F1, and span answer extraction.

The SQuAD metric is implemented here rather than taken from ``evaluate``, whose
``load("squad")`` downloads the script from the hub and so fails offline. It follows
the rules of the official v1.1 evaluation script: answers are lower-cased, stripped of
punctuation and of the articles a/an/the, and whitespace-collapsed before comparison;
each question scores the best match over its gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Percentage (0-100) of predictions equal to their labels."""
    pred = np.asarray(predictions)
    gold = np.asarray(labels)
    if pred.shape != gold.shape:
        raise ValueError(f"predictions {pred.shape} and labels {gold.shape} differ in shape")
    if gold.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((pred == gold).mean() * 100.0)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD v1.1 rules)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (0.0-1.0)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        # Also covers empty strings: the official v1.1 script scores them 0.
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Corpus exact match and F1 in percent, each question taking its best gold answer.

    Every reference id needs a prediction; extra prediction ids are ignored, so
    references may be a subset.
    """
    if not references:
        raise ValueError("no references to score")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(references)} questions have no prediction, e.g. {missing[:3]}"
        )
    em_total = f1_total = 0.0
    for qid, golds in references.items():
        if isinstance(golds, str) or not golds:
            raise ValueError(f"question {qid!r}: references must be a non-empty list of strings")
        pred = predictions[qid]
        em_total += max(exact_match_score(pred, g) for g in golds)
        f1_total += max(f1_score(pred, g) for g in golds)
    n = len(references)
    return {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}


def _column(rows: Any, name: str) -> list[Any]:
    """One column as a list from a ``datasets.Dataset``, a dict of lists or a list of dicts."""
    if hasattr(rows, "select_columns"):  # datasets.Dataset: ds["col"] is lazy in datasets 5
        return rows.select_columns([name])[:][name]
    if isinstance(rows, Mapping):
        return list(rows[name])
    return [r[name] for r in rows]


def postprocess_span_predictions(
    examples: Any,
    features: Any,
    start_logits: Sequence[Sequence[float]] | np.ndarray,
    end_logits: Sequence[Sequence[float]] | np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Turn per-feature start/end logits into one answer string per example.

    ``examples`` needs ``id`` and ``context``; ``features`` needs ``example_id`` and
    ``offset_mapping`` (None for non-context tokens), as made by
    ``latlib.data.prepare_squad_eval_features``. ``start_logits[i]``/``end_logits[i]``
    belong to feature ``i``; rows may be padded longer than the feature (the padding is
    ignored) or ragged. For each example, over all its features, the top ``n_best``
    start and end positions are paired; pairs outside the context, reversed, or longer
    than ``max_answer_length`` tokens are skipped, and the best start+end score wins.
    An example with no valid pair gets "".
    """
    ids = _column(examples, "id")
    contexts = _column(examples, "context")
    feat_example_ids = _column(features, "example_id")
    offsets_all = _column(features, "offset_mapping")
    if not len(start_logits) == len(end_logits) == len(feat_example_ids):
        raise ValueError(
            f"{len(feat_example_ids)} features but {len(start_logits)} start and "
            f"{len(end_logits)} end logit rows"
        )
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, ex_id in enumerate(feat_example_ids):
        by_example[ex_id].append(i)

    answers: dict[str, str] = {}
    for ex_id, context in zip(ids, contexts, strict=True):
        best_score = -np.inf
        best_span: tuple[int, int] | None = None
        for fi in by_example.get(ex_id, []):
            offsets = offsets_all[fi]
            n_tok = len(offsets)
            start = np.asarray(start_logits[fi], dtype=np.float64)[:n_tok]
            end = np.asarray(end_logits[fi], dtype=np.float64)[:n_tok]
            in_context = np.array([o is not None for o in offsets], dtype=bool)
            k = min(n_best, len(start))
            # Top-k candidates by logit, then score all k*k pairs at once.
            s_idx = np.argsort(-start, kind="stable")[:k]
            e_idx = np.argsort(-end, kind="stable")[:k]
            s_grid, e_grid = np.meshgrid(s_idx, e_idx, indexing="ij")
            valid = (
                in_context[s_grid]
                & in_context[e_grid]
                & (e_grid >= s_grid)
                & (e_grid - s_grid + 1 <= max_answer_length)
            )
            if not valid.any():
                continue
            scores = np.where(valid, start[s_grid] + end[e_grid], -np.inf)
            flat = int(np.argmax(scores))
            if scores.flat[flat] > best_score:
                best_score = float(scores.flat[flat])
                s_tok, e_tok = int(s_grid.flat[flat]), int(e_grid.flat[flat])
                best_span = (offsets[s_tok][0], offsets[e_tok][1])
        answers[ex_id] = "" if best_span is None else context[best_span[0] : best_span[1]]
    return answers
