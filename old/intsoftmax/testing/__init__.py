"""Tools to property-test integer softmax strategies the way this project does.

* :mod:`.strategies`: hypothesis strategies for integer logit rows, attention
  inputs (shapes, scales, distributions, masks, biases), exp strategies and recipes.
* :mod:`.checks`: exhaustive and sampled checks of a strategy or recipe against its
  stated error bound, reporting the worst case found.

Needs ``hypothesis`` (the ``test`` extra); the core package does not import this module.
"""
from .checks import BoundReport, BoundViolation, check_exp_bound, check_softmax_bound
from .strategies import (AttentionInputs, LogitRows, accumulation_rules, attention_inputs, exp_strategies,
                         granularities, logit_rows, recipes)

__all__ = [
    "BoundReport", "BoundViolation", "check_exp_bound", "check_softmax_bound",
    "AttentionInputs", "LogitRows", "accumulation_rules", "attention_inputs", "exp_strategies",
    "granularities", "logit_rows", "recipes",
]
