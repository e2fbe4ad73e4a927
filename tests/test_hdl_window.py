# amaranth: UnusedElaboratable=no
"""Unit tests of :class:`convgen.hdl.window.WindowGenerator` against an independent NumPy
window extraction written here (TensorFlow's output size and padding from their definitions,
the input padded with its zero point, sliced with stride and dilation).

Window beats carry ``data[ky * K + kx][lane]`` for one output pixel and channel group, in
raster order; ``bench.beats_frame`` reassembles them as (out_h, out_w, groups, K*K, lanes)
and checks first/last of every output frame.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.hdl import Fragment

from convgen.hdl.window import WindowGenerator, window_schedule
from convgen.loader import config_from_dict
from convgen.sim import bench
from convgen.sim.bench import protocol_monitor

PAIRS = [("none", "none"), ("periodic", "random"), ("random", "bursty"), ("bursty", "periodic")]


# -- independent reference ----------------------------------------------------------------------

def tf_out_size(size, kernel, stride, dilation, padding):
    """TensorFlow: SAME -> ceil(in / stride); VALID -> ceil((in - (K-1)*d) / stride)."""
    if padding == "same":
        return math.ceil(size / stride)
    return math.ceil((size - (kernel - 1) * dilation) / stride)


def tf_pad_before(size, kernel, stride, dilation, padding):
    """TensorFlow SAME: total = max(0, (out-1)*s + (K-1)*d + 1 - in), before = total // 2."""
    if padding == "valid":
        return 0
    out = tf_out_size(size, kernel, stride, dilation, padding)
    return max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size) // 2


def reference_windows(x, zero_point, kernel, stride, dilation, padding):
    """(out_h, out_w, K, K, C): tap (ky, kx) of output (oy, ox) is the zero-point-padded input
    at (oy*s - top + ky*d, ox*s - left + kx*d)."""
    h, w, c = x.shape
    oh, ow = (tf_out_size(n, kernel, stride, dilation, padding) for n in (h, w))
    top, left = (tf_pad_before(n, kernel, stride, dilation, padding) for n in (h, w))
    reach = (kernel - 1) * dilation
    bottom = max(0, (oh - 1) * stride + reach + 1 - top - h)
    right = max(0, (ow - 1) * stride + reach + 1 - left - w)
    xp = np.full((top + h + bottom, left + w + right, c), zero_point, dtype=np.int64)
    xp[top:top + h, left:left + w] = x
    out = np.empty((oh, ow, kernel, kernel, c), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            y0, x0 = ky * dilation, kx * dilation
            out[:, :, ky, kx] = xp[y0:y0 + (oh - 1) * stride + 1:stride, x0:x0 + (ow - 1) * stride + 1:stride]
    return out


def as_beats_frame(windows, lanes):
    """(oh, ow, K, K, C) -> (oh, ow, groups, K*K, lanes), the order of the window beats."""
    oh, ow, k, _, c = windows.shape
    return windows.reshape(oh, ow, k * k, c // lanes, lanes).transpose(0, 1, 3, 2, 4)


# -- helpers ------------------------------------------------------------------------------------

def depthwise_stage(h, w, c, lanes, kernel, stride, dilation, padding, *, zero_point=None, bits=8, seed=0):
    inp = {"height": h, "width": w, "channels": c, "bits": bits}
    if zero_point is not None:
        inp["zero_point"] = zero_point
    doc = {"random": {"seed": seed}, "input": inp,
           "stage": [{"kind": "depthwise", "kernel": kernel, "stride": stride, "dilation": dilation,
                      "padding": padding, "lanes": lanes}]}
    return config_from_dict(doc).stages[0]


def check_windows(stage, frames, *, source="none", sink="none", seed=0):
    """Run frames back to back through the stage's window generator, compare every window;
    returns (generator, cycles)."""
    dut = WindowGenerator.for_stage(stage)
    k, s, d, pad = stage.kernel, stage.stride, stage.dilation, stage.padding
    h, w, c = stage.input.shape
    lanes, zp = stage.lanes, stage.input.zero_point
    oh, ow = tf_out_size(h, k, s, d, pad), tf_out_size(w, k, s, d, pad)
    sched = dut.schedule
    assert (sched.out_height, sched.out_width) == (oh, ow)
    assert (sched.pad_top, sched.pad_left) == (tf_pad_before(h, k, s, d, pad), tf_pad_before(w, k, s, d, pad))
    shape = (oh, ow, c // lanes, k * k, lanes)
    per_frame = oh * ow * (c // lanes)
    beats = [b for f in frames for b in bench.frame_beats(f, lanes)]
    violations = []
    out, cycles = bench.run_stream(dut, beats, per_frame * len(frames), source=source, sink=sink, seed=seed,
                                   extra=protocol_monitor(dut.o, violations))
    assert len(out) == per_frame * len(frames)
    assert not violations, f"output beat changed or withdrawn while stalled: {violations[:3]}"
    for n, x in enumerate(frames):
        got = bench.beats_frame(out[n * per_frame:(n + 1) * per_frame], shape)
        np.testing.assert_array_equal(got, as_beats_frame(reference_windows(x, zp, k, s, d, pad), lanes))
    return dut, cycles




# (height, width, channels, lanes, kernel, stride, dilation, padding)
GEOMETRIES = [
    (5, 6, 4, 2, 3, 1, 1, "same"),       # two channel groups per pixel
    (4, 5, 2, 1, 3, 2, 1, "same"),       # stride 2, odd/even padding split
    (5, 5, 2, 2, 3, 1, 2, "same"),       # dilation 2, lanes = C
    (3, 4, 2, 1, 3, 1, 4, "same"),       # dilation 4 (max): footprint 9 > the input
    (6, 7, 2, 2, 3, 4, 1, "same"),       # stride 4 (max)
    (9, 9, 1, 1, 3, 4, 4, "valid"),      # stride 4 and dilation 4, valid
    (4, 5, 2, 1, 7, 1, 1, "same"),       # kernel 7 (max)
    (2, 3, 1, 1, 7, 1, 4, "same"),       # kernel 7, dilation 4: the largest footprint (25)
    (8, 8, 3, 1, 7, 3, 1, "valid"),      # kernel 7 valid, stride 3
    (5, 5, 3, 1, 3, 1, 1, "same"),       # three groups: delay lines of 3 slots (RAM ring of 2)
    (5, 6, 2, 1, 3, 1, 1, "valid"),      # valid
    (7, 7, 4, 2, 3, 2, 2, "valid"),      # valid, stride and dilation
    (6, 5, 2, 1, 5, 3, 3, "same"),       # kernel 5, stride 3, dilation 3
    (3, 4, 4, 2, 1, 1, 1, "same"),       # kernel 1
    (4, 5, 2, 1, 1, 2, 1, "valid"),      # kernel 1, stride 2
    (5, 1, 2, 1, 3, 1, 1, "same"),       # 1 pixel wide
    (1, 5, 2, 2, 3, 1, 1, "same"),       # 1 row
    (1, 1, 3, 1, 3, 1, 1, "same"),       # 1x1 frame
    (1, 1, 2, 2, 5, 2, 2, "same"),       # 1x1 frame, all taps but the centre padding
    (1, 6, 1, 1, 3, 2, 1, "same"),       # 1 row, stride 2
    (6, 1, 1, 1, 5, 1, 1, "same"),       # 1 column, kernel 5
]


def geometry_id(g):
    return "{}x{}x{}_l{}_k{}s{}d{}_{}".format(*g)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_window_random(geometry):
    """Every geometry under one of the source x sink pattern pairs, two frames back to back."""
    index = GEOMETRIES.index(geometry)
    source, sink = PAIRS[index % len(PAIRS)]
    stage = depthwise_stage(*geometry, seed=index)
    rng = np.random.default_rng([101, index])
    check_windows(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)


@pytest.mark.parametrize("source,sink", PAIRS + [("random", "random"), ("bursty", "bursty")])
@pytest.mark.parametrize("geometry", [(5, 6, 4, 2, 3, 1, 1, "same"), (4, 5, 2, 1, 3, 2, 2, "same"),
                                      (5, 6, 2, 1, 5, 2, 1, "valid")], ids=geometry_id)
def test_window_patterns(geometry, source, sink):
    """A few geometries under every pattern pair, three frames back to back."""
    stage = depthwise_stage(*geometry, seed=3)
    rng = np.random.default_rng([102, bench.PATTERNS.index(source), bench.PATTERNS.index(sink)])
    check_windows(stage, bench.random_frames(rng, stage, 3), source=source, sink=sink, seed=11)


def fuzz_geometries(count, seed):
    return bench.window_geometries(count, seed, max_side=8, max_elements=100)


@pytest.mark.parametrize("geometry", fuzz_geometries(16, 105), ids=geometry_id)
def test_window_fuzz(geometry):
    index = fuzz_geometries(16, 105).index(geometry)
    source, sink = PAIRS[(index + 1) % len(PAIRS)]
    stage = depthwise_stage(*geometry, seed=index)
    rng = np.random.default_rng([106, index])
    dut, cycles = check_windows(stage, bench.random_frames(rng, stage), source=source, sink=sink, seed=index)
    if (source, sink) == ("none", "none"):
        assert cycles == dut.schedule.frame_cycles(stage.input.channels // stage.lanes, dut.latency, 2, dut.tail_wait)


SLOW_FUZZ = fuzz_geometries(80, 107)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", SLOW_FUZZ, ids=geometry_id)
def test_window_fuzz_many(geometry):
    index = SLOW_FUZZ.index(geometry)
    source, sink = (PAIRS + [("random", "random"), ("bursty", "bursty")])[index % 6]
    stage = depthwise_stage(*geometry, seed=index)
    rng = np.random.default_rng([108, index])
    dut, cycles = check_windows(stage, bench.random_frames(rng, stage, 3), source=source, sink=sink, seed=index)
    if (source, sink) == ("none", "none"):
        assert cycles == dut.schedule.frame_cycles(stage.input.channels // stage.lanes, dut.latency, 3, dut.tail_wait)


@pytest.mark.parametrize("zero_point", [-128, 127])
def test_window_zero_point_extremes(zero_point):
    """Padding at both ends of the range, with all-max, all-min and random frames."""
    stage = depthwise_stage(4, 4, 2, 1, 3, 1, 2, "same", zero_point=zero_point)
    rng = np.random.default_rng(103)
    frames = [np.full((4, 4, 2), 127), np.full((4, 4, 2), -128), *bench.random_frames(rng, stage, 1)]
    check_windows(stage, frames, source="random", sink="random", seed=2)


def test_window_narrow_and_wide_elements():
    for bits, zp in ((4, -8), (16, 32767)):
        stage = depthwise_stage(3, 4, 2, 2, 3, 1, 1, "same", zero_point=zp, bits=bits, seed=bits)
        rng = np.random.default_rng(bits)
        check_windows(stage, bench.random_frames(rng, stage), source="periodic", sink="bursty", seed=bits)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_window_throughput(geometry):
    stage = depthwise_stage(*geometry, seed=1)
    rng = np.random.default_rng(104)
    frames = 2
    dut, cycles = check_windows(stage, bench.random_frames(rng, stage, frames))
    groups = stage.input.channels // stage.lanes
    expected = dut.schedule.frame_cycles(groups=groups, latency=WindowGenerator.latency, frames=frames,
                                           tail_wait=dut.tail_wait)
    print(f"WindowGenerator {geometry_id(geometry)}, {frames} frames: measured {cycles} analytic {expected}")
    assert cycles == expected


def test_window_frames_overlap_their_padding_tail():
    """'same' 3x3 at stride 1: a frame's last output waits one row and one pixel of bottom
    padding (slot H*W + W). Back to back, those virtual slots take the next frame's first
    pixels, so N frames take (N-1)*H*W + H*W + W + 1 slots, not N*(H*W + W + 1)."""
    h, w, c, lanes = 5, 6, 4, 2
    stage = depthwise_stage(h, w, c, lanes, 3, 1, 1, "same", seed=4)
    sched = window_schedule(stage)
    assert sched.overlaps and sched.tail == w + 1 and sched.period_slots == h * w
    groups, frames = c // lanes, 3
    _, cycles = check_windows(stage, bench.random_frames(np.random.default_rng(109), stage, frames))
    # The last frame's tail first waits `tail_wait` cycles for a next frame (2 * groups + 8).
    assert cycles == ((frames - 1) * h * w + h * w + w + 1) * groups + (2 * groups + 8) + WindowGenerator.latency
    # Valid padding has no tail; a kernel whose footprint exceeds the frame cannot overlap.
    assert not window_schedule(depthwise_stage(5, 6, 2, 1, 3, 1, 1, "valid")).overlaps
    assert not window_schedule(depthwise_stage(1, 1, 3, 1, 3, 1, 1, "same")).overlaps


@pytest.mark.parametrize("source,sink", PAIRS)
@pytest.mark.parametrize("geometry", [(3, 4, 1, 1, 3, 3, 1, "same"), (6, 2, 1, 1, 3, 3, 1, "same")],
                         ids=geometry_id)
def test_window_tail_of_one_beat(geometry, source, sink):
    """A tail of a single beat (stride 3, one channel group): the first virtual beat is also
    the frame's last, so the overlap decided on it must already set where the next frame
    starts."""
    stage = depthwise_stage(*geometry, seed=6)
    sched = window_schedule(stage)
    assert sched.overlaps and sched.tail == 1 and stage.input.channels == stage.lanes
    rng = np.random.default_rng([111, PAIRS.index((source, sink))])
    dut, cycles = check_windows(stage, bench.random_frames(rng, stage, 3), source=source, sink=sink, seed=7)
    if (source, sink) == ("none", "none"):
        assert cycles == sched.frame_cycles(1, dut.latency, 3, dut.tail_wait)


@pytest.mark.parametrize("geometry", [(5, 6, 4, 2, 3, 1, 1, "same"), (4, 5, 2, 1, 3, 2, 2, "same"),
                                      (6, 5, 2, 1, 5, 1, 2, "same")], ids=geometry_id)
def test_window_source_waiting_for_each_result(geometry):
    """A source that sends the next frame only after the whole previous result has come
    back (a host in a request-response loop): each tail must flush on zero points by itself
    instead of waiting for the next frame's pixels (which would deadlock)."""
    from amaranth.sim import Simulator

    stage = depthwise_stage(*geometry, seed=5)
    dut = WindowGenerator.for_stage(stage)
    assert dut.schedule.overlaps
    frames = bench.random_frames(np.random.default_rng(110), stage, 3)
    lanes, k, s, d, pad = stage.lanes, stage.kernel, stage.stride, stage.dilation, stage.padding
    per_frame = dut.schedule.out_height * dut.schedule.out_width * (stage.input.channels // lanes)
    shape = (dut.schedule.out_height, dut.schedule.out_width, stage.input.channels // lanes, k * k, lanes)
    results = []

    async def sender(ctx):
        for n, frame in enumerate(frames):
            while len(results) < n:                     # wait for the previous result
                await ctx.tick()
            for beat in bench.frame_beats(frame, lanes):
                await bench.stream_put(ctx, dut.i, beat)

    async def receiver(ctx):
        for _ in frames:
            got = [bench._plain(await bench.stream_get(ctx, dut.o)) for _ in range(per_frame)]
            results.append(bench.beats_frame(got, shape))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(sender, background=True)
    sim.add_testbench(receiver, background=True)
    sim.run_until(1e-8 * 5_000)
    assert len(results) == len(frames), f"deadlock: {len(results)} of {len(frames)} frames came back"
    for x, got in zip(frames, results):
        np.testing.assert_array_equal(
            got, as_beats_frame(reference_windows(x, stage.input.zero_point, k, s, d, pad), lanes))


def test_window_properties():
    stage = depthwise_stage(5, 6, 4, 2, 5, 1, 2, "same")
    dut = WindowGenerator.for_stage(stage)
    Fragment.get(dut, None)
    k, d, w, c, bits = 5, 2, 6, 4, 8
    assert dut.latency == 2
    assert dut.line_buffer_bits == (k - 1) * d * w * c * bits
    assert dut.window_delay_bits == (k - 1) * d * (c // 2) * k * 2 * bits
    one = WindowGenerator.for_stage(depthwise_stage(3, 4, 4, 2, 1, 1, 1, "same"))
    Fragment.get(one, None)
    assert one.line_buffer_bits == 0 and one.window_delay_bits == 0


def test_window_refusals():
    ok = dict(height=4, width=4, channels=4, lanes=2, bits=8, kernel=3, stride=1, dilation=1,
              pad_top=1, pad_left=1, out_height=4, out_width=4, zero_point=0)
    with pytest.raises(ValueError, match="kernel must be an odd integer >= 1, not 4"):
        WindowGenerator(**{**ok, "kernel": 4})
    with pytest.raises(ValueError, match="kernel must be an odd integer >= 1, not 0"):
        WindowGenerator(**{**ok, "kernel": 0})
    with pytest.raises(ValueError, match="kernel must be an odd integer >= 1, not -1"):
        WindowGenerator(**{**ok, "kernel": -1})
    with pytest.raises(ValueError, match="lanes must divide channels 4, not 3"):
        WindowGenerator(**{**ok, "lanes": 3})
