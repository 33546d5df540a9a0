# %% [markdown]
# # 7. Ablations: does each part of LengthDrop matter?
#
# LengthDrop trains, at every step, the full model, the smallest sub-model and random
# ones (the sandwich rule), the sub-models by distillation from the full model (inplace
# distillation), with whole layers skipped at random (LayerDrop). Here each part is
# switched off (or changed) in turn. Every variant starts from the same fine-tuned
# model, trains the same number of steps and runs the same search; the table compares
# dev accuracy at full length and at the smallest configuration, and the hypervolume of
# each dev frontier against one shared reference point (larger is better).
#
# The runs are short (see `ablations.max_steps`) and use one seed: read differences of a
# few tenths of a point as noise.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import pandas as pd

from latlib.pipeline import load_params
from latlib.pipeline.ablations import ablation_stage

raw = load_params(params_file)
pd.DataFrame(
    [
        {"variant": k, "changes": v or "(as configured)"}
        for k, v in raw["ablations"]["variants"].items()
    ]
)

# %%
ablations = ablation_stage(raw)
ablations["table"]

# %%
ablations["figure"]
