# %% [markdown]
# # 5. Report: every task together
#
# The per-task tables side by side (`results/summary.md`, `results/summary.csv`) and one
# figure with a row of Pareto plots per task (`figures/pareto.png`, `.svg`). The paper
# reports, for BERT-base, LAT at the cheapest point within a small loss of the standard
# model needing about 2-3x fewer FLOPs (paper-style) on SST-2, MNLI-m and SQuAD 1.1.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import pandas as pd

from latlib import pipeline
from latlib.pipeline import load_params

params = load_params(params_file)
report = pipeline.report(params["tasks"])
for task in report["pending"]:
    print(f"{task}: not evaluated yet, left out of this report (dvc repro evaluate@{task})")
report["table"]

# %%
report["figure"]

# %%
rows = []
for task, metrics in report["metrics"].items():
    rows.append(
        {
            "task": task,
            "standard": metrics["standard"],
            "LAT full": metrics["lat_full"],
            "cheapest within tolerance": metrics["cheapest_within_tolerance"],
            "FLOPs reduction (real tokens)": metrics["cheapest_flops_reduction"],
            "FLOPs reduction (paper-style)": metrics["cheapest_paper_flops_reduction"],
            **{f"HV {k}": v for k, v in metrics["hypervolume"].items()},
        }
    )
pd.DataFrame(rows).set_index("task").T

# %% [markdown]
# ## The paper's claims, task by task
#
# Each claim judged from the files above (`results/claims.md`): 1, LAT at full length
# against standard; 2, the three curves of Figure 2 by hypervolume; 3, SQuAD's searched
# configurations with and without Drop-and-Restore; 4, the ablations.

# %%
report["claims"]

# %% [markdown]
# ## Ablations
#
# Each part of LengthDrop switched off in turn (stage `ablations`, notebook 7), on the
# task named in `params.yaml` (`ablations.task`): short runs with one seed, so small
# differences are noise.

# %%
from pathlib import Path

from latlib.pipeline.ablations import reading

ablation_file = Path("results/ablations/table.csv")
ablation_table = pd.read_csv(ablation_file) if ablation_file.is_file() else pd.DataFrame()
for line in reading(ablation_table):
    print(line)
ablation_table

# %% [markdown]
# ## Variance over training seeds
#
# The column "over seeds" of the table above is the mean ± standard deviation of each
# row over the seeds of `variance.seeds` plus the main run (stage `variance`, notebook 8):
# each seed fine-tunes and LengthDrop-trains again and is scored at the same length
# configurations. A difference between two rows smaller than about two standard
# deviations is within what retraining alone moves.

# %%
spreads = [
    pd.read_csv(path).assign(task=path.parent.name)
    for path in sorted(Path("results/tasks").glob("*/variance.csv"))
    if path.parent.name in params["tasks"]
]
spread = pd.concat(spreads, ignore_index=True) if spreads else pd.DataFrame(columns=["model"])
for _, row in spread[spread["model"] == "LAT, full length"].iterrows():
    print(
        f"{row['task']}: LAT at full length is {row['delta_mean']:+.2f} ± {row['delta_std']:.2f} "
        f"points from the same seed's standard model ({int(row['seeds'])} seeds)"
    )
spread
