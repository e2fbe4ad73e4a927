# amaranth: UnusedElaboratable=no
"""Unit tests of the stream plumbing: SkidBuffer, ChannelShuffle, Gather / Split / WidthConverter.

Every component is driven through :func:`convgen.sim.bench.run_stream` with seeded random
frames and seeded valid/ready patterns on both sides; outputs are reassembled with
:func:`convgen.sim.bench.beats_frame` (which checks first/last) and compared with the
golden model (the identity for the plumbing, :func:`convgen.sim.golden.channel_shuffle`
for the shuffle). ``run_stream`` fails on missing beats and on extra beats in its drain.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from convgen.hdl.beats import SkidBuffer, beat_layout, beat_signature
from convgen.hdl.shuffle import ChannelShuffle, shuffle_permutation
from convgen.hdl.width import Gather, Split, WidthConverter
from convgen.loader import config_from_dict
from convgen.sim import bench, golden
from convgen.sim.bench import protocol_monitor

PAIRS = [("none", "none"), ("periodic", "random"), ("random", "bursty"), ("bursty", "periodic"),
         ("random", "random"), ("bursty", "bursty")]


def random_frames(rng, shape, frames=2, bits=8):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [rng.integers(lo, hi, size=shape, endpoint=True) for _ in range(frames)]


def run_frames(dut, frames, lanes_in, lanes_out, *, source="none", sink="none", seed=0):
    """Stream ``frames`` back to back; return the reassembled output frames and the cycles."""
    beats = [b for f in frames for b in bench.frame_beats(f, lanes_in)]
    shape = frames[0].shape
    per_frame = shape[0] * shape[1] * shape[2] // lanes_out
    violations = []
    out, cycles = bench.run_stream(dut, beats, per_frame * len(frames), source=source, sink=sink, seed=seed,
                                   extra=protocol_monitor(dut.o, violations))
    assert len(out) == per_frame * len(frames)
    assert not violations, f"output beat changed or withdrawn while stalled: {violations[:3]}"
    return [bench.beats_frame(out[k * per_frame:(k + 1) * per_frame], shape)
            for k in range(len(frames))], cycles


def shuffle_stage(channels, groups, lanes, *, height=2, width=3, bits=8, seed=0):
    cfg = config_from_dict({"random": {"seed": seed},
                            "input": {"height": height, "width": width, "channels": channels, "bits": bits},
                            "stage": [{"kind": "shuffle", "groups": groups, "lanes": lanes}]})
    return cfg.stages[0]


# -- SkidBuffer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("source,sink", PAIRS)
@pytest.mark.parametrize("lanes", [1, 4])
def test_skid_buffer_random(source, sink, lanes):
    rng = np.random.default_rng([11, lanes, bench.PATTERNS.index(source), bench.PATTERNS.index(sink)])
    frames = random_frames(rng, (3, 4, 4), frames=3)
    got, _ = run_frames(SkidBuffer(beat_layout(8, lanes)), frames, lanes, lanes,
                        source=source, sink=sink, seed=5)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


def test_skid_buffer_extremes():
    """All-max then all-min frames, and 1-pixel frames (first and last on one beat)."""
    frames = [np.full((2, 2, 2), 127), np.full((2, 2, 2), -128)]
    got, _ = run_frames(SkidBuffer(beat_layout(8, 2)), frames, 2, 2, source="random", sink="random", seed=3)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)
    frames = [np.array([[[v]]]) for v in (127, -128, 0, 5)]
    got, _ = run_frames(SkidBuffer(beat_layout(8, 1)), frames, 1, 1, source="bursty", sink="random", seed=4)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


def test_skid_buffer_throughput():
    rng = np.random.default_rng(12)
    frames = random_frames(rng, (4, 5, 6), frames=2)
    _, cycles = run_frames(SkidBuffer(beat_layout(8, 3)), frames, 3, 3)
    expected = 2 * 4 * 5 * 2 + SkidBuffer.latency
    print(f"SkidBuffer 2 frames of 4x5x6, 3 lanes: measured {cycles} analytic {expected}")
    assert cycles == expected


def test_skid_buffer_ready_is_registered():
    """``i.ready`` never depends combinationally on ``o.ready``: toggling the sink's ready
    without a clock edge leaves ``i.ready`` unchanged; with a full skid it is low."""
    dut = SkidBuffer(beat_layout(8, 1))
    seen = []

    async def bench_(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"data": [1], "first": 1, "last": 0})
        seen.append(ctx.get(dut.i.ready))
        await ctx.tick()                     # beat 1 into the output register
        ctx.set(dut.i.payload, {"data": [2], "first": 0, "last": 0})
        seen.append(ctx.get(dut.i.ready))
        await ctx.tick()                     # beat 2 into the skid register
        ctx.set(dut.i.payload, {"data": [3], "first": 0, "last": 1})
        seen.append(ctx.get(dut.i.ready))    # full: not ready
        ctx.set(dut.o.ready, 1)
        seen.append(ctx.get(dut.i.ready))    # still not ready in this cycle (registered)
        assert ctx.get(dut.o.payload.data[0]) == 1
        await ctx.tick()
        assert ctx.get(dut.o.payload.data[0]) == 2
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench_)
    sim.run()
    assert seen == [1, 1, 0, 0]


# -- ChannelShuffle -----------------------------------------------------------------------------

SHUFFLE_CASES = [  # channels, groups, lanes
    (12, 3, 1), (12, 3, 2), (12, 4, 3), (12, 2, 4), (12, 3, 6), (8, 2, 8), (8, 8, 2), (6, 1, 2), (6, 6, 3),
]


@pytest.mark.parametrize("channels,groups,lanes", SHUFFLE_CASES)
@pytest.mark.parametrize("source,sink", PAIRS[:4])
def test_shuffle_random(channels, groups, lanes, source, sink):
    stage = shuffle_stage(channels, groups, lanes)
    dut = ChannelShuffle.for_stage(stage)
    assert (dut.channels, dut.groups, dut.lanes) == (channels, groups, lanes)
    np.testing.assert_array_equal(dut.permutation, stage.permutation)
    rng = np.random.default_rng([21, channels, groups, lanes, bench.PATTERNS.index(source)])
    frames = random_frames(rng, (2, 3, channels), frames=2)
    got, _ = run_frames(dut, frames, lanes, lanes, source=source, sink=sink, seed=channels + lanes)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, golden.run_stage(stage, f))


@pytest.mark.parametrize("lanes", [1, 2, 6])
def test_shuffle_one_pixel_frames(lanes):
    """1x1 frames: every pixel is a whole frame (first and last in one pixel)."""
    dut = ChannelShuffle(channels=6, groups=2, lanes=lanes, bits=8)
    rng = np.random.default_rng(22)
    frames = random_frames(rng, (1, 1, 6), frames=4)
    got, _ = run_frames(dut, frames, lanes, lanes, source="random", sink="bursty", seed=9)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, golden.channel_shuffle(f, 2))


def test_shuffle_extremes():
    dut = ChannelShuffle(channels=4, groups=2, lanes=2, bits=8)
    frames = [np.full((1, 3, 4), 127), np.full((1, 3, 4), -128),
              np.array([[[127, -128, 127, -128]] * 3])]
    got, _ = run_frames(dut, frames, 2, 2, source="periodic", sink="random", seed=1)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, golden.channel_shuffle(f, 2))


def test_shuffle_permutation_definition():
    """Output channel j * g + i is input channel i * (C / g) + j."""
    c, g = 12, 3
    perm = shuffle_permutation(c, g)
    for i in range(g):
        for j in range(c // g):
            assert perm[j * g + i] == i * (c // g) + j


@pytest.mark.parametrize("channels,groups,lanes", [(12, 3, 2), (8, 2, 4), (6, 3, 1)])
def test_shuffle_throughput(channels, groups, lanes):
    dut = ChannelShuffle(channels=channels, groups=groups, lanes=lanes, bits=8)
    assert not dut.wired
    assert dut.latency == channels // lanes + 1
    assert dut.buffer_bits == 2 * channels * 8
    rng = np.random.default_rng(23)
    frames = random_frames(rng, (2, 3, channels), frames=2)
    got, cycles = run_frames(dut, frames, lanes, lanes)
    beats = 2 * 2 * 3 * channels // lanes
    expected = beats + dut.latency
    print(f"ChannelShuffle C={channels} g={groups} lanes={lanes}, 2 frames: measured {cycles} analytic {expected}")
    assert cycles == expected
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, golden.channel_shuffle(f, groups))


def _has_sync(fragment) -> bool:
    if any(domain != "comb" for domain in fragment.statements):
        return True
    return any(_has_sync(sub) for sub, *_ in fragment.subfragments)


def test_shuffle_wired_throughput_and_no_registers():
    dut = ChannelShuffle(channels=8, groups=4, lanes=8, bits=8)
    assert dut.wired and dut.latency == 0 and dut.buffer_bits == 0
    assert not _has_sync(Fragment.get(ChannelShuffle(channels=8, groups=4, lanes=8, bits=8), None))
    assert _has_sync(Fragment.get(ChannelShuffle(channels=8, groups=4, lanes=4, bits=8), None))
    rng = np.random.default_rng(24)
    frames = random_frames(rng, (2, 3, 8), frames=2)
    got, cycles = run_frames(dut, frames, 8, 8)
    expected = 2 * 2 * 3 + dut.latency
    print(f"ChannelShuffle wired C=8 g=4, 2 frames: measured {cycles} analytic {expected}")
    assert cycles == expected
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, golden.channel_shuffle(f, 4))


def test_shuffle_wired_is_combinational():
    """Wired shuffle: the output follows the input in the same cycle (no clock edge)."""
    dut = ChannelShuffle(channels=6, groups=3, lanes=6, bits=8)
    values = [10, -20, 30, -40, 50, -60]

    async def bench_(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"data": values, "first": 1, "last": 0})
        assert ctx.get(dut.o.valid) == 1
        assert ctx.get(dut.i.ready) == 1
        assert [ctx.get(dut.o.payload.data[k]) for k in range(6)] == [values[p] for p in dut.permutation]
        assert (ctx.get(dut.o.payload.first), ctx.get(dut.o.payload.last)) == (1, 0)
        ctx.set(dut.o.ready, 0)
        assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.o.valid) == 0

    sim = Simulator(dut)
    sim.add_testbench(bench_)
    sim.run()


def test_shuffle_refusals():
    with pytest.raises(ValueError, match="groups must be a positive divisor of channels 12, not 5"):
        ChannelShuffle(channels=12, groups=5, lanes=1, bits=8)
    with pytest.raises(ValueError, match="groups must be a positive divisor"):
        ChannelShuffle(channels=12, groups=0, lanes=1, bits=8)
    with pytest.raises(ValueError, match="lanes must be a positive divisor of channels 12, not 5"):
        ChannelShuffle(channels=12, groups=3, lanes=5, bits=8)
    with pytest.raises(ValueError, match="lanes must be a positive divisor"):
        ChannelShuffle(channels=12, groups=3, lanes=0, bits=8)


def test_beat_layout_refusals():
    with pytest.raises(TypeError, match="lanes must be a positive integer"):
        beat_layout(8, 0)
    with pytest.raises(TypeError, match="bits must be a positive integer"):
        beat_signature(0, 2)


# -- Gather / Split / WidthConverter ------------------------------------------------------------

WIDTH_CASES = [  # channels, lanes_in, lanes_out
    (12, 1, 4), (12, 4, 1), (12, 2, 3), (12, 3, 2), (12, 4, 6), (12, 6, 4), (12, 3, 3), (12, 12, 1), (12, 1, 12),
]


def width_cycles(conv: WidthConverter, n_in: int) -> int:
    """Cycles run_stream counts at full rate for ``n_in`` input beats, derived from the code.

    ``kg = lcm / lanes_in`` (gather factor), ``ks = lcm / lanes_out`` (split factor),
    ``n_out = n_in * lanes_in / lanes_out``. Input beat j transfers in cycle j.

    * wire (kg = ks = 1): the output is the input, ``n_in``;
    * Gather alone: word w completes with input beat (w+1)kg - 1 and is valid one cycle
      later, so the last word leaves in cycle n_in: ``n_in + 1`` (= beats + latency 1);
    * Split alone: a word is taken in the cycle its predecessor's last part leaves, so the
      output runs back to back from cycle 1: ``n_out + 1`` (= out beats + latency 1);
    * Gather then Split, input side the bottleneck (kg >= ks): every word is taken as soon as it
      is valid (the previous one is out by then), the last in cycle n_in, then its ks parts
      leave: ``n_in + ks + 1`` (= in beats + latency 2 + ks - 1);
    * Gather then Split, output side the bottleneck (ks > kg): the split's output never starves
      once the first word (valid in cycle kg) is taken: ``n_out + kg + 1``
      (= out beats + latency 2 + kg - 1).

    So the wider stream side runs at one beat per cycle; the fill/drain beyond the latency is
    the part of the lcm-wide word that the narrow side must wait for (kg - 1 or ks - 1 beats).
    """
    kg, ks = conv.wide // conv.lanes_in, conv.wide // conv.lanes_out
    n_out = n_in * conv.lanes_in // conv.lanes_out
    if kg == 1 and ks == 1:
        return n_in
    if ks == 1:
        return n_in + 1
    if kg == 1:
        return n_out + 1
    if kg >= ks:
        return n_in + ks + 1
    return n_out + kg + 1


@pytest.mark.parametrize("channels,lanes_in,lanes_out", WIDTH_CASES)
@pytest.mark.parametrize("source,sink", PAIRS[:4])
def test_width_converter_random(channels, lanes_in, lanes_out, source, sink):
    dut = WidthConverter(bits=8, channels=channels, lanes_in=lanes_in, lanes_out=lanes_out)
    assert dut.wide == math.lcm(lanes_in, lanes_out)
    rng = np.random.default_rng([31, lanes_in, lanes_out, bench.PATTERNS.index(source)])
    frames = random_frames(rng, (2, 2, channels), frames=2)
    got, _ = run_frames(dut, frames, lanes_in, lanes_out, source=source, sink=sink, seed=lanes_in * 7 + lanes_out)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


@pytest.mark.parametrize("factor,lanes", [(2, 1), (3, 2), (4, 3)])
@pytest.mark.parametrize("source,sink", PAIRS[:4])
def test_gather_and_split_random(factor, lanes, source, sink):
    channels = factor * lanes * 2
    rng = np.random.default_rng([32, factor, lanes])
    frames = random_frames(rng, (2, 1, channels), frames=2, bits=6)
    got, _ = run_frames(Gather(bits=6, lanes=lanes, factor=factor), frames, lanes, lanes * factor,
                        source=source, sink=sink, seed=factor)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)
    got, _ = run_frames(Split(bits=6, lanes=lanes, factor=factor), frames, lanes * factor, lanes,
                        source=source, sink=sink, seed=factor + 1)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


def test_width_converter_extremes_and_single_word_frames():
    """All-max/all-min frames, and frames of a single lcm-wide word (first and last together)."""
    dut = WidthConverter(bits=8, channels=6, lanes_in=2, lanes_out=3)
    frames = [np.full((1, 1, 6), 127), np.full((1, 1, 6), -128), np.array([[[127, -128, 0, -1, 1, -128]]])]
    got, _ = run_frames(dut, frames, 2, 3, source="random", sink="random", seed=2)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)
    dut = WidthConverter(bits=8, channels=6, lanes_in=3, lanes_out=2)
    got, _ = run_frames(dut, frames, 3, 2, source="bursty", sink="periodic", seed=3)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


@pytest.mark.parametrize("channels,lanes_in,lanes_out", WIDTH_CASES)
def test_width_converter_throughput(channels, lanes_in, lanes_out):
    dut = WidthConverter(bits=8, channels=channels, lanes_in=lanes_in, lanes_out=lanes_out)
    rng = np.random.default_rng(33)
    frames = random_frames(rng, (2, 2, channels), frames=2)
    got, cycles = run_frames(dut, frames, lanes_in, lanes_out)
    n_in = 2 * 2 * 2 * channels // lanes_in
    expected = width_cycles(dut, n_in)
    print(f"WidthConverter C={channels} {lanes_in}->{lanes_out} (latency {dut.latency}), {n_in} beats in, "
          f"{n_in * lanes_in // lanes_out} out: measured {cycles} analytic {expected}")
    assert cycles == expected
    # The wider side (more beats) streams at one beat per cycle.
    assert cycles <= max(n_in, n_in * lanes_in // lanes_out) + dut.latency + dut.wide
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


def test_width_converter_latency():
    for lanes_in, lanes_out, latency in ((3, 3, 0), (2, 4, 1), (4, 2, 1), (4, 6, 2)):
        dut = WidthConverter(bits=8, channels=12, lanes_in=lanes_in, lanes_out=lanes_out)
        Fragment.get(dut, None)       # elaborates (and marks the Gather/Split inside as used)
        assert dut.latency == latency


def test_width_converter_refusals():
    with pytest.raises(ValueError, match="lanes_in must be a positive divisor of channels 12, not 5"):
        WidthConverter(bits=8, channels=12, lanes_in=5, lanes_out=3)
    with pytest.raises(ValueError, match="lanes_out must be a positive divisor of channels 12, not 8"):
        WidthConverter(bits=8, channels=12, lanes_in=3, lanes_out=8)
    with pytest.raises(ValueError, match="lanes_in must be a positive divisor"):
        WidthConverter(bits=8, channels=12, lanes_in=0, lanes_out=3)
    with pytest.raises(ValueError, match="lanes_out must be a positive divisor"):
        WidthConverter(bits=8, channels=12, lanes_in=3, lanes_out=2.0)


# -- SkipFIFO -----------------------------------------------------------------------------------

@pytest.mark.parametrize("source,sink", PAIRS)
@pytest.mark.parametrize("depth", [3, 4, 40])
def test_skip_fifo_random(source, sink, depth):
    from convgen.hdl.engine import SkipFIFO
    rng = np.random.default_rng([13, depth, bench.PATTERNS.index(source), bench.PATTERNS.index(sink)])
    frames = random_frames(rng, (3, 5, 4), frames=3)
    got, _ = run_frames(SkipFIFO(beat_layout(8, 2), depth), frames, 2, 2, source=source, sink=sink, seed=6)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)


@pytest.mark.parametrize("depth", [3, 4, 9])
def test_skip_fifo_capacity_latency_throughput(depth):
    """Exactly ``depth`` beats go in while the output is held (``level`` counts them, and
    ``i.ready`` is a register); a beat written into an empty FIFO is offered 3 cycles later
    (``SkipFIFO.latency``); with both sides always ready one beat passes per cycle from
    depth 4 (a memory of two entries); at depth 3 (one entry) every other cycle."""
    from convgen.hdl.engine import SkipFIFO
    dut = SkipFIFO(beat_layout(8, 1), depth)
    seen = {}

    async def bench_(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        accepted = []
        for k in range(3 * depth + 10):                  # the output held: fill
            ctx.set(dut.i.payload, {"data": [k % 100], "first": 0, "last": 0})
            ready = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 1)
            assert ctx.get(dut.i.ready) == ready         # registered: the sink's ready does not reach it
            ctx.set(dut.o.ready, 0)
            if ready:
                accepted.append(k % 100)
            await ctx.tick()
        seen["accepted"], seen["level"] = accepted, ctx.get(dut.level)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        out = []
        for _ in range(depth + 5):                       # drain in order
            if ctx.get(dut.o.valid):
                out.append(ctx.get(dut.o.payload.data[0]))
            await ctx.tick()
        seen["drained"] = out
        # empty: one write, offered `latency` cycles later
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"data": [77], "first": 1, "last": 0})
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        wait = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            wait += 1
        seen["latency"] = wait
        await ctx.tick()
        # both sides always ready: n beats in, n out, one per cycle after the latency
        ctx.set(dut.i.valid, 1)
        n, sent, got, cycles = 50, 0, 0, 0
        while got < n and cycles < 4 * n:
            ctx.set(dut.i.valid, sent < n)
            sent += sent < n and ctx.get(dut.i.ready)
            got += ctx.get(dut.o.valid)
            await ctx.tick()
            cycles += 1
        seen["cycles"] = cycles

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench_)
    sim.run()
    assert len(seen["accepted"]) == depth and seen["level"] == depth
    assert seen["drained"] == seen["accepted"]
    assert seen["latency"] == SkipFIFO.latency == 3
    assert seen["cycles"] == (50 if depth >= 4 else 2 * 50 - 1) + SkipFIFO.latency


def test_skip_fifo_refusals():
    from convgen.hdl.engine import SkipFIFO
    with pytest.raises(ValueError, match="skip FIFO depth must be >= 3, not 2"):
        SkipFIFO(beat_layout(8, 1), 2)
