"""Integer exp strategies: each pairs an integer-only golden model with its error bound."""
# registration order is the order of select's catalog (cheapest families first)
from .base import ErrorBound, ExpPlan, ExpStrategy, OpCount, evaluate, prescale
from .shift_linear import ShiftLinearExp2
from .shiftmax import ShiftmaxExp
from .ibert import IBertExp
from .poly import PolyExp2, minimax_exp2_coefficients
from .lut import LutExp2
from .qflash import QFlashExp2
from .fused import FusedExp2
from .exact import ExactExp

__all__ = [
    "ErrorBound", "ExpPlan", "ExpStrategy", "OpCount", "evaluate", "prescale",
    "ExactExp", "FusedExp2", "IBertExp", "LutExp2", "PolyExp2", "QFlashExp2", "ShiftLinearExp2", "ShiftmaxExp",
    "minimax_exp2_coefficients",
]
