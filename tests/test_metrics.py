"""Tests for latlib.metrics: accuracy, SQuAD EM/F1 and span post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from latlib.metrics import (
    accuracy,
    exact_match_score,
    f1_score,
    normalize_answer,
    postprocess_span_predictions,
    squad_em_f1,
)


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
    assert accuracy(np.array([2, 2]), np.array([2, 2])) == 100.0
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Cat", "cat"),
        ("  a   dog,  an owl!  ", "dog owl"),
        ("Theatre the", "theatre"),  # only whole-word articles
        ("U.S.", "us"),
        ("rock-n-roll", "rocknroll"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_and_f1():
    assert exact_match_score("the Cat", "cat") == 1.0
    assert exact_match_score("cat.", "a cat") == 1.0
    assert exact_match_score("cats", "cat") == 0.0
    # "a" is an article, so use other letters: precision 2/3, recall 2/3
    assert f1_score("x b c", "b c d") == pytest.approx(2 / 3)
    assert f1_score("a b c", "b c d") == pytest.approx(0.8)  # normalises to "b c"
    assert f1_score("Denver Broncos", "the Denver Broncos!") == 1.0
    # precision 1/3, recall 1 -> 0.5
    assert f1_score("x y z", "y") == pytest.approx(0.5)
    # repeated tokens count with multiplicity: common = {y: 1}
    assert f1_score("y y", "y") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("", "cat") == 0.0
    assert f1_score("the", "a") == 0.0  # both normalise to nothing: official script says 0


def test_squad_em_f1_takes_best_gold():
    preds = {"q1": "Denver Broncos", "q2": "x b c", "q3": "nothing"}
    refs = {
        "q1": ["Broncos", "the Denver Broncos"],
        "q2": ["b c d", "z"],
        "q3": ["something"],
    }
    scores = squad_em_f1(preds, refs)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    # extra predictions are ignored, missing ones are an error
    assert squad_em_f1({**preds, "extra": "x"}, refs) == scores
    with pytest.raises(ValueError, match="no prediction"):
        squad_em_f1({"q1": "x"}, refs)
    with pytest.raises(ValueError):
        squad_em_f1({}, {})


def _example():
    context = "The cat sat on the mat."
    # Tokens: [CLS] what ? [SEP] the cat sat on the mat . [SEP] [PAD]
    offsets = [
        None,
        None,
        None,
        None,
        (0, 3),
        (4, 7),
        (8, 11),
        (12, 14),
        (15, 18),
        (19, 22),
        (22, 23),
        None,
    ]
    examples = {"id": ["e1"], "context": [context]}
    features = {"example_id": ["e1"], "offset_mapping": [offsets]}
    return examples, features, len(offsets)


def test_postprocess_picks_best_valid_span():
    examples, features, n = _example()
    start = np.zeros((1, n + 2))  # padded beyond the feature
    end = np.zeros((1, n + 2))
    start[0, 5], end[0, 6] = 4.0, 4.0  # "cat sat": score 8
    start[0, 1], end[0, 2] = 9.0, 9.0  # question tokens: invalid
    start[0, 9], end[0, 4] = 3.0, 5.0  # end before start: invalid
    start[0, n], end[0, n + 1] = 50.0, 50.0  # padding positions: ignored
    assert postprocess_span_predictions(examples, features, start, end) == {"e1": "cat sat"}


def test_postprocess_respects_max_answer_length():
    examples, features, n = _example()
    start = np.zeros((1, n))
    end = np.zeros((1, n))
    start[0, 4], end[0, 10] = 5.0, 5.0  # whole sentence, 7 tokens: score 10
    start[0, 8], end[0, 9] = 4.0, 4.0  # "the mat": score 8, 2 tokens
    out = postprocess_span_predictions(examples, features, start, end, max_answer_length=7)
    assert out == {"e1": "The cat sat on the mat."}
    out = postprocess_span_predictions(examples, features, start, end, max_answer_length=2)
    assert out == {"e1": "the mat"}
    # 3 tokens allow "the mat." (start 4.0 + end 5.0 = 9)
    out = postprocess_span_predictions(examples, features, start, end, max_answer_length=3)
    assert out == {"e1": "the mat."}


def test_postprocess_across_features_and_no_answer():
    context = "alpha beta gamma"
    examples = [{"id": "a", "context": context}, {"id": "b", "context": "x"}]
    features = [
        {"example_id": "a", "offset_mapping": [None, (0, 5), (6, 10), None]},
        {"example_id": "a", "offset_mapping": [None, (6, 10), (11, 16), None]},
        {"example_id": "b", "offset_mapping": [None, None]},
    ]
    start = [[0, 1, 0, 0], [0, 0, 3, 0], [5, 5]]  # ragged rows
    end = [[0, 1, 0, 0], [0, 0, 3, 0], [5, 5]]
    out = postprocess_span_predictions(examples, features, start, end)
    assert out == {"a": "gamma", "b": ""}
    with pytest.raises(ValueError):
        postprocess_span_predictions(examples, features, start[:2], end)
