# amaranth: UnusedElaboratable=no
"""The composed engine: every example bit-exact against the golden model in simulation."""

from pathlib import Path

import numpy as np
import pytest

from convgen.hdl.engine import Engine
from convgen.loader import load_config
from convgen.sim import bench, golden

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
SLOW = {"mobilenetv2_block", "mobilenetv2_block_s2"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p
                                  for p in EXAMPLES], ids=lambda p: p.stem)
def test_example_engine_is_bit_exact(path):
    config = load_config(path)
    frame = golden.random_input(config.input, np.random.default_rng(3))
    expected = golden.run(config, frame)
    dut = Engine(config)
    out, cycles = bench.run_stream(dut, bench.frame_beats(frame, config.input_lanes),
                                   expected.size // dut.output_lanes, source="random", sink="bursty", seed=5)
    np.testing.assert_array_equal(bench.beats_frame(out, expected.shape), expected)


def test_two_frames_back_to_back_under_stalls():
    config = load_config(Path(__file__).parents[1] / "examples" / "shufflenet_unit.toml")
    rng = np.random.default_rng(11)
    frames = [golden.random_input(config.input, rng) for _ in range(2)]
    expected = [golden.run(config, f) for f in frames]
    dut = Engine(config)
    beats = bench.frame_beats(frames[0], config.input_lanes) + bench.frame_beats(frames[1], config.input_lanes)
    per = expected[0].size // dut.output_lanes
    out, cycles = bench.run_stream(dut, beats, 2 * per, source="periodic", sink="random", seed=2)
    for k in range(2):
        np.testing.assert_array_equal(bench.beats_frame(out[k * per:(k + 1) * per], expected[k].shape), expected[k])


def test_engine_refuses_what_is_not_a_config():
    with pytest.raises(TypeError, match="config must be an EngineConfig"):
        Engine({"input": {}})
