# %% [markdown]
# # 3. Evolutionary search
#
# The LAT model is searched for length configurations on the accuracy-vs-FLOPs Pareto
# frontier. Fitness is measured on rows held out of the training set (`data.search_on`
# = `held_out`; `dev` is the paper's choice), cost is the mean MACs per example on real
# tokens. Every evaluation is stored in `runs/<task>/search-*/`, so a killed search
# resumes and a search with other settings reuses what is already known. A random
# search with the same number of evaluations is the control.
#
# The frontier, re-scored on the dev set, is saved as `results/<task>/frontier.json` and
# beside the model in `models/<task>/anytime/`, which is what `set_budget` reads.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.anytime import Frontier
from latlib.pipeline import load_params, task_params

params = task_params(load_params(params_file), task)
paths = pipeline.TaskPaths(task)
pd.Series(params.search, name="search").to_frame()

# %%
summary = pipeline.search(params, paths)
frontier = Frontier.load(paths.results / "frontier.json")
pd.DataFrame([frontier.describe(p) for p in frontier.points])

# %%
print(
    f"{task}: {summary['evaluations']} configurations evaluated on {summary['search_rows']} "
    f"{summary['split']} rows; the frontier has {summary['frontier_size']} points, from "
    f"{frontier.full_macs / frontier.points[0].macs:.2f}x fewer FLOPs than the full model "
    "up to the full model's cost"
)
