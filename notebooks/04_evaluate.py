# %% [markdown]
# # 4. Evaluate: the paper's Figure 2 and Table 2 for one task
#
# Four curves on the dev set, each a model at several length configurations:
#
# - **standard + constant rate**: the fine-tuned model, every layer keeping the same
#   fraction of the previous layer's tokens (no LengthDrop training);
# - **LAT + constant rate**: the LengthDrop-trained model, same configurations;
# - **LAT + evolutionary search**: the searched frontier;
# - **LAT + random search**: random configurations, as many as the evolutionary search
#   evaluated (a control for the search itself).
#
# Hypervolume (area dominated on a log-FLOPs axis, same reference point for all) turns
# each curve into one number. The table gives the standard model, LAT at full length, at
# its best point, and at the cheapest point within `evaluate.tolerance` of standard.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.pipeline import load_params, task_params

params = task_params(load_params(params_file), task)
paths = pipeline.TaskPaths(task)
evaluation = pipeline.evaluate(params, paths)
evaluation["table"]

# %%
evaluation["figure"]

# %%
metrics = evaluation["metrics"]
pd.Series(metrics["hypervolume"], name="hypervolume").sort_values(ascending=False).to_frame()

# %%
best = max(metrics["hypervolume"], key=metrics["hypervolume"].get)
if metrics["cheapest_within_tolerance"] is None:
    reach = f"no LAT point is within {metrics['tolerance']} points of the standard model"
else:
    reach = (
        f"the cheapest LAT point within {metrics['tolerance']} points of the standard model "
        f"({metrics['standard']:.2f}) scores {metrics['cheapest_within_tolerance']:.2f} with "
        f"{metrics['cheapest_flops_reduction']:.2f}x fewer FLOPs on real tokens "
        f"({metrics['cheapest_paper_flops_reduction']:.2f}x paper-style)"
    )
print(f"{task}: {reach}; the largest hypervolume is {best!r}")
