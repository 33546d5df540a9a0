"""params.yaml and the profiles: every profile valid, bad values refused before any work."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO_ROOT

from latlib.pipeline.params import RANGES, SCHEMA, check_params, load_params, task_params

PROFILES = sorted(p.stem for p in (REPO_ROOT / "profiles").glob("*.yaml"))


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "profiles" / "default.yaml").read_text())


def test_the_committed_params_are_the_default_profile():
    assert (REPO_ROOT / "params.yaml").read_text() == (
        REPO_ROOT / "profiles" / "default.yaml"
    ).read_text()


def test_the_profiles_exist():
    assert PROFILES == ["cpu-full", "default", "paper", "paper-distilbert", "smoke"]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_for_each_of_its_tasks(profile):
    params = load_params(REPO_ROOT / "profiles" / f"{profile}.yaml")
    assert params["profile"] == profile
    for task in params["tasks"]:
        merged = task_params(params, task)
        config = merged.train_config("lengthdrop", "runs/x")
        assert config.length_drop is not None
        assert (
            config.length_drop.length_drop_ratio_bound
            == merged.lengthdrop["length_drop_ratio_bound"]
        )
        assert merged.train_config("finetune", "runs/x").length_drop is None


def test_paper_profile_uses_the_reference_backbones_and_settings():
    params = load_params(REPO_ROOT / "profiles" / "paper.yaml")
    sst2, squad = task_params(params, "sst2"), task_params(params, "squad")
    assert sst2.model["backbone"] == "bert-base-cased"
    assert squad.model["backbone"] == "bert-base-uncased"
    assert squad.data["max_length"] == 384 and squad.data["doc_stride"] == 128
    distil = load_params(REPO_ROOT / "profiles" / "paper-distilbert.yaml")
    assert task_params(distil, "sst2").model["backbone"] == "distilbert-base-cased"
    assert task_params(distil, "squad").model["backbone"] == "distilbert-base-uncased"
    assert sst2.finetune["learning_rate"] == 2e-5 and squad.finetune["learning_rate"] == 5e-5
    assert sst2.lengthdrop["num_epochs"] == 5.0
    assert (sst2.search["population_size"], sst2.search["mutation_size"]) == (20, 30)
    assert sst2.data["search_on"] == "dev"


def test_overrides_apply_to_their_task_only():
    params = default_params()
    params["tasks"] = ["sst2", "squad"]
    params["finetune"]["overrides"] = {"squad": {"learning_rate": 3.0e-5}}
    assert task_params(params, "squad").finetune["learning_rate"] == 3e-5
    assert task_params(params, "sst2").finetune["learning_rate"] == 5e-5
    assert task_params(params, "squad").data["max_length"] == 384


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p: p["finetune"].update(learning_rate="5e-5"), r"5\.0e-5: YAML reads"),
        (lambda p: p["search"].update(populaton_size=3), "unknown key search.populaton_size"),
        (lambda p: p.update(tasks=["sst5"]), "unknown task 'sst5'"),
        (lambda p: p.update(tasks=[]), "non-empty list"),
        (lambda p: p.pop("search"), "section 'search' is missing"),
        (lambda p: p["search"].pop("iterations"), r"search lacks \['iterations'\]"),
        (lambda p: p["lengthdrop"].update(kl_direction="sideways"), "kl_direction"),
        (lambda p: p["lengthdrop"].update(length_drop_ratio_bound=1.5), "length_drop_ratio"),
        (lambda p: p["finetune"].update(num_epochs=0), r"finetune.num_epochs must be > 0"),
        (lambda p: p["data"].update(search_on="test"), "search_on"),
        (lambda p: p["model"].update(length_mode="tokens"), "length_mode"),
        (lambda p: p["search"].update(constant_rates=[1.0, 1.2]), "constant_rates"),
        (lambda p: p["lengthdrop"].update(use_smallest="yes"), "use_smallest must be bool"),
        (lambda p: p["data"]["overrides"].update(sst5={}), "unknown task 'sst5'"),
        (
            lambda p: p["data"]["overrides"].update(squad={"max_len": 3}),
            "unknown key data.overrides.squad.max_len",
        ),
    ],
)
def test_bad_params_are_refused_with_the_key_named(edit, message):
    params = copy.deepcopy(default_params())
    edit(params)
    with pytest.raises(ValueError, match=message):
        check_params(params)


# (section, key, a bad value, what the message says it must be): every numeric key of
# every section, at a value that would otherwise fail late (or not at all).
BAD_VALUES = [
    ("model", "backbone", "", "a non-empty name"),
    ("model", "length_mode", "tokens", "one of"),
    ("data", "seed", -1, ">= 0"),
    ("data", "search_on", "test", "one of"),
    ("data", "max_length", -5, ">= 2"),
    ("data", "max_length", 1, ">= 2"),
    ("data", "doc_stride", 0, ">= 1"),
    ("data", "train_size", 0, "null or >= 1"),
    ("data", "search_size", 0, "a row count >= 1 or a fraction in (0, 1)"),
    ("data", "search_size", 2000.0, "a row count >= 1 or a fraction in (0, 1)"),
    ("data", "search_size", -0.5, "a row count >= 1 or a fraction in (0, 1)"),
    ("data", "dev_size", -3, "null or >= 1"),
    ("data", "data_dir", 3, "str or null"),
    ("finetune", "learning_rate", 0.0, "> 0"),
    ("finetune", "learning_rate", float("inf"), "a finite number"),
    ("finetune", "num_epochs", -1.0, "> 0"),
    ("finetune", "max_steps", 0, "null or >= 1"),
    ("finetune", "batch_size", -32, ">= 1"),
    ("finetune", "gradient_accumulation_steps", 0, ">= 1"),
    ("finetune", "warmup_ratio", 1.0, "in [0, 1)"),
    ("finetune", "warmup_ratio", -0.1, "in [0, 1)"),
    ("finetune", "weight_decay", -0.01, ">= 0"),
    ("finetune", "max_grad_norm", 0.0, "> 0"),
    ("finetune", "seed", -1, ">= 0"),
    ("finetune", "checkpoint_every", 0, ">= 1"),
    ("finetune", "eval_batch_size", 0, ">= 1"),
    ("lengthdrop", "learning_rate", -2.0e-5, "> 0"),
    ("lengthdrop", "batch_size", 0, ">= 1"),
    ("lengthdrop", "eval_batch_size", 0, ">= 1"),
    ("lengthdrop", "max_steps", -1, "null or >= 1"),
    ("lengthdrop", "num_sandwich", -1, ">= 0"),
    ("lengthdrop", "length_drop_ratio_bound", 0.0, "in (0, 1)"),
    ("lengthdrop", "length_drop_ratio_bound", 1.0, "in (0, 1)"),
    ("lengthdrop", "layer_dropout_prob", 1.0, "in [0, 1)"),
    ("lengthdrop", "kl_direction", "sideways", "one of"),
    ("lengthdrop", "use_smallest", 1, "bool"),
    ("search", "population_size", 0, ">= 1"),
    ("search", "mutation_size", -1, ">= 0"),
    ("search", "crossover_size", -1, ">= 0"),
    ("search", "mutation_prob", 2.0, "in [0, 1]"),
    ("search", "mutation_prob", float("nan"), "a finite number"),
    ("search", "iterations", -1, ">= 0"),
    ("search", "seed", -1, ">= 0"),
    ("search", "constant_rates", [], "a non-empty list of rates in (0, 1]"),
    ("search", "constant_rates", [1.0, 0.0], "a non-empty list of rates in (0, 1]"),
    ("search", "eval_batch_size", 0, ">= 1"),
    ("search", "cache_mb", -1, ">= 0"),
    ("evaluate", "tolerance", -0.5, ">= 0"),
    ("evaluate", "table_dev_size", 0, "null or >= 1"),
]


@pytest.mark.parametrize("section,key,bad,rule", BAD_VALUES)
def test_every_bad_value_is_refused_naming_its_key(section, key, bad, rule):
    params = default_params()
    params[section][key] = bad
    with pytest.raises(
        ValueError, match=re.escape(f"{section}.{key} must be") + ".*" + re.escape(rule)
    ):
        check_params(params)


@pytest.mark.parametrize("section,key,bad,rule", BAD_VALUES[::4])
def test_a_bad_override_is_refused_naming_the_override(section, key, bad, rule):
    params = default_params()
    params["tasks"] = ["sst2"]  # an override of a task not run is still checked
    params[section]["overrides"] = {"squad": {key: bad}}
    name = f"{section}.overrides.squad.{key} must be"
    with pytest.raises(ValueError, match=re.escape(name) + ".*" + re.escape(rule)):
        check_params(params)


def test_every_key_with_a_number_or_a_word_has_a_rule():
    for stage, schema in SCHEMA.items():
        for key, expected in schema.items():
            types = expected if isinstance(expected, tuple) else (expected,)
            if key != "data_dir" and ({int, float, str, list} & set(types)):
                assert key in RANGES[stage], f"{stage}.{key} has no range in RANGES"


def test_cross_key_checks_name_both_keys_and_the_task():
    params = default_params()
    params["data"]["overrides"]["squad"]["doc_stride"] = 384
    with pytest.raises(
        ValueError,
        match=r"data.overrides.squad.doc_stride \(384\) must be smaller "
        r"than data.overrides.squad.max_length \(384\) for squad",
    ):
        check_params(params)
    # classification never reads doc_stride: the default profile's sst2 uses 128 = 128
    assert task_params(default_params(), "sst2").data["doc_stride"] == 128


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p: p["bench"].update(repeats=2), "bench.repeats must be >= 3"),
        (lambda p: p["bench"].update(threads=0), "bench.threads must be null or >= 1"),
        (lambda p: p["bench"].update(max_examples={1: 0}), "bench.max_examples must be"),
        (
            lambda p: p["bench"]["overrides"]["squad"].update(repeats=1),
            "bench.overrides.squad.repeats",
        ),
        (lambda p: p["bench"].update(batch_sizes=[0]), "bench.batch_sizes must be"),
        (lambda p: p["variance"].update(seeds=[-1]), "variance.seeds must be"),
        (lambda p: p["variance"].update(tasks=["qnli"]), "variance.tasks names"),
        (lambda p: p["ablations"].update(max_steps=0), "ablations.max_steps must be"),
        (
            lambda p: p["ablations"]["search"].update(population_size=0),
            "ablations.search.population_size must be >= 1",
        ),
        (
            lambda p: p["ablations"]["variants"].update(bad={"layer_dropout_prob": 1.5}),
            r"ablations.variants.bad.layer_dropout_prob must be in \[0, 1\)",
        ),
        (
            lambda p: p["ablations"]["variants"].update(bad={"min_length": 0}),
            "ablations.variants.bad.min_length must be >= 1",
        ),
        (lambda p: p.update(serach={}), r"unknown section\(s\) \['serach'\]"),
        (lambda p: p.update(tasks=["sst2", "sst2"]), "names a task twice"),
    ],
)
def test_the_other_stages_sections_are_checked_at_load_time(tmp_path, edit, message):
    params = default_params()
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: .*{message}"):
        load_params(path)


@pytest.mark.parametrize(
    "backbone,message",
    [
        ("./no/such/folder", "not an existing folder .* not an embedded name .* not a hub name"),
        ("/no/such/folder", "not an existing folder"),
        ("embedded:bert-large", "unknown embedded backbone"),
        ("random:huge-bert", "unknown random backbone"),
    ],
)
def test_a_backbone_that_cannot_exist_is_refused_at_load_time(backbone, message):
    params = default_params()
    params["model"]["backbone"] = backbone
    with pytest.raises(ValueError, match=f"model.backbone: .*{message}"):
        check_params(params)
    params = default_params()
    params["model"]["overrides"] = {"squad": {"backbone": backbone}}
    with pytest.raises(ValueError, match=f"model.overrides.squad.backbone: .*{message}"):
        check_params(params)


def test_backbones_that_may_exist_are_accepted(tmp_path):
    params = default_params()
    (tmp_path / "config.json").write_text("{}")
    for backbone in ("bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2", str(tmp_path)):
        params["model"]["backbone"] = backbone
        check_params(params)  # the hub is asked only when the model is loaded
    params["model"]["backbone"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model.backbone: the folder .*empty has no config.json"):
        check_params(params)


def test_bad_values_stop_a_stage_before_any_work(tmp_path, capsys):
    from latlib.pipeline.cli import main

    params = default_params()
    params["finetune"]["eval_batch_size"] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as stopped:
        main(["stage", "finetune", "--task", "sst2", "--params", str(path)])
    assert stopped.value.code == 2
    assert "finetune.eval_batch_size must be >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]  # nothing made


def test_check_params_command(tmp_path, capsys):
    from latlib.pipeline.cli import main

    main(["check-params", "--params", str(REPO_ROOT / "profiles" / "default.yaml")])
    assert "default.yaml: every section is valid (3 tasks)" in capsys.readouterr().out
    params = default_params()
    params["search"]["mutation_prob"] = 2.0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as refused:
        main(["check-params", "--params", str(path)])
    assert refused.value.code == 2
    assert "search.mutation_prob must be in [0, 1], got 2.0" in capsys.readouterr().err


def test_missing_params_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="profiles"):
        load_params(tmp_path / "params.yaml")


def test_run_folder_digest_follows_the_sections_it_names():
    params = default_params()
    base = task_params(params, "sst2")
    assert base.digest("finetune") == task_params(params, "sst2").digest("finetune")
    params["search"]["iterations"] = 99
    assert task_params(params, "sst2").digest("finetune") == base.digest("finetune")
    params["finetune"]["seed"] = 7
    assert task_params(params, "sst2").digest("finetune") != base.digest("finetune")
