"""The Recipe: one exp strategy, one accumulation rule, granularities and bit widths.

A Recipe is validated when it is built: incompatible combinations raise
``ValueError``/``TypeError`` naming the field and the fix. It states the largest
sequence length it supports without integer overflow (:meth:`Recipe.max_seq_len`)
and the golden model rejects longer inputs.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from . import golden, intfa
from .accumulation import AccumulationRule, FloatSoftmax, ScaleRelease, TwoPass, min_release_shift
from .exp import ExactExp, ExpStrategy, FusedExp2, QFlashExp2
from .exp.base import OpCount
from .bounds import softmax_error_bound
from .granularity import Granularity, PerHead, PerTensor, PerToken, quantize
from .metrics import float_attention
from .plan import BIAS_MAX, MASKED_LOGIT, AttentionPlan, derive_plan
from .fixedpoint import round_half_up
from .strategy import from_dict
from .transforms import ChannelBalance, KeyOffset, Transform, ValueOffset, apply_all

#: Largest supported head dimension: ``|Q8 . K8| <= 127**2 * 256 < 2**22``.
MAX_HEAD_DIM = 256
RECIPE_VERSION = 1
#: How a float output is formed (``Recipe.float_out``).
FLOAT_OUTS = ("pair", "rounded")

_FIELDS = {
    "exp": ("exp", ExpStrategy),
    "accumulation": ("accumulation", AccumulationRule),
    "q_granularity": ("granularity", Granularity),
    "k_granularity": ("granularity", Granularity),
    "v_granularity": ("granularity", Granularity),
}


@dataclasses.dataclass(frozen=True)
class IntAttention:
    """Integer attention result: ``float_output = values * scale (+ offset)``, or, for recipes
    whose float output is the dequantized pair (``Recipe.float_out == "pair"``), ``acc * s_v / l
    (+ offset)``.

    values: int64 array (..., Nq, Dv) of the kernel's int32 (or int8) outputs.
    scale: float64 array broadcastable to ``values`` (V's scale times ``2**-frac_bits``,
    or the int8 output scale). offset: what a :class:`~intsoftmax.transforms.ValueOffset`
    took from V, added back to the rows that attend to a key (None without one).
    pair: ``(acc, l, s_v, per_channel)`` the float output is formed from
    (:func:`intsoftmax.golden.dequantize_pair`), or None (the integer output dequantized).
    """

    values: np.ndarray
    scale: np.ndarray
    plan: AttentionPlan
    offset: np.ndarray | None = None
    pair: tuple | None = None

    def dequantize(self) -> np.ndarray:
        if self.pair is not None:
            out = golden.dequantize_pair(*self.pair)
        else:
            out = self.values.astype(np.float64) * self.scale
        return out if self.offset is None else out + self.offset


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete integer attention algorithm.

    exp: integer exp strategy. accumulation: tile-wise rule. q/k/v_granularity:
    scale sharing of the INT8 inputs. p_bits: width of the unsigned
    probabilities P (7: one int8 MMA as in QFlash; 8: one MMA on ``P - 128``
    plus a column-sum correction; 9-14: split into two int8 MMAs).
    block_n: keys per tile (tile boundaries decide when rescaling happens, so
    they are part of the numerics). out_frac_bits: fractional bits kept in the
    integer output, in units of V's scale. float_out: how a float output is formed from the row's
    last integers ``(acc, l)``: ``"pair"`` dequantizes them directly, ``acc * s_v / l`` (float32
    in the kernel: one multiply per output, the division once per row), ``"rounded"`` dequantizes
    the integer output ``round(acc * 2**out_frac_bits / l)`` (an integer-only pipeline's output, as
    QFlash hands it on; four more integer instructions per output). transforms: exact reparametrizations of
    the float inputs applied, in order, before quantization
    (:mod:`intsoftmax.transforms`; measured per call, or folded into a model's projections by
    ``qflash.calibrate``).
    """

    exp: ExpStrategy = dataclasses.field(default_factory=FusedExp2)
    accumulation: AccumulationRule = dataclasses.field(default_factory=TwoPass)
    q_granularity: Granularity = dataclasses.field(default_factory=PerTensor)
    k_granularity: Granularity = dataclasses.field(default_factory=PerTensor)
    v_granularity: Granularity = dataclasses.field(default_factory=PerTensor)
    p_bits: int = 11
    block_n: int = 64
    out_frac_bits: int = 8
    transforms: tuple = ()
    float_out: str = "pair"

    # -- construction and validation ----------------------------------------------------------
    def __post_init__(self):
        for name, (family, cls) in _FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(f"Recipe.{name} must be a {cls.__name__} ({family} strategy), got {value!r}; "
                                f"see intsoftmax.available_strategies()['{family}']")
        if isinstance(self.transforms, list):
            object.__setattr__(self, "transforms", tuple(self.transforms))
        if not isinstance(self.transforms, tuple) or not all(isinstance(t, Transform) for t in self.transforms):
            raise TypeError(f"Recipe.transforms must be a tuple of Transform strategies, got {self.transforms!r}; "
                            "see intsoftmax.available_strategies()['transform']")
        for name in ("p_bits", "block_n", "out_frac_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Recipe.{name} must be an int, got {value!r}")
        if not 1 <= self.p_bits <= 14:
            raise ValueError(f"Recipe.p_bits={self.p_bits}: must be in [1, 14] (7 = QFlash's int8 P, "
                             "8 = uint8 P, 9-14 = P split over two int8 MMAs)")
        if self.block_n not in (16, 32, 64, 128, 256):
            raise ValueError(f"Recipe.block_n={self.block_n}: must be one of 16, 32, 64, 128, 256 "
                             "(a power of two the kernel can tile with)")
        if not 0 <= self.out_frac_bits <= 16:
            raise ValueError(f"Recipe.out_frac_bits={self.out_frac_bits}: must be in [0, 16] "
                             "(127 * 2**16 is the largest output that fits int32 with headroom)")
        if self.float_out not in FLOAT_OUTS:
            raise ValueError(f"Recipe.float_out={self.float_out!r}: must be one of {FLOAT_OUTS} ('pair': acc * s_v / l; "
                             "'rounded': the integer output at out_frac_bits, dequantized)")
        for name in ("q_granularity", "k_granularity"):
            if getattr(self, name).per_channel:
                raise ValueError(f"Recipe.{name}=per_channel(): a per-channel scale on {name[0].upper()} would weight each "
                                 "term of q . k differently, so the logits are no longer one integer dot product. Only "
                                 "V may be per channel; balance Q and K channels exactly with transforms=(ChannelBalance(),)")
        for name in ("k_granularity", "v_granularity"):
            g = getattr(self, name)
            if not g.row_uniform and not (name == "k_granularity" and self.accumulation.float_softmax):
                why = ("logits of different keys would have different scales, so an integer row max "
                       "and exp over them are meaningless" if name == "k_granularity" else
                       "V's scale would sit inside sum_j P_j V_j, so the integer accumulator could not be "
                       "dequantized with one scale")
                raise ValueError(f"Recipe.{name}={g.name} breaks integer comparability: {why}. "
                                 f"Use PerTensor() or PerHead() for {name[0].upper()}.")
        if self.accumulation.float_softmax:
            if not isinstance(self.exp, ExactExp):
                raise ValueError(f"accumulation=float_softmax() evaluates exp in float32; pass exp=ExactExp() (the float "
                                 f"reference), not {self.exp.name}, or use an integer rule such as TwoPass()")
            if self.p_bits > 7:
                raise ValueError(f"Recipe.p_bits={self.p_bits} with float_softmax(): P = round(P_max p) enters the "
                                 "P.V MMA as int8, so p_bits must be at most 7 (INT-FlashAttention's 127)")
            if self.transforms:
                raise ValueError("float_softmax() takes no input transforms; use an integer recipe for them")
        rescales = any(f.name == "release_shift" for f in dataclasses.fields(self.accumulation))
        need = min_release_shift(self.exp.one_upper_bound())
        if rescales and self.accumulation.release_shift < need:
            raise ValueError(f"release_shift={self.accumulation.release_shift} is too small for {self.exp.name}: its "
                             f"integer for 1.0 reaches {self.exp.one_upper_bound()}, so rel_M = floor(2**S / one) could "
                             f"keep fewer than 4 bits (at rel_M = 0 a rescale zeroes l and acc); use release_shift >= "
                             f"{need}")
        if self.max_seq_len() < 1:
            raise ValueError(f"Recipe supports no sequence length: {self.accumulation.name} with "
                             f"p_bits={self.p_bits}, block_n={self.block_n}; use ScaleRelease()")
        # the JSON form, computed once: it is the recipe's identity for caches and torch ops
        object.__setattr__(self, "_json", json.dumps(self.to_dict(), sort_keys=True))

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def qflash(cls) -> "Recipe":
        """The QFlash paper's recipe: its exp2 range reduction, scale release with a
        2**30 binary point, per-tensor INT8, 7-bit P, 32-key tiles, int8-grid output, also
        under float outputs (rounded in integers, where the official code truncates an fp32
        division)."""
        return cls(exp=QFlashExp2(), accumulation=ScaleRelease(30), p_bits=7, block_n=32, out_frac_bits=0,
                   float_out="rounded")

    @classmethod
    def default(cls) -> "Recipe":
        """This project's most accurate integer-only recipe (issue 11): :meth:`per_tensor`'s
        integer softmax after the three exact input transforms (key offset, Q/K channel balance,
        value offset; docs/algorithms.md §11), with Q per token and K and V per head. Pooled over
        seeds 0-3 on A2's shape, against the per-tensor INT8 ceiling: U[-4, 4] +0.18 dB, N(0, 2^2)
        33.2 dB (+2.95), channel outliers +4.2 dB, per-channel key/value offsets +7.3 dB
        (docs/results.md). The golden model and ``qflash.attention`` measure the transforms'
        statistics per call; ``qflash.calibrate`` folds them into a model's projections (K and V
        ranges static per head, Q's measured per call), where the kernel costs 1.02-1.03 x
        :meth:`per_tensor`'s on the H200 (docs/performance.md). Integer outputs carry no value
        offset: the integer interfaces take ``default().replace(transforms=())`` or another recipe
        without transforms. 8196 keys at most."""
        return cls(transforms=(KeyOffset(), ChannelBalance(), ValueOffset()), q_granularity=PerToken(),
                   k_granularity=PerHead(), v_granularity=PerHead())

    @classmethod
    def per_tensor(cls) -> "Recipe":
        """The default until issue 11, kept under this name: per-tensor INT8 Q, K and V, no input
        transforms, within 0.1 dB of what per-tensor INT8 inputs allow on A1-A7 (0.04 dB on
        average, docs/results.md): the exact row max first (two-pass), then ``P`` straight from the
        logits by a degree-3 exp2 fused with the requantization, 11-bit P (two int8 MMAs), 8 output
        fractional bits. 8196 keys at most. (Scale release instead of two-pass gains 0.01-0.02 dB
        at a higher kernel cost: its rescales.) Kernel budget: 17.8 integer instructions per score
        element in the main loop on the H200 (docs/performance.md). The integer interfaces'
        default (``qflash.attention_int``, ``attention_int8``, ``static_scales``)."""
        return cls()

    @classmethod
    def fast(cls) -> "Recipe":
        """The fastest recipe above 34 dB on A2 U[-4, 4] (34.2-34.6 dB over seeds 0-3):
        :meth:`per_tensor` with a degree-2 exp2 and 7-bit ``P`` (one int8 MMA). 132104 keys at most. Kernel
        budget: 12.3 integer instructions per score element in the main loop."""
        return cls(exp=FusedExp2(degree=2), p_bits=7)

    @classmethod
    def long_context(cls) -> "Recipe":
        """11-bit ``P`` with a wide accumulator (``TwoPass(acc_bits=64)``) and a degree-2 exp:
        ``acc`` is int64, so only ``l = sum P <= N P_max`` bounds the keys, 1049088 of them; rows
        whose ``l`` reaches 2**24 are narrowed to 24 bits before the normalization
        (:func:`intsoftmax.golden.narrow`). 36.0-36.2 dB on U[-4, 4] at N = 2048, D = 128 (seeds
        2048, 0, 1; :meth:`per_tensor`'s degree-3 exp adds at most 0.04 dB there, and costs the kernel
        two instructions per score element; docs/performance.md). Kernel: the wide sum as
        ``128 hi + lo`` in two int32 registers per element (docs/algorithms.md §4)."""
        return cls(exp=FusedExp2(degree=2), accumulation=TwoPass(acc_bits=64))

    @classmethod
    def accurate(cls) -> "Recipe":
        """:meth:`default` (this recipe's name while it was issue 11's candidate for the default)."""
        return cls.default()

    @classmethod
    def int_flashattention(cls) -> "Recipe":
        """INT-FlashAttention's design (arXiv 2409.16997) as a baseline, not integer-only: int8 Q
        and K with per-token scales, V per tensor, a float32 online softmax between the two int8
        GEMMs, ``P`` rounded to 7 bits (:mod:`intsoftmax.intfa`). Its output is float:
        :meth:`attention` runs it, :meth:`attention_int` has no integers to give."""
        return cls(exp=ExactExp(), accumulation=FloatSoftmax(), q_granularity=PerToken(), k_granularity=PerToken(),
                   p_bits=7)

    # -- identity ----------------------------------------------------------------------------
    @property
    def p_max(self) -> int:
        return 2**self.p_bits - 1

    @property
    def name(self) -> str:
        return (f"exp={self.exp.name}|acc={self.accumulation.name}|q={self.q_granularity.name}|"
                f"k={self.k_granularity.name}|v={self.v_granularity.name}|p_bits={self.p_bits}|"
                f"block_n={self.block_n}|out_frac_bits={self.out_frac_bits}"
                + (f"|transforms={','.join(t.name for t in self.transforms)}" if self.transforms else "")
                + (f"|float_out={self.float_out}" if self.float_out != "pair" else ""))

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        d = {"version": RECIPE_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _FIELDS:
                v = v.to_dict()
            elif f.name == "transforms":
                v = [t.to_dict() for t in v]
            d[f.name] = v
        if not self.transforms:  # the form of recipes without transforms stays what it was
            del d["transforms"]
        if self.float_out == "pair":  # (and the default float output's: older forms read as it)
            del d["float_out"]
        return d

    def to_json(self) -> str:
        return self._json

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        if not isinstance(data, dict):
            raise TypeError(f"Recipe.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise ValueError(f"Recipe version {version} is not supported (this library reads {RECIPE_VERSION})")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown Recipe fields {sorted(unknown)}")
        for name, (family, _) in _FIELDS.items():
            if name in data:
                data[name] = from_dict(family, data[name])
        if "transforms" in data:
            if not isinstance(data["transforms"], list):
                raise ValueError(f"Recipe transforms must be a list, got {data['transforms']!r}")
            data["transforms"] = tuple(from_dict("transform", t) for t in data["transforms"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(json.loads(text))

    # -- limits --------------------------------------------------------------------------------
    def max_seq_len(self) -> int:
        """Largest key count with no integer overflow, for any int8 inputs and any scales.

        Rescaling never increases a magnitude (see :mod:`intsoftmax.accumulation`), so
        ``|acc| <= 128 * N * P_max`` must fit int32 (int64 with ``TwoPass(acc_bits=64)``, where
        ``l <= N * P_max`` must fit int32); naive accumulation has its own, much smaller,
        worst-case limit.
        """
        return self.accumulation.max_keys(self.block_n, self.p_max, self.exp.one_upper_bound())

    def check_seq_len(self, n: int) -> None:
        """Raise ``ValueError`` if ``n`` keys exceed :meth:`max_seq_len`."""
        if n > self.max_seq_len():
            raise ValueError(f"sequence length {n} exceeds this recipe's limit of {self.max_seq_len()} keys "
                             f"(int{self.accumulation.acc_bits} accumulator, p_bits={self.p_bits}, "
                             f"{self.accumulation.name}); use fewer keys, a smaller p_bits, or "
                             "Recipe.long_context() (int64 accumulator, 1049088 keys)")

    @property
    def in_kernel(self) -> bool:
        """Whether the qflash kernel compiles this recipe (integer exp and a rule that rescales, or
        the float softmax baseline)."""
        return (self.exp.integer_only or self.accumulation.float_softmax) and self.accumulation.in_kernel

    def op_count(self) -> OpCount:
        """Integer ops per score element, as the kernel issues them: the shared pipeline, the exp
        strategy, packing P for the MMA, and the extra row-max pass of two-pass rules.

        Shared: the tile's row max and ``t = m - L`` (2 adds); the prescale ``min, <<, umulhi,
        >>, min`` (prescaled strategies: 1 mul, 2 shifts, 2 adds; raw ones: 1 min); the
        requantization ``(e * req_M + h) >> s``, ``min`` (1 mul, 1 shift, 2 adds); the row sum
        ``l`` (1 add). A strategy that fuses the requantization has neither prescale nor
        requantization (its own count has them). Packing P: one conversion for 7 bits, an offset and
        a conversion for 8, a split (shift, and) and two conversions for 9-14 (conversions counted
        as adds). Two-pass: one more row max. The MMAs are counted apart (:meth:`mma_count`).
        """
        if self.exp.fuses_requant:
            shared = OpCount(add=3)
        else:
            prescaled = self.exp.input_unit_octaves() is not None
            prescale = OpCount(mul=1, shift=2, add=2) if prescaled else OpCount(add=1)
            shared = OpCount(add=2) + prescale + OpCount(mul=1, shift=1, add=1) + OpCount(add=1)
        pack = OpCount(add=1) if self.p_bits <= 7 else OpCount(add=2) if self.p_bits == 8 else \
            OpCount(shift=1, add=3)
        passes = OpCount(add=1) if self.accumulation.two_pass else OpCount()
        return shared + self.exp.op_count() + pack + passes

    def mma_count(self) -> int:
        """int8 MMA passes over each score tile: Q.K^T, P.V (two for P wider than 8 bits) and the
        second Q.K^T of two-pass rules."""
        return 2 + (self.p_bits > 8) + self.accumulation.two_pass

    # -- golden model entry points -----------------------------------------------------------------
    def plan(self, s_q, s_k, scale: float, s_v=None, out_scale=None) -> AttentionPlan:
        """Integer constants for given float32 scales (see :mod:`intsoftmax.plan`)."""
        return derive_plan(self, s_q, s_k, scale, s_v, out_scale)

    def quantize_inputs(self, q, k, v, amax=None):
        """INT8 Q, K, V and their float32 scales by this recipe's granularities.

        ``amax``: optional ``(amax_q, amax_k, amax_v)`` static ranges (calibration).
        """
        amax = amax or (None, None, None)
        return tuple(quantize(x, g, a) for x, g, a in
                     zip((q, k, v), (self.q_granularity, self.k_granularity, self.v_granularity), amax))

    def quantized_reference(self, q, k, v, attn_bias=None, attn_mask=None, scale=None, amax=None,
                            is_causal: bool = False, enable_gqa: bool = False) -> np.ndarray:
        """float64 attention on the dequantized INT8 inputs: what INT8 Q/K/V quantization alone
        allows (the SQNR ceiling of every integer softmax with this recipe's granularities)."""
        k, v = grouped_kv(q, k, v, enable_gqa)
        deq = [x8 * s.astype(np.float64) for x8, s in self.quantize_inputs(q, k, v, amax)]
        attn_mask = causal_mask(q.shape[-2], k.shape[-2], attn_bias, attn_mask) if is_causal else attn_mask
        return float_attention(*deq, attn_bias=attn_bias, attn_mask=attn_mask, scale=scale)

    def attention_int(self, q, k, v, attn_bias=None, attn_mask=None, scale=None, *, is_causal: bool = False,
                      enable_gqa: bool = False, amax=None, out_scale=None, check_limits: bool = True) -> IntAttention:
        """Golden integer attention on float arrays shaped (..., N, D); see :meth:`attention`.

        ``is_causal``: query ``i`` attends to keys ``j <= i`` (SDPA's top-left-aligned lower
        triangle; not combined with a mask or bias, as in SDPA). ``enable_gqa``: k and v may
        have ``H_kv`` heads (axis -3) dividing q's ``H``; query head ``h`` uses K/V head
        ``h // (H / H_kv)`` (SDPA's grouping: K and V repeated, then quantized as usual).
        ``amax``: static ``(amax_q, amax_k, amax_v)`` instead of measuring them.
        ``out_scale``: int8 output at this (static) scale instead of the ``out_frac_bits``
        fixed-point output. ``check_limits=False`` lets naive accumulation run until it
        overflows (it raises :class:`~intsoftmax.IntegerOverflowError` there).
        """
        if self.accumulation.float_softmax:
            raise ValueError("float_softmax() recipes (Recipe.int_flashattention) have a float softmax and a float "
                             "output, no integer one; call attention()")
        q, k, v, attn_mask, scale, batch = self._checked(q, k, v, attn_bias, attn_mask, scale, is_causal, enable_gqa,
                                                         check_limits)
        nq, nk = q.shape[-2], k.shape[-2]
        if out_scale is not None and (isinstance(out_scale, bool) or not isinstance(out_scale, (int, float))
                                      or not 0 < out_scale < math.inf):
            raise ValueError(f"out_scale={out_scale!r}: must be a finite positive number")
        if out_scale is not None and self.v_granularity.per_channel:
            raise ValueError("out_scale (int8 output) needs one V scale per row; with v_granularity=per_channel() "
                             "each output channel has its own: take float output (out_scale=None)")
        offset = None
        if self.transforms:
            if out_scale is not None or amax is not None:
                raise ValueError("recipes with transforms measure their statistics per call and give float output; "
                                 "pass neither amax nor out_scale")
            for x, name in ((q, "q"), (k, "k"), (v, "v")):
                if not np.isfinite(x).all():
                    raise ValueError(f"{name} contains NaN or inf; attention inputs must be finite")
            q, k, v, offset = apply_all(self.transforms, q, k, v)
        (q8, s_q), (k8, s_k), (v8, s_v) = self.quantize_inputs(q, k, v, amax)
        plan = self.plan(s_q, s_k, scale, s_v, out_scale)
        bias_int = None if attn_bias is None else quantize_bias(attn_bias, plan, nq, nk)
        mask = None if attn_mask is None else _check_mask(attn_mask)
        acc, l = golden.attention_sums(self, q8, k8, v8, plan, bias_int, mask, check_limits)
        values = golden.output_integers(self, acc, l, plan, out_scale is not None)
        pair = (acc, l, s_v, self.v_granularity.per_channel) if self.float_out == "pair" and out_scale is None else None
        if out_scale is not None:
            out = np.full(values.shape, float(out_scale))
        else:
            out = np.broadcast_to(s_v.astype(np.float64) * 2.0**-self.out_frac_bits, values.shape)
        if offset is not None:  # added back where the row attends to a key (a fully masked row stays 0)
            live = np.ones(batch + (nq, nk), dtype=bool)
            if mask is not None:
                live = live & mask
            if bias_int is not None:
                live = live & (bias_int != MASKED_LOGIT)
            offset = np.where(live.any(axis=-1, keepdims=True), np.broadcast_to(offset, values.shape), 0.0)
        return IntAttention(values, out, plan, offset, pair)

    def attention(self, q, k, v, attn_bias=None, attn_mask=None, scale=None, **kwargs) -> np.ndarray:
        """Golden integer attention, dequantized to float64 (SDPA semantics).

        q: (..., Nq, D), k: (..., Nk, D), v: (..., Nk, Dv) float arrays.
        attn_bias: additive float bias (nats) broadcastable to (..., Nq, Nk);
        ``-inf`` entries mask their key. attn_mask: boolean, True = attend. ``is_causal=True``
        (keyword): query ``i`` attends to keys ``j <= i``, instead of a mask or bias.
        scale: logit scale (default ``1/sqrt(D)``). A row with every key masked gives 0.
        Keyword arguments go to :meth:`attention_int` (float-softmax recipes: ``is_causal``,
        ``enable_gqa`` and ``amax``, see :meth:`_float_softmax_attention`).
        """
        if self.accumulation.float_softmax:
            return self._float_softmax_attention(q, k, v, attn_bias, attn_mask, scale, **kwargs)
        return self.attention_int(q, k, v, attn_bias, attn_mask, scale, **kwargs).dequantize()

    def _float_softmax_attention(self, q, k, v, attn_bias=None, attn_mask=None, scale=None, *,
                                 is_causal: bool = False, enable_gqa: bool = False, amax=None) -> np.ndarray:
        """:meth:`attention` of a float-softmax recipe (:mod:`intsoftmax.intfa`): the same
        inputs, checks and SDPA semantics; float64 output."""
        q, k, v, attn_mask, scale, _ = self._checked(q, k, v, attn_bias, attn_mask, scale, is_causal, enable_gqa)
        (q8, s_q), (k8, s_k), (v8, s_v) = self.quantize_inputs(q, k, v, amax)
        bias = None if attn_bias is None else bias_float32(attn_bias)
        mask = None if attn_mask is None else _check_mask(attn_mask)
        return intfa.attention(self, q8, s_q, k8, s_k, v8, s_v, scale, bias, mask)

    def _checked(self, q, k, v, attn_bias, attn_mask, scale, is_causal: bool, enable_gqa: bool,
                 check_limits: bool = True):
        """What every attention entry point checks first: float arrays, GQA's repeated K and V,
        shapes, the causal mask, the key limit, the scale, and that a mask and a bias broadcast to
        the logits. Returns ``(q, k, v, attn_mask, scale, batch)``."""
        q, k, v = (_float_array(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        k, v = grouped_kv(q, k, v, enable_gqa)
        nq, nk, d = _check_shapes(q, k, v)
        if is_causal:
            attn_mask = causal_mask(nq, nk, attn_bias, attn_mask)
        if check_limits:
            self.check_seq_len(nk)
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        for name, m in (("attn_bias", attn_bias), ("attn_mask", attn_mask)):
            _check_broadcast(name, m, batch + (nq, nk))
        return q, k, v, attn_mask, _check_scale(scale, d), batch

    def _softmax_inputs(self, logits, unit, attn_mask, frac_bits, check_limits):
        if self.accumulation.float_softmax:
            raise ValueError("softmax() is the integer softmax of integer logits; the float softmax baseline "
                             "(Recipe.int_flashattention) has none: use intsoftmax.float_softmax on float logits")
        L = np.asarray(logits)
        if not np.issubdtype(L.dtype, np.integer):
            raise TypeError(f"softmax expects integer logits, got dtype {L.dtype}; quantize them first")
        if L.ndim == 0:
            raise ValueError("softmax expects logits of shape (..., N), got a scalar")
        if L.size and (L.min() < -BIAS_MAX or L.max() > BIAS_MAX):
            raise ValueError(f"softmax logits must lie in [-2**28, 2**28], got [{L.min()}, {L.max()}]")
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 30:
            raise ValueError(f"frac_bits={frac_bits!r}: must be an int in [0, 30]")
        if check_limits:
            self.check_seq_len(L.shape[-1])
        unit = np.asarray(unit, dtype=np.float64)
        if unit.size == 0 or not (unit > 0).all() or not np.isfinite(unit).all():
            raise ValueError(f"unit={unit!r}: must be finite and positive (nats per integer logit unit)")
        L = L.astype(np.int64)
        if attn_mask is not None:
            mask = np.asarray(attn_mask)
            if mask.dtype != np.bool_:
                raise TypeError(f"attn_mask must be boolean (True = keep), got dtype {mask.dtype}")
            L = np.where(np.broadcast_to(mask, L.shape), L, MASKED_LOGIT)
        row_unit = np.broadcast_to(unit[..., None] if unit.ndim else unit, L.shape[:-1] + (1,))
        return L, derive_plan(self, row_unit, np.float32(1.0), 1.0)

    def softmax(self, logits, unit, attn_mask=None, frac_bits: int = 15, check_limits: bool = True) -> np.ndarray:
        """Integer softmax of integer logits: ``round(p * 2**frac_bits)`` (int64 array).

        logits: integer array (..., N) in ``[-2**28, 2**28]``, each unit worth ``unit`` nats
        (scalar, or one per row: shape (...)). The recipe's tiles, exp, P width and
        accumulation rule apply exactly as in attention (this is attention with
        ``V = I``). attn_mask: boolean, True = keep. A row with every entry masked gives zeros.
        """
        L, plan = self._softmax_inputs(logits, unit, attn_mask, frac_bits, check_limits)
        return golden.softmax_core(self, L, plan, frac_bits, check_limits)

    def softmax_error_bound(self, logits, unit, attn_mask=None, frac_bits: int = 15) -> np.ndarray:
        """Per-element bound on ``|softmax(...) / 2**frac_bits - p|``, ``p`` the exact softmax
        of ``logits * unit`` (derivation: :mod:`intsoftmax.bounds`, ``docs/algorithms.md``)."""
        L, plan = self._softmax_inputs(logits, unit, attn_mask, frac_bits, True)
        return softmax_error_bound(self, L, plan, frac_bits)


def _float_array(x, name):
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a float array, got dtype {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape (..., N, D), got {a.shape}")
    return a


def _check_shapes(q, k, v):
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v sequence lengths differ: {k.shape[-2]} vs {v.shape[-2]}")
    try:
        np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"batch dims of q {q.shape}, k {k.shape}, v {v.shape} do not broadcast") from None
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.size == 0:
            raise ValueError(f"{name} is empty (shape {x.shape}); attention needs at least one query, key and head")
    d = q.shape[-1]
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {d} is outside [1, {MAX_HEAD_DIM}]")
    return q.shape[-2], k.shape[-2], d


def _check_broadcast(name: str, m, full: tuple) -> None:
    """A mask or bias must broadcast to every dim of the logits (batch dims included)."""
    if m is None:
        return
    shape = np.shape(m)
    try:
        ok = len(shape) <= len(full) and np.broadcast_shapes(shape, full) == full
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} shape {shape} does not broadcast to the logits' shape {full}")


def _check_scale(scale, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"scale={scale!r}: must be a finite positive number (default 1/sqrt(D))")
    return float(scale)


def grouped_kv(q, k, v, enable_gqa: bool):
    """SDPA's ``enable_gqa``: K and V with ``H_kv`` heads (axis -3) dividing q's ``H`` repeated so
    that query head ``h`` meets K/V head ``h // (H / H_kv)``; unchanged otherwise."""
    if not isinstance(enable_gqa, bool):
        raise TypeError(f"enable_gqa must be a bool, got {type(enable_gqa).__name__}")
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if not enable_gqa or q.ndim < 3 or k.ndim < 3 or k.shape[-3] == q.shape[-3]:
        return k, v
    H, H_kv = q.shape[-3], k.shape[-3]
    if H_kv == 0 or H % H_kv or v.ndim < 3 or v.shape[-3] != H_kv:
        raise ValueError(f"enable_gqa: q has {H} heads, k {H_kv} and v {v.shape[-3] if v.ndim >= 3 else None}; "
                         "K and V need the same number of heads, dividing q's")
    return np.repeat(k, H // H_kv, axis=-3), np.repeat(v, H // H_kv, axis=-3)


def causal_mask(nq: int, nk: int, attn_bias=None, attn_mask=None) -> np.ndarray:
    """SDPA's ``is_causal`` mask, (Nq, Nk) boolean: query ``i`` attends to keys ``j <= i`` (aligned at
    the top left, as ``torch.ones(Nq, Nk).tril()``); SDPA takes no mask or bias beside it."""
    if attn_bias is not None or attn_mask is not None:
        raise ValueError("is_causal=True takes no attn_mask or attn_bias (as in SDPA); "
                         "pass the causal mask combined with yours as attn_mask instead")
    return np.tril(np.ones((nq, nk), dtype=bool))


def _check_mask(mask):
    """A boolean mask (its shape is checked by :func:`_check_broadcast`)."""
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise TypeError(f"attn_mask must be boolean (True = attend), got dtype {m.dtype}; "
                        "pass additive float masks as attn_bias")
    return m


def bias_float32(bias) -> np.ndarray:
    """An additive float bias (nats) as the kernel reads it, float32 (beyond its range: +-inf);
    NaN and ``+inf`` are rejected (SDPA would give a NaN row; the device path makes that row NaN)."""
    b = np.asarray(bias)
    if not np.issubdtype(b.dtype, np.floating):
        raise TypeError(f"attn_bias must be a float array (nats), got dtype {b.dtype}; use attn_mask for booleans")
    with np.errstate(over="ignore"):
        b32 = b.astype(np.float32)
    if np.isnan(b32).any() or np.isposinf(b32).any():
        raise ValueError("attn_bias contains NaN or +inf (or a value beyond float32's range); only -inf "
                         "(masked) is allowed beside finite biases")
    return b32


def quantize_bias(bias, plan: AttentionPlan, nq: int, nk: int):
    """Additive float bias (nats) -> int32 QK units: ``min(floor(f32(b) * bias_inv + 1/2), 2**28)``.

    ``-inf``, and any bias below ``-2**28`` units (beyond the representable range, e.g. Swin's
    -100 mask when a QK unit is worth little), masks the key (MASKED_LOGIT): a large negative
    bias saturates to "masked", never to a smaller bias. NaN and ``+inf`` are rejected (SDPA would
    give a NaN row; the device path makes that row NaN).
    """
    b = np.asarray(bias)
    if b.ndim < 2 or b.shape[-2] not in (1, nq) or b.shape[-1] not in (1, nk):
        raise ValueError(f"attn_bias shape {b.shape} does not broadcast to (..., {nq}, {nk})")
    b32 = bias_float32(b)
    with np.errstate(over="ignore", invalid="ignore"):
        y = b32 * np.asarray(plan.bias_inv, dtype=np.float32)
    r = round_half_up(np.nan_to_num(y, nan=0.0, posinf=2.0 * BIAS_MAX, neginf=-2.0 * BIAS_MAX))
    q = np.clip(r, -BIAS_MAX, BIAS_MAX).astype(np.int64)
    return np.where(np.isneginf(b32) | (r < -BIAS_MAX), MASKED_LOGIT, q)
