"""Channel shuffle: output channel ``j * g + i`` is input channel ``i * (C / g) + j``.

* A whole pixel in one beat (``lanes == C``): a permutation of lanes — wires only, no
  registers and no logic; ``valid``/``ready`` pass straight through. Latency 0.
* A pixel over ``G = C / lanes`` beats: an output beat may need channels from every
  input beat of its pixel, so a pixel must be held whole before its first output beat
  can leave. The smallest buffer that keeps one beat per cycle is two pixel registers
  (``2 * C`` elements): one loads pixel ``p + 1`` while the other emits pixel ``p``,
  each output lane a ``G``-way mux. Latency ``G + 1`` cycles (load, then swap).
  Where it matters, the engine can instead fold the shuffle into a neighbouring
  pointwise stage's weight order (see docs/streams.md).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import beat_layout

__all__ = ["shuffle_permutation", "ChannelShuffle"]


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """``out[..., k] = in[..., permutation[k]]``."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


class ChannelShuffle(wiring.Component):
    """ShuffleNet channel shuffle on a pixel stream of ``lanes`` channels per beat."""

    def __init__(self, *, channels, groups, lanes, bits):
        if not isinstance(groups, int) or groups < 1 or channels % groups:
            raise ValueError(f"groups must be a positive divisor of channels {channels}, not {groups!r}")
        if not isinstance(lanes, int) or lanes < 1 or channels % lanes:
            raise ValueError(f"lanes must be a positive divisor of channels {channels}, not {lanes!r}")
        self.channels, self.groups, self.lanes, self.bits = channels, groups, lanes, bits
        self.permutation = shuffle_permutation(channels, groups)
        super().__init__({
            "i": In(stream.Signature(beat_layout(bits, lanes))),
            "o": Out(stream.Signature(beat_layout(bits, lanes))),
        })

    @classmethod
    def for_stage(cls, stage):
        return cls(channels=stage.input.channels, groups=stage.groups, lanes=stage.lanes,
                   bits=stage.input.bits)

    @property
    def beats_per_pixel(self) -> int:
        return self.channels // self.lanes

    @property
    def wired(self) -> bool:
        """True when the shuffle is pure wiring (a pixel per beat)."""
        return self.beats_per_pixel == 1

    @property
    def latency(self) -> int:
        return 0 if self.wired else self.beats_per_pixel + 1

    @property
    def buffer_bits(self) -> int:
        """Bits of pixel registers: 0 when wired, else two pixels."""
        return 0 if self.wired else 2 * self.channels * self.bits

    def elaborate(self, platform):
        m = Module()
        if self.wired:
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                         self.o.payload.first.eq(self.i.payload.first),
                         self.o.payload.last.eq(self.i.payload.last)]
            for k, src in enumerate(self.permutation):
                m.d.comb += self.o.payload.data[k].eq(self.i.payload.data[int(src)])
            return m

        G, L = self.beats_per_pixel, self.lanes
        pixel = data.ArrayLayout(data.ArrayLayout(signed(self.bits), L), G)
        load, current = Signal(pixel, name="load"), Signal(pixel, name="current")
        load_count = Signal(range(G + 1))
        load_first, load_last, cur_first, cur_last = Signal(), Signal(), Signal(), Signal()
        busy = Signal()
        beat = Signal(range(G), name="beat")
        load_full, swap, sent = Signal(), Signal(), Signal()
        m.d.comb += [
            load_full.eq(load_count == G),
            sent.eq(self.o.valid & self.o.ready),
            swap.eq(load_full & (~busy | (sent & (beat == G - 1)))),
            self.i.ready.eq(~load_full | swap),
        ]
        accepted = self.i.valid & self.i.ready
        slot = Mux(swap, 0, load_count)
        with m.If(accepted):
            with m.Switch(slot):
                for k in range(G):
                    with m.Case(k):
                        m.d.sync += load[k].eq(self.i.payload.data)
            with m.If(slot == 0):
                m.d.sync += load_first.eq(self.i.payload.first)
            with m.If(slot == G - 1):
                m.d.sync += load_last.eq(self.i.payload.last)
        with m.If(sent):
            m.d.sync += beat.eq(Mux(beat == G - 1, 0, beat + 1))
            with m.If(beat == G - 1):
                m.d.sync += busy.eq(0)
        with m.If(swap):
            m.d.sync += [current.eq(load), busy.eq(1), load_count.eq(accepted),
                         cur_first.eq(load_first), cur_last.eq(load_last)]
        with m.Elif(accepted):
            m.d.sync += load_count.eq(load_count + 1)

        # Output lane l of beat b is channel perm[b * L + l] = current[src // L][src % L].
        for l in range(L):
            sources = [int(self.permutation[b * L + l]) for b in range(G)]
            choices = Array(current[src // L][src % L] for src in sources)
            m.d.comb += self.o.payload.data[l].eq(choices[beat])
        m.d.comb += [self.o.valid.eq(busy),
                     self.o.payload.first.eq(cur_first & (beat == 0)),
                     self.o.payload.last.eq(cur_last & (beat == G - 1))]
        return m
