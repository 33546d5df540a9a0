"""Training runs with params.yaml's settings: a task's data, the run folder, the run.

The training stages, the ablations and the variance stage all go through here, so that
a setting is read in one place and a finished run is found again by every stage.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..evaluation import evaluate_model
from ..features import TaskData, load_tokenizer, prepare_task_data, primary_metric
from ..lengths import smallest_config, to_model_lengths
from ..model import LengthAdaptiveModel
from ..train import TRAINING_VERSIONS, TrainResult, build_model, train_model
from .params import TaskParams
from .paths import TaskPaths


def task_data(params: TaskParams, tokenizer_from: str | Path, with_train: bool) -> TaskData:
    """The task's splits; ``with_train=False`` skips tokenising the training set."""
    kwargs = params.data_kwargs()
    if not with_train:
        kwargs["train_size"] = 1  # the search split is drawn before subsetting
    return prepare_task_data(params.task, load_tokenizer(tokenizer_from), **kwargs)


def training_run_dir(
    params: TaskParams, paths: TaskPaths, stage: str, prefix: str | None = None
) -> Path:
    """The folder of a training run: same parameters and same training semantics -> same
    folder, so a killed stage resumes and a finished run is reused.

    The name is a digest of the parameter sections the run depends on and of the
    ``TRAINING_VERSIONS`` of its path (LengthDrop starts from the fine-tuned model, so it
    depends on both), never of source files: a refactor that computes the same thing
    reuses every finished run; a change in what training computes bumps a version and
    starts new folders. ``prefix`` (default: the stage) names the folder, e.g. one per
    ablation variant.
    """
    sections = ("model", "data", "finetune") + (("lengthdrop",) if stage == "lengthdrop" else ())
    versions = {path: TRAINING_VERSIONS[path] for path in ("finetune", stage)}
    # data.bad_rows decides whether a run may start, not what it computes: the rows
    # trained on are those the data files hold (rows skipped are named in a warning),
    # so it stays out of the name and every folder named before it existed is reused.
    data = {k: v for k, v in params.data.items() if k != "bad_rows"}
    digest = replace(params, data=data).digest(*sections, extra=versions)
    return paths.runs / f"{prefix or stage}-{digest}"


def train_from(
    params: TaskParams, stage: str, init_from: str | Path, data: TaskData, run_dir: Path
) -> tuple[LengthAdaptiveModel, TrainResult]:
    """A model built from ``init_from``, trained with the ``stage`` section in ``run_dir``
    (resumed from its last checkpoint there)."""
    section = getattr(params, stage)
    model = build_model(
        init_from, data, length_mode=params.model["length_mode"], seed=section["seed"]
    )
    config = params.train_config(stage, run_dir, progress=True)  # steps, rate and ETA
    return model, train_model(model, data, config, batch_size=section["batch_size"])


def smallest_score(
    model: LengthAdaptiveModel, data: TaskData, ratio_bound: float, batch_size: int
) -> tuple[tuple[int, ...], float]:
    """LengthDrop's smallest configuration and its dev score."""
    smallest = smallest_config(model.num_layers, data.max_length, ratio_bound)
    lengths = to_model_lengths(smallest, model.config.length_mode, data.max_length)
    score = evaluate_model(model, data, "dev", lengths, batch_size)[primary_metric(data)]
    return smallest, score
