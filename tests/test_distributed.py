"""Data parallel on 2 CPU processes (gloo): training ends with the weights of 1 process on
the same global batches; evaluation and search give what 1 process gives; each file is
written once.

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


def run_worker(processes: int, output_dir: Path, result_file: Path, kind: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", str(processes), "--master_port", str(free_port()),
        str(WORKER), str(output_dir), str(result_file), kind,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def launch(processes: int, tmp_path: Path, kind: str) -> tuple[dict[str, torch.Tensor], Path]:
    output_dir = tmp_path / f"run-{processes}"
    weights = tmp_path / f"weights-{processes}.pt"
    run_worker(processes, output_dir, weights, kind)
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


def test_two_processes_evaluate_and_search_like_one(tmp_path):
    results, stores = {}, {}
    for processes in (1, 2):
        output_dir = tmp_path / f"search-{processes}"
        result_file = tmp_path / f"search-{processes}.json"
        run_worker(processes, output_dir, result_file, "search")
        results[processes] = json.loads(result_file.read_text())
        stores[processes] = (output_dir / "store.jsonl").read_text().splitlines()
    one, two = results[1], results[2]
    assert two["world_size"] == 2
    for config, logits in one["logits"].items():  # every row, in row order
        assert len(logits) == 35
        assert torch.allclose(
            torch.tensor(logits), torch.tensor(two["logits"][config]), rtol=0, atol=1e-5
        )
    for first, second in zip(one["runs"], two["runs"], strict=True):
        assert first["frontier"] == second["frontier"]
        assert first["evaluated"] == second["evaluated"]
    # The first run evaluated (in every process alike), the resumed one read the store.
    evaluated = one["runs"][0]["evaluated"]
    assert two["runs"][0]["new_evaluations"] == [evaluated, evaluated]
    assert two["runs"][1]["new_evaluations"] == [0, 0]
    # One writer: a header and one line per configuration, as with one process.
    assert len(stores[2]) == len(stores[1]) == evaluated + 1
    configs = [json.loads(line)["config"] for line in stores[2][1:]]
    assert len({tuple(c) for c in configs}) == evaluated
