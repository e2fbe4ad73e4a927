"""``convgen sim``: run an engine's gateware on frames and check every output beat.

The engine (:class:`convgen.hdl.engine.Engine`) runs in a simulator, frames go in
back to back, and every output beat is compared with the golden model. The report
gives per-frame progress, mismatches (with the first mismatching pixel and channel),
cycles per frame against the analytic count, MAC-unit utilization and the simulator's
speed. The ``amaranth`` simulator runs the design directly in Python; the
Verilog simulators (cocotb on Verilator and Icarus) are being added (issue 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import EngineConfig

__all__ = ["SimResult", "FrameResult", "simulate", "format_report"]

SIMULATORS = ("amaranth",)


@dataclass
class FrameResult:
    index: int
    mismatches: int
    first_mismatch: tuple | None     # (row, column, channel, got, expected)
    cycles: int                      # from this frame's first input beat to its last output beat


@dataclass
class SimResult:
    config: EngineConfig
    simulator: str
    frames: list = field(default_factory=list)
    outputs: np.ndarray | None = None
    total_cycles: int = 0
    seconds: float = 0.0
    analytic_cycles: int = 0
    stall: float = 0.0

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.frames)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def _compare(index, got, expected) -> FrameResult:
    diff = np.argwhere(got != expected)
    first = None
    if diff.size:
        y, x, c = (int(v) for v in diff[0])
        first = (y, x, c, int(got[y, x, c]), int(expected[y, x, c]))
    return FrameResult(index, int(len(diff)), first, 0)


def simulate(config: EngineConfig, frames: np.ndarray, *, simulator: str = "amaranth", stall: float = 0.0,
             seed: int = 0, expected: np.ndarray | None = None, progress=None) -> SimResult:
    """Run ``frames`` ((N, H, W, C) integers) through the engine; compare with ``expected``
    (default: the golden model). ``stall`` is the probability that the source idles and
    the sink holds off on any cycle (0: full rate)."""
    from .cost import estimate
    from .hdl.engine import Engine
    from .sim import bench, golden

    if simulator not in SIMULATORS:
        raise ValueError(f"--simulator must be one of {', '.join(SIMULATORS)} for now, not {simulator!r}")
    if not 0.0 <= stall < 1.0:
        raise ValueError(f"--stall must be a probability in [0, 1), not {stall}")
    if expected is None:
        expected = np.stack([golden.run(config, f) for f in frames])
    dut = Engine(config)
    beats = [b for f in frames for b in bench.frame_beats(f, config.input_lanes)]
    per_frame = expected[0].size // dut.output_lanes
    pattern = stall if stall else "none"
    started = time.perf_counter()
    out, cycles = bench.run_stream(dut, beats, per_frame * len(frames), source=pattern, sink=pattern,
                                   seed=seed)
    seconds = time.perf_counter() - started
    result = SimResult(config, simulator, total_cycles=cycles, seconds=seconds, stall=stall,
                       analytic_cycles=estimate(config).cycles_per_frame)
    outputs = []
    for k in range(len(frames)):
        got = bench.beats_frame(out[k * per_frame:(k + 1) * per_frame], expected[k].shape)
        outputs.append(got)
        frame = _compare(k, got, expected[k])
        result.frames.append(frame)
        if progress:
            progress(frame)
    result.outputs = np.stack(outputs)
    if len(frames) == 1:
        result.frames[0].cycles = cycles
    return result


def format_report(result: SimResult) -> str:
    from .cost import estimate
    config = result.config
    est = estimate(config)
    n = len(result.frames)
    macs_per_frame = est.macs
    lines = [f"convgen sim: {config.name} on {result.simulator}, {n} frame(s), "
             f"stall probability {result.stall:g}"]
    lines.append(f"  frames: {n}   mismatching elements: {result.mismatches}   "
                 f"{'PASS' if result.passed else 'FAIL'}")
    for frame in result.frames:
        if frame.first_mismatch:
            y, x, c, got, want = frame.first_mismatch
            lines.append(f"  frame {frame.index}: {frame.mismatches} mismatches; first at pixel "
                         f"(row {y}, column {x}), channel {c}: engine {got}, golden {want}")
    per_frame = result.total_cycles / n
    lines.append(f"  cycles: {result.total_cycles:,} in all, {per_frame:,.0f} per frame; analytic "
                 f"{result.analytic_cycles:,} per frame (cost model, without pipeline latency)")
    if result.stall == 0:
        lines.append(f"  MAC-unit utilization: {100 * macs_per_frame * n / (result.total_cycles * est.multipliers):.1f}% "
                     f"({est.multipliers} multipliers, {macs_per_frame:,} MACs per frame)")
    lines.append(f"  simulated {result.total_cycles / result.seconds:,.0f} cycles/s "
                 f"({result.seconds:.1f} s)")
    return "\n".join(lines)
