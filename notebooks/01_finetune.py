# %% [markdown]
# # 1. Fine-tune
#
# Standard fine-tuning of the pretrained encoder on one task: the baseline that
# LengthDrop starts from and that every later number is compared with. The parameters
# come from the `model`, `data` and `finetune` sections of `params.yaml`; checkpoints go
# to `runs/<task>/`, so a killed run resumes where it stopped.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.pipeline import load_params, task_params

params = task_params(load_params(params_file), task)
paths = pipeline.TaskPaths(task)
pd.Series(params.finetune, name="finetune").to_frame()

# %%
metrics = pipeline.finetune(params, paths)
pd.Series(metrics, name=task).to_frame()

# %%
metric = metrics["metric"]
print(
    f"{task}: dev {metric} {metrics[f'dev_{metric}_full']:.2f} after {metrics['steps']} steps "
    f"on {metrics['train_rows']} training rows; the model is in {paths.standard_model}"
)
