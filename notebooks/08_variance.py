# %% [markdown]
# # 8. Variance: how far do the results move with the training seed?
#
# The main run is one draw: dropout masks, batch order, the classifier head's
# initialisation and LengthDrop's random sub-models all follow the seed. Here the
# backbone is fine-tuned and LengthDrop-trained again with each seed of
# `variance.seeds`, and every seed's models are scored on dev at the rows of the main
# table, at the same length configurations. The search is not repeated, so the spread
# is that of training alone. `delta` is each seed's LAT score minus the same seed's
# standard model: the number the "LAT loses little" claims are about.

# %% tags=["parameters"]
task = "sst2"
params_file = "params.yaml"

# %%
from latlib.pipeline import load_params
from latlib.pipeline.variance import VarianceSettings, variance_stage

raw = load_params(params_file)
VarianceSettings.from_params(raw.get("variance"), raw["tasks"])  # fails before training

# %%
variance = variance_stage(raw, task)
variance["summary"]

# %%
variance["figure"]

# %%
variance["per_seed"].pivot(index="model", columns="seed", values="score")

# %%
summary = variance["summary"].set_index("model")
full = summary.loc["LAT, full length"]
print(
    f"{task}, {int(full['seeds'])} seeds: standard {summary.loc['standard', 'mean']:.2f} "
    f"± {summary.loc['standard', 'std']:.2f}; LAT at full length {full['mean']:.2f} "
    f"± {full['std']:.2f}, {full['delta_mean']:+.2f} ± {full['delta_std']:.2f} points "
    "against the same seed's standard model"
)
