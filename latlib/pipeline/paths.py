"""Where one task's files live, and the small file helpers every stage shares.

Files meant for git hold only numbers that a rerun reproduces exactly; wall-clock
figures go to ``runs/<task>/timings.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TaskPaths:
    """Where one task's files live, relative to the project root."""

    task: str
    root: Path = Path(".")

    @property
    def standard_model(self) -> Path:
        return self.root / "models" / self.task / "standard"

    @property
    def lat_model(self) -> Path:
        return self.root / "models" / self.task / "lat"

    @property
    def anytime_model(self) -> Path:
        """The LAT model with its ``frontier.json``: what users load and ``set_budget`` on."""
        return self.root / "models" / self.task / "anytime"

    @property
    def results(self) -> Path:
        return self.root / "results" / "tasks" / self.task

    @property
    def runs(self) -> Path:
        """Checkpoints and search stores (not pipeline outputs: they survive a rerun)."""
        return self.root / "runs" / self.task

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=list) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
    return json.loads(path.read_text())


def record_timing(paths: TaskPaths, stage: str, values: dict[str, Any]) -> None:
    """Wall-clock figures, kept apart from the reproducible results (and out of git: no
    two runs take the same time)."""
    file = paths.runs / "timings.json"
    timings = json.loads(file.read_text()) if file.is_file() else {}
    timings[stage] = values
    write_json(file, timings)


def replace_dir(source: Path, destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination)
