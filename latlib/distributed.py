"""Several processes (``torchrun`` or ``accelerate launch``): who computes what, and
bringing the results together.

Training splits each global batch across processes (``train``). Evaluation splits the
batches of a split instead (process ``r`` of ``N`` scores batches ``r, r+N, ...``) and
gathers the outputs, so every process ends with the whole split's predictions and the
same score; a search run by every process therefore takes the same path in each,
while only the main process writes files. In a single process every function here is a
no-op. Process groups come from ``accelerate`` (gloo on CPUs, nccl on GPUs).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object


def launched_processes() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started; 1 when run
    directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_group(seen: int) -> None:
    """Fail when accelerate sees another number of processes than were launched: each
    process would then work alone, and write the same files."""
    if seen != launched_processes():
        raise RuntimeError(
            f"{launched_processes()} processes were launched but accelerate sees {seen}; "
            "each would work alone. Launch with `accelerate launch` or `torchrun`, and check "
            "the backend (gloo on CPUs, nccl on GPUs)"
        )


def init_processes() -> PartialState:
    """Join the launcher's process group (once; later calls return the same state).

    Without CUDA the group is formed on the CPU, which accelerate does only when asked.
    """
    state = PartialState(cpu=launched_processes() > 1 and not torch.cuda.is_available())
    check_group(state.num_processes)
    return state


def is_main_process() -> bool:
    """True unless this is a secondary process of a distributed run (which must not write
    the files the main one writes)."""
    return rank_and_world()[0] == 0


def rank_and_world() -> tuple[int, int]:
    """This process's index and the number of processes of an initialised group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def device() -> torch.device:
    """Where this process computes: its own GPU when there are GPUs, else the CPU."""
    if launched_processes() > 1 or torch.cuda.is_available():
        return init_processes().device
    return torch.device("cpu")


def gather(value: Any) -> list[Any]:
    """Every process's ``value`` (any picklable object), in process order, on every
    process; ``[value]`` in a single process."""
    if rank_and_world()[1] == 1:
        return [value]
    return gather_object([value])


def barrier() -> None:
    """Wait until every process gets here."""
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()
