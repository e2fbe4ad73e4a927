"""Requantization: TFLite ``MultiplyByQuantizedMultiplier`` per lane, then zero point and clamp.

:class:`QuantizedMultiply` is a pipelined block (one enable, no handshake) that
computes, per lane, exactly :func:`convgen.sim.arith.multiply_by_quantized_multiplier`
with that lane's multiplier and shift presented alongside the value:

* ``double`` rounding (TFLite's default): stage *multiply* forms ``wrap32(x << left) * m``;
  stage *high* adds ``2^30`` and takes bits 31 and up (``SaturatingRoundingDoublingHighMul``:
  ``floor((a*b + 2^30) / 2^31)`` equals it whenever ``b != INT32_MIN``, and ``m < 2^31``);
  stage *round* is ``RoundingDivideByPOT``: ``(h >> e) + ((h & mask) > (mask >> 1) + (h < 0))``.
* ``single`` rounding: *multiply* forms ``x * m``; *high* adds ``2^(30 - shift)``;
  *round* shifts right by ``31 - shift``.
* When every multiplier is ``2^30`` (a power-of-two scale) no multiplier is built:
  the high multiply is ``(x + 1) >> 1`` (double) or a shift (single).

:class:`Requantizer` is the stream component of a convolution's output: per-channel
parameters from a ROM (addressed by the channel group of each beat and read in the
same stage that registers the accumulators, so they stay aligned), the multiply,
then ``+ zero_point`` and the activation clamp.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import numpy as np

from ..sim import arith
from .beats import beat_layout

__all__ = ["QuantizedMultiply", "Requantizer", "acc_layout"]


def acc_layout(acc_bits: int, lanes: int) -> data.StructLayout:
    """Accumulator beats: ``{data: lanes x signed(acc_bits), first, last}``."""
    return beat_layout(acc_bits, lanes)


def _signed_bits(lo: int, hi: int) -> int:
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1


class QuantizedMultiply(Elaboratable):
    """Per-lane ``MultiplyByQuantizedMultiplier``, pipelined, advancing when ``en`` is high.

    Parameters
    ----------
    lanes : int
    x_range : (int, int)
        Range of the input values (their width follows); within int32.
    multipliers, shifts : array of int
        Every (multiplier, shift) pair the block may see; they size the datapath and
        select the power-of-two form. The values actually used come in on ``m``,
        ``shift`` per lane (aligned with ``x``).
    rounding : ``"double"`` or ``"single"``

    Attributes
    ----------
    en : Signal, in
    x : list of Signal(signed), in, one per lane
    m : list of Signal(unsigned(31)), in
    shift : list of Signal(signed(6)), in
    y : list of Signal(signed(32)), out, ``latency`` enabled cycles after ``x``
    """

    #: Named stages: multiply, high, round.
    stages = ("multiply", "high", "round")
    latency = len(stages)

    def __init__(self, lanes, x_range, multipliers, shifts, rounding="double"):
        multipliers = np.asarray(multipliers, dtype=np.int64)
        shifts = np.asarray(shifts, dtype=np.int64)
        if rounding not in arith.ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(arith.ROUNDINGS)}, not {rounding!r}")
        lo, hi = (int(v) for v in x_range)
        if lo < arith.INT32_MIN or hi > arith.INT32_MAX:
            raise ValueError(f"x_range must lie within int32, not {x_range}")
        self.lanes = lanes
        self.rounding = rounding
        self.power_of_two = bool(np.all(multipliers == arith.POWER_OF_TWO_MULTIPLIER))
        self.left_shifts = bool(rounding == "double" and np.any(shifts > 0))
        self.x_bits = _signed_bits(lo, hi)
        self.en = Signal()
        self.x = [Signal(signed(self.x_bits), name=f"x{i}") for i in range(lanes)]
        self.m = [Signal(unsigned(31), name=f"m{i}") for i in range(lanes)]
        self.shift = [Signal(signed(6), name=f"shift{i}") for i in range(lanes)]
        self.y = [Signal(signed(32), name=f"y{i}") for i in range(lanes)]

    @property
    def multiplier_bits(self) -> int:
        """Width of the multiplier operand actually multiplied (0 for power-of-two scales)."""
        return 0 if self.power_of_two else 31

    def elaborate(self, platform):
        m = Module()
        en = self.en
        for lane in range(self.lanes):
            x, mult, shift = self.x[lane], self.m[lane], self.shift[lane]
            # -- multiply -------------------------------------------------------------------
            if self.left_shifts:
                left = Mux(shift > 0, shift, 0)[:5]
                operand = Signal(signed(32), name=f"shifted{lane}")
                m.d.comb += operand.eq((x << left)[:32])          # TFLite's int32 product wraps
            else:
                operand = x
            product = Signal(signed(len(operand) + (31 if not self.power_of_two else 30) + 1),
                             name=f"product{lane}")
            shift_1 = Signal(signed(6), name=f"shift{lane}_1")
            with m.If(en):
                if self.power_of_two:
                    m.d.sync += product.eq(operand << 30)
                else:
                    m.d.sync += product.eq(operand * mult)
                m.d.sync += shift_1.eq(shift)
            # -- high -----------------------------------------------------------------------
            # single rounding adds up to 2^61 before its shift by up to 62
            high_bits = len(product) + 1 if self.rounding == "double" else max(len(product) + 1, 64)
            high = Signal(signed(high_bits), name=f"high{lane}")
            exponent = Signal(6, name=f"exponent{lane}")
            with m.If(en):
                if self.rounding == "double":
                    m.d.sync += high.eq((product + (1 << 30)) >> 31)
                    m.d.sync += exponent.eq(Mux(shift_1 < 0, -shift_1, 0))
                else:
                    total = 31 - shift_1                        # 1..62
                    m.d.sync += high.eq(product + (Const(1, 64) << (total - 1)[:6])[:63])
                    m.d.sync += exponent.eq(total[:6])
            # -- round ----------------------------------------------------------------------
            with m.If(en):
                if self.rounding == "double":
                    mask = Signal(32, name=f"mask{lane}")
                    m.d.comb += mask.eq((Const(1, 33) << exponent[:5])[:33] - 1)
                    threshold = (mask >> 1) + (high < 0)
                    remainder = (high & mask.as_signed())[:32]
                    rounded = (high >> exponent[:5]) + (remainder > threshold)
                    m.d.sync += self.y[lane].eq(rounded[:32])
                else:
                    m.d.sync += self.y[lane].eq((high >> exponent)[:32])
        return m


class Requantizer(wiring.Component):
    """Stream requantizer: int32 accumulators in, ``bits``-bit activations out.

    ``out = clamp(MBQM(acc, multiplier[c], shift[c]) + zero_point, act_min, act_max)``
    for channel ``c = beat_in_pixel * lanes + lane``; the beat in the pixel is counted
    from the frame's ``first`` flag. Full throughput, ``latency`` cycles.

    Ports: ``i`` — :func:`acc_layout` beats; ``o`` — :func:`~convgen.hdl.beats.beat_layout`
    beats of ``bits`` bits.
    """

    def __init__(self, *, lanes, channels, acc_range, multipliers, shifts, zero_point,
                 act_min, act_max, bits, rounding="double"):
        multipliers = np.asarray(multipliers, dtype=np.int64)
        shifts = np.asarray(shifts, dtype=np.int64)
        if channels % lanes:
            raise ValueError(f"lanes must divide channels {channels}, not {lanes}")
        if multipliers.shape != (channels,) or shifts.shape != (channels,):
            raise ValueError(f"multipliers and shifts must have shape ({channels},)")
        qmin, qmax = arith.int_range(bits)
        if not qmin <= act_min <= act_max <= qmax:
            raise ValueError(f"activation range [{act_min}, {act_max}] must lie within "
                             f"[{qmin}, {qmax}] and not be empty")
        self.lanes, self.channels, self.bits = lanes, channels, bits
        self.zero_point, self.act_min, self.act_max = zero_point, act_min, act_max
        self._multipliers, self._shifts = multipliers, shifts
        self._multiply = QuantizedMultiply(lanes, acc_range, multipliers, shifts, rounding)
        super().__init__({
            "i": In(stream.Signature(acc_layout(self._multiply.x_bits, lanes))),
            "o": Out(stream.Signature(beat_layout(bits, lanes))),
        })

    @classmethod
    def for_stage(cls, stage, lanes):
        """The requantizer of a :class:`~convgen.config.ConvStage`."""
        act_min, act_max = stage.activation_range
        return cls(lanes=lanes, channels=stage.output.channels, acc_range=stage.accumulator_range,
                   multipliers=stage.multiplier, shifts=stage.shift,
                   zero_point=stage.output.zero_point, act_min=act_min, act_max=act_max,
                   bits=stage.output.bits, rounding=stage.rounding)

    #: Named stages: operands (accumulators registered, parameters read), the
    #: QuantizedMultiply stages, clamp (zero point added, clamped, narrowed).
    stages = ("operands", *QuantizedMultiply.stages, "clamp")
    latency = len(stages)

    @property
    def power_of_two(self) -> bool:
        """True when no multiplier is built (every scale a power of two)."""
        return self._multiply.power_of_two

    @property
    def acc_bits(self) -> int:
        return self._multiply.x_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.multiply = mult = self._multiply
        lanes, groups = self.lanes, self.channels // self.lanes

        # One enable for the whole pipeline; a bubble travels like a beat.
        en = Signal()
        valid = Signal(self.latency)                 # valid bit of each stage
        flags = [Signal(2, name=f"flags_{s}") for s in self.stages]
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en), mult.en.eq(en)]
        with m.If(en):
            m.d.sync += valid.eq(valid << 1 | self.i.valid)
            m.d.sync += flags[0].eq(Cat(self.i.payload.first, self.i.payload.last))
            for k in range(1, len(flags)):
                m.d.sync += flags[k].eq(flags[k - 1])

        # -- operands: channel group of this beat, parameters from the ROM --------------------
        group = Signal(range(groups), name="group")
        index = Signal(range(groups))
        m.d.comb += index.eq(Mux(self.i.payload.first, 0, group))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += group.eq(Mux(index == groups - 1, 0, index + 1))

        param = data.StructLayout({"m": unsigned(31), "shift": signed(6)})
        row = data.ArrayLayout(param, lanes)
        init = [[{"m": int(self._multipliers[g * lanes + l]), "shift": int(self._shifts[g * lanes + l])}
                 for l in range(lanes)] for g in range(groups)]
        m.submodules.params = rom = Memory(shape=row, depth=groups, init=init)
        port = rom.read_port()
        m.d.comb += [port.addr.eq(index), port.en.eq(en)]
        for lane in range(lanes):
            with m.If(en):
                m.d.sync += mult.x[lane].eq(self.i.payload.data[lane])
            m.d.comb += [mult.m[lane].eq(port.data[lane].m), mult.shift[lane].eq(port.data[lane].shift)]

        # -- clamp: + zero point, clamp, narrow -------------------------------------------------
        for lane in range(lanes):
            biased = (mult.y[lane] + self.zero_point)[:32].as_signed()    # int32 add, as TFLite
            clamped = Mux(biased < self.act_min, self.act_min, Mux(biased > self.act_max, self.act_max, biased))
            with m.If(en):
                m.d.sync += self.o.payload.data[lane].eq(clamped)
        m.d.comb += [self.o.valid.eq(valid[-1]),
                     self.o.payload.first.eq(flags[-1][0]), self.o.payload.last.eq(flags[-1][1])]
        return m

