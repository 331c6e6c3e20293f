"""intsoftmax: integer softmax algorithms with exact NumPy golden models.

Strategies (exp approximations, accumulation rules, granularity policies) are
frozen, hashable data; a :class:`Recipe` composes them and is validated before
anything runs. ``Recipe.attention`` is the golden model the ``qflash`` kernel
matches bit for bit.
"""
from .accumulation import (AccumulationRule, FloatSoftmax, LazyRescale, NaiveScaleAccumulation, ScaleRelease,
                           TwoPass)
from .exp import (ExactExp, ExpStrategy, FusedExp2, IBertExp, LutExp2, PolyExp2, QFlashExp2, ShiftLinearExp2,
                  ShiftmaxExp)
from .fixedpoint import IntegerOverflowError
from .granularity import Granularity, PerBlock, PerChannel, PerHead, PerTensor, PerToken, quantize
from .metrics import float_attention, float_softmax, max_abs_error, max_rel_error, softmax_kl, sqnr_db
from .recipe import IntAttention, Recipe
from .select import select
from .strategy import available as available_strategies
from .transforms import ChannelBalance, KeyOffset, Transform, ValueOffset

__all__ = [
    "AccumulationRule", "FloatSoftmax", "LazyRescale", "NaiveScaleAccumulation", "ScaleRelease", "TwoPass",
    "ExactExp", "ExpStrategy", "FusedExp2", "IBertExp", "LutExp2", "PolyExp2", "QFlashExp2", "ShiftLinearExp2", "ShiftmaxExp",
    "IntegerOverflowError", "Granularity", "PerBlock", "PerChannel", "PerHead", "PerTensor", "PerToken", "quantize",
    "float_attention", "float_softmax", "max_abs_error", "max_rel_error", "softmax_kl", "sqnr_db",
    "IntAttention", "Recipe", "available_strategies", "select",
    "ChannelBalance", "KeyOffset", "Transform", "ValueOffset",
]
__version__ = "0.1.0"
