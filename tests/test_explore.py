"""The explore notebook on a clone without models: everything from the committed results,
and for the part that needs a model, the command that builds it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO_ROOT


def printed_outputs(notebook_file) -> str:
    notebook = json.loads(notebook_file.read_text())
    return "\n".join(
        "".join(output.get("text", ""))
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
    )


def test_explore_runs_from_committed_results_alone(tmp_path):
    shutil.copytree(REPO_ROOT / "results", tmp_path / "results")
    shutil.copy2(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    executed = tmp_path / "explore.ipynb"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "run_notebook.py"),
            str(REPO_ROOT / "notebooks" / "explore.py"),
            str(executed),
            "-p",
            "budget",
            "0.7",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "models").exists()
    printed = printed_outputs(executed)
    assert "models/sst2/anytime is not here" in printed
    assert "make repro TARGETS=search@sst2" in printed
    notebook = json.loads(executed.read_text())
    images = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2  # every task's curves, and the frontier with the chosen point
    assert "macs_fraction" in json.dumps(notebook)  # the chosen point's record
