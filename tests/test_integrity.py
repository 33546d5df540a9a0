"""Stored results carry their own integrity: a search store's records and a frontier
file are refused (and the store's re-evaluated) when edited, damaged, or moved."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace

import pytest
import torch
from conftest import tiny_bert_config

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.anytime import Frontier, FrontierIntegrityError, FrontierPoint, weights_digest
from latlib.search import SearchProblem, random_search
from latlib.store import EvaluatedConfig, SearchStore

FP = {"model": "toy", "weights_sha256": "abc", "metric": "score"}
LOWER, UPPER, MAX_LENGTH = (4, 3, 2), (16, 16, 16), 16


class Counted:
    """A toy score (more tokens in the last layer, higher) that logs its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, config: tuple[int, ...]) -> float:
        self.calls.append(tuple(config))
        return config[-1] / 16 + config[0] / 1000


def search(path, evaluate: Counted):
    problem = SearchProblem(evaluate, lambda c: float(sum(c)), LOWER, UPPER, MAX_LENGTH, FP)
    return random_search(problem, SearchStore(path, FP), num_evaluations=12, seed=0)


def edit_record(path, lineno: int, change) -> tuple[int, ...]:
    """Apply ``change`` to the parsed record on line ``lineno`` (1-based) of a store and
    write it back as valid JSON; returns that record's configuration."""
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[lineno - 1])
    change(record)
    lines[lineno - 1] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    return tuple(record["config"])


def test_tampered_score_is_reported_re_evaluated_and_never_published(tmp_path):
    path = tmp_path / "evolutionary.jsonl"
    first = search(path, Counted())
    honest = {r.config: r.score for r in first.evaluated}
    tampered = edit_record(path, 5, lambda r: r.update(score=99.0))

    evaluate = Counted()
    with pytest.warns(RuntimeWarning, match=r"evolutionary.jsonl line 5: digest mismatch.*again"):
        again = search(path, evaluate)
    assert evaluate.calls == [tampered]  # only the tampered record is evaluated again
    assert all(p.score != 99.0 for p in again.frontier)
    assert {r.config: r.score for r in again.evaluated} == honest
    assert again.frontier == first.frontier
    # the fresh result replaced the tampered one: the store now loads cleanly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = SearchStore(path, FP)
    assert reloaded.get(tampered).score == honest[tampered] and len(reloaded) == 12
    assert "99.0" not in path.read_text()


def test_record_without_digest_is_re_evaluated(tmp_path):
    path = tmp_path / "s.jsonl"
    search(path, Counted())
    stripped = edit_record(path, 3, lambda r: r.pop("digest"))
    evaluate = Counted()
    with pytest.warns(RuntimeWarning, match=r"s.jsonl line 3: no digest"):
        search(path, evaluate)
    assert evaluate.calls == [stripped]


def test_tampered_record_and_truncated_tail_are_both_repaired(tmp_path):
    path = tmp_path / "s.jsonl"
    search(path, Counted())
    tampered = edit_record(path, 4, lambda r: r.update(cost=r["cost"] - 1))
    path.write_bytes(path.read_bytes() + b'{"config": [5, 4, 3], "cost": 1')  # killed mid-write
    with pytest.warns(RuntimeWarning) as caught:
        store = SearchStore(path, FP)
    messages = [str(w.message) for w in caught]
    assert any("line 4: digest mismatch" in m for m in messages)
    assert any("truncated last line 14" in m for m in messages)
    assert len(store) == 11 and tampered not in store
    lines = path.read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(x) for x in lines)  # header + 11 records


def test_record_of_another_setup_does_not_verify(tmp_path):
    # A line copied from a store of other weights carries a digest bound to them.
    other = SearchStore(tmp_path / "other.jsonl", {**FP, "weights_sha256": "def"})
    other.add(EvaluatedConfig((8, 8, 8), 24.0, 0.9))
    path = tmp_path / "s.jsonl"
    SearchStore(path, FP)
    with open(path, "a") as f:
        f.write((tmp_path / "other.jsonl").read_text().splitlines(keepends=True)[1])
    with pytest.warns(RuntimeWarning, match="line 2: digest mismatch"):
        assert len(SearchStore(path, FP)) == 0


def test_version_1_store_is_re_evaluated_and_upgraded(tmp_path):
    path = tmp_path / "old.jsonl"
    first = search(path, Counted())
    lines = path.read_text().splitlines()
    header = {"kind": "latlib-search-store", "version": 1, "fingerprint": FP}
    unsigned = [
        json.dumps({k: v for k, v in json.loads(x).items() if k != "digest"}) for x in lines[1:]
    ]
    path.write_text("\n".join([json.dumps(header), *unsigned]) + "\n")

    evaluate = Counted()
    with pytest.warns(RuntimeWarning, match="written by store version 1"):
        again = search(path, evaluate)
    assert sorted(evaluate.calls) == sorted(r.config for r in first.evaluated)
    assert again.frontier == first.frontier
    assert json.loads(path.read_text().splitlines()[0])["version"] == 2
    assert len(SearchStore(path, FP)) == 12


# --------------------------------------------------------------------------- frontier


def tiny_model(seed: int) -> LengthAdaptiveModel:
    torch.manual_seed(seed)
    return LengthAdaptiveModel.from_config(
        tiny_bert_config(2, num_labels=2), LengthAdaptiveConfig(length_mode="ratio", max_length=16)
    ).eval()


def bound_frontier(model: LengthAdaptiveModel) -> Frontier:
    points = [
        FrontierPoint((0.5, 0.4), (8, 6), macs=40.0, paper_macs=400.0, score=80.0),
        FrontierPoint((0.9, 0.9), (15, 15), macs=90.0, paper_macs=900.0, score=88.0),
    ]
    return Frontier(
        points,
        "accuracy",
        "ratio",
        16,
        full_macs=100.0,
        full_paper_macs=1000.0,
        metadata={"search": {"task": "sst2"}},
        weights_sha256=weights_digest(model),
    )


def test_edited_frontier_is_refused(tmp_path):
    model = tiny_model(0)
    path = tmp_path / "frontier.json"
    bound_frontier(model).save(path)
    assert Frontier.load(path) == Frontier.load(path, model=model) == bound_frontier(model)
    payload = json.loads(path.read_text())
    payload["points"][0]["score"] = 99.0
    path.write_text(json.dumps(payload, indent=2))
    for loaded_with in (None, model):  # for display as for use
        with pytest.raises(
            FrontierIntegrityError, match="does not match its content_sha256"
        ) as err:
            Frontier.load(path, model=loaded_with)
        assert str(path) in str(err.value)
        assert "python -m latlib stage search --task sst2" in str(err.value)
        assert "dvc repro search@sst2" in str(err.value)


def test_frontier_without_digest_is_refused(tmp_path):
    path = tmp_path / "frontier.json"
    bound_frontier(tiny_model(0)).save(path)
    payload = json.loads(path.read_text())
    del payload["content_sha256"]
    path.write_text(json.dumps(payload))
    with pytest.raises(FrontierIntegrityError, match="no content_sha256"):
        Frontier.load(path)
    payload["version"] = 1  # what latlib wrote before frontiers carried digests
    path.write_text(json.dumps(payload))
    with pytest.raises(FrontierIntegrityError, match="version 1.*no digest.*stage search"):
        Frontier.load(path)


def test_frontier_beside_other_weights_is_refused(tmp_path):
    searched, other = tiny_model(0), tiny_model(1)
    searched.frontier = bound_frontier(searched)
    searched.save_pretrained(tmp_path / "searched")
    assert LengthAdaptiveModel.from_pretrained(tmp_path / "searched").frontier is not None
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "searched" / "frontier.json", tmp_path / "other" / "frontier.json")
    with pytest.raises(FrontierIntegrityError, match="searched on other weights") as err:
        LengthAdaptiveModel.from_pretrained(tmp_path / "other")
    message = str(err.value)
    assert str(tmp_path / "other" / "frontier.json") in message
    assert weights_digest(searched) in message and weights_digest(other) in message
    assert "stage search --task sst2" in message
    # alone, for display, the copied file still reads (its content is intact)
    assert Frontier.load(tmp_path / "other" / "frontier.json") == searched.frontier


def test_frontier_bound_to_no_weights_is_refused_for_a_model(tmp_path):
    model = tiny_model(0)
    path = tmp_path / "frontier.json"
    replace(bound_frontier(model), weights_sha256=None).save(path)
    Frontier.load(path)  # fine for display
    with pytest.raises(FrontierIntegrityError, match="no weights_sha256"):
        Frontier.load(path, model=model)
