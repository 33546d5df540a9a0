"""latlib: the Length-Adaptive Transformer (Kim & Cho, 2021), train once, use anytime.

Data flows one way: data -> model -> train -> search -> anytime/evaluate -> report.
"""

from .backbones import embedded_backbone_path
from .flops import MacsBreakdown, example_macs, model_macs, paper_macs
from .lengths import (
    constant_rate_config,
    sample_length_config,
    smallest_config,
    to_model_lengths,
    validate_length_config,
)
from .model import LengthAdaptiveConfig, LengthAdaptiveModel

__all__ = [
    "LengthAdaptiveConfig",
    "LengthAdaptiveModel",
    "MacsBreakdown",
    "constant_rate_config",
    "embedded_backbone_path",
    "example_macs",
    "model_macs",
    "paper_macs",
    "sample_length_config",
    "smallest_config",
    "to_model_lengths",
    "validate_length_config",
]
__version__ = "0.1.0"
