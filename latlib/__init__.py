"""latlib: the Length-Adaptive Transformer (Kim & Cho, 2021), train once, use anytime.

Data flows one way: data -> model -> train -> search -> anytime/evaluate. The
replication's pipeline that runs these parts lives in ``latlib.pipeline``; nothing here
imports it.
"""

from .anytime import Frontier, FrontierPoint
from .backbones import embedded_backbone_path
from .evaluation import evaluate_model
from .features import TaskData, load_tokenizer, prepare_task_data
from .flops import MacsBreakdown, example_macs, model_macs, paper_macs
from .lengthdrop import LengthDropConfig
from .lengths import (
    constant_rate_config,
    sample_length_config,
    smallest_config,
    to_model_lengths,
    validate_length_config,
)
from .model import LengthAdaptiveConfig, LengthAdaptiveModel
from .search import SearchProblem, evolutionary_search, random_search
from .search_problem import frontier_from_search, search_problem
from .store import SearchStore
from .train import TrainConfig, build_model, train_model

__all__ = [
    "Frontier",
    "FrontierPoint",
    "LengthAdaptiveConfig",
    "LengthAdaptiveModel",
    "LengthDropConfig",
    "MacsBreakdown",
    "SearchProblem",
    "SearchStore",
    "TaskData",
    "TrainConfig",
    "build_model",
    "constant_rate_config",
    "embedded_backbone_path",
    "evaluate_model",
    "evolutionary_search",
    "example_macs",
    "frontier_from_search",
    "load_tokenizer",
    "model_macs",
    "paper_macs",
    "prepare_task_data",
    "random_search",
    "sample_length_config",
    "search_problem",
    "smallest_config",
    "to_model_lengths",
    "train_model",
    "validate_length_config",
]
__version__ = "0.1.0"
