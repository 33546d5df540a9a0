"""Checkpoints of a training run: written atomically, checked before use, refused when
foreign.

A checkpoint is accelerate's ``save_state`` folder (model, optimiser, scheduler, every
RNG, the LengthDrop sampler) plus ``trainer_state.json``: the step, where in the epoch
to go on, the run's settings, which a resumed run must match, and the size of every
other file. ``metrics.jsonl`` beside the checkpoints logs the losses; a resumed run
drops the rows logged after its checkpoint and logs them again.

Before a resume, every file of the checkpoint is read back in full
(:func:`checkpoint_problems`): accelerate would otherwise raise a bare
``SafetensorError`` for damaged weights, and silently keep the current RNG state for
a damaged RNG file. :func:`choose_checkpoint` walks back from the newest checkpoint to
the newest one that loads; the damaged ones after it are renamed aside
(``checkpoint-96.damaged``), never deleted, so that retention neither removes them nor
counts them among the good ones it keeps.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
DAMAGED_SUFFIX = ".damaged"
# What accelerate's save_state writes for one model, optimiser, scheduler and custom
# object in a one-process run; checked in checkpoints written before their files' sizes
# were recorded.
_MINIMAL_FILES = (
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
)
_MODEL_FILES = ("model.safetensors", "pytorch_model.bin")


def find_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (None if there is none); it may
    still be damaged (:func:`choose_checkpoint` checks)."""
    candidates = _checkpoints(Path(output_dir))
    return candidates[-1] if candidates else None


def _checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first. Staging folders (``.checkpoint-N.partial``) and
    damaged ones set aside (``checkpoint-N.damaged``) do not match."""
    found = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def read_checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    """The bookkeeping of a checkpoint; a clear error if it is missing or damaged."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist; pass an existing checkpoint folder "
            "or resume_from=None to start fresh"
        )
    state, problem = _read_state(checkpoint)
    if problem is not None:
        raise DamagedCheckpointError(checkpoint, [problem])
    return state


def _read_state(checkpoint: Path) -> tuple[dict[str, Any], str | None]:
    """``(state, None)``, or ``({}, problem)`` when ``trainer_state.json`` is unusable."""
    state_file = checkpoint / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        int(state["global_step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        files = state.get("files", {})
        if not all(isinstance(n, str) and isinstance(s, int) for n, s in files.items()):
            raise ValueError("'files' must map file names to sizes")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return {}, f"{state_file}: unreadable ({type(error).__name__}: {error})"
    return state, None


class DamagedCheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; ``problems`` name each bad file."""

    def __init__(self, checkpoint: Path, problems: list[str]) -> None:
        self.checkpoint = checkpoint
        self.problems = problems
        super().__init__(
            f"checkpoint {checkpoint} is damaged: {'; '.join(problems)}. Restore the file, "
            "resume from another checkpoint, or resume_from='auto' to take the newest "
            "checkpoint that loads"
        )


def checkpoint_problems(checkpoint: Path) -> list[str]:
    """What is wrong with each file of ``checkpoint`` (empty: it loads).

    Every file is read back in full, as accelerate will: a size check alone would miss
    a file damaged in place, and accelerate ignores a damaged RNG file without a word.
    """
    state, problem = _read_state(checkpoint)
    if problem is not None:
        return [problem]
    sizes: dict[str, int | None] = dict(state.get("files") or _unrecorded_files(checkpoint))
    problems = []
    for name, size in sorted(sizes.items()):
        problem = _file_problem(checkpoint / name, size)
        if problem is not None:
            problems.append(f"{checkpoint / name}: {problem}")
    return problems


def _unrecorded_files(checkpoint: Path) -> dict[str, None]:
    """The files of a checkpoint written before their sizes were recorded: every file
    present, and those that every run writes even if absent."""
    model = next((n for n in _MODEL_FILES if (checkpoint / n).is_file()), _MODEL_FILES[0])
    present = [p.name for p in checkpoint.iterdir() if p.is_file() and p.name != STATE_FILE]
    return dict.fromkeys([*_MINIMAL_FILES, model, *present])


def _file_problem(path: Path, size: int | None) -> str | None:
    """Why ``path`` cannot be loaded (None if it can); ``size`` as saved, if recorded."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual < size:
        return f"truncated ({actual} of {size} bytes)"
    if size is not None and actual != size:
        return f"changed since it was saved ({actual} bytes, saved as {size})"
    try:
        if path.suffix == ".safetensors":
            load_file(path, device="cpu")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            # This run's own files, read as accelerate reads them (its custom state
            # needs full unpickling too).
            torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any reader's failure means the same: it will not load
        return f"truncated or corrupt ({type(error).__name__}: {str(error).strip()[:200]})"
    return None


@dataclass
class CheckpointChoice:
    """Where an ``"auto"`` resume starts: ``checkpoint`` (None: from scratch), with its
    ``state``, and the newer checkpoints that failed to load with their problems."""

    checkpoint: Path | None
    state: dict[str, Any] | None
    damaged: dict[Path, list[str]] = field(default_factory=dict)


def choose_checkpoint(output_dir: Path) -> CheckpointChoice:
    """The newest checkpoint in ``output_dir`` that loads, and the damaged ones after it.

    When checkpoints exist but none loads, this refuses rather than starting over:
    a fresh start would rewrite ``metrics.jsonl`` and redo the whole run, while the
    damage may be repairable (a file restored from a copy), and the model weights of a
    checkpoint whose optimiser state is damaged may still be worth keeping.
    """
    damaged: dict[Path, list[str]] = {}
    for checkpoint in reversed(_checkpoints(output_dir)):
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return CheckpointChoice(checkpoint, _read_state(checkpoint)[0], damaged)
        damaged[checkpoint] = problems
    if damaged:
        listing = "\n".join(f"  - {p}" for problems in damaged.values() for p in problems)
        raise ValueError(
            f"no checkpoint in {output_dir} loads; nothing was deleted:\n{listing}\n"
            "Fix: restore the damaged files, or move these checkpoint folders out of "
            f"{output_dir} (or delete them) to start the run over"
        )
    return CheckpointChoice(None, None)


def explicit_checkpoint(checkpoint: str | Path) -> CheckpointChoice:
    """A checkpoint named by the caller: it must load, there is no falling back."""
    checkpoint = Path(checkpoint)
    state = read_checkpoint_state(checkpoint)
    problems = checkpoint_problems(checkpoint)
    if problems:
        raise DamagedCheckpointError(checkpoint, problems)
    return CheckpointChoice(checkpoint, state)


def set_aside(checkpoint: Path) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (``.damaged.2``, ... if taken):
    kept for inspection, out of the way of a new checkpoint of the same step."""
    target = checkpoint.with_name(checkpoint.name + DAMAGED_SUFFIX)
    number = 2
    while target.exists():
        target = checkpoint.with_name(f"{checkpoint.name}{DAMAGED_SUFFIX}.{number}")
        number += 1
    checkpoint.rename(target)
    return target


# Settings that change how a run is recorded, not what it computes: a run may resume
# with other values of these.
_BOOKKEEPING = ("output_dir", "progress", "log_every", "checkpoint_every", "keep_checkpoints")


def check_same_run(saved: dict[str, Any] | None, current: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to continue a checkpoint written with other settings (``run_settings``)."""
    if saved is None:
        return
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in _BOOKKEEPING and saved.get(key) != current.get(key)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(
            f"checkpoint {checkpoint} was written with other settings ({details}); resuming "
            "would mix two runs. Use another output_dir, or resume_from=None to start fresh"
        )


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    global_step: int,
    epoch: int,
    batch_in_epoch: int,
    settings: dict[str, Any],
    keep: int,
) -> Path:
    """Write to a temporary folder, then rename: a crash never leaves half a checkpoint.

    Every process takes part (each saves its own RNG state); the main one moves files."""
    final = output_dir / f"{CHECKPOINT_PREFIX}{global_step}"
    staging = output_dir / f".{CHECKPOINT_PREFIX}{global_step}.partial"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return final
    state = {
        "global_step": global_step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "train_config": settings,
    }
    # Sizes as written: a later truncation is then named as such (every process's
    # files are in place after the barrier above).
    state["files"] = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    # Only numbered folders count: damaged checkpoints set aside are never removed.
    for old in _checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON."""
    return json.loads(json.dumps(value, default=str))


def read_history(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """Metrics logged up to the checkpoint we resume from (later rows are redone)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row["step"] <= up_to_step:
                rows.append(row)
    return rows


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def append_history(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
