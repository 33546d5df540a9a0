"""Training: LengthDrop's loss terms, checkpoint/resume equality, errors before work."""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert_config
from transformers import AutoTokenizer

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.features import make_dataloader
from latlib.lengthdrop import LengthDropConfig, distillation_loss
from latlib.train import TrainConfig, train


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    return AutoTokenizer.from_pretrained(embedded_path)


def toy_features(rows: int = 24, seed: int = 0) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(rows):
        length = int(torch.randint(4, 16, (1,), generator=generator))
        tokens = torch.randint(5, 120, (length,), generator=generator).tolist()
        ids.append([2, *tokens])
        labels.append(int(tokens[0] % 3))
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids,
            "attention_mask": [[1] * len(x) for x in ids],
            "token_type_ids": [[0] * len(x) for x in ids],
            "labels": labels,
        }
    )


def toy_model(mode="ratio", seed=0) -> LengthAdaptiveModel:
    torch.manual_seed(seed)
    return LengthAdaptiveModel.from_config(
        tiny_bert_config(4), LengthAdaptiveConfig(length_mode=mode, max_length=16)
    )


def loader(tokenizer, batch_size=4, seed=0):
    return make_dataloader(toy_features(), tokenizer, batch_size, shuffle=True, seed=seed)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def record_forward_calls(model) -> list[dict]:
    """The keyword arguments of every forward call of ``model``, in order."""
    calls: list[dict] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    return calls


# ---------------------------------------------------------------- LengthDrop


def test_distillation_directions():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.1, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.5]])
    p_s, p_t = student.softmax(-1), teacher.softmax(-1)
    kl_ts = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    kl_st = (p_s * (p_s.log() - p_t.log())).sum(-1).mean()
    assert torch.allclose(distillation_loss(student, teacher, "teacher_student"), kl_ts)
    assert torch.allclose(distillation_loss(student, teacher, "student_teacher"), kl_st)
    # the teacher is detached: no gradient reaches it
    teacher.requires_grad_(True)
    distillation_loss(student.requires_grad_(True), teacher, "student_teacher").backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("mode", ["ratio", "absolute"])
def test_one_lengthdrop_step_updates_weights_with_the_right_terms(tmp_path, tokenizer, mode):
    model = toy_model(mode)
    before = flat(model)
    calls = record_forward_calls(model)
    config = TrainConfig(
        output_dir=tmp_path,
        learning_rate=1e-3,
        max_steps=1,
        progress=False,
        log_every=1,
        length_drop=LengthDropConfig(num_sandwich=2, layer_dropout_prob=0.0),
    )
    result = train(model, loader(tokenizer), config)
    assert not torch.equal(before, flat(model))
    # full model + smallest + 2 random sub-models
    assert len(calls) == 4
    assert calls[0].get("length_config") is None
    smallest = calls[1]["length_config"]
    assert all(b <= a for a, b in zip(smallest, smallest[1:], strict=False))
    row = result.history[-1]
    assert set(row) >= {"loss", "loss_full", "loss_smallest", "loss_random"}
    expected = (row["loss_full"] + row["loss_smallest"] + 2 * row["loss_random"]) / 4
    assert math.isclose(row["loss"], expected, rel_tol=1e-6)
    assert row["loss_smallest"] >= 0 and row["loss_random"] >= 0  # KL terms


def test_lengthdrop_parts_switch_off(tmp_path, tokenizer):
    model = toy_model()
    calls = record_forward_calls(model)
    config = TrainConfig(
        output_dir=tmp_path,
        max_steps=1,
        progress=False,
        log_every=1,
        length_drop=LengthDropConfig(
            num_sandwich=1, use_smallest=False, inplace_distillation=False, layer_dropout_prob=0.5
        ),
    )
    result = train(model, loader(tokenizer), config)
    assert len(calls) == 2
    assert "loss_smallest" not in result.history[-1]
    # without distillation the sub-model learns from labels: a cross-entropy, not a KL
    assert result.history[-1]["loss_random"] > 0.5


def test_layer_drop_masks_are_sampled(tmp_path, tokenizer):
    model = toy_model()
    calls = record_forward_calls(model)
    config = TrainConfig(
        output_dir=tmp_path,
        max_steps=3,
        progress=False,
        length_drop=LengthDropConfig(layer_dropout_prob=0.5, layer_drop_full=False),
    )
    train(model, loader(tokenizer), config)
    full_passes = calls[::4]
    assert all(c.get("layer_keep") is None for c in full_passes)
    sub_masks = [c["layer_keep"] for i, c in enumerate(calls) if i % 4]
    assert any(not all(mask) for mask in sub_masks)


def test_standard_step_matches_plain_cross_entropy(tmp_path, tokenizer):
    model = toy_model()
    batches = loader(tokenizer)
    batches.batch_sampler.set_epoch(0)
    first = next(iter(batches))
    first.pop("index")
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(**first).logits, first["labels"]).item()
    model.train()
    torch.manual_seed(0)
    config = TrainConfig(output_dir=tmp_path, max_steps=1, progress=False, log_every=1)
    config_model = toy_model()
    for module in config_model.modules():  # no dropout: the logged loss is the clean one
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config_model.hf_config.attention_probs_dropout_prob = 0.0
    config_model.attention_dropout = 0.0
    result = train(config_model, loader(tokenizer), config)
    assert math.isclose(result.history[-1]["loss"], expected, rel_tol=1e-5)


# ---------------------------------------------------------------- checkpoints and resume


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("length_drop", [None, LengthDropConfig(num_sandwich=1)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, tokenizer, length_drop):
    def config(path):
        return TrainConfig(
            output_dir=path,
            learning_rate=1e-3,
            num_epochs=2,  # 12 steps over 2 epochs: the interruption falls mid-epoch
            checkpoint_every=4,
            progress=False,
            gradient_accumulation_steps=1,
            length_drop=length_drop,
        )

    straight = toy_model()
    train(straight, loader(tokenizer), config(tmp_path / "straight"))

    def stop_at_8(step):
        if step == 8:
            raise Interrupt

    first = toy_model()
    with pytest.raises(Interrupt):
        train(first, loader(tokenizer), config(tmp_path / "resumed"), on_checkpoint=stop_at_8)
    # a fresh process: new model object (same init), new loader
    second = toy_model(seed=123)
    result = train(second, loader(tokenizer), config(tmp_path / "resumed"))
    assert result.resumed_from.name == "checkpoint-8"
    assert result.global_step == 12
    assert torch.allclose(flat(straight), flat(second), atol=1e-6, rtol=0)
    logged = [
        json.loads(x)["step"]
        for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == sorted(set(logged))


def test_missing_checkpoint_is_an_error(tmp_path, tokenizer):
    config = TrainConfig(output_dir=tmp_path, max_steps=2, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(toy_model(), loader(tokenizer), config, resume_from=tmp_path / "checkpoint-99")


def short_run(path, max_steps=3, **kwargs) -> TrainConfig:
    """A run with a checkpoint every step (the last two kept)."""
    return TrainConfig(
        output_dir=path,
        learning_rate=1e-3,
        max_steps=max_steps,
        checkpoint_every=1,
        progress=False,
        **kwargs,
    )


def truncate(path, keep_fraction=0.5) -> int:
    """Cut ``path`` to a fraction of its bytes (as an interrupted copy would); its new size."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path.stat().st_size


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory, tokenizer):
    """The weights of an uninterrupted ``short_run`` of so many steps (each trained once)."""
    done: dict[int, torch.Tensor] = {}

    def weights(max_steps: int) -> torch.Tensor:
        if max_steps not in done:
            model = toy_model()
            path = tmp_path_factory.mktemp("straight")
            train(model, loader(tokenizer), short_run(path, max_steps))
            done[max_steps] = flat(model)
        return done[max_steps]

    return weights


# Every file a checkpoint holds: weights, optimiser, scheduler, RNG, LengthDrop sampler,
# and our own bookkeeping.
CHECKPOINT_FILES = (
    "model.safetensors",
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
    "trainer_state.json",
)


def test_a_checkpoint_holds_the_files_the_damage_tests_cover(tmp_path, tokenizer):
    train(toy_model(), loader(tokenizer), short_run(tmp_path, max_steps=1))
    assert sorted(p.name for p in (tmp_path / "checkpoint-1").iterdir()) == sorted(CHECKPOINT_FILES)


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(
    tmp_path, tokenizer, straight_weights, name
):
    def stop_at_3(step):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(toy_model(), loader(tokenizer), short_run(tmp_path, 4), on_checkpoint=stop_at_3)
    damaged = tmp_path / "checkpoint-3" / name
    size = truncate(damaged)
    model = toy_model(seed=123)
    with pytest.warns(RuntimeWarning) as caught:
        result = train(model, loader(tokenizer), short_run(tmp_path, 4))
    message = str(caught[0].message)
    assert str(damaged) in message  # the file, by its full path
    assert "truncated" in message or "unreadable" in message
    assert "resuming from checkpoint-2 instead" in message
    assert result.resumed_from.name == "checkpoint-2"
    assert result.global_step == 4
    # kept, renamed aside, and not counted among the two good checkpoints retention keeps
    aside = tmp_path / "checkpoint-3.damaged" / name
    assert result.set_aside == [aside.parent]
    assert aside.stat().st_size == size
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint"))
    assert names == ["checkpoint-3", "checkpoint-3.damaged", "checkpoint-4"]
    # and the run ends where an uninterrupted one does
    assert torch.allclose(straight_weights(4), flat(model), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["model.safetensors", "random_states_0.pkl"])
def test_damage_is_found_in_checkpoints_without_recorded_sizes(
    tmp_path, tokenizer, straight_weights, name
):
    train(toy_model(), loader(tokenizer), short_run(tmp_path))
    state_file = tmp_path / "checkpoint-3" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["files"]  # as written before the sizes were recorded
    state_file.write_text(json.dumps(state))
    truncate(tmp_path / "checkpoint-3" / name)
    # the run is finished, but its last checkpoint does not load: redo step 3 from 2
    with pytest.warns(RuntimeWarning, match=rf"checkpoint-3/{name}: truncated or corrupt"):
        result = train(model := toy_model(), loader(tokenizer), short_run(tmp_path))
    assert result.resumed_from.name == "checkpoint-2"
    assert torch.allclose(straight_weights(3), flat(model), atol=1e-6, rtol=0)


def test_several_damaged_checkpoints_are_all_set_aside(tmp_path, tokenizer, straight_weights):
    config = short_run(tmp_path, keep_checkpoints=3)
    train(toy_model(), loader(tokenizer), config)
    truncate(tmp_path / "checkpoint-3" / "optimizer.bin")
    truncate(tmp_path / "checkpoint-2" / "model.safetensors")
    with pytest.warns(RuntimeWarning, match="resuming from checkpoint-1 instead"):
        result = train(model := toy_model(), loader(tokenizer), config)
    assert result.resumed_from.name == "checkpoint-1"
    assert {p.name for p in result.set_aside} == {"checkpoint-2.damaged", "checkpoint-3.damaged"}
    assert torch.allclose(straight_weights(3), flat(model), atol=1e-6, rtol=0)


def test_no_loadable_checkpoint_is_refused_not_a_fresh_start(tmp_path, tokenizer):
    train(toy_model(), loader(tokenizer), short_run(tmp_path, max_steps=2))
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{not json")
    truncate(tmp_path / "checkpoint-1" / "scheduler.bin")
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="no checkpoint in .* loads; nothing was deleted") as err:
        train(toy_model(), loader(tokenizer), short_run(tmp_path, max_steps=4))
    assert "checkpoint-2/trainer_state.json: unreadable" in str(err.value)
    assert "checkpoint-1/scheduler.bin: truncated" in str(err.value)
    # nothing renamed, nothing rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-1",
        "checkpoint-2",
        "metrics.jsonl",
    ]
    assert (tmp_path / "metrics.jsonl").read_text() == metrics


def test_a_damaged_checkpoint_named_by_the_caller_is_an_error(tmp_path, tokenizer):
    train(toy_model(), loader(tokenizer), short_run(tmp_path, max_steps=2))
    truncate(tmp_path / "checkpoint-2" / "optimizer.bin")
    with pytest.raises(ValueError, match=r"checkpoint-2 is damaged: .*optimizer.bin: truncated"):
        train(
            toy_model(),
            loader(tokenizer),
            short_run(tmp_path, max_steps=4),
            resume_from=tmp_path / "checkpoint-2",
        )
    assert (tmp_path / "checkpoint-2" / "optimizer.bin").is_file()


def test_resuming_with_other_hyperparameters_is_an_error(tmp_path, tokenizer):
    config = TrainConfig(output_dir=tmp_path, max_steps=2, checkpoint_every=1, progress=False)
    train(toy_model(), loader(tokenizer), config)
    other = TrainConfig(
        output_dir=tmp_path, max_steps=2, checkpoint_every=1, progress=False, learning_rate=1e-3
    )
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 2e-05 -> 0.001\)"):
        train(toy_model(), loader(tokenizer), other)
    # bookkeeping may change: the finished run is simply found complete
    relogged = TrainConfig(output_dir=tmp_path, max_steps=2, checkpoint_every=5, progress=False)
    assert train(toy_model(), loader(tokenizer), relogged).global_step == 2


# ---------------------------------------------------------------- bad inputs fail first


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"learning_rate": -1.0}, "learning_rate must be positive"),
        ({"num_epochs": 0}, "num_epochs must be positive"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"keep_checkpoints": 1}, "keep_checkpoints must be >= 2"),
        ({"length_drop": LengthDropConfig(length_drop_ratio_bound=1.5)}, "length_drop_ratio_bound"),
        ({"length_drop": LengthDropConfig(num_sandwich=-1)}, "num_sandwich"),
        ({"length_drop": LengthDropConfig(layer_dropout_prob=1.0)}, "layer_dropout_prob"),
        ({"length_drop": LengthDropConfig(kl_direction="sideways")}, "kl_direction"),
    ],
)
def test_bad_hyperparameters_raise_before_training(tmp_path, tokenizer, kwargs, message):
    model = toy_model()
    before = flat(model)
    with pytest.raises(ValueError, match=message):
        train(
            model,
            loader(tokenizer),
            TrainConfig(output_dir=tmp_path / "run", progress=False, **kwargs),
        )
    assert torch.equal(before, flat(model))
    assert not (tmp_path / "run").exists()


def test_empty_data_raises(tmp_path, tokenizer):
    empty = toy_features().select([])
    with pytest.raises(ValueError, match="empty"):
        train(
            toy_model(),
            make_dataloader(empty, tokenizer, 4, shuffle=True, seed=0),
            TrainConfig(output_dir=tmp_path, progress=False),
        )
