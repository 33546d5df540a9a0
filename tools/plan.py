"""What ``dvc repro`` is about to run, and about how long each stage takes (``make plan``;
``make repro`` prints it first).

    python tools/plan.py [TARGET ...]    # the plan for `dvc repro [TARGET ...]`
    python tools/plan.py --record        # keep this machine's last times as the reference

The stages come from ``dvc status`` and the pipeline's graph. Each estimate is the stage's last wall time on
this machine (``runs/stage-times.json``, written by ``tools/run_notebook.py``), else the
reference run's (``results/stage-times.csv``, committed, with the machine it ran on); see
``latlib/pipeline/stage_times.py``. A stage's time scales with the profile's sizes, so an
estimate holds for the same ``params.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from latlib.pipeline.stage_times import StageTime, describe, estimate, local_times, record

ROOT = Path(__file__).resolve().parents[1]
NODE = re.compile(r'^"([^"]+)";$')
# Stages whose output is the same whenever they succeed (validate's stamp): a rerun of
# one changes no input downstream, so it sets nothing else running.
CONSTANT_OUTPUT = ("validate",)
EDGE = re.compile(r'^"([^"]+)" -> "([^"]+)";$')


def dvc(*args: str, root: Path = ROOT) -> str:
    executable = Path(sys.executable).parent / "dvc"
    done = subprocess.run(
        [str(executable) if executable.is_file() else "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"dvc {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def stages_to_run(targets: list[str], root: Path = ROOT) -> list[str]:
    """The stages ``dvc repro TARGETS`` would run, in pipeline order.

    ``dvc status`` lists the stages whose inputs or outputs have changed already (unlike
    ``dvc repro --dry``, it does not stop at a stage whose input another stage has yet
    to make, as on a fresh clone without models); the stages downstream of those (the
    report, after an evaluate) run too once their inputs are rewritten, so they come
    from the pipeline's graph (``dvc dag``), kept within what the targets need."""
    changed = [name for name in json.loads(dvc("status", "--json", root=root) or "{}")]
    lines = dvc("dag", "--dot", root=root).splitlines()
    order = [m.group(1) for line in lines if (m := NODE.match(line.strip()))]
    children: dict[str, list[str]] = {}
    for line in lines:
        if m := EDGE.match(line.strip()):
            children.setdefault(m.group(1), []).append(m.group(2))
    unknown = [t for t in targets if t not in set(order)]
    if unknown:
        raise SystemExit(f"no such stage: {', '.join(unknown)} (stages: {', '.join(order)})")
    needed = set(order)
    if targets:  # only what `dvc repro TARGETS` reaches: the targets and their ancestors
        parents: dict[str, list[str]] = {}
        for parent, kids in children.items():
            for kid in kids:
                parents.setdefault(kid, []).append(parent)
        needed, todo = set(), list(targets)
        while todo:
            stage = todo.pop()
            if stage not in needed:
                needed.add(stage)
                todo.extend(parents.get(stage, []))
    running = {stage for stage in changed if stage in needed}
    todo = [stage for stage in running if stage not in CONSTANT_OUTPUT]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid in needed and kid not in running:
                running.add(kid)
                todo.append(kid)
    return [stage for stage in order if stage in running]


def format_plan(times: list[StageTime]) -> str:
    if not times:
        return "dvc repro: every stage is up to date; nothing to run."
    width = max(len(t.stage) for t in times)
    lines = [f"dvc repro will run {len(times)} stage(s):"]
    for t in times:
        shown = f"{t.seconds / 60:6.1f} min" if t.seconds is not None else "     ? min"
        lines.append(f"  {t.stage:<{width}}  {shown}  {t.source}")
    lines.append(f"  total: {describe(times)}")
    lines.append(
        "A killed run resumes where it stopped: training from its last checkpoint, the "
        "search from its store."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="stages, as for dvc repro (default: all)")
    parser.add_argument("--record", action="store_true", help="update results/stage-times.csv")
    args = parser.parse_args()
    if args.record:
        try:
            written = record(local_times(ROOT), ROOT)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        print(f"wrote {written.relative_to(ROOT)}")
        return
    print(format_plan(estimate(stages_to_run(args.targets), ROOT)))


if __name__ == "__main__":
    main()
