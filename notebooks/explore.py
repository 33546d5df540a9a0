# %% [markdown]
# # Explore: one model, any budget
#
# Not part of the pipeline: a notebook to play with. It works on a fresh clone, from the
# committed results alone (`results/tasks/<task>/`): every task's trade-off curves, the
# searched frontier, and which configuration a budget picks, with its dev score and
# FLOPs. Only the last part, which tokens of a sentence you type survive each layer,
# needs the model itself (`models/<task>/anytime`); where it is missing the notebook
# says which command builds it and about how long that takes. Nothing is retrained:
# choosing a budget only picks a length configuration.

# %% tags=["parameters"]
task = "sst2"
budget = 0.6  # a fraction of the full model's FLOPs (real tokens), in (0, 1]
text = "a gorgeous , witty , seductive movie that never quite lets you go ."
text_pair = None  # the hypothesis for MNLI, the context for SQuAD (text is the question)
params_file = "params.yaml"

# %%
from pathlib import Path

import pandas as pd

from latlib.pipeline import load_params, plots
from latlib.pipeline.report import evaluated_tasks
from latlib.pipeline.results import committed_results
from latlib.pipeline.stage_times import anytime_model_hint

tasks = load_params(params_file)["tasks"]
results = committed_results(tasks)
for name in evaluated_tasks(tasks)[1]:
    print(f"{name}: not evaluated yet, so not shown (dvc repro evaluate@{name})")
if task not in results:
    raise ValueError(f"task {task!r} has no committed results; choose one of {list(results)}")

# %% [markdown]
# ## The trade-off curves of every task
#
# Dev score against FLOPs (real tokens on the left, the paper's one unpadded input of
# `max_length` on the right, log scale): the standard model and LAT at constant rates,
# LAT with searched configurations (evolutionary and random search), and for SQuAD the
# searched configurations without Drop-and-Restore.

# %%
curves = pd.concat([r.curves for r in results.values()], ignore_index=True)
plots.pareto_grid(curves, {name: r.metrics for name, r in results.items()})

# %%
for name, r in results.items():
    print(f"{name}: {r.metric} on {r.metrics.get('table_dev_rows', 'all')} dev examples")
    display(r.table)  # noqa: F821 (IPython's display)

# %% [markdown]
# ## A budget, and the configuration it picks
#
# The most accurate searched configuration (by its score on the search split) whose
# FLOPs fit the budget; a budget below the cheapest point is refused with a message
# naming it.

# %%
chosen = results[task].choose(budget)
pd.Series(chosen, name=f"{task}, budget {budget}").to_frame()

# %%
frontier = results[task].frontier
plots.frontier_figure(frontier, frontier.select(fraction=budget))

# %% [markdown]
# Drag the slider to try other budgets (in JupyterLab with `ipywidgets`; elsewhere,
# change `budget` in the parameters cell and rerun).

# %%
try:
    import ipywidgets
except ImportError:
    ipywidgets = None
    print("ipywidgets is not installed: change `budget` above and rerun instead")
if ipywidgets is not None:
    cheapest = min(p.macs for p in frontier.points) / frontier.full_macs

    def show(budget: float) -> None:
        display(pd.Series(results[task].choose(budget), name=f"budget {budget:.3f}"))  # noqa: F821

    ipywidgets.interact(
        show, budget=ipywidgets.FloatSlider(value=budget, min=cheapest, max=1.0, step=0.01)
    )

# %% [markdown]
# ## Which tokens survive (needs the model)
#
# Tokens are ranked by the attention they receive (summed over heads and queries);
# `[CLS]` is always kept. Each layer keeps at most the previous layer's tokens, so the
# kept area can only shrink from top to bottom.

# %%
model_dir = Path("models") / task / "anytime"
if not (model_dir / "frontier.json").is_file():
    print(anytime_model_hint(task))
else:
    from latlib import LengthAdaptiveModel
    from latlib.anytime import surviving_tokens
    from latlib.features import load_tokenizer

    model = LengthAdaptiveModel.from_pretrained(model_dir).eval()
    model.set_budget(fraction=budget)
    tokens, kept = surviving_tokens(model, load_tokenizer(model_dir), text, text_pair)
    display(plots.token_survival_figure(tokens, kept, title=f"{task}, budget {budget}"))  # noqa: F821
