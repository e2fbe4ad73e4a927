# amaranth: UnusedElaboratable=no
"""Unit tests of :mod:`convgen.hdl.pointwise`: PointwiseMAC and the whole PointwiseUnit
(folded PE x SIMD array -> requantizer) against :func:`convgen.sim.golden.run_stage`.

Geometries cover groups 1/2/4, ``pe`` dividing ``C_out / groups``, ``pe`` spanning whole
groups (a multiple of ``C_out / groups`` with ``simd = C_in / groups``), ``simd`` from 1 to
``C_in / groups``, ``pe = C_out``, and both the compute-bound and the input-bound cases.
"""

from __future__ import annotations


import numpy as np
import pytest
from amaranth.hdl import Fragment

from convgen.hdl.mac import adder_tree_stages
from convgen.hdl.pointwise import PointwiseMAC, PointwiseUnit
from convgen.hdl.schedule import pointwise_cycles_per_pixel, pointwise_frame_cycles
from convgen.loader import config_from_dict
from convgen.sim import arith, bench, golden

PAIRS = [("none", "none"), ("periodic", "random"), ("random", "bursty"), ("bursty", "periodic")]


def pointwise_stage(h, w, c_in, c_out, groups, pe, simd, *, seed=0, activation="relu6", rounding="double",
                    scales="float", input_extra=None, **out):
    doc = {"random": {"seed": seed, "scales": scales}, "rounding": rounding,
           "input": {"height": h, "width": w, "channels": c_in, **(input_extra or {})},
           "stage": [{"kind": "pointwise", "out_channels": c_out, "groups": groups, "pe": pe, "simd": simd,
                      "activation": activation, **out}]}
    return config_from_dict(doc).stages[0]




def run_unit(stage, frames, *, source="none", sink="none", seed=0):
    """Frames back to back through a PointwiseUnit; every output frame against the golden
    model. Returns (unit, cycles, outputs)."""
    unit = PointwiseUnit(stage)
    expected = [golden.run_stage(stage, x) for x in frames]
    cycles, got = bench.run_frames(unit, frames, expected, stage.simd, stage.pe, source=source, sink=sink, seed=seed)
    return unit, cycles, got




# (c_in, c_out, groups, pe, simd)
GEOMETRIES = [
    (4, 6, 1, 1, 1),      # simd 1, pe 1
    (4, 6, 1, 2, 2),      # pe, simd dividing
    (4, 6, 1, 3, 4),      # simd = C_in
    (4, 6, 1, 6, 4),      # pe = C_out, simd = C_in: one operation per pixel
    (4, 6, 1, 6, 1),      # pe = C_out, simd 1
    (8, 8, 2, 2, 2),      # groups 2, pe divides C_out / groups
    (8, 8, 2, 4, 1),      # groups 2, pe = C_out / groups, simd 1
    (8, 8, 2, 8, 4),      # groups 2, pe spanning both groups (= C_out)
    (8, 8, 4, 4, 2),      # groups 4, pe spanning two groups
    (8, 16, 4, 8, 2),     # groups 4, pe spanning two groups of 4 outputs
    (8, 4, 4, 1, 1),      # groups 4, one output per group
    (8, 4, 4, 4, 2),      # groups 4, pe = C_out: input-bound (4 beats, 1 operation)
    (8, 2, 2, 2, 4),      # groups 2, input-bound (2 beats, 1 operation)
    (8, 2, 1, 1, 1),      # many chunks per output
    (6, 12, 2, 3, 3),     # pe divides C_out / groups = 6, simd = C_in / groups
]


def geometry_id(g):
    return "ci{}_co{}_g{}_pe{}_simd{}".format(*g)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_pointwise_unit_random(geometry):
    index = GEOMETRIES.index(geometry)
    source, sink = PAIRS[index % len(PAIRS)]
    stage = pointwise_stage(2, 3, *geometry, seed=300 + index, activation=("relu6", "none", "relu")[index % 3],
                            rounding=arith.ROUNDINGS[index % 2])
    rng = np.random.default_rng([301, index])
    run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)


@pytest.mark.parametrize("source,sink", PAIRS + [("random", "random"), ("bursty", "bursty")])
@pytest.mark.parametrize("geometry", [(8, 8, 2, 2, 2), (8, 8, 4, 4, 2), (8, 4, 4, 4, 2)], ids=geometry_id)
def test_pointwise_unit_patterns(geometry, source, sink):
    stage = pointwise_stage(2, 2, *geometry, seed=302)
    rng = np.random.default_rng([303, bench.PATTERNS.index(source), bench.PATTERNS.index(sink)])
    run_unit(stage, bench.random_frames(rng, stage, 3), source=source, sink=sink, seed=8)


def test_pointwise_unit_one_pixel_frames():
    """1x1 frames: the first and last pixel of a frame are the same pixel."""
    stage = pointwise_stage(1, 1, 4, 4, 2, 2, 1, seed=304)
    rng = np.random.default_rng(305)
    run_unit(stage, bench.random_frames(rng, stage, 4), source="random", sink="bursty", seed=1)


def test_pointwise_unit_all_max():
    """All-max weights and inputs with the input zero point at the minimum, scaled into range."""
    stage = pointwise_stage(2, 2, 8, 4, 1, 2, 4, activation="none", input_extra={"zero_point": -128})
    acc = 8 * 127 * 255 + (1 << 20)
    stage = bench.with_numbers(stage, np.full((4, 8), 127), np.full(4, 1 << 20), real=100.0 / acc)
    assert stage.accumulator_range[1] == acc
    frames = [np.full((2, 2, 8), 127), np.full((2, 2, 8), -128)]
    _, _, got = run_unit(stage, frames, source="periodic", sink="random", seed=2)
    assert got[0].max() > 50


def test_pointwise_unit_all_min():
    """All-min weights (-128) against inputs at both ends, zero point at the top."""
    stage = pointwise_stage(2, 2, 8, 4, 2, 2, 2, activation="none", input_extra={"zero_point": 127})
    acc = 4 * 128 * 255 + (1 << 24)
    stage = bench.with_numbers(stage, np.full((4, 4), -128), np.full(4, -(1 << 24)), real=100.0 / acc)
    frames = [np.full((2, 2, 8), -128), np.full((2, 2, 8), 127)]
    run_unit(stage, frames, source="random", sink="random", seed=3)


def test_pointwise_unit_wide_extremes():
    """12-bit inputs and weights: widest products, accumulator at the edge of int32."""
    stage = pointwise_stage(1, 2, 8, 2, 1, 1, 4, activation="none", bits=12, weight_bits=12,
                            input_extra={"bits": 12, "zero_point": -2048})
    weights = np.array([[2047] * 8, [-2048] * 8])
    acc = 8 * 2048 * 4095
    stage = bench.with_numbers(stage, weights, np.array([arith.INT32_MAX - acc, arith.INT32_MIN + acc]),
                               real=1500.0 / arith.INT32_MAX)
    assert stage.accumulator_bits == 32
    rng = np.random.default_rng(306)
    frames = [np.full((1, 2, 8), 2047), np.full((1, 2, 8), -2048), *bench.random_frames(rng, stage, 1)]
    run_unit(stage, frames, source="bursty", sink="periodic", seed=4)


def test_pointwise_unit_relu6_clamps_inside():
    stage = pointwise_stage(3, 3, 4, 4, 1, 2, 2, activation="relu6", zero_point=-110, scale=0.04, seed=307)
    assert stage.activation_range == (-110, 40)
    rng = np.random.default_rng(308)
    frames = bench.random_frames(rng, stage)
    acc = golden.pointwise_accumulate(frames[0], stage.weights, stage.bias, stage.input_offset)
    stage = bench.with_numbers(stage, stage.weights, stage.bias, real=300.0 / np.abs(acc).max())
    _, _, got = run_unit(stage, frames, source="random", sink="periodic", seed=5)
    out = np.concatenate([g.reshape(-1) for g in got])
    assert (out == -110).any() and (out == 40).any()


@pytest.mark.parametrize("zero_point", [-128, 127])
def test_pointwise_unit_zero_point_extremes(zero_point):
    stage = pointwise_stage(2, 2, 4, 4, 2, 2, 1, activation="none", input_extra={"zero_point": zero_point},
                            zero_point=-zero_point - 1)
    rng = np.random.default_rng(309)
    run_unit(stage, bench.random_frames(rng, stage), source="bursty", sink="bursty", seed=6)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_pointwise_unit_power_of_two(rounding):
    stage = pointwise_stage(2, 2, 4, 4, 1, 2, 2, scales="power-of-two", rounding=rounding)
    unit = PointwiseUnit(stage)
    Fragment.get(unit, None)
    assert unit.requant.power_of_two
    rng = np.random.default_rng(310)
    run_unit(stage, bench.random_frames(rng, stage), source="random", sink="random", seed=7)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_pointwise_unit_throughput(geometry):
    c_in, c_out, groups, pe, simd = geometry
    h, w = 2, 3
    stage = pointwise_stage(h, w, *geometry, seed=1)
    rng = np.random.default_rng(311)
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage, 1))
    expected = pointwise_frame_cycles(h * w, c_in, c_out, groups, pe, simd, unit.latency)
    print(f"PointwiseUnit {geometry_id(geometry)}, 1 frame of {h}x{w}, latency {unit.latency}: "
          f"measured {cycles} analytic {expected}")
    assert cycles == expected
    # Two frames back to back cost one stream of twice the pixels: no bubble at the border.
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage, 2))
    expected = pointwise_frame_cycles(2 * h * w, c_in, c_out, groups, pe, simd, unit.latency)
    print(f"PointwiseUnit {geometry_id(geometry)}, 2 frames of {h}x{w}: measured {cycles} analytic {expected}")
    assert cycles == expected


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_pointwise_mac_properties(geometry):
    c_in, c_out, groups, pe, simd = geometry
    stage = pointwise_stage(1, 1, *geometry)
    mac = PointwiseMAC.for_stage(stage)
    Fragment.get(mac, None)
    assert mac.multipliers == pe * simd
    assert mac.stages[:4] == ("operands", "weights", "factors", "multiply")
    assert mac.latency == len(mac.stages) == 5 + adder_tree_stages(simd, levels_per_stage=1)   # DSP products
    assert mac.operations == (c_out // pe) * (c_in // groups // simd)
    assert mac.cycles_per_pixel == pointwise_cycles_per_pixel(c_in, c_out, groups, pe, simd)
    # Whenever pe divides C_out / groups (or spans whole groups), the array never idles:
    # operations x pe x simd = MACs per pixel.
    assert mac.operations * pe * simd == c_in * c_out // groups
    assert mac.acc_bits == stage.accumulator_bits
    unit = PointwiseUnit(stage)
    Fragment.get(unit, None)
    # a batch of pe accumulators every `chunks` cycles: pe / share requantizer lanes keep up
    assert unit.share == max(f for f in range(1, pe + 1) if pe % f == 0 and f <= mac.chunks)
    assert unit.requant.lanes * unit.share == pe
    assert unit.latency == mac.latency + unit.requant.latency + (unit.share + 2 if unit.share > 1 else 0)
    assert unit.cycles_per_pixel == mac.cycles_per_pixel


def test_pointwise_mac_refusals():
    def mac(weights_shape=(8, 4), groups=2, pe=2, simd=2, bias=8):
        return PointwiseMAC(weights=np.zeros(weights_shape), bias=np.zeros(bias), groups=groups, pe=pe,
                            simd=simd, bits=8, weight_bits=8, input_offset=0, acc_range=(-10, 10))
    Fragment.get(mac(), None)                 # the base geometry is accepted
    with pytest.raises(ValueError, match=r"pointwise geometry not supported: weights \(8, 4\), groups 2, "
                                         r"pe 3, simd 2"):
        mac(pe=3)                              # does not divide C_out
    with pytest.raises(ValueError, match="pointwise geometry not supported.*simd 3"):
        mac(simd=3)                            # does not divide C_in / groups
    with pytest.raises(ValueError, match="pointwise geometry not supported.*pe 8, simd 2"):
        mac(pe=8, simd=2)                      # spans groups without simd = C_in / groups
    with pytest.raises(ValueError, match="pointwise geometry not supported.*groups 3"):
        mac(groups=3)                          # does not divide C_out
    with pytest.raises(ValueError, match="pointwise geometry not supported"):
        mac(bias=7)


@pytest.mark.parametrize("bits_in,weight_bits,bits_out", [(2, 2, 2), (16, 4, 16), (3, 16, 8), (8, 8, 16)])
def test_pointwise_unit_widths(bits_in, weight_bits, bits_out):
    """Narrowest and widest elements, weights and outputs the configuration allows."""
    stage = pointwise_stage(2, 2, 4, 4, 1, 2, 2, seed=bits_in * 17 + weight_bits, activation="none",
                            input_extra={"bits": bits_in}, bits=bits_out, weight_bits=weight_bits)
    rng = np.random.default_rng([312, bits_in, weight_bits])
    frames = bench.random_frames(rng, stage)
    frames[1][:] = stage.input.qmax
    run_unit(stage, frames, source="random", sink="random", seed=bits_in)


def fuzz_geometries(count, seed):
    """Seeded random pointwise geometries that the configuration accepts."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        groups = int(rng.choice([1, 2, 4]))
        c_in = groups * int(rng.integers(1, 5))
        c_out = groups * int(rng.integers(1, 5))
        gi, go = c_in // groups, c_out // groups
        simd = int(rng.choice([v for v in range(1, gi + 1) if gi % v == 0]))
        pes = [v for v in range(1, c_out + 1) if c_out % v == 0 and (go % v == 0 or (v % go == 0 and simd == gi))]
        found.append((c_in, c_out, groups, int(rng.choice(pes)), simd))
    return found


FUZZ = fuzz_geometries(12, 313)


@pytest.mark.parametrize("geometry", FUZZ, ids=geometry_id)
def test_pointwise_unit_fuzz(geometry):
    index = FUZZ.index(geometry)
    source, sink = PAIRS[(index + 1) % len(PAIRS)]
    stage = pointwise_stage(2, 2, *geometry, seed=320 + index, activation=("relu", "relu6", "none")[index % 3],
                            rounding=arith.ROUNDINGS[(index // 2) % 2])
    rng = np.random.default_rng([321, index])
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)
    if (source, sink) == ("none", "none"):
        assert cycles == pointwise_frame_cycles(8, *geometry, unit.latency)


SLOW_FUZZ = fuzz_geometries(40, 314)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", SLOW_FUZZ, ids=geometry_id)
def test_pointwise_unit_fuzz_many(geometry):
    index = SLOW_FUZZ.index(geometry)
    source, sink = (PAIRS + [("random", "random"), ("bursty", "bursty")])[index % 6]
    stage = pointwise_stage(2, 2, *geometry, seed=330 + index, activation=("relu", "relu6", "none")[index % 3],
                            rounding=arith.ROUNDINGS[(index // 3) % 2])
    rng = np.random.default_rng([331, index])
    run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)


# -- multipliers built in logic (no DSP) ---------------------------------------------------------

@pytest.mark.parametrize("geometry", [(8, 8, 2, 2, 2), (8, 6, 1, 3, 4), (6, 4, 2, 2, 3)], ids=geometry_id)
def test_pointwise_unit_logic_multipliers(geometry):
    """Shift-and-add multipliers: bit-exact under stalls, one multiply stage more than DSP ones
    (rows, partial, multiply), the adder tree registered every two levels (not every level
    as after DSPs), same throughput."""
    c_in, c_out, groups, pe, simd = geometry
    stage = pointwise_stage(2, 3, *geometry, seed=23, multipliers="logic")
    rng = np.random.default_rng(323)
    run_unit(stage, bench.random_frames(rng, stage), source="bursty", sink="random", seed=7)
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage, 1))
    dsp = PointwiseUnit(pointwise_stage(2, 3, *geometry, seed=23))
    Fragment.get(dsp, None)
    tree = [f"sum{k}" for k in range(adder_tree_stages(simd, levels_per_stage=2))]
    assert unit.mac.stages == ("operands", "weights", "rows", "partial", "multiply", *tree, "accumulate")
    assert dsp.mac.stages[:4] == ("operands", "weights", "factors", "multiply")
    assert unit.latency == dsp.latency + 1 - adder_tree_stages(simd, levels_per_stage=1) + len(tree)
    assert cycles == pointwise_frame_cycles(6, c_in, c_out, groups, pe, simd, unit.latency)


def test_pointwise_unit_logic_multipliers_extremes():
    """12-bit weights at both ends (the top row subtracted), inputs at both ends."""
    stage = pointwise_stage(1, 2, 8, 2, 1, 1, 4, activation="none", bits=12, weight_bits=12,
                            input_extra={"bits": 12, "zero_point": -2048}, multipliers="logic")
    weights = np.array([[2047] * 8, [-2048] * 8])
    acc = 8 * 2048 * 4095
    stage = bench.with_numbers(stage, weights, np.array([arith.INT32_MAX - acc, arith.INT32_MIN + acc]),
                               real=1500.0 / arith.INT32_MAX)
    rng = np.random.default_rng(324)
    frames = [np.full((1, 2, 8), 2047), np.full((1, 2, 8), -2048), *bench.random_frames(rng, stage, 1)]
    run_unit(stage, frames, source="random", sink="periodic", seed=8)


@pytest.mark.parametrize("c_in,c_out,pe,simd,weights_block", [(16, 32, 2, 4, True), (8, 8, 2, 2, False),
                                                             (16, 16, 1, 1, True)])
def test_pointwise_roms(c_in, c_out, pe, simd, weights_block):
    """The weights ROM (one row per operation) is marked for block RAM when deeper than 16
    rows (the UP5K example: 64); the biases have one row per batch, at their own width."""
    from amaranth.back import rtlil
    from convgen.hdl.pointwise import ROM_LOGIC_DEPTH
    stage = pointwise_stage(1, 1, c_in, c_out, 1, pe, simd)
    mac = PointwiseMAC.for_stage(stage)
    assert (mac.operations > ROM_LOGIC_DEPTH) == weights_block
    text = rtlil.convert(mac)
    assert text.count('attribute \\rom_style "block"') == weights_block + (mac.batches > ROM_LOGIC_DEPTH)
    assert mac._bias_rows() == [[int(stage.bias[b * pe + k]) for k in range(pe)] for b in range(mac.batches)]
    lo, hi = int(stage.bias.min()), int(stage.bias.max())
    assert -(1 << (mac.bias_bits - 1)) <= lo and hi < 1 << (mac.bias_bits - 1)
    assert not (-(1 << (mac.bias_bits - 2)) <= lo and hi < 1 << (mac.bias_bits - 2))
