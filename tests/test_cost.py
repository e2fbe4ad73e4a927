"""Cost model: MACs and parameters by the standard formulas, line buffers, cycles."""

import itertools
from pathlib import Path

import pytest

from convgen import cost
from convgen.config import Depthwise, Pointwise
from convgen.loader import config_from_dict, load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))


def formula_macs_params(stage):
    """The seed document's formulas, written from the stage's shapes alone."""
    h, w, c = stage.input.shape
    if isinstance(stage, Pointwise):
        m, g = stage.output.channels, stage.groups
        return c * m * h * w // g, c * m // g
    if isinstance(stage, Depthwise):
        k = stage.kernel
        return k * k * c * stage.output.height * stage.output.width, k * k * c
    return 0, 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_macs_params_and_buffers_follow_the_formulas(path):
    config = load_config(path)
    est = cost.estimate(config)
    assert [s.name for s in est.stages] == ["input"] + [s.name for s in config.stages]
    for stage, sc in zip(config.stages, est.stages[1:]):
        assert (sc.macs, sc.params) == formula_macs_params(stage)
        if isinstance(stage, Depthwise):
            h, w, c = stage.input.shape
            assert sc.line_buffer_bits == (stage.kernel - 1) * stage.dilation * w * c * stage.input.bits
            assert sc.multipliers == stage.kernel ** 2 * stage.lanes
        else:
            assert sc.line_buffer_bits == 0
    assert est.macs == sum(formula_macs_params(s)[0] for s in config.stages)


def test_mobilenetv2_block_numbers():
    """MobileNetV2 block 16x16, 8 -> 48 -> 8: the numbers written out by hand."""
    est = cost.estimate(load_config(EXAMPLES[0].parent / "mobilenetv2_block.toml"))
    by_name = {s.name: s for s in est.stages}
    assert by_name["expand"].macs == 8 * 48 * 16 * 16
    assert by_name["dw"].macs == 3 * 3 * 48 * 16 * 16
    assert by_name["project"].macs == 48 * 8 * 16 * 16
    assert est.params == 8 * 48 + 9 * 48 + 48 * 8
    assert by_name["dw"].line_buffer_bits == 2 * 16 * 48 * 8
    # 8 MACs per cycle on 384 MACs per pixel: 48 cycles on each of 256 pixels.
    assert by_name["expand"].cycles_per_pixel == 48
    assert by_name["expand"].busy_cycles == 48 * 256


def test_seed_worked_example_dws_versus_inverted_residual():
    """Seed 002: 144-channel DW + PW costs 22,032 MACs/pixel v1-style, 8,208 as a v2 block."""
    def per_pixel(doc):
        config = config_from_dict(doc)
        return cost.estimate(config).macs // (config.input.height * config.input.width)

    v1 = {"input": {"height": 4, "width": 4, "channels": 144},
          "stage": [{"kind": "depthwise"}, {"kind": "pointwise", "out_channels": 144}]}
    v2 = {"input": {"height": 4, "width": 4, "channels": 24},
          "stage": [{"kind": "pointwise", "out_channels": 144}, {"kind": "depthwise"},
                    {"kind": "pointwise", "out_channels": 24}]}
    assert per_pixel(v1) == 22_032
    assert per_pixel(v2) == 8_208


def brute_force_fill_tail(stage):
    """Fill and tail by enumerating every tap of every output: an output leaves in the
    slot of its raster-latest tap, counted in padded coordinates without clamping
    (a right-padding tap at column W + j is slot j of the next row)."""
    h, w = stage.input.height, stage.input.width
    top, left = stage.pad_top_bottom[0], stage.pad_left_right[0]
    slots = []
    for oy, ox in itertools.product(range(stage.out_height), range(stage.out_width)):
        taps = [(oy * stage.stride - top + ky * stage.dilation, ox * stage.stride - left + kx * stage.dilation)
                for ky in range(stage.kernel) for kx in range(stage.kernel)]
        slots.append(max(y * w + x for y, x in taps))
    assert slots == sorted(slots), "outputs must leave in raster order"
    return slots[0] + 1, max(0, slots[-1] + 1 - h * w)


@pytest.mark.parametrize("h,w,k,s,d,padding", [
    (16, 16, 3, 1, 1, "same"), (16, 16, 3, 2, 1, "same"), (15, 9, 5, 2, 1, "same"),
    (12, 12, 3, 1, 2, "same"), (10, 7, 7, 3, 1, "same"), (9, 9, 3, 4, 2, "same"),
    (16, 16, 3, 1, 1, "valid"), (11, 13, 5, 2, 2, "valid"), (1, 8, 1, 1, 1, "same"),
    (1, 9, 3, 1, 1, "same"), (5, 1, 3, 2, 1, "same"),
])
def test_window_fill_and_tail_match_brute_force(h, w, k, s, d, padding):
    config = config_from_dict({"input": {"height": h, "width": w, "channels": 2},
                               "stage": [{"kind": "depthwise", "kernel": k, "stride": s,
                                          "dilation": d, "padding": padding}]})
    assert cost.window_fill_tail(config.stages[0]) == brute_force_fill_tail(config.stages[0])


def test_frame_cycles_compose_bottleneck_fill_and_tail():
    # A slow pointwise (1 MAC per cycle) after a depthwise: the depthwise fill comes first,
    # then the pointwise's busy cycles; nothing after it has a tail.
    config = config_from_dict({
        "input": {"height": 6, "width": 6, "channels": 4, "lanes": 4},
        "stage": [{"kind": "depthwise", "lanes": 4},
                  {"kind": "pointwise", "out_channels": 4, "pe": 1, "simd": 1}]})
    est = cost.estimate(config)
    dw, pw = est.stages[1], est.stages[2]
    assert est.bottleneck == "pointwise1"
    assert pw.busy_cycles == 36 * 16
    assert dw.fill_cycles == (1 * 6 + 1 + 1) * 1          # input (1, 1) completes output (0, 0)
    assert est.cycles_per_frame == dw.fill_cycles + pw.busy_cycles
    assert est.mac_utilization == pytest.approx(
        (9 * 4 * 36 + 16 * 36) / (est.cycles_per_frame * (9 * 4 + 1)))
    # Back to back, the 'same' window's fill overlaps the previous frame's tail.
    assert est.frame_period == pw.busy_cycles
    assert est.stream_mac_utilization == pytest.approx((9 * 4 * 36 + 16 * 36) / (36 * 16 * (9 * 4 + 1)))


def test_port_bottleneck_adds_the_padding_tail():
    config = config_from_dict({"input": {"height": 16, "width": 16, "channels": 16},
                               "stage": [{"kind": "depthwise", "lanes": 1}]})
    est = cost.estimate(config)
    assert est.bottleneck == "input" and est.bottleneck_cycles == 256 * 16
    # The last output row leaves in a virtual row after the last input (16 slots), and
    # its last output, whose right taps are padding, in the first slot after that: 17.
    assert est.tail_cycles == 17 * 16 and est.fill_cycles == 0
    assert est.cycles_per_frame == 256 * 16 + 17 * 16
    assert est.frame_period == 256 * 16                   # the tail overlaps the next frame


def test_windows_that_cannot_overlap_keep_fill_and_tail_in_the_period():
    # 'same' 5x5 on a 2x2 frame: the tail (2 rows + 2 pixels past a 2-pixel-wide frame) is
    # longer than the frame, so frames cannot overlap.
    config = config_from_dict({"input": {"height": 2, "width": 2, "channels": 4},
                               "stage": [{"kind": "depthwise", "lanes": 1, "kernel": 5}]})
    est = cost.estimate(config)
    assert est.tail_cycles == (2 * 2 + 2) * 4 and not est.stages[1].overlaps
    assert est.frame_period == est.cycles_per_frame == 4 * 4 + est.tail_cycles


def test_shuffle_add_and_power_of_two_requantizers():
    est = cost.estimate(load_config(EXAMPLES[0].parent / "shufflenet_unit.toml"))
    kinds = {s.name: s for s in est.stages}
    assert kinds["shuffle"].macs == kinds["shuffle"].multipliers == 0
    assert kinds["residual"].requant_multipliers
    pot = cost.estimate(load_config(EXAMPLES[0].parent / "dilated_dw.toml"))
    assert not pot.stages[1].requant_multipliers


def test_json_and_table_agree():
    est = cost.estimate(load_config(EXAMPLES[0].parent / "mobilenetv2_block.toml"))
    data = cost.to_json(est)
    assert data["total"]["macs"] == est.macs
    assert data["total"]["cycles_per_frame"] == est.cycles_per_frame
    assert [s["name"] for s in data["stages"]] == [s.name for s in est.stages]
    table = cost.format_table(est)
    assert f"{est.macs:,}" in table and f"{est.cycles_per_frame:,}" in table
    for s in est.stages:
        assert s.name in table
