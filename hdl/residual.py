"""Residual add: TFLite's int8 ADD of the skip tensor and the main path, beat by beat.

``out = clamp(MBQM(MBQM((a + a_offset) << left, ma, sa) + MBQM((b + b_offset) << left, mb, sb),
mo, so) + out_zero_point, act_min, act_max)`` (:class:`~convgen.sim.arith.AddParams`).

Each operand's scaling depends on its value only, so for inputs of up to
:data:`TABLE_BITS` bits it is a table of the ``2^bits`` results (computed by the golden
arithmetic, so exact by construction) read and registered: no multiplier. Wider inputs
go through :class:`~convgen.hdl.requant.QuantizedMultiply`. Stages (one enable;
``latency`` is their count):

* *lookup*, *scaled* (the table read, its result registered; or *shift*, the first
  :class:`~convgen.hdl.requant.QuantizedMultiply` stage, registering the shifted operands
  as its factors, and its five other stages as ``in_*``): both scaled operands;
* *sum*: their sum;
* *bounds*: the sum compared with the saturation bounds;
* *saturate*: the sum saturated to the range outside which the output clamps anyway
  (:func:`~convgen.hdl.requant.saturation_range`), so the output multiply is narrow:
  the output QuantizedMultiply's factors stage;
* its five other stages (``out_*``);
* *clamp*: ``+ output zero point``, clamped to the activation range, narrowed.

The two inputs are joined: a transfer takes one beat from each, in the same cycle.
The skip operand reaches the add through a FIFO in the engine, sized there from the
main path's schedule (:mod:`convgen.hdl.engine`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sim import arith
from .beats import beat_layout
from .mac import signed_bits
from .requant import QuantizedMultiply, clamp_biased, saturation_range

__all__ = ["ResidualAdd", "TABLE_BITS", "residual_stages"]

#: Inputs up to this width are scaled by table lookup (2^bits entries per operand).
TABLE_BITS = 8


def residual_stages(lookup: bool) -> tuple:
    """Pipeline stages of a :class:`ResidualAdd` (its latency is their count): operands
    scaled by table (``lookup``, up to :data:`TABLE_BITS` bits) or by multiplies."""
    q = QuantizedMultiply.stages[1:]       # its first stage (factors) is shift / saturate
    scale = ("lookup", "scaled") if lookup else ("shift", *(f"in_{s}" for s in q))
    return (*scale, "sum", "bounds", "saturate", *(f"out_{s}" for s in q), "clamp")


class ResidualAdd(wiring.Component):
    """``o = ADD(skip, i)`` with :class:`~convgen.sim.arith.AddParams` ``params``.

    Ports: ``skip``, ``i`` — beats of ``lanes`` x ``bits``; ``o`` — the same layout.
    """

    def __init__(self, *, params: arith.AddParams, bits: int, lanes: int):
        self.params, self.bits, self.lanes = params, bits, lanes
        p = params
        qmin, qmax = arith.int_range(bits)
        self.lookup = bits <= TABLE_BITS
        if self.lookup:
            codes = np.arange(1 << bits, dtype=np.int64)
            values = np.where(codes > qmax, codes - (1 << bits), codes)        # two's complement
            self._table_a = arith.multiply_by_quantized_multiplier((values + p.a_offset) << p.left_shift,
                                                                   p.a_multiplier, p.a_shift, p.rounding)
            self._table_b = arith.multiply_by_quantized_multiplier((values + p.b_offset) << p.left_shift,
                                                                   p.b_multiplier, p.b_shift, p.rounding)
            a_range = (int(self._table_a.min()), int(self._table_a.max()))
            b_range = (int(self._table_b.min()), int(self._table_b.max()))
        else:
            span = lambda off: ((qmin + off) << p.left_shift, (qmax + off) << p.left_shift)  # noqa: E731
            self._scale_a = QuantizedMultiply(lanes, span(p.a_offset), [p.a_multiplier], [p.a_shift], p.rounding)
            self._scale_b = QuantizedMultiply(lanes, span(p.b_offset), [p.b_multiplier], [p.b_shift], p.rounding)
            a_range = b_range = (arith.INT32_MIN, arith.INT32_MAX)
        self._sum_range = (max(a_range[0] + b_range[0], arith.INT32_MIN),
                           min(a_range[1] + b_range[1], arith.INT32_MAX))
        #: The sum is saturated to this range before the output multiply (same outputs).
        self.saturation = saturation_range(self._sum_range, [p.out_multiplier], [p.out_shift],
                                           p.out_zero_point, p.act_min, p.act_max, p.rounding)
        self._scale_out = QuantizedMultiply(lanes, self.saturation, [p.out_multiplier], [p.out_shift],
                                            p.rounding)
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
        return residual_stages(self.lookup)

    @property
    def latency(self) -> int:
        return len(self.stages)

    @property
    def multipliers(self) -> int:
        """Multipliers built per lane (operand scalings by table need none)."""
        return (0 if self.lookup else 2) + (0 if self._scale_out.power_of_two else 1)

    def elaborate(self, platform):
        m = Module()
        p, L = self.params, self.lanes
        m.submodules.scale_out = qo = self._scale_out

        # The pipeline advances on o.ready alone (in the engine a skid buffer's register),
        # not also into an empty output: the join's take and everything it enables are
        # then one gate of registers.
        en = Signal()
        take = Signal()
        m.d.comb += [
            en.eq(self.o.ready),
            take.eq(en & self.skip.valid & self.i.valid),
            self.skip.ready.eq(take), self.i.ready.eq(take),
            qo.en.eq(en),
        ]
        depth = self.latency
        valid = Signal(depth)
        flags = [Signal(2, name=f"flags{k}") for k in range(depth)]
        with m.If(en):
            m.d.sync += valid.eq(Cat(take, valid[:-1]))
            m.d.sync += flags[0].eq(Cat(self.i.payload.first, self.i.payload.last))
            for k in range(1, depth):
                m.d.sync += flags[k].eq(flags[k - 1])

        # lookup (or shift + multiply): the two scaled operands
        scaled_a, scaled_b = self._scaled_operands(m, en)
        sum_bits = signed_bits(*self._sum_range)
        sat_lo, sat_hi = self.saturation
        for lane in range(L):
            # sum (exact: the operands' ranges bound it within int32)
            total = Signal(signed(sum_bits), name=f"sum{lane}")
            with m.If(en):
                m.d.sync += total.eq(scaled_a[lane] + scaled_b[lane])
            # bounds: the sum compared with the saturation bounds (one carry chain per stage)
            held = Signal(signed(sum_bits), name=f"held{lane}")
            above, below = Signal(name=f"above{lane}"), Signal(name=f"below{lane}")
            with m.If(en):
                m.d.sync += [held.eq(total), above.eq(total > sat_hi), below.eq(total < sat_lo)]
            # saturate (a mux), into the output multiply's factor registers
            m.d.comb += qo.x[lane].eq(Mux(above, sat_hi, Mux(below, sat_lo, held)))
            m.d.comb += [qo.m[lane].eq(p.out_multiplier), qo.shift[lane].eq(p.out_shift)]
            # clamp
            with m.If(en):
                m.d.sync += self.o.payload.data[lane].eq(
                    clamp_biased(qo.y[lane], qo.y_bits, p.out_zero_point, p.act_min, p.act_max))
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.first.eq(flags[-1][0]),
                     self.o.payload.last.eq(flags[-1][1])]
        return m

    def _scaled_operands(self, m, en):
        """Per lane, the two scaled operands (valid in the stage before *sum*)."""
        p, L = self.params, self.lanes
        if self.lookup:
            scaled = []
            for name, table, port in (("a", self._table_a, self.skip), ("b", self._table_b, self.i)):
                shape = signed(signed_bits(int(table.min()), int(table.max())))
                # Two stages (lookup, scaled): a block RAM read, then its data in a
                # reset-less register with nothing between (on ECP5 the DP16KD's output
                # register, see convgen.bram; a 256-entry table in LUTs is five levels deep).
                memory = Memory(shape=shape, depth=len(table), init=[int(v) for v in table])
                m.submodules[f"table_{name}"] = memory
                lanes = []
                for lane in range(L):
                    code = port.payload.data[lane].as_unsigned()
                    read = memory.read_port()
                    m.d.comb += [read.addr.eq(code), read.en.eq(en)]
                    value = Signal(shape, name=f"scaled_{name}{lane}", reset_less=True)
                    with m.If(en):
                        m.d.sync += value.eq(read.data)
                    lanes.append(value)
                scaled.append(lanes)
            return scaled
        m.submodules.scale_a = qa = self._scale_a
        m.submodules.scale_b = qb = self._scale_b
        m.d.comb += [qa.en.eq(en), qb.en.eq(en)]
        for lane in range(L):
            # shift: into the multiplies' factor registers
            m.d.comb += [
                qa.x[lane].eq((self.skip.payload.data[lane] + p.a_offset) << p.left_shift),
                qb.x[lane].eq((self.i.payload.data[lane] + p.b_offset) << p.left_shift),
            ]
            m.d.comb += [qa.m[lane].eq(p.a_multiplier), qa.shift[lane].eq(p.a_shift),
                         qb.m[lane].eq(p.b_multiplier), qb.shift[lane].eq(p.b_shift)]
        return qa.y, qb.y
