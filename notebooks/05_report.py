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

from latlib import stages
from latlib.params import load_params

params = load_params(params_file)
report = stages.report(params["tasks"])
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
# ## Ablations
#
# Each part of LengthDrop switched off in turn (stage `ablations`, notebook 7), on the
# task named in `params.yaml` (`ablations.task`): short runs with one seed, so small
# differences are noise.

# %%
from pathlib import Path

from latlib.ablation import reading

ablation_file = Path("results/ablations/table.csv")
ablation_table = pd.read_csv(ablation_file) if ablation_file.is_file() else pd.DataFrame()
for line in reading(ablation_table):
    print(line)
ablation_table
