"""Tests for latlib.search: frontier, hypervolume, operators, store, resume."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlib.search import (
    SearchProblem,
    constant_ratio_configs,
    crossover,
    evolutionary_search,
    hypervolume,
    is_valid_config,
    mutate,
    pareto_frontier,
    random_config,
    random_search,
)
from latlib.store import EvaluatedConfig, SearchStore


def smallest_config(num_layers, max_length, p):
    """The LengthDrop smallest sub-model: each layer keeps ceil((1 - p) * previous)."""
    out, prev = [], max_length
    for _ in range(num_layers):
        prev = math.ceil(round((1 - p) * prev, 9))
        out.append(prev)
    return tuple(out)


FP = {"model": "toy", "weights_sha256": "abc", "dataset": "synthetic", "metric": "score"}


# ---------------------------------------------------------------- Pareto frontier


def brute_force_frontier(points):
    def dominates(q, p):
        return (q.cost <= p.cost and q.score >= p.score) and (q.cost < p.cost or q.score > p.score)

    return {(p.cost, p.score) for p in points if not any(dominates(q, p) for q in points)}


point_sets = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 3)), max_size=40
).map(lambda xs: [EvaluatedConfig(config=(c, s, k), cost=float(c), score=s / 8) for c, s, k in xs])


@given(point_sets)
def test_pareto_frontier_matches_brute_force(points):
    front = pareto_frontier(points)
    pairs = [(p.cost, p.score) for p in front]
    assert set(pairs) == brute_force_frontier(points)
    assert len(pairs) == len(set(pairs))  # one representative per duplicate
    costs = [p.cost for p in front]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    scores = [p.score for p in front]
    assert scores == sorted(scores)  # a frontier trades score for cost
    assert all(p in points for p in front)


@given(point_sets, st.randoms(use_true_random=False))
def test_pareto_frontier_is_order_independent(points, rnd):
    shuffled = list(points)
    rnd.shuffle(shuffled)
    assert pareto_frontier(shuffled) == pareto_frontier(points)


def test_pareto_frontier_ties():
    a = EvaluatedConfig((4, 4), 10.0, 0.9)
    b = EvaluatedConfig((4, 3), 10.0, 0.8)  # same cost, worse score
    c = EvaluatedConfig((3, 3), 10.0, 0.9)  # exact duplicate of a in (cost, score)
    assert pareto_frontier([a, b, c]) == [c]  # smallest config wins the tie
    assert pareto_frontier([]) == []


# ------------------------------------------------------------------- hypervolume


def ev(cost, score):
    return EvaluatedConfig((1,), cost, score)


def test_hypervolume_one_point():
    assert hypervolume([ev(10, 0.8)], 100, 0.5) == pytest.approx(1.0 * 0.3)
    assert hypervolume([ev(10, 0.8)], 100, 0.5, log_cost=False) == pytest.approx(90 * 0.3)


def test_hypervolume_two_points_and_dominated():
    # linear axis: (2, 1) and (5, 3) with ref (10, 0):
    # [2, 5) x height 1 + [5, 10) x height 3 = 3 + 15
    pts = [ev(2, 1.0), ev(5, 3.0)]
    assert hypervolume(pts, 10, 0.0, log_cost=False) == pytest.approx(18.0)
    dominated = [ev(3, 0.5), ev(6, 2.0), ev(5, 3.0)]
    assert hypervolume(pts + dominated, 10, 0.0, log_cost=False) == pytest.approx(18.0)
    # log axis: (1, 1) and (10, 2), ref (100, 0): 1 * 1 + 1 * 2
    assert hypervolume([ev(1, 1.0), ev(10, 2.0)], 100, 0.0) == pytest.approx(3.0)


def test_hypervolume_outside_reference_box():
    assert hypervolume([ev(20, 0.9)], 10, 0.0, log_cost=False) == 0.0  # too costly
    assert hypervolume([ev(10, 0.9)], 10, 0.0, log_cost=False) == 0.0  # on the edge
    assert hypervolume([ev(2, -1.0)], 10, 0.0, log_cost=False) == 0.0  # too poor
    # a point outside does not change the area of one inside
    assert hypervolume([ev(2, 1.0), ev(20, 5.0)], 10, 0.0, log_cost=False) == pytest.approx(8.0)
    assert hypervolume([], 10, 0.0) == 0.0
    with pytest.raises(ValueError):
        hypervolume([ev(0, 1.0)], 10, 0.0, log_cost=True)


# --------------------------------------------------------------------- operators


@st.composite
def bounds_and_configs(draw):
    """Random non-increasing bounds lower <= upper and two valid configurations."""
    n = draw(st.integers(1, 12))
    max_length = draw(st.integers(2, 512))
    ups = sorted(draw(st.lists(st.integers(1, max_length), min_size=n, max_size=n)), reverse=True)
    # lower_i = ceil(f_i * upper_i) with non-increasing f keeps lower non-increasing
    fs = sorted(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), reverse=True)
    lower = tuple(max(1, math.ceil(f * u)) for f, u in zip(fs, ups, strict=True))
    upper = tuple(ups)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    a = random_config(lower, upper, rng)
    b = random_config(lower, upper, rng)
    return max_length, lower, upper, a, b, seed


def assert_valid(c, lower, upper):
    assert isinstance(c, tuple) and all(type(x) is int for x in c)
    assert len(c) == len(lower)
    assert all(lo <= x <= hi for x, lo, hi in zip(c, lower, upper, strict=True))
    assert all(x >= y for x, y in itertools.pairwise(c))


@given(bounds_and_configs(), st.floats(0, 1), st.booleans())
@settings(max_examples=200)
def test_mutate_stays_valid(case, prob, use_numpy):
    _, lower, upper, a, _, seed = case
    rng = np.random.default_rng(seed) if use_numpy else random.Random(seed)
    child = mutate(a, lower, upper, prob, rng)
    assert_valid(child, lower, upper)
    if prob == 0:
        assert child == a


@given(bounds_and_configs())
@settings(max_examples=200)
def test_crossover_stays_valid(case):
    _, lower, upper, a, b, _ = case
    child = crossover(a, b, lower, upper)
    assert_valid(child, lower, upper)
    assert child == tuple(math.ceil((x + y) / 2) for x, y in zip(a, b, strict=True))


@given(bounds_and_configs(), st.integers(1, 25))
def test_constant_ratio_configs_valid(case, n):
    max_length, lower, upper, *_ = case
    configs = constant_ratio_configs(len(lower), max_length, lower, upper, n)
    assert 1 <= len(configs) <= n and len(set(configs)) == len(configs)
    for c in configs:
        assert_valid(c, lower, upper)
    if n >= 2:
        assert configs[0] == lower and configs[-1] == upper
    means = [np.mean(c) for c in configs]
    assert means == sorted(means)


def test_constant_ratio_configs_spread_and_ratio():
    lower = smallest_config(12, 384, 0.2)
    upper = (384,) * 12
    assert lower[:3] == (308, 247, 198)  # ceil(0.8 * 384) = 308, ceil(0.8 * 308) = 247
    configs = constant_ratio_configs(12, 384, lower, upper, 20)
    assert len(configs) == 20
    means = np.array([np.mean(c) for c in configs])
    steps = np.diff(means)
    # evenly spread in mean length: every step near (mean(upper) - mean(lower)) / 19
    assert np.all(np.abs(steps - steps.mean()) < 0.1 * steps.mean())


def test_mutate_rejects_invalid_parent():
    with pytest.raises(ValueError):
        mutate((3, 4), (1, 1), (4, 4), 0.5, random.Random(0))


# ------------------------------------------------------------------------- store


def test_store_round_trip(tmp_path):
    path = tmp_path / "s.jsonl"
    store = SearchStore(path, FP)
    r1 = EvaluatedConfig((4, 3), 12.5, 0.75, 1.5)
    r2 = EvaluatedConfig([4, 2], 11, 0.5)
    store.add(r1)
    store.add(r2)
    with pytest.raises(ValueError):
        store.add(r1)
    again = SearchStore(path, dict(FP))
    assert len(again) == 2 and again.records() == [r1, r2]
    assert (4, 3) in again and [4, 2] in again and (1, 1) not in again
    assert again.get((4, 3)) == r1 and again.get((9,)) is None
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {"kind": "latlib-search-store", "version": 2, "fingerprint": FP}


def test_store_refuses_foreign_fingerprint(tmp_path):
    path = tmp_path / "s.jsonl"
    SearchStore(path, FP)
    other = dict(FP, dataset="sst2")
    with pytest.raises(ValueError, match="dataset") as err:
        SearchStore(path, other)
    msg = str(err.value)
    assert "synthetic" in msg and "sst2" in msg and "delete" in msg
    assert "'toy'" not in msg  # only the differing key is listed


def test_store_refuses_garbage(tmp_path):
    for content in ["hello\n", "", '{"kind": "something-else"}\n', "[1, 2]\n"]:
        path = tmp_path / "g.jsonl"
        path.write_text(content)
        with pytest.raises(ValueError, match="not a latlib search store"):
            SearchStore(path, FP)


def test_store_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    store = SearchStore(path, FP)
    store.add(EvaluatedConfig((4, 3), 12.0, 0.75))
    store.add(EvaluatedConfig((3, 3), 11.0, 0.70))
    good = path.read_bytes()
    path.write_bytes(good + b'{"config": [2, 2], "cost": 1')  # killed mid-write
    with pytest.warns(RuntimeWarning, match="truncated"):
        store = SearchStore(path, FP)
    assert len(store) == 2 and path.read_bytes() == good  # repaired
    store.add(EvaluatedConfig((2, 2), 10.0, 0.6))
    assert len(SearchStore(path, FP)) == 3
    # a complete last record that only lost its newline is kept
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert len(SearchStore(path, FP)) == 3
    assert path.read_bytes().endswith(b"\n")


def test_store_refuses_corrupt_middle_line(tmp_path):
    path = tmp_path / "s.jsonl"
    store = SearchStore(path, FP)
    for i in range(3):
        store.add(EvaluatedConfig((5 - i,), 10.0 - i, 0.5))
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"config": [4], "cost": "oops", "score": 0.5}\n'
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3"):
        SearchStore(path, FP)


# ----------------------------------------------------------------- the searches

H, F = 16, 64  # toy hidden and FFN sizes for a MAC-shaped cost
L, LAYERS = 64, 6
LOWER = smallest_config(LAYERS, L, 0.2)
UPPER = (L,) * LAYERS


def toy_cost(config):
    prev, macs = L, 0.0
    for b in config:
        macs += 4 * prev * H * H + 2 * prev * prev * H + 2 * b * H * F
        prev = b
    return macs


def toy_score(config):
    # Only the last layer's length matters (plus a tiny config-dependent term so
    # ties are rare), while early layers carry most of the cost: the best configs
    # are flat, which constant-ratio and layer-by-layer random sampling rarely are.
    digest = hashlib.sha256(repr(tuple(config)).encode()).digest()
    jitter = int.from_bytes(digest[:4], "big") / 2**32 * 1e-4
    return math.sqrt(config[-1] / L) + jitter


class Recorder:
    """An evaluate() that logs its calls and can simulate a kill after N calls."""

    def __init__(self, kill_after=None):
        self.calls = []
        self.kill_after = kill_after

    def __call__(self, config):
        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            raise KeyboardInterrupt
        self.calls.append(tuple(config))
        return toy_score(config)


SEARCH = dict(population_size=8, mutation_size=10, crossover_size=10, iterations=8)


def toy_problem(evaluate, cost=toy_cost):
    return SearchProblem(evaluate, cost, LOWER, UPPER, L)


def run_evo(store, evaluate, seed=0):
    return evolutionary_search(toy_problem(evaluate), store, seed=seed, progress=False, **SEARCH)


def test_kill_and_resume_reproduces_uninterrupted_run(tmp_path):
    reference = run_evo(SearchStore(tmp_path / "ref.jsonl", FP), Recorder())

    path = tmp_path / "resume.jsonl"
    first = Recorder(kill_after=57)
    with pytest.raises(KeyboardInterrupt):
        run_evo(SearchStore(path, FP), first)
    assert len(first.calls) == 57 and len(SearchStore(path, FP)) == 57

    second = Recorder()
    resumed = run_evo(SearchStore(path, FP), second)
    union = first.calls + second.calls
    assert len(union) == len(set(union))  # nothing evaluated twice
    assert resumed.store_hits == 57
    assert resumed.new_evaluations == len(second.calls)
    assert resumed.frontier == reference.frontier
    assert [r.config for r in resumed.evaluated] == [r.config for r in reference.evaluated]
    assert [h.hypervolume for h in resumed.history] == [h.hypervolume for h in reference.history]

    # a third run finds everything in the store and evaluates nothing
    third = Recorder()
    again = run_evo(SearchStore(path, FP), third)
    assert third.calls == [] and again.frontier == reference.frontier


def test_search_is_seeded_and_beats_random(tmp_path):
    a = run_evo(SearchStore(tmp_path / "a.jsonl", FP), Recorder(), seed=3)
    b = run_evo(SearchStore(tmp_path / "b.jsonl", FP), Recorder(), seed=3)
    assert a.frontier == b.frontier
    assert len(a.history) == SEARCH["iterations"] + 1
    assert [h.iteration for h in a.history] == list(range(SEARCH["iterations"] + 1))
    hvs = [h.hypervolume for h in a.history]
    assert hvs == sorted(hvs)  # the frontier of everything seen never gets worse
    assert len({r.config for r in a.evaluated}) == len(a.evaluated) == a.new_evaluations
    for r in a.evaluated:
        assert is_valid_config(r.config, LOWER, UPPER)

    n = len(a.evaluated)
    rnd = random_search(toy_problem(Recorder()), SearchStore(tmp_path / "r.jsonl", FP), n, seed=3)
    assert len(rnd.evaluated) == n
    again = random_search(
        toy_problem(Recorder()), SearchStore(tmp_path / "r2.jsonl", FP), n, seed=3
    )
    assert again.frontier == rnd.frontier

    ref = (toy_cost(UPPER) * 1.001, 0.0)
    hv_evo = hypervolume(a.frontier, *ref)
    hv_rnd = hypervolume(rnd.frontier, *ref)
    # margin measured over seeds 0-7: evolution wins by 6-17 %
    assert hv_evo > 1.03 * hv_rnd
    assert a.history[-1].hypervolume > a.history[0].hypervolume


def test_search_reuses_a_shared_store(tmp_path):
    # A random search and an evolutionary search may share one store: the second
    # reads back what the first evaluated and still follows its own trajectory.
    path = tmp_path / "shared.jsonl"
    rnd = random_search(toy_problem(Recorder()), SearchStore(path, FP), 40, seed=1)
    evo_fresh = run_evo(SearchStore(tmp_path / "fresh.jsonl", FP), Recorder())
    rec = Recorder()
    evo_shared = run_evo(SearchStore(path, FP), rec)
    assert evo_shared.frontier == evo_fresh.frontier
    assert not set(rec.calls) & {r.config for r in rnd.evaluated}


def test_on_iteration_and_progress_output(tmp_path, capsys):
    seen = []
    evolutionary_search(
        toy_problem(Recorder()),
        SearchStore(tmp_path / "p.jsonl", FP),
        population_size=4,
        mutation_size=3,
        crossover_size=3,
        iterations=2,
        progress=True,
        on_iteration=lambda stats, front: seen.append((stats.iteration, len(front))),
    )
    assert [i for i, _ in seen] == [0, 1, 2] and all(n >= 1 for _, n in seen)
    out = capsys.readouterr()
    assert "iter 2/2" in out.out + out.err


def test_store_cost_mismatch_is_detected(tmp_path):
    path = tmp_path / "c.jsonl"
    run_evo(SearchStore(path, FP), Recorder())
    with pytest.raises(ValueError, match="cost"):
        evolutionary_search(
            toy_problem(Recorder(), cost=lambda c: 2 * toy_cost(c)),
            SearchStore(path, FP),
            progress=False,
            **SEARCH,
        )
