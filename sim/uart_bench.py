"""cocotb bench for a board's :class:`~convgen.boards.top.UARTEngine` (Verilator or Icarus).

The bench is a host on the serial line and nothing more: it sends messages as 8N1
characters on ``rx`` (``divisor`` clock cycles per bit, back to back) and decodes every
character on ``tx``. It knows nothing of the framing; ``tests/test_boards.py`` writes the
messages and checks the replies against the golden model.

``CONVGEN_BENCH_DIR`` holds ``bench.json``::

    {"divisor": 4, "settle": 600, "max_cycles": 400000,
     "messages": [{"bytes": [70, ...], "reply_bytes": 147, "bad_stop": null}, ...]}

Message ``k`` is sent once the replies to message ``k - 1`` are complete (``reply_bytes``
characters) and the line has then been quiet for ``settle`` cycles, so a byte too many is
caught. ``bad_stop`` is the index of a byte sent with a low stop bit (a framing error),
or null. The bench writes ``results.json``: per message the bytes received while it was
current (``replies``) and any character on ``tx`` with a low stop bit (``tx_framing_errors``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge


def _bit(signal) -> int:
    value = signal.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


async def _send_byte(dut, byte: int, divisor: int, stop: int = 1):
    for level in [0] + [(byte >> k) & 1 for k in range(8)] + [stop]:
        dut.rx.value = level
        await ClockCycles(dut.clk, divisor)
    dut.rx.value = 1


async def _receive(dut, divisor: int, state: dict):
    """Decode characters on ``tx`` forever, appending them to the current message's reply."""
    while True:
        await FallingEdge(dut.tx)
        await ClockCycles(dut.clk, divisor // 2)
        await ReadOnly()
        if _bit(dut.tx):
            continue                                   # not a start bit
        byte = 0
        for k in range(8):
            await ClockCycles(dut.clk, divisor)
            await ReadOnly()
            byte |= _bit(dut.tx) << k
        await ClockCycles(dut.clk, divisor)
        await ReadOnly()
        if not _bit(dut.tx):
            state["tx_framing_errors"] += 1
        state["replies"][state["current"]].append(byte)
        state["last_byte_cycle"] = state["cycle"]


async def _count_cycles(dut, state: dict):
    while True:
        await RisingEdge(dut.clk)
        state["cycle"] += 1


@cocotb.test()
async def uart_frames(dut):
    folder = Path(os.environ["CONVGEN_BENCH_DIR"])
    p = json.loads((folder / "bench.json").read_text())
    divisor, settle, max_cycles = p["divisor"], p["settle"], p["max_cycles"]
    messages = p["messages"]
    state = {"current": 0, "replies": [[] for _ in messages], "tx_framing_errors": 0, "cycle": 0,
             "last_byte_cycle": 0}

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2 * divisor)
    cocotb.start_soon(_count_cycles(dut, state))
    cocotb.start_soon(_receive(dut, divisor, state))

    for index, message in enumerate(messages):
        state["current"] = index
        for k, byte in enumerate(message["bytes"]):
            await _send_byte(dut, byte, divisor, stop=0 if k == message["bad_stop"] else 1)
        sent = state["cycle"]
        while (len(state["replies"][index]) < message["reply_bytes"]
               or state["cycle"] - max(state["last_byte_cycle"], sent) < settle):
            await ClockCycles(dut.clk, divisor)
            if state["cycle"] > max_cycles:
                raise AssertionError(f"timeout in message {index}: {len(state['replies'][index])} of "
                                     f"{message['reply_bytes']} reply bytes after {state['cycle']} cycles")

    (folder / "results.json").write_text(json.dumps(
        {"replies": state["replies"], "tx_framing_errors": state["tx_framing_errors"],
         "cycles": state["cycle"]}) + "\n")
