# amaranth: UnusedElaboratable=no
"""cocotb on Verilator and Icarus: every example and a matrix of generated engines, bit-exact
against the golden model under random stalls (through convgen.simulate, which builds with
cocotb_tools.runner into one build directory per parameter set)."""

from pathlib import Path

import numpy as np
import pytest

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


#: Examples whose steady-state period is below the cost model's cycles per frame (measured:
#: dws_layer_up5k 16,506 against 16,672: its depthwise fill, 288 cycles, partly overlaps).
PERIOD_BELOW_ANALYTIC = {"dws_layer_up5k"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_frame_period(path):
    """Three frames at full rate on Verilator: the period between frames' last output beats is
    the cost model's cycles per frame exactly; the first frame adds only the pipeline fill."""
    config = load_config(path)
    result = run(config, "verilator", frames=3, stall=0.0, seed=11)
    ends = result.frame_ends
    assert len(ends) == 3 and ends[-1] == result.total_cycles
    periods = [b - a for a, b in zip(ends, ends[1:])]
    fill = ends[0] - result.analytic_cycles
    print(f"{config.name}: frame periods {periods}, analytic {result.analytic_cycles}, first-frame fill {fill}")
    assert periods[0] == periods[1] and fill > 0
    if config.name in PERIOD_BELOW_ANALYTIC:
        # the window's fill before a slower stage overlaps the previous frame in steady state:
        # the cost model's count (which adds it) is then an upper bound, not the period
        assert periods[0] < result.analytic_cycles
    else:
        assert periods[0] == result.analytic_cycles
