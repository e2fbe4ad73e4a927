"""Analytic cost model: MACs, parameters, line-buffer bits, accumulator widths, cycles.

Formulas (W x H input, C in and M out channels, K kernel, g groups, d dilation,
stride s, output H' x W'):

* pointwise (1x1, grouped): MACs ``C * M * H * W / g``, parameters ``C * M / g``;
* depthwise: MACs ``K^2 * C * H' * W'`` (``H' = H`` at stride 1), parameters ``K^2 * C``;
* line buffer of a KxK window: ``(K - 1) * d * W * C * bits`` — the rows the
  window spans above the current one;
* cycles: every stage is busy ``pixels x cycles per pixel`` per frame, where a
  depthwise stage or a stream port moves one beat of ``lanes`` channels per cycle
  (``C / lanes`` cycles per pixel) and a pointwise array does ``pe * simd`` MACs
  per cycle (``MACs per pixel / (pe * simd)``, or ``C / simd`` input beats if more).
  A frame takes the slowest stage's
  busy cycles, plus the fill of every window stage before it (input beats it
  swallows before its first output) and the tail of every window stage from it
  on (virtual slots after the last input, in which the outputs that wait on 'same'
  bottom padding leave; see convgen.hdl.schedule),
  plus the gateware's pipeline latency (not modelled here; the engine reports it).
  Frames streamed back to back start one *frame period* apart: the slowest stage's
  busy cycles plus the fill and tail of only those window stages whose tail cannot
  overlap the next frame (``WindowSchedule.overlaps``; every 'same' window at stride 1
  overlaps).

Biases are not counted as parameters (one per output channel; reported apart).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .config import Add, ConvStage, Depthwise, EngineConfig, Pointwise, Shuffle
from .hdl.schedule import pointwise_cycles_per_pixel, window_schedule

__all__ = ["StageCost", "EngineCost", "estimate", "format_table", "to_json", "window_fill_tail"]


@dataclass(frozen=True)
class StageCost:
    """Cost of one stage (or of the input port, kind ``port``) per frame."""
    name: str
    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    macs: int
    params: int
    biases: int
    multipliers: int          # parallel MAC units instantiated
    dsp_multipliers: int      # of those, built in DSP blocks (the rest in logic)
    requant_multipliers: bool  # False when every requantization scale is a power of two
    line_buffer_bits: int
    accumulator_bits: int | None
    cycles_per_pixel: int     # per input pixel of the stage
    busy_cycles: int
    fill_cycles: int          # input beats swallowed before the first output
    tail_cycles: int          # output beats emitted after the last input
    overlaps: bool = False    # a window whose tail overlaps the next frame's first pixels

    @property
    def utilization(self) -> float:
        """MACs per busy cycle over the MAC units (1.0 when the array never idles)."""
        if not self.multipliers:
            return 0.0
        return self.macs / (self.busy_cycles * self.multipliers)


@dataclass(frozen=True)
class EngineCost:
    name: str
    stages: tuple[StageCost, ...]    # the input port first
    bottleneck: str                  # the stage with the most busy cycles (first of equals)
    bottleneck_cycles: int
    fill_cycles: int                 # fill of the window stages before the bottleneck
    tail_cycles: int                 # tail of the window stages from the bottleneck on
    stream_fill_cycles: int = 0      # ... of those whose frames do not overlap
    stream_tail_cycles: int = 0

    @property
    def cycles_per_frame(self) -> int:
        """Analytic cycles of one frame, source always valid and sink always ready,
        without the pipeline latency."""
        return self.bottleneck_cycles + self.fill_cycles + self.tail_cycles

    @property
    def frame_period(self) -> int:
        """Cycles between back-to-back frames at full rate (the steady state of a stream):
        window stages whose tail overlaps the next frame cost no fill or tail."""
        return self.bottleneck_cycles + self.stream_fill_cycles + self.stream_tail_cycles

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.stages)

    @property
    def params(self) -> int:
        return sum(s.params for s in self.stages)

    @property
    def multipliers(self) -> int:
        return sum(s.multipliers for s in self.stages)

    @property
    def dsp_multipliers(self) -> int:
        """MAC multipliers in DSP blocks (requantizers add their own, see ``convgen synth``)."""
        return sum(s.dsp_multipliers for s in self.stages)

    @property
    def line_buffer_bits(self) -> int:
        return sum(s.line_buffer_bits for s in self.stages)

    @property
    def mac_utilization(self) -> float:
        """Useful MACs over MAC-unit cycles for one frame."""
        return self.macs / (self.cycles_per_frame * self.multipliers) if self.multipliers else 0.0

    @property
    def stream_mac_utilization(self) -> float:
        """Useful MACs over MAC-unit cycles per frame period (frames back to back)."""
        return self.macs / (self.frame_period * self.multipliers) if self.multipliers else 0.0


def window_fill_tail(stage: Depthwise) -> tuple[int, int]:
    """``(fill, tail)`` in pixels of a window stage, from its schedule
    (:class:`convgen.hdl.schedule.WindowSchedule`): ``fill`` counts the input pixels up
    to the slot of the first output, ``tail`` the virtual slots after the last input in
    which the outputs that wait on bottom padding are emitted."""
    schedule = window_schedule(stage)
    return schedule.fill, schedule.tail


def _stage_cost(stage) -> StageCost:
    h, w, c = stage.input.shape
    pixels = h * w
    macs = params = biases = multipliers = line_bits = 0
    fill = tail = 0
    overlaps = False
    requant_mults = False
    acc_bits = None
    if isinstance(stage, Pointwise):
        m, g = stage.output.channels, stage.groups
        macs, params = c * m * pixels // g, c * m // g
        multipliers = stage.pe * stage.simd
        cycles_per_pixel = pointwise_cycles_per_pixel(c, m, g, stage.pe, stage.simd)
    elif isinstance(stage, Depthwise):
        k = stage.kernel
        macs = k * k * c * stage.out_height * stage.out_width
        params = k * k * c
        multipliers = k * k * stage.lanes
        line_bits = (k - 1) * stage.dilation * w * c * stage.input.bits
        cycles_per_pixel = c // stage.lanes
        fill_px, tail_px = window_fill_tail(stage)
        fill, tail = fill_px * cycles_per_pixel, tail_px * cycles_per_pixel
        overlaps = window_schedule(stage).overlaps
    elif isinstance(stage, (Shuffle, Add)):
        cycles_per_pixel = c // stage.lanes
        requant_mults = isinstance(stage, Add)
    else:
        raise TypeError(f"unknown stage {stage!r}")
    if isinstance(stage, ConvStage):
        biases = stage.output.channels
        acc_bits = stage.accumulator_bits
        requant_mults = not stage.requant_is_power_of_two
    in_dsp = multipliers if getattr(stage, "multipliers", "dsp") == "dsp" else 0
    return StageCost(stage.name, stage.kind, stage.input.shape, stage.output.shape, macs, params, biases,
                     multipliers, in_dsp, requant_mults, line_bits, acc_bits, cycles_per_pixel,
                     pixels * cycles_per_pixel, fill, tail, overlaps)


def estimate(config: EngineConfig) -> EngineCost:
    """The cost model of an engine (see the module docstring for the formulas)."""
    spec = config.input
    beats = spec.channels // config.input_lanes
    port = StageCost("input", "port", spec.shape, spec.shape, 0, 0, 0, 0, 0, False, 0, None, beats,
                     spec.height * spec.width * beats, 0, 0)
    stages = (port, *(_stage_cost(s) for s in config.stages))
    slowest = max(range(len(stages)), key=lambda i: stages[i].busy_cycles)   # first of equals
    before, after = stages[:slowest], stages[slowest:]
    return EngineCost(config.name, stages, stages[slowest].name, stages[slowest].busy_cycles,
                      sum(s.fill_cycles for s in before), sum(s.tail_cycles for s in after),
                      sum(s.fill_cycles for s in before if not s.overlaps),
                      sum(s.tail_cycles for s in after if not s.overlaps))


def to_json(cost: EngineCost) -> dict:
    """A JSON-ready dict of the whole cost model."""
    return {
        "name": cost.name,
        "stages": [{**asdict(s), "utilization": round(s.utilization, 6)} for s in cost.stages],
        "total": {"macs": cost.macs, "params": cost.params, "multipliers": cost.multipliers,
                  "dsp_multipliers": cost.dsp_multipliers,
                  "line_buffer_bits": cost.line_buffer_bits, "cycles_per_frame": cost.cycles_per_frame,
                  "frame_period": cost.frame_period,
                  "bottleneck": cost.bottleneck, "bottleneck_cycles": cost.bottleneck_cycles,
                  "fill_cycles": cost.fill_cycles, "tail_cycles": cost.tail_cycles,
                  "mac_utilization": round(cost.mac_utilization, 6),
                  "stream_mac_utilization": round(cost.stream_mac_utilization, 6)},
    }


def format_table(cost: EngineCost) -> str:
    """A readable table: one row per stage, then the totals."""
    def shape(s):
        return "x".join(map(str, s))

    header = ("stage", "kind", "in", "out", "MACs", "params", "mults", "line buf bits",
              "acc bits", "cyc/px", "busy cycles")
    rows = [header]
    for s in cost.stages:
        rows.append((s.name, s.kind, shape(s.in_shape), shape(s.out_shape), f"{s.macs:,}",
                     f"{s.params:,}", str(s.multipliers), f"{s.line_buffer_bits:,}",
                     "-" if s.accumulator_bits is None else str(s.accumulator_bits),
                     str(s.cycles_per_pixel), f"{s.busy_cycles:,}"))
    rows.append(("total", "", "", "", f"{cost.macs:,}", f"{cost.params:,}", str(cost.multipliers),
                 f"{cost.line_buffer_bits:,}", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {4, 5, 6, 7, 8, 9, 10}

    def line(r):
        return "  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i])
                         for i, v in enumerate(r)).rstrip()

    out = [f"convgen cost model: {cost.name}", line(rows[0]), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows[1:-1]]
    out += [line(tuple("-" * w for w in widths)), line(rows[-1]), ""]
    out.append(f"cycles per frame: {cost.cycles_per_frame:,} = bottleneck '{cost.bottleneck}' "
               f"{cost.bottleneck_cycles:,} + window fill {cost.fill_cycles:,} + padding tail "
               f"{cost.tail_cycles:,} (plus the pipeline latency the engine reports)")
    out.append(f"frames back to back: one every {cost.frame_period:,} cycles (window tails that "
               f"overlap the next frame cost nothing)")
    out.append(f"MAC-unit utilization over one frame: {100 * cost.mac_utilization:.1f}%, "
               f"over a stream: {100 * cost.stream_mac_utilization:.1f}%")
    return "\n".join(out)


def dumps(cost: EngineCost) -> str:
    return json.dumps(to_json(cost), indent=2)
