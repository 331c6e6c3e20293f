"""qflash: a Recipe compiled into one fused, integer-only Triton attention kernel.

``qflash.attention`` is a drop-in for ``torch.nn.functional.scaled_dot_product_attention``;
its integer results equal :meth:`intsoftmax.Recipe.attention`'s bit for bit.
"""
from intsoftmax import __version__  # one version for the distribution (intsoftmax and qflash ship together)

from . import ops  # noqa: F401  (registers the torch.library ops)
from .api import StaticScales, attention, attention_int, attention_int8, static_scales
from .nn import calibrate, patch  # vision transformers (never imports timm)

__all__ = ["__version__", "attention", "attention_int", "attention_int8", "static_scales", "StaticScales", "patch", "calibrate"]
