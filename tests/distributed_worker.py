"""Run by ``test_distributed.py`` under ``torchrun``.

``standard`` / ``lengthdrop``: a few training steps of a tiny random BERT on fixed global
batches; the main process saves the final weights. ``search``: predictions and an
evolutionary search (with the prefix cache and a search store), run twice so the second
run resumes from the store; the main process saves what they returned."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel, distributed
from latlib.evaluation import evaluate_classification, predict_logits
from latlib.lengthdrop import LengthDropConfig
from latlib.prefix_cache import PrefixCache
from latlib.search import SearchProblem, evolutionary_search
from latlib.store import SearchStore
from latlib.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from conftest import random_batch, tiny_bert_config  # noqa: E402


def global_batches(count: int = 6, size: int = 8) -> list[dict[str, torch.Tensor]]:
    batches = []
    for number in range(count):
        generator = torch.Generator().manual_seed(100 + number)
        lengths = torch.randint(4, 16, (size,), generator=generator).tolist()
        batch = random_batch(size, lengths, seed=number)
        batch["labels"] = torch.randint(0, 3, (size,), generator=generator)
        batches.append(batch)
    return batches


def search(output_dir: str, result_file: str) -> None:
    """Logits, then a search and its resumption: every process must see the same scores,
    and only the main one may write the store."""
    distributed.init_processes()
    torch.manual_seed(0)
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(4, num_labels=2), LengthAdaptiveConfig(length_mode="ratio", max_length=16)
    ).eval()
    batches = []
    for number in range(7):  # uneven across 2 processes on purpose
        generator = torch.Generator().manual_seed(200 + number)
        lengths = torch.randint(4, 17, (5,), generator=generator).tolist()
        batch = random_batch(5, lengths, seed=number)
        batch["index"] = torch.arange(5 * number, 5 * number + 5)
        batches.append(batch)
    loader = DataLoader(batches, batch_size=None)
    # Centre the random head's margin and label rows with the full model's predictions,
    # so that shorter configurations flip some and the frontier has several points.
    logits = predict_logits(model, loader)["logits"]
    with torch.no_grad():
        model.backbone.classifier.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0]))
    labels = predict_logits(model, loader)["logits"].argmax(-1)
    cache = PrefixCache(1 << 20)

    def evaluate(config: tuple[int, ...]) -> float:
        ratios = [length / 16 for length in config]
        return evaluate_classification(model, loader, labels, ratios, cache)["accuracy"]

    store_path = Path(output_dir) / "store.jsonl"
    runs = []
    for _ in range(2):  # the second run finds every configuration in the store
        found = evolutionary_search(
            SearchProblem(evaluate, lambda config: float(sum(config)), (4, 3, 2, 2), (16,) * 4, 16),
            SearchStore(store_path, {"test": "distributed"}),
            population_size=4,
            mutation_size=4,
            crossover_size=3,
            iterations=2,
            progress=False,
        )
        runs.append(
            {
                "frontier": [[list(p.config), p.cost, p.score] for p in found.frontier],
                "evaluated": len(found.evaluated),
                "new_evaluations": distributed.gather(found.new_evaluations),
            }
        )
    logits = {
        str(config): predict_logits(model, loader, config)["logits"].tolist()
        for config in (None, (0.9, 0.7, 0.5, 0.4))
    }
    if distributed.is_main_process():
        rank, world = distributed.rank_and_world()
        payload = {"world_size": world, "runs": runs, "logits": logits}
        Path(result_file).write_text(json.dumps(payload))


def main(output_dir: str, weights_file: str, kind: str) -> None:
    if kind == "search":
        search(output_dir, weights_file)
        return
    torch.manual_seed(0)
    # No dropout: the processes draw their own dropout masks, which is fine for training
    # but not for an equality test.
    model = LengthAdaptiveModel.from_config(
        tiny_bert_config(4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        LengthAdaptiveConfig(length_mode="ratio", max_length=16),
    )
    config = TrainConfig(
        output_dir=output_dir,
        learning_rate=1e-3,
        max_steps=6,
        checkpoint_every=3,
        progress=False,
        log_every=2,
        cpu=True,
        # LayerDrop on: sub-models skip layers, the hard case for DDP.
        length_drop=LengthDropConfig(num_sandwich=2, layer_dropout_prob=0.3)
        if kind == "lengthdrop"
        else None,
    )
    if os.environ.get("RANK", "0") == "0":
        torch.save(model.state_dict(), weights_file + ".initial")
    # batch_size=None: the loader yields the prepared global batches as they are.
    train(model, DataLoader(global_batches(), batch_size=None), config)  # in place
    distributed = torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        return
    torch.save(model.state_dict(), weights_file)
    world = torch.distributed.get_world_size() if distributed else 1
    Path(weights_file + ".json").write_text(json.dumps({"world_size": world}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
