"""The handful of exact array operations used to derive integer constants from scales.

Recipes turn float scales into integer constants (multipliers, shifts, clamps).
The golden model does this with NumPy on the host; ``qflash`` does it with torch
on the GPU, inside the forward call, with no host synchronisation. Both must
produce *identical* integers, so the derivation is written once against this
small namespace and restricted to operations that IEEE-754 defines exactly
(multiply, divide, ``frexp``, ``ldexp``, ``floor``, ``rint``, comparisons).
``qflash`` supplies a torch implementation of the same protocol.
"""
from __future__ import annotations

import numpy as np


class NumpyOps:
    """NumPy implementation of the constant-derivation namespace."""

    name = "numpy"

    @staticmethod
    def f64(x):
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def f32(x):
        return np.asarray(x, dtype=np.float32)

    @staticmethod
    def i64(x):
        return np.asarray(x).astype(np.int64)

    @staticmethod
    def i32(x):
        return np.asarray(x).astype(np.int32)

    frexp = staticmethod(np.frexp)
    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    rint = staticmethod(np.rint)
    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    clip = staticmethod(np.clip)

    @staticmethod
    def ldexp(x, e):
        return np.ldexp(x, np.asarray(e).astype(np.int32))


NUMPY = NumpyOps()
