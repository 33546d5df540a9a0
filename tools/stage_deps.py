"""The latlib modules each pipeline stage runs, for dvc.yaml's ``deps`` (and its test).

    python tools/stage_deps.py            # print each stage's modules
    python tools/stage_deps.py --check    # exit 1 if dvc.yaml lacks one

A stage depends on its pipeline module and on every latlib module that module imports,
directly or not. Package ``__init__`` files only re-export, so they are left out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "latlib"
# The pipeline module that holds each stage of dvc.yaml.
STAGE_MODULES = {
    "validate": "latlib/pipeline/params.py",
    "finetune": "latlib/pipeline/training.py",
    "lengthdrop": "latlib/pipeline/training.py",
    "search": "latlib/pipeline/search.py",
    "evaluate": "latlib/pipeline/evaluate.py",
    "ablations": "latlib/pipeline/ablations.py",
    "variance": "latlib/pipeline/variance.py",
    "report": "latlib/pipeline/report.py",
    "bench": "latlib/pipeline/bench.py",
}


def _module_file(name: str) -> Path | None:
    """``latlib.x.y`` -> its file (a package's ``__init__`` yields None: it only re-exports)."""
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_modules(path: Path) -> set[Path]:
    """The latlib modules one file imports (``from .x import y`` may name a module ``y``)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not name.startswith("latlib"):
                continue
            for candidate in [name] + [f"{name}.{alias.name}" for alias in node.names]:
                file = _module_file(candidate)
                if file is not None:
                    found.add(file)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                file = _module_file(alias.name)
                if alias.name.startswith("latlib") and file is not None:
                    found.add(file)
    return found


def closure(entry: str) -> list[str]:
    """``entry`` and every latlib module it reaches, as paths relative to the root."""
    todo, seen = [ROOT / entry], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path) - seen)
    return sorted(str(p.relative_to(ROOT)) for p in seen)


def missing_deps(dvc_file: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Per stage, the modules it runs that dvc.yaml does not list."""
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    missing = {}
    for name, module in STAGE_MODULES.items():
        stage = stages[name].get("do", stages[name])
        listed = set(stage.get("deps", []))
        lacking = [m for m in closure(module) if m not in listed]
        if lacking:
            missing[name] = lacking
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        missing = missing_deps()
        for name, modules in missing.items():
            print(f"dvc.yaml: stage {name} lacks {', '.join(modules)}")
        sys.exit(1 if missing else 0)
    for name, module in STAGE_MODULES.items():
        print(f"{name}:")
        for dep in closure(module):
            print(f"  - {dep}")


if __name__ == "__main__":
    main()
