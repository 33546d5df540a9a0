"""The whole pipeline, end to end: the ``smoke`` profile through papermill and ``dvc repro``
in a temporary copy of the project (a few minutes on 2 CPU cores)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
from smoke import tree_state  # noqa: E402  (tools/ is not a package)

TASKS = ("sst2", "squad")
PER_TASK_STAGES = ("finetune", "lengthdrop", "search", "evaluate", "variance", "bench")
# The bench stage measures time: its outputs are expected to change on a rerun.
MEASUREMENTS = ("results/bench/*", "figures/*-latency.*", "notebooks/executed/06_bench-*")


def run(command: list[str], cwd: Path) -> str:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ["PATH"],
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def git(project: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], project)


def dvc(project: Path, *args: str) -> str:
    return run([str(Path(sys.executable).parent / "dvc"), *args], project)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir) -> tuple[Path, str, tuple, tuple]:
    """``make smoke``'s command, run once: a scratch copy of the project on the smoke
    profile after one ``dvc repro``, what the command printed, and the project's working
    tree before and after."""
    root = tmp_path_factory.mktemp("project")
    before = tree_state(REPO_ROOT)
    printed = run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "smoke.py"),
            "--dest",
            str(root),
            "--data-dir",
            str(data_dir),
        ],
        REPO_ROOT,
    )
    return root, printed, before, tree_state(REPO_ROOT)


@pytest.fixture(scope="module")
def project(smoke_run) -> Path:
    """A copy of the project's source files on the smoke profile, after one ``dvc repro``."""
    return smoke_run[0]


def test_the_quick_look_leaves_the_project_untouched(smoke_run):
    root, printed, before, after = smoke_run
    assert after == before, "make smoke changed files of the project itself"
    assert f"nothing in {REPO_ROOT} changed" in printed
    assert str(root / "results" / "summary.md") in printed
    assert str(root / "figures") in printed
    assert str(root / "notebooks" / "executed") in printed
    assert yaml.safe_load((root / "params.yaml").read_text())["profile"] == "smoke"
    assert (root / "results" / "summary.md").is_file()


def lock_outputs(project: Path) -> dict[str, list[str]]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        name: [out["path"] for out in stage.get("outs", [])]
        for name, stage in lock["stages"].items()
    }


def test_every_stage_ran_and_every_declared_output_exists(project):
    outputs = lock_outputs(project)
    expected = {f"{stage}@{task}" for stage in PER_TASK_STAGES for task in TASKS}
    assert set(outputs) == expected | {"ablations", "report", "validate"}
    for stage, paths in outputs.items():
        for path in paths:
            assert (project / path).exists(), f"{stage} declared {path} but did not write it"
    for task in TASKS:
        for suffix in ("png", "svg"):
            assert (project / "figures" / f"{task}-pareto.{suffix}").stat().st_size > 1000
    assert "### squad" in (project / "results" / "summary.md").read_text()


@pytest.mark.parametrize("task", TASKS)
def test_metrics_are_numbers_in_range(project, task):
    results = project / "results" / "tasks" / task
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["metric"] == ("accuracy" if task == "sst2" else "f1")
    for key in ("standard", "lat_full", "lat_best"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["lat_best"] >= metrics["lat_full"] - 1e-9 or metrics["frontier_size"] >= 1
    if metrics["cheapest_within_tolerance"] is not None:
        assert metrics["cheapest_flops_reduction"] >= 1.0
        assert metrics["cheapest_paper_flops_reduction"] >= 1.0
    paper_curves = {
        "standard + constant rate",
        "LAT + constant rate",
        "LAT + evolutionary search",
        "LAT + random search",
    }
    # SQuAD adds the searched configurations without Drop-and-Restore (claim 3).
    extra = {"LAT + evolutionary search, no Drop-and-Restore"} if task == "squad" else set()
    assert set(metrics["hypervolume"]) == paper_curves | extra
    assert all(value >= 0.0 for value in metrics["hypervolume"].values())
    lengthdrop = json.loads((results / "lengthdrop.json").read_text())
    assert 0.0 <= lengthdrop[f"dev_{metrics['metric']}_smallest"] <= 100.0
    search = json.loads((results / "search.json").read_text())
    assert search["evaluations"] >= search["frontier_size"] >= 1


def test_squad_shows_its_searched_points_without_drop_and_restore(project):
    import pandas as pd

    table = pd.read_csv(project / "results" / "tasks" / "squad" / "table.csv")
    configs = dict(zip(table["model"], table["length_config"], strict=True))
    scored = table.dropna(subset=["f1"])
    assert scored["exact_match"].between(0.0, 100.0).all()  # EM beside F1 on every row
    assert (scored["exact_match"] <= scored["f1"] + 1e-9).all()
    unrestored = [name for name in configs if name.endswith(", no Drop-and-Restore")]
    assert unrestored, "the SQuAD table has no row without Drop-and-Restore"
    for name in unrestored:
        assert configs[name] == configs[name.removesuffix(", no Drop-and-Restore")]
    curves = pd.read_csv(project / "results" / "tasks" / "squad" / "curves.csv")
    by_curve = curves.groupby("curve")["config"].apply(set)
    assert (
        by_curve["LAT + evolutionary search, no Drop-and-Restore"]
        == by_curve["LAT + evolutionary search"]
    )
    # why the two agree or differ: predictions and answers on dropped tokens
    shares = json.loads((project / "results" / "tasks" / "squad" / "metrics.json").read_text())[
        "drop_and_restore"
    ]
    assert shares["windows"] >= shares["answer_windows"] >= 1
    assert 0.0 <= shares["predicted_on_dropped"] <= 1.0
    assert 0.0 <= shares["answer_start_dropped"] <= 1.0


def test_the_anytime_model_loads_with_its_frontier(project):
    from latlib import LengthAdaptiveModel

    model = LengthAdaptiveModel.from_pretrained(project / "models" / "sst2" / "anytime")
    chosen = model.set_budget(1.0)
    assert model.config.length_config == chosen.length_config
    with pytest.raises(ValueError, match="below the cheapest frontier point"):
        model.set_budget(0.01)


def test_executed_notebooks_are_stripped_and_show_their_figures(project):
    executed = project / "notebooks" / "executed"
    for path in executed.glob("*.ipynb"):
        notebook = json.loads(path.read_text())
        assert "papermill" not in notebook["metadata"]
        for index, cell in enumerate(notebook["cells"]):
            assert cell["id"] == f"cell-{index}"
            assert "execution" not in cell["metadata"]
            for output in cell.get("outputs", []):
                assert output.get("name") != "stderr"
    evaluate = json.loads((executed / "04_evaluate-sst2.ipynb").read_text())
    images = [
        output
        for cell in evaluate["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 1  # the Pareto figure, once


def test_a_second_repro_is_a_no_op(project):
    assert json.loads(dvc(project, "status", "--json")) == {}


@contextlib.contextmanager
def edited_param(project: Path, section: str, key: str, value: object):
    """params.yaml with one value changed, restored afterwards."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        params_file.write_text(original)


# One bad value per section of params.yaml, and a word its error must hold.
BAD_VALUES = (
    ("model", "length_mode", "sideways", "model.length_mode"),
    ("data", "max_length", -5, "data.max_length"),
    ("finetune", "eval_batch_size", 0, "finetune.eval_batch_size"),
    ("lengthdrop", "num_sandwich", -1, "lengthdrop.num_sandwich"),
    ("search", "mutation_prob", 2.0, "search.mutation_prob"),
    ("evaluate", "tolerance", -1.0, "evaluate.tolerance"),
    ("bench", "repeats", 0, "bench.repeats"),
    ("variance", "seeds", [43, 43], "variance.seeds"),
    ("ablations", "max_steps", 0, "ablations.max_steps"),
)


def output_digests(project: Path) -> dict[str, str]:
    """A digest of every file a stage writes: models, results, figures, notebooks, lock."""
    import hashlib

    folders = ("models", "results", "figures", "notebooks/executed")
    files = [f for folder in folders for f in (project / folder).rglob("*") if f.is_file()]
    files.append(project / "dvc.lock")
    return {str(f.relative_to(project)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.parametrize(("section", "key", "bad", "named"), BAD_VALUES)
def test_a_bad_parameter_fails_before_dvc_touches_any_output(project, section, key, bad, named):
    """`dvc repro` with a bad value stops at the validate stage, which every other stage
    depends on: DVC has removed no output of the stages the edit would rerun."""
    before = output_digests(project)
    with edited_param(project, section, key, bad):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dvc"), "repro"],
            cwd=project,
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            },
            capture_output=True,
            text=True,
        )
    assert done.returncode != 0, f"dvc repro accepted {section}.{key}: {bad!r}"
    assert named in done.stdout + done.stderr
    assert output_digests(project) == before
    assert json.loads(dvc(project, "status", "--json")) == {}


def test_changing_a_search_parameter_reruns_only_search_and_what_follows(project):
    with edited_param(project, "search", "seed", 1):
        changed = set(json.loads(dvc(project, "status", "--json")))
    # The bench times the search, and the ablations run searches of their own.
    expected = {f"{stage}@{task}" for stage in ("search", "evaluate", "bench") for task in TASKS}
    # validate checks every edit; its unchanged stamp reruns nothing by itself
    assert changed == expected | {"ablations", "validate"}


def test_ablations_compare_every_variant(project):
    import pandas as pd

    params = yaml.safe_load((project / "params.yaml").read_text())["ablations"]
    table = pd.read_csv(project / "results" / "ablations" / "table.csv")
    assert list(table["variant"]) == list(params["variants"])
    assert table["hypervolume"].ge(0).all() and table["frontier_size"].ge(1).all()
    assert table["accuracy_full"].between(0, 100).all()
    report = json.loads((project / "notebooks" / "executed" / "05_report.ipynb").read_text())
    printed = "".join(
        "".join(output.get("text", ""))
        for cell in report["cells"]
        for output in cell.get("outputs", [])
    )
    assert "loses the most" in printed  # the report reads the ablation table


@pytest.mark.parametrize("task", TASKS)
def test_variance_scores_every_seed_and_the_report_shows_the_spread(project, task):
    import pandas as pd

    params = yaml.safe_load((project / "params.yaml").read_text())
    seeds = [params["finetune"]["seed"], *params["variance"]["seeds"]]
    results = project / "results" / "tasks" / task
    per_seed = pd.read_csv(results / "seeds.csv")
    assert sorted(per_seed["seed"].unique()) == sorted(seeds)
    main_table = pd.read_csv(results / "table.csv")
    metric = "accuracy" if task == "sst2" else "f1"
    main_run = per_seed[per_seed["seed"] == seeds[0]].set_index("model")["score"]
    for _, row in main_table.dropna(subset=["length_config"]).iterrows():
        # The main seed's scores are the main table's: same models, same configurations.
        assert main_run[row["model"]] == pytest.approx(row[metric], abs=1e-9)
    spread = pd.read_csv(results / "variance.csv")
    assert (spread["seeds"] == len(seeds)).all()
    assert spread.loc[spread["model"] == "standard", "delta_mean"].iloc[0] == 0.0
    assert "over seeds" in (project / "results" / "summary.md").read_text()
    other = per_seed[per_seed["seed"] == seeds[1]].set_index("model")["score"]
    assert set(other.index) == set(main_run.index)
    # Every seed trained both models in a run folder of its own.
    for stage in ("finetune", "lengthdrop"):
        assert len(list((project / "runs" / task).glob(f"{stage}-*/model"))) == len(seeds)


def test_search_and_evaluate_on_two_processes_write_what_one_process_wrote(project):
    """The stages under torchrun (2 CPU processes, gloo): the search evaluates again from
    an empty store, split across processes, and every result file comes out the same."""
    from test_distributed import free_port

    results = project / "results" / "tasks" / "sst2"
    compared = ("search.json", "frontier.json", "table.csv", "metrics.json")
    before = {name: (results / name).read_bytes() for name in compared}
    (store_dir,) = (project / "runs" / "sst2").glob("search-*")
    records = sorted((store_dir / "evolutionary.jsonl").read_text().splitlines()[1:])
    shutil.rmtree(store_dir)
    for stage in ("search", "evaluate"):
        run(
            [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(free_port()), "-m", "latlib", "stage", stage,
                "--task", "sst2",
            ],
            project,
        )  # fmt: skip
    for name in compared:
        assert (results / name).read_bytes() == before[name], name
    rewritten = sorted((store_dir / "evolutionary.jsonl").read_text().splitlines()[1:])
    # The time an evaluation took differs, and with it each record's digest (it covers it).
    timing = ("seconds", "digest")
    scored = [{k: v for k, v in json.loads(r).items() if k not in timing} for r in records]
    assert [
        {k: v for k, v in json.loads(r).items() if k not in timing} for r in rewritten
    ] == scored
    assert json.loads(dvc(project, "status", "--json")) == {}


def test_explore_notebook_runs_on_the_pipeline_outputs(project):
    output = project / "explore-run.ipynb"
    run(
        [
            sys.executable,
            "tools/run_notebook.py",
            "notebooks/explore.py",
            str(output),
            "-p",
            "budget",
            "0.95",
        ],
        project,
    )
    notebook = json.loads(output.read_text())
    images = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    # every task's curves, the frontier with the chosen point, the surviving tokens
    assert len(images) == 3
    last = notebook["cells"][-1]
    assert any("image/png" in shown.get("data", {}) for shown in last["outputs"])
    assert "is not here" not in json.dumps(last["outputs"])  # the model exists here
    output.unlink()


def test_a_rerun_from_scratch_reproduces_every_committed_output(project):
    """Last: it retrains everything. Checkpoints and search stores are deleted first, so
    the run really recomputes; only the bench stage's measurements may differ."""
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first run")
    lock_before = results_lock(project)
    shutil.rmtree(project / "runs")
    dvc(project, "repro", "--force")
    excluded = [f":(exclude,glob){pattern}" for pattern in (*MEASUREMENTS, "dvc.lock")]
    status = git(project, "status", "--porcelain", "--", ".", *excluded)
    diff = git(project, "diff", "--stat", "--", ".", *excluded)
    assert status == "", f"a rerun changed committed outputs:\n{status}\n{diff}"
    assert results_lock(project) == lock_before


def results_lock(project: Path) -> dict:
    """dvc.lock without the bench stages (whose outputs are measurements)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {name: stage for name, stage in lock["stages"].items() if not name.startswith("bench@")}


def test_bench_tables_hold_the_cases_side_by_side(project):
    import pandas as pd

    from latlib.pipeline.bench import SEARCH_PATHS

    for task in TASKS:
        table = pd.read_csv(project / "results" / "bench" / f"{task}.csv")
        assert set(table["batch_size"]) == {1, 8}
        for _, rows in table.groupby("batch_size"):
            assert rows["case"].iloc[0] == "transformers (sdpa)"
            assert rows["speedup"].iloc[0] == 1.0
            assert "latlib, full length" in set(rows["case"])
            assert (rows["flops_ratio"] >= 1.0 - 1e-9).all()
            assert (rows["efficiency"] > 0).all()
        search = pd.read_csv(project / "results" / "bench" / f"{task}-search.csv")
        params = yaml.safe_load((project / "params.yaml").read_text())["bench"]
        if params.get("overrides", {}).get(task, {}).get("search_iterations") == 0:
            # not timed for this task, but the file dvc.yaml declares is there and says so
            assert (
                search.empty
                and "Not timed" in (project / "results" / "bench" / f"{task}-search.md").read_text()
            )
            continue
        assert list(search["path"]) == [path for path, _, _ in SEARCH_PATHS]
        assert search["same_scores"].all()  # the cache never changes a score
        assert search["evaluations"].nunique() == 1 and search["evaluations"].iloc[0] > 0


def test_a_refactor_reruns_a_stage_but_never_retrains(project):
    """A change to the training code that computes the same thing (here a comment) makes
    DVC rerun the stage, which finds its finished run and trains no step."""
    source = project / "latlib" / "train.py"
    original = source.read_text()
    source.write_text(original + "\n# moved, renamed, refactored: the same computation\n")
    try:
        assert "finetune@sst2" in json.loads(dvc(project, "status", "--json"))
        dvc(project, "repro", "finetune@sst2")
        timing = json.loads((project / "runs" / "sst2" / "timings.json").read_text())["finetune"]
        assert timing["resumed_from"] is not None and timing["steps_per_second"] == 0.0
    finally:
        source.write_text(original)
        dvc(project, "repro", "finetune@sst2")


def test_the_plan_says_what_repro_would_run_and_how_long(project):
    plan = [sys.executable, str(project / "tools" / "plan.py")]
    assert "every stage is up to date" in run(plan, project)
    with edited_param(project, "evaluate", "tolerance", 0.75):
        printed = run(plan, project)
    # the stages whose parameters changed, and the report downstream of them
    assert "evaluate@sst2" in printed and "evaluate@squad" in printed and "report" in printed
    assert "finetune@sst2" not in printed and "bench@sst2" not in printed
    assert "last run here" in printed  # the smoke run's own stage times
    # a total (under a minute on a fast machine: the smoke profile's stages are short)
    assert "total: about" in printed or "total: under a minute" in printed


def test_the_plan_works_where_models_are_missing(project):
    """As on a fresh clone: `dvc repro --dry` would stop at the first stage whose input
    model is not there yet; the plan lists the whole chain."""
    models, away = project / "models", project / "models-away"
    models.rename(away)
    try:
        printed = run([sys.executable, str(project / "tools" / "plan.py"), "search@sst2"], project)
    finally:
        away.rename(models)
    for stage in ("finetune@sst2", "lengthdrop@sst2", "search@sst2"):
        assert stage in printed
    assert "evaluate@sst2" not in printed and "squad" not in printed
