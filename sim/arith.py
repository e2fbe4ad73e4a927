"""TensorFlow Lite's int8 integer-only arithmetic, bit-exact and vectorised.

This is the arithmetic contract of convgen (``docs/arithmetic.md``), written once
and shared by the golden model, the configuration (which derives its integer
parameters here) and the gateware's unit tests.

Every array function takes integer array-likes and returns ``np.int64`` arrays.
Values that TFLite keeps in ``int32`` are carried in int64 so that products are
exact; where TFLite's C++ would wrap an int32 (``x * (1 << left_shift)``) the
wrap is modelled explicitly with :func:`wrap_int32`. Nothing here loops over
elements in Python.

References (tensorflow/lite/kernels/internal/common.{h,cc},
kernel_util.cc, kernels/add.cc, reference_integer_ops/add.h):

* ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT`` (gemmlowp);
* ``MultiplyByQuantizedMultiplier`` in its default double-rounding form and in
  the ``TFLITE_SINGLE_ROUNDING`` form;
* ``QuantizeMultiplier`` (frexp-based, computed in double);
* ``CalculateActivationRangeQuantized`` (float32 division, round half away);
* int8 ``ADD`` preparation (left shift 20, per-input multipliers).
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "ROUNDINGS", "POWER_OF_TWO_MULTIPLIER",
    "wrap_int32", "round_half_away", "int_range",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "quantize_multiplier",
    "is_power_of_two_scale", "activation_range", "requantize",
    "AddParams", "add_params", "quantized_add",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

#: Requantization rounding forms: TFLite's default (``double``: high multiply
#: rounds, then the shift rounds) and ``TFLITE_SINGLE_ROUNDING`` (``single``).
ROUNDINGS = ("double", "single")

#: The quantized multiplier of every power-of-two real multiplier: 0.5 * 2^31.
#: A stage whose multipliers all equal it needs no multiplier, only shifts.
POWER_OF_TWO_MULTIPLIER = 1 << 30


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x):
    """Two's-complement wrap of int64 values to the int32 range."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


def round_half_away(x: float) -> int:
    """``std::round`` on a double: to nearest, ties away from zero (exact)."""
    a = abs(float(x))
    f = math.floor(a)
    r = f + 1 if a - f >= 0.5 else f   # a - f is exact for every double
    return int(math.copysign(r, x)) if r else 0


def int_range(bits: int) -> tuple[int, int]:
    """``(qmin, qmax)`` of a signed two's-complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values.

    ``(a*b + nudge) / 2^31`` with C++ division (truncation toward zero),
    ``nudge = 2^30`` if ``a*b >= 0`` else ``1 - 2^30``; the single overflow
    case ``a == b == INT32_MIN`` saturates to ``INT32_MAX``.
    """
    a, b = _i64(a), _i64(b)
    ab = a * b                                   # |ab| <= 2^62: exact
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero.

    ``exponent`` is 0..31 (scalar or array broadcasting with ``x``).
    """
    x, exponent = _i64(x), _i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding="double"):
    """TFLite ``MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift)``.

    The real factor is ``multiplier * 2^(shift - 31)``, multiplier in
    ``[0, 2^31)``, shift in ``[-31, 30]``.

    ``double`` (TFLite's default): ``RoundingDivideByPOT(SRDHM(x << left, m), right)``
    with ``left = max(shift, 0)``, ``right = max(-shift, 0)``; ``x << left`` is
    TFLite's int32 product and wraps like it.

    ``single`` (``TFLITE_SINGLE_ROUNDING``): ``(x*m + 2^(30-shift)) >> (31-shift)``
    in int64, one rounding (half up).

    The result is returned wrapped to int32, as TFLite's ``static_cast`` does.
    """
    x, multiplier, shift = _i64(x), _i64(multiplier), _i64(shift)
    if rounding == "double":
        left = np.maximum(shift, 0)
        right = np.maximum(-shift, 0)
        high = saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier)
        return rounding_divide_by_pot(high, right)
    if rounding == "single":
        total_shift = 31 - shift
        rounded = x * multiplier + (np.int64(1) << (total_shift - 1))
        return wrap_int32(rounded >> total_shift)
    raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, not {rounding!r}")


def quantize_multiplier(real: float, rounding: str = "double") -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= multiplier * 2^(shift - 31)``.

    Returns ``(multiplier, shift)`` with multiplier in ``[2^30, 2^31)`` (or 0 for
    a zero or negligible real). Mirrors TFLite: ``frexp`` in double, the
    mantissa times 2^31 rounded half away from zero, a rounded-up ``2^31``
    renormalised, shifts below -31 flushed to zero, and with single rounding
    shifts above 30 clamped.
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"real multiplier must be a finite non-negative number, not {real!r}")
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def is_power_of_two_scale(scale: float) -> bool:
    """True when a (positive) real scale is an exact power of two."""
    return scale > 0 and math.frexp(scale)[0] == 0.5


def activation_range(activation: str, scale: float, zero_point: int, bits: int) -> tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized`` for an output of ``bits`` bits.

    ``quantize(f) = zero_point + round(float32(f) / float32(scale))`` with the
    division in float32 and the rounding half away from zero, as TFLite does;
    ``relu`` is ``[max(qmin, quantize(0)), qmax]``, ``relu6`` adds
    ``min(qmax, quantize(6))``, ``none`` is ``[qmin, qmax]``.
    """
    qmin, qmax = int_range(bits)
    if activation == "none":
        return qmin, qmax

    def quantize(f):
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))

    if activation == "relu":
        return max(qmin, quantize(0.0)), qmax
    if activation == "relu6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    raise ValueError(f"activation must be one of none, relu, relu6, not {activation!r}")


def requantize(acc, multiplier, shift, zero_point, act_min, act_max, rounding="double"):
    """Accumulator -> output: ``clamp(MBQM(acc, m, s) + zero_point, act_min, act_max)``,
    the addition in int32 (wrapping) as TFLite's C++ does.

    ``acc`` is (..., C) int32 values, ``multiplier``/``shift`` are per output
    channel (C,) and broadcast over the leading axes.
    """
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift, rounding)
    return np.clip(wrap_int32(scaled + zero_point), act_min, act_max)    # TFLite adds in int32


@dataclass(frozen=True)
class AddParams:
    """Integer parameters of TFLite's quantized ADD (``kernels/add.cc`` Prepare).

    ``out = clamp(MBQM(MBQM((a + a_offset) << left_shift, a_multiplier, a_shift)
    + MBQM((b + b_offset) << left_shift, b_multiplier, b_shift),
    out_multiplier, out_shift) + out_zero_point, act_min, act_max)``.
    Every shift is <= 0 (each real multiplier is below one).
    """
    left_shift: int
    a_offset: int
    a_multiplier: int
    a_shift: int
    b_offset: int
    b_multiplier: int
    b_shift: int
    out_multiplier: int
    out_shift: int
    out_zero_point: int
    act_min: int
    act_max: int
    rounding: str = "double"


def add_left_shift(bits: int) -> int:
    """TFLite's ADD left shift: 20 for int8 (convgen keeps it up to 10 bits, where
    ``(2^bits - 1) << 20`` still fits int32) and 15, the int16 value, above."""
    return 20 if bits <= 10 else 15


def add_params(a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
               activation="none", bits=8, rounding="double") -> AddParams:
    """Derive :class:`AddParams` from float32 scales exactly as TFLite does.

    ``twice_max = 2 * max(a_scale, b_scale)`` in float32; input multipliers
    ``s / twice_max`` and output multiplier ``twice_max / (2^left_shift * out_scale)``
    (the denominator in float32) in double, each through ``QuantizeMultiplier``.
    Raises ``ValueError`` when the output multiplier is not below one (the
    output scale is too small for the inputs).
    """
    a_scale, b_scale, out_scale = (np.float32(s) for s in (a_scale, b_scale, out_scale))
    left_shift = add_left_shift(bits)
    twice_max = float(np.float32(2) * max(a_scale, b_scale))
    real_a = float(a_scale) / twice_max
    real_b = float(b_scale) / twice_max
    real_out = twice_max / float(np.float32(1 << left_shift) * out_scale)
    if not real_out < 1.0:
        raise ValueError(
            f"output scale {float(out_scale):g} is too small for input scales "
            f"{float(a_scale):g} and {float(b_scale):g}: TFLite ADD needs "
            f"2*max(input scales) / (2^{left_shift} * output scale) < 1, got {real_out:g}")
    a_m, a_s = quantize_multiplier(real_a, rounding)
    b_m, b_s = quantize_multiplier(real_b, rounding)
    o_m, o_s = quantize_multiplier(real_out, rounding)
    act_min, act_max = activation_range(activation, float(out_scale), out_zero_point, bits)
    return AddParams(left_shift, -a_zero_point, a_m, a_s, -b_zero_point, b_m, b_s,
                     o_m, o_s, out_zero_point, act_min, act_max, rounding)


def quantized_add(a, b, p: AddParams):
    """TFLite ``reference_integer_ops::AddElementwise`` on integer arrays of one shape."""
    def scaled(x, offset, m, s):
        return multiply_by_quantized_multiplier(
            wrap_int32((_i64(x) + offset) << p.left_shift), m, s, p.rounding)

    raw_sum = scaled(a, p.a_offset, p.a_multiplier, p.a_shift) + \
        scaled(b, p.b_offset, p.b_multiplier, p.b_shift)
    out = multiply_by_quantized_multiplier(wrap_int32(raw_sum), p.out_multiplier,
                                           p.out_shift, p.rounding)
    return np.clip(wrap_int32(out + p.out_zero_point), p.act_min, p.act_max)   # int32, as TFLite
