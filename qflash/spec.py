"""KernelSpec: everything that specialises the kernel template, as value-hashable data.

A spec is derived from a :class:`~intsoftmax.Recipe` plus the call's head dim, mask kind and
output kind. Its fields become the kernel's constexprs, so one spec is one compiled kernel:
the sequence lengths, batch and heads stay runtime values (no recompile per N). Its ``name``
is built from every field, like a recipe's.
"""
from __future__ import annotations

import dataclasses
import enum

from intsoftmax import Recipe
from intsoftmax.plan import headroom_limits

HEAD_DIMS = (16, 32, 64, 128)
#: Smallest K dimension of an int8 ``tl.dot`` on sm_80/sm_90 (smaller tiles are zero-padded).
MIN_DOT_K = 32
#: Head dim from which 9-14-bit ``P``'s high part keeps its own int32 sums (``HI_SUM``): at D = 128 a
#: program holds 200-250 registers per thread either way (two programs per SM), and the sums save an
#: IMAD per output per tile; at D = 64 they cost four programs per SM (docs/performance.md).
HI_SUM_HEAD_DIM = 128
#: Two-pass rules' row sums ``l`` on the ALU for 7-bit and 9-14-bit ``P`` (``dp4a`` on the MMA
#: operands' words where they are packed, :func:`qflash.ptx.split_half` and
#: :func:`~qflash.ptx.pack_half_round`) instead of by MMAs against ones, each of which Triton follows
#: with a wait of the warpgroup. H200, kernel only (docs/performance.md), 9-14 bits: L1
#: ``long_context`` -4 %, A2 / A4 / A7 ``per_tensor`` -6 / -7 / -8 %; 7 bits: A2 / A4 / A7 ``fast``
#: -9 / -4 / -6 %. 8-bit ``P`` keeps its offset form's MMA. False: the MMAs everywhere (measurements).
ALU_ROW_SUMS = True
#: Keys per full tile of the row-max pass (pass 1 of two-pass rules) in kernels with the ``hi_sum``
#: sums reading K as int8, by head dim: one MMA wait and row reduction per tile. Measured on the
#: H200 (docs/performance.md): at D = 128, where pass 2 holds two programs per SM whatever pass 1
#: does, 128 keys took 5.8 % off L1 and 256 keys 1-2 % more; at D = 64 256 keys raise the wide
#: sum's kernel to 190 registers. K read as floats (quantized on load) keeps 128-key tiles: 256 of
#: them pipelined in three stages pass the shared memory. Other kernels keep pass 2's tiles: 7-bit
#: P's wider logits cost occupancy.
ROW_MAX_KEYS = {16: 128, 32: 128, 64: 128, 128: 256}


class MaskKind(enum.IntEnum):
    NONE = 0
    BOOL = 1   # True = attend
    FLOAT = 2  # additive bias in nats, quantized on load: floor(b * bias_inv + 1/2)
    INT = 3    # additive bias already in QK units (int32), MASKED_LOGIT = masked
    CAUSAL = 4  # is_causal: query i attends to keys j <= i (no mask tensor; key tiles past the diagonal skipped)


class OutKind(enum.IntEnum):
    INT32 = 0  # the fixed-point integers (out_frac_bits fractional bits of V's scale)
    INT8 = 1   # requantized to a given output scale
    FLOAT = 2  # dequantized: acc * s_v / l (Recipe.float_out "pair"), or the INT32 integers * s_v * 2**-out_frac_bits


def check_compiles(recipe: Recipe) -> None:
    """``TypeError`` / ``ValueError`` naming the fix unless the kernel compiles ``recipe``."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an intsoftmax.Recipe, got {type(recipe).__name__}")
    if not recipe.in_kernel:
        raise ValueError(f"the qflash kernel does not compile {recipe.exp.name} with {recipe.accumulation.name}: "
                         "use an integer exp strategy and ScaleRelease, LazyRescale or TwoPass, or "
                         "Recipe.int_flashattention() (the golden model Recipe.attention runs every recipe)")


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    exp_kind: str  # the strategy's kind: its Triton twin in qflash.exp.TWINS
    exp_args: tuple
    prescaled: bool
    p_args: tuple  # fused_args of a strategy that fuses the requantization, at P_max; () otherwise
    req_shift: int
    row_args: tuple  # the strategy's row derivation's arguments (qflash.rows), for rows derived in the kernel
    headroom: tuple  # the lazy rule's (octaves, cap in QK units): intsoftmax.plan.headroom_limits
    p_bits: int
    two_pass: bool
    acc_bits: int  # 64: the wide sum 128 acc_hi + acc of TwoPass / ScaleRelease(acc_bits=64) (qflash.kernel)
    float_softmax: bool  # INT-FlashAttention's float softmax baseline (FloatSoftmax)
    release_shift: int
    block_n: int
    head_dim: int
    mask_kind: MaskKind
    out_kind: OutKind
    out_frac: int
    pair_out: bool  # a float output straight from the pair (acc, l): Recipe.float_out == "pair"

    @classmethod
    def build(cls, recipe: Recipe, head_dim: int, mask_kind: MaskKind, out_kind: OutKind) -> "KernelSpec":
        check_compiles(recipe)
        if head_dim not in HEAD_DIMS:
            raise ValueError(f"head dim {head_dim} is not supported; the kernel handles {HEAD_DIMS}")
        from .exp import exp_spec, fused_args  # Triton-side; the enums above import without triton
        kind, args = exp_spec(recipe.exp)
        p_args = fused_args(recipe.exp, recipe.p_max) if recipe.exp.fuses_requant else ()
        from .exp import TWINS
        return cls(kind, args, recipe.exp.input_unit_octaves() is not None, p_args, recipe.exp.requant_shift(),
                   TWINS[kind].row_args(recipe.exp, recipe.p_max), headroom_limits(recipe),
                   recipe.p_bits,
                   recipe.accumulation.two_pass, recipe.accumulation.acc_bits, recipe.accumulation.float_softmax,
                   recipe.accumulation.release_shift,
                   recipe.block_n, head_dim,
                   MaskKind(mask_kind), OutKind(out_kind), 16 if out_kind == OutKind.INT8 else recipe.out_frac_bits,
                   out_kind == OutKind.FLOAT and recipe.float_out == "pair")

    @property
    def twin(self):
        """The exp strategy's registered Triton twin (:class:`qflash.exp.Twin`)."""
        from .exp import TWINS
        return TWINS[self.exp_kind]

    @property
    def name(self) -> str:
        return "qflash_fwd[" + ",".join(f"{f.name}={getattr(self, f.name)!s}" for f in dataclasses.fields(self)) + "]"

    @property
    def hi_sum(self) -> bool:
        """Sums kept as ``128 hi + lo`` in two int32s: the wide accumulator (two-pass or online; its
        carries go to ``hi``), and two-pass 9-14-bit ``P`` from :data:`HI_SUM_HEAD_DIM` on (``P >>
        7``'s MMAs do)."""
        return self.acc_bits == 64 or self.two_pass and self.p_bits > 8 and self.head_dim >= HI_SUM_HEAD_DIM

    @property
    def alu_row_sums(self) -> bool:
        """Two-pass ``l = sum P`` from the ALU (:data:`ALU_ROW_SUMS`; 7 and 9-14-bit ``P``), not
        from MMAs against ones."""
        return ALU_ROW_SUMS and self.two_pass and self.p_bits != 8

    def row_max_keys(self, key_bytes: int) -> int:
        """Keys per full tile of the row-max pass for K stored in ``key_bytes`` per element:
        :data:`ROW_MAX_KEYS` (int8) or at most 128 with the ``hi_sum`` sums, else 0 (pass 2's
        ``block_n``). A multiple of every ``block_n``; the max is exact in any tiles."""
        if not self.hi_sum:
            return 0
        return ROW_MAX_KEYS[self.head_dim] if key_bytes == 1 else min(ROW_MAX_KEYS[self.head_dim], 128)

    def chunk_keys(self, block_n: int) -> int:
        """Keys a wide accumulator sums in its low int32 ``acc`` between two moves of its bits above
        the seventh into ``acc_hi``: half of what int32 holds (``128 keys P_lo < 2**31``, ``P_lo``
        the largest ``P`` the low MMA sees: ``P_max`` up to 8 bits, 127 for the split 9-14-bit
        ``P``), so the remainder (below 128) plus a chunk's last tiles and the masked tail tiles
        after it (at most 256 keys) still fit; a multiple of ``block_n``."""
        p_lo = 2**self.p_bits - 1 if self.p_bits <= 8 else 127
        return (2**31 - 1) // (128 * p_lo) // 2 // block_n * block_n

    def constexprs(self) -> dict:
        """The kernel's constexpr arguments (tile sizes aside)."""
        return dict(
            D=self.head_dim, D_PAD=max(self.head_dim, MIN_DOT_K), EXP_FN=self.twin.fn, EXP_ARGS=self.exp_args,
            PRESCALED=self.prescaled, FUSED=bool(self.p_args), P_ARGS=self.p_args or (0,),
            REQ_SHIFT=self.req_shift, ROW_FN=self.twin.rows, ROW_ARGS=self.row_args,
            HEADROOM_LIMITS=self.headroom, P_BITS=self.p_bits, TWO_PASS=self.two_pass, ACC64=self.acc_bits == 64,
            HI_SUM=self.hi_sum, ALU_SUMS=self.alu_row_sums,
            FLOAT_SOFTMAX=self.float_softmax,
            REL_SHIFT=self.release_shift, MASK_KIND=int(self.mask_kind), OUT_KIND=int(self.out_kind),
            OUT_FRAC=self.out_frac, PAIR_OUT=self.pair_out,
        )
