"""Reuse decided on purpose: what makes a finished training run reusable.

A run folder is named by the parameters a run depends on and by ``TRAINING_VERSIONS``,
the version of what each training path computes, never by source files. So:

- a move, a rename or a refactor keeps every run folder (the names below are pinned);
- a change in what training computes must bump a version, which moves the folders and
  makes old checkpoints refuse to resume. ``RECORDED`` holds each path's result on a
  tiny model and real data (the data, tokenisation, model, loss and sampler all take
  part); when that result changes while the version did not, the guard fails.

The tolerance is far above float noise across CPU kinds (AVX2 and AVX-512 agree to
about 1e-6 here) and far below any real change (a different sampler, loss or
tokenisation moves these numbers by 1e-2 or more).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import latlib.train as train_module
from latlib.features import load_tokenizer, make_dataloader, prepare_task_data
from latlib.lengthdrop import LengthDropConfig
from latlib.pipeline.params import load_params, task_params
from latlib.pipeline.paths import TaskPaths
from latlib.pipeline.runs import training_run_dir
from latlib.train import TRAINING_VERSIONS, TrainConfig, build_model, train, train_model

REPO = Path(__file__).resolve().parents[1]
RTOL = 2e-3

# Per training path: the version these values were recorded with, then per task the
# logged loss of every step and the L2 norm of the weight change.
RECORDED = json.loads((Path(__file__).parent / "training_version.json").read_text())

DATA = {
    "sst2": dict(max_length=32, train_size=64, search_size=16, dev_size=8),
    "squad": dict(max_length=64, doc_stride=32, train_size=16, search_size=8, dev_size=4),
}


def path_result(path: str, task: str, data_dir: Path, output_dir: Path) -> dict[str, list]:
    """Train a tiny random BERT for a few steps along one training path."""
    data = prepare_task_data(
        task, load_tokenizer("random:tiny-bert"), data_dir, seed=0, **DATA[task]
    )
    model = build_model("random:tiny-bert", data, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(
        output_dir=output_dir,
        learning_rate=1e-3,
        max_steps=4,
        log_every=1,
        checkpoint_every=100,
        progress=False,
        seed=0,
        length_drop=LengthDropConfig() if path == "lengthdrop" else None,
    )
    result = train_model(model, data, config, batch_size=8, resume_from=None)
    change = sum(
        float((p.detach() - b).pow(2).sum())
        for p, b in zip(model.parameters(), before, strict=True)
    )
    return {"losses": [row["loss"] for row in result.history], "weight_change": [math.sqrt(change)]}


@pytest.mark.parametrize("path", sorted(TRAINING_VERSIONS))
@pytest.mark.parametrize("task", sorted(DATA))
def test_a_training_path_computes_what_its_version_says(tmp_path, data_dir, path, task):
    recorded = RECORDED[path]
    assert recorded["version"] == TRAINING_VERSIONS[path], (
        f"TRAINING_VERSIONS[{path!r}] is {TRAINING_VERSIONS[path]} but "
        f"tests/training_version.json holds version {recorded['version']}: record this "
        "version's results there (run this test and copy the values it prints)"
    )
    got = path_result(path, task, data_dir, tmp_path)
    print(json.dumps({path: {task: got}}))
    expected = recorded[task]
    for key in ("losses", "weight_change"):
        assert len(got[key]) == len(expected[key])
        for now, then in zip(got[key], expected[key], strict=True):
            assert math.isclose(now, then, rel_tol=RTOL, abs_tol=1e-6), (
                f"the {path} training path on {task} now computes something else ({key}: "
                f"{got[key]} vs recorded {expected[key]}). If that is intended, bump "
                f"TRAINING_VERSIONS[{path!r}] in latlib/train.py (finished runs of the old "
                "version are then retrained, never resumed) and record the new values in "
                "tests/training_version.json"
            )


# ----------------------------------------------------------------- the run folders

# The smoke profile's run folders as this code names them. A refactor must leave these
# names alone: a changed name means every finished run of every user retrains.
PINNED_RUN_DIRS = {
    ("sst2", "finetune"): "finetune-84127e9949bd",
    ("sst2", "lengthdrop"): "lengthdrop-4c67a52e0b26",
}


def smoke_params(task: str = "sst2"):
    return task_params(load_params(REPO / "profiles" / "smoke.yaml"), task)


@pytest.mark.parametrize(("task", "stage"), sorted(PINNED_RUN_DIRS))
def test_run_folders_depend_on_parameters_and_versions_only(task, stage):
    name = training_run_dir(smoke_params(task), TaskPaths(task), stage).name
    assert name == PINNED_RUN_DIRS[(task, stage)]


def test_bumping_a_version_moves_that_path_and_what_starts_from_it(monkeypatch):
    params, paths = smoke_params(), TaskPaths("sst2")
    before = {s: training_run_dir(params, paths, s) for s in ("finetune", "lengthdrop")}
    monkeypatch.setitem(TRAINING_VERSIONS, "lengthdrop", TRAINING_VERSIONS["lengthdrop"] + 1)
    assert training_run_dir(params, paths, "finetune") == before["finetune"]
    assert training_run_dir(params, paths, "lengthdrop") != before["lengthdrop"]
    monkeypatch.setitem(TRAINING_VERSIONS, "finetune", TRAINING_VERSIONS["finetune"] + 1)
    assert training_run_dir(params, paths, "finetune") != before["finetune"]


def interrupted_run(output_dir: Path, data_dir: Path):
    """A 3-step fine-tuning run killed after its first checkpoint; returns what resumes it."""
    data = prepare_task_data(
        "sst2", load_tokenizer("random:tiny-bert"), data_dir, seed=0, **DATA["sst2"]
    )
    config = TrainConfig(
        output_dir=output_dir, max_steps=3, checkpoint_every=1, progress=False, learning_rate=1e-3
    )

    def kill(step: int) -> None:
        raise KeyboardInterrupt

    loader = make_dataloader(data.train, data.tokenizer, 16, shuffle=True, seed=config.seed)
    with pytest.raises(KeyboardInterrupt):
        train(build_model("random:tiny-bert", data), loader, config, on_checkpoint=kill)
    return lambda: train(build_model("random:tiny-bert", data), loader, config)


def test_a_checkpoint_of_another_training_version_is_never_resumed(tmp_path, data_dir, monkeypatch):
    resume = interrupted_run(tmp_path, data_dir)
    monkeypatch.setitem(TRAINING_VERSIONS, "finetune", TRAINING_VERSIONS["finetune"] + 1)
    with pytest.raises(ValueError, match=r"training_version: 1 -> 2\)"):
        resume()


def test_a_checkpoint_of_the_same_version_resumes(tmp_path, data_dir):
    result = interrupted_run(tmp_path, data_dir)()
    assert result.resumed_from is not None and result.global_step == 3


def test_the_version_of_a_config_is_its_path():
    assert train_module.training_path(TrainConfig(output_dir=".")) == "finetune"
    config = TrainConfig(output_dir=".", length_drop=LengthDropConfig())
    assert train_module.training_path(config) == "lengthdrop"
    assert train_module.run_settings(config)["training_version"] == TRAINING_VERSIONS["lengthdrop"]
