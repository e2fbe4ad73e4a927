"""The ``convgen`` command line.

Subcommands: ``check`` (validate a config and summarise it), ``cost`` (the
analytic cost model), ``golden`` (run the NumPy golden model), ``verilog`` (emit the
engine with AXI4-Stream ports), ``sim`` (simulate the RTL against the golden model),
``tensors`` (write an engine's numbers to a tensors file), ``synth`` (yosys/nextpnr with a
report), ``build`` (a board bitstream), ``bench`` (the performance sweep), ``doctor`` (check
the toolchain).
Bad input ends in one line on stderr, ``convgen: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np

from . import __version__

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake reported as one line with exit status 2."""


def _load(path):
    from .loader import load_config
    return load_config(path)


def _cmd_check(args) -> int:
    config = _load(args.config)
    spec = config.input
    print(f"{config.name}: input {'x'.join(map(str, spec.shape))} int{spec.bits} "
          f"(zero point {spec.zero_point}, scale {spec.scale:.6g}), {config.input_lanes} lanes")
    for stage in config.stages:
        out = stage.output
        detail = {
            "pointwise": lambda s: f"groups {s.groups}, pe {s.pe} x simd {s.simd}, {s.activation}",
            "depthwise": lambda s: (f"{s.kernel}x{s.kernel} stride {s.stride} dilation {s.dilation} "
                                    f"{s.padding}, {s.lanes} lanes, {s.activation}"),
            "shuffle": lambda s: f"groups {s.groups}, {s.lanes} lanes",
            "add": lambda s: f"skip {s.skip.name}, {s.activation}",
        }[stage.kind](stage)
        print(f"  {stage.name:<12} {stage.kind:<9} -> {'x'.join(map(str, out.shape))} int{out.bits} "
              f"(zero point {out.zero_point}, scale {out.scale:.6g}); {detail}")
    print("ok")
    return 0


def _cmd_cost(args) -> int:
    from . import cost
    estimate = cost.estimate(_load(args.config))
    print(cost.dumps(estimate) if args.json else cost.format_table(estimate))
    return 0


def _read_frames(path: str, spec) -> np.ndarray:
    """--input: an (H, W, C) or (N, H, W, C) integer .npy in the input tensor's range."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"--input {path!r} cannot be read as a .npy array: {error}") from None
    if not np.issubdtype(x.dtype, np.integer):
        raise UsageError(f"--input {path!r} must hold integers, not {x.dtype}")
    if x.shape[-3:] != spec.shape or x.ndim not in (3, 4):
        raise UsageError(f"--input {path!r} has shape {x.shape}, the engine input is "
                         f"(H, W, C) = {spec.shape} (or N frames of it)")
    if x.size and (x.min() < spec.qmin or x.max() > spec.qmax):
        raise UsageError(f"--input {path!r} holds values outside [{spec.qmin}, {spec.qmax}] "
                         f"({spec.bits}-bit input)")
    return x.astype(np.int64)


def _cmd_golden(args) -> int:
    from .sim import golden
    config = _load(args.config)
    if args.input:
        frames = _read_frames(args.input, config.input)
    else:
        frames = golden.random_input(config.input, np.random.default_rng(args.seed))
    single = frames.ndim == 3
    stack = frames[None] if single else frames
    results = [golden.run(config, frame, keep=True) for frame in stack]
    outputs = np.stack([r[config.output.name] for r in results])
    if args.output:
        dtype = np.int8 if config.output.bits <= 8 else np.int16
        np.save(args.output, (outputs[0] if single else outputs).astype(dtype))
    source = args.input or f"random input, seed {args.seed}"
    print(f"{config.name}: golden model on {len(stack)} frame(s) ({source})")
    if args.summary or not args.output:
        for name, spec in config.tensors.items():
            values = np.stack([r[name] for r in results])
            print(f"  {name:<12} {'x'.join(map(str, spec.shape)):>10}  min {values.min():>6}  "
                  f"max {values.max():>6}  mean {values.mean():8.2f}")
    if args.output:
        print(f"wrote {args.output}: {outputs.shape[-3:]} int{config.output.bits}")
    return 0


def _cmd_tensors(args) -> int:
    from .loader import save_tensors
    config = _load(args.config)
    save_tensors(config, args.output)
    print(f"wrote {args.output}")
    return 0


def _cmd_verilog(args) -> int:
    import json
    from . import emit
    config = _load(args.config)
    v_path, json_path = emit.write_outputs(config, args.output)
    report = json.loads(json_path.read_text())
    ports = {port["name"]: port["width"] for port in report["ports"]}
    lines = len(v_path.read_text().splitlines())
    print(f"wrote {v_path}")
    print(f"wrote {json_path}")
    print(f"{config.name}: module {report['top']}, s_axis_tdata {ports['s_axis_tdata']} bits "
          f"({report['input']['lanes']} x int{report['input']['bits']}), m_axis_tdata "
          f"{ports['m_axis_tdata']} bits ({report['output']['lanes']} x int{report['output']['bits']}), "
          f"{lines:,} lines of Verilog")
    if args.lint:
        clean, output = emit.lint(v_path)
        if not clean:
            print(output.rstrip(), file=sys.stderr)
            print(f"convgen: error: verilator lint of {v_path} is not clean", file=sys.stderr)
            return 1
        print(f"verilator --lint-only -Wall: clean ({len(emit.WAIVERS)} waivers, see convgen.emit.WAIVERS)")
    return 0


def _cmd_sim(args) -> int:
    from . import simcache, simulate
    from .sim import golden
    config = _load(args.config)
    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, not {args.frames}")
    if args.input:
        frames = _read_frames(args.input, config.input)
        frames = frames[None] if frames.ndim == 3 else frames
    else:
        rng = np.random.default_rng(args.seed)
        frames = np.stack([golden.random_input(config.input, rng) for _ in range(args.frames)])
    if args.waves and not args.waves.endswith((".fst", ".vcd")):
        raise UsageError(f"--waves must name a .fst or .vcd file, not {args.waves!r}")
    print(f"{config.name}: {len(frames)} frame(s) on {args.simulator} "
          f"({args.input or f'random input, seed {args.seed}'}), stall {args.stall:g}", flush=True)

    def progress(frame):
        status = "ok" if frame.mismatches == 0 else f"{frame.mismatches} mismatches"
        print(f"  frame {frame.index}: {status}", flush=True)

    try:
        result = simulate.simulate(config, frames, simulator=args.simulator, stall=args.stall,
                                   seed=args.seed, progress=progress, waves=args.waves)
    except simulate.SimulatorUnavailable as error:
        raise UsageError(str(error)) from None
    except (simcache.BuildError, simulate.BenchError) as error:
        print(f"convgen: error: {error}", file=sys.stderr)
        return 1
    print(simulate.format_report(result))
    if args.output:
        dtype = np.int8 if config.output.bits <= 8 else np.int16
        np.save(args.output, (result.outputs[0] if args.input and len(frames) == 1 else result.outputs).astype(dtype))
        print(f"wrote {args.output}")
    if args.waves:
        print(f"wrote {args.waves}")
    return 0 if result.passed else 1


def _cmd_synth(args) -> int:
    from . import synth
    config = _load(args.config)
    out_dir = args.out or f"build/{config.name}-{args.target}"
    result = synth.synthesize(config, args.target, out_dir, seed=args.seed,
                              progress=lambda text: print(f"  {text}", flush=True))
    print(synth.format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0 if result.fits else 1


def _cmd_bench(args) -> int:
    from . import bench
    return bench.run(args)


def _cmd_build(args) -> int:
    from . import board_build
    return board_build.run(args)


def _cmd_doctor(args) -> int:
    from . import toolchain
    return toolchain.main(["--quiet"] if args.quiet else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convgen", description="Streaming convolution engine generator for FPGAs (int8, TFLite-exact).")
    parser.add_argument("--version", action="version", version=f"convgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("check", _cmd_check, "validate a config and summarise the engine")
    p.add_argument("config", help="engine config (.toml)")
    p = command("cost", _cmd_cost, "print the analytic cost model (MACs, parameters, buffers, cycles)")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = command("golden", _cmd_golden, "run the NumPy golden model")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("--input", metavar="X.npy", help="(H, W, C) or (N, H, W, C) integer input; "
                   "default: one seeded random frame")
    p.add_argument("--output", metavar="Y.npy", help="save the output here")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--summary", action="store_true", help="print every tensor's range")
    p = command("tensors", _cmd_tensors, "write the engine's weights and quantization to a tensors file")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.npz")
    p = command("verilog", _cmd_verilog, "write the engine's Verilog (AXI4-Stream ports) and its JSON report")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall on it")
    p = command("sim", _cmd_sim, "simulate the engine's RTL and check every output beat against the golden model")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("--simulator", choices=("verilator", "icarus", "amaranth"), default="verilator",
                   help="RTL simulator (default verilator; amaranth runs the design in Python)")
    p.add_argument("--frames", type=int, default=2, help="random frames to run back to back (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random frames and stalls (default 0)")
    p.add_argument("--stall", type=float, default=0.0,
                   help="probability that the source idles and the sink holds off on a cycle (default 0)")
    p.add_argument("--input", metavar="X.npy", help="run this (H, W, C) or (N, H, W, C) integer input instead")
    p.add_argument("--output", metavar="Y.npy", help="save the engine's output here")
    p.add_argument("--waves", metavar="FILE.fst|.vcd", help="record a waveform")
    p = command("synth", _cmd_synth, "synthesize and place-and-route the engine with yosys/nextpnr; report Fmax and resources")
    p.add_argument("config", help="engine config (.toml)")
    p.add_argument("--target", required=True, choices=("up5k", "ecp5-25k", "ecp5-85k"), help="device")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--out", metavar="DIR", help="build directory (default build/<name>-<target>)")
    from . import bench, board_build
    p = command("build", _cmd_build,
                "build a board bitstream: the engine behind the board's UART (icebreaker, ulx3s, orangecrab)")
    board_build.add_arguments(p)
    p = command("bench", _cmd_bench, "sweep examples x parallelism x targets: simulated cycles per frame, "
                "Fmax, resources, frames per second; a markdown table and plots")
    bench.add_arguments(p)
    p = command("doctor", _cmd_doctor, "check the external tools (Verilator, Icarus, yosys, nextpnr)")
    p.add_argument("--quiet", action="store_true", help="print only problems")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, KeyError, tomllib.TOMLDecodeError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        print(f"convgen: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"convgen: error: {error.filename or ''}: {error.strerror}".replace(": : ", ": "),
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("convgen: interrupted", file=sys.stderr)
        return 130
    except Exception as error:    # a bug of ours: one line, the traceback on request
        if os.environ.get("CONVGEN_DEBUG"):
            raise
        print(f"convgen: internal error: {type(error).__name__}: {error} "
              f"(set CONVGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
