"""Depthwise convolution: window generator -> KxK per-channel MACs -> requantizer.

:class:`DepthwiseMAC` multiplies each window tap by its channel's weight,
``w[ky, kx, c] * (x + input_offset)``, ``lanes`` channels in parallel (``K^2 * lanes``
multipliers), sums the K^2 products and the bias in a registered adder tree, and emits
exact accumulators (width from the stage's worst case). Weights and biases come from a
ROM with one row per channel group, read in the stage that registers the window.

With ``multipliers="logic"`` and few channel groups the products come from *product
tables* instead of shift-and-add logic (:attr:`DepthwiseMAC.tables`): the input offset is
folded into the bias (``sum_t w_t (x_t + o) = sum_t w_t x_t + o sum_t w_t``), and each tap
``x`` (signed ``bits``) is split into 4-bit digits, the top one signed; a ROM per tap, lane
and digit, addressed by (channel group, digit), holds ``w * digit``, and the product is the
sum of the digits' entries at their weights ``16^d``. With 16 groups a table is one
256-entry block RAM; same stages and latency as the shift-and-add multiplier.

:class:`DepthwiseUnit` wires :class:`~convgen.hdl.window.WindowGenerator`,
:class:`DepthwiseMAC` and :class:`~convgen.hdl.requant.Requantizer` for a
:class:`~convgen.config.Depthwise` stage.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import SkidBuffer, beat_layout
from .mac import MULTIPLY_STAGES, MULTIPLY_STAGE_NAMES, TREE_LEVELS, delayed, GroupCounter, adder_tree, adder_tree_stages, group_rom, product, signed_bits
from .requant import Requantizer, acc_layout
from .window import WindowGenerator, window_layout

__all__ = ["DepthwiseMAC", "DepthwiseUnit", "TABLE_MAX_DEPTH", "TABLE_MAX_COUNT"]

#: Product tables replace logic multipliers when each has at most this many entries
#: (channel groups x 2^digit bits: one iCE40 256 x 16 block RAM) ...
TABLE_MAX_DEPTH = 256
#: ... and the MAC needs at most this many (K^2 x lanes x digits: a 3x3 kernel on one lane
#: with 8-bit inputs takes 18).
TABLE_MAX_COUNT = 18
TABLE_DIGIT_BITS = 4


def table_digits(bits: int):
    """Widths of the 4-bit digits of a signed ``bits``-bit value, lowest first (the last,
    signed, may be narrower)."""
    return [min(TABLE_DIGIT_BITS, bits - lo) for lo in range(0, bits, TABLE_DIGIT_BITS)]


class DepthwiseMAC(wiring.Component):
    """KxK depthwise multiply-accumulate on window beats.

    Parameters
    ----------
    weights : (K, K, C) int array
    bias : (C,) int array
    input_offset : int
        Added to every tap before the multiply (minus the input zero point).
    lanes, bits, weight_bits : int
    acc_range : (int, int)
        Worst-case accumulator range (sizes the output).
    multipliers : "dsp" or "logic"
    tables : bool or None
        Logic multipliers as product tables (see the module docstring); ``None``: when
        they fit :data:`TABLE_MAX_DEPTH` and :data:`TABLE_MAX_COUNT`.

    Ports: ``i`` — window beats; ``o`` — accumulator beats ``lanes x signed(acc_bits)``.
    Latency :attr:`latency` cycles at full rate. ``i.ready`` is a register: the pipeline
    advances while an output skid register is empty (a beat the output does not take moves
    there), so no combinational path runs from ``o.ready`` to ``i.ready``.
    """

    def __init__(self, *, weights, bias, input_offset, lanes, bits, weight_bits, acc_range,
                 multipliers="dsp", tables=None):
        weights, bias = np.asarray(weights, dtype=np.int64), np.asarray(bias, dtype=np.int64)
        k, k2, channels = weights.shape
        if k != k2 or bias.shape != (channels,) or channels % lanes:
            raise ValueError(f"weights must be (K, K, C) and bias (C,) with lanes dividing C; "
                             f"got {weights.shape}, {bias.shape}, lanes {lanes}")
        self.kernel, self.channels, self.lanes = k, channels, lanes
        self.bits, self.weight_bits, self.input_offset = bits, weight_bits, input_offset
        self._weights, self._bias = weights, bias
        if multipliers not in MULTIPLY_STAGES:
            raise ValueError(f"multipliers must be one of {', '.join(MULTIPLY_STAGES)}, not {multipliers!r}")
        self.multiplier_kind = multipliers
        groups, digits = channels // lanes, table_digits(bits)
        fits = (groups << max(digits) <= TABLE_MAX_DEPTH and k * k * lanes * len(digits) <= TABLE_MAX_COUNT)
        if tables and multipliers != "logic":
            raise ValueError("product tables replace logic multipliers: multipliers must be 'logic'")
        self.tables = multipliers == "logic" and (fits if tables is None else bool(tables))
        self.acc_bits = signed_bits(*acc_range)
        w_abs = int(np.abs(weights).reshape(-1, channels).sum(axis=0).max())
        if self.tables:
            # the offset folded into the bias; the taps are the raw inputs, |x| <= 2^(bits-1)
            self._bias = bias + input_offset * weights.reshape(-1, channels).sum(axis=0)
            worst = w_abs * (1 << (bits - 1)) + int(np.abs(self._bias).max())
        else:
            # Partial sums of the tree: every tap at its largest magnitude, plus the bias.
            x_max = (1 << bits) - 1 + 0      # |x + offset| <= 2^bits - 1
            worst = w_abs * x_max + int(np.abs(bias).max())
        self.bias_bits = max(32, signed_bits(int(self._bias.min()), int(self._bias.max())))
        self.tree_bits = max(signed_bits(-worst, worst), self.acc_bits)
        super().__init__({
            "i": In(stream.Signature(window_layout(bits, lanes, k))),
            "o": Out(stream.Signature(acc_layout(self.acc_bits, lanes))),
        })

    @classmethod
    def for_stage(cls, stage, *, tables=None):
        return cls(weights=stage.weights, bias=stage.bias, input_offset=stage.input_offset,
                   lanes=stage.lanes, bits=stage.input.bits, weight_bits=stage.weight_bits,
                   acc_range=stage.accumulator_range, multipliers=stage.multipliers, tables=tables)

    @property
    def stages(self):
        """operands (taps + offset, weights read), weights (the ROM's output registered, so no
        block RAM drives a multiplier), multiply (two stages), the adder tree's stages."""
        tree = adder_tree_stages(self.kernel ** 2 + 1, levels_per_stage=TREE_LEVELS[self.multiplier_kind])
        multiply = MULTIPLY_STAGE_NAMES[self.multiplier_kind]     # logic: rows (or table reads), multiply
        return ("operands", "weights", *multiply, *(f"sum{k}" for k in range(tree)))

    @property
    def latency(self):
        return len(self.stages)

    @property
    def multipliers(self) -> int:
        return self.kernel ** 2 * self.lanes

    def _table_products(self, m, en, x, group):
        """Products ``w[t, c] * x[t][l]`` from the tables, registered three times (the table
        read, its data in a reset-less register with nothing between, so on ECP5 the
        DP16KD's output register, then the digits' sum); ``x`` and ``group`` are the
        registered taps and their group."""
        K2, L = self.kernel ** 2, self.lanes
        w = self._weights.reshape(K2, -1)
        G, digits = self.channels // L, table_digits(self.bits)
        products = [[None] * K2 for _ in range(L)]
        for t in range(K2):
            for l in range(L):
                terms, lo = [], 0
                for d, width in enumerate(digits):
                    signed_digit = d == len(digits) - 1
                    values = [v - (1 << width) if signed_digit and v >> (width - 1) else v
                              for v in range(1 << width)]
                    init = [int(w[t, g * L + l]) * v for g in range(G) for v in values]
                    shape = signed(signed_bits(min(init), max(init)))
                    data_out = group_rom(m, f"table{t}_{l}_{d}", shape, init, Cat(x[t][l][lo:lo + width], group), en)
                    held = Signal(shape, name=f"table{t}_{l}_{d}_data", reset_less=True)
                    with m.If(en):
                        m.d.sync += held.eq(data_out)
                    terms.append((held, lo))
                    lo += width
                out = Signal(signed(self.bits + self.weight_bits), name=f"p{t}_{l}")
                total = terms[0][0]
                for value, shift in terms[1:]:
                    total = total + (value << shift)
                with m.If(en):
                    m.d.sync += out.eq(total)
                products[l][t] = out
        return products

    def elaborate(self, platform):
        m = Module()
        K2, L, G = self.kernel ** 2, self.lanes, self.channels // self.lanes
        # The pipeline advances while the output skid register is empty, so the input's ready
        # is a register (no combinational path from o.ready to i.ready); see _tree_and_flags.
        # The flag is stored as "empty", so `en` is that flip-flop itself (a clock enable
        # without inversion, which a block RAM output register can absorb).
        en = Signal()
        skid_empty = Signal(init=1, name="out_skid_empty")
        m.d.comb += [en.eq(skid_empty), self.i.ready.eq(en)]
        self._skid_empty = skid_empty
        if self.tables:
            return self._elaborate_tables(m, en)

        # operands: taps + input offset registered; this group's weights and biases read.
        group = GroupCounter(m, self.i, G)
        row = data.StructLayout({"w": data.ArrayLayout(data.ArrayLayout(signed(self.weight_bits), L), K2),
                                 "bias": data.ArrayLayout(signed(32), L)})
        rows = [{"w": [[int(self._weights.reshape(K2, -1)[t, g * L + l]) for l in range(L)] for t in range(K2)],
                 "bias": [int(self._bias[g * L + l]) for l in range(L)]} for g in range(G)]
        # The ROM is read at the group counter (a register, no logic before the ROM); a
        # frame's first beat (group 0 whatever the counter says) takes row 0 in the next stage.
        params = group_rom(m, "weights", row, rows, group.count, en)
        first = Signal(name="first_beat")
        taps = [[Signal(signed(self.bits + 1), name=f"tap{t}_{l}") for l in range(L)] for t in range(K2)]
        with m.If(en):
            m.d.sync += first.eq(self.i.payload.first)
            for t in range(K2):
                for l in range(L):
                    m.d.sync += taps[t][l].eq(self.i.payload.data[t][l] + self.input_offset)

        # multiply: K^2 x lanes products and the bias, registered.
        # weights: the ROM output and the taps registered once more
        weights = Signal(row, name="weights")
        with m.If(en):
            m.d.sync += weights.eq(Mux(first, row.const(rows[0]).as_value(), params.as_value()))
        taps = [delayed(m, en, taps[t], 1, signed(self.bits + 1), f"tap{t}_{{}}_w") for t in range(K2)]
        params = weights

        products = [[product(m, en, taps[t][l], params.w[t][l], kind=self.multiplier_kind, name=f"p{t}_{l}")
                     for t in range(K2)] for l in range(L)]
        bias = delayed(m, en, [params.bias[l] for l in range(L)], MULTIPLY_STAGES[self.multiplier_kind],
                       signed(32), "bias{}")

        self._tree_and_flags(m, en, products, bias)
        return m

    def _elaborate_tables(self, m, en):
        """The MAC with product tables: the same stages as with shift-and-add multipliers."""
        K2, L, G = self.kernel ** 2, self.lanes, self.channels // self.lanes
        # operands: the raw taps and their group registered; this group's biases read.
        group = GroupCounter(m, self.i, G)
        row = data.StructLayout({"bias": data.ArrayLayout(signed(self.bias_bits), L)})
        rows = [{"bias": [int(self._bias[g * L + l]) for l in range(L)]} for g in range(G)]
        params = group_rom(m, "biases", row, rows, group.index, en)
        taps = [[Signal(signed(self.bits), name=f"tap{t}_{l}") for l in range(L)] for t in range(K2)]
        tap_group = Signal(range(G), name="tap_group")
        with m.If(en):
            m.d.sync += [taps[t][l].eq(self.i.payload.data[t][l]) for t in range(K2) for l in range(L)]
            m.d.sync += tap_group.eq(group.index)
        # weights: the biases, taps and group registered once more (the tables' address)
        biases = Signal(row, name="biases")
        with m.If(en):
            m.d.sync += biases.eq(params)
        taps = [delayed(m, en, taps[t], 1, signed(self.bits), f"tap{t}_{{}}_w") for t in range(K2)]
        (tap_group,) = delayed(m, en, [tap_group], 1, range(G), "tap_group_w")
        products = self._table_products(m, en, taps, tap_group)
        bias = delayed(m, en, [biases.bias[l] for l in range(L)], MULTIPLY_STAGES["logic"],
                       signed(self.bias_bits), "bias{}")
        self._tree_and_flags(m, en, products, bias)
        return m

    def _tree_and_flags(self, m, en, products, bias):
        """The adder tree per lane over the products and the bias; valid and flags alongside;
        the output skid register.

        The pipeline advances on ``en``, "the skid register is empty". Its last stage drives
        ``o`` directly (no added latency); a beat the output does not take as the pipeline
        advances moves to the skid register, which then drives ``o`` while the pipeline
        holds."""
        L = self.lanes
        sums = []
        tree_stages = 0
        for l in range(L):
            total, tree_stages = adder_tree(m, en, products[l] + [bias[l]], width=self.tree_bits, name=f"lane{l}",
                                            levels_per_stage=TREE_LEVELS[self.multiplier_kind])
            sums.append(total)
        pipe = Signal.like(self.o.payload, name="pipe_out")
        for l in range(L):
            m.d.comb += pipe.data[l].eq(sums[l])

        # valid and flags travel with the data.
        depth = 2 + MULTIPLY_STAGES[self.multiplier_kind] + tree_stages
        valid = Signal(depth)
        flags = [Signal(2, name=f"flags{k}") for k in range(depth)]
        with m.If(en):
            m.d.sync += valid.eq(Cat(self.i.valid, valid[:-1]))
            m.d.sync += flags[0].eq(Cat(self.i.payload.first, self.i.payload.last))
            for k in range(1, depth):
                m.d.sync += flags[k].eq(flags[k - 1])
        m.d.comb += [pipe.first.eq(flags[-1][0]), pipe.last.eq(flags[-1][1])]

        skid_empty = self._skid_empty
        skid = Signal.like(self.o.payload, name="out_skid")
        m.d.comb += [self.o.valid.eq(~skid_empty | valid[-1]),
                     self.o.payload.eq(Mux(skid_empty, pipe, skid))]
        with m.If(~skid_empty):
            with m.If(self.o.ready):
                m.d.sync += skid_empty.eq(1)
        with m.Elif(valid[-1] & ~self.o.ready):
            m.d.sync += [skid.eq(pipe), skid_empty.eq(0)]


class DepthwiseUnit(wiring.Component):
    """A whole :class:`~convgen.config.Depthwise` stage: pixels in, requantized pixels out.

    Ports: ``i`` — input beats (``lanes`` x input bits); ``o`` — output beats
    (``lanes`` x output bits), one per output pixel and channel group, raster order.
    ``tail_wait``: see :class:`~convgen.hdl.window.WindowGenerator`. Skid buffers in front
    of the window and between the window and the MAC make ``i.ready`` and the window's
    ``o.ready`` registers: the window's slot control sees neither its output's nor the
    MAC's stall (whose enable drives every MAC register) through logic.
    """

    def __init__(self, stage, tail_wait=None, *, tables=None):
        self.stage = stage
        self.skid = SkidBuffer(beat_layout(stage.input.bits, stage.lanes))
        self.window = WindowGenerator.for_stage(stage, tail_wait)
        self.window_skid = SkidBuffer(self.window.o.payload.shape())
        self.mac = DepthwiseMAC.for_stage(stage, tables=tables)
        self.requant = Requantizer.for_stage(stage, stage.lanes)
        super().__init__({
            "i": In(stream.Signature(beat_layout(stage.input.bits, stage.lanes))),
            "o": Out(stream.Signature(beat_layout(stage.output.bits, stage.lanes))),
        })

    @property
    def latency(self) -> int:
        """Cycles from the input beat that completes a window to its output beat."""
        return (self.skid.latency + self.window.latency + self.window_skid.latency + self.mac.latency
                + self.requant.latency)

    def elaborate(self, platform):
        m = Module()
        m.submodules.input_skid = self.skid    # not "skid": the buffer has a signal of that name
        m.submodules.window = self.window
        m.submodules.window_skid = self.window_skid
        m.submodules.mac = self.mac
        m.submodules.requant = self.requant
        wiring.connect(m, wiring.flipped(self.i), self.skid.i)
        wiring.connect(m, self.skid.o, self.window.i)
        wiring.connect(m, self.window.o, self.window_skid.i)
        wiring.connect(m, self.window_skid.o, self.mac.i)
        wiring.connect(m, self.mac.o, self.requant.i)
        wiring.connect(m, self.requant.o, wiring.flipped(self.o))
        return m
