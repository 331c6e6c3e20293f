"""Integer exp strategies: each pairs an integer-only golden model with its error bound."""
from .base import ErrorBound, ExpPlan, ExpStrategy, OpCount, evaluate, prescale
from .exact import ExactExp
from .fused import FusedExp2
from .ibert import IBertExp
from .lut import LutExp2
from .poly import PolyExp2, minimax_exp2_coefficients
from .qflash import QFlashExp2
from .shift_linear import ShiftLinearExp2
from .shiftmax import ShiftmaxExp

__all__ = [
    "ErrorBound", "ExpPlan", "ExpStrategy", "OpCount", "evaluate", "prescale",
    "ExactExp", "FusedExp2", "IBertExp", "LutExp2", "PolyExp2", "QFlashExp2", "ShiftLinearExp2", "ShiftmaxExp",
    "minimax_exp2_coefficients",
]
