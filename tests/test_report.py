"""The report over every task: one table, one figure, the claims; tasks not evaluated yet
are named, not dropped in silence."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO_ROOT

from latlib.pipeline.report import evaluated_tasks, report

COMMITTED = REPO_ROOT / "results" / "tasks" / "sst2"


@pytest.fixture
def one_task_evaluated(tmp_path):
    """A project root where SST-2's evaluate outputs exist (the committed ones) and
    MNLI-m's training has run but not its evaluation."""
    shutil.copytree(COMMITTED, tmp_path / "results" / "tasks" / "sst2")
    mnli = tmp_path / "results" / "tasks" / "mnli"
    mnli.mkdir(parents=True)
    (mnli / "finetune.json").write_text("{}\n")
    return tmp_path


def test_evaluated_tasks_needs_every_evaluate_output(one_task_evaluated):
    assert evaluated_tasks(["sst2", "mnli"], one_task_evaluated) == (["sst2"], ["mnli"])
    (one_task_evaluated / "results" / "tasks" / "sst2" / "curves.csv").unlink()
    assert evaluated_tasks(["sst2", "mnli"], one_task_evaluated) == ([], ["sst2", "mnli"])


def test_report_covers_the_evaluated_tasks_and_names_the_others(one_task_evaluated):
    done = report(["sst2", "mnli"], one_task_evaluated)
    assert done["pending"] == ["mnli"]
    assert set(done["table"]["task"]) == {"sst2"}
    summary = (one_task_evaluated / "results" / "summary.md").read_text()
    assert "### sst2" in summary
    assert "Not evaluated yet: mnli (`dvc repro evaluate@mnli`)" in summary
    assert set(done["claims"]["task"]) == {"sst2"}
    assert (one_task_evaluated / "figures" / "pareto.png").stat().st_size > 1000


def test_report_with_nothing_evaluated_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no task is evaluated yet .*evaluate@sst2"):
        report(["sst2", "squad"], tmp_path)
