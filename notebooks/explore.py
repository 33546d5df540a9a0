# %% [markdown]
# # Explore: one model, any budget
#
# Not part of the pipeline: a notebook to play with. Pick a budget (a fraction of the
# full model's FLOPs), and see which searched configuration the model runs at, what it
# scores on the dev set, where it sits on the frontier, and which tokens of a sentence
# survive each layer. Run `dvc repro` (or `dvc pull`) first so that
# `models/<task>/anytime/` exists. Nothing is retrained: `set_budget` only picks a
# length configuration.

# %% tags=["parameters"]
task = "sst2"
budget = 0.6  # a fraction of the full model's FLOPs (<= 1), or absolute MACs
text = "a gorgeous , witty , seductive movie that never quite lets you go ."
text_pair = None  # the hypothesis for MNLI, the context for SQuAD (text is the question)

# %%
import pandas as pd

from latlib import LengthAdaptiveModel
from latlib.anytime import surviving_tokens
from latlib.features import load_tokenizer
from latlib.pipeline import plots

model_dir = f"models/{task}/anytime"
model = LengthAdaptiveModel.from_pretrained(model_dir).eval()
tokenizer = load_tokenizer(model_dir)
frontier = model.frontier
chosen = model.set_budget(budget)
pd.Series(frontier.describe(chosen), name=f"budget {budget}").to_frame()

# %% [markdown]
# The chosen point is the most accurate one (on the search split) whose cost fits the
# budget; a budget below the cheapest point is refused with a message naming it.

# %%
plots.frontier_figure(frontier, chosen)

# %%
tokens, kept = surviving_tokens(model, tokenizer, text, text_pair)
plots.token_survival_figure(tokens, kept, title=f"{task}, budget {budget}: tokens kept")

# %% [markdown]
# Tokens are ranked by the attention they receive (summed over heads and queries);
# `[CLS]` is always kept. Each layer keeps at most the previous layer's tokens, so the
# blue area can only shrink from top to bottom.
