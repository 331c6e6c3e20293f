"""Single PTX instructions the compiler would not pick, each beside its plain-Triton twin.

On the GPU (``PTX=True``) each helper is one inline PTX instruction; in the Triton interpreter
(``PTX=False``, how CI runs the kernel) the twin computes the same integers. Why each exists:

* :func:`mul_wide`: a 32x32 -> 64-bit multiply is one ``IMAD.WIDE``,
  but LLVM hoists the extension of a loop-invariant operand out of the loop and then multiplies
  in 64 bits (five instructions);
* :func:`shr_clamp`: PTX defines shifts by 32 or more as 0; LLVM calls them undefined, so the
  kernel would otherwise need a clamp on the shift amount;
* :func:`shr_funnel`: the low word of a 64-bit value shifted right by up to 32, one ``SHF``;
* :func:`pack_s8`: four int32 to four saturated int8 in two ``I2IP`` (the compiler's truncating
  conversion takes three byte permutes);
* :func:`pack_half_round`: ``(y + 1) >> 1`` of four bytes at once after packing them (three
  instructions per four values instead of two per value), one row's four per word: the int8 MMA
  operand's order;
* :func:`split_half`: ``(y + 1) >> 1`` of up to 14 bits as two int8 MMA operands, its low seven
  bits and the rest, in four byte permutes, a shift and a mask per four values, words as above,
  and their row sums by two ``dp4a`` per word (two MMAs against ones fewer, and their waits);
* :func:`floor_s8`: float32 to int8 by the magic-number floor, off the quarter-rate conversion
  unit;
* :func:`rcp_f64`: the hardware's approximate float64 reciprocal (``div.rn.f64`` brings a
  slow-path subroutine the kernel does not need: its callers correct the quotient exactly).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def mul_wide(a, b, UNSIGNED: tl.constexpr, PTX: tl.constexpr):
    """``a * b`` (int64) for int32 ``a``, ``b``; ``UNSIGNED``: of their uint32 bits (``a <= 2**31``, so
    the product stays below ``2**63``)."""
    if PTX:
        x = tl.inline_asm_elementwise("mul.wide.u32 $0, $1, $2;" if UNSIGNED else "mul.wide.s32 $0, $1, $2;",
                                      "=l,r,r", [a, b], dtype=tl.int64, is_pure=True, pack=1)
    elif UNSIGNED:
        x = (a.to(tl.int64) & 0xFFFFFFFF) * (b.to(tl.int64) & 0xFFFFFFFF)
    else:
        x = a.to(tl.int64) * b.to(tl.int64)
    return x


@triton.jit
def shr_clamp(a, s, PTX: tl.constexpr):
    """``a >> s`` for non-negative int32 ``a`` and any ``s >= 0``: 0 once ``s >= 32``."""
    if PTX:
        y = tl.inline_asm_elementwise("shr.u32 $0, $1, $2;", "=r,r,r", [a, s], dtype=tl.int32, is_pure=True, pack=1)
    else:
        y = a >> tl.minimum(s, 31)
    return y


@triton.jit
def shr_funnel(x, s, PTX: tl.constexpr):
    """The low word of ``x >> s`` (int64 ``x``, ``0 <= s <= 32``), as int32."""
    if PTX:
        y = tl.inline_asm_elementwise("shf.r.clamp.b32 $0, $1, $2, $3;", "=r,r,r,r",
                                      [x.to(tl.int32), (x >> 32).to(tl.int32), s], dtype=tl.int32, is_pure=True,
                                      pack=1)
    else:
        y = (x >> s).to(tl.int32)
    return y


@triton.jit
def pack_s8(p, PTX: tl.constexpr):
    """int32 in ``[-128, 127]`` to int8 (saturating, which leaves these values unchanged)."""
    if PTX:
        y = tl.inline_asm_elementwise(
            "{ .reg .b32 t; cvt.pack.sat.s8.s32.b32 t, $4, $3, 0; cvt.pack.sat.s8.s32.b32 $0, $2, $1, t; }",
            "=r,r,r,r,r", [p], dtype=tl.int8, is_pure=True, pack=4)
    else:
        y = tl.minimum(tl.maximum(p, -128), 127).to(tl.int8)
    return y


@triton.jit
def _rows_swap(p):
    """The logical inverse of the byte order of :func:`pack_half_round` and :func:`split_half`: row
    bit 3 and column bit 3 of a (BLOCK_M, N) MMA-result tile swapped, a relabelling of registers
    (both bits are register bits of every thread)."""
    M: tl.constexpr = p.shape[0]
    N: tl.constexpr = p.shape[1]
    return tl.reshape(tl.permute(tl.reshape(p, (M // 16, 2, 8, N // 16, 2, 8)), (0, 4, 2, 3, 1, 5)), (M, N))


def _pack_asm(sums: bool) -> str:
    """:func:`pack_half_round`'s PTX: outputs ``P`` (2 words), with ``sums`` the row sums (8
    values), then the inputs ``y`` (8) and with ``sums`` the sums so far (8)."""
    y = 10 if sums else 2
    out = []
    for i, r in enumerate("ab"):  # word i: y's values 2i, 2i + 1, 2i + 4, 2i + 5 (one row)
        out.append(f"cvt.pack.sat.u8.s32.b32 {r}, ${y + 2 * i + 5}, ${y + 2 * i + 4}, 0; "
                   f"cvt.pack.sat.u8.s32.b32 {r}, ${y + 2 * i + 1}, ${y + 2 * i}, {r}; "
                   f"add.u32 {r}, {r}, 0x01010101; shr.u32 {r}, {r}, 1; and.b32 ${i}, {r}, 0x7F7F7F7F; ")
        if sums:  # the row's sum into the value of the word's first y (value 2i)
            out.append(f"dp4a.u32.u32 ${2 + 2 * i}, ${i}, 0x01010101, ${18 + 2 * i}; ")
    moves = "".join(f"mov.b32 ${2 + k}, ${18 + k}; " for k in (1, 3, 4, 5, 6, 7)) if sums else ""
    return "{ .reg .b32 a, b; " + "".join(out) + moves + "}"


PACK_ASM = tl.constexpr(_pack_asm(False))
PACK_SUMS_ASM = tl.constexpr(_pack_asm(True))


@triton.jit
def pack_half_round(y, w, SUMS: tl.constexpr, PTX: tl.constexpr):
    """``(p, w)``: ``p = (y + 1) >> 1`` as int8 for an int32 tile ``y`` in ``[0, 254]`` in an MMA
    result's layout (rows and columns multiples of 16): four ``y`` of one row packed as unsigned
    bytes, then one add, shift and mask for all four (``y + 1 <= 255`` carries into no neighbour).
    Of the eight values a thread holds in two 8-column groups (register order: column + 1, row + 8,
    column + 8) each word takes the four of one row, the order of the int8 MMA operand after
    :func:`qflash.kernel._mma_operand`, so nothing moves before the MMA (:func:`_rows_swap`).
    ``SUMS``: ``w`` plus ``p`` as far as row sums go, one ``dp4a`` per word, as in
    :func:`split_half`; without it ``w`` is returned as given."""
    if PTX and SUMS:
        p, w = tl.inline_asm_elementwise(PACK_SUMS_ASM, "=r,=r" + ",=r" * 8 + ",r" * 16, [y, w],
                                         dtype=(tl.int8, tl.int32), is_pure=True, pack=8)
    elif PTX:
        p = tl.inline_asm_elementwise(PACK_ASM, "=r,=r" + ",r" * 8, [y], dtype=tl.int8, is_pure=True, pack=8)
    else:
        p = ((y + 1) >> 1).to(tl.int8)
        if SUMS:
            w = w + ((y + 1) >> 1)
    if PTX:
        p = _rows_swap(p)
    return p, w


def _split_asm(sums: bool) -> str:
    """:func:`split_half`'s PTX: outputs ``lo`` (2 words), ``hi`` (2), with ``sums`` the row sums
    (8 values), then the inputs ``z`` (8) and with ``sums`` the sums so far (8)."""
    z = 12 if sums else 4
    words = []
    for i in range(2):  # word i: z's values 2i, 2i + 1, 2i + 4, 2i + 5 (one row)
        words.append(f"prmt.b32 a, ${z + 2 * i}, ${z + 2 * i + 1}, 0x5140; "
                     f"prmt.b32 b, ${z + 2 * i + 4}, ${z + 2 * i + 5}, 0x5140; prmt.b32 c, a, b, 0x5410; "
                     f"prmt.b32 ${2 + i}, a, b, 0x7632; shr.u32 c, c, 1; and.b32 ${i}, c, 0x7F7F7F7F; ")
        if sums:  # the row's sum into the value of the word's first z (value 2i), the others passed on
            words.append(f"dp4a.u32.u32 c, ${2 + i}, 0x80808080, ${20 + 2 * i}; "
                         f"dp4a.u32.u32 ${4 + 2 * i}, ${i}, 0x01010101, c; ")
    moves = "".join(f"mov.b32 ${4 + k}, ${20 + k}; " for k in (1, 3, 4, 5, 6, 7)) if sums else ""
    return "{ .reg .b32 a, b, c; " + "".join(words) + moves + "}"


SPLIT_ASM = tl.constexpr(_split_asm(False))
SPLIT_SUMS_ASM = tl.constexpr(_split_asm(True))


@triton.jit
def split_half(z, w, SUMS: tl.constexpr, PTX: tl.constexpr):
    """``(lo, hi, w)``: int8 ``lo`` and ``hi`` with ``(z >> 1) = 128 hi + lo``, ``lo`` in ``[0, 127]``,
    for an int32 tile ``z`` in ``[0, 2**15)`` laid out as in :func:`pack_half_round`, whose per-row
    word order it shares: ``hi`` is ``z``'s second byte and ``lo`` its first shifted right by one,
    so the bytes are gathered (two permutes pair up two values' bytes, two more sort them into the
    low and high bytes of four) and one shift and mask finish ``lo``. ``SUMS``: ``w`` (int32,
    ``z``'s shape) plus ``P = z >> 1`` as far as row sums go: each word's four ``P`` (one row) by
    a ``dp4a`` pair on ``hi`` (times 128) and ``lo``, into the value of ``w`` where the word's
    first ``z`` was (the others pass through: a quarter of ``w``'s values carry sums, the rest
    stay zero, for which ``ptxas`` keeps no registers), so ``tl.sum(w, 1)`` is the row sum in any
    layout; without ``SUMS`` ``w`` is returned as given."""
    if PTX and SUMS:
        lo, hi, w = tl.inline_asm_elementwise(SPLIT_SUMS_ASM, "=r,=r,=r,=r" + ",=r" * 8 + ",r" * 16, [z, w],
                                              dtype=(tl.int8, tl.int8, tl.int32), is_pure=True, pack=8)
    elif PTX:
        lo, hi = tl.inline_asm_elementwise(SPLIT_ASM, "=r,=r,=r,=r" + ",r" * 8, [z], dtype=(tl.int8, tl.int8),
                                           is_pure=True, pack=8)
    else:
        lo = ((z >> 1) & 127).to(tl.int8)
        hi = (z >> 8).to(tl.int8)
        if SUMS:
            w = w + (z >> 1)
    if PTX:
        lo = _rows_swap(lo)
        hi = _rows_swap(hi)
    return lo, hi, w


@triton.jit
def rcp_f64(x, PTX: tl.constexpr):
    """About ``1 / x`` (float64, relative error below ``2**-20``; one ``MUFU.RCP64H``)."""
    if PTX:
        r = tl.inline_asm_elementwise("rcp.approx.ftz.f64 $0, $1;", "=d,d", [x], dtype=tl.float64, is_pure=True,
                                      pack=1)
    else:
        r = 1.0 / x
    return r


@triton.jit
def floor_u32(x, PTX: tl.constexpr):
    """``floor(x)`` clamped to ``[0, 2**32 - 1]`` (int64) for float64 ``x``; 0 for NaN. On the GPU
    one conversion (PTX clamps float-to-integer conversions to the destination's range), where a
    float64 minimum costs four instructions (Hopper has no ``DMNMX``)."""
    if PTX:
        u = tl.inline_asm_elementwise("cvt.rzi.u32.f64 $0, $1;", "=r,d", [x], dtype=tl.int32, is_pure=True, pack=1)
        return u.to(tl.uint32, bitcast=True).to(tl.int64)
    else:
        top = tl.cast(4294967295, tl.float64)  # (a float literal would be rounded to float32, 2**32)
        return tl.where(x == x, tl.minimum(tl.maximum(x, 0.0), top), 0.0).to(tl.int64)


@triton.jit
def floor_s8(y, PTX: tl.constexpr):
    """``floor(y)`` as int8 for float32 ``y`` in ``[-127, 127]``. On the GPU without the
    quarter-rate ``FRND`` and ``F2I``: ``y + 1.5 * 2**23`` rounded down (``add.rm``) lands where
    the float32 spacing is 1, so it is ``floor(y) + 1.5 * 2**23`` exactly and its low byte is
    ``floor(y)`` in two's complement; three byte permutes gather four such bytes."""
    if PTX:
        x8 = tl.inline_asm_elementwise(
            "{ .reg .b32 a, b, c, d; add.rm.f32 a, $1, 0f4B400000; add.rm.f32 b, $2, 0f4B400000; "
            "add.rm.f32 c, $3, 0f4B400000; add.rm.f32 d, $4, 0f4B400000; "
            "prmt.b32 a, a, b, 0x0040; prmt.b32 c, c, d, 0x0040; prmt.b32 $0, a, c, 0x5410; }",
            "=r,f,f,f,f", [y], dtype=tl.int8, is_pure=True, pack=4)
    else:
        x8 = tl.floor(y).to(tl.int8)
    return x8
