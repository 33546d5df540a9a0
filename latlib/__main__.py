"""Command line: ``python -m latlib {train,evaluate,select,bench} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .train import LengthDropConfig, TrainConfig


def _train(args: argparse.Namespace) -> None:
    from .experiment import (
        build_model,
        evaluate_model,
        load_tokenizer,
        prepare_task_data,
        train_model,
    )

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
        from .lengths import smallest_config, to_model_lengths

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
    from .anytime import FRONTIER_FILE, Frontier

    path = Path(args.model) / FRONTIER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the search for this model first")
    frontier = Frontier.load(path)
    point = frontier.select(args.budget, paper_style=args.paper_style)
    print(json.dumps(frontier.describe(point), indent=2))


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

    select = commands.add_parser("select", help="the best searched configuration within a budget")
    select.add_argument("--model", required=True, help="a model folder with frontier.json")
    select.add_argument(
        "--budget",
        required=True,
        type=float,
        help="a fraction of the full model's MACs (<= 1) or absolute MACs",
    )
    select.add_argument(
        "--paper-style",
        action="store_true",
        help="budget in the paper's MACs (one unpadded max-length input)",
    )
    select.set_defaults(func=_select)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"latlib {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
