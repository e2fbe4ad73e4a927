# amaranth: UnusedElaboratable=no
"""Unit tests of :mod:`convgen.hdl.requant` against :func:`convgen.sim.arith.requantize`.

* :class:`QuantizedMultiply` alone (no handshake): random int32 values, multipliers over
  ``[2^30, 2^31 - 1]`` (ends included, and 0), shifts over ``[-31, 30]`` (left-shift path
  included), both roundings, a random enable pattern; compared with
  :func:`~convgen.sim.arith.multiply_by_quantized_multiplier`.
* :class:`Requantizer` as a stream: at 32 output bits (the whole MBQM result and the int32
  zero-point add are visible) and on configured 8-bit stages (activation clamps), seeded
  valid/ready patterns, frames back to back, reassembled with ``bench.beats_frame``.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment, UnusedElaboratable
from amaranth.sim import Simulator

from convgen.hdl.requant import QuantizedMultiply, Requantizer, saturation_range
from convgen.loader import config_from_dict, load_config
from convgen.sim import arith, bench
from convgen.sim.bench import protocol_monitor

PAIRS = [("none", "none"), ("periodic", "random"), ("random", "bursty"), ("bursty", "periodic")]
I32 = (arith.INT32_MIN, arith.INT32_MAX)
M_MAX = (1 << 31) - 1


def refused(exc, match, build):
    """``pytest.raises(exc, match=match)`` around ``build()``; the half-built components inside
    the refused one (created in convgen.hdl, so this file's linter comment does not cover them)
    are collected with their UnusedElaboratable warning ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=match) as info:
            build()
        del info
        gc.collect()


def random_acc(rng, shape, lo=arith.INT32_MIN, hi=arith.INT32_MAX):
    """Uniform over [lo, hi] with both ends, 0 and +-1 planted."""
    acc = rng.integers(lo, hi, size=shape, endpoint=True)
    flat = acc.reshape(-1)
    for k, v in enumerate((lo, hi, 0, -1, 1, lo + 1, hi - 1)):
        if k < flat.size and lo <= v <= hi:
            flat[(k * 7) % flat.size] = v
    return acc


def random_multipliers(rng, n):
    m = rng.integers(1 << 30, M_MAX, size=n, endpoint=True)
    for k, v in enumerate((1 << 30, M_MAX, 0)):
        if k < n:
            m[(k * 5) % n] = v
    return m


def random_shifts(rng, n):
    s = rng.integers(-31, 30, size=n, endpoint=True)
    for k, v in enumerate((-31, 30, 0, 1, -1)):
        if k < n:
            s[(k * 3 + 1) % n] = v
    return s


def run_requant(dut, frames, *, source="none", sink="none", seed=0):
    beats = [b for f in frames for b in bench.frame_beats(f, dut.lanes)]
    per_frame = frames[0].size // dut.lanes
    violations = []
    out, cycles = bench.run_stream(dut, beats, per_frame * len(frames), source=source, sink=sink, seed=seed,
                                   extra=protocol_monitor(dut.o, violations))
    assert len(out) == per_frame * len(frames)
    assert not violations, f"output beat changed or withdrawn while stalled: {violations[:3]}"
    return [bench.beats_frame(out[k * per_frame:(k + 1) * per_frame], frames[0].shape)
            for k in range(len(frames))], cycles


def full_requantizer(channels, lanes, multipliers, shifts, rounding, *, zero_point=0,
                     act=I32, bits=32, acc_range=I32):
    return Requantizer(lanes=lanes, channels=channels, acc_range=acc_range, multipliers=multipliers,
                       shifts=shifts, zero_point=zero_point, act_min=act[0], act_max=act[1], bits=bits,
                       rounding=rounding)


def check_requant(dut, frames, multipliers, shifts, rounding, zero_point, act, **kw):
    got, cycles = run_requant(dut, frames, **kw)
    for g, acc in zip(got, frames):
        np.testing.assert_array_equal(
            g, arith.requantize(acc, multipliers, shifts, zero_point, act[0], act[1], rounding))
    return cycles


# -- QuantizedMultiply alone -----------------------------------------------------------------------

def run_multiply(qm, xs, ms, ss, seed=0, enable="random"):
    """Present (x, m, shift) rows (lanes wide) on enabled cycles; return the y of each row."""
    L, lat = qm.lanes, qm.latency
    results = []
    garbage = np.random.default_rng(seed + 100)
    qm_lo = [-(1 << (len(x) - 1)) for x in qm.x]
    qm_hi = [(1 << (len(x) - 1)) - 1 for x in qm.x]

    async def tb(ctx):
        active = bench.pauses(enable, seed)
        k, enabled = 0, 0                 # next row to present, enabled cycles so far
        while len(results) < len(xs):
            en = next(active) if k < len(xs) else True       # then flush the pipeline
            real = en and k < len(xs)
            for lane in range(L):
                if real:
                    x, m, s = int(xs[k][lane]), int(ms[k][lane]), int(ss[k][lane])
                elif not en:                   # ignored: garbage while disabled
                    x = int(garbage.integers(qm_lo[lane], qm_hi[lane], endpoint=True))
                    m, s = int(garbage.integers(0, 1 << 31)), int(garbage.integers(-31, 31))
                else:                          # flushing
                    x, m, s = 0, 0, 0
                ctx.set(qm.x[lane], x)
                ctx.set(qm.m[lane], m)
                ctx.set(qm.shift[lane], s)
            ctx.set(qm.en, en)
            await ctx.tick()
            if en:
                k += real
                enabled += 1
                if enabled >= lat:         # y is the result of row enabled - lat (0-based)
                    results.append([ctx.get(qm.y[lane]) for lane in range(L)])

    sim = Simulator(qm)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(results[:len(xs)], dtype=np.int64)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("enable", ["none", "random"])
def test_quantized_multiply_random(rounding, enable):
    rng = np.random.default_rng([41, arith.ROUNDINGS.index(rounding), enable == "none"])
    n, lanes = 400, 3
    xs = random_acc(rng, (n, lanes))
    ms = random_multipliers(rng, n * lanes).reshape(n, lanes)
    ss = random_shifts(rng, n * lanes).reshape(n, lanes)
    qm = QuantizedMultiply(lanes, I32, ms.reshape(-1), ss.reshape(-1), rounding)
    assert not qm.power_of_two and qm.multiplier_bits == 31
    assert qm.left_shifts == (rounding == "double")
    assert qm.x_bits == 32
    y = run_multiply(qm, xs, ms, ss, seed=3, enable=enable)
    np.testing.assert_array_equal(y, arith.multiply_by_quantized_multiplier(xs, ms, ss, rounding))


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantized_multiply_directed_extremes(rounding):
    """Every combination of extreme values, extreme multipliers and extreme shifts."""
    values = [arith.INT32_MIN, arith.INT32_MIN + 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3, (1 << 30) - 1,
              1 << 30, arith.INT32_MAX - 1, arith.INT32_MAX]
    mults = [0, 1 << 30, (1 << 30) + 1, 3 << 29, M_MAX - 1, M_MAX]
    shifts = [-31, -30, -16, -2, -1, 0, 1, 2, 16, 29, 30]
    grid = np.array(np.meshgrid(values, mults, shifts, indexing="ij")).reshape(3, -1).T
    lanes = 2
    grid = grid[: len(grid) // lanes * lanes]
    xs, ms, ss = (grid[:, k].reshape(-1, lanes) for k in range(3))
    qm = QuantizedMultiply(lanes, I32, mults, shifts, rounding)
    y = run_multiply(qm, xs, ms, ss, seed=4, enable="none")
    np.testing.assert_array_equal(y, arith.multiply_by_quantized_multiplier(xs, ms, ss, rounding))


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_quantized_multiply_power_of_two(rounding):
    """Every multiplier 2^30: no multiplier is built, the result is still exact."""
    rng = np.random.default_rng([42, arith.ROUNDINGS.index(rounding)])
    n, lanes = 300, 2
    xs = random_acc(rng, (n, lanes))
    ss = random_shifts(rng, n * lanes).reshape(n, lanes)
    ms = np.full_like(ss, arith.POWER_OF_TWO_MULTIPLIER)
    qm = QuantizedMultiply(lanes, I32, ms.reshape(-1), ss.reshape(-1), rounding)
    assert qm.power_of_two and qm.multiplier_bits == 0
    y = run_multiply(qm, xs, ms, ss, seed=5, enable="random")
    np.testing.assert_array_equal(y, arith.multiply_by_quantized_multiplier(xs, ms, ss, rounding))


def test_quantized_multiply_narrow_range():
    """A narrow x_range narrows the input (and the product) but not the result."""
    rng = np.random.default_rng(43)
    lo, hi = -1000, 5000
    qm = QuantizedMultiply(2, (lo, hi), [1 << 30, M_MAX], [-3, 4], "double")
    assert qm.x_bits == 14
    n = 200
    xs = rng.integers(lo, hi, size=(n, 2), endpoint=True)
    xs[0] = (lo, hi)
    ms = rng.choice([1 << 30, M_MAX], size=(n, 2))
    ss = rng.choice([-3, 4], size=(n, 2))
    y = run_multiply(qm, xs, ms, ss, seed=6)
    np.testing.assert_array_equal(y, arith.multiply_by_quantized_multiplier(xs, ms, ss, "double"))


def test_quantized_multiply_refusals():
    refused(ValueError, "rounding must be one of double, single, not 'triple'",
            lambda: QuantizedMultiply(1, I32, [1 << 30], [0], "triple"))
    refused(ValueError, r"x_range must lie within int32, not \(-2147483649, 0\)",
            lambda: QuantizedMultiply(1, (arith.INT32_MIN - 1, 0), [1 << 30], [0]))
    refused(ValueError, "x_range must lie within int32",
            lambda: QuantizedMultiply(1, (0, arith.INT32_MAX + 1), [1 << 30], [0]))


def test_quantized_multiply_operand_slices():
    """Operands wider than 18 bits are cut into 17-bit DSP slices (a top slice of up to 3 bits
    goes to logic); the partial products count the DSP slices."""
    for (lo, hi), dsp_bits, partials in [((-(1 << 17), (1 << 17) - 1), 18, 2),      # 18 bits: one slice
                                         ((0, (1 << 18) - 1), 18, 2),               # 18 unsigned
                                         ((-(1 << 19), (1 << 19) - 1), 17, 2),      # 20: 17 + 3 in logic
                                         ((-(1 << 27), (1 << 27) - 1), 17, 4),      # 28: 17 + 11
                                         (I32, 17, 4)]:                             # 32: 17 + 15
        qm = QuantizedMultiply(1, (lo, hi), [M_MAX], [-3], "double")
        Fragment.get(qm, None)
        assert (qm.dsp_operand_bits, qm.partial_products) == (dsp_bits, partials), (lo, hi)


def test_quantized_multiply_stages():
    assert QuantizedMultiply.stages == ("factors", "multiply", "sum", "total", "high", "shift", "round")
    assert QuantizedMultiply.latency == len(QuantizedMultiply.stages) == 7


# -- Requantizer at 32 bits: the whole MBQM result ----------------------------------------------

@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("lanes", [1, 2, 6])
@pytest.mark.parametrize("source,sink", PAIRS)
def test_requantizer_full_range(rounding, lanes, source, sink):
    """32-bit output, full activation range: every bit of MBQM + zero point (int32 wrap)."""
    channels = 6
    rng = np.random.default_rng([51, lanes, arith.ROUNDINGS.index(rounding), bench.PATTERNS.index(source)])
    m, s = random_multipliers(rng, channels), random_shifts(rng, channels)
    zero_point = int(rng.integers(-(1 << 31), 1 << 31))
    dut = full_requantizer(channels, lanes, m, s, rounding, zero_point=zero_point)
    assert dut.acc_bits == 32 and not dut.power_of_two
    frames = [random_acc(rng, (2, 3, channels)) for _ in range(2)]
    check_requant(dut, frames, m, s, rounding, zero_point, I32, source=source, sink=sink, seed=lanes)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_requantizer_power_of_two(rounding):
    channels, lanes = 4, 2
    rng = np.random.default_rng([52, arith.ROUNDINGS.index(rounding)])
    m = np.full(channels, arith.POWER_OF_TWO_MULTIPLIER)
    s = np.array([-31, 30, 3, -5])
    dut = full_requantizer(channels, lanes, m, s, rounding, zero_point=-7)
    assert dut.power_of_two
    frames = [random_acc(rng, (3, 2, channels)) for _ in range(2)]
    check_requant(dut, frames, m, s, rounding, -7, I32, source="random", sink="random", seed=2)


def test_requantizer_multiplier_extremes():
    """Multipliers exactly 2^30 and 2^31 - 1 side by side (not a power-of-two stage)."""
    channels, lanes = 4, 4
    m = np.array([1 << 30, M_MAX, 1 << 30, M_MAX])
    s = np.array([0, 0, -31, 30])
    dut = full_requantizer(channels, lanes, m, s, "double")
    assert not dut.power_of_two
    frames = [np.full((1, 2, channels), arith.INT32_MAX), np.full((1, 2, channels), arith.INT32_MIN),
              np.array([[[-1, 1, -(1 << 30), (1 << 30)], [0, -1, 1, -2]]])]
    check_requant(dut, frames, m, s, "double", 0, I32, source="bursty", sink="random", seed=8)


# -- Requantizer on configured 8-bit stages ---------------------------------------------------------

def depthwise_stage(seed, *, channels=6, activation="relu6", rounding="double", scales="float", **out):
    doc = {"random": {"seed": seed, "scales": scales}, "rounding": rounding,
           "input": {"height": 3, "width": 3, "channels": channels},
           "stage": [{"kind": "depthwise", "kernel": 3, "activation": activation, "lanes": 1, **out}]}
    return config_from_dict(doc).stages[0]


@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("lanes", [1, 3, 6])
def test_requantizer_for_stage(activation, rounding, lanes):
    stage = depthwise_stage(60 + lanes, activation=activation, rounding=rounding)
    dut = Requantizer.for_stage(stage, lanes)
    act = stage.activation_range
    assert (dut.act_min, dut.act_max) == act
    assert dut.acc_bits == stage.accumulator_bits
    rng = np.random.default_rng([61, lanes])
    frames = [random_acc(rng, (2, 2, 6), *stage.accumulator_range) for _ in range(2)]
    pair = PAIRS[lanes % len(PAIRS)]
    check_requant(dut, frames, stage.multiplier, stage.shift, rounding, stage.output.zero_point, act,
                  source=pair[0], sink=pair[1], seed=lanes)


def test_requantizer_relu6_clamps_inside_range():
    """ReLU6 where 6/scale cuts inside the int8 range: both clamps are hit."""
    stage = depthwise_stage(70, activation="relu6", zero_point=-100, scale=0.03)
    act_min, act_max = stage.activation_range
    assert (act_min, act_max) == (-100, 100)           # -100 + round(6 / 0.03)
    dut = Requantizer.for_stage(stage, 2)
    rng = np.random.default_rng(71)
    frames = [random_acc(rng, (2, 3, 6), *stage.accumulator_range) for _ in range(2)]
    got, _ = run_requant(dut, frames, source="random", sink="periodic", seed=1)
    for g, acc in zip(got, frames):
        want = arith.requantize(acc, stage.multiplier, stage.shift, -100, act_min, act_max)
        np.testing.assert_array_equal(g, want)
        assert (g == act_min).any() and (g == act_max).any() and ((g > act_min) & (g < act_max)).any()


@pytest.mark.parametrize("zero_point", [-128, 127])
def test_requantizer_zero_point_extremes(zero_point):
    stage = depthwise_stage(72, activation="none", zero_point=zero_point)
    dut = Requantizer.for_stage(stage, 3)
    rng = np.random.default_rng(73)
    lo, hi = stage.accumulator_range
    frames = [random_acc(rng, (2, 2, 6), lo, hi), np.full((2, 2, 6), hi), np.full((2, 2, 6), lo)]
    check_requant(dut, frames, stage.multiplier, stage.shift, "double", zero_point, stage.activation_range,
                  source="bursty", sink="bursty", seed=7)


def test_requantizer_power_of_two_stage():
    stage = depthwise_stage(74, scales="power-of-two")
    assert stage.requant_is_power_of_two
    dut = Requantizer.for_stage(stage, 2)
    assert dut.power_of_two
    rng = np.random.default_rng(75)
    frames = [random_acc(rng, (2, 2, 6), *stage.accumulator_range) for _ in range(2)]
    check_requant(dut, frames, stage.multiplier, stage.shift, "double", stage.output.zero_point,
                  stage.activation_range, source="periodic", sink="random", seed=3)


def test_requantizer_one_beat_frames():
    """1x1 frames of a whole pixel in one beat (first and last on the same beat)."""
    m, s = np.array([M_MAX, 1 << 30]), np.array([-1, 2])
    dut = full_requantizer(2, 2, m, s, "double", zero_point=5)
    rng = np.random.default_rng(76)
    frames = [random_acc(rng, (1, 1, 2)) for _ in range(4)]
    check_requant(dut, frames, m, s, "double", 5, I32, source="random", sink="random", seed=4)


def test_requantizer_zero_point_add_wraps():
    """8-bit output: MBQM results near the int32 ends plus the zero point wrap (int32, as
    TFLite's C++) before the clamp, so INT32_MAX-ish + 127 clamps to act_min."""
    m, s = np.array([M_MAX, M_MAX]), np.array([0, 0])
    dut = full_requantizer(2, 1, m, s, "double", zero_point=127, act=(-128, 127), bits=8)
    frames = [np.array([[[arith.INT32_MAX, arith.INT32_MIN]]]), np.array([[[1000, -1000]]]),
              np.array([[[arith.INT32_MAX - 200, 5]]])]
    got, _ = run_requant(dut, frames, source="random", sink="random", seed=9)
    for g, acc in zip(got, frames):
        np.testing.assert_array_equal(g, arith.requantize(acc, m, s, 127, -128, 127))
    assert got[0][0, 0, 0] == -128          # wrapped, then clamped low


@pytest.mark.slow
@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
@pytest.mark.parametrize("power_of_two", [False, True])
def test_quantized_multiply_many(rounding, power_of_two):
    """20000 values per case: half uniform over int32, half small; random enable."""
    rng = np.random.default_rng([44, arith.ROUNDINGS.index(rounding), power_of_two])
    n, lanes = 5000, 4
    xs = random_acc(rng, (n, lanes))
    xs = np.where(rng.integers(0, 2, size=(n, lanes)) == 1, xs, rng.integers(-70000, 70000, size=(n, lanes)))
    ms = random_multipliers(rng, n * lanes).reshape(n, lanes)
    if power_of_two:
        ms[:] = arith.POWER_OF_TWO_MULTIPLIER
    ss = random_shifts(rng, n * lanes).reshape(n, lanes)
    qm = QuantizedMultiply(lanes, I32, ms.reshape(-1), ss.reshape(-1), rounding)
    assert qm.power_of_two == power_of_two
    y = run_multiply(qm, xs, ms, ss, seed=12, enable="random")
    np.testing.assert_array_equal(y, arith.multiply_by_quantized_multiplier(xs, ms, ss, rounding))


# -- throughput, properties, refusals -------------------------------------------------------------

def test_requantizer_throughput():
    channels, lanes = 6, 2
    rng = np.random.default_rng(80)
    m, s = random_multipliers(rng, channels), random_shifts(rng, channels)
    dut = full_requantizer(channels, lanes, m, s, "double")
    frames = [random_acc(rng, (3, 4, channels)) for _ in range(2)]
    cycles = check_requant(dut, frames, m, s, "double", 0, I32)
    beats = 2 * 3 * 4 * channels // lanes
    expected = beats + dut.latency
    print(f"Requantizer {beats} beats, latency {dut.latency}: measured {cycles} analytic {expected}")
    assert cycles == expected


def test_requantizer_stages():
    dut = full_requantizer(2, 1, [1 << 30, M_MAX], [0, 0], "double")
    Fragment.get(dut, None)
    assert dut.stages == ("operands", "saturate", "multiply", "sum", "total", "high", "shift", "round", "clamp")
    assert dut.latency == len(dut.stages) == 9


def test_requantizer_refusals():
    ok = dict(lanes=2, channels=4, acc_range=(-1000, 1000), multipliers=[1 << 30] * 4, shifts=[0] * 4,
              zero_point=0, act_min=-128, act_max=127, bits=8)
    refused(ValueError, "lanes must divide channels 4, not 3",
            lambda: Requantizer(**{**ok, "lanes": 3}))
    refused(ValueError, r"multipliers and shifts must have shape \(4,\)",
            lambda: Requantizer(**{**ok, "multipliers": [1 << 30] * 3}))
    refused(ValueError, r"multipliers and shifts must have shape \(4,\)",
            lambda: Requantizer(**{**ok, "shifts": [[0] * 4]}))
    refused(ValueError, r"activation range \[-129, 127\] must lie within \[-128, 127\]",
            lambda: Requantizer(**{**ok, "act_min": -129}))
    refused(ValueError, r"activation range \[-128, 128\] must lie within",
            lambda: Requantizer(**{**ok, "act_max": 128}))
    refused(ValueError, r"activation range \[10, 9\] must lie within .* not be empty",
            lambda: Requantizer(**{**ok, "act_min": 10, "act_max": 9}))
    refused(ValueError, "rounding must be one of double, single",
            lambda: Requantizer(**{**ok, "rounding": "nearest"}))
    refused(ValueError, r"acc_range must lie within int32, not \(0, 2147483648\)",
            lambda: Requantizer(**{**ok, "acc_range": (0, 1 << 31)}))


# -- saturation: the accumulator narrowed to where the output is not clamped anyway -----------

@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_saturation_range_exact_and_tight(activation, rounding):
    """Over every accumulator value of a configured stage, saturating to the range gives the
    same outputs in every channel; one value less on either side would not."""
    stage = depthwise_stage(90 + len(activation), activation=activation, rounding=rounding)
    lo, hi = stage.accumulator_range
    act_min, act_max = stage.activation_range
    zp = stage.output.zero_point
    s_lo, s_hi = saturation_range((lo, hi), stage.multiplier, stage.shift, zp, act_min, act_max, rounding)
    assert lo <= s_lo <= s_hi <= hi
    acc = np.arange(lo, hi + 1, dtype=np.int64)[:, None]

    def out(x):
        return arith.requantize(x, stage.multiplier, stage.shift, zp, act_min, act_max, rounding)

    np.testing.assert_array_equal(out(np.clip(acc, s_lo, s_hi)), out(acc))
    if s_hi < hi:        # tight: saturating one lower changes some output
        assert np.any(out(np.clip(acc, s_lo, s_hi - 1)) != out(acc))
    if s_lo > lo:
        assert np.any(out(np.clip(acc, s_lo + 1, s_hi)) != out(acc))
    if activation != "none":      # everything below the zero point's preimage clamps to it
        assert s_lo > lo


def test_saturation_range_unchanged_when_wrapping():
    """Where the int32 zero-point add (or the left shift) can wrap, the output is not monotonic
    in the accumulator: no narrowing."""
    m, s = [M_MAX], [0]
    assert saturation_range(I32, m, s, 100, -128, 127) == I32          # MBQM(INT32_MAX) + 100 wraps
    assert saturation_range((-(1 << 20), 1 << 20), m, [12], 0, -128, 127) == (-(1 << 20), 1 << 20)
    # m = 2^31 - 1, shift 0 is the identity on small values: 127 is the first to reach act_max
    assert saturation_range((-(1 << 20), 1 << 20), m, [0], 0, -128, 127) == (-128, 127)


def test_requantizer_operand_fits_one_dsp_width():
    """The saturated operand of every example stage fits an 18-bit signed DSP input (or keeps
    17 bits there and the top bits in logic): each partial product is one 18x18 multiplier."""
    for path in sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.toml")):
        for stage in load_config(path).stages:
            if stage.kind in ("pointwise", "depthwise"):
                dut = Requantizer.for_stage(stage, 1)
                Fragment.get(dut, None)
                if stage.requant_is_power_of_two:
                    assert dut.dsp_operand_bits == 0
                    continue
                assert 0 < dut.dsp_operand_bits <= 18, (path.name, stage.name, dut.saturation)
                assert dut._multiply.partial_products == 2          # two 17-bit multiplier slices
                assert dut.saturation[1] - dut.saturation[0] < np.subtract(*stage.accumulator_range[::-1])
