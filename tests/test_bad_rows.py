"""Bad rows in the data files: refused with file, line (or question id) and count before
any tokenising, or skipped and counted with ``bad_rows="skip"`` (``data.bad_rows``)."""

from __future__ import annotations

import copy
import gzip
import json

import datasets
import pytest
import yaml
from conftest import REPO_ROOT

from latlib import data as D
from latlib import features as F
from latlib.pipeline import runs
from latlib.pipeline.params import check_params, task_params
from latlib.pipeline.paths import TaskPaths


def write_sst2(root, split: str, body: bytes) -> str:
    """An SST-2 TSV under ``root`` with the GLUE header; its path as the loader names it."""
    path = root / "sst2" / f"{split}.tsv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"sentence\tlabel\n" + body)
    return str(path)


def squad_file(root, questions: list[dict], split: str = "dev") -> str:
    """A SQuAD file with one paragraph holding ``questions``."""
    context = "The Denver Broncos won Super Bowl 50 in Santa Clara."
    data = {"data": [{"title": "T", "paragraphs": [{"context": context, "qas": questions}]}]}
    path = root / "squad" / ("dev-v1.1.json" if split == "dev" else "train-v1.1.json")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def question(qid: str, text: str, start: int) -> dict:
    return {"id": qid, "question": "Who won?", "answers": [{"text": text, "answer_start": start}]}


# ----------------------------------------------------------------------------- refused


def test_a_byte_that_is_not_utf8_names_file_and_line(tmp_path):
    path = write_sst2(tmp_path, "dev", b"good film \t1\ncaf\xe9 film \t0\nfine \t1\n")
    with pytest.raises(ValueError) as err:
        D.load_task("sst2", "dev", tmp_path)
    message = str(err.value)
    assert path in message
    assert "1 bad row of 3" in message
    assert "line 3: not UTF-8 (byte 0xe9 at byte 4 of the line)" in message
    assert "bad_rows='skip'" in message and "data.bad_rows: skip" in message


def test_empty_texts_are_counted_and_the_first_few_quoted(tmp_path):
    rows = b"".join(b"good \t1\n" if i % 2 else b" \t0\n" for i in range(16))
    path = write_sst2(tmp_path, "dev", rows)
    with pytest.raises(ValueError) as err:
        D.load_task("sst2", "dev", tmp_path)
    message = str(err.value)
    assert f"{path}: 8 bad rows of 16" in message
    for line in (2, 4, 6, 8, 10):  # the first five, in file order
        assert f"line {line}: sentence is empty" in message
    assert "line 12" not in message and "... and 3 more" in message


def test_table_rows_that_cannot_be_read_or_are_mislabelled(tmp_path):
    (tmp_path / "mnli").mkdir()
    lines = [
        json.dumps({"premise": "a", "hypothesis": "b", "label": "neutral"}),
        "{not json",
        json.dumps({"premise": "c", "hypothesis": "", "label": "entailment"}),
        json.dumps({"premise": "e", "hypothesis": "f", "label": "neutrall"}),
        json.dumps({"premise": "g", "hypothesis": "h", "label": "-"}),  # no gold: dropped
    ]
    path = tmp_path / "mnli" / "dev_matched.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        D.load_task("mnli", "dev", tmp_path)
    message = str(err.value)
    assert f"{path}: 3 bad rows of 5" in message
    assert "line 2: not JSON" in message
    assert "line 3: hypothesis is empty" in message
    assert "line 4: label 'neutrall' is none of ['entailment', 'neutral', 'contradiction']" in (
        message
    )


def test_a_tsv_row_with_the_wrong_number_of_fields(tmp_path):
    write_sst2(tmp_path, "dev", b"good \t1\nno label here\ntoo\tmany\t1\n")
    with pytest.raises(ValueError, match="2 bad rows of 3") as err:
        D.load_task("sst2", "dev", tmp_path)
    assert "line 3: 1 tab-separated fields where the header has 2" in str(err.value)
    assert "line 4: 3 tab-separated fields" in str(err.value)


def test_a_squad_answer_outside_or_not_at_its_start_is_refused(tmp_path):
    path = squad_file(
        tmp_path,
        [
            question("good", "Denver Broncos", 4),
            question("outside", "Denver Broncos", 400),
            question("elsewhere", "Denver Broncos", 10),
            question("empty", "", 4),
        ],
    )
    with pytest.raises(ValueError) as err:
        D.load_task("squad", "dev", tmp_path)
    message = str(err.value)
    assert f"{path}: 3 bad rows of 4" in message
    assert "question id outside: answer 1 starts at 400, outside its context (0..51)" in message
    assert "question id elsewhere: answer 1 'Denver Broncos' is not at 10" in message
    assert "question id empty: answer 1 is empty" in message


def test_a_squad_answer_with_spaces_around_it_is_not_a_bad_row(tmp_path):
    squad_file(
        tmp_path,
        [
            question("space-first", " Denver Broncos", 3),  # the start points at the space
            question("start-after", " Denver Broncos", 4),  # the start points at the word
            question("trailing", "Denver Broncos ", 4),
        ],
    )
    assert len(D.load_task("squad", "dev", tmp_path)) == 3


def test_a_squad_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "squad" / "dev-v1.1.json"
    path.parent.mkdir()
    path.write_bytes(b'{"data": [\n{"title": "caf\xe9"}]}')
    with pytest.raises(ValueError, match=r"dev-v1.1.json, line 2: not UTF-8 \(byte 0xe9\)"):
        D.load_task("squad", "dev", tmp_path)


def test_hub_rows_are_checked_too(monkeypatch):
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    fake = datasets.Dataset.from_dict({"sentence": ["good ", "", "bad "], "label": [1, 0, 0]})
    monkeypatch.setattr(D.datasets, "load_dataset", lambda *a, **k: fake)
    with pytest.raises(ValueError, match=r"hub glue/sst2:validation: 1 bad row of 3"):
        D.load_task("sst2", "dev")
    with pytest.warns(RuntimeWarning, match="row 1: sentence is empty"):
        assert D.load_task("sst2", "dev", bad_rows="skip")[:]["sentence"] == ["good ", "bad "]


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bad_rows must be 'error' or 'skip', got 'drop'"):
        D.load_task("sst2", "dev", tmp_path, bad_rows="drop")


# ----------------------------------------------------------------------------- skipped


def test_skip_leaves_bad_rows_out_and_says_how_many_and_where(tmp_path):
    path = write_sst2(tmp_path, "dev", b"good film \t1\ncaf\xe9\t0\n\t1\nfine \t0\n")
    with pytest.warns(RuntimeWarning) as caught:
        ds = D.load_task("sst2", "dev", tmp_path, bad_rows="skip")
    assert ds[:]["sentence"] == ["good film ", "fine "] and ds[:]["label"] == [1, 0]
    warning = str(caught[0].message)
    assert f"{path}: skipped 2 bad rows of 4" in warning
    assert "line 3: not UTF-8" in warning and "line 4: sentence is empty" in warning
    assert D.data_source(ds) == f"{path} (skipped 2 bad rows of 4: line 3, line 4)"


def test_skip_on_squad_keeps_the_good_questions(tmp_path):
    squad_file(tmp_path, [question("good", "Denver Broncos", 4), question("bad", "Denver", 40)])
    with pytest.warns(RuntimeWarning, match="(?s)skipped 1 bad row of 2.*question id bad"):
        ds = D.load_task("squad", "dev", tmp_path, bad_rows="skip")
    assert ds[:]["id"] == ["good"]


def test_gzipped_files_are_checked_line_by_line(tmp_path):
    (tmp_path / "mnli").mkdir()
    good = json.dumps({"premise": "a", "hypothesis": "b", "label": "neutral"}).encode()
    with gzip.open(tmp_path / "mnli" / "train.jsonl.gz", "wb") as fh:
        fh.write(good + b"\n" + good.replace(b"a", b"\xe9") + b"\n" + good + b"\n")
    with pytest.warns(RuntimeWarning, match="line 2: not UTF-8"):
        assert len(D.load_task("mnli", "train", tmp_path, bad_rows="skip")) == 2


# ----------------------------------------------------------------------------- pipeline


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "profiles" / "default.yaml").read_text())


def test_data_bad_rows_is_checked_with_its_name():
    params = copy.deepcopy(default_params())
    params["data"]["bad_rows"] = "ignore"
    with pytest.raises(ValueError, match=r"data.bad_rows must be one of \['error', 'skip'\]"):
        check_params(params)
    params["data"].pop("bad_rows")
    with pytest.raises(ValueError, match=r"data lacks \['bad_rows'\]"):
        check_params(params)


def test_data_bad_rows_reaches_the_loader_before_any_tokenising(
    tmp_path, monkeypatch, embedded_path
):
    write_sst2(tmp_path, "train", b"".join(b"row %d \t%d\n" % (i, i % 2) for i in range(8)))
    write_sst2(tmp_path, "dev", b"good \t1\n\t0\nfine \t0\n")
    params = copy.deepcopy(default_params())
    params["tasks"] = ["sst2"]
    params["data"].update(data_dir=str(tmp_path), search_size=2)
    strict = task_params(params, "sst2")

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised before the bad row was found")

    with monkeypatch.context() as patch:
        patch.setattr(F, "tokenize_classification", no_tokenising)
        with pytest.raises(
            ValueError, match=r"(?s)dev.tsv: 1 bad row of 3.*line 3: sentence is empty"
        ):
            runs.task_data(strict, embedded_path, with_train=True)
    params["data"]["bad_rows"] = "skip"
    lenient = task_params(params, "sst2")
    with pytest.warns(RuntimeWarning, match="skipped 1 bad row of 3"):
        data = runs.task_data(lenient, embedded_path, with_train=True)
    assert len(data.dev) == 2 and "skipped 1 bad row" in data.sources["dev"]
    # it decides whether a run starts, not what it computes: the run folder is the same
    paths = TaskPaths("sst2")
    for stage in ("finetune", "lengthdrop"):
        assert runs.training_run_dir(strict, paths, stage) == runs.training_run_dir(
            lenient, paths, stage
        )
