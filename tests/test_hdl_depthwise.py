# amaranth: UnusedElaboratable=no
"""Unit tests of :mod:`convgen.hdl.depthwise`: DepthwiseMAC and the whole DepthwiseUnit
(window generator -> MAC -> requantizer) against :func:`convgen.sim.golden.run_stage`.

Stages come from :func:`convgen.loader.config_from_dict` (seeded random numbers); directed
corner cases replace weights and biases with ``dataclasses.replace`` (the stage validates
them again). Frames stream back to back under seeded valid/ready patterns and are
reassembled with ``bench.beats_frame`` (first/last checked).
"""

from __future__ import annotations


import numpy as np
import pytest
from amaranth.hdl import Fragment

from convgen.hdl.depthwise import DepthwiseMAC, DepthwiseUnit
from convgen.hdl.mac import adder_tree_stages
from convgen.loader import config_from_dict
from convgen.sim import arith, bench, golden

PAIRS = [("none", "none"), ("periodic", "random"), ("random", "bursty"), ("bursty", "periodic")]


def depthwise_stage(h, w, c, lanes, kernel, stride, dilation, padding, *, seed=0, activation="relu6",
                    rounding="double", scales="float", input_extra=None, **out):
    doc = {"random": {"seed": seed, "scales": scales}, "rounding": rounding,
           "input": {"height": h, "width": w, "channels": c, **(input_extra or {})},
           "stage": [{"kind": "depthwise", "kernel": kernel, "stride": stride, "dilation": dilation,
                      "padding": padding, "activation": activation, "lanes": lanes, **out}]}
    return config_from_dict(doc).stages[0]




def run_unit(stage, frames, *, source="none", sink="none", seed=0):
    """Frames back to back through a DepthwiseUnit; every output frame against the golden
    model. Returns (unit, cycles, outputs)."""
    unit = DepthwiseUnit(stage)
    expected = [golden.run_stage(stage, x) for x in frames]
    cycles, got = bench.run_frames(unit, frames, expected, stage.lanes, stage.lanes, source=source, sink=sink, seed=seed)
    return unit, cycles, got




# (height, width, channels, lanes, kernel, stride, dilation, padding)
GEOMETRIES = [
    (4, 5, 4, 2, 3, 1, 1, "same"),       # two channel groups per pixel
    (4, 5, 2, 1, 3, 2, 1, "same"),       # stride 2
    (4, 4, 2, 2, 3, 1, 2, "same"),       # dilation 2, lanes = C
    (3, 4, 1, 1, 3, 1, 4, "same"),       # dilation 4 (max)
    (5, 6, 2, 2, 3, 4, 1, "same"),       # stride 4 (max)
    (3, 4, 2, 1, 7, 1, 1, "same"),       # kernel 7 (max)
    (5, 6, 2, 1, 3, 1, 1, "valid"),      # valid
    (7, 7, 2, 2, 3, 2, 2, "valid"),      # valid, stride 2, dilation 2
    (3, 4, 4, 2, 1, 1, 1, "same"),       # kernel 1
    (4, 1, 2, 1, 3, 1, 1, "same"),       # 1 pixel wide
    (1, 4, 2, 2, 3, 1, 1, "same"),       # 1 row
    (1, 1, 3, 3, 3, 1, 1, "same"),       # 1x1 frame
]


def geometry_id(g):
    return "{}x{}x{}_l{}_k{}s{}d{}_{}".format(*g)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_depthwise_unit_random(geometry):
    index = GEOMETRIES.index(geometry)
    source, sink = PAIRS[index % len(PAIRS)]
    activation = ("relu6", "none", "relu")[index % 3]
    stage = depthwise_stage(*geometry, seed=200 + index, activation=activation,
                            rounding=arith.ROUNDINGS[index % 2])
    rng = np.random.default_rng([201, index])
    run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)


@pytest.mark.parametrize("source,sink", PAIRS + [("random", "random"), ("bursty", "bursty")])
def test_depthwise_unit_patterns(source, sink):
    stage = depthwise_stage(4, 5, 4, 2, 3, 2, 1, "same", seed=202)
    rng = np.random.default_rng([203, bench.PATTERNS.index(source), bench.PATTERNS.index(sink)])
    run_unit(stage, bench.random_frames(rng, stage, 3), source=source, sink=sink, seed=7)


def test_depthwise_unit_all_max():
    """All-max inputs and weights (input zero point at the minimum: the largest offset input),
    bias at the top of its range scaled down so the output is not just clamped."""
    stage = depthwise_stage(3, 4, 2, 1, 3, 1, 1, "same", activation="none", input_extra={"zero_point": -128})
    k, c = 3, 2
    weights = np.full((k, k, c), 127)
    acc_max = 9 * 127 * 255
    stage = bench.with_numbers(stage, weights, np.full(c, 1 << 20), real=100.0 / (acc_max + (1 << 20)))
    assert stage.accumulator_range[1] == acc_max + (1 << 20)
    frames = [np.full((3, 4, 2), 127), np.full((3, 4, 2), -128)]
    _, _, got = run_unit(stage, frames, source="random", sink="random", seed=1)
    assert got[0].max() > 50          # the all-max frame lands in range, not clamped to 0


def test_depthwise_unit_all_min():
    """All-min weights (-128: never generated) and inputs at both ends, zero point at the top."""
    stage = depthwise_stage(3, 3, 2, 2, 3, 1, 1, "same", activation="none", input_extra={"zero_point": 127})
    weights = np.full((3, 3, 2), -128)
    acc = 9 * 128 * 255
    stage = bench.with_numbers(stage, weights, np.full(2, -(1 << 24)), real=100.0 / (acc + (1 << 24)))
    frames = [np.full((3, 3, 2), -128), np.full((3, 3, 2), 127), np.full((3, 3, 2), -128)]
    run_unit(stage, frames, source="bursty", sink="random", seed=2)


def test_depthwise_unit_wide_extremes():
    """12-bit inputs and weights, kernel 7: the widest products and adder tree, all-max and
    all-min frames, mixed-sign extreme weights."""
    stage = depthwise_stage(2, 3, 2, 2, 7, 1, 1, "same", activation="none", bits=12,
                            input_extra={"bits": 12, "zero_point": -2048}, weight_bits=12)
    weights = np.full((7, 7, 2), 2047)
    weights[:, :, 1] = -2048
    weights[3, 3, 1] = 2047
    acc = 49 * 2048 * 4095
    stage = bench.with_numbers(stage, weights, np.array([arith.INT32_MAX - acc, arith.INT32_MIN + acc]),
                               real=1500.0 / arith.INT32_MAX)
    assert stage.accumulator_bits == 32
    rng = np.random.default_rng(204)
    frames = [np.full((2, 3, 2), 2047), np.full((2, 3, 2), -2048), *bench.random_frames(rng, stage, 1)]
    run_unit(stage, frames, source="periodic", sink="random", seed=3)


def test_depthwise_unit_relu6_clamps_inside():
    """ReLU6 whose 6.0 lands inside the int8 range, both clamps hit."""
    stage = depthwise_stage(4, 4, 2, 1, 3, 1, 1, "same", activation="relu6", zero_point=-110, scale=0.04)
    assert stage.activation_range == (-110, 40)
    rng = np.random.default_rng(205)
    frames = bench.random_frames(rng, stage)
    acc = golden.depthwise_accumulate(frames[0], stage.weights, stage.bias, stage.input_offset, 1, 1,
                                      (stage.pad_top_bottom, stage.pad_left_right))
    stage = bench.with_numbers(stage, stage.weights, stage.bias, real=300.0 / np.abs(acc).max())
    _, _, got = run_unit(stage, frames, source="random", sink="periodic", seed=4)
    out = np.concatenate([g.reshape(-1) for g in got])
    assert (out == -110).any() and (out == 40).any()


@pytest.mark.parametrize("zero_point", [-128, 127])
def test_depthwise_unit_zero_point_extremes(zero_point):
    """Input and output zero points at both ends of the range."""
    stage = depthwise_stage(4, 3, 2, 1, 3, 1, 1, "same", activation="none",
                            input_extra={"zero_point": zero_point}, zero_point=-zero_point - 1)
    rng = np.random.default_rng(206)
    run_unit(stage, bench.random_frames(rng, stage), source="bursty", sink="bursty", seed=5)


@pytest.mark.parametrize("rounding", arith.ROUNDINGS)
def test_depthwise_unit_power_of_two(rounding):
    stage = depthwise_stage(4, 4, 2, 2, 3, 1, 2, "same", scales="power-of-two", rounding=rounding)
    unit = DepthwiseUnit(stage)
    Fragment.get(unit, None)
    assert unit.requant.power_of_two
    rng = np.random.default_rng(207)
    run_unit(stage, bench.random_frames(rng, stage), source="random", sink="random", seed=6)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_depthwise_unit_throughput(geometry):
    stage = depthwise_stage(*geometry, seed=1)
    rng = np.random.default_rng(208)
    frames = 2
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage, frames))
    expected = unit.window.schedule.frame_cycles(groups=stage.input.channels // stage.lanes,
                                                 latency=unit.latency, frames=frames,
                                                 tail_wait=unit.window.tail_wait)
    print(f"DepthwiseUnit {geometry_id(geometry)}, {frames} frames, latency {unit.latency}: "
          f"measured {cycles} analytic {expected}")
    assert cycles == expected


@pytest.mark.parametrize("kernel,lanes", [(1, 1), (3, 2), (5, 1), (7, 3)])
def test_depthwise_mac_properties(kernel, lanes):
    stage = depthwise_stage(2, 2, 6, lanes, kernel, 1, 1, "same")
    mac = DepthwiseMAC.for_stage(stage)
    Fragment.get(mac, None)
    assert mac.multipliers == kernel * kernel * lanes
    assert mac.stages[:4] == ("operands", "weights", "factors", "multiply")
    assert mac.latency == len(mac.stages) == 4 + adder_tree_stages(kernel * kernel + 1, levels_per_stage=1)
    assert mac.acc_bits == stage.accumulator_bits
    unit = DepthwiseUnit(stage)
    Fragment.get(unit, None)
    # the input skid and the window's output skid
    assert unit.latency == 1 + unit.window.latency + 1 + unit.mac.latency + unit.requant.latency


def test_depthwise_mac_refusals():
    ok = dict(weights=np.zeros((3, 3, 4)), bias=np.zeros(4), input_offset=0, lanes=2, bits=8,
              weight_bits=8, acc_range=(-10, 10))
    with pytest.raises(ValueError, match=r"weights must be \(K, K, C\) and bias \(C,\) with lanes "
                                         r"dividing C; got \(3, 3, 4\), \(4,\), lanes 3"):
        DepthwiseMAC(**{**ok, "lanes": 3})
    with pytest.raises(ValueError, match=r"weights must be \(K, K, C\).*got \(3, 2, 4\)"):
        DepthwiseMAC(**{**ok, "weights": np.zeros((3, 2, 4))})
    with pytest.raises(ValueError, match=r"got \(3, 3, 4\), \(3,\)"):
        DepthwiseMAC(**{**ok, "bias": np.zeros(3)})


@pytest.mark.parametrize("bits_in,weight_bits,bits_out", [(2, 2, 2), (16, 4, 16), (3, 16, 8), (8, 8, 16)])
def test_depthwise_unit_widths(bits_in, weight_bits, bits_out):
    """Narrowest and widest elements, weights and outputs the configuration allows."""
    stage = depthwise_stage(3, 3, 2, 1, 3, 1, 1, "same", seed=bits_in * 17 + weight_bits, activation="none",
                            input_extra={"bits": bits_in}, bits=bits_out, weight_bits=weight_bits)
    rng = np.random.default_rng([212, bits_in, weight_bits])
    frames = bench.random_frames(rng, stage)
    frames[1][:] = stage.input.qmax
    run_unit(stage, frames, source="random", sink="random", seed=bits_in)


def fuzz_geometries(count, seed):
    return bench.window_geometries(count, seed, max_side=7, max_elements=60)


FUZZ = fuzz_geometries(10, 213)


@pytest.mark.parametrize("geometry", FUZZ, ids=geometry_id)
def test_depthwise_unit_fuzz(geometry):
    index = FUZZ.index(geometry)
    source, sink = PAIRS[(index + 2) % len(PAIRS)]
    stage = depthwise_stage(*geometry, seed=220 + index, activation=("relu", "relu6", "none")[index % 3],
                            rounding=arith.ROUNDINGS[(index // 2) % 2])
    rng = np.random.default_rng([221, index])
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)
    if (source, sink) == ("none", "none"):
        assert cycles == unit.window.schedule.frame_cycles(stage.input.channels // stage.lanes, unit.latency, 2,
                                                           unit.window.tail_wait)


SLOW_FUZZ = fuzz_geometries(30, 214)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", SLOW_FUZZ, ids=geometry_id)
def test_depthwise_unit_fuzz_many(geometry):
    index = SLOW_FUZZ.index(geometry)
    source, sink = (PAIRS + [("random", "random"), ("bursty", "bursty")])[index % 6]
    stage = depthwise_stage(*geometry, seed=230 + index, activation=("relu", "relu6", "none")[index % 3],
                            rounding=arith.ROUNDINGS[(index // 3) % 2])
    rng = np.random.default_rng([231, index])
    run_unit(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)


# -- multipliers built in logic (no DSP) ---------------------------------------------------------

@pytest.mark.parametrize("geometry", [(5, 6, 4, 2, 3, 1, 1, "same"), (10, 9, 3, 1, 5, 2, 2, "valid")],
                         ids=geometry_id)
def test_depthwise_unit_logic_multipliers(geometry):
    """Shift-and-add multipliers: bit-exact under stalls, one multiply stage more than DSP ones
    (rows, partial, multiply), the adder tree registered every two levels (not every level
    as after DSPs), same throughput."""
    stage = depthwise_stage(*geometry, seed=21, multipliers="logic")
    rng = np.random.default_rng(221)
    unit, _, _ = run_unit(stage, bench.random_frames(rng, stage), source="random", sink="bursty", seed=5)
    dsp = DepthwiseUnit(depthwise_stage(*geometry, seed=21))
    Fragment.get(dsp, None)
    taps = stage.kernel ** 2 + 1
    tree = [f"sum{k}" for k in range(adder_tree_stages(taps, levels_per_stage=2))]
    assert unit.mac.stages == ("operands", "weights", "rows", "partial", "multiply", *tree)
    assert dsp.mac.stages[:4] == ("operands", "weights", "factors", "multiply")
    assert unit.latency == dsp.latency + 1 - adder_tree_stages(taps, levels_per_stage=1) + len(tree)
    unit, cycles, _ = run_unit(stage, bench.random_frames(rng, stage, 2))
    assert cycles == unit.window.schedule.frame_cycles(groups=stage.input.channels // stage.lanes,
                                                       latency=unit.latency, frames=2,
                                                       tail_wait=unit.window.tail_wait)


@pytest.mark.parametrize("weight_bits", [2, 3, 8, 12])
def test_depthwise_unit_logic_multipliers_extremes(weight_bits):
    """Every weight at -2^(wb-1) (the subtracted top row alone) or 2^(wb-1) - 1, inputs at both ends."""
    stage = depthwise_stage(3, 3, 2, 2, 3, 1, 1, "same", seed=22, activation="none",
                            weight_bits=weight_bits, multipliers="logic")
    lo, hi = arith.int_range(weight_bits)
    weights = np.full((3, 3, 2), lo)
    weights[:, :, 1] = hi
    weights[1, 1, 0] = hi
    worst = 9 * 256 * (1 << (weight_bits - 1))
    stage = bench.with_numbers(stage, weights, np.zeros(2, dtype=np.int64), real=100.0 / worst)
    rng = np.random.default_rng(222)
    frames = [np.full((3, 3, 2), -128), np.full((3, 3, 2), 127), *bench.random_frames(rng, stage, 1)]
    _, _, got = run_unit(stage, frames, source="periodic", sink="random", seed=6)
    assert max(int(np.abs(g).max()) for g in got) >= 50          # the products reach the output


# -- logic multipliers as product tables ---------------------------------------------------------

def run_tables(stage, frames, **kw):
    """run_unit with the MAC's product tables forced on."""
    unit = DepthwiseUnit(stage, tables=True)
    assert unit.mac.tables
    expected = [golden.run_stage(stage, x) for x in frames]
    cycles, got = bench.run_frames(unit, frames, expected, stage.lanes, stage.lanes, **kw)
    return unit, cycles, got


def test_depthwise_tables_chosen():
    """Tables when they fit (the UP5K example: 16 groups x 16 = 256 entries, 18 tables), else
    shift-and-add; never for DSP multipliers."""
    from convgen.hdl.depthwise import table_digits
    assert table_digits(8) == [4, 4] and table_digits(6) == [4, 2] and table_digits(3) == [3]
    assert table_digits(12) == [4, 4, 4]

    def tables(stage):
        mac = DepthwiseMAC.for_stage(stage)
        Fragment.get(mac, None)
        return mac.tables
    assert tables(depthwise_stage(4, 4, 16, 1, 3, 1, 1, "same", multipliers="logic"))
    assert not tables(depthwise_stage(4, 4, 32, 1, 3, 1, 1, "same", multipliers="logic"))
    assert not tables(depthwise_stage(4, 4, 4, 2, 3, 1, 1, "same", multipliers="logic"))
    assert not tables(depthwise_stage(4, 4, 4, 1, 5, 1, 1, "same", multipliers="logic"))
    assert not tables(depthwise_stage(4, 4, 16, 1, 3, 1, 1, "same"))
    with pytest.raises(ValueError, match="product tables replace logic multipliers"):
        DepthwiseMAC(weights=np.zeros((3, 3, 2)), bias=np.zeros(2), input_offset=0, lanes=1, bits=8,
                     weight_bits=8, acc_range=(-10, 10), tables=True)


@pytest.mark.parametrize("geometry", [(5, 6, 4, 2, 3, 1, 1, "same"), (10, 9, 3, 1, 5, 2, 2, "valid"),
                                      (4, 5, 16, 1, 3, 1, 1, "same"), (1, 1, 1, 1, 3, 1, 1, "same")],
                         ids=geometry_id)
def test_depthwise_unit_tables(geometry):
    """Product tables: bit-exact under stalls, the stages and cycles of shift-and-add."""
    stage = depthwise_stage(*geometry, seed=23, multipliers="logic", rounding="single")
    rng = np.random.default_rng(223)
    unit, _, _ = run_tables(stage, bench.random_frames(rng, stage), source="random", sink="bursty", seed=7)
    shift_add = DepthwiseUnit(stage, tables=False)
    Fragment.get(shift_add, None)
    assert unit.mac.stages == shift_add.mac.stages and unit.latency == shift_add.latency
    unit, cycles, _ = run_tables(stage, bench.random_frames(rng, stage, 2))
    assert cycles == unit.window.schedule.frame_cycles(groups=stage.input.channels // stage.lanes,
                                                       latency=unit.latency, frames=2,
                                                       tail_wait=unit.window.tail_wait)


@pytest.mark.parametrize("weight_bits,zero_point", [(2, 0), (3, -128), (8, 127), (8, -128), (12, 5)])
def test_depthwise_unit_tables_extremes(weight_bits, zero_point):
    """Weights at -2^(wb-1) and 2^(wb-1) - 1, inputs at both ends (the signed top digit at
    -8 and 7, the low digit at 0 and 15), the input offset at both ends (folded into the bias)."""
    stage = depthwise_stage(3, 3, 2, 2, 3, 1, 1, "same", seed=24, activation="none",
                            weight_bits=weight_bits, multipliers="logic", input_extra={"zero_point": zero_point})
    lo, hi = arith.int_range(weight_bits)
    weights = np.full((3, 3, 2), lo)
    weights[:, :, 1] = hi
    weights[1, 1, 0] = hi
    worst = 9 * 256 * (1 << (weight_bits - 1))
    stage = bench.with_numbers(stage, weights, np.array([-(1 << 20), (1 << 20) - 1]), real=100.0 / worst)
    rng = np.random.default_rng(224)
    frames = [np.full((3, 3, 2), -128), np.full((3, 3, 2), 127), np.full((3, 3, 2), -121),
              np.full((3, 3, 2), 15), *bench.random_frames(rng, stage, 1)]
    _, _, got = run_tables(stage, frames, source="periodic", sink="random", seed=8)
    assert max(int(np.abs(g).max()) for g in got) >= 50          # the products reach the output


@pytest.mark.parametrize("bits_in,weight_bits", [(2, 2), (6, 4), (12, 8), (3, 16)])
def test_depthwise_unit_tables_widths(bits_in, weight_bits):
    """Inputs of 2..12 bits: one narrow signed digit, a narrow top digit, three digits."""
    stage = depthwise_stage(3, 3, 2, 1, 3, 1, 1, "same", seed=bits_in * 13 + weight_bits, activation="none",
                            input_extra={"bits": bits_in}, weight_bits=weight_bits, multipliers="logic")
    rng = np.random.default_rng([225, bits_in, weight_bits])
    lo, hi = arith.int_range(bits_in)
    frames = [np.full((3, 3, 2), lo), np.full((3, 3, 2), hi), *bench.random_frames(rng, stage, 2)]
    run_tables(stage, frames, source="random", sink="random", seed=bits_in)


@pytest.mark.parametrize("multipliers", ["dsp", "logic"])
def test_depthwise_mac_ready_is_registered(multipliers):
    """i.ready does not follow o.ready within a cycle (the output skid register): under a
    seeded valid/ready pattern, i.ready reads the same with o.ready low and high, holds the
    pipeline only once a beat waits in the skid register, and no beat is lost or repeated."""
    from amaranth.sim import Simulator
    stage = depthwise_stage(3, 3, 1, 1, 3, 1, 1, "same", seed=26, multipliers=multipliers)
    mac = DepthwiseMAC.for_stage(stage)
    rng = np.random.default_rng(226)
    valid, ready = rng.random(200) < 0.8, rng.random(200) < 0.4
    sent, got, holds = [], [], []

    async def testbench(ctx):
        for n in range(200):
            ctx.set(mac.i.valid, int(valid[n]))
            for t in range(9):
                ctx.set(mac.i.payload.data[t][0], n % 100)
            ctx.set(mac.o.ready, 0)
            low = ctx.get(mac.i.ready)
            ctx.set(mac.o.ready, 1)
            high = ctx.get(mac.i.ready)
            assert low == high
            ctx.set(mac.o.ready, int(ready[n]))
            holds.append(not low)
            if valid[n] and low:
                sent.append(n % 100)
            if ctx.get(mac.o.valid) and ready[n]:
                got.append(ctx.get(mac.o.payload.data[0]))
            await ctx.tick()

    sim = Simulator(mac)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert any(holds) and not all(holds)
    # every tap x: sum(w) * (x + offset) + bias for the beats taken, in order
    w, off, b = int(stage.weights.sum()), stage.input_offset, int(stage.bias[0])
    expected = [w * (x + off) + b for x in sent]
    assert got == expected[:len(got)] and len(got) >= len(sent) - mac.latency - 1
