"""Hypothesis strategies for integer softmax and attention tests.

Large arrays are drawn from a NumPy generator seeded by hypothesis, so rows of
thousands of logits stay fast; the *structure* (length, scale, kind of row,
shape, mask layout) is drawn by hypothesis and shrinks well.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from ..accumulation import LazyRescale, NaiveScaleAccumulation, ScaleRelease, TwoPass, min_release_shift
from ..granularity import PerBlock, PerHead, PerTensor, PerToken
from ..plan import BIAS_MAX
from ..recipe import FLOAT_OUTS, Recipe
from ..strategy import strategy_classes

#: The kinds of logit rows :func:`logit_rows` draws.
ROW_KINDS = ("random", "ties", "constant", "one_huge", "masked", "fully_masked")


@dataclasses.dataclass(frozen=True)
class LogitRows:
    """Integer logits (R, N) int64 worth ``unit`` nats each (per row, shape (R,)), and a mask."""

    kind: str
    logits: np.ndarray
    unit: np.ndarray
    mask: np.ndarray | None

    def _repr_pretty_(self, printer, cycle):  # hypothesis prints this in failure reports
        printer.text(repr(self))

    def __repr__(self) -> str:  # short, so failure reports stay readable
        return (f"LogitRows(kind={self.kind!r}, shape={self.logits.shape}, unit={self.unit.tolist()}, "
                f"range=[{self.logits.min()}, {self.logits.max()}], masked={None if self.mask is None else int((~self.mask).sum())})")


@st.composite
def logit_rows(draw, min_len: int = 1, max_len: int = 4096, rows: int = 2, kinds=ROW_KINDS) -> LogitRows:
    """Rows of integer logits of one random length, with a random unit (log-uniform in
    ``[2**-16, 2**-1]`` nats) and a spread of up to 40 nats. ``kinds`` picks from
    random, ties (few distinct values), constant, one huge logit, partly masked and fully
    masked rows (the last row masked entirely)."""
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(min_len, max_len))
    unit = 2.0 ** draw(st.floats(-16, -1))
    spread_nats = draw(st.floats(0.05, 40.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = int(min(max(spread_nats / unit, 1), BIAS_MAX // 2))
    shape = (rows, n)
    mask = None
    if kind == "constant":
        logits = np.full(shape, int(rng.integers(-span, span + 1)))
    elif kind == "ties":
        values = rng.integers(-span, span + 1, size=draw(st.integers(1, 4)))
        logits = rng.choice(values, size=shape)
    elif kind == "one_huge":
        logits = rng.integers(-span, span + 1, size=shape)
        logits[np.arange(rows), rng.integers(0, n, rows)] = BIAS_MAX // 2 + rng.integers(0, BIAS_MAX // 2, rows)
    else:
        logits = rng.integers(-span, span + 1, size=shape)
        if kind in ("masked", "fully_masked"):
            mask = rng.random(shape) < draw(st.floats(0.0, 1.0))
            if kind == "fully_masked":
                mask[-1] = False
    return LogitRows(kind, logits.astype(np.int64), np.full(rows, unit), mask)


def _field(space) -> st.SearchStrategy:
    if isinstance(space, range):
        return st.integers(space.start, space.stop - 1)
    return st.sampled_from(tuple(space))


def exp_strategies(integer_only: bool = True) -> st.SearchStrategy:
    """Every registered exp strategy, its fields drawn from its ``search_space``
    (:attr:`intsoftmax.ExpStrategy.search_space`); ``integer_only=False`` adds float references."""
    return st.one_of([st.builds(cls, **{f: _field(s) for f, s in cls.search_space.items()})
                      for cls in strategy_classes("exp") if cls.integer_only or not integer_only])


def accumulation_rules(kernel_only: bool = True, min_shift: int = 20) -> st.SearchStrategy:
    """Accumulation rules; ``kernel_only=False`` adds naive accumulation; scale release draws its
    binary point from ``min_shift`` (:func:`intsoftmax.accumulation.min_release_shift`) to 30."""
    options = [
        st.builds(ScaleRelease, release_shift=st.integers(min(min_shift, 30), 30), acc_bits=st.sampled_from([32, 64])),
        st.builds(LazyRescale, headroom_octaves=st.integers(0, 2), release_shift=st.just(30)),
        st.builds(TwoPass, acc_bits=st.sampled_from([32, 64])),
    ]
    if not kernel_only:
        options.append(st.builds(NaiveScaleAccumulation, acc_bits=st.sampled_from([32, 64])))
    return st.one_of(options)


def granularities(row_uniform: bool = True) -> st.SearchStrategy:
    """Granularity policies; ``row_uniform=True`` gives only those valid for K and V."""
    options = [st.just(PerTensor()), st.just(PerHead())]
    if not row_uniform:
        options += [st.just(PerToken()), st.builds(PerBlock, size=st.sampled_from([16, 32, 64]))]
    return st.one_of(options)


@st.composite
def recipes(draw, kernel_only: bool = True, exp=None, p_bits=None) -> Recipe:
    """Valid recipes. ``kernel_only`` restricts to what the qflash kernel compiles;
    ``exp`` / ``p_bits`` fix those fields (or pass hypothesis strategies for them)."""
    def pick(value, default):
        if value is None:
            return draw(default)
        return draw(value) if isinstance(value, st.SearchStrategy) else value

    exp = pick(exp, exp_strategies(integer_only=kernel_only))
    return Recipe(
        exp=exp,
        accumulation=draw(accumulation_rules(kernel_only=True, min_shift=max(20, min_release_shift(exp.one_upper_bound())))),
        q_granularity=draw(granularities(row_uniform=False)),
        k_granularity=draw(granularities()),
        v_granularity=draw(granularities()),
        p_bits=pick(p_bits, st.integers(7, 12)),
        block_n=draw(st.sampled_from([16, 32, 64])),
        out_frac_bits=draw(st.integers(0, 10)),
        float_out=draw(st.sampled_from(FLOAT_OUTS)),
    )


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
    """float32 q (B, H, Nq, D), k (B, H, N, D), v (B, H, N, D), an additive bias and a boolean
    mask (or None) broadcastable to (B, H, Nq, N), and the logit scale (None: 1/sqrt(D))."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_bias: np.ndarray | None
    attn_mask: np.ndarray | None
    scale: float | None
    distribution: str

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))

    def __repr__(self) -> str:
        def shape(x):
            return None if x is None else x.shape
        return (f"AttentionInputs(q={shape(self.q)}, k={shape(self.k)}, bias={shape(self.attn_bias)}, "
                f"mask={shape(self.attn_mask)}, scale={self.scale}, distribution={self.distribution!r})")


@st.composite
def attention_inputs(draw, max_n: int = 300, head_dims=(16, 32, 64, 128), max_batch: int = 2, max_heads: int = 3,
                     bias: bool = True, mask: bool = True, distributions=("uniform", "gaussian", "outlier"),
                     extra_n=(1, 49, 197)) -> AttentionInputs:
    """Attention inputs with N in ``1..max_n`` (biased toward ``extra_n``), D from
    ``head_dims``, amplitudes log-uniform in ``[2**-4, 2**6]``, optional bias (full,
    per-head or Swin-like 0 / -100 window mask) and boolean mask (random, key padding or
    rows fully masked)."""
    n = draw(st.one_of(st.sampled_from([x for x in extra_n if x <= max_n]), st.integers(1, max_n)))
    d = draw(st.sampled_from(head_dims))
    b, h = draw(st.integers(1, max_batch)), draw(st.integers(1, max_heads))
    dist = draw(st.sampled_from(distributions))
    amp = 2.0 ** draw(st.floats(-4, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def sample():
        if dist == "uniform":
            x = rng.uniform(-amp, amp, (b, h, n, d))
        elif dist == "gaussian":
            x = rng.normal(0, amp, (b, h, n, d))
        else:
            x = rng.normal(0, amp, (b, h, n, d))
            x[..., rng.integers(0, d, max(1, d // 16))] *= 10.0
        return x.astype(np.float32)

    q, k, v = sample(), sample(), sample()
    attn_bias = attn_mask = None
    if bias and draw(st.booleans()):
        layout = draw(st.sampled_from(["full", "per_head", "window"]))
        if layout == "full":
            attn_bias = rng.normal(0, 2, (b, h, n, n)).astype(np.float32)
        elif layout == "per_head":
            attn_bias = rng.normal(0, 2, (h, n, n)).astype(np.float32)
        else:
            attn_bias = np.where(rng.random((b, 1, n, n)) < 0.3, -100.0, 0.0).astype(np.float32)
    if mask and draw(st.booleans()):
        layout = draw(st.sampled_from(["random", "key_padding", "masked_rows"]))
        if layout == "random":
            attn_mask = rng.random((b, 1, n, n)) < 0.7
        elif layout == "key_padding":
            attn_mask = np.arange(n)[None, None, None, :] < rng.integers(0, n + 1, (b, 1, 1, 1))
        else:
            attn_mask = np.broadcast_to(rng.random((1, 1, n, 1)) < 0.5, (1, 1, n, n)).copy()
    scale = draw(st.one_of(st.none(), st.floats(0.01, 1.0)))
    return AttentionInputs(q, k, v, attn_bias, attn_mask, scale, dist)
