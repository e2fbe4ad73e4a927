"""convgen.sim.arith against an independent scalar model of TensorFlow Lite's C++.

The model below is a plain-Python-int transliteration of
tensorflow/lite/kernels/internal/common.{h,cc} (gemmlowp's
SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, MultiplyByQuantizedMultiplier
in its default double-rounding and its TFLITE_SINGLE_ROUNDING forms, QuantizeMultiplier),
kernel_util.cc's CalculateActivationRangeQuantized, kernels/add.cc's int8 Prepare and
reference_integer_ops::AddElementwise. Python ints never overflow, so every C++ int32
wrap and every truncating division is written out explicitly; where a step is a
rounding of a rational number it is also checked against an exact ``Fraction`` model.
Every vectorised arith function is compared element by element with the model.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from convgen.sim import arith

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
SHIFTS = range(-31, 31)                       # every legal MultiplyByQuantizedMultiplier shift
EDGE_MULTIPLIERS = (0, 1 << 30, (1 << 30) + 1, INT32_MAX)
EDGE_ACCS = (INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX)


# -- the independent scalar model (plain Python ints) --------------------------------------------

def c_int32(v: int) -> int:
    """``static_cast<int32_t>`` / int32 arithmetic wrap (two's complement)."""
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def c_div(a: int, b: int) -> int:
    """C++ integer division: truncation toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul(int32 a, int32 b)."""
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_int32(c_div(ab_64 + nudge, 1 << 31))
    return INT32_MAX if overflow else ab_x2_high32


def rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT(int32 x, int exponent), exponent in [0, 31]."""
    assert 0 <= exponent <= 31
    mask = c_int32((1 << exponent) - 1)
    remainder = x & mask                        # Python & on negatives = two's complement bits
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)   # >> is arithmetic


def mbqm_double(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier, default (double rounding) form."""
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return rdbpot(srdhm(c_int32(x * (1 << left_shift)), m), right_shift)


def mbqm_single(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier, TFLITE_SINGLE_ROUNDING form (int64 arithmetic)."""
    total_shift = 31 - shift
    round_ = 1 << (total_shift - 1)
    result = x * m + round_
    assert -(1 << 63) <= result < (1 << 63)     # the C++ int64 never overflows
    return c_int32(result >> total_shift)


MBQM = {"double": mbqm_double, "single": mbqm_single}


def round_half_away_exact(q: Fraction) -> int:
    """std::round on an exact rational: to nearest, ties away from zero."""
    n = math.floor(abs(q) + Fraction(1, 2))
    return n if q >= 0 else -n


def frexp_exact(value: float) -> tuple[Fraction, int]:
    """std::frexp computed exactly: value = q * 2^e with q in [1/2, 1)."""
    fr = Fraction(value)
    e = fr.numerator.bit_length() - fr.denominator.bit_length()
    while fr >= Fraction(2) ** e:
        e += 1
    while fr < Fraction(2) ** (e - 1):
        e -= 1
    return fr / Fraction(2) ** e, e


def quantize_multiplier_model(real: float, single: bool = False) -> tuple[int, int]:
    """QuantizeMultiplier (common.cc), exact: q * 2^31 of a double q in [1/2, 1) is exact."""
    if real == 0.0:
        return 0, 0
    q, shift = frexp_exact(real)
    q_fixed = round_half_away_exact(q * (1 << 31))
    assert q_fixed <= 1 << 31
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    assert q_fixed <= INT32_MAX
    if shift < -31:
        shift, q_fixed = 0, 0
    if single and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def activation_range_model(activation: str, scale: float, zero_point: int, bits: int):
    """CalculateActivationRangeQuantizedImpl: ``zp + int32(TfLiteRound(f / scale))`` with
    float ``f / scale`` (a float32 division), std::round half away from zero."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1     # std::numeric_limits<intN_t>

    def quantize(f):
        quotient = np.float32(f) / np.float32(scale)          # float / float in C++
        return zero_point + round_half_away_exact(Fraction(float(quotient)))

    if activation == "none":
        return qmin, qmax
    if activation == "relu":
        return max(qmin, quantize(0.0)), qmax
    assert activation == "relu6"
    return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))


def add_prepare_model(a_scale, a_zp, b_scale, b_zp, out_scale, out_zp, activation, bits=8,
                      single=False) -> dict:
    """kernels/add.cc Prepare (general int8 path). ``2 * std::max(float, float)`` and
    ``(1 << left_shift) * float`` are float32 products of a power of two (exact); the
    divisions are double divisions, i.e. the exact quotient correctly rounded to double,
    which ``float(Fraction)`` gives."""
    a, b, o = (Fraction(float(np.float32(s))) for s in (a_scale, b_scale, out_scale))
    left_shift = 20 if bits <= 10 else 15
    twice_max = 2 * max(a, b)
    real_a = float(a / twice_max)
    real_b = float(b / twice_max)
    real_out = float(twice_max / ((1 << left_shift) * o))
    assert 0 < real_out < 1
    out = dict(left_shift=left_shift, a_offset=-a_zp, b_offset=-b_zp, out_zero_point=out_zp)
    for key, real in (("a", real_a), ("b", real_b), ("out", real_out)):
        m, s = quantize_multiplier_model(real, single)
        assert s <= 0                         # QuantizeMultiplierSmallerThanOneExp's check
        out[f"{key}_multiplier"], out[f"{key}_shift"] = m, s
    out["act_min"], out["act_max"] = activation_range_model(activation, float(out_scale), out_zp, bits)
    return out


def add_elementwise_model(a: int, b: int, p: dict, single: bool = False) -> int:
    """reference_integer_ops::AddElementwise on one element pair (int32 arithmetic)."""
    mul = mbqm_single if single else mbqm_double     # ...SmallerThanOneExp == MBQM for shift <= 0
    input1_val = p["a_offset"] + a
    input2_val = p["b_offset"] + b
    shifted1 = c_int32(input1_val * (1 << p["left_shift"]))
    shifted2 = c_int32(input2_val * (1 << p["left_shift"]))
    scaled1 = mul(shifted1, p["a_multiplier"], p["a_shift"])
    scaled2 = mul(shifted2, p["b_multiplier"], p["b_shift"])
    raw_sum = c_int32(scaled1 + scaled2)
    raw_output = c_int32(mul(raw_sum, p["out_multiplier"], p["out_shift"]) + p["out_zero_point"])
    return min(p["act_max"], max(p["act_min"], raw_output))


# -- helpers ------------------------------------------------------------------------------------

def vec(values) -> np.ndarray:
    return np.array(list(values), dtype=np.int64)


def check_mbqm(xs, ms, shifts, rounding):
    """arith.multiply_by_quantized_multiplier == the scalar model, element by element."""
    xs, ms, shifts = vec(xs), vec(ms), vec(shifts)
    got = arith.multiply_by_quantized_multiplier(xs, ms, shifts, rounding)
    assert got.dtype == np.int64
    model = MBQM[rounding]
    want = vec(model(int(x), int(m), int(s)) for x, m, s in zip(xs, ms, shifts))
    np.testing.assert_array_equal(got, want)
    return got


def int32_draw(rng, n):
    """Signed int32 values: half uniform over the range, half log-uniform in magnitude."""
    uni = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    bits = rng.integers(0, 32, size=n)
    mag = rng.integers(0, 1 << 62, size=n) >> (62 - bits)        # < 2^bits
    sign = np.where(rng.random(n) < 0.5, -1, 1)
    small = np.clip(sign * mag, INT32_MIN, INT32_MAX)
    return np.where(rng.random(n) < 0.5, uni, small)


def srdhm_unclamped(a: int, b: int) -> int:
    """SRDHM's formula on an int64 ``a`` (no int32 wrap of the shifted input): what a model
    that forgot the wrap would compute."""
    ab = a * b
    return c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def exact_ties(rng):
    """(x, m, shift, v2) with x*m*2^(shift-31) == v2 / 2 exactly, v2 odd (a tie k + 1/2),
    for every shift, both signs. m = o * 2^t (o odd), x = x_odd * 2^(30 - shift - t);
    for shift < 0 the product x*m is a multiple of 2^31, so the high multiply is exact and
    only the final shift rounds; for shift >= 0, x << shift stays inside int32."""
    out = []
    for s in SHIFTS:
        e = 30 - s
        for t in (30, 29, 27, 24, 20, 12, 1, 0):
            if not 0 <= e - t <= 31:
                continue
            o_lo, o_hi = 1 << (30 - t), 1 << (31 - t)          # m = o * 2^t in [2^30, 2^31)
            o = int(rng.integers(o_lo, o_hi)) | 1
            if o >= o_hi:
                o -= 2
            # |x_odd| * 2^(e-t) * 2^max(s,0) < 2^31
            room = 31 - (e - t) - max(s, 0)
            if room < 1:
                if e - t == 31 and s < 0:
                    out.append((INT32_MIN, o << t, s, -o))   # x_odd = -1, x = -2^31
                continue
            for sign in (1, -1):
                x_odd = int(rng.integers(0, 1 << (room - 1))) * 2 + 1
                x_odd = min(x_odd, (1 << room) - 1)
                out.append((sign * x_odd << (e - t), o << t, s, sign * x_odd * o))
    return out


# -- the model itself: its rounding steps equal exact rational rounding --------------------------

def test_model_components_are_exact_roundings():
    """Sanity of the transliteration: RoundingDivideByPOT is round-half-away of x / 2^e and
    SRDHM (outside its saturating case) is round-half-up of a*b / 2^31."""
    rng = np.random.default_rng(1)
    xs = [*EDGE_ACCS, *map(int, int32_draw(rng, 300))]
    for e in range(32):
        for x in xs:
            assert rdbpot(x, e) == round_half_away_exact(Fraction(x, 1 << e)), (x, e)
    for a, b in zip(int32_draw(rng, 2000), int32_draw(rng, 2000)):
        a, b = int(a), int(b)
        assert srdhm(a, b) == math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2))
    assert c_div(-7, 2) == -3 and c_div(7, -2) == -3 and c_div(-7, -2) == 3 and c_div(7, 2) == 3


# -- SaturatingRoundingDoublingHighMul and RoundingDivideByPOT -----------------------------------

def test_srdhm_edges_and_saturating_case():
    edges = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -3, -1, 0, 1, 3, 1 << 30, (1 << 30) + 1, INT32_MAX]
    a = vec(x for x in edges for _ in edges)
    b = vec(y for _ in edges for y in edges)
    got = arith.saturating_rounding_doubling_high_mul(a, b)
    np.testing.assert_array_equal(got, vec(srdhm(int(x), int(y)) for x, y in zip(a, b)))
    assert got.dtype == np.int64
    # The single overflow: INT32_MIN * INT32_MIN = 2^62 would give 2^31, saturates instead.
    assert int(arith.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert int(arith.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX)) == -INT32_MAX


def test_srdhm_random():
    rng = np.random.default_rng(2)
    a, b = int32_draw(rng, 20000), int32_draw(rng, 20000)
    got = arith.saturating_rounding_doubling_high_mul(a, b)
    np.testing.assert_array_equal(got, vec(srdhm(int(x), int(y)) for x, y in zip(a, b)))


def test_srdhm_negative_ties_round_up_not_away():
    """a*b = (2k+1) * 2^30: an exact half. gemmlowp's nudge 1 - 2^30 plus truncation
    rounds negative halves toward +inf, positive halves toward +inf too."""
    rng = np.random.default_rng(3)
    odd = rng.integers(-(1 << 20), 1 << 20, size=500) * 2 + 1
    a, b = odd * 2, np.full_like(odd, 1 << 29)             # a*b = odd * 2^30: a half
    got = arith.saturating_rounding_doubling_high_mul(a, b)
    np.testing.assert_array_equal(got, (odd + 1) // 2)     # floor(odd/2 + 1/2), exact in ints
    np.testing.assert_array_equal(got, vec(srdhm(int(x), int(y)) for x, y in zip(a, b)))


def test_srdhm_floor_identity():
    """Design-note identity (the hardware shortcut): SRDHM(a, b) == floor((a*b + 2^30) / 2^31)
    for every int32 pair except (INT32_MIN, INT32_MIN)."""
    rng = np.random.default_rng(4)
    a = [int(v) for v in int32_draw(rng, 30000)]
    b = [int(v) for v in int32_draw(rng, 30000)]
    edges = [INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -2, -1, 0, 1, 2, 1 << 30, INT32_MAX]
    pairs = [(x, y) for x in edges for y in edges if not x == y == INT32_MIN] + list(zip(a, b))
    # ties both signs: a*b = odd * 2^30
    pairs += [(int(o) * 2, 1 << 29) for o in rng.integers(-(1 << 20), 1 << 20, size=200) * 2 + 1]
    av, bv = vec(p[0] for p in pairs), vec(p[1] for p in pairs)
    floor_form = vec((x * y + (1 << 30)) // (1 << 31) for x, y in pairs)    # Python // floors
    np.testing.assert_array_equal(arith.saturating_rounding_doubling_high_mul(av, bv), floor_form)
    np.testing.assert_array_equal(vec(srdhm(x, y) for x, y in pairs), floor_form)
    # ...and the excluded pair is exactly where it breaks
    assert (INT32_MIN * INT32_MIN + (1 << 30)) // (1 << 31) == 1 << 31 != srdhm(INT32_MIN, INT32_MIN)


def test_rounding_divide_by_pot_every_exponent():
    rng = np.random.default_rng(5)
    xs = [*EDGE_ACCS, *map(int, int32_draw(rng, 400))]
    for e in range(32):
        # ties x = (2k+1) * 2^(e-1) of both signs, where representable
        ties = [(2 * k + 1) << (e - 1) for k in range(-4, 4)] if e >= 1 else []
        ties = [t for t in ties if INT32_MIN <= t <= INT32_MAX]
        x = vec(xs + ties)
        got = arith.rounding_divide_by_pot(x, e)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, vec(rdbpot(int(v), e) for v in x), err_msg=f"exponent {e}")
    # exponent as an array broadcasting with x
    x = vec(int32_draw(rng, 1000))
    e = rng.integers(0, 32, size=1000)
    np.testing.assert_array_equal(arith.rounding_divide_by_pot(x, e),
                                  vec(rdbpot(int(v), int(k)) for v, k in zip(x, e)))


# -- MultiplyByQuantizedMultiplier --------------------------------------------------------------

@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_mbqm_edge_accumulators_and_multipliers_every_shift(rounding):
    """INT32_MIN/MAX, 0, +-1 accumulators x multipliers 0, 2^30, 2^30+1, 2^31-1 x every shift
    (the double form's left shift overflows for most of these: it must wrap like C++)."""
    combos = [(x, m, s) for x in EDGE_ACCS for m in EDGE_MULTIPLIERS for s in SHIFTS]
    check_mbqm(*zip(*combos), rounding)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_mbqm_every_shift_without_left_shift_overflow(rounding):
    rng = np.random.default_rng(6)
    xs, ms, ss = [], [], []
    for s in SHIFTS:
        limit = INT32_MAX >> max(s, 0)               # |x << left| stays in int32
        x = [*rng.integers(-limit, limit, size=150, endpoint=True), -limit, limit, 0, 1, -1]
        if s <= 0:
            x += [INT32_MIN, INT32_MAX]
        m = rng.integers(1 << 30, 1 << 31, size=len(x))
        xs += x; ms += list(m); ss += [s] * len(x)
    x_arr, m_arr, s_arr = vec(xs), vec(ms), vec(ss)
    shifted = x_arr << np.maximum(s_arr, 0)
    assert shifted.min() >= INT32_MIN and shifted.max() <= INT32_MAX      # no overflow here
    got = check_mbqm(xs, ms, ss, rounding)
    # Without overflow both forms approximate x * m * 2^(shift-31) to within one unit.
    exact = [Fraction(int(x) * int(m)) * Fraction(2) ** (int(s) - 31) for x, m, s in zip(xs, ms, ss)]
    assert all(abs(Fraction(int(g)) - e) <= 1 for g, e in zip(got, exact) if abs(e) < INT32_MAX)


def test_mbqm_double_left_shift_overflow_wraps_like_cpp():
    rng = np.random.default_rng(7)
    xs, ms, ss = [], [], []
    for s in range(1, 31):
        lo = (INT32_MAX >> s) + 1                    # smallest |x| whose x << s overflows
        x = rng.integers(lo, INT32_MAX, size=100, endpoint=True)
        x = np.concatenate([x, -x, [lo, -lo - 1, INT32_MAX, INT32_MIN]])
        xs += list(x); ms += list(rng.integers(1 << 30, 1 << 31, size=len(x))); ss += [s] * len(x)
    got = check_mbqm(xs, ms, ss, "double")
    # The wrap matters: the unwrapped product would give other results for nearly all of them.
    unwrapped = [rdbpot(srdhm_unclamped(int(x) << int(s), int(m)), 0) for x, m, s in zip(xs, ms, ss)]
    assert np.mean(got != vec(unwrapped)) > 0.9


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_mbqm_exact_ties(rounding):
    rng = np.random.default_rng(8)
    ties = exact_ties(rng)
    assert len({s for _, _, s, _ in ties}) == len(SHIFTS)
    assert any(v < 0 for *_, v in ties) and any(v > 0 for *_, v in ties)
    for x, m, s, v2 in ties:                      # the construction really is a tie
        assert Fraction(x * m) * Fraction(2) ** (s - 31) == Fraction(v2, 2)
    xs, ms, ss, v2s = zip(*ties)
    got = check_mbqm(xs, ms, ss, rounding)
    # Independent of the transliteration: single rounding is half up; double rounding has
    # SRDHM round half up (shift >= 0) or, here, an exact SRDHM then RoundingDivideByPOT
    # half away from zero (shift < 0).
    if rounding == "single":
        want = [(v + 1) // 2 for v in v2s]
    else:
        want = [(v + 1) // 2 if (s >= 0 or v > 0) else (v - 1) // 2 for s, v in zip(ss, v2s)]
    np.testing.assert_array_equal(got, vec(want))


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_mbqm_random_triples(rounding):
    rng = np.random.default_rng(9 if rounding == "double" else 10)
    n = 100_000
    x = int32_draw(rng, n)
    m = rng.integers(1 << 30, 1 << 31, size=n)
    m[rng.random(n) < 0.02] = 0
    s = rng.integers(-31, 31, size=n, endpoint=False)
    check_mbqm(x, m, s, rounding)


def test_mbqm_single_and_double_differ_somewhere():
    """Guards against a rounding argument that is ignored."""
    rng = np.random.default_rng(11)
    x, m = int32_draw(rng, 5000), rng.integers(1 << 30, 1 << 31, size=5000)
    s = rng.integers(-31, 1, size=5000)
    d = arith.multiply_by_quantized_multiplier(x, m, s, "double")
    g = arith.multiply_by_quantized_multiplier(x, m, s, "single")
    assert np.any(d != g)
    with pytest.raises(ValueError):
        arith.multiply_by_quantized_multiplier(x, m, s, "nearest")


def test_wrap_int32():
    rng = np.random.default_rng(12)
    v = np.concatenate([rng.integers(-(1 << 62), 1 << 62, size=5000),
                        vec([INT32_MIN, INT32_MAX, INT32_MAX + 1, INT32_MIN - 1, 1 << 32, 0])])
    np.testing.assert_array_equal(arith.wrap_int32(v), vec(c_int32(int(a)) for a in v))


# -- QuantizeMultiplier --------------------------------------------------------------------------

@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantize_multiplier_powers_of_two(rounding):
    for p in range(-40, 40):
        real = 2.0 ** p
        m, s = arith.quantize_multiplier(real, rounding)
        assert (m, s) == quantize_multiplier_model(real, rounding == "single")
        shift = p + 1                                  # 2^p == 2^30 * 2^(shift - 31)
        if shift < -31:
            assert (m, s) == (0, 0)
        elif shift > 30 and rounding == "single":
            assert (m, s) == ((1 << 31) - 1, 30)
        else:
            assert (m, s) == (arith.POWER_OF_TWO_MULTIPLIER, shift) == (1 << 30, shift)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantize_multiplier_rounds_up_to_2_31_and_renormalises(rounding):
    for p in range(-33, 31):
        for eps in (-32, -33, -40, -52, -53):            # q = 1 - 2^eps, q*2^31 >= 2^31 - 1/2
            real = (1.0 - 2.0 ** eps) * 2.0 ** p
            assert real < 2.0 ** p
            want = quantize_multiplier_model(real, rounding == "single")
            assert arith.quantize_multiplier(real, rounding) == want
            if p + 1 >= -31 and not (rounding == "single" and p + 1 > 30):
                assert want == (1 << 30, p + 1)          # renormalised: 2^31 / 2, shift + 1
    # 2^-32 * (1 - tiny) is below 2^-32 but rounds up to 2^-32: shift -31, not flushed
    assert arith.quantize_multiplier((1.0 - 2.0 ** -40) * 2.0 ** -32) == (1 << 30, -31)


def test_quantize_multiplier_rounds_half_away_from_zero():
    """q*2^31 = n + 1/2 with n even: std::round gives n+1 where round-half-even gives n."""
    for n in (1 << 30, (1 << 30) + 2, (1 << 31) - 2, 1_500_000_000):
        for p in (-20, 0, 10):
            real = (n + 0.5) / 2.0 ** 31 * 2.0 ** p
            assert Fraction(real) == Fraction(2 * n + 1, 2 ** 32) * Fraction(2) ** p   # exact
            m, s = arith.quantize_multiplier(real)
            assert (m, s) == quantize_multiplier_model(real) == (n + 1, p)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantize_multiplier_tiny_values_flush_to_zero(rounding):
    for real in (2.0 ** -33, 2.0 ** -32 * 0.75, 1e-20, 5e-324, 2.0 ** -1074 * 3, 1.5 * 2.0 ** -40):
        assert arith.quantize_multiplier(real, rounding) == (0, 0)
        assert quantize_multiplier_model(real) == (0, 0)
    assert arith.quantize_multiplier(2.0 ** -32, rounding) == (1 << 30, -31)   # the last one kept
    assert arith.quantize_multiplier(0.0, rounding) == (0, 0)


def test_quantize_multiplier_single_rounding_clamps_large_shift():
    for real in (2.0 ** 30, 2.0 ** 31, 3.0 * 2.0 ** 35, 1e12):
        m, s = arith.quantize_multiplier(real, "double")
        assert s > 30 and (m, s) == quantize_multiplier_model(real)
        assert arith.quantize_multiplier(real, "single") == ((1 << 31) - 1, 30) == \
            quantize_multiplier_model(real, single=True)
    # just inside: shift 30 is kept as is
    real = 1.25 * 2.0 ** 29                          # 0.625 * 2^30
    assert arith.quantize_multiplier(real, "single") == arith.quantize_multiplier(real) == \
        (5 << 28, 30)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantize_multiplier_random_reals(rounding):
    rng = np.random.default_rng(13)
    reals = 2.0 ** rng.uniform(-31.0, 30.0, size=3000)
    reals = np.concatenate([reals, rng.uniform(0.0, 1.0, size=1000)])
    for real in map(float, reals):
        m, s = arith.quantize_multiplier(real, rounding)
        assert isinstance(m, int) and isinstance(s, int)
        assert (m, s) == quantize_multiplier_model(real, rounding == "single")
        if m:
            assert 1 << 30 <= m < 1 << 31 and -31 <= s <= 30
            approx = m * Fraction(2) ** (s - 31)
            assert abs(approx - Fraction(real)) <= Fraction(real) * Fraction(1, 1 << 31)


def test_quantize_multiplier_rejects_bad_reals():
    for bad in (-1.0, -2.0 ** -40, math.inf, math.nan):
        with pytest.raises(ValueError):
            arith.quantize_multiplier(bad)


def test_round_half_away():
    rng = np.random.default_rng(14)
    values = [k + 0.5 for k in range(-6, 6)] + [0.49999999999999994, -0.49999999999999994,
                                                 2.0 ** 52 + 1, -(2.0 ** 52) - 1, 0.0, -0.0]
    values += list(rng.normal(0, 1000, size=2000))
    for v in values:
        assert arith.round_half_away(v) == round_half_away_exact(Fraction(float(v))), v


# -- is_power_of_two_scale -----------------------------------------------------------------------

def test_is_power_of_two_scale():
    rng = np.random.default_rng(15)
    powers = [2.0 ** p for p in range(-149, 128)]
    others = [0.0, -1.0, -0.5, 3.0, 0.1, 0.75, 2.0 ** -20 * 1.5, float(np.float32(0.1)),
              float(np.nextafter(1.0, 2.0)), float(np.nextafter(1.0, 0.0))]
    others += list(map(float, rng.uniform(0, 10, size=500)))

    def is_pot(v):
        fr = Fraction(v)
        return v > 0 and fr.numerator & (fr.numerator - 1) == 0 and fr.denominator & (fr.denominator - 1) == 0

    for v in powers + others:
        assert arith.is_power_of_two_scale(v) == is_pot(v), v
    assert all(arith.is_power_of_two_scale(v) for v in powers)


# -- activation_range / int_range ----------------------------------------------------------------

def test_int_range_every_width():
    for bits in range(2, 17):
        values = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in range(1 << bits)]
        assert arith.int_range(bits) == (min(values), max(values))
    assert arith.int_range(8) == (np.iinfo(np.int8).min, np.iinfo(np.int8).max)
    assert arith.int_range(16) == (np.iinfo(np.int16).min, np.iinfo(np.int16).max)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_activation_range_zero_points_at_both_ends(bits):
    qmin, qmax = arith.int_range(bits)
    rng = np.random.default_rng(16 + bits)
    scales = [6.0 / (qmax - qmin), 0.5, 1.0, 0.125, 2.0 ** -(bits - 3), 7.0, 1e-3,
              *map(float, rng.uniform(1e-3, 1.0, size=20))]
    for zp in (qmin, qmin + 1, -1, 0, 1, qmax - 1, qmax):
        for scale in scales:
            for act in ("none", "relu", "relu6"):
                got = arith.activation_range(act, scale, zp, bits)
                assert got == activation_range_model(act, scale, zp, bits), (act, scale, zp)
                assert qmin <= got[0] and got[1] <= qmax
    # spelled out: none is the full range, relu starts at the zero point (not below qmin)
    assert arith.activation_range("none", 0.1, qmax, bits) == (qmin, qmax)
    assert arith.activation_range("relu", 0.1, qmin, bits) == (qmin, qmax)
    assert arith.activation_range("relu", 0.1, qmax, bits) == (qmax, qmax)
    assert arith.activation_range("relu6", 0.5, qmin, bits) == (qmin, min(qmax, qmin + 12))
    with pytest.raises(ValueError):
        arith.activation_range("relu1", 0.5, 0, bits)


def test_activation_range_exact_tie_rounds_away():
    """6 / scale exactly k + 1/2: round half away from zero (not half even)."""
    for scale, k in ((4.0, 1), (12.0, 0)):                  # 6/4 = 1.5, 6/12 = 0.5, exact
        assert Fraction(6) / Fraction(scale) == k + Fraction(1, 2)
        for zp in (-128, 0, 100):
            assert arith.activation_range("relu6", scale, zp, 8)[1] == min(127, zp + k + 1)


def test_activation_range_uses_float32_division():
    """Scales where the float32 quotient 6/scale rounds to exactly k + 1/2 although the exact
    (and the double) quotient is below it: TFLite's float division then rounds up."""
    hits = 0
    for k in range(1, 60):
        target = k + 0.5
        s = np.float32(6.0 / target)
        for _ in range(6):
            s = np.nextafter(s, np.float32(0), dtype=np.float32)
        for _ in range(13):
            quotient32 = np.float32(6.0) / s
            exact = Fraction(6) / Fraction(float(s))
            if float(quotient32) == target and exact < target:
                scale = float(s)
                assert round_half_away_exact(Fraction(6.0 / scale)) == k       # double would give k
                for zp in (-128, -100):
                    want = zp + k + 1
                    assert arith.activation_range("relu6", scale, zp, 8) == (zp, want)
                    assert activation_range_model("relu6", scale, zp, 8) == (zp, want)
                hits += 1
            s = np.nextafter(s, np.float32(1e9), dtype=np.float32)
    assert hits >= 10


# -- requantize ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_requantize(rounding):
    rng = np.random.default_rng(17)
    c = 8
    acc = int32_draw(rng, 400 * c).reshape(50, 8, c)
    acc[0, 0] = INT32_MIN
    acc[0, 1] = INT32_MAX
    acc[0, 2] = 0
    mult = vec([0, 1 << 30, (1 << 30) + 1, INT32_MAX, *rng.integers(1 << 30, 1 << 31, size=c - 4)])
    shift = vec([-31, 30, 0, -1, 1, -20, -8, 5])
    for zp, (act_min, act_max) in ((-128, (-128, 127)), (127, (-128, 127)), (-128, (-128, -80)),
                                   (127, (127, 127)), (-20, (-20, 28)), (0, (-8, 7))):
        got = arith.requantize(acc, mult, shift, zp, act_min, act_max, rounding)
        assert got.dtype == np.int64 and got.shape == acc.shape
        model = MBQM[rounding]
        want = np.empty_like(acc)
        for idx in np.ndindex(acc.shape):
            ch = idx[-1]
            v = c_int32(model(int(acc[idx]), int(mult[ch]), int(shift[ch])) + zp)   # int32 acc += offset
            want[idx] = min(act_max, max(act_min, v))
        np.testing.assert_array_equal(got, want)
        assert got.min() >= act_min and got.max() <= act_max
        if (act_min, act_max) == (-20, 28):
            assert got.min() == act_min and got.max() == act_max      # the clamp did cut


def test_requantize_zero_point_add_is_int32():
    """``acc += output_offset`` is an int32 addition in TFLite's C++: past INT32_MAX it wraps
    (to the negative end, which the clamp then takes to act_min)."""
    for rounding in arith.ROUNDINGS:
        top = arith.multiply_by_quantized_multiplier(INT32_MAX, INT32_MAX, 0, rounding)
        assert int(top) == INT32_MAX - 1 == mbqm_double(INT32_MAX, INT32_MAX, 0)
        assert int(arith.requantize(INT32_MAX, INT32_MAX, 0, 1, -128, 127, rounding)) == 127
        assert c_int32(int(top) + 2) == INT32_MIN
        assert int(arith.requantize(INT32_MAX, INT32_MAX, 0, 2, -128, 127, rounding)) == -128
        bottom = arith.multiply_by_quantized_multiplier(INT32_MIN, INT32_MAX, 0, rounding)
        assert int(bottom) == -INT32_MAX
        assert int(arith.requantize(INT32_MIN, INT32_MAX, 0, -2, -128, 127, rounding)) == 127


# -- ADD -----------------------------------------------------------------------------------------

ADD_CASES = {
    # name: (a_scale, a_zp, b_scale, b_zp, out_scale, out_zp, activation)
    "equal_scales": (0.05, 3, 0.05, -7, 0.08, -2, "none"),
    "unequal_scales": (0.0213, -128, 0.0477, 17, 0.0611, 5, "none"),
    "b_larger_relu": (0.01, 127, 0.1, -128, 0.07, -30, "relu"),
    "relu6_cut": (0.03, 0, 0.02, 10, 0.04, -100, "relu6"),
}


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("case", sorted(ADD_CASES))
def test_add_params(case, rounding):
    a_s, a_zp, b_s, b_zp, o_s, o_zp, act = ADD_CASES[case]
    p = arith.add_params(a_s, a_zp, b_s, b_zp, o_s, o_zp, act, 8, rounding)
    want = add_prepare_model(a_s, a_zp, b_s, b_zp, o_s, o_zp, act, 8, rounding == "single")
    assert {k: getattr(p, k) for k in want} == want
    assert p.rounding == rounding
    if case == "equal_scales":
        # each input multiplier is exactly 1/2 = 2^30 * 2^(0 - 31)
        assert (p.a_multiplier, p.a_shift) == (p.b_multiplier, p.b_shift) == (1 << 30, 0)
    if case == "unequal_scales":
        assert (p.b_multiplier, p.b_shift) == (1 << 30, 0)             # the larger scale: 1/2
        assert (p.a_multiplier, p.a_shift) != (p.b_multiplier, p.b_shift)


def test_add_params_wide_left_shift():
    p = arith.add_params(0.5, 0, 0.25, 0, 0.5, 0, "none", 16)
    assert p.left_shift == 15
    want = add_prepare_model(0.5, 0, 0.25, 0, 0.5, 0, "none", 16)
    assert {k: getattr(p, k) for k in want} == want
    assert arith.add_params(0.5, 0, 0.25, 0, 0.5, 0, "none", 8).left_shift == 20


def test_add_params_output_scale_too_small():
    # real_out = 2 * max(a, b) / (2^20 * out) must be < 1
    a = b = 1.0
    boundary = 2.0 * a / 2.0 ** 20                 # exactly 1
    for out in (boundary, boundary / 3, float(np.nextafter(np.float32(boundary), np.float32(0)))):
        with pytest.raises(ValueError, match="too small"):
            arith.add_params(a, 0, b, 0, out, 0)
    ok = float(np.nextafter(np.float32(boundary), np.float32(1)))
    p = arith.add_params(a, 0, b, 0, ok, 0)
    assert (p.out_multiplier, p.out_shift) == quantize_multiplier_model(
        float(Fraction(2) / (Fraction(1 << 20) * Fraction(ok))))


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("case", sorted(ADD_CASES))
def test_quantized_add(case, rounding):
    a_s, a_zp, b_s, b_zp, o_s, o_zp, act = ADD_CASES[case]
    p = arith.add_params(a_s, a_zp, b_s, b_zp, o_s, o_zp, act, 8, rounding)
    model_p = add_prepare_model(a_s, a_zp, b_s, b_zp, o_s, o_zp, act, 8, rounding == "single")
    rng = np.random.default_rng(18)
    a = np.concatenate([np.arange(-128, 128).repeat(16), rng.integers(-128, 128, size=4000)])
    b = np.concatenate([np.tile(np.arange(-128, 128, 16), 256) + rng.integers(0, 16, 4096),
                        rng.integers(-128, 128, size=4000)])
    a, b = a.reshape(-1, 4, 8), b.reshape(-1, 4, 8)     # any shape: elementwise
    got = arith.quantized_add(a, b, p)
    assert got.dtype == np.int64 and got.shape == a.shape
    want = np.vectorize(lambda x, y: add_elementwise_model(int(x), int(y), model_p,
                                                           rounding == "single"))(a, b)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= model_p["act_min"] and got.max() <= model_p["act_max"]
    if act == "relu6":
        assert got.max() == model_p["act_max"] < 127    # the clamp cut inside the int8 range
