# amaranth: UnusedElaboratable=no
"""convgen.hdl.dsp.Multiply: the generic form against Python products (Amaranth simulation),
the ECP5 form (MULT18X18D with its registers) against the generic one cycle by cycle
(Icarus, with tests/data/ecp5/MULT18X18D.v as the primitive), and a whole engine
elaborated for ECP5 bit-exact against the golden model (Verilator, slow)."""

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, signed, unsigned
from amaranth.sim import Simulator

from convgen.hdl.dsp import ECP5, Multiply, fits_mult18
from convgen.hdl.mac import MULTIPLY_STAGES
from convgen.simulate import icarus_source

MODEL = Path(__file__).parent / "data" / "ecp5" / "MULT18X18D.v"

# (a, b) operand shapes: the MAC units' (signed activation, signed weight) and the
# requantizers' slices (unsigned 17-bit low slices, signed top slices, 14-bit multiplier tops)
SHAPES = [(signed(9), signed(8)), (signed(18), signed(18)), (unsigned(17), unsigned(17)),
          (signed(18), unsigned(17)), (signed(5), unsigned(14)), (unsigned(17), unsigned(14)),
          (unsigned(18), unsigned(17)), (unsigned(18), signed(18)), (signed(2), signed(2))]
IDS = [f"{'s' if a.signed else 'u'}{a.width}x{'s' if b.signed else 'u'}{b.width}" for a, b in SHAPES]


def _values(shape, rng, n):
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    edge = [lo, hi, 0, lo + 1, hi - 1]
    return [edge[k] if k < len(edge) else rng.randint(lo, hi) for k in range(n)]


def test_multiply_latency_matches_mac():
    assert Multiply.latency == MULTIPLY_STAGES["dsp"] == 2


@pytest.mark.parametrize("a_shape,b_shape", SHAPES, ids=IDS)
def test_multiply_generic(a_shape, b_shape):
    """p is the product of the operands presented two enabled cycles earlier, under a random enable."""
    dut = Multiply(a_shape, b_shape)
    assert dut.p.shape().width == a_shape.width + b_shape.width
    rng = random.Random(a_shape.width * 100 + b_shape.width)
    n = 200
    xs, ws = _values(a_shape, rng, n), _values(b_shape, rng, n)
    enables = [rng.random() < 0.7 for _ in range(n)]

    async def bench(ctx):
        taken = []
        for x, w, en in zip(xs, ws, enables):
            ctx.set(dut.a, x)
            ctx.set(dut.b, w)
            ctx.set(dut.en, en)
            if len(taken) >= 2:
                assert ctx.get(dut.p) == taken[-2][0] * taken[-2][1]
            await ctx.tick()
            if en:
                taken.append((x, w))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_multiply_in_dsp():
    assert fits_mult18(signed(18)) and fits_mult18(unsigned(18))
    assert not fits_mult18(signed(19)) and not fits_mult18(unsigned(19))
    assert Multiply(signed(9), signed(8)).in_dsp and not Multiply(unsigned(19), signed(8)).in_dsp
    # only an ECP5 platform instantiates the primitive
    for platform, count in ((None, 0), (ECP5, 1)):
        text = verilog.convert(Multiply(signed(9), signed(8)), platform=platform, emit_src=False)
        assert text.count("MULT18X18D #(") == count
    text = verilog.convert(Multiply(unsigned(19), signed(8)), platform=ECP5, emit_src=False)
    assert "MULT18X18D" not in text


def _equivalence_bench(a_shape, b_shape, cycles=2000):
    """A Verilog testbench driving the ECP5 and the generic Multiply with the same random
    operands and enable, comparing the products every cycle."""
    lines = ["`timescale 1ns / 1ps", "module tb;", "  reg clk = 0, rst = 0, en = 0;",
             f"  reg {'signed ' if a_shape.signed else ''}[{a_shape.width - 1}:0] a = 0;",
             f"  reg {'signed ' if b_shape.signed else ''}[{b_shape.width - 1}:0] b = 0;",
             f"  wire [{a_shape.width + b_shape.width - 1}:0] p_ecp5, p_generic;",
             "  integer k, errors = 0, checked = 0;",
             "  ecp5 u_ecp5 (.clk(clk), .rst(rst), .en(en), .a(a), .b(b), .p(p_ecp5));",
             "  generic u_generic (.clk(clk), .rst(rst), .en(en), .a(a), .b(b), .p(p_generic));",
             "  always #5 clk = ~clk;",
             "  initial begin",
             f"    for (k = 0; k < {cycles}; k = k + 1) begin",
             "      @(negedge clk);",
             "      if (p_ecp5 !== p_generic) begin",
             "        errors = errors + 1;",
             "        if (errors < 5) $display(\"MISMATCH cycle %0d: ecp5 %h generic %h\", k, p_ecp5, p_generic);",
             "      end",
             "      checked = checked + 1;",
             "      a = $random; b = $random; en = ($random & 3) != 0;",
             f"      rst = k == {cycles // 2};",            # a domain reset half-way: neither clears
             "    end",
             "    $display(\"CHECKED %0d ERRORS %0d\", checked, errors);",
             "    $finish;",
             "  end",
             "endmodule"]
    return "\n".join(lines) + "\n"


def _convert(dut, name, platform):
    """Icarus-ready Verilog of ``dut`` (initial values applied at #1, as convgen.simulate
    does; the bench's timescale, so that #1 comes before the first clock edge)."""
    text = verilog.convert(dut, name=name, platform=platform, ports=[dut.en, dut.a, dut.b, dut.p],
                           emit_src=False)
    return "`timescale 1ns / 1ps\n" + icarus_source(text)


@pytest.mark.parametrize("a_shape,b_shape", SHAPES, ids=IDS)
def test_multiply_ecp5_matches_generic(a_shape, b_shape, tmp_path):
    """The MULT18X18D form (through the primitive's model) equals the generic form on every
    cycle: random operands (full range), a random enable, a reset half-way."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not found")
    ecp5 = Multiply(a_shape, b_shape)
    generic = Multiply(a_shape, b_shape)
    sources = [tmp_path / "ecp5.v", tmp_path / "generic.v", tmp_path / "tb.v", tmp_path / "model.v"]
    sources[3].write_text("`timescale 1ns / 1ps\n" + MODEL.read_text())
    sources[0].write_text(_convert(ecp5, "ecp5", ECP5))
    sources[1].write_text(_convert(generic, "generic", None))
    assert "MULT18X18D #(" in sources[0].read_text() and "MULT18X18D" not in sources[1].read_text()
    sources[2].write_text(_equivalence_bench(a_shape, b_shape))
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "sim"), "-s", "tb", *map(str, sources)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    assert "CHECKED 2000 ERRORS 0" in out, out


def test_model_is_a_real_check(tmp_path):
    """The bench fails when the ECP5 form differs: a model without its output register."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not found")
    a_shape, b_shape = signed(9), signed(8)
    ecp5, generic = Multiply(a_shape, b_shape), Multiply(a_shape, b_shape)
    broken = MODEL.read_text().replace('wire [35:0] p_v = REG_OUTPUT_CLK == "CLK0" ? p_q : m_v;',
                                       'wire [35:0] p_v = m_v;')
    assert broken != MODEL.read_text()
    (tmp_path / "model.v").write_text("`timescale 1ns / 1ps\n" + broken)
    (tmp_path / "ecp5.v").write_text(_convert(ecp5, "ecp5", ECP5))
    (tmp_path / "generic.v").write_text(_convert(generic, "generic", None))
    (tmp_path / "tb.v").write_text(_equivalence_bench(a_shape, b_shape, cycles=200))
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "sim"), "-s", "tb",
                    *(str(tmp_path / f) for f in ("ecp5.v", "generic.v", "tb.v", "model.v"))],
                   check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    assert "ERRORS 0" not in out and "MISMATCH" in out, out


@pytest.mark.slow
@pytest.mark.parametrize("example", ["mobilenetv2_block", "dws_layer_up5k"])
def test_engine_elaborated_for_ecp5(example, monkeypatch):
    """A whole engine as ``convgen synth --target ecp5-*`` elaborates it (MULT18X18D with
    registers, simulated through the model) is bit-exact against the golden model."""
    from convgen import emit
    from convgen.loader import load_config
    from convgen.sim import golden
    from convgen.simulate import SimulatorUnavailable, simulate

    config = load_config(Path(__file__).parents[1] / "examples" / f"{example}.toml")
    generic = emit.emit_verilog
    text = generic(config, platform=ECP5)
    assert text.count("MULT18X18D #(") > 0
    monkeypatch.setattr(emit, "emit_verilog", lambda c, platform=None: text + MODEL.read_text())
    rng = np.random.default_rng(11)
    inputs = np.stack([golden.random_input(config.input, rng) for _ in range(2)])
    try:
        result = simulate(config, inputs, simulator="verilator", stall=0.3, seed=5)
    except SimulatorUnavailable as error:
        pytest.skip(str(error))
    expected = np.stack([golden.run(config, f) for f in inputs])
    np.testing.assert_array_equal(result.outputs, expected)
    assert result.passed
