"""params.yaml and the profiles: every profile valid, bad values refused before any work."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from latlib.pipeline.params import check_params, load_params, task_params

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
        (lambda p: p["finetune"].update(num_epochs=0), "num_epochs must be positive"),
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
