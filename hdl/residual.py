"""Residual add: TFLite's int8 ADD of the skip tensor and the main path, beat by beat.

Stages (one enable; ``latency`` is their count):

* *shift*: ``(x + offset) << left_shift`` for both operands;
* the three :class:`~convgen.hdl.requant.QuantizedMultiply` stages, per operand, with
  that operand's constant multiplier and shift;
* *sum*: the two scaled operands added (int32);
* the three stages again with the output multiplier;
* *clamp*: ``+ output zero point``, clamped to the activation range, narrowed.

The two inputs are joined: a transfer takes one beat from each, in the same cycle.
The skip operand reaches the add through a FIFO in the engine, sized there from the
main path's schedule (:mod:`convgen.hdl.engine`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim import arith
from .beats import beat_layout
from .requant import QuantizedMultiply

__all__ = ["ResidualAdd"]


class ResidualAdd(wiring.Component):
    """``o = ADD(skip, i)`` with :class:`~convgen.sim.arith.AddParams` ``params``.

    Ports: ``skip``, ``i`` — beats of ``lanes`` x ``bits``; ``o`` — the same layout.
    """

    def __init__(self, *, params: arith.AddParams, bits: int, lanes: int):
        self.params, self.bits, self.lanes = params, bits, lanes
        qmin, qmax = arith.int_range(bits)
        p = params
        span = lambda off: ((qmin + off) << p.left_shift, (qmax + off) << p.left_shift)  # noqa: E731
        self._scale_a = QuantizedMultiply(lanes, span(p.a_offset), [p.a_multiplier], [p.a_shift], p.rounding)
        self._scale_b = QuantizedMultiply(lanes, span(p.b_offset), [p.b_multiplier], [p.b_shift], p.rounding)
        self._scale_out = QuantizedMultiply(lanes, (arith.INT32_MIN, arith.INT32_MAX),
                                            [p.out_multiplier], [p.out_shift], p.rounding)
        super().__init__({
            "skip": In(stream.Signature(beat_layout(bits, lanes))),
            "i": In(stream.Signature(beat_layout(bits, lanes))),
            "o": Out(stream.Signature(beat_layout(bits, lanes))),
        })

    @classmethod
    def for_stage(cls, stage):
        return cls(params=stage.params, bits=stage.output.bits, lanes=stage.lanes)

    @property
    def stages(self):
        q = QuantizedMultiply.stages
        return ("shift", *(f"in_{s}" for s in q), "sum", *(f"out_{s}" for s in q), "clamp")

    @property
    def latency(self) -> int:
        return len(self.stages)

    def elaborate(self, platform):
        m = Module()
        p, L = self.params, self.lanes
        m.submodules.scale_a = qa = self._scale_a
        m.submodules.scale_b = qb = self._scale_b
        m.submodules.scale_out = qo = self._scale_out

        en = Signal()
        take = Signal()
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            take.eq(en & self.skip.valid & self.i.valid),
            self.skip.ready.eq(take), self.i.ready.eq(take),
            qa.en.eq(en), qb.en.eq(en), qo.en.eq(en),
        ]
        depth = self.latency
        valid = Signal(depth)
        flags = [Signal(2, name=f"flags{k}") for k in range(depth)]
        with m.If(en):
            m.d.sync += valid.eq(Cat(take, valid[:-1]))
            m.d.sync += flags[0].eq(Cat(self.i.payload.first, self.i.payload.last))
            for k in range(1, depth):
                m.d.sync += flags[k].eq(flags[k - 1])

        for lane in range(L):
            # shift
            with m.If(en):
                m.d.sync += [
                    qa.x[lane].eq((self.skip.payload.data[lane] + p.a_offset) << p.left_shift),
                    qb.x[lane].eq((self.i.payload.data[lane] + p.b_offset) << p.left_shift),
                ]
            m.d.comb += [qa.m[lane].eq(p.a_multiplier), qa.shift[lane].eq(p.a_shift),
                         qb.m[lane].eq(p.b_multiplier), qb.shift[lane].eq(p.b_shift),
                         qo.m[lane].eq(p.out_multiplier), qo.shift[lane].eq(p.out_shift)]
            # sum (int32, as TFLite)
            with m.If(en):
                m.d.sync += qo.x[lane].eq((qa.y[lane] + qb.y[lane])[:32])
            # clamp
            biased = (qo.y[lane] + p.out_zero_point)[:32].as_signed()    # int32 add, as TFLite
            clamped = Mux(biased < p.act_min, p.act_min, Mux(biased > p.act_max, p.act_max, biased))
            with m.If(en):
                m.d.sync += self.o.payload.data[lane].eq(clamped)
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.first.eq(flags[-1][0]),
                     self.o.payload.last.eq(flags[-1][1])]
        return m
