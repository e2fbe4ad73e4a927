"""Width converters between stages whose lane counts differ (channel order preserved).

* :class:`Gather` — ``k`` beats of ``lanes`` channels into one beat of ``k * lanes``;
* :class:`Split` — one beat of ``k * lanes`` channels into ``k`` beats of ``lanes``;
* :class:`WidthConverter` — any ``lanes_in`` to ``lanes_out`` dividing the channel count:
  a gather to their least common multiple, then a split (either step omitted when it
  is 1:1; both omitted, it is a wire).

Each keeps one input beat per cycle on its wider side at full rate. ``first`` comes from
the first input beat of an output beat, ``last`` from the last one.
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import beat_layout

__all__ = ["Gather", "Split", "WidthConverter"]


class Gather(wiring.Component):
    """``factor`` input beats of ``lanes`` -> one output beat of ``factor * lanes``. Latency 1."""

    latency = 1

    def __init__(self, *, bits, lanes, factor):
        self.bits, self.lanes, self.factor = bits, lanes, factor
        super().__init__({"i": In(stream.Signature(beat_layout(bits, lanes))),
                          "o": Out(stream.Signature(beat_layout(bits, lanes * factor)))})

    def elaborate(self, platform):
        m = Module()
        k, L = self.factor, self.lanes
        parts = Signal(beat_layout(self.bits, L * k)["data"].shape, name="parts")
        count = Signal(range(k))
        first = Signal()
        completes = count == k - 1
        # Stall only when this beat would complete a word while the output still holds one
        # (registers only: o.ready does not reach i.ready).
        m.d.comb += self.i.ready.eq(~(completes & self.o.valid))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.Switch(count):
                for c in range(k - 1):
                    with m.Case(c):
                        for l in range(L):
                            m.d.sync += parts[c * L + l].eq(self.i.payload.data[l])
            with m.If(count == 0):
                m.d.sync += first.eq(self.i.payload.first)
            with m.If(completes):
                m.d.sync += [count.eq(0), self.o.valid.eq(1),
                             self.o.payload.first.eq(first if k > 1 else self.i.payload.first),
                             self.o.payload.last.eq(self.i.payload.last)]
                for c in range(k - 1):
                    for l in range(L):
                        m.d.sync += self.o.payload.data[c * L + l].eq(parts[c * L + l])
                for l in range(L):
                    m.d.sync += self.o.payload.data[(k - 1) * L + l].eq(self.i.payload.data[l])
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class Split(wiring.Component):
    """One input beat of ``factor * lanes`` -> ``factor`` output beats of ``lanes``. Latency 1.

    The word being sent, plus a spare word register: ``i.ready`` is "the spare is empty" (a
    register, so o.ready does not reach i.ready), and the next word waits there while
    the current one's parts go out, so the parts flow one per cycle across words."""

    latency = 1

    def __init__(self, *, bits, lanes, factor):
        self.bits, self.lanes, self.factor = bits, lanes, factor
        super().__init__({"i": In(stream.Signature(beat_layout(bits, lanes * factor))),
                          "o": Out(stream.Signature(beat_layout(bits, lanes)))})

    def elaborate(self, platform):
        m = Module()
        k, L = self.factor, self.lanes
        word = Signal(beat_layout(self.bits, L * k), name="word")
        spare = Signal(beat_layout(self.bits, L * k), name="spare")
        have, have_spare = Signal(), Signal()
        index = Signal(range(k))
        last_part = index == k - 1
        sent = self.o.valid & self.o.ready
        take = self.i.valid & self.i.ready
        m.d.comb += [self.o.valid.eq(have), self.i.ready.eq(~have_spare)]
        with m.If(sent):
            m.d.sync += index.eq(Mux(last_part, 0, index + 1))
        frees = ~have | sent & last_part
        with m.If(frees):
            # The word register is free (or frees now): the spare word first, else the input.
            with m.If(have_spare):
                m.d.sync += [word.eq(spare), have.eq(1), have_spare.eq(0)]
            with m.Else():
                m.d.sync += [word.eq(self.i.payload), have.eq(take)]
        with m.Elif(sent):
            # The next part moves into the word's first lanes: the output is a fixed slice
            # of a register, no multiplexer behind it.
            for e in range(L * (k - 1)):
                m.d.sync += word.data[e].eq(word.data[e + L])
        with m.If(take & ~frees):
            m.d.sync += [spare.eq(self.i.payload), have_spare.eq(1)]
        for l in range(L):
            m.d.comb += self.o.payload.data[l].eq(word.data[l])
        m.d.comb += [self.o.payload.first.eq(word.first & (index == 0)),
                     self.o.payload.last.eq(word.last & last_part)]
        return m


class WidthConverter(wiring.Component):
    """``lanes_in`` -> ``lanes_out`` channels per beat for pixels of ``channels`` channels."""

    def __init__(self, *, bits, channels, lanes_in, lanes_out):
        for name, lanes in (("lanes_in", lanes_in), ("lanes_out", lanes_out)):
            if not isinstance(lanes, int) or lanes < 1 or channels % lanes:
                raise ValueError(f"{name} must be a positive divisor of channels {channels}, not {lanes!r}")
        self.bits, self.channels, self.lanes_in, self.lanes_out = bits, channels, lanes_in, lanes_out
        self.wide = math.lcm(lanes_in, lanes_out)
        self._gather = Gather(bits=bits, lanes=lanes_in, factor=self.wide // lanes_in) \
            if self.wide > lanes_in else None
        self._split = Split(bits=bits, lanes=lanes_out, factor=self.wide // lanes_out) \
            if self.wide > lanes_out else None
        super().__init__({"i": In(stream.Signature(beat_layout(bits, lanes_in))),
                          "o": Out(stream.Signature(beat_layout(bits, lanes_out)))})

    @property
    def latency(self) -> int:
        return sum(part.latency for part in (self._gather, self._split) if part is not None)

    def elaborate(self, platform):
        m = Module()
        port = wiring.flipped(self.i)
        if self._gather is not None:
            m.submodules.gather = self._gather
            wiring.connect(m, port, self._gather.i)
            port = self._gather.o
        if self._split is not None:
            m.submodules.split = self._split
            wiring.connect(m, port, self._split.i)
            port = self._split.o
        wiring.connect(m, port, wiring.flipped(self.o))
        return m
