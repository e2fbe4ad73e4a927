"""Depthwise convolution: window generator -> KxK per-channel MACs -> requantizer.

:class:`DepthwiseMAC` multiplies each window tap by its channel's weight,
``w[ky, kx, c] * (x + input_offset)``, ``lanes`` channels in parallel (``K^2 * lanes``
multipliers), sums the K^2 products and the bias in a registered adder tree, and emits
exact accumulators (width from the stage's worst case). Weights and biases come from a
ROM with one row per channel group, read in the stage that registers the window.

:class:`DepthwiseUnit` wires :class:`~convgen.hdl.window.WindowGenerator`,
:class:`DepthwiseMAC` and :class:`~convgen.hdl.requant.Requantizer` for a
:class:`~convgen.config.Depthwise` stage.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import beat_layout
from .mac import MULTIPLY_STAGES, MULTIPLY_STAGE_NAMES, delayed, GroupCounter, adder_tree, adder_tree_stages, group_rom, product, signed_bits
from .requant import Requantizer, acc_layout
from .window import WindowGenerator, window_layout

__all__ = ["DepthwiseMAC", "DepthwiseUnit"]


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

    Ports: ``i`` — window beats; ``o`` — accumulator beats ``lanes x signed(acc_bits)``.
    """

    def __init__(self, *, weights, bias, input_offset, lanes, bits, weight_bits, acc_range,
                 multipliers="dsp"):
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
        self.acc_bits = signed_bits(*acc_range)
        # Partial sums of the tree: every tap at its largest magnitude, plus the bias.
        x_max = (1 << bits) - 1 + 0      # |x + offset| <= 2^bits - 1
        worst = int(np.abs(weights).reshape(-1, channels).sum(axis=0).max()) * x_max + int(np.abs(bias).max())
        self.tree_bits = max(signed_bits(-worst, worst), self.acc_bits)
        super().__init__({
            "i": In(stream.Signature(window_layout(bits, lanes, k))),
            "o": Out(stream.Signature(acc_layout(self.acc_bits, lanes))),
        })

    @classmethod
    def for_stage(cls, stage):
        return cls(weights=stage.weights, bias=stage.bias, input_offset=stage.input_offset,
                   lanes=stage.lanes, bits=stage.input.bits, weight_bits=stage.weight_bits,
                   acc_range=stage.accumulator_range, multipliers=stage.multipliers)

    @property
    def stages(self):
        """operands (taps + offset, weights read), weights (the ROM's output registered, so no
        block RAM drives a multiplier), multiply (two stages), the adder tree's stages."""
        tree = adder_tree_stages(self.kernel ** 2 + 1)
        multiply = MULTIPLY_STAGE_NAMES[self.multiplier_kind]
        return ("operands", "weights", *multiply, *(f"sum{k}" for k in range(tree)))

    @property
    def latency(self):
        return len(self.stages)

    @property
    def multipliers(self) -> int:
        return self.kernel ** 2 * self.lanes

    def elaborate(self, platform):
        m = Module()
        K2, L, G = self.kernel ** 2, self.lanes, self.channels // self.lanes
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        # operands: taps + input offset registered; this group's weights and biases read.
        group = GroupCounter(m, self.i, G)
        row = data.StructLayout({"w": data.ArrayLayout(data.ArrayLayout(signed(self.weight_bits), L), K2),
                                 "bias": data.ArrayLayout(signed(32), L)})
        rows = [{"w": [[int(self._weights.reshape(K2, -1)[t, g * L + l]) for l in range(L)] for t in range(K2)],
                 "bias": [int(self._bias[g * L + l]) for l in range(L)]} for g in range(G)]
        params = group_rom(m, "weights", row, rows, group.index, en)
        taps = [[Signal(signed(self.bits + 1), name=f"tap{t}_{l}") for l in range(L)] for t in range(K2)]
        with m.If(en):
            for t in range(K2):
                for l in range(L):
                    m.d.sync += taps[t][l].eq(self.i.payload.data[t][l] + self.input_offset)

        # multiply: K^2 x lanes products and the bias, registered.
        # weights: the ROM output and the taps registered once more
        weights = Signal(row, name="weights")
        with m.If(en):
            m.d.sync += weights.eq(params)
        taps = [delayed(m, en, taps[t], 1, signed(self.bits + 1), f"tap{t}_{{}}_w") for t in range(K2)]
        params = weights

        products = [[product(m, en, taps[t][l], params.w[t][l], kind=self.multiplier_kind, name=f"p{t}_{l}")
                     for t in range(K2)] for l in range(L)]
        bias = delayed(m, en, [params.bias[l] for l in range(L)], MULTIPLY_STAGES[self.multiplier_kind],
                       signed(32), "bias{}")

        # adder tree per lane.
        sums = []
        tree_stages = 0
        for l in range(L):
            total, tree_stages = adder_tree(m, en, products[l] + [bias[l]], width=self.tree_bits, name=f"lane{l}")
            sums.append(total)
        for l in range(L):
            m.d.comb += self.o.payload.data[l].eq(sums[l])

        # valid and flags travel with the data.
        depth = 2 + MULTIPLY_STAGES[self.multiplier_kind] + tree_stages
        valid = Signal(depth)
        flags = [Signal(2, name=f"flags{k}") for k in range(depth)]
        with m.If(en):
            m.d.sync += valid.eq(Cat(self.i.valid, valid[:-1]))
            m.d.sync += flags[0].eq(Cat(self.i.payload.first, self.i.payload.last))
            for k in range(1, depth):
                m.d.sync += flags[k].eq(flags[k - 1])
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.first.eq(flags[-1][0]),
                     self.o.payload.last.eq(flags[-1][1])]
        return m


class DepthwiseUnit(wiring.Component):
    """A whole :class:`~convgen.config.Depthwise` stage: pixels in, requantized pixels out.

    Ports: ``i`` — input beats (``lanes`` x input bits); ``o`` — output beats
    (``lanes`` x output bits), one per output pixel and channel group, raster order.
    """

    def __init__(self, stage):
        self.stage = stage
        self.window = WindowGenerator.for_stage(stage)
        self.mac = DepthwiseMAC.for_stage(stage)
        self.requant = Requantizer.for_stage(stage, stage.lanes)
        super().__init__({
            "i": In(stream.Signature(beat_layout(stage.input.bits, stage.lanes))),
            "o": Out(stream.Signature(beat_layout(stage.output.bits, stage.lanes))),
        })

    @property
    def latency(self) -> int:
        """Cycles from the slot that completes a window to its output beat."""
        return self.window.latency + self.mac.latency + self.requant.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self.window
        m.submodules.mac = self.mac
        m.submodules.requant = self.requant
        wiring.connect(m, wiring.flipped(self.i), self.window.i)
        wiring.connect(m, self.window.o, self.mac.i)
        wiring.connect(m, self.mac.o, self.requant.i)
        wiring.connect(m, self.requant.o, wiring.flipped(self.o))
        return m
