# amaranth: UnusedElaboratable=no
"""cocotb on Verilator and Icarus: every example and a matrix of generated engines, bit-exact
against the golden model under random stalls (through convgen.simulate, which builds with
cocotb_tools.runner into one build directory per parameter set)."""

from pathlib import Path

import numpy as np
import pytest

from convgen.config import Depthwise
from convgen.cost import estimate
from convgen.hdl.schedule import window_schedule, window_tail_wait
from convgen.loader import config_from_dict, load_config
from convgen.sim import golden
from convgen.simulate import SimulatorUnavailable, simulate

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))

pytestmark = pytest.mark.slow


def run(config, simulator, frames=2, stall=0.5, seed=7):
    rng = np.random.default_rng(seed)
    inputs = np.stack([golden.random_input(config.input, rng) for _ in range(frames)])
    try:
        result = simulate(config, inputs, simulator=simulator, stall=stall, seed=seed)
    except SimulatorUnavailable as error:
        pytest.skip(str(error))
    expected = np.stack([golden.run(config, f) for f in inputs])
    np.testing.assert_array_equal(result.outputs, expected)
    assert result.passed, (result.mismatches, result.flag_errors)
    print(f"{config.name} on {simulator}: {result.total_cycles} cycles for {frames} frames, stall {stall}")
    return result


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example(path, simulator):
    run(load_config(path), simulator, frames=2 if simulator == "verilator" else 1)


def generated(kernel, stride, dilation, groups, lanes):
    name = f"gen_k{kernel}_s{stride}_d{dilation}_g{groups}_l{lanes}"
    stages = [{"kind": "pointwise", "out_channels": 8, "groups": groups, "pe": 4, "simd": 8 // groups,
               "activation": "relu"}]
    if groups > 1:
        stages.append({"kind": "shuffle", "groups": groups})
    stages += [{"kind": "depthwise", "kernel": kernel, "stride": stride, "dilation": dilation,
                "lanes": lanes, "activation": "relu6"},
               {"kind": "pointwise", "out_channels": 8, "groups": groups, "pe": 2, "simd": 8 // groups}]
    if stride == 1:
        stages.append({"kind": "add", "skip": "input"})
    return config_from_dict({"name": name, "random": {"seed": kernel * 10 + stride},
                             "input": {"height": 7, "width": 8, "channels": 8, "lanes": 8 // groups},
                             "stage": stages})


MATRIX = [(3, 1, 1, 1, 2), (5, 1, 1, 2, 4), (3, 2, 1, 1, 8), (3, 1, 2, 2, 2), (5, 2, 2, 4, 1), (3, 2, 2, 1, 4)]


@pytest.mark.parametrize("kernel,stride,dilation,groups,lanes", MATRIX,
                         ids=[f"k{k}-s{s}-d{d}-g{g}-l{l}" for k, s, d, g, l in MATRIX])
def test_generated_on_verilator(kernel, stride, dilation, groups, lanes):
    run(generated(kernel, stride, dilation, groups, lanes), "verilator")


@pytest.mark.parametrize("kernel,stride,dilation,groups,lanes", MATRIX[:3],
                         ids=[f"k{k}-s{s}-d{d}-g{g}-l{l}" for k, s, d, g, l in MATRIX[:3]])
def test_generated_on_icarus(kernel, stride, dilation, groups, lanes):
    run(generated(kernel, stride, dilation, groups, lanes), "icarus", frames=1)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_frame_period(path):
    """Four frames at full rate on Verilator: the periods between frames' last output beats
    are the cost model's frame period exactly (window tails overlap the next frame), but
    for the last frame, whose tails first wait for a next frame (at most each window's
    ``tail_wait``); the first frame is the model's one-frame count plus only the pipeline
    fill; on stride-1 examples the slowest stage is busy >= 98% of the period (issue 5)."""
    config = load_config(path)
    result = run(config, "verilator", frames=4, stall=0.0, seed=11)
    ends = result.frame_ends
    assert len(ends) == 4 and ends[-1] == result.total_cycles
    periods = [b - a for a, b in zip(ends, ends[1:])]
    fill = ends[0] - result.analytic_cycles
    cost = estimate(config)
    slowest = max((st for st in cost.stages if st.multipliers), key=lambda st: st.busy_cycles)
    busy = slowest.busy_cycles / periods[0]             # the slowest MAC stage's share
    waits = sum(window_tail_wait(config, stage) for stage in config.stages
                if isinstance(stage, Depthwise) and window_schedule(stage).overlaps)
    print(f"{config.name}: frame periods {periods}, analytic period {result.analytic_period}, one frame "
          f"{result.analytic_cycles} + fill {fill}; slowest stage {slowest.name} busy {100 * busy:.1f}%; "
          f"tail waits {waits}")
    assert periods[0] == periods[1] == result.analytic_period
    assert result.analytic_period <= periods[2] <= result.analytic_period + waits
    assert fill > 0
    if all(getattr(stage, "stride", 1) == 1 for stage in config.stages):
        assert busy >= 0.98
