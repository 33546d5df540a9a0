"""The house rules: the library never reaches into the pipeline, and dvc.yaml knows
which modules each stage runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import stage_deps  # noqa: E402

LIBRARY = sorted(
    p for p in (REPO_ROOT / "latlib").glob("*.py") if p.name != "__main__.py"
)  # __main__ is the command line's entry point, not a module the library imports


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_library_never_imports_the_pipeline():
    for path in LIBRARY:
        reaching = {n for n in imported_names(path) if "pipeline" in n}
        assert not reaching, f"{path.name} imports {reaching}: the library must not know it"


def test_importing_the_library_loads_no_pipeline_module():
    modules = ", ".join(f"latlib.{p.stem}" for p in LIBRARY if p.stem != "__init__")
    code = (
        f"import sys, {modules}\n"
        "loaded = [m for m in sys.modules if m.startswith('latlib.pipeline')]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dvc_yaml_lists_every_module_a_stage_runs():
    assert stage_deps.missing_deps() == {}


def test_every_dvc_stage_has_its_pipeline_module():
    import yaml

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(stage_deps.STAGE_MODULES)
    for module in stage_deps.STAGE_MODULES.values():
        assert (REPO_ROOT / module).is_file()
