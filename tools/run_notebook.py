"""Run a jupytext notebook with papermill and save it executed, stripped of noise.

    python tools/run_notebook.py notebooks/01_finetune.py notebooks/executed/01_finetune-sst2.ipynb -p task sst2

The notebooks live in git as jupytext percent files (reviewable diffs); the executed
copies keep their outputs but lose what changes from run to run (timestamps, durations,
random cell ids, progress bars on stderr), so a rerun leaves git clean. The progress
bars (steps, rate, ETA) go to this command's stderr while the notebook runs, and the
stage's wall time to ``runs/stage-times.json``, which ``tools/plan.py`` reads to say how
long the next ``dvc repro`` will take.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

NOISY_CELL_METADATA = ("papermill", "execution")


def strip_noise(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-specific metadata and stderr output; number the cells."""
    notebook.metadata.pop("papermill", None)
    notebook.metadata.pop("widgets", None)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
        for key in NOISY_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(
                output
                for output in cell.outputs
                if not (output.get("output_type") == "stream" and output.get("name") == "stderr")
            )
    return notebook


def merge_streams(outputs: Iterable[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Join consecutive outputs of the same stream into one.

    How a cell's stdout is cut into outputs depends on timing (a progress bar drawn on
    stderr between two lines splits them; without it they arrive as one), so the cut is
    noise: two runs that print the same text must give the same notebook."""
    merged: list[nbformat.NotebookNode] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and output.get("output_type") == "stream"
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] = stream_text(previous) + stream_text(output)
        else:
            merged.append(output)
    return merged


def stream_text(output: nbformat.NotebookNode) -> str:
    text = output.get("text", "")
    return text if isinstance(text, str) else "".join(text)


def run_notebook(source: Path, output: Path, parameters: dict[str, object]) -> None:
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        unexecuted = Path(scratch) / "input.ipynb"
        executed = Path(scratch) / "output.ipynb"
        nbformat.write(notebook, unexecuted)
        papermill.execute_notebook(
            str(unexecuted),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            stderr_file=sys.stderr,
            cwd=str(Path.cwd()),
        )
        result = strip_noise(nbformat.read(executed, as_version=4))
    nbformat.write(result, output)


def stage_name(notebook: Path, parameters: dict[str, object]) -> str:
    """The dvc.yaml stage a notebook run is: ``01_finetune.py -p task sst2`` ->
    ``finetune@sst2``."""
    name = notebook.stem.split("_", 1)[-1]
    task = parameters.get("task")
    return f"{name}@{task}" if task else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="a jupytext percent file (notebooks/*.py)")
    parser.add_argument("output", type=Path, help="where the executed .ipynb goes")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    args = parser.parse_args()
    if not args.notebook.is_file():
        parser.error(f"{args.notebook} does not exist")
    # Values are read as YAML, as papermill's own command line does: 0.5 is a number,
    # null is None, sst2 stays text.
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    started = time.perf_counter()
    run_notebook(args.notebook, args.output, parameters)
    seconds = time.perf_counter() - started
    # Imported here: the library's import time should not delay the notebook's start.
    from latlib.pipeline.stage_times import record_local

    record_local(stage_name(args.notebook, parameters), seconds)


if __name__ == "__main__":
    main()
