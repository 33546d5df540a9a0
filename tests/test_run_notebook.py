"""tools/run_notebook.py: the executed notebooks keep what a cell printed, not how the
printing was cut up in time."""

from __future__ import annotations

import sys

import nbformat
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
from run_notebook import strip_noise  # noqa: E402  (tools/ is not a package)


def notebook_printing(*outputs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("search()")
    cell.outputs = list(outputs)
    return nbformat.v4.new_notebook(cells=[cell])


def stdout(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def stderr(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stderr", text=text)


def test_the_same_printed_lines_give_the_same_notebook_however_stderr_interleaved():
    table = nbformat.v4.new_output("execute_result", data={"text/plain": "frontier"})
    # A progress bar redrawn between the two lines, or not: timing, not content.
    split = notebook_printing(
        stdout("iter 0\n"), stderr("50%|#####"), stdout("iter 1\n"), table, stdout("done\n")
    )
    joined = notebook_printing(stdout("iter 0\niter 1\n"), table, stdout("done\n"))
    assert strip_noise(split) == strip_noise(joined)
    outputs = strip_noise(split).cells[0].outputs
    assert [output.get("text") for output in outputs] == ["iter 0\niter 1\n", None, "done\n"]


def test_stderr_is_dropped_and_cells_are_numbered():
    stripped = strip_noise(notebook_printing(stderr("warning"), stdout("kept\n")))
    assert [output["name"] for output in stripped.cells[0].outputs] == ["stdout"]
    assert stripped.cells[0]["id"] == "cell-0"
