"""The length-adaptive encoder against the plain transformers model and the method's rules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import FAMILIES, random_batch, tiny_config
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel

TOL = 1e-5


def tiny_model(task_type="classification", num_layers=4, family="bert", **config):
    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_config(family, num_layers, num_labels=3 if task_type == "classification" else 2),
        LengthAdaptiveConfig(task_type=task_type, **config),
    )
    return model.eval()


def plain_twin(model: LengthAdaptiveModel, attn_implementation: str = "sdpa"):
    """The library's own model with the same weights."""
    auto = (
        AutoModelForSequenceClassification
        if model.config.task_type == "classification"
        else AutoModelForQuestionAnswering
    )
    twin = auto.from_config(model.hf_config, attn_implementation=attn_implementation)
    twin.load_state_dict(model.backbone.state_dict())
    if model.hf_config.model_type == "distilbert":  # its forward takes no token_type_ids
        forward = twin.forward
        twin.forward = lambda token_type_ids=None, **inputs: forward(**inputs)
    return twin.eval()


@pytest.fixture(scope="module")
def embedded_classifier(embedded_path):
    torch.manual_seed(0)
    return LengthAdaptiveModel.from_pretrained(embedded_path, num_labels=2).eval()


@pytest.fixture(scope="module")
def embedded_span(embedded_path):
    torch.manual_seed(0)
    return LengthAdaptiveModel.from_pretrained(embedded_path, task_type="span").eval()


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_path)


SENTENCES = [
    "a gripping , beautifully acted film that never lets go .",
    "dull .",
    "the plot is thin but the performances carry it well enough for most viewers",
]


# ---------------------------------------------------------------- full length == library


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_length_matches_library_classification_embedded(embedded_classifier, tokenizer, attn):
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    twin = plain_twin(embedded_classifier, attn)
    with torch.no_grad():
        ours = embedded_classifier(**batch).logits
        theirs = twin(**batch).logits
    assert (ours - theirs).abs().max() <= TOL


def test_full_length_matches_library_span_embedded(embedded_span, tokenizer):
    batch = tokenizer(
        ["who acted?", "what is thin?"],
        [SENTENCES[0], SENTENCES[2]],
        padding=True,
        return_tensors="pt",
    )
    twin = plain_twin(embedded_span)
    with torch.no_grad():
        ours = embedded_span(**batch)
        theirs = twin(**batch)
    assert (ours.start_logits - theirs.start_logits).abs().max() <= TOL
    assert (ours.end_logits - theirs.end_logits).abs().max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task_type", ["classification", "span"])
def test_full_length_matches_library_random_config(task_type, family):
    model = tiny_model(task_type, family=family)
    batch = random_batch(3, [12, 7, 3])
    twin = plain_twin(model, "eager")
    with torch.no_grad():
        ours, theirs = model(**batch), twin(**batch)
    names = ["logits"] if task_type == "classification" else ["start_logits", "end_logits"]
    for name in names:
        assert (getattr(ours, name) - getattr(theirs, name)).abs().max() <= TOL
    # an explicit full-length configuration is the same as none
    with torch.no_grad():
        explicit = model(**batch, length_config=(1.0,) * 4)
    for name in names:
        assert torch.equal(getattr(explicit, name), getattr(ours, name))


def test_loss_matches_library():
    model = tiny_model("classification")
    batch = random_batch(4, [9, 9, 5, 2])
    labels = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        ours = model(**batch, labels=labels).loss
        theirs = plain_twin(model)(**batch, labels=labels).loss
    assert abs(ours.item() - theirs.item()) <= TOL


# ---------------------------------------------------------------- selection


def layer0_significance(model, batch):
    """PoWER-BERT significance of layer 0 from the library's own attention maps."""
    twin = plain_twin(model, "eager")
    with torch.no_grad():
        attentions = twin(**batch, output_attentions=True).attentions[0]  # [B, h, L, L]
    query_mask = batch["attention_mask"].float()
    return (attentions * query_mask[:, None, :, None]).sum(dim=(1, 2))  # [B, L]


@pytest.mark.parametrize("family", FAMILIES)
def test_selection_absolute_keeps_top_k_with_cls(family):
    model = tiny_model("classification", length_mode="absolute", family=family)
    batch = random_batch(3, [14, 14, 9])
    significance = layer0_significance(model, batch)
    keep = 6
    with torch.no_grad():
        out = model(**batch, length_config=(keep, keep, 4, 3), output_hidden_states=True)
    kept = out.token_positions[0]
    for row in range(3):
        scores = significance[row].clone()
        scores[batch["attention_mask"][row] == 0] = -math.inf
        scores[0] = math.inf  # [CLS] is forced
        expected = sorted(scores.topk(keep).indices.tolist())
        assert kept[row].tolist() == expected
        assert kept[row].tolist() == sorted(kept[row].tolist())  # original order kept
        assert kept[row, 0].item() == 0  # [CLS] first
    assert [p.shape[1] for p in out.token_positions] == [6, 6, 4, 3]


def test_selection_ratio_per_example_counts():
    model = tiny_model("classification", length_mode="ratio")
    lengths = [14, 9, 4]
    batch = random_batch(3, lengths)
    significance = layer0_significance(model, batch)
    ratio = 0.5
    with torch.no_grad():
        out = model(**batch, length_config=(ratio, 0.4, 0.3, 0.2), output_hidden_states=True)
    positions, masks = out.token_positions[0], out.token_masks[0]
    for row, length in enumerate(lengths):
        count = math.ceil(ratio * length)
        assert int(masks[row].sum()) == count
        scores = significance[row, :length].clone()
        scores[0] = math.inf
        expected = sorted(scores.topk(count).indices.tolist())
        assert positions[row][masks[row]].tolist() == expected


def test_padding_never_kept_while_real_token_dropped():
    model = tiny_model("classification", length_mode="absolute")
    batch = random_batch(2, [10, 4])
    with torch.no_grad():
        out = model(**batch, length_config=(6, 5, 5, 4), output_hidden_states=True)
    # row 1 has 4 real tokens and keeps 6 slots: all 4 real ones survive, 2 slots are padding
    assert out.token_masks[0][1].tolist() == [True] * 4 + [False] * 2
    assert out.token_positions[0][1, :4].tolist() == [0, 1, 2, 3]


def test_padding_independence_ratio_mode_classification():
    model = tiny_model("classification", length_mode="ratio")
    config = (0.8, 0.6, 0.5, 0.3)
    batch = random_batch(3, [13, 6, 9], seed=1)
    alone = {k: v[1:2, :6] for k, v in batch.items()}
    with torch.no_grad():
        in_batch = model(**batch, length_config=config).logits[1]
        by_itself = model(**alone, length_config=config).logits[0]
    assert (in_batch - by_itself).abs().max() <= TOL


def test_padding_independence_ratio_mode_embedded(embedded_classifier, tokenizer):
    config = (0.9, 0.8, 0.6, 0.5, 0.4, 0.3)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        together = embedded_classifier(**batch, length_config=config).logits
        for row, sentence in enumerate(SENTENCES):
            alone = embedded_classifier(
                **tokenizer([sentence], return_tensors="pt"), length_config=config
            )
            assert (alone.logits[0] - together[row]).abs().max() <= TOL


def test_padding_independence_ratio_mode_span():
    model = tiny_model("span", length_mode="ratio")
    config = (0.8, 0.6, 0.5, 0.3)
    batch = random_batch(2, [15, 8], seed=2)
    alone = {k: v[1:2, :8] for k, v in batch.items()}
    with torch.no_grad():
        in_batch = model(**batch, length_config=config)
        by_itself = model(**alone, length_config=config)
    assert (in_batch.start_logits[1, :8] - by_itself.start_logits[0]).abs().max() <= TOL
    assert (in_batch.end_logits[1, :8] - by_itself.end_logits[0]).abs().max() <= TOL


# ---------------------------------------------------------------- drop-and-restore


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "mode,config", [("absolute", (9, 7, 7, 3)), ("ratio", (0.7, 0.5, 0.5, 0.2))]
)
def test_drop_and_restore_puts_last_vectors_back(mode, config, family):
    model = tiny_model("span", length_mode=mode, family=family)
    lengths = [12, 12, 7]
    batch = random_batch(3, lengths, seed=3)
    with torch.no_grad():
        out = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            length_config=config,
            restore=True,
            output_hidden_states=True,
        )
    restored = out.last_hidden_state
    assert restored.shape[:2] == batch["input_ids"].shape
    checked_dropped = 0
    for row, length in enumerate(lengths):
        for position in range(length):
            # the last layer whose output still holds this token (-1: dropped in layer 0)
            last = -1
            for layer, (positions, masks) in enumerate(
                zip(out.token_positions, out.token_masks, strict=True)
            ):
                hit = ((positions[row] == position) & masks[row]).nonzero()
                if len(hit):
                    last, slot = layer, hit[0, 0]
            if last == -1:
                expected = out.hidden_states[0][row, position]
            else:
                expected = out.hidden_states[last + 1][row, slot]
            checked_dropped += last < model.num_layers - 1
            assert (restored[row, position] - expected).abs().max() <= TOL, (row, position, last)
    assert checked_dropped > 0


def test_without_restore_only_survivors_remain():
    model = tiny_model("span", length_mode="absolute")
    batch = random_batch(2, [12, 10])
    with torch.no_grad():
        out = model.encode(batch["input_ids"], batch["attention_mask"], length_config=(8, 6, 6, 4))
    assert out.last_hidden_state.shape[1] == 4


@pytest.mark.parametrize(
    "mode,config", [("absolute", (9, 7, 7, 3)), ("ratio", (0.7, 0.5, 0.5, 0.2))]
)
def test_without_drop_and_restore_only_survivors_can_be_answers(mode, config):
    """PoWER-BERT on span extraction: a survivor's logits are those of the model with
    Drop-and-Restore at that position (the head reads one vector), every other position
    gets the lowest value, so no dropped token is ever an answer."""
    model = tiny_model("span", length_mode=mode)
    lengths = [12, 12, 7]
    batch = random_batch(3, lengths, seed=3)
    with torch.no_grad():
        restored = model(**batch, length_config=config)
        encoded = model.encode(batch["input_ids"], batch["attention_mask"], length_config=config)
        model.config.drop_and_restore = False
        plain = model(**batch, length_config=config)
    lowest = torch.finfo(plain.start_logits.dtype).min
    positions, masks = encoded.token_positions[-1], encoded.token_masks[-1]
    for row in range(len(lengths)):
        survivors = set(positions[row][masks[row]].tolist())
        assert survivors and len(survivors) < lengths[row]
        for position in range(batch["input_ids"].size(1)):
            for name in ("start_logits", "end_logits"):
                value = getattr(plain, name)[row, position]
                if position in survivors:
                    assert (value - getattr(restored, name)[row, position]).abs() <= TOL
                else:
                    assert value == lowest
    assert LengthAdaptiveConfig(task_type="span").drop_and_restore  # the paper's setting


# ---------------------------------------------------------------- LayerDrop


def test_layer_drop_equals_model_without_that_layer():
    model = tiny_model("classification")
    batch = random_batch(2, [11, 6])
    shorter = copy.deepcopy(model)
    del shorter.layers[2]
    shorter.hf_config.num_hidden_layers = 3
    with torch.no_grad():
        skipped = model(**batch, layer_keep=[True, True, False, True]).logits
        removed = plain_twin(shorter)(**batch).logits
    assert (skipped - removed).abs().max() <= TOL
    with pytest.raises(ValueError, match="layer_keep has 3 entries"):
        model(**batch, layer_keep=[True, True, True])


# ---------------------------------------------------------------- invalid configurations


@pytest.mark.parametrize(
    "mode,config,message",
    [
        ("absolute", (8, 8, 8), "3 entries but the model has 4 layers"),
        ("absolute", (8, 6, 7, 5), "layer 2: length 7 is larger than layer 1's 6"),
        ("absolute", (8, 6, 0, 0), "layer 2: length must be positive"),
        ("absolute", (8, -1, -1, -1), "layer 1: length must be positive"),
        ("absolute", (40, 8, 8, 8), "layer 0: length 40 is longer than the input"),
        ("absolute", (8, 6.5, 6, 5), "layer 1: absolute lengths are token counts"),
        ("ratio", (1.2, 0.5, 0.5, 0.5), r"layer 0: ratio must be in \(0, 1\]"),
        ("ratio", (0.9, 0.5, 0.0, 0.0), r"layer 2: ratio must be in \(0, 1\]"),
        ("ratio", (0.9, 0.5, 0.6, 0.1), "layer 2: length 0.6 is larger than layer 1's 0.5"),
    ],
)
def test_invalid_length_configuration_raises(mode, config, message):
    model = tiny_model("classification", length_mode=mode)
    batch = random_batch(2, [12, 9])
    with pytest.raises(ValueError, match=message):
        model(**batch, length_config=config)


def test_invalid_model_config_raises():
    with pytest.raises(ValueError, match="keep_cls must be True"):
        LengthAdaptiveConfig(task_type="classification", keep_cls=False)
    with pytest.raises(ValueError, match="length_mode must be one of"):
        LengthAdaptiveConfig(length_mode="percent")
    with pytest.raises(ValueError, match="task_type must be one of"):
        LengthAdaptiveConfig(task_type="tagging")


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("family", FAMILIES)
def test_inference_layout_changes_strides_not_outputs(family):
    model = tiny_model("classification", length_mode="ratio", family=family)
    linears = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    batches = [random_batch(1, [11], seed=2), random_batch(3, [13, 6, 9], seed=3)]
    configs = [None, (0.8, 0.6, 0.5, 0.3)]

    def outputs():
        with torch.no_grad():
            return [model(**b, length_config=c).logits for b in batches for c in configs]

    # eval(): every weight [out, in] is the transpose of a contiguous [in, out] tensor
    assert all(m.weight.t().is_contiguous() for m in linears if min(m.weight.shape) > 1)
    fast = outputs()
    model.train()
    assert all(m.weight.is_contiguous() for m in linears)
    model.eval()
    from latlib.model import set_linear_layout

    set_linear_layout(model.backbone, inference=False)  # eval mode, training layout
    for got, expected in zip(fast, outputs(), strict=True):
        assert (got - expected).abs().max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_inference_attention_equals_training_formulation(family):
    model = tiny_model("span", length_mode="ratio", family=family)
    model.attention_dropout = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = random_batch(3, [13, 6, 9], seed=4)
    config = (0.8, 0.6, 0.5, 0.3)

    def run():
        with torch.no_grad():
            out = model(**batch, length_config=config, output_hidden_states=True)
        return out.start_logits, out.token_positions

    fast_logits, fast_positions = run()
    model.train()  # the plain formulation, dropout off
    logits, positions = run()
    assert (fast_logits - logits).abs().max() <= TOL
    for fast, plain in zip(fast_positions, positions, strict=True):
        assert torch.equal(fast, plain)  # the same tokens kept


def test_from_pretrained_returns_eval_mode(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    assert not LengthAdaptiveModel.from_pretrained(tmp_path).training


@pytest.mark.parametrize("task_type", ["classification", "span"])
@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(tmp_path, task_type, family):
    model = tiny_model(task_type, length_mode="absolute", max_length=32, family=family)
    model.config.length_config = (10, 8, 8, 5)
    model.save_pretrained(tmp_path)
    loaded = LengthAdaptiveModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    batch = random_batch(2, [12, 10])
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    names = ["logits"] if task_type == "classification" else ["start_logits", "end_logits"]
    for name in names:
        assert torch.equal(getattr(a, name), getattr(b, name))
    # the folder stays a plain transformers checkpoint
    plain = plain_twin(model).__class__.from_pretrained(tmp_path)
    assert plain.config.num_hidden_layers == 4


def test_embedded_backbone_by_name():
    model = LengthAdaptiveModel.from_pretrained("embedded:all-minilm-l6-v2", num_labels=2)
    assert model.num_layers == 6 and model.hf_config.hidden_size == 384


@pytest.mark.parametrize("task_type", ["classification", "span"])
@pytest.mark.parametrize(
    "shape,message",
    [
        ((0, 8), r"input_ids has no examples: shape \(0, 8\)"),
        ((2, 0), r"input_ids has no tokens: shape \(2, 0\)"),
        ((8,), r"input_ids must be \[batch, tokens\], got shape \(8,\)"),
    ],
)
def test_empty_inputs_are_refused_clearly(task_type, shape, message):
    model = tiny_model(task_type)
    input_ids = torch.full(shape, 5, dtype=torch.long)
    for length_config in (None, (0.9, 0.8, 0.7, 0.6)):
        with pytest.raises(ValueError, match=message), torch.no_grad():
            model(input_ids, length_config=length_config)


@pytest.mark.parametrize(
    "name,message",
    [
        (
            "./no/such/folder",
            r"not an existing folder \(.*no/such/folder does not exist\), "
            r"not an embedded name .* and not a hub name",
        ),
        ("embedded:bert-large", "unknown embedded backbone"),
        ("random:tiny-bert", "has no weights to load"),
    ],
)
def test_a_backbone_that_cannot_exist_says_what_was_tried(name, message):
    from latlib.features import load_tokenizer

    with pytest.raises(ValueError, match=message):
        LengthAdaptiveModel.from_pretrained(name, num_labels=2)
    if not name.startswith("random:"):  # random backbones borrow the embedded tokenizer
        with pytest.raises(ValueError, match=message):
            load_tokenizer(name)


def test_a_hub_name_not_found_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download is attempted in tests
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="not an existing folder .* not an embedded name .* hub"):
        LengthAdaptiveModel.from_pretrained("latlib-tests/no-such-model", num_labels=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder empty has no config.json"):
        LengthAdaptiveModel.from_pretrained("empty", num_labels=2)
