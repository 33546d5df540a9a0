# %% [markdown]
# # 6. Speed: do fewer FLOPs mean less time?
#
# The reason LAT exists is faster inference, and a FLOPs count is only a promise. Here
# the anytime model runs on the dev set at full length and at frontier configurations,
# side by side with the plain transformers model (SDPA attention), in one process, each
# repetition running every case once in a rotating order. Efficiency = measured speedup
# / FLOPs ratio: 1.0 turns every saved FLOP into saved time. The `*_over_full` columns
# measure against our own full-length pass instead: what dropping tokens alone buys.
#
# Each frontier point has a *ceiling* row: the plain model on the same batches with every
# example cut short to the same FLOPs ratio. It drops tokens at no cost at all (no
# scores, no selection, fused attention), so its efficiency is the most that this
# machine turns fewer tokens into less time; ours is measured against it too.
#
# The last table times the search itself: its first generations run from an empty store
# three ways: each configuration evaluated from scratch (batched again, every layer run),
# with the batches made once, and with the prefix cache as well, which reuses the layers
# whose kept tokens an earlier configuration shared.
#
# These numbers are measurements of this machine at this moment: unlike the other
# stages, a rerun gives slightly different ones.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.pipeline import load_params, task_params
from latlib.pipeline.bench import SUMMARY_COLUMNS, bench_stage

raw = load_params(params_file)
params = task_params(raw, task)
paths = pipeline.TaskPaths(task)
pd.Series(raw["bench"], name="bench").to_frame()

# %%
bench = bench_stage(params, paths, raw["bench"])
print("measured on", bench["table"]["machine"].iloc[0])
bench["table"][list(SUMMARY_COLUMNS)]

# %%
bench["figure"]

# %%
table = bench["table"]
for size, rows in table.groupby("batch_size"):
    full = rows[rows["case"] == "latlib, full length"].iloc[0]
    ours = rows[rows["kind"] == "latlib"]
    cheapest = ours.loc[ours["flops_ratio"].idxmax()]
    ceilings = rows[rows["kind"] == "ceiling"]
    ceiling = ceilings.loc[ceilings["flops_ratio"].idxmax()]
    print(
        f"batch {size}: full length runs at {full['speedup']:.2f}x the plain model; the "
        f"cheapest timed point has {cheapest['flops_ratio']:.2f}x fewer FLOPs and runs "
        f"{cheapest['speedup']:.2f}x faster (efficiency {cheapest['efficiency']:.2f}), "
        f"{cheapest['speedup_over_full']:.2f}x faster than our full length "
        f"({cheapest['efficiency_over_full']:.2f}); its ceiling, the plain model on inputs "
        f"cut to {ceiling['flops_ratio']:.2f}x fewer FLOPs, runs {ceiling['speedup']:.2f}x "
        f"faster (efficiency {ceiling['efficiency']:.2f})"
    )

# %%
search = bench["search"]
if len(search):
    cached = search.iloc[-1]
    print(
        f"search: {search['evaluations'].iloc[0]} evaluations, "
        f"{search['evaluations_per_minute'].iloc[0]:.1f}/min evaluating each from scratch, "
        f"{cached['evaluations_per_minute']:.1f}/min with batches made once and the prefix cache "
        f"({cached['speedup']:.2f}x; {100 * cached['layers_reused']:.0f} % of layers reused; "
        f"same scores: {bool(cached['same_scores'])})"
    )
search
