"""Wall-clock speed, side by side: does a FLOPs reduction become a speedup?

Every case (the plain transformers model with its fastest attention, our model at full
length, our model at frontier configurations) runs on the same real batches, in one
process, interleaved: each repetition runs every case once, in a rotating order, so a
slow moment of a noisy machine hits all cases alike. Reported: median seconds per pass
and the spread (25th-75th percentile) over repetitions, throughput, the speedup over the
plain model, the FLOPs ratio on the same data, and efficiency = speedup / FLOPs ratio;
the same two against our own full-length pass (``*_over_full``).

Beside each frontier point runs its *ceiling*: the plain model on the same batches with
every example cut short to the same FLOPs ratio. It drops tokens for free (no scores, no
selection, the library's fused attention), so its efficiency is what fewer tokens can buy
on this machine at all; at batch size 1 that is well under 1, because a pass also pays
for reading every weight and for dispatching every operator whatever the length.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
)

from ..features import TaskData, make_dataloader, sequence_lengths
from ..flops import example_macs, model_macs
from ..lengths import sample_length_config, smallest_config, to_model_lengths
from ..model import LengthAdaptiveModel
from ..store import SearchStore
from . import plots
from .params import TaskParams, bench_section
from .paths import TaskPaths
from .runs import task_data
from .search import params_evolutionary_search, params_search_problem
from .stage_times import machine

PLAIN = "transformers (sdpa)"
FULL = "latlib, full length"
# The columns of the bench table that the markdown file and the notebook show.
SUMMARY_COLUMNS = (
    "case",
    "kind",
    "batch_size",
    "examples_per_second",
    "flops_ratio",
    "speedup",
    "efficiency",
    "speedup_over_full",
    "efficiency_over_full",
)


@dataclass
class BenchCase:
    """One thing to time: ``run`` takes a batch; ``macs``: mean MACs per example.

    ``kind``: "plain", "latlib" or "ceiling". ``inputs``, when set, holds the case's own
    batches, one for each shared batch (a ceiling's shortened ones).
    """

    name: str
    run: Callable[[dict[str, torch.Tensor]], Any]
    macs: float
    length_config: tuple[float, ...] | None = None
    kind: str = "latlib"
    inputs: list[dict[str, torch.Tensor]] | None = None

    def batches(self, shared: Sequence[dict[str, torch.Tensor]]) -> Sequence[dict[str, Any]]:
        return shared if self.inputs is None else self.inputs


def bench_batches(
    features: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_examples: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Padded model inputs, length-bucketed as evaluation batches them, made once."""
    if max_examples is not None and max_examples < len(features):
        features = features.select(range(max_examples))
    loader = make_dataloader(
        features, tokenizer, batch_size, shuffle=False, seed=0, return_index=False
    )
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return [{k: v for k, v in batch.items() if k in keep} for batch in loader]


def plain_model(model_dir: str | Path, task_type: str) -> torch.nn.Module:
    """The same weights as an ordinary transformers model with SDPA attention."""
    auto = (
        AutoModelForSequenceClassification
        if task_type == "classification"
        else AutoModelForQuestionAnswering
    )
    return auto.from_pretrained(str(model_dir), attn_implementation="sdpa").eval()


def standard_cases(
    model: LengthAdaptiveModel,
    model_dir: str | Path,
    features: datasets.Dataset,
    configs: Sequence[Sequence[float]],
) -> list[BenchCase]:
    """The plain model, ours at full length, and ours at each length configuration."""
    real = sequence_lengths(features).tolist()
    mode, task_type = model.config.length_mode, model.config.task_type

    def macs(config: Sequence[float] | None) -> float:
        return example_macs(model.hf_config, real, config, mode, task_type)

    plain = plain_model(model_dir, task_type)
    cases = [
        BenchCase(PLAIN, lambda batch: plain(**batch), macs(None), kind="plain"),
        BenchCase(FULL, lambda batch: model(**batch), macs(None)),
    ]
    for config in configs:
        config = tuple(config)
        cases.append(
            BenchCase(
                "latlib " + " ".join(f"{c:g}" for c in config),
                lambda batch, config=config: model(**batch, length_config=config),
                macs(config),
                config,
            )
        )
    return cases


def cut_lengths(
    hf_config: Any, lengths: Sequence[int], flops_ratio: float, task_type: str
) -> list[int]:
    """For each input length n, the longest m (at least 2: ``[CLS]`` and the last token)
    whose full-length MACs are at most 1 / ``flops_ratio`` of n's."""
    cost: dict[int, int] = {}

    def macs(length: int) -> int:
        if length not in cost:
            cost[length] = model_macs(hf_config, length, None, "absolute", task_type).total
        return cost[length]

    kept = []
    for length in lengths:
        target, cut = macs(length) / flops_ratio, length
        while cut > 2 and macs(cut) > target:
            cut -= 1
        kept.append(cut)
    return kept


def cut_batch(batch: dict[str, torch.Tensor], kept: Sequence[int]) -> dict[str, torch.Tensor]:
    """``batch`` (right-padded) with example i cut to its first ``kept[i] - 1`` tokens
    and its last token, padded again to the longest."""
    lengths = batch["attention_mask"].sum(-1)  # [B]
    keep = torch.tensor(kept, device=lengths.device)  # [B]
    slots = torch.arange(int(keep.max()), device=lengths.device)  # [m]
    source = torch.where(slots < keep[:, None] - 1, slots, lengths[:, None] - 1)  # [B, m]
    padding = slots >= keep[:, None]
    return {
        name: values.gather(1, source).masked_fill(padding, 0) for name, values in batch.items()
    }


def ceiling_case(
    plain: BenchCase,
    batches: Sequence[dict[str, torch.Tensor]],
    flops_ratio: float,
    hf_config: Any,
    task_type: str,
) -> BenchCase:
    """The plain model on ``batches`` with every example cut to ``flops_ratio`` fewer
    MACs: token dropping at no cost, the most that ``flops_ratio`` can buy here."""
    inputs, kept_all = [], []
    for batch in batches:
        lengths = batch["attention_mask"].sum(-1).tolist()
        kept = cut_lengths(hf_config, lengths, flops_ratio, task_type)
        inputs.append(cut_batch(batch, kept))
        kept_all += kept
    macs = example_macs(hf_config, kept_all, None, "absolute", task_type)
    name = f"{plain.name}, inputs cut to {flops_ratio:.2f}x fewer FLOPs"
    return BenchCase(name, plain.run, macs, kind="ceiling", inputs=inputs)


def machine_description() -> str:
    """CPU model, cores, the vector instructions torch uses, torch's threads and version:
    what a speed measurement depends on."""
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"{machine()}, {capability}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )


@torch.inference_mode()
def time_cases(
    cases: Sequence[BenchCase],
    batches: Sequence[dict[str, torch.Tensor]],
    repeats: int = 5,
    warmup: int = 1,
) -> pd.DataFrame:
    """Seconds per pass over ``batches`` for every case and repetition (interleaved)."""
    if repeats < 1 or not batches or not cases:
        raise ValueError("need at least one case, one batch and one repetition")
    for case in cases:
        for _ in range(warmup):
            for batch in case.batches(batches):
                case.run(batch)
    rows = []
    for repeat in range(repeats):
        shift = repeat % len(cases)
        for case in list(cases[shift:]) + list(cases[:shift]):
            inputs = case.batches(batches)
            start = time.perf_counter()
            for batch in inputs:
                case.run(batch)
            rows.append(
                {"case": case.name, "repeat": repeat, "seconds": time.perf_counter() - start}
            )
    return pd.DataFrame(rows)


def summarize(
    cases: Sequence[BenchCase], times: pd.DataFrame, examples: int, batch_size: int
) -> pd.DataFrame:
    """Per case: median and spread, throughput, speedup and FLOPs ratio vs the plain model,
    efficiency (speedup / FLOPs ratio)."""
    by_case = times.groupby("case")["seconds"]
    median, q25, q75 = by_case.median(), by_case.quantile(0.25), by_case.quantile(0.75)
    # The speedup of each repetition against the same repetition of the reference:
    # robust to drifts in machine speed during the benchmark.
    per_repeat = times.pivot(index="repeat", columns="case", values="seconds")
    reference = cases[0]
    # Against our own full-length pass too: what token dropping alone buys, apart from
    # how our full-length pass compares with the plain model.
    own_full = per_repeat[FULL] if FULL in per_repeat else per_repeat[reference.name]
    rows = []
    for case in cases:
        seconds = median[case.name]
        speedups = per_repeat[reference.name] / per_repeat[case.name]
        flops_ratio = reference.macs / case.macs
        over_full = float((own_full / per_repeat[case.name]).median())
        rows.append(
            {
                "case": case.name,
                "kind": case.kind,
                "batch_size": batch_size,
                "examples": examples,
                "median_seconds": seconds,
                "q25_seconds": q25[case.name],
                "q75_seconds": q75[case.name],
                "examples_per_second": examples / seconds,
                "latency_ms_per_batch": 1000 * seconds / np.ceil(examples / batch_size),
                "macs_per_example": case.macs,
                "flops_ratio": flops_ratio,
                "speedup": float(speedups.median()),
                "speedup_q25": float(speedups.quantile(0.25)),
                "speedup_q75": float(speedups.quantile(0.75)),
                "efficiency": float(speedups.median()) / flops_ratio,
                "speedup_over_full": over_full,
                "efficiency_over_full": over_full / flops_ratio,
            }
        )
    return pd.DataFrame(rows)


def expected_lengthdrop_cost(
    model: LengthAdaptiveModel,
    real_lengths: Sequence[int],
    num_sandwich: int,
    length_drop_ratio_bound: float,
    layer_dropout_prob: float,
    use_smallest: bool = True,
    layer_drop_full: bool = True,
    samples: int = 200,
    seed: int = 0,
) -> float:
    """Theoretical cost of one LengthDrop step relative to a standard step: the full pass
    plus the smallest and ``num_sandwich`` random sub-models, each in MACs relative to
    the full model (LayerDrop removes a layer's share with probability p)."""
    rng = random.Random(seed)
    mode, max_length, task = (
        model.config.length_mode,
        model.config.max_length,
        model.config.task_type,
    )
    layers = model.num_layers
    full = example_macs(model.hf_config, real_lengths, None, mode, task)

    def relative(grid: Sequence[int]) -> float:
        config = to_model_lengths(grid, mode, max_length)
        return example_macs(model.hf_config, real_lengths, config, mode, task) / full

    layer_share = 1.0 - layer_dropout_prob  # expected fraction of layers that run
    cost = layer_share if layer_drop_full else 1.0
    if use_smallest:
        cost += layer_share * relative(smallest_config(layers, max_length, length_drop_ratio_bound))
    if num_sandwich:
        draws = [
            relative(sample_length_config(layers, max_length, length_drop_ratio_bound, rng=rng))
            for _ in range(samples)
        ]
        cost += num_sandwich * layer_share * float(np.mean(draws))
    return cost


# ----------------------------------------------------------------------------- stage


@dataclass
class BenchSettings:
    """The ``bench`` section of params.yaml."""

    batch_sizes: tuple[int, ...] = (1, 32)
    repeats: int = 5
    # Examples per timed pass, per batch size: batch 1 on the whole dev set would take
    # minutes per case; None means every row.
    max_examples: dict[int, int | None] | None = None
    max_points: int = 6  # frontier configurations timed (evenly spread over the frontier)
    threads: int | None = None  # None: torch's default (the machine's cores)
    search_iterations: int = 2  # search replayed with and without the prefix cache (0: skip)

    @classmethod
    def from_params(cls, section: dict[str, Any], task: str | None = None) -> BenchSettings:
        """The settings of ``task``: the section with ``overrides[task]`` applied (a long
        input costs more per pass, so SQuAD times fewer examples than SST-2)."""
        section = bench_section(section, task)
        return cls(
            batch_sizes=tuple(section.get("batch_sizes", (1, 32))),
            repeats=section.get("repeats", 5),
            max_examples={int(k): v for k, v in (section.get("max_examples") or {}).items()},
            max_points=section.get("max_points", 6),
            threads=section.get("threads"),
            search_iterations=section.get("search_iterations", 2),
        )


def spread_points(points: Sequence[Any], count: int) -> list[Any]:
    """``count`` points evenly spread over a cheapest-first list (both ends included)."""
    if count >= len(points):
        return list(points)
    if count == 1:
        return [points[0]]
    picks = sorted({round(i * (len(points) - 1) / (count - 1)) for i in range(count)})
    return [points[i] for i in picks]


def benchmark_model(
    model_dir: str | Path,
    features: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    settings: BenchSettings,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Time the plain model, ours at full length and frontier points of ``model_dir``."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = LengthAdaptiveModel.from_pretrained(model_dir).eval()
    if model.frontier is None:
        raise ValueError(f"{model_dir} has no frontier.json: run the search stage first")
    points = spread_points(model.frontier.points, settings.max_points)
    tables = []
    for batch_size in settings.batch_sizes:
        limit = (settings.max_examples or {}).get(batch_size)
        subset = features if limit is None else features.select(range(min(limit, len(features))))
        cases = standard_cases(model, model_dir, subset, [p.length_config for p in points])
        batches = bench_batches(subset, tokenizer, batch_size)
        plain = cases[0]
        cases += [
            ceiling_case(
                plain, batches, plain.macs / case.macs, model.hf_config, model.config.task_type
            )
            for case in cases
            if case.length_config is not None
        ]
        if progress:
            progress(f"batch {batch_size}: {len(cases)} cases x {settings.repeats} repeats")
        times = time_cases(cases, batches, settings.repeats)
        table = summarize(cases, times, len(subset), batch_size)
        table.insert(1, "threads", torch.get_num_threads())
        table["machine"] = machine_description()
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def bench_stage(params: TaskParams, paths: TaskPaths, section: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's bench stage for one task: time the anytime model on the dev set,
    write ``results/bench/<task>.{csv,md}`` and ``figures/<task>-latency.{png,svg}``.

    Unlike every other stage its numbers are measurements: a rerun gives other ones, so
    they live apart from ``results/tasks/`` (which the report reads)."""
    settings = BenchSettings.from_params(section, params.task)
    data = task_data(params, paths.anytime_model, with_train=False)
    table = benchmark_model(paths.anytime_model, data.dev, data.tokenizer, settings, print)
    table.insert(0, "task", params.task)
    out = paths.root / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{params.task}.csv", index=False)
    shown = table[list(SUMMARY_COLUMNS)].to_markdown(index=False, floatfmt=".3f")
    (out / f"{params.task}.md").write_text(f"Measured on {table['machine'].iloc[0]}.\n\n{shown}\n")
    figure = plots.latency_figure(table, f"{params.task}: measured time vs FLOPs")
    plots.save_figure(figure, paths.figures / f"{params.task}-latency")
    # The search files are written either way: dvc.yaml declares them for every task.
    search = pd.DataFrame(columns=["task", *SEARCH_SPEED_COLUMNS])
    if settings.search_iterations:
        search = search_speed(params, paths, settings.search_iterations, data)
        search.insert(0, "task", params.task)
        shown = search.to_markdown(index=False, floatfmt=".3f")
    else:
        shown = (
            f"Not timed for {params.task}: bench.search_iterations is 0 for this task "
            "(the search's speed is measured where it is cheap, on SST-2)."
        )
    search.to_csv(out / f"{params.task}-search.csv", index=False)
    (out / f"{params.task}-search.md").write_text(shown + "\n")
    return {"table": table, "figure": figure, "search": search}


# The columns of the search-speed table (``search_speed``).
SEARCH_SPEED_COLUMNS = (
    "path",
    "evaluations",
    "seconds",
    "evaluations_per_minute",
    "layers_reused",
    "same_scores",
    "speedup",
)
# The search's evaluation paths, slowest first: (name, batches made once, prefix cache).
SEARCH_PATHS = (
    ("from scratch", False, False),  # each configuration as a lone evaluate_model call
    ("batches once", True, False),
    ("batches once + prefix cache", True, True),
)


def search_speed(
    params: TaskParams, paths: TaskPaths, iterations: int, data: TaskData
) -> pd.DataFrame:
    """The pipeline's evolutionary search, its first ``iterations`` generations, run from
    an empty store along each of ``SEARCH_PATHS``. The table gives evaluations per minute
    of each, its speedup over the first, and whether all scored every configuration the
    same (they run the same operations on the same tensors)."""
    model = LengthAdaptiveModel.from_pretrained(paths.anytime_model).eval()
    rows, scores = [], {}
    for path, reuse_batches, cached in SEARCH_PATHS:
        cache_mb = params.search["cache_mb"] if cached else 0
        with_cache = replace(params, search={**params.search, "cache_mb": cache_mb})
        problem = params_search_problem(with_cache, model, data, paths.anytime_model, reuse_batches)
        with tempfile.TemporaryDirectory() as scratch:
            result = params_evolutionary_search(
                params,
                problem,
                SearchStore(Path(scratch) / "store.jsonl", problem.fingerprint),
                iterations=iterations,
            )
        scores[path] = [(r.config, r.score) for r in result.evaluated]
        rows.append(
            {
                "path": path,
                "evaluations": len(result.evaluated),
                "seconds": result.seconds,
                "evaluations_per_minute": 60 * len(result.evaluated) / result.seconds,
                "layers_reused": problem.cache.stats.reuse_fraction if problem.cache else 0.0,
            }
        )
    table = pd.DataFrame(rows)
    first = scores[SEARCH_PATHS[0][0]]
    table["same_scores"] = [scores[path] == first for path, _, _ in SEARCH_PATHS]
    table["speedup"] = table["evaluations_per_minute"] / table["evaluations_per_minute"].iloc[0]
    return table
