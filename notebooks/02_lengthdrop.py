# %% [markdown]
# # 2. LengthDrop
#
# Training continues from the fine-tuned model so that any sequence length per layer
# works. Each step trains the full model on the labels and, by inplace distillation from
# it, the smallest sub-model and `num_sandwich` random ones (the sandwich rule), with
# LayerDrop. Tokens are dropped by attention significance (PoWER-BERT); for SQuAD the
# dropped tokens are restored before the span head (Drop-and-Restore).
#
# What to look for: accuracy at full length should stay close to the fine-tuned model,
# and the smallest configuration (every layer keeping `1 - length_drop_ratio_bound` of
# the previous one) should lose little.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.pipeline import load_params, task_params

params = task_params(load_params(params_file), task)
paths = pipeline.TaskPaths(task)
pd.Series(params.lengthdrop, name="lengthdrop").to_frame()

# %%
metrics = pipeline.lengthdrop(params, paths)
standard = pipeline.read_json(paths.results / "finetune.json")
pd.Series(metrics, name=task).to_frame()

# %%
metric = metrics["metric"]
full, smallest = metrics[f"dev_{metric}_full"], metrics[f"dev_{metric}_smallest"]
print(
    f"{task}: standard {standard[f'dev_{metric}_full']:.2f}; LAT at full length {full:.2f}, "
    f"at the smallest configuration {metrics['smallest_config']} {smallest:.2f}"
)
