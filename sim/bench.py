"""Stream test helpers for Amaranth simulations (one shared copy for every unit test).

* :func:`pauses` — seeded valid/ready patterns: ``none`` (always on), ``periodic``
  (one cycle off in four: 25%), ``random`` (50%), ``bursty`` (long on and off runs);
* :func:`stream_put` / :func:`stream_get` — one transfer, following the stream rules;
* :func:`run_stream` — drive a list of beats into a component's ``i`` port under one
  pattern, collect a number of beats from its ``o`` port under another, and return
  them with the cycle count; the simulation ends when the expected count has arrived
  plus ``drain`` idle cycles, so a component that emits extra beats is caught.

Beats are dicts ``{"data": [lane values], "first": 0/1, "last": 0/1}`` (the layout of
:func:`convgen.hdl.beats.beat_layout`), or whatever the port's payload shape accepts.
"""

from __future__ import annotations

import itertools

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

__all__ = ["PATTERNS", "pauses", "stream_put", "stream_get", "run_stream", "frame_beats", "beats_frame",
           "protocol_monitor", "run_frames", "random_frames", "with_numbers", "window_geometries"]

PATTERNS = ("none", "periodic", "random", "bursty")


def pauses(kind, seed: int = 0):
    """An endless iterator of booleans: True = active this cycle (valid or ready).

    ``kind`` is a pattern name, or a probability (float in [0, 1)) of being idle on any
    cycle, independently."""
    rng = np.random.default_rng(seed)
    if isinstance(kind, float):
        if not 0.0 <= kind < 1.0:
            raise ValueError(f"an idle probability must lie in [0, 1), not {kind}")
        return (bool(b) for b in iter(lambda: rng.random() >= kind, None))
    if kind == "none":
        return itertools.repeat(True)
    if kind == "periodic":
        return itertools.cycle([True, True, True, False])
    if kind == "random":
        return (bool(b) for b in iter(lambda: rng.integers(0, 2), None))
    if kind == "bursty":
        def gen():
            while True:
                on = True
                for length in (rng.integers(1, 24), rng.integers(1, 12)):
                    yield from itertools.repeat(on, int(length))
                    on = not on
        return gen()
    raise ValueError(f"pause pattern must be one of {', '.join(PATTERNS)}, not {kind!r}")


async def stream_put(ctx, port, payload):
    """Offer one payload and wait until it is taken."""
    ctx.set(port.valid, 1)
    ctx.set(port.payload, payload)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port):
    """Accept one payload."""
    ctx.set(port.ready, 1)
    payload, = await ctx.tick().sample(port.payload).until(port.valid)
    ctx.set(port.ready, 0)
    return payload


def _plain(value):
    """A simulator value (data.Const views included) as nested Python ints/lists/dicts."""
    layout = getattr(value, "shape", None)
    if callable(layout):
        from amaranth.lib import data
        shape = value.shape()
        if isinstance(shape, data.StructLayout):
            return {name: _plain(value[name]) for name, _ in shape}
        if isinstance(shape, data.ArrayLayout):
            return [_plain(value[i]) for i in range(shape.length)]
    return int(value) if not isinstance(value, (dict, list)) else value


def run_stream(dut, beats, expected_count: int, *, source: str = "none", sink: str = "none",
               seed: int = 0, drain: int = 64, max_cycles: int = 1_000_000, extra=None):
    """Simulate ``dut``: drive ``beats`` into ``dut.i``, collect from ``dut.o``.

    Returns ``(outputs, cycles)``: the collected beats as plain Python values and the
    number of clock cycles from the first cycle to the last output transfer. Fails if
    fewer than ``expected_count`` beats arrive within ``max_cycles``, or if any beat
    arrives during the ``drain`` cycles after them. ``extra`` is an optional async
    testbench run alongside (e.g. a second input port).
    """
    outputs = []
    state = {"last": None, "cycle": 0, "done": False}

    async def source_bench(ctx):
        active = pauses(source, seed)
        for payload in beats:
            while not next(active):
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            await stream_put(ctx, dut.i, payload)

    async def sink_bench(ctx):
        active = pauses(sink, seed + 1)
        cycle = 0
        while len(outputs) < expected_count:
            ready = next(active)
            ctx.set(dut.o.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if ready and valid:
                outputs.append(_plain(payload))
                state["last"] = cycle
            if cycle > max_cycles:
                raise AssertionError(f"only {len(outputs)} of {expected_count} beats after {cycle} cycles")
        ctx.set(dut.o.ready, 1)
        for _ in range(drain):
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                raise AssertionError(f"extra beat after the expected {expected_count}: {_plain(payload)}")

    # A top with a clock domain of its own, so purely combinational DUTs simulate too.
    top = Module()
    top.submodules.dut = dut
    tick = Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(source_bench, background=True)
    if extra is not None:
        sim.add_testbench(extra, background=True)
    sim.add_testbench(sink_bench)
    sim.run()
    return outputs, state["last"]


def frame_beats(frame, lanes: int) -> list[dict]:
    """An (H, W, C) integer frame as raster-order beats of ``lanes`` channels."""
    frame = np.asarray(frame)
    h, w, c = frame.shape
    groups = frame.reshape(h * w * (c // lanes), lanes)
    n = len(groups)
    return [{"data": [int(v) for v in g], "first": int(k == 0), "last": int(k == n - 1)}
            for k, g in enumerate(groups)]


def beats_frame(beats, shape) -> np.ndarray:
    """Raster-order beats back into an (H, W, C) int64 frame; checks first/last flags."""
    n = len(beats)
    for k, beat in enumerate(beats):
        assert beat["first"] == int(k == 0), f"beat {k}: first = {beat['first']}"
        assert beat["last"] == int(k == n - 1), f"beat {k}: last = {beat['last']}"
    return np.array([beat["data"] for beat in beats], dtype=np.int64).reshape(shape)

def protocol_monitor(port, violations: list):
    """An ``extra`` testbench for run_stream: checks the stream rule on an output port, a beat
    offered and not taken stays offered, unchanged, on the next cycle."""
    async def testbench(ctx):
        prev = None
        async for _, _, valid, ready, payload in ctx.tick().sample(port.valid, port.ready,
                                                                  port.payload.as_value()):
            if prev is not None and prev[0] and not prev[1] and not (valid and payload == prev[2]):
                violations.append((prev, (valid, ready, payload)))
            prev = (valid, ready, payload)
    return testbench


def run_frames(dut, frames, expected, lanes_in: int, lanes_out: int, *, source="none", sink="none", seed=0):
    """Frames back to back through ``dut`` (``lanes_in`` channels per input beat), every
    output frame compared with ``expected`` (``lanes_out`` per output beat) and the stream
    rule watched on ``dut.o``. Returns ``(cycles, output frames)``."""
    shape = expected[0].shape
    per_frame = int(np.prod(shape)) // lanes_out
    beats = [b for f in frames for b in frame_beats(f, lanes_in)]
    violations = []
    out, cycles = run_stream(dut, beats, per_frame * len(frames), source=source, sink=sink, seed=seed,
                             extra=protocol_monitor(dut.o, violations))
    assert len(out) == per_frame * len(frames)
    assert not violations, f"output beat changed or withdrawn while stalled: {violations[:3]}"
    got = []
    for n, want in enumerate(expected):
        frame = beats_frame(out[n * per_frame:(n + 1) * per_frame], shape)
        np.testing.assert_array_equal(frame, want)
        got.append(frame)
    return cycles, got


def random_frames(rng, stage, n=2):
    """``n`` uniformly random input frames of ``stage`` (:func:`convgen.sim.golden.random_input`)."""
    from .golden import random_input
    return [random_input(stage.input, rng) for _ in range(n)]


def with_numbers(stage, weights, bias, real=None):
    """The convolution ``stage`` with replaced weights and bias and, given ``real``, one
    requantization scale for every output channel."""
    import dataclasses

    from . import arith
    changes = {"weights": np.asarray(weights, dtype=np.int64), "bias": np.asarray(bias, dtype=np.int64)}
    if real is not None:
        m, s = arith.quantize_multiplier(real, stage.rounding)
        c = stage.output.channels
        changes.update(multiplier=np.full(c, m), shift=np.full(c, s))
    return dataclasses.replace(stage, **changes)


def window_geometries(count, seed, *, max_side, max_elements):
    """Seeded random window geometries ``(h, w, c, lanes, kernel, stride, dilation, padding)``
    that the configuration accepts: sides below ``max_side``, ``h * w * c <= max_elements``."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        k = int(rng.choice([1, 3, 5, 7]))
        s, d = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        pad = str(rng.choice(["same", "valid"]))
        h, w = int(rng.integers(1, max_side)), int(rng.integers(1, max_side))
        c = int(rng.integers(1, 5))
        lanes = int(rng.choice([l for l in range(1, c + 1) if c % l == 0]))
        if pad == "valid" and (k - 1) * d + 1 > min(h, w):
            continue
        if h * w * c > max_elements:
            continue
        found.append((h, w, c, lanes, k, s, d, pad))
    return found
