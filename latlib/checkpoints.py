"""Checkpoints of a training run: written atomically, found again, refused when foreign.

A checkpoint is accelerate's ``save_state`` folder (model, optimiser, scheduler, every
RNG, the LengthDrop sampler) plus ``trainer_state.json``: the step, where in the epoch
to go on, and the run's settings, which a resumed run must match. ``metrics.jsonl``
beside the checkpoints logs the losses; a resumed run drops the rows logged after its
checkpoint and logs them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


def find_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (None if there is none)."""
    candidates = _checkpoints(Path(output_dir))
    return candidates[-1] if candidates else None


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (staging folders start with a dot)."""
    return sorted(
        (p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )


def read_checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    """The bookkeeping of a checkpoint; a clear error if it is missing or damaged."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist; pass an existing checkpoint folder "
            "or resume_from=None to start fresh"
        )
    state_file = checkpoint / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        int(state["global_step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint {checkpoint} is damaged ({state_file}: {error}); delete that folder to "
            "resume from the previous checkpoint, or choose another output_dir"
        ) from error
    return state


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
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
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
