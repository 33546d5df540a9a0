"""How long each stage took: this machine's last run and the committed reference run.

``tools/run_notebook.py`` (and the validate stage) write each stage's wall time to
``runs/stage-times.json`` with :func:`record_local`
(this machine, not in git: no two runs take the same time); ``python tools/plan.py
--record`` copies those into ``results/stage-times.csv`` (committed, with the machine),
so that a fresh clone can say how long a stage takes before running it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOCAL_TIMES = Path("runs") / "stage-times.json"
REFERENCE_TIMES = Path("results") / "stage-times.csv"
REFERENCE_COLUMNS = ("stage", "seconds", "machine", "finished")
# The stages that build a task's searchable model (models/<task>/anytime).
ANYTIME_CHAIN = ("finetune", "lengthdrop", "search")


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float | None  # None: never timed
    source: str  # where the figure comes from


def machine() -> str:
    """The CPU model and core count: what a stage's wall time depends on most."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores"


def record_local(stage: str, seconds: float, root: Path = Path(".")) -> None:
    """Keep the last wall time of each stage (not in git: no two runs take the same)."""
    file = root / LOCAL_TIMES
    times = json.loads(file.read_text()) if file.is_file() else {}
    times[stage] = {
        "seconds": round(seconds, 1),
        "machine": machine(),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def local_times(root: Path = Path(".")) -> dict[str, dict[str, object]]:
    file = root / LOCAL_TIMES
    return json.loads(file.read_text()) if file.is_file() else {}


def reference_times(root: Path = Path(".")) -> dict[str, dict[str, object]]:
    file = root / REFERENCE_TIMES
    if not file.is_file():
        return {}
    with file.open(newline="") as handle:
        return {row["stage"]: row for row in csv.DictReader(handle)}


def estimate(stages: Iterable[str], root: Path = Path(".")) -> list[StageTime]:
    """Each stage's last time on this machine, else the reference run's, else unknown."""
    local, reference = local_times(root), reference_times(root)
    found = []
    for stage in stages:
        if stage in local:
            found.append(StageTime(stage, float(local[stage]["seconds"]), "last run here"))
        elif stage in reference:
            machine = reference[stage]["machine"]
            found.append(
                StageTime(stage, float(reference[stage]["seconds"]), f"reference run, {machine}")
            )
        else:
            found.append(StageTime(stage, None, "not timed yet"))
    return found


def describe(times: list[StageTime]) -> str:
    """A total such as "about 1.4 h" (with how many stages have no timing)."""
    known = [t.seconds for t in times if t.seconds is not None]
    if not known:
        return "not timed yet"
    total = sum(known)
    if total >= 3600:
        text = f"about {total / 3600:.1f} h"
    else:
        text = f"about {total / 60:.0f} min" if total >= 60 else "under a minute"
    missing = len(times) - len(known)
    return text + (f" (+ {missing} stage(s) not timed yet)" if missing else "")


def anytime_model_hint(task: str, root: Path = Path(".")) -> str:
    """What builds ``models/<task>/anytime`` and how long that takes."""
    times = estimate([f"{stage}@{task}" for stage in ANYTIME_CHAIN], root)
    sources = "; ".join(sorted({t.source for t in times if t.seconds is not None}))
    return (
        f"models/{task}/anytime is not here (models live in the DVC cache, not in git). "
        f"Build it with `make repro TARGETS=search@{task}` "
        f"(fine-tune, LengthDrop, search: {describe(times)}"
        + (f", from the {sources})." if sources else ").")
    )


def record(local: Mapping[str, Mapping[str, object]], root: Path = Path(".")) -> Path:
    """Merge this machine's last stage times into the committed reference table."""
    if not local:
        raise ValueError(f"no stage times in {root / LOCAL_TIMES}: run a stage first")
    merged = {**reference_times(root), **local}
    file = root / REFERENCE_TIMES
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REFERENCE_COLUMNS)
        writer.writeheader()
        for stage in sorted(merged):
            writer.writerow(
                {"stage": stage, **{k: merged[stage][k] for k in REFERENCE_COLUMNS[1:]}}
            )
    return file
