"""A quick look at the whole pipeline that touches nothing committed (``make smoke``).

    python tools/smoke.py [--dest DIR] [--data-dir DIR]

Copies the project's source files (not its committed results, figures, executed
notebooks, dvc.lock or models) into a scratch folder, a temporary one unless ``--dest``
names it, switches that copy to the ``smoke`` profile (a tiny random BERT, a few hundred
rows of SST-2 and SQuAD) and runs ``dvc repro`` there: every stage, in a few minutes on
2 CPU cores. The project itself is left as it was (``git status`` stays clean); the
scratch copy keeps its tables, figures and executed notebooks for you to open, and the
command ends by saying where they are.

``tests/test_pipeline.py`` runs this command and checks both: the smoke run's outputs,
and that the project's working tree is byte-identical afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The committed outputs of the real run: the smoke run writes its own, in the copy.
NOT_COPIED = ("results/", "figures/", "notebooks/executed/", "dvc.lock", "models/", "runs/")


def git_files(root: Path = ROOT) -> list[str]:
    """The project's files as git sees them: tracked, and new files not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (root / name).is_file()]


def source_files(root: Path = ROOT) -> list[str]:
    """The project's files less the committed outputs."""
    return [name for name in git_files(root) if not name.startswith(NOT_COPIED)]


def tree_state(root: Path = ROOT) -> tuple[str, dict[str, str]]:
    """``git status`` and a digest of every file git sees: what must be the same before
    and after a quick look."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digests = {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in git_files(root)
    }
    return status, digests


def environment() -> dict[str, str]:
    """This interpreter's environment first on PATH (dvc's stages call ``python``), the
    hub off, no analytics."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def run(command: list[str], cwd: Path, quiet: bool = False) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=environment(), capture_output=quiet, text=True, check=False
    )
    if done.returncode != 0:
        output = f"\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}" if quiet else ""
        raise SystemExit(f"{' '.join(command)} failed in {cwd} (exit {done.returncode}){output}")


def make_project(dest: Path, data_dir: Path | None = None, profile: str = "smoke") -> Path:
    """A scratch copy of the project on ``profile``, as its own git repository."""
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} is not empty: name a new folder with --dest, or remove it")
    profile_file = ROOT / "profiles" / f"{profile}.yaml"
    if not profile_file.is_file():
        choices = ", ".join(p.stem for p in sorted((ROOT / "profiles").glob("*.yaml")))
        raise SystemExit(f"no profile {profile!r} in profiles/: choose one of {choices}")
    params = yaml.safe_load(profile_file.read_text())
    configured = params["data"].get("data_dir")
    folder = data_dir or (ROOT / configured if configured else None)
    if folder is not None:
        folder = folder.resolve()
        if not folder.is_dir():
            raise SystemExit(
                f"no data folder at {folder}: pass --data-dir, or set data.data_dir in "
                f"profiles/{profile}.yaml"
            )
        params["data"]["data_dir"] = str(folder)
    for name in source_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=latlib smoke", "-c", "user.email=smoke@localhost"]
    run([*git, "init", "-q"], dest, quiet=True)
    run([*git, "add", "-A"], dest, quiet=True)
    run([*git, "commit", "-q", "-m", f"{profile} profile"], dest, quiet=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, help="the scratch folder (default: a new temp one)")
    parser.add_argument("--data-dir", type=Path, help="the data folder (default: the profile's)")
    parser.add_argument("--profile", default="smoke", help="a profile of profiles/ (smoke)")
    args = parser.parse_args()
    dest = args.dest or Path(tempfile.mkdtemp(prefix="latlib-smoke-"))
    dest.mkdir(parents=True, exist_ok=True)
    started, before = time.perf_counter(), tree_state()
    project = make_project(dest.resolve(), args.data_dir, args.profile)
    print(f"scratch copy on the {args.profile} profile: {project}", flush=True)
    run([str(Path(sys.executable).parent / "dvc"), "repro"], project)
    minutes = (time.perf_counter() - started) / 60
    after = tree_state()[1]
    changed = sorted(
        name for name in set(before[1]) | set(after) if before[1].get(name) != after.get(name)
    )
    if changed:  # something else wrote into the project meanwhile (another run?)
        print(f"\nwarning: files of {ROOT} changed during the quick look: {changed[:10]}")
    else:
        print(f"\nnothing in {ROOT} changed.")
    print(
        f"done in {minutes:.1f} min. The smoke run's outputs:\n"
        f"  tables     {project / 'results' / 'summary.md'} and {project / 'results' / 'tasks'}/\n"
        f"  figures    {project / 'figures'}/\n"
        f"  notebooks  {project / 'notebooks' / 'executed'}/\n"
        f"Open them, or `cd {project} && dvc exp run -S search.iterations=2` to try a change.\n"
        "The numbers come from a tiny random model: they show the pipeline works, not how "
        "well LAT does."
    )


if __name__ == "__main__":
    main()
