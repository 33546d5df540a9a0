"""Command line: ``python -m latlib {train,demo,stage,select,check-params} ...`` (``--help``
on each)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import distributed
from ..anytime import FRONTIER_FILE, Budget, Frontier
from ..evaluation import evaluate_model
from ..features import load_tokenizer, prepare_task_data
from ..flops import example_macs
from ..lengthdrop import LengthDropConfig
from ..lengths import constant_rate_config, smallest_config, to_model_lengths
from ..train import TrainConfig, build_model, train_model
from . import STAGES, run_stage
from .params import load_params
from .stage_times import record_local


def _train(args: argparse.Namespace) -> None:
    length_drop = None
    if args.length_drop:
        length_drop = LengthDropConfig(
            num_sandwich=args.num_sandwich,
            length_drop_ratio_bound=args.length_drop_ratio_bound,
            layer_dropout_prob=args.layer_dropout_prob,
            kl_direction=args.kl_direction,
        )
    config = TrainConfig(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        num_epochs=args.num_epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        warmup_ratio=args.warmup_ratio,
        length_drop=length_drop,
    )
    config.validate(batches_per_epoch=1)  # bad hyperparameters fail before any data loading
    tokenizer = load_tokenizer(args.init_from)
    data = prepare_task_data(
        args.task,
        tokenizer,
        args.data_dir,
        max_length=args.max_length,
        train_size=args.train_size,
        dev_size=args.dev_size,
        search_size=args.search_size,
        seed=args.seed,
    )
    model = build_model(args.init_from, data, length_mode=args.length_mode)
    metrics: dict = {}
    if args.eval_before:
        metrics["dev_before"] = evaluate_model(model, data, "dev")
    result = train_model(model, data, config, batch_size=args.batch_size)
    metrics |= {
        "global_step": result.global_step,
        "train_seconds": result.seconds,
        "steps_per_second": result.steps_per_second,
    }
    metrics["dev_full"] = evaluate_model(model, data, "dev")
    if length_drop is not None:
        smallest = smallest_config(
            model.num_layers, args.max_length, length_drop.length_drop_ratio_bound
        )
        metrics["dev_smallest"] = evaluate_model(
            model,
            data,
            "dev",
            to_model_lengths(smallest, model.config.length_mode, args.max_length),
        )
    print(json.dumps(metrics, indent=2))
    if args.metrics_file:
        with open(args.metrics_file, "w") as handle:
            json.dump(metrics, handle, indent=2)


def _select(args: argparse.Namespace) -> None:
    path = Path(args.model) / FRONTIER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the search for this model first")
    frontier = Frontier.load(path)
    point = frontier.within(_budget(args), paper_style=args.paper_style)
    print(json.dumps(frontier.describe(point), indent=2))


def _budget(args: argparse.Namespace) -> Budget:
    """The one budget option given, named in any message as it was typed."""
    # --budget is --budget-fraction's old name; a value above 1 used to mean MACs.
    alias = args.budget is not None
    fraction = args.budget if alias else args.budget_fraction
    names = {
        "fraction": "--budget" if alias else "--budget-fraction",
        "macs": "--budget-macs",
    }
    return Budget.of(fraction=fraction, macs=args.budget_macs, names=names)


# What the pipeline's first stage writes when params.yaml passes (dvc.yaml, validate):
# the same bytes for every valid file, so a valid edit reruns only the stages it affects.
VALID_STAMP = "params.yaml passed every check of latlib.pipeline.params\n"


def _check_params(args: argparse.Namespace) -> None:
    """Every section of every stage, for every task, without doing any work."""
    started = time.perf_counter()
    params = load_params(args.params)
    count = len(params["tasks"])
    print(f"{args.params}: every section is valid ({count} task{'s' if count != 1 else ''})")
    if args.stamp is not None:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        args.stamp.write_text(VALID_STAMP)
        record_local("validate", time.perf_counter() - started)


def _demo(args: argparse.Namespace) -> None:
    """A short end-to-end run: fine-tune briefly, then the same model at several lengths."""
    tokenizer = load_tokenizer(args.backbone)
    data = prepare_task_data(
        "sst2",
        tokenizer,
        args.data_dir,
        max_length=64,
        train_size=args.train_size,
        search_size=64,
        dev_size=args.dev_size,
        seed=0,
    )
    model = build_model(args.backbone, data, length_mode="ratio")
    config = TrainConfig(
        output_dir=args.work_dir,
        learning_rate=1e-4,
        max_steps=args.steps,
        seed=0,
        checkpoint_every=args.steps,
        length_drop=LengthDropConfig(),
    )
    train_model(model, data, config, batch_size=16, resume_from=None)
    lengths = data.dev["input_ids"]
    real = [len(x) for x in lengths]
    rows = []
    for rate in (1.0, 0.95, 0.9, 0.85, 0.8):
        grid = constant_rate_config(model.num_layers, 64, rate)
        config_ = to_model_lengths(grid, "ratio", 64)
        macs = example_macs(model.hf_config, real, config_, "ratio")
        rows.append(
            {
                "rate": rate,
                "length_config": [round(x, 4) for x in config_],
                "mean_macs": macs,
                **evaluate_model(model, data, "dev", config_),
            }
        )
    full = rows[0]["mean_macs"]
    for row in rows:
        row["flops_reduction"] = full / row["mean_macs"]
        print(
            f"rate {row['rate']:.2f}  accuracy {row['accuracy']:5.1f}  FLOPs reduction {row['flops_reduction']:.2f}x"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")


def _stage(args: argparse.Namespace) -> None:
    """One pipeline stage without its notebook (what the notebook calls, printed)."""
    params = load_params(args.params)
    if distributed.launched_processes() > 1:
        distributed.init_processes()
        if args.name in ("report", "bench") and not distributed.is_main_process():
            return  # one process writes the report; timings are one process's
    result = run_stage(args.name, params, args.task)
    if not result:
        return  # the secondary processes of a distributed run
    if args.name in ("ablations", "bench"):
        print(result["table"].to_string(index=False))
    elif args.name == "variance":
        print(result["summary"].to_string(index=False))
    else:
        print(json.dumps(result.get("metrics", result), indent=2, default=str))


def _count_or_fraction(text: str) -> int | float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="latlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune or LengthDrop-train a model on a task")
    train.add_argument("--task", required=True, choices=["sst2", "mnli", "squad"])
    train.add_argument(
        "--init-from", required=True, help="backbone name/path or a trained model folder"
    )
    train.add_argument("--output-dir", required=True)
    train.add_argument(
        "--metrics-file", default=None, help="also write the final metrics here (JSON)"
    )
    train.add_argument(
        "--data-dir", default=None, help="local data folder (else $LATLIB_DATA_DIR, else the hub)"
    )
    train.add_argument("--max-length", type=int, default=128)
    train.add_argument("--length-mode", choices=["ratio", "absolute"], default="ratio")
    train.add_argument("--train-size", type=int, default=None)
    train.add_argument("--dev-size", type=int, default=None)
    train.add_argument(
        "--search-size",
        type=_count_or_fraction,
        default=0.05,
        help="rows held out of train for the search: a count, or a fraction < 1",
    )
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=2e-5)
    train.add_argument("--num-epochs", type=float, default=3.0)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--warmup-ratio", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--eval-before", action="store_true", help="also evaluate before training")
    train.add_argument("--length-drop", action="store_true", help="LengthDrop training")
    train.add_argument("--num-sandwich", type=int, default=2)
    train.add_argument("--length-drop-ratio-bound", type=float, default=0.2)
    train.add_argument("--layer-dropout-prob", type=float, default=0.2)
    train.add_argument(
        "--kl-direction", choices=["student_teacher", "teacher_student"], default="student_teacher"
    )
    train.set_defaults(func=_train)

    demo = commands.add_parser(
        "demo", help="a short end-to-end run on SST-2 (a minute or two on a CPU)"
    )
    demo.add_argument("--backbone", default="embedded:all-minilm-l6-v2")
    demo.add_argument("--data-dir", default=None)
    demo.add_argument("--steps", type=int, default=60)
    demo.add_argument("--train-size", type=int, default=2000)
    demo.add_argument("--dev-size", type=int, default=300)
    demo.add_argument("--work-dir", default="runs/demo")
    demo.add_argument("--out", default="results/demo.json")
    demo.set_defaults(func=_demo)

    stage = commands.add_parser(
        "stage", help="run one pipeline stage without its notebook (as dvc.yaml's notebooks do)"
    )
    stage.add_argument("name", choices=STAGES)
    stage.add_argument("--task", default=None, choices=["sst2", "mnli", "squad"])
    stage.add_argument("--params", default="params.yaml")
    stage.set_defaults(func=_stage)

    select = commands.add_parser("select", help="the best searched configuration within a budget")
    select.add_argument("--model", required=True, help="a model folder with frontier.json")
    budget = select.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--budget-fraction",
        type=float,
        metavar="FRACTION",
        help="a fraction of the full model's MACs, in (0, 1]",
    )
    budget.add_argument(
        "--budget-macs", type=float, metavar="MACS", help="MACs per example, e.g. 1.2e9"
    )
    budget.add_argument(
        "--budget", type=float, metavar="FRACTION", help="the same as --budget-fraction"
    )
    select.add_argument(
        "--paper-style",
        action="store_true",
        help="budget in the paper's MACs (one unpadded max-length input)",
    )
    select.set_defaults(func=_select)

    check = commands.add_parser(
        "check-params",
        help="check every section of a params file for every task, before any work",
    )
    check.add_argument("--params", default="params.yaml")
    check.add_argument(
        "--stamp",
        type=Path,
        default=None,
        help="write this file when every check passes (the pipeline's validate stage)",
    )
    check.set_defaults(func=_check_params)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"latlib {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
