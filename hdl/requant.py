"""Requantization: TFLite ``MultiplyByQuantizedMultiplier`` per lane, then zero point and clamp.

:class:`QuantizedMultiply` is a pipelined block (one enable, no handshake) that
computes, per lane, exactly :func:`convgen.sim.arith.multiply_by_quantized_multiplier`
with that lane's multiplier and shift presented alongside the value. Stages:

* *factors*: ``x' = wrap32(x << left)`` (only when a shift is positive) and the 31-bit
  multiplier registered, in slices: 17-bit slices of the multiplier, of ``x'`` when it is
  wider than 18 bits (the input registers of one :class:`~convgen.hdl.dsp.Multiply` per
  pair of slices: a MULT18X18D's on ECP5);
* *multiply*: the partial products registered (the DSP's output register): no adder
  behind a DSP;
* *sum*: ``s = x' * m``, the partial products added (``double`` with more than two
  partials: only each operand slice's, one adder per slice side by side);
* *total*: ``s`` registered (the slices' sums added, or ``s`` held; ``double``: only its
  bits from 30 up, all that *high* uses), so each stage has one carry chain;
* *high*: ``double``: ``h = floor((s + 2^30) / 2^31) = ((s >> 30) + 1) >> 1``
  (``SaturatingRoundingDoublingHighMul``, which never saturates for ``m < 2^31``);
  ``single``: ``h = ((s >> (30 - shift)) + 1) >> 1``, the whole result;
* *shift*: ``double``: ``q = h >> e`` and the rounding decision
  ``(h & (2^e - 1)) > ((2^e - 1) >> 1) + (h < 0)`` (``RoundingDivideByPOT``);
* *round*: ``y = q + decision``.

Shift amounts select among the values the stage actually uses (a few constants,
so no barrel shifter) unless there are many. When every multiplier is ``2^30`` (a
power-of-two scale) no multiplier is built: ``s = x' << 30``.

:class:`Requantizer` is the stream component of a convolution's output: per-channel
parameters from a ROM (addressed by the channel group of each beat and read in the
same stage that registers the accumulators, so they stay aligned), the accumulator
saturated to the range outside which the output is clamped anyway
(:func:`saturation_range`, which narrows the multiplier's operand), the multiply,
then ``+ zero_point`` and the activation clamp.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

import numpy as np

from ..sim import arith
from .beats import beat_layout
from .dsp import Multiply
from .mac import group_rom

__all__ = ["QuantizedMultiply", "Requantizer", "acc_layout", "saturation_range", "clamp_biased"]

#: Bits of the multiplier per partial product: 17 unsigned bits are an 18-bit signed
#: DSP operand (ECP5 MULT18X18D), so a 31-bit multiplier takes two.
MULTIPLIER_SLICE = 17

#: Up to this many distinct shift amounts are selected from constants; more use a barrel shifter.
MAX_SELECTED_SHIFTS = 8


def acc_layout(acc_bits: int, lanes: int) -> data.StructLayout:
    """Accumulator beats: ``{data: lanes x signed(acc_bits), first, last}``."""
    return beat_layout(acc_bits, lanes)


def _signed_bits(lo: int, hi: int) -> int:
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1


def _mbqm_exact(x: int, multiplier: int, shift: int, rounding: str):
    """MBQM of one value without any int32 wrap; ``None`` where TFLite's would wrap."""
    if rounding == "double":
        left = max(shift, 0)
        shifted = x << left
        if not arith.INT32_MIN <= shifted <= arith.INT32_MAX:
            return None
        return int(arith.multiply_by_quantized_multiplier(shifted, multiplier, min(shift, 0), rounding))
    total = 31 - shift
    value = (x * multiplier + (1 << (total - 1))) >> total
    return value if arith.INT32_MIN <= value <= arith.INT32_MAX else None


def saturation_range(x_range, multipliers, shifts, zero_point, act_min, act_max, rounding="double"):
    """The smallest ``[lo, hi]`` within ``x_range`` such that saturating ``x`` to it never
    changes ``clamp(MBQM(x, m[c], s[c]) + zero_point, act_min, act_max)`` for any channel.

    ``MBQM + zero_point`` is non-decreasing in ``x`` when nothing wraps int32 over
    ``x_range`` (checked at both ends; otherwise ``x_range`` is returned unchanged). Then
    every ``x`` at or above the first value that reaches ``act_max`` in channel ``c``
    gives ``act_max`` there: ``hi`` is the largest of those first values over the
    channels, ``lo`` likewise for ``act_min``.
    """
    lo, hi = (int(v) for v in x_range)
    multipliers = [int(v) for v in np.asarray(multipliers).reshape(-1)]
    shifts = [int(v) for v in np.asarray(shifts).reshape(-1)]
    for m_c, s_c in zip(multipliers, shifts):
        for x in (lo, hi):
            y = _mbqm_exact(x, m_c, s_c, rounding)
            if y is None or not arith.INT32_MIN <= y + zero_point <= arith.INT32_MAX:
                return lo, hi
    m_arr, s_arr = np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64)

    def out(x):       # no wrap anywhere in [lo, hi] (checked above), so this is exact
        return arith.multiply_by_quantized_multiplier(x, m_arr, s_arr, rounding) + zero_point

    def first_reaching(predicate, upward):
        """Per channel: the first x (from lo upward, or from hi downward) satisfying predicate."""
        a, b = np.full(len(m_arr), lo, np.int64), np.full(len(m_arr), hi, np.int64)
        while np.any(a < b):
            mid = (a + b + (0 if upward else 1)) // 2
            ok = predicate(out(mid))
            if upward:
                a, b = np.where(ok, a, mid + 1), np.where(ok, mid, b)
            else:
                a, b = np.where(ok, mid, a), np.where(ok, b, mid - 1)
        return a

    top = first_reaching(lambda y: y >= act_max, upward=True)
    top = np.where(out(np.full(len(m_arr), hi, np.int64)) >= act_max, top, hi)
    bottom = first_reaching(lambda y: y <= act_min, upward=False)
    bottom = np.where(out(np.full(len(m_arr), lo, np.int64)) <= act_min, bottom, lo)
    return int(bottom.min()), int(top.max())


def _wrap32(value):
    """``value`` as int32, wrapping like TFLite's int32 arithmetic."""
    return value[:32].as_signed() if len(value) > 32 else value


def clamp_biased(y, y_bits: int, zero_point: int, act_min: int, act_max: int):
    """``clamp(y + zero_point, act_min, act_max)`` with TFLite's int32 (wrapping) add.

    When the sum cannot wrap, ``y`` is compared with the bounds minus the zero point, in
    parallel with the add (no comparator behind the adder)."""
    if max(y_bits, _signed_bits(zero_point, zero_point)) + 1 > 32:
        biased = (y + zero_point)[:32].as_signed()
        return Mux(biased < act_min, act_min, Mux(biased > act_max, act_max, biased))
    return Mux(y < act_min - zero_point, act_min, Mux(y > act_max - zero_point, act_max, y + zero_point))


def _select(key, values, expr, generic=None):
    """``expr(v)`` for the ``v`` in ``values`` equal to ``key``: a chain of muxes over the
    few values a stage uses, or ``generic(key)`` (default ``expr(key)``) when there are many."""
    values = sorted(set(values))
    if len(values) > MAX_SELECTED_SHIFTS:
        return (generic or expr)(key)
    result = expr(values[-1])
    for v in reversed(values[:-1]):
        result = Mux(key == v, expr(v), result)
    return result


class QuantizedMultiply(Elaboratable):
    """Per-lane ``MultiplyByQuantizedMultiplier``, pipelined, advancing when ``en`` is high.

    Parameters
    ----------
    lanes : int
    x_range : (int, int)
        Range of the input values (their width follows: unsigned when ``lo >= 0``); within int32.
    multipliers, shifts : array of int
        Every (multiplier, shift) pair the block may see; they size the datapath, select
        the power-of-two form and the shift amounts built. The values actually used come
        in on ``m``, ``shift`` per lane (aligned with ``x``).
    rounding : ``"double"`` or ``"single"``

    Attributes
    ----------
    en : Signal, in
    x : list of Signal(signed or unsigned ``x_bits``), in, one per lane
    m : list of Signal(unsigned(31)), in
    shift : list of Signal(signed(6)), in
        All three are registered by the first stage (*factors*): drive them from logic,
        not from a register, or that register is a stage of its own.
    y : list of Signal(signed(y_bits)), out, ``latency`` enabled cycles after ``x``
        (``y_bits <= 32``: the int32 result, wrapped as TFLite's cast does)
    """

    #: Named stages (see the module docstring).
    stages = ("factors", "multiply", "sum", "total", "high", "shift", "round")
    latency = len(stages)

    def __init__(self, lanes, x_range, multipliers, shifts, rounding="double"):
        multipliers = np.asarray(multipliers, dtype=np.int64).reshape(-1)
        shifts = np.asarray(shifts, dtype=np.int64).reshape(-1)
        if rounding not in arith.ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(arith.ROUNDINGS)}, not {rounding!r}")
        lo, hi = (int(v) for v in x_range)
        if lo < arith.INT32_MIN or hi > arith.INT32_MAX:
            raise ValueError(f"x_range must lie within int32, not {x_range}")
        self.lanes = lanes
        self.rounding = rounding
        self.power_of_two = bool(np.all(multipliers == arith.POWER_OF_TWO_MULTIPLIER))
        self.left_shifts = bool(rounding == "double" and np.any(shifts > 0))
        self._lefts = sorted({max(int(s), 0) for s in shifts})
        self._exponents = sorted({max(-int(s), 0) for s in shifts})        # double: right shifts
        self._totals = sorted({31 - int(s) for s in shifts})               # single: 1..62
        self.x_unsigned = lo >= 0 and not self.left_shifts
        self.x_bits = max(hi.bit_length(), 1) if self.x_unsigned else _signed_bits(lo, hi)
        operand_bits = 32 if self.left_shifts else self.x_bits
        # s = x' * m: |m| < 2^31 (or m = 2^30); h = s >> 31 (double) or s >> total (single)
        self._s_bits = operand_bits + 31 + (1 if self.x_unsigned else 0)
        h_bits = self._s_bits - 30 + 1
        self.y_bits = min(h_bits, 32)
        # The operand in slices for 18x18 DSPs: 17-bit unsigned low slices while more than 18
        # bits remain, then the top slice (signed when the operand is); a top slice of at most
        # 3 bits is multiplied in logic (shift-and-add of the whole multiplier).
        self._operand_slices, low = [], 0
        while operand_bits - low > 18:
            self._operand_slices.append((low, MULTIPLIER_SLICE))
            low += MULTIPLIER_SLICE
        self._operand_slices.append((low, operand_bits - low))
        self._logic_top = len(self._operand_slices) > 1 and operand_bits - low <= 3
        shape = unsigned(self.x_bits) if self.x_unsigned else signed(self.x_bits)
        self.en = Signal()
        self.x = [Signal(shape, name=f"x{i}") for i in range(lanes)]
        self.m = [Signal(unsigned(31), name=f"m{i}") for i in range(lanes)]
        self.shift = [Signal(signed(6), name=f"shift{i}") for i in range(lanes)]
        self.y = [Signal(signed(self.y_bits), name=f"y{i}") for i in range(lanes)]

    @property
    def multiplier_bits(self) -> int:
        """Width of the multiplier operand actually multiplied (0 for power-of-two scales)."""
        return 0 if self.power_of_two else 31

    @property
    def dsp_operand_bits(self) -> int:
        """Width of the operand side of each DSP partial product (0 without a multiplier)."""
        if self.power_of_two:
            return 0
        in_dsp = self._operand_slices[:-1] if self._logic_top else self._operand_slices
        return max(width for _, width in in_dsp)

    @property
    def partial_products(self) -> int:
        """18x18 DSP products per lane: operand slices in DSPs x multiplier slices."""
        if self.power_of_two:
            return 0
        in_dsp = len(self._operand_slices) - (1 if self._logic_top else 0)
        return in_dsp * -(-31 // MULTIPLIER_SLICE)

    def elaborate(self, platform):
        m = Module()
        for lane in range(self.lanes):
            self._lane(m, lane)
        return m

    def _lane(self, m, lane):
        en, x, mult, shift = self.en, self.x[lane], self.m[lane], self.shift[lane]

        def stage(name, value, shape=None):
            # Reset-less: the valid bits beside the pipeline say which values count.
            reg = Signal(shape if shape is not None else value.shape(), name=f"{name}{lane}",
                         reset_less=True)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        # -- factors ------------------------------------------------------------------------
        if self.left_shifts:
            operand = Signal(signed(32), name=f"shifted{lane}")
            left = Signal(5, name=f"left{lane}")
            m.d.comb += left.eq(Mux(shift > 0, shift, 0)[:5])
            m.d.comb += operand.eq(_select(left, self._lefts, lambda v: _wrap32(x << v)))
        else:
            operand = x
        shift_0 = stage("shift_0_", shift)
        # -- multiply -----------------------------------------------------------------------
        if self.power_of_two:
            partials = [stage("scaled", stage("factor", operand))]
            weights, slice_of = [30], [0]
        else:
            # Every (operand slice, multiplier slice) product is one DSP Multiply (factors and
            # product registered); a small top operand slice is multiplied in logic instead,
            # from registered factors, also registered.
            partials, weights, slice_of = [], [], []          # slice_of: the operand slice
            signed_operand = operand.shape().signed
            for i, (low, width) in enumerate(self._operand_slices):
                top = i == len(self._operand_slices) - 1
                piece = operand[low:low + width]
                if top and signed_operand:
                    piece = piece.as_signed()
                if top and self._logic_top:
                    piece = stage("factor_top", piece)
                    mult_0 = stage("multiplier_0_", mult)
                    terms = [Mux(piece[k], mult_0 << k, 0) for k in range(width)]
                    logic = terms[0]
                    for k, term in enumerate(terms[1:], 1):
                        negative = signed_operand and k == width - 1
                        logic = (logic - term) if negative else (logic + term)
                    partials.append(stage("partial_top", logic, signed(31 + width + 1)))
                    weights.append(low)
                    slice_of.append(i)
                    continue
                for j, m_low in enumerate(range(0, 31, MULTIPLIER_SLICE)):
                    m_piece = mult[m_low:min(m_low + MULTIPLIER_SLICE, 31)]
                    mul = Multiply(piece.shape(), m_piece.shape())
                    m.submodules[f"partial{i}_{j}_{lane}"] = mul
                    m.d.comb += [mul.en.eq(en), mul.a.eq(piece), mul.b.eq(m_piece)]
                    partials.append(mul.p)
                    weights.append(low + m_low)
                    slice_of.append(i)
        shift_1 = stage("shift_1_", shift_0)

        # -- sum ----------------------------------------------------------------------------
        def total(terms):
            value = terms[0][0] << terms[0][1]
            for p, w in terms[1:]:
                value = value + (p << w)
            return value

        terms = list(zip(partials, weights))
        if self.rounding == "double" and len(terms) > 2:
            # The partials of each operand slice added here (adders side by side, one per
            # slice: no chain of adders behind the DSPs), the slices' sums in *total*.
            rows = []
            for i, (low, _) in enumerate(self._operand_slices):
                row = [(p, w - low) for p, w, k in zip(partials, weights, slice_of) if k == i]
                rows.append((stage(f"row{i}_", total(row)), low))
            s = total(rows)
        else:
            s = stage("product", total(terms), signed(self._s_bits))
        shift_2 = stage("shift_2_", stage("shift_total_", shift_1))

        # -- total, high --------------------------------------------------------------------
        if self.rounding == "double":
            # h = ((s >> 30) + 1) >> 1: the bits of s the rounding uses, then the increment.
            s_top = stage("total", s >> 30, signed(self._s_bits - 30))
            high = stage("high", (s_top + 1) >> 1)
            exponent = stage("exponent", Mux(shift_2 < 0, -shift_2, 0)[:5], unsigned(5))
        else:
            # floor((s + 2^(T-1)) / 2^T) = ((s >> (T-1)) + 1) >> 1, T = 31 - shift in 1..62
            s = stage("total", s, signed(self._s_bits))
            top = _select(shift_2, [31 - t for t in self._totals], lambda v: s >> (30 - v),
                          lambda sh: s >> (30 - sh)[:6])
            high = stage("high", (top + 1) >> 1)
            exponent = None

        # -- shift --------------------------------------------------------------------------
        if self.rounding == "double":
            # RoundingDivideByPOT: q = h >> e, up when h mod 2^e exceeds (2^e - 1) >> 1 plus the
            # sign. Per constant e the test is a comparison of h's low bits with a constant,
            # decided here so that the round stage is only the increment.
            negative = high < 0

            def up_const(e):
                if e == 0:
                    return Const(0, 1)
                half = ((1 << e) - 1) >> 1
                return Mux(negative, high[:e] > half + 1, high[:e] > half)

            def up_generic(e):
                mask = ((Const(1, 33) << e) - 1)[:32]
                return (high & mask)[:32] > (mask >> 1) + negative

            quotient = stage("quotient", _select(exponent, self._exponents, lambda e: high >> e), high.shape())
            round_up = stage("round_up", _select(exponent, self._exponents, up_const, up_generic), unsigned(1))
        else:
            quotient = stage("quotient", high)
            round_up = Const(0, 1)

        # -- round --------------------------------------------------------------------------
        rounded = quotient + round_up
        with m.If(en):
            m.d.sync += self.y[lane].eq(rounded[:self.y_bits])


class Requantizer(wiring.Component):
    """Stream requantizer: int32 accumulators in, ``bits``-bit activations out.

    ``out = clamp(MBQM(acc, multiplier[c], shift[c]) + zero_point, act_min, act_max)``
    for channel ``c = beat_in_pixel * lanes + lane``; the beat in the pixel is counted
    from the frame's ``first`` flag. Full throughput, ``latency`` cycles.

    Ports: ``i`` — :func:`acc_layout` beats of ``acc_bits`` (from ``acc_range``);
    ``o`` — :func:`~convgen.hdl.beats.beat_layout` beats of ``bits`` bits.
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
        lo, hi = (int(v) for v in acc_range)
        if lo < arith.INT32_MIN or hi > arith.INT32_MAX:
            raise ValueError(f"acc_range must lie within int32, not {acc_range}")
        self.lanes, self.channels, self.bits = lanes, channels, bits
        self.zero_point, self.act_min, self.act_max = zero_point, act_min, act_max
        self._multipliers, self._shifts = multipliers, shifts
        self.acc_bits = _signed_bits(lo, hi)
        #: The accumulator is saturated to this range before the multiply (same outputs).
        self.saturation = saturation_range((lo, hi), multipliers, shifts, zero_point, act_min, act_max,
                                           rounding)
        self._multiply = QuantizedMultiply(lanes, self.saturation, multipliers, shifts, rounding)
        super().__init__({
            "i": In(stream.Signature(acc_layout(self.acc_bits, lanes))),
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

    #: Named stages: operands (accumulators registered and compared with the saturation
    #: bounds, their channel group's parameters read), saturate (to :attr:`saturation`,
    #: into the QuantizedMultiply's *factors* registers), the other QuantizedMultiply
    #: stages, clamp (zero point added, clamped, narrowed).
    stages = ("operands", "saturate", *QuantizedMultiply.stages[1:], "clamp")
    latency = len(stages)

    @property
    def power_of_two(self) -> bool:
        """True when no multiplier is built (every scale a power of two)."""
        return self._multiply.power_of_two

    @property
    def dsp_operand_bits(self) -> int:
        """Width of the accumulator side of each DSP partial product, signed or (when the
        saturated accumulator is never negative) unsigned; 0 when none is built."""
        return self._multiply.dsp_operand_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.multiply = mult = self._multiply
        lanes, groups = self.lanes, self.channels // self.lanes

        # One enable for the whole pipeline; a bubble travels like a beat. It is o.ready
        # alone (not also "the output is empty"): the consumer's ready is a register in the
        # engine (a skid buffer or a gather), so i.ready is that register, and the unit in
        # front of the requantizer decides its own enable from registers.
        en = Signal()
        valid = Signal(self.latency)                 # valid bit of each stage
        flags = [Signal(2, name=f"flags_{s}") for s in self.stages]
        m.d.comb += [en.eq(self.o.ready), self.i.ready.eq(en), mult.en.eq(en)]
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
        # The ROM is read at the group counter (a register: no logic in front of the ROM)
        # while the accumulators are registered (operands). A frame's first beat is group 0
        # whatever the counter holds: its row, a constant, is selected after the read. The
        # parameters arrive with the accumulator; both go through saturate into the
        # multiply's factor registers.
        first_1 = Signal(name="first_1")
        with m.If(en):
            m.d.sync += first_1.eq(self.i.payload.first)
        params_read = group_rom(m, "params", row, init, group, en)
        params = Signal(row, name="params")
        m.d.comb += params.eq(Mux(first_1, row.const(init[0]), params_read))
        sat_lo, sat_hi = self.saturation
        acc_lo, acc_hi = arith.int_range(self.acc_bits)
        for lane in range(lanes):
            acc = Signal(signed(self.acc_bits), name=f"acc{lane}")
            above, below = Signal(name=f"above{lane}"), Signal(name=f"below{lane}")
            # the bounds compared as the accumulator is registered, so that saturate is a mux
            # in front of the multiply's factor registers
            value = self.i.payload.data[lane]
            with m.If(en):
                m.d.sync += [acc.eq(value), above.eq(value > sat_hi), below.eq(value < sat_lo)]
            # -- saturate -----------------------------------------------------------------------
            saturated = acc
            if sat_lo > acc_lo:
                saturated = Mux(below, sat_lo, saturated)
            if sat_hi < acc_hi:
                saturated = Mux(above, sat_hi, saturated)
            m.d.comb += [mult.x[lane].eq(saturated),
                         mult.m[lane].eq(params[lane].m), mult.shift[lane].eq(params[lane].shift)]

        # -- clamp: + zero point, clamp, narrow -------------------------------------------------
        for lane in range(lanes):
            with m.If(en):
                m.d.sync += self.o.payload.data[lane].eq(
                    clamp_biased(mult.y[lane], mult.y_bits, self.zero_point, self.act_min, self.act_max))
        m.d.comb += [self.o.valid.eq(valid[-1]),
                     self.o.payload.first.eq(flags[-1][0]), self.o.payload.last.eq(flags[-1][1])]
        return m
