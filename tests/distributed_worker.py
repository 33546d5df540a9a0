"""Run by ``test_distributed.py`` under ``torchrun``: a few LengthDrop steps of a
tiny random BERT on fixed global batches; the main process saves the final weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from latlib import LengthAdaptiveConfig, LengthAdaptiveModel
from latlib.train import LengthDropConfig, TrainConfig, train

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


def main(output_dir: str, weights_file: str, kind: str) -> None:
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
