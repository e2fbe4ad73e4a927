"""cocotb bench for an emitted engine (runs inside Verilator or Icarus).

Drives ``s_axis_*`` with the frames in ``inputs.npy`` and collects ``m_axis_*`` into
``outputs.npy``, under seeded random idle on the source and backpressure on the sink,
then checks the collected beats against ``expected.npy`` (the golden model): every beat,
``m_axis_tuser`` exactly on the first beat of each frame, ``m_axis_tlast`` exactly on the
last beat of each output row, and nothing more once the expected beats are in. A
``results.json`` records mismatches, the first mismatching pixel and channel, and cycles.

Everything it needs comes from the folder named by ``CONVGEN_BENCH_DIR`` (written by
:mod:`convgen.simulate`): ``bench.json`` (geometry, lanes, widths, stall probabilities,
seed), ``inputs.npy`` (N, H, W, C), ``expected.npy`` (N, H', W', C').

Per cycle: inputs are set after the clock edge, handshakes are sampled in the
read-only phase before the next edge (so ``ready``/``valid`` seen are the values the
registers act on), and a transfer is recorded when both were high.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def _pack(values, bits):
    word = 0
    for lane, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (lane * bits)
    return word


def _unpack(word, bits, lanes):
    out = []
    for lane in range(lanes):
        v = (word >> (lane * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def _u(value) -> int:
    """An unsigned int from a cocotb 2 value (``LogicArray`` for vectors, ``Logic`` for bits)."""
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


def _beats(frame, lanes):
    h, w, c = frame.shape
    return frame.reshape(h * w * (c // lanes), lanes)


@cocotb.test()
async def engine_frames(dut):
    folder = Path(os.environ["CONVGEN_BENCH_DIR"])
    p = json.loads((folder / "bench.json").read_text())
    inputs = np.load(folder / "inputs.npy")
    expected = np.load(folder / "expected.npy")
    lin, lout, bin_, bout = p["input_lanes"], p["output_lanes"], p["input_bits"], p["output_bits"]
    n_frames, (h, w, c) = inputs.shape[0], inputs.shape[1:]
    beats_in_line = w * c // lin
    in_beats = [(_pack(b, bin_), int(k % (h * beats_in_line) == 0), int(k % beats_in_line == beats_in_line - 1))
                for k, b in enumerate(np.concatenate([_beats(f, lin) for f in inputs]))]
    oh, ow, oc = expected.shape[1:]
    out_per_frame = oh * ow * oc // lout
    out_per_line = ow * oc // lout
    n_out = out_per_frame * n_frames
    src = random.Random(p["seed"])
    snk = random.Random(p["seed"] + 1)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for port in ("s_axis_tvalid", "s_axis_tdata", "s_axis_tuser", "s_axis_tlast", "m_axis_tready"):
        getattr(dut, port).value = 0      # defined levels from time 0 (Icarus starts at X)
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    sent, cycle, first_in, last_out = 0, 0, None, None
    words, users, lasts = [], [], []
    frame_ends = []          # cycles from the first input beat to each frame's last output beat
    max_cycles = p["max_cycles"]
    drain = 0
    while len(words) < n_out or drain < p["drain"]:
        offer = sent < len(in_beats) and src.random() >= p["source_idle"]
        take = snk.random() >= p["sink_stall"] if len(words) < n_out else True
        dut.s_axis_tvalid.value = int(offer)
        if offer:
            data, user, last = in_beats[sent]
            dut.s_axis_tdata.value = data
            dut.s_axis_tuser.value = user
            dut.s_axis_tlast.value = last
        dut.m_axis_tready.value = int(take)
        await ReadOnly()
        if offer and _u(dut.s_axis_tready.value):
            if first_in is None:
                first_in = cycle
            sent += 1
        if take and _u(dut.m_axis_tvalid.value):
            if len(words) >= n_out:
                raise AssertionError(f"extra output beat after the expected {n_out}")
            words.append(_u(dut.m_axis_tdata.value))
            users.append(_u(dut.m_axis_tuser.value))
            lasts.append(_u(dut.m_axis_tlast.value))
            last_out = cycle
            if len(words) % out_per_frame == 0:
                frame_ends.append(cycle - first_in + 1)
        if len(words) >= n_out:
            drain += 1
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > max_cycles:
            raise AssertionError(f"timeout: {len(words)} of {n_out} output beats after {cycle} cycles "
                                 f"({sent} of {len(in_beats)} input beats taken)")

    outputs = np.array([_unpack(wd, bout, lout) for wd in words], dtype=np.int64).reshape(expected.shape)
    np.save(folder / "outputs.npy", outputs)
    report = {"cycles": last_out - first_in + 1, "frame_ends": frame_ends,
              "input_beats_pending": len(in_beats) - sent, "frames": []}
    flag_errors = []
    for k in range(len(words)):
        want_user = int(k % out_per_frame == 0)
        want_last = int(k % out_per_line == out_per_line - 1)
        if users[k] != want_user or lasts[k] != want_last:
            flag_errors.append(f"beat {k}: tuser {users[k]} (want {want_user}), tlast {lasts[k]} (want {want_last})")
    for f in range(n_frames):
        diff = np.argwhere(outputs[f] != expected[f])
        entry = {"mismatches": int(len(diff)), "first_mismatch": None}
        if len(diff):
            y, x, ch = (int(v) for v in diff[0])
            entry["first_mismatch"] = [y, x, ch, int(outputs[f][y, x, ch]), int(expected[f][y, x, ch])]
        report["frames"].append(entry)
    report["flag_errors"] = flag_errors[:10]
    (folder / "results.json").write_text(json.dumps(report, indent=2) + "\n")

    assert sent == len(in_beats), f"{len(in_beats) - sent} input beats were never taken"
    assert not flag_errors, f"{len(flag_errors)} tuser/tlast errors, first: {flag_errors[0]}"
    bad = [(f, e["first_mismatch"]) for f, e in enumerate(report["frames"]) if e["mismatches"]]
    assert not bad, (f"{sum(e['mismatches'] for e in report['frames'])} mismatching elements; first in frame "
                     f"{bad[0][0]} at (row, column, channel, engine, golden) = {bad[0][1]}")
