"""Multi-objective search over length configurations (paper section 3.3).

A *length configuration* is a tuple of ints, one per layer: how many tokens leave
that layer.  It is valid when it is non-increasing and lies element-wise between
two bounds, ``lower`` (the smallest model the LengthDrop training covered) and
``upper`` (the full model).  The model converts configurations to whatever it
needs (absolute counts or ratios ``l / max_length``); the search does not care.

This module is deliberately pure Python + numpy: the model, the data and the
metric reach it only through a ``SearchProblem``: two callables, ``evaluate(config) -> score`` and
``cost(config) -> MACs``.  That keeps it testable in milliseconds and lets the
same code drive SQuAD, GLUE or a synthetic problem.

Every evaluation goes through a :class:`~latlib.store.SearchStore`, an append-only JSONL file
fsynced after each record, so a killed search resumes where it stopped: already
stored configurations are read back instead of re-evaluated, and because the
random stream never depends on whether a score came from the store, a resumed
search walks exactly the same trajectory as an uninterrupted one.

Differences from the reference implementation (see the project's reference notes):
the frontier compares costs with costs only; the initial population works for any
number of layers and any maximum length; the evaluated-configuration cache is a
crash-safe file with a fingerprint instead of an in-memory table of strings.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .store import Config, EvaluatedConfig, SearchStore, as_config

logger = logging.getLogger(__name__)

RNG = random.Random | np.random.Generator

# Relative slack for the cost-range check, so that float noise in a cost function
# does not reject the bounds themselves.
_COST_RTOL = 1e-9


# ------------------------------------------------------------------------- validity


def validate_bounds(lower: Sequence[int], upper: Sequence[int], max_length: int) -> None:
    """Raise ValueError unless ``lower``/``upper`` describe a non-empty search space."""
    lower, upper = as_config(lower), as_config(upper)
    if len(lower) == 0 or len(lower) != len(upper):
        raise ValueError(f"bounds must be non-empty and equally long: {lower} vs {upper}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    for name, b in (("lower", lower), ("upper", upper)):
        if any(x < y for x, y in zip(b, b[1:], strict=False)):
            raise ValueError(f"{name} bound must be non-increasing: {b}")
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        if not 1 <= lo <= hi <= max_length:
            raise ValueError(
                f"layer {i}: need 1 <= lower ({lo}) <= upper ({hi}) <= max_length ({max_length})"
            )


def is_valid_config(config: Sequence[int], lower: Sequence[int], upper: Sequence[int]) -> bool:
    """True iff ``config`` is non-increasing and element-wise within the bounds."""
    if len(config) != len(lower) or len(config) != len(upper):
        return False
    if any(not lo <= c <= hi for c, lo, hi in zip(config, lower, upper, strict=True)):
        return False
    return all(a >= b for a, b in zip(config, config[1:], strict=False))


def _check_config(config: Sequence[int], lower: Sequence[int], upper: Sequence[int]) -> Config:
    c = as_config(config)
    if not is_valid_config(c, lower, upper):
        raise ValueError(f"configuration {c} is not within bounds {tuple(lower)}..{tuple(upper)}")
    return c


def _ratio_config(r: float, num_layers: int, max_length: int, min_length: int = 1) -> Config:
    # Layer by layer, l_i = ceil(r * l_{i-1}), like latlib.lengths.smallest_config and
    # the LengthDrop sampler, so r = 1 - p lands exactly on the smallest sub-model.
    out, prev = [], max_length
    for _ in range(num_layers):
        # The epsilon stops float error from turning an exact product such as
        # 0.5 * 64 = 32.000000000000004 into 33.
        prev = max(min_length, min(prev, math.ceil(r * prev - 1e-9)))
        out.append(prev)
    return tuple(out)


def _clip(config: Sequence[int], lower: Sequence[int], upper: Sequence[int]) -> Config:
    # Clipping a non-increasing sequence into non-increasing bounds keeps it
    # non-increasing (min and max of non-increasing sequences are non-increasing).
    return tuple(max(lo, min(hi, c)) for c, lo, hi in zip(config, lower, upper, strict=True))


# ------------------------------------------------------------------ Pareto frontier


def pareto_frontier(points: Sequence[EvaluatedConfig]) -> list[EvaluatedConfig]:
    """Non-dominated points (minimise cost, maximise score), sorted by cost ascending.

    Of several points with the same cost only the best-scoring one survives; of exact
    duplicates in (cost, score) the one with the smallest configuration tuple is kept,
    so the result does not depend on the order of ``points``.
    """
    # Sort by cost, then best score first, then configuration as a deterministic
    # tie-break; a sweep then keeps each point that beats every cheaper one.
    ordered = sorted(points, key=lambda p: (p.cost, -p.score, p.config))
    frontier: list[EvaluatedConfig] = []
    for p in ordered:
        if not frontier or p.score > frontier[-1].score:
            frontier.append(p)
    return frontier


def hypervolume(
    frontier: Sequence[EvaluatedConfig],
    ref_cost: float,
    ref_score: float,
    log_cost: bool = True,
) -> float:
    """Area dominated by ``frontier`` inside the box bounded by the reference point
    (worst cost, worst score).  With ``log_cost`` the cost axis is log10(cost), as
    in the paper's plots, so halving the cost counts the same anywhere on the axis.

    Points with cost >= ``ref_cost`` or score <= ``ref_score`` add nothing.  Any
    point set is accepted; dominated points add nothing either.
    """
    if log_cost:
        if ref_cost <= 0 or any(p.cost <= 0 for p in frontier):
            raise ValueError("log_cost needs positive costs and a positive ref_cost")
        x = math.log10
    else:

        def x(v: float) -> float:
            return v

    inside = [p for p in frontier if p.cost < ref_cost and p.score > ref_score]
    front = pareto_frontier(inside)
    area = 0.0
    # Along the frontier cost and score both increase, so between two consecutive
    # costs the best score reachable is that of the cheaper point.
    for i, p in enumerate(front):
        right = x(front[i + 1].cost) if i + 1 < len(front) else x(ref_cost)
        area += (right - x(p.cost)) * (p.score - ref_score)
    return area


# ------------------------------------------------------------- candidate operators


def constant_ratio_configs(
    num_layers: int,
    max_length: int,
    lower: Sequence[int],
    upper: Sequence[int],
    n: int,
) -> list[Config]:
    """The paper's initial population: configurations that keep a constant fraction
    ``r`` of the previous layer's tokens at every layer (``l_i = ceil(r * l_{i-1})``,
    ``l_{-1} = max_length``), clipped into the bounds.

    The ``r`` values are chosen so that the mean relative length of the configurations
    is evenly spread from that of ``lower`` to that of ``upper`` (both included when
    ``n >= 2``; ``n == 1`` gives ``upper``).  Duplicates are dropped, so fewer than
    ``n`` configurations come back when the space is too small to hold ``n``.
    """
    validate_bounds(lower, upper, max_length)
    lower, upper = as_config(lower), as_config(upper)
    if len(lower) != num_layers:
        raise ValueError(f"bounds have {len(lower)} layers, expected {num_layers}")
    if n < 1:
        return []

    def config_at(r: float) -> Config:
        return _clip(_ratio_config(r, num_layers, max_length), lower, upper)

    def mean(c: Config) -> float:
        return float(np.mean(c))

    lo_mean, hi_mean = mean(lower), mean(upper)
    targets = [hi_mean] if n == 1 else np.linspace(lo_mean, hi_mean, n).tolist()
    out: list[Config] = []
    for target in targets:
        # mean(config_at(r)) is a non-decreasing step function of r, from lower at
        # r = 0 to upper at r = 1: bisect for the smallest r that reaches the target.
        a, b = 0.0, 1.0
        if mean(config_at(a)) >= target - 1e-12:
            b = a
        else:
            for _ in range(60):
                mid = 0.5 * (a + b)
                if mean(config_at(mid)) >= target - 1e-12:
                    b = mid
                else:
                    a = mid
        c = config_at(b)
        if c not in out:
            out.append(c)
    return out


def _uniform(rng: RNG) -> float:
    return float(rng.random())


def _randint(rng: RNG, a: int, b: int) -> int:
    """Uniform integer in [a, b], both included, from either kind of generator."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(a, b + 1))
    return rng.randint(a, b)


def mutate(
    config: Sequence[int],
    lower: Sequence[int],
    upper: Sequence[int],
    prob: float,
    rng: RNG,
) -> Config:
    """Resample each layer, with probability ``prob``, uniformly between its
    neighbours' current lengths (the previous layer above, the next layer below),
    intersected with its own bounds.  The result is always valid.

    Layers are visited first to last, so a resampled layer constrains the next one
    through its new value; the interval always contains the current value, so it is
    never empty.
    """
    c = list(_check_config(config, lower, upper))
    n = len(c)
    for i in range(n):
        if _uniform(rng) >= prob:
            continue
        hi = upper[i] if i == 0 else min(upper[i], c[i - 1])
        lo = lower[i] if i == n - 1 else max(lower[i], c[i + 1])
        c[i] = _randint(rng, lo, hi)
    return tuple(c)


def crossover(
    a: Sequence[int], b: Sequence[int], lower: Sequence[int], upper: Sequence[int]
) -> Config:
    """Element-wise mean of two valid configurations, rounded up.

    The mean of two non-increasing sequences within the bounds is again one, and
    rounding up is monotone, so the child is valid.
    """
    a, b = _check_config(a, lower, upper), _check_config(b, lower, upper)
    return tuple((x + y + 1) // 2 for x, y in zip(a, b, strict=True))


def random_config(lower: Sequence[int], upper: Sequence[int], rng: RNG) -> Config:
    """A random valid configuration, drawn layer by layer: layer i uniform in
    ``[lower_i, min(upper_i, previous)]``.  Not uniform over all valid
    configurations (it favours shrinking early), but it is the natural control."""
    out: list[int] = []
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        top = hi if i == 0 else min(hi, out[-1])
        out.append(_randint(rng, lo, top))
    return tuple(out)


# ----------------------------------------------------------------------- the search


@dataclass(frozen=True)
class IterationStats:
    """Progress after one iteration (iteration 0 is the initial population)."""

    iteration: int
    frontier_size: int
    hypervolume: float
    best_score: float
    evaluated: int  # configurations visited so far in this run
    new_evaluations: int  # of which evaluated by calling ``evaluate``
    store_hits: int  # of which read back from the store
    seconds: float  # wall time since the search started


@dataclass
class SearchResult:
    """Outcome of a search run.  ``evaluated`` holds every configuration this run
    visited, in order (fresh or from the store); other records in the store that
    this run did not visit are not part of it."""

    frontier: list[EvaluatedConfig]
    evaluated: list[EvaluatedConfig]
    new_evaluations: int
    store_hits: int
    seconds: float
    history: list[IterationStats] = field(default_factory=list)
    # Reference point used for the hypervolumes in ``history`` (log10 cost axis).
    hv_ref: tuple[float, float] = (math.nan, math.nan)


@dataclass
class SearchProblem:
    """What a search sees: the score and the cost of a configuration, and the bounds.

    ``fingerprint`` names what the scores belong to (a store is tied to it); a model's
    problem comes from ``search_problem.search_problem``.
    """

    evaluate: Callable[[Config], float]
    cost: Callable[[Config], float]
    lower: Config
    upper: Config
    max_length: int
    fingerprint: dict[str, Any] = field(default_factory=dict)


class _Runner:
    """Shared bookkeeping for both searches: the store lookup, the run's own list
    of visited configurations and the counters."""

    def __init__(self, problem: SearchProblem, store: SearchStore) -> None:
        lower, upper = problem.lower, problem.upper
        validate_bounds(lower, upper, problem.max_length)
        self.lower, self.upper = as_config(lower), as_config(upper)
        self.evaluate, self.cost, self.store = problem.evaluate, problem.cost, store
        self.cost_lo = float(self.cost(self.lower))
        self.cost_hi = float(self.cost(self.upper))
        if not self.cost_lo <= self.cost_hi:
            raise ValueError(f"cost(lower) = {self.cost_lo} exceeds cost(upper) = {self.cost_hi}")
        self.visited: dict[Config, EvaluatedConfig] = {}
        self.new_evaluations = 0
        self.store_hits = 0
        self.t0 = time.perf_counter()

    def acceptable(self, config: Config) -> bool:
        """In bounds, within the cost range of the bounds, and new to this run.

        Novelty is judged against this run's own trajectory, never against the
        store, so that a resumed run draws the same candidates as the original.
        """
        if config in self.visited or not is_valid_config(config, self.lower, self.upper):
            return False
        c = float(self.cost(config))
        slack = _COST_RTOL * max(abs(self.cost_lo), abs(self.cost_hi), 1.0)
        return self.cost_lo - slack <= c <= self.cost_hi + slack

    def visit(self, config: Config) -> EvaluatedConfig:
        stored = self.store.get(config)
        c = float(self.cost(config))
        if stored is not None:
            # A cost mismatch means the store was made with another cost model
            # (e.g. another length mode) that the fingerprint failed to capture.
            if not math.isclose(stored.cost, c, rel_tol=1e-9, abs_tol=0.0):
                raise ValueError(
                    f"{self.store.path}: stored cost {stored.cost} for {config} differs from "
                    f"cost() = {c}; the fingerprint should name the cost model"
                )
            self.store_hits += 1
            rec = stored
        else:
            t = time.perf_counter()
            score = self.evaluate(config)
            rec = EvaluatedConfig(config, c, float(score), time.perf_counter() - t)
            self.store.add(rec)
            self.new_evaluations += 1
        self.visited[config] = rec
        return rec

    def stats(self, iteration: int, ref: tuple[float, float]) -> IterationStats:
        front = pareto_frontier(list(self.visited.values()))
        return IterationStats(
            iteration=iteration,
            frontier_size=len(front),
            hypervolume=_safe_hypervolume(front, *ref),
            best_score=max((p.score for p in front), default=math.nan),
            evaluated=len(self.visited),
            new_evaluations=self.new_evaluations,
            store_hits=self.store_hits,
            seconds=time.perf_counter() - self.t0,
        )

    def result(self, history: list[IterationStats], ref: tuple[float, float]) -> SearchResult:
        evaluated = list(self.visited.values())
        return SearchResult(
            frontier=pareto_frontier(evaluated),
            evaluated=evaluated,
            new_evaluations=self.new_evaluations,
            store_hits=self.store_hits,
            seconds=time.perf_counter() - self.t0,
            history=history,
            hv_ref=ref,
        )


def _safe_hypervolume(front: Sequence[EvaluatedConfig], ref_cost: float, ref_score: float) -> float:
    # Costs that cannot be logged (a synthetic cost of 0) fall back to a linear axis
    # rather than aborting a long search over a progress statistic.
    if ref_cost > 0 and all(p.cost > 0 for p in front):
        return hypervolume(front, ref_cost, ref_score, log_cost=True)
    return hypervolume(front, ref_cost, ref_score, log_cost=False)


def _format_frontier(front: Sequence[EvaluatedConfig], max_points: int = 6) -> str:
    """A one-line summary: up to ``max_points`` frontier points, evenly picked."""
    if not front:
        return "(empty)"
    idx = sorted({round(i) for i in np.linspace(0, len(front) - 1, min(max_points, len(front)))})
    return "  ".join(f"{front[i].cost:.3g}:{front[i].score:.4g}" for i in idx)


def evolutionary_search(
    problem: SearchProblem,
    store: SearchStore,
    *,
    # The paper's settings.  The reference code's --evo_iter default is 100; its
    # README commands (and the paper) use 30.
    population_size: int = 20,
    mutation_size: int = 30,
    mutation_prob: float = 0.5,
    crossover_size: int = 30,
    iterations: int = 30,
    seed: int = 0,
    max_tries: int = 50,
    hv_ref: tuple[float, float] | None = None,
    progress: bool = True,
    on_iteration: Callable[[IterationStats, list[EvaluatedConfig]], None] | None = None,
) -> SearchResult:
    """Multi-objective evolutionary search (minimise ``problem.cost``, maximise
    ``problem.evaluate``).

    Iteration 0 evaluates ``population_size`` constant-ratio configurations.  Each of
    the ``iterations`` iterations then takes the Pareto frontier of everything this run
    has visited and adds ``mutation_size`` mutants (parent drawn uniformly from the
    frontier, each layer resampled with probability ``mutation_prob``) and
    ``crossover_size`` children (rounded-up mean of two distinct frontier parents).
    A candidate must be in bounds, have a cost within ``[cost(lower), cost(upper)]``
    and be new to this run; a slot that finds no such candidate in ``max_tries``
    draws is left empty (late in a search on a small space that is normal).

    Every candidate goes through ``store``: stored configurations are read back
    rather than re-evaluated, which is how a killed search resumes; the seeded random
    stream does not depend on it, so the resumed run ends on the same frontier.

    ``hv_ref`` is the (cost, score) reference of the hypervolumes in the history;
    by default ``(cost(upper), lowest score of the initial population)``.
    ``on_iteration(stats, frontier)`` is called after every iteration, including 0.
    """
    if population_size < 1 or iterations < 0 or mutation_size < 0 or crossover_size < 0:
        raise ValueError("sizes must be non-negative and population_size >= 1")
    if not 0.0 <= mutation_prob <= 1.0:
        raise ValueError(f"mutation_prob must be in [0, 1], got {mutation_prob}")
    run = _Runner(problem, store)
    max_length = problem.max_length
    rng = random.Random(seed)
    history: list[IterationStats] = []
    ref = hv_ref

    from tqdm.std import tqdm  # imported lazily: only the search needs it

    def say(msg: str) -> None:
        logger.info(msg)
        if progress:
            tqdm.write(msg)

    last_refresh = time.perf_counter()
    with tqdm(total=iterations + 1, desc="evolutionary search", disable=not progress) as bar:
        for it in range(iterations + 1):
            if it == 0:
                candidates = [
                    c
                    for c in constant_ratio_configs(
                        len(run.lower), max_length, run.lower, run.upper, population_size
                    )
                    if run.acceptable(c)
                ]
            else:
                candidates = _next_generation(
                    run, rng, mutation_size, mutation_prob, crossover_size, max_tries
                )
            for k, c in enumerate(candidates, start=1):
                run.visit(c)
                # Real evaluations take seconds each, so show where the iteration is;
                # rate-limited so that fast (cached) ones do not flood a log file.
                if progress and time.perf_counter() - last_refresh > 1.0:
                    bar.set_postfix_str(f"candidate {k}/{len(candidates)}")
                    last_refresh = time.perf_counter()
            if ref is None:
                ref = (run.cost_hi, min(r.score for r in run.visited.values()))
            stats = run.stats(it, ref)
            history.append(stats)
            front = pareto_frontier(list(run.visited.values()))
            bar.set_postfix(
                frontier=stats.frontier_size,
                best=f"{stats.best_score:.4g}",
                new=stats.new_evaluations,
                hits=stats.store_hits,
                refresh=False,
            )
            bar.update(1)
            say(
                f"iter {it}/{iterations}: {len(candidates)} candidates, frontier "
                f"{stats.frontier_size}, hv {stats.hypervolume:.4g}, best {stats.best_score:.4g} "
                f"| cost:score {_format_frontier(front)}"
            )
            if on_iteration is not None:
                on_iteration(stats, front)
    return run.result(history, ref if ref is not None else (math.nan, math.nan))


def _next_generation(
    run: _Runner,
    rng: random.Random,
    mutation_size: int,
    mutation_prob: float,
    crossover_size: int,
    max_tries: int,
) -> list[Config]:
    """Mutants and crossover children of the current frontier, all new to the run."""
    parents = [p.config for p in pareto_frontier(list(run.visited.values()))]
    batch: list[Config] = []
    seen: set[Config] = set()

    def draw(make: Callable[[], Config]) -> None:
        for _ in range(max_tries):
            child = make()
            if child not in seen and run.acceptable(child):
                seen.add(child)
                batch.append(child)
                return

    for _ in range(mutation_size):
        draw(lambda: mutate(rng.choice(parents), run.lower, run.upper, mutation_prob, rng))
    if len(parents) >= 2:  # one parent would only reproduce itself
        for _ in range(crossover_size):
            draw(lambda: crossover(*rng.sample(parents, 2), run.lower, run.upper))
    return batch


def random_search(
    problem: SearchProblem,
    store: SearchStore,
    num_evaluations: int,
    seed: int = 0,
    *,
    max_tries: int = 50,
    hv_ref: tuple[float, float] | None = None,
    progress: bool = False,
) -> SearchResult:
    """The control: ``num_evaluations`` distinct random valid configurations (see
    :func:`random_config`), with the same store, cost-range and novelty rules as
    :func:`evolutionary_search`.  Fewer come back if the space runs out."""
    run = _Runner(problem, store)
    rng = random.Random(seed)
    from tqdm.std import tqdm

    for _ in tqdm(range(num_evaluations), desc="random search", disable=not progress):
        for _ in range(max_tries):
            c = random_config(run.lower, run.upper, rng)
            if run.acceptable(c):
                run.visit(c)
                break
    ref = hv_ref
    if ref is None:
        scores = [r.score for r in run.visited.values()]
        ref = (run.cost_hi, min(scores) if scores else math.nan)
    history = [run.stats(0, ref)] if run.visited else []
    return run.result(history, ref)
