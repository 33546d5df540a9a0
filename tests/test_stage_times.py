"""Stage times: this machine's last run first, then the committed reference run."""

from __future__ import annotations

import json

import pytest

from latlib.pipeline.stage_times import (
    LOCAL_TIMES,
    anytime_model_hint,
    describe,
    estimate,
    record,
    reference_times,
)


def write_local(root, times):
    (root / LOCAL_TIMES).parent.mkdir(parents=True, exist_ok=True)
    (root / LOCAL_TIMES).write_text(json.dumps(times))


def test_estimate_prefers_this_machine_then_the_reference(tmp_path):
    write_local(tmp_path, {"finetune@sst2": {"seconds": 60.0, "machine": "here", "finished": "t"}})
    assert estimate(["finetune@sst2"], tmp_path)[0].source == "last run here"
    record(
        {"search@sst2": {"seconds": 120.0, "machine": "CPU X, 2 cores", "finished": "t"}}, tmp_path
    )
    (tmp_path / LOCAL_TIMES).unlink()
    found = estimate(["finetune@sst2", "search@sst2"], tmp_path)
    assert found[0].seconds is None and found[0].source == "not timed yet"
    assert found[1].seconds == 120.0 and "CPU X, 2 cores" in found[1].source
    assert describe(found) == "about 2 min (+ 1 stage(s) not timed yet)"


def test_record_merges_into_the_reference_table(tmp_path):
    record({"a": {"seconds": 1.0, "machine": "m", "finished": "t1"}}, tmp_path)
    record({"b": {"seconds": 7200.0, "machine": "m", "finished": "t2"}}, tmp_path)
    reference = reference_times(tmp_path)
    assert set(reference) == {"a", "b"}
    assert describe(estimate(["a", "b"], tmp_path)) == "about 2.0 h"
    with pytest.raises(ValueError, match="run a stage first"):
        record({}, tmp_path)


def test_the_model_hint_names_the_command_and_the_time(tmp_path):
    write_local(
        tmp_path,
        {
            f"{s}@mnli": {"seconds": 600.0, "machine": "m", "finished": "t"}
            for s in ("finetune", "lengthdrop", "search")
        },
    )
    hint = anytime_model_hint("mnli", tmp_path)
    assert "models/mnli/anytime is not here" in hint
    assert "make repro TARGETS=search@mnli" in hint
    assert "about 30 min" in hint
