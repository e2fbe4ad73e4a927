# amaranth: UnusedElaboratable=no
"""Skip FIFO sizing: the derived depth never holds off the fork at full rate; one less does."""

from pathlib import Path

import numpy as np
import pytest

from convgen.hdl import skip
from convgen.hdl.beats import SkidBuffer
from convgen.hdl.engine import Engine, Fork
from convgen.hdl.requant import Requantizer
from convgen.hdl.window import WindowGenerator
from convgen.loader import config_from_dict, load_config
from convgen.sim import bench, golden

EXAMPLES = Path(__file__).parents[1] / "examples"


def residual(h, w, c, lanes, stages):
    return config_from_dict({"random": {"seed": 1}, "input": {"height": h, "width": w, "channels": c, "lanes": lanes},
                             "stage": stages + [{"kind": "add", "skip": "input", "name": "res"}]})


# Paths that keep up with the fork, and paths a folded stage or a converter throttles.
CASES = [
    pytest.param(lambda: residual(4, 6, 2, 1, [{"kind": "depthwise", "lanes": 1}]), id="dw-3x3-lanes1"),
    pytest.param(lambda: residual(4, 8, 4, 4, [{"kind": "depthwise", "lanes": 4}]), id="dw-3x3-lanes4"),
    pytest.param(lambda: residual(6, 8, 4, 2, [{"kind": "depthwise", "lanes": 2, "kernel": 5}]), id="dw-5x5"),
    pytest.param(lambda: residual(6, 8, 4, 2, [{"kind": "depthwise", "lanes": 2, "dilation": 2}]), id="dw-dilation2"),
    pytest.param(lambda: residual(3, 4, 4, 4, [{"kind": "pointwise", "out_channels": 4, "pe": 4, "simd": 4}]),
                 id="pw-keeps-up"),
    pytest.param(lambda: residual(3, 4, 4, 1, [{"kind": "pointwise", "out_channels": 4, "pe": 1, "simd": 1}]),
                 id="pw-folded"),
    pytest.param(lambda: residual(3, 4, 4, 4, [{"kind": "pointwise", "out_channels": 4, "pe": 2, "simd": 4}]),
                 id="pw-split-to-add"),
    pytest.param(lambda: residual(3, 4, 4, 1, [{"kind": "pointwise", "out_channels": 4, "pe": 1, "simd": 2}]),
                 id="gather-into-pw-folded"),
    pytest.param(lambda: residual(4, 6, 4, 2, [{"kind": "pointwise", "out_channels": 8, "pe": 4, "simd": 2},
                                               {"kind": "depthwise", "lanes": 4},
                                               {"kind": "pointwise", "out_channels": 4, "pe": 2, "simd": 4}]),
                 id="pw-dw-pw"),
    pytest.param(lambda: residual(4, 6, 8, 4, [
        {"kind": "pointwise", "out_channels": 8, "groups": 2, "pe": 4, "simd": 4},
        {"kind": "shuffle", "groups": 2}, {"kind": "depthwise", "lanes": 4},
        {"kind": "pointwise", "out_channels": 8, "groups": 2, "pe": 4, "simd": 4}]), id="gpw-shuffle-dw-gpw"),
    pytest.param(lambda: residual(4, 6, 4, 4, [{"kind": "depthwise", "lanes": 2}]), id="split-into-dw"),
    pytest.param(lambda: load_config(EXAMPLES / "shufflenet_unit.toml"), id="shufflenet_unit"),
    pytest.param(lambda: load_config(EXAMPLES / "mobilenetv2_block.toml"), id="mobilenetv2_block",
                 marks=pytest.mark.slow),
]


def run_with_depth(config, depth, seed=0, frames=skip.SIZING_FRAMES, timeline=None):
    """Simulate ``frames`` frames back to back at full rate with a skip FIFO of ``depth``
    (the frames the sizing models); returns (output frames, expected frames, cycles,
    writes the FIFO refused). ``timeline``: a dict that gets the FIFO's ``write`` and
    ``read`` cycles (arrays, cycle 0 the first input beat's)."""
    rng = np.random.default_rng(seed)
    inputs = [golden.random_input(config.input, rng) for _ in range(frames)]
    expected = np.stack([golden.run(config, x) for x in inputs])
    dut = Engine(config, skip_depths={"input": depth})
    refused = {"n": 0}
    writes, reads = [], []

    async def watch(ctx):
        fifo = dut.skip_fifos["input"]
        cycle = 0
        while True:
            *_, valid, ready, o_valid, o_ready = await ctx.tick().sample(
                fifo.i.valid, fifo.i.ready, fifo.o.valid, fifo.o.ready)
            refused["n"] += bool(valid and not ready)
            if valid and ready:
                writes.append(cycle)
            if o_valid and o_ready:
                reads.append(cycle)
            cycle += 1

    beats = [b for x in inputs for b in bench.frame_beats(x, config.input_lanes)]
    out, cycles = bench.run_stream(dut, beats, expected.size // dut.output_lanes, extra=watch)
    per_frame = expected[0].size // dut.output_lanes
    got = np.stack([bench.beats_frame(out[f * per_frame:(f + 1) * per_frame], expected[0].shape)
                    for f in range(frames)])
    if timeline is not None:
        timeline.update(write=np.array(writes), read=np.array(reads))
    return got, expected, cycles, refused["n"]


@pytest.mark.parametrize("make", CASES)
def test_derived_depth_is_the_minimum(make):
    config = make()
    sizing = skip.skip_sizing(config, "input")
    assert sizing.exact
    simulated = {}
    got, expected, cycles, refused = run_with_depth(config, sizing.depth, timeline=simulated)
    np.testing.assert_array_equal(got, expected)
    assert refused == 0, f"the FIFO of depth {sizing.depth} refused {refused} writes"
    # The model's timeline is the simulated one, beat by beat (not only its peak).
    write, read, _, _ = skip.skip_timeline(config, "input")
    np.testing.assert_array_equal(simulated["write"], write)
    np.testing.assert_array_equal(simulated["read"], read)
    got_less, _, cycles_less, refused_less = run_with_depth(config, sizing.depth - 1)
    np.testing.assert_array_equal(got_less, expected)          # still correct, only held off
    print(f"depth {sizing.depth}: {cycles} cycles, 0 refused; depth {sizing.depth - 1}: "
          f"{cycles_less} cycles, {refused_less} refused")
    assert refused_less > 0, f"depth {sizing.depth - 1} refused no write: {sizing.depth} is not the minimum"


def test_model_latencies_match_the_gateware():
    assert skip.FORK_LATENCY == Fork.latency
    assert skip.SKID_LATENCY == SkidBuffer.latency
    assert skip.WINDOW_LATENCY == WindowGenerator.latency
    assert skip.REQUANT_LATENCY == Requantizer.latency
    from amaranth.hdl import Fragment
    from convgen.hdl.residual import ResidualAdd
    for bits in (8, 9):           # table lookup, and multiplies above 8 bits
        config = config_from_dict({"random": {"seed": 1}, "input": {"height": 2, "width": 3, "channels": 2,
                                                                  "bits": bits},
                                   "stage": [{"kind": "depthwise", "lanes": 2},
                                             {"kind": "add", "skip": "input"}]})
        add = config.stages[-1]
        unit = ResidualAdd.for_stage(add)
        Fragment.get(unit, None)
        assert skip._add_latency(add) == unit.latency


def test_fifo_depth_for_counts_the_output_register():
    # Entries written every cycle and read 5 cycles later: 5 in flight, of which the
    # memory holds at most 3 when a write comes (the read port's register and the output
    # register hold one each).
    write = np.arange(20)
    read = write + 5
    assert skip.fifo_depth_for(write, read) == 5 + 1


def test_unmodelled_paths_err_on_the_large_side():
    # Input 2 lanes into a depthwise of 4 lanes through a gather: slower than the fork
    # only because of the converter's shape, not a modelled throttling.
    config = residual(4, 6, 4, 1, [{"kind": "depthwise", "lanes": 4},
                                   {"kind": "pointwise", "out_channels": 4, "pe": 1, "simd": 1}])
    sizing = skip.skip_sizing(config, "input")
    if sizing.exact:
        pytest.skip("this path is modelled exactly")
    got, expected, _, refused = run_with_depth(config, sizing.depth)
    np.testing.assert_array_equal(got, expected)
    assert refused == 0


def test_burst_backlog_by_hand():
    from convgen.hdl.schedule import WindowSchedule, burst_backlog
    # 1x1 window, stride 2 on 4x4: outputs leave in slots 0, 2, 8, 10. Inputs one per cycle,
    # the next stage takes a pixel every 10 cycles: by cycle 10 four have arrived and only
    # the first has been taken (at 10), so 3 wait; the next stage itself holds `held`.
    s = WindowSchedule(4, 4, 1, 2, 1, 0, 0, 2, 2)
    assert list(s.emission_slots.reshape(-1)) == [0, 2, 8, 10]
    assert burst_backlog(s, 1, 10, held=0, frames=1) == 3
    assert burst_backlog(s, 1, 10, held=2, frames=1) == 1
    assert burst_backlog(s, 1, 2, held=0, frames=1) == 1    # a fast consumer: one waits at a time
    # Two frames (slots 0, 2, 8, 10 and 16, 18, 24, 26), a pixel taken every 4 cycles: the
    # first frame's are taken at 4, 8, 12, 16, the second's at 20, 24, 28, 32; at most two
    # wait (at cycles 2, 10, 18 and 26).
    assert burst_backlog(s, 1, 4, held=0) == 2


def test_burst_fifos_only_where_bursts_outrun_the_next_stage():
    from convgen.hdl.engine import burst_fifo_depths
    assert burst_fifo_depths(load_config(EXAMPLES / "mobilenetv2_block_s2.toml")) == {"dw": 3 * 48}
    for name in ("mobilenetv2_block", "dws_layer", "shufflenet_unit", "dilated_dw"):
        assert burst_fifo_depths(load_config(EXAMPLES / f"{name}.toml")) == {}
