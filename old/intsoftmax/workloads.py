"""The attention workloads A1-A7 and the input distributions used across tests and analyses.

Shapes are (Z, H, N, D): Z = batch x windows, H heads, N tokens, D head dim.
A1-A3 are ViT/DeiT blocks (197 tokens), A4-A7 Swin windows (49 tokens).
"""
from __future__ import annotations

import numpy as np

WORKLOADS: dict[str, tuple[int, int, int, int]] = {
    "A1": (1, 3, 197, 64),
    "A2": (1, 6, 197, 64),
    "A3": (1, 12, 197, 64),
    "A4": (64, 3, 49, 32),
    "A5": (16, 6, 49, 32),
    "A6": (4, 12, 49, 32),
    "A7": (1, 24, 49, 32),
}

DISTRIBUTIONS = ("uniform", "gaussian", "outlier")


def workload_shape(name: str, batch: int = 1) -> tuple[int, int, int, int]:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    z, h, n, d = WORKLOADS[name]
    return z * batch, h, n, d


def sample(shape, distribution: str = "uniform", rng=None, amplitude: float | None = None) -> np.ndarray:
    """One float64 tensor.

    uniform: U[-a, a] (a = 4 by default, the paper's setting).
    gaussian: N(0, a**2) (a = 2 by default).
    outlier: N(0, 1) with 4 of every 64 channels scaled by 10 (a = 1), like real ViT activations.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, shape) * (4.0 if amplitude is None else amplitude)
    if distribution == "gaussian":
        return rng.normal(0.0, 2.0 if amplitude is None else amplitude, shape)
    if distribution == "outlier":
        x = rng.normal(0.0, 1.0 if amplitude is None else amplitude, shape)
        channels = np.arange(shape[-1])
        x[..., channels % 16 == 3] *= 10.0
        return x
    raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")


def qkv(name: str, distribution: str = "uniform", seed: int = 0, amplitude: float | None = None, batch: int = 1):
    """Independent Q, K, V for workload ``name`` drawn from ``distribution`` with ``seed``."""
    rng = np.random.default_rng(seed)
    shape = workload_shape(name, batch)
    return tuple(sample(shape, distribution, rng, amplitude) for _ in range(3))
