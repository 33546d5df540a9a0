"""Data-parallel training: 2 CPU processes (gloo) end with the weights of 1 process on the
same global batches, and write each file once.

On CPUs ``accelerate launch --cpu`` runs one process (several need MPI), so the processes
are started with ``torchrun``, which ``accelerate`` recognises (README: Distributed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(processes: int, tmp_path: Path, kind: str) -> tuple[dict[str, torch.Tensor], Path]:
    output_dir = tmp_path / f"run-{processes}"
    weights = tmp_path / f"weights-{processes}.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", str(processes), "--master_port", str(free_port()),
        str(WORKER), str(output_dir), str(weights), kind,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    world = json.loads(Path(f"{weights}.json").read_text())["world_size"]
    assert world == processes, "the processes did not form one distributed group"
    return torch.load(weights), output_dir


@pytest.mark.parametrize("kind", ["standard", "lengthdrop"])
def test_two_processes_train_like_one(tmp_path, kind):
    one, one_dir = launch(1, tmp_path, kind)
    two, two_dir = launch(2, tmp_path, kind)
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=0, atol=1e-5), name
    # Training moved the weights, so the equality above says something.
    initial = torch.load(tmp_path / "weights-1.pt.initial")
    assert max((initial[n] - one[n]).abs().max() for n in one) > 1e-3
    # Checkpoints written once, by the main process, and complete.
    for run_dir in (one_dir, two_dir):
        checkpoints = sorted(p.name for p in run_dir.glob("checkpoint-*"))
        assert checkpoints == ["checkpoint-3", "checkpoint-6"]
        assert not list(run_dir.glob(".checkpoint-*"))
    # The logged losses are the global batch's: the same with 1 and 2 processes.
    rows = {
        n: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        for n, d in ((1, one_dir), (2, two_dir))
    }
    assert [r["step"] for r in rows[1]] == [r["step"] for r in rows[2]] == [2, 4, 6]
    for a, b in zip(rows[1], rows[2], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
