"""Pointwise (1x1, grouped) convolution: a PE x SIMD MAC array folded in time.

Each input pixel (``C_in / simd`` beats of ``simd`` channels) is loaded into one of two
pixel registers while the array works on the other, so the stream is read once and
loading overlaps computing. Computing a pixel takes ``T = (C_out / pe) * (C_in / groups
/ simd)`` operations, one per cycle: operation ``(b, j)`` gives each of the ``pe``
processing elements (output channels ``b * pe + k``) the ``j``-th ``simd``-wide chunk of
its group's input channels and that chunk's weights. Each PE sums its ``simd`` products
in a registered adder tree and accumulates over the ``j`` chunks, starting from its bias;
after the last chunk the ``pe`` accumulators leave as one beat. A per-operation ROM holds
the weights (in block RAM when deeper than :data:`ROM_LOGIC_DEPTH`), a per-batch ROM the
biases, and a table each PE's chunk index (PEs spanning whole groups read different
chunks). The array therefore sustains ``max(T, C_in / simd)`` cycles per pixel:
exactly ``MACs per pixel / (pe * simd)`` whenever ``pe`` divides ``C_out / groups``.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .beats import SkidBuffer, beat_layout
from .mac import (MULTIPLY_STAGE_NAMES, MULTIPLY_STAGES, TREE_LEVELS, adder_tree, adder_tree_stages, delayed, group_rom, product,
                  signed_bits)
from .requant import Requantizer, acc_layout
from .schedule import requant_share, shared_requant_delay
from .width import Gather, Split

__all__ = ["PointwiseMAC", "PointwiseUnit"]


#: ROMs deeper than this go to block RAM: in logic, every output bit of a deeper ROM is a
#: tree of LUT4s on the address (16 rows: one LUT4 per bit).
ROM_LOGIC_DEPTH = 16


def _rom(m: Module, name: str, shape, rows: list, addr, en):
    """:func:`~convgen.hdl.mac.group_rom`, in block RAM if deeper than
    :data:`ROM_LOGIC_DEPTH` rows."""
    attrs = {"rom_style": "block"} if len(rows) > ROM_LOGIC_DEPTH else None
    return group_rom(m, name, shape, rows, addr, en, attrs=attrs)


class PointwiseMAC(wiring.Component):
    """Folded PE x SIMD 1x1 convolution to accumulators.

    Parameters
    ----------
    weights : (C_out, C_in / groups) int array
    bias : (C_out,) int array
    groups, pe, simd, bits, weight_bits, input_offset : int
    acc_range : (int, int)

    Ports: ``i`` — input beats of ``simd`` channels; ``o`` — accumulator beats of ``pe``
    channels, ``C_out / pe`` per pixel, in channel order.
    """

    def __init__(self, *, weights, bias, groups, pe, simd, bits, weight_bits, input_offset, acc_range,
                 multipliers="dsp"):
        weights, bias = np.asarray(weights, dtype=np.int64), np.asarray(bias, dtype=np.int64)
        c_out, group_in = weights.shape
        c_in = group_in * groups
        group_out = c_out // groups
        if bias.shape != (c_out,) or c_out % groups or group_in % simd or c_out % pe or not (
                group_out % pe == 0 or (pe % group_out == 0 and simd == group_in)):
            raise ValueError(f"pointwise geometry not supported: weights {weights.shape}, groups {groups}, "
                             f"pe {pe}, simd {simd} (see convgen.config.Pointwise)")
        self.c_in, self.c_out, self.groups, self.pe, self.simd = c_in, c_out, groups, pe, simd
        self.bits, self.weight_bits, self.input_offset = bits, weight_bits, input_offset
        if multipliers not in MULTIPLY_STAGES:
            raise ValueError(f"multipliers must be one of {', '.join(MULTIPLY_STAGES)}, not {multipliers!r}")
        self.multiplier_kind = multipliers
        self._weights, self._bias = weights, bias
        self.acc_bits = signed_bits(*acc_range)
        worst = int(np.abs(weights).sum(axis=1).max()) * ((1 << bits) - 1) + int(np.abs(bias).max())
        self.bias_bits = signed_bits(int(bias.min()), int(bias.max()))
        self.tree_bits = max(signed_bits(-worst, worst), self.acc_bits)
        super().__init__({
            "i": In(stream.Signature(beat_layout(bits, simd))),
            "o": Out(stream.Signature(acc_layout(self.acc_bits, pe))),
        })

    @classmethod
    def for_stage(cls, stage):
        return cls(weights=stage.weights, bias=stage.bias, groups=stage.groups, pe=stage.pe,
                   simd=stage.simd, bits=stage.input.bits, weight_bits=stage.weight_bits,
                   input_offset=stage.input_offset, acc_range=stage.accumulator_range,
                   multipliers=stage.multipliers)

    @property
    def batches(self) -> int:
        return self.c_out // self.pe

    @property
    def chunks(self) -> int:
        """simd-wide chunks of one group's inputs (operations per output batch)."""
        return self.c_in // self.groups // self.simd

    @property
    def operations(self) -> int:
        """Operations (cycles) per pixel: batches x chunks."""
        return self.batches * self.chunks

    @property
    def cycles_per_pixel(self) -> int:
        """Sustained cycles per pixel: the operations, or the input beats if more."""
        return max(self.operations, self.c_in // self.simd)

    @property
    def stages(self):
        """operands (chunk + weights read), weights (the ROM's output registered, so no block
        RAM drives a multiplier), multiply (two stages), the adder tree, accumulate."""
        multiply = MULTIPLY_STAGE_NAMES[self.multiplier_kind]
        tree = adder_tree_stages(self.simd, levels_per_stage=TREE_LEVELS[self.multiplier_kind])
        return ("operands", "weights", *multiply, *(f"sum{k}" for k in range(tree)),
                "accumulate")

    @property
    def latency(self) -> int:
        """Cycles from issuing a pixel's last operation to its last output beat."""
        return len(self.stages)

    @property
    def multipliers(self) -> int:
        return self.pe * self.simd

    def _chunk_table(self):
        """chunk_table[op][k]: which simd-wide chunk of the pixel PE k reads in operation op."""
        group_out, group_in = self.c_out // self.groups, self.c_in // self.groups
        return [[((b * self.pe + k) // group_out) * group_in // self.simd + j for k in range(self.pe)]
                for b in range(self.batches) for j in range(self.chunks)]

    def _rom_rows(self):
        """Per operation: each PE's chunk of weights."""
        return [[[int(self._weights[b * self.pe + k, j * self.simd + s]) for s in range(self.simd)]
                 for k in range(self.pe)] for b in range(self.batches) for j in range(self.chunks)]

    def _bias_rows(self):
        """Per batch: each PE's bias."""
        return [[int(self._bias[b * self.pe + k]) for k in range(self.pe)] for b in range(self.batches)]

    def elaborate(self, platform):
        m = Module()
        P, S, T = self.pe, self.simd, self.operations
        n_chunks = self.c_in // S                  # beats per pixel = chunks of the whole pixel
        element = signed(self.bits + 1)            # x + input_offset, added as the pixel loads
        chunk_layout = data.ArrayLayout(element, S)
        pixel_layout = data.ArrayLayout(chunk_layout, n_chunks)

        # -- loader: fills `load` from the stream ---------------------------------------------
        # Control is kept shallow (Fmax): every decision is one LUT of registers. `fill` is the
        # one-hot beat count of `load` (fill[n_chunks]: full). The loaded pixel moves to
        # `current` (`swap`) when the buffer is full and the array idle, or issuing its last
        # operation (the output register empty next cycle, or taken): `swap_any` and
        # `swap_last` are those conditions, computed a cycle ahead, so swap = swap_any |
        # swap_last & o.ready. The input is ready when the buffer is not full or swaps:
        # i.ready = ready_any | ready_last & o.ready, from registers of their own (distinct
        # from swap's, so no LUT is shared: i.ready feeds the upstream converters' ready
        # paths and stays one LUT deep; neither goes through the array's enable `en`). A
        # chunk k > 0 is written iff fill[k] (never in a swap cycle, which needs a full
        # buffer). The loader also takes a beat in the cycle its full buffer is swapped out
        # (into slot 0 of the emptied buffer), so loading never waits.
        load = Signal(pixel_layout, name="load")
        fill = Signal(n_chunks + 1, init=1, name="fill")
        load_full = fill[n_chunks]
        load_first, load_last = Signal(), Signal()
        swap = Signal()
        en = Signal()
        swap_any, swap_last = Signal(), Signal()
        ready_any, ready_last = Signal(init=1), Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready),
                     swap.eq(swap_any | (swap_last & self.o.ready)),
                     self.i.ready.eq(ready_any | (ready_last & self.o.ready))]
        accepted = Signal()
        m.d.comb += accepted.eq(self.i.valid & self.i.ready)
        write = [Signal(name=f"load_we{k}") for k in range(n_chunks)]
        m.d.comb += write[0].eq(self.i.valid & (fill[0] | swap))
        m.d.comb += [write[k].eq(self.i.valid & fill[k]) for k in range(1, n_chunks)]
        for k in range(n_chunks):
            with m.If(write[k]):
                m.d.sync += [load[k][e].eq(self.i.payload.data[e] + self.input_offset) for e in range(S)]
                if k == 0:
                    m.d.sync += load_first.eq(self.i.payload.first)
                if k == n_chunks - 1:
                    m.d.sync += load_last.eq(self.i.payload.last)

        # -- issue: one operation per enabled cycle on the `current` pixel --------------------
        out_valid = Signal()                                # the output register's valid (below)
        current = Signal(pixel_layout, name="current")
        cur_first, cur_last = Signal(), Signal()
        busy = Signal()
        last_op = Signal(init=T == 1, name="last_op")     # op == T - 1, registered
        before_last = Signal(init=T == 2, name="before_last_op")   # op == T - 2, registered
        op = Signal(range(T), name="op")
        j = Signal(range(self.chunks), name="chunk_j")
        b = Signal(range(self.batches), name="batch_b")
        issue = Signal()
        m.d.comb += issue.eq(en & busy)
        with m.If(issue):
            m.d.sync += [op.eq(Mux(last_op, 0, op + 1)), j.eq(Mux(j == self.chunks - 1, 0, j + 1)),
                         before_last.eq(Mux(last_op, T == 2, op == T - 3))]
            with m.If(j == self.chunks - 1):
                m.d.sync += b.eq(Mux(b == self.batches - 1, 0, b + 1))
        with m.If(swap):      # the next pixel moves in as the last operation of this one issues
            m.d.sync += [current.eq(load), cur_first.eq(load_first), cur_last.eq(load_last)]

        emitting = Signal()                                 # the output register takes a result if enabled

        def next_state(en_, swap_, accepted_):
            """fill, busy, last_op and the output's valid after a cycle with these values of
            the enable, the swap and the input transfer."""
            issue_ = en_ & busy
            return (Mux(swap_, Mux(accepted_, 0b10, 0b01), Mux(accepted_, fill << 1, fill)),
                    Mux(swap_, 1, Mux(issue_ & last_op, 0, busy)),
                    Mux(issue_, Mux(last_op, T == 1, before_last), last_op),
                    Mux(en_, emitting, out_valid))

        fill_next, busy_next, last_next, out_valid_next = next_state(en, swap, accepted)
        m.d.sync += [fill.eq(fill_next), busy.eq(busy_next), last_op.eq(last_next),
                     out_valid.eq(out_valid_next)]
        # swap_* / ready_* for the next cycle: the same next state, once per value of the two
        # inputs that arrive late (o.ready from the sink, i.valid from the source), each case
        # a function of registers only; the inputs select at the end.
        cases = {}
        for o_ready in (0, 1):
            for i_valid in (0, 1):
                en_c = Const(1) if o_ready else ~out_valid
                swap_c = swap_any | swap_last if o_ready else swap_any
                accepted_c = (ready_any | ready_last if o_ready else ready_any) if i_valid else Const(0)
                fill_c, busy_c, last_c, out_c = next_state(en_c, swap_c, accepted_c)
                full_c = fill_c[n_chunks]
                ending_c = full_c & busy_c & last_c         # full, the last operation pending
                flags = Signal(4, name=f"flags_r{o_ready}v{i_valid}")
                m.d.comb += flags.eq(Cat(full_c & ~busy_c | ending_c & ~out_c, ending_c,
                                         ~full_c | ~busy_c | ending_c & ~out_c, ending_c & out_c))
                cases[o_ready, i_valid] = flags
        chosen = Signal(4, name="flags_next")
        m.d.comb += chosen.eq(Mux(self.o.ready, Mux(self.i.valid, cases[1, 1], cases[1, 0]),
                                  Mux(self.i.valid, cases[0, 1], cases[0, 0])))
        m.d.sync += [swap_any.eq(chosen[0]), swap_last.eq(chosen[1]), ready_any.eq(chosen[2]),
                     ready_last.eq(chosen[3])]

        # -- operands: each PE's chunk (selected now, before a swap), this operation's weights --
        ctl_layout = data.StructLayout({"valid": 1, "first_chunk": 1, "last_chunk": 1,
                                        "first": 1, "last": 1})
        stages = self.stages
        ctl = [Signal(ctl_layout, name=f"ctl_{name}") for name in stages]
        rom_layout = data.StructLayout({
            "w": data.ArrayLayout(data.ArrayLayout(signed(self.weight_bits), S), P),
            "bias": data.ArrayLayout(signed(self.bias_bits), P)})
        w_data = _rom(m, "weights", rom_layout["w"].shape, self._rom_rows(), op, en)
        bias_data = _rom(m, "biases", rom_layout["bias"].shape, self._bias_rows(), b, en)
        table = self._chunk_table()
        operands = [Signal(chunk_layout, name=f"operand{k}") for k in range(P)]
        chunks = Array(current[c] for c in range(n_chunks))
        # Each PE's chunk index is a register that follows `op` (updated with it from the
        # next operation's entry, looked up from `op` itself), so no table lookup on the
        # operation counter sits in front of the chunk multiplexer.
        indices = []
        for k in range(P):
            if T == 1:
                indices.append(Const(table[0][k], range(n_chunks)))
                continue
            index = Signal(range(n_chunks), init=table[0][k], name=f"chunk_index{k}")
            following = Array(Const(table[(o + 1) % T][k], range(n_chunks)) for o in range(T))[op]
            with m.If(issue):
                m.d.sync += index.eq(Mux(last_op, table[0][k], following))
            indices.append(index)
        with m.If(en):
            m.d.sync += [ctl[0].valid.eq(issue), ctl[0].first_chunk.eq(j == 0),
                         ctl[0].last_chunk.eq(j == self.chunks - 1),
                         ctl[0].first.eq(cur_first & (b == 0)),
                         ctl[0].last.eq(cur_last & (b == self.batches - 1))]
            for k in range(P):
                m.d.sync += operands[k].eq(chunks[indices[k]])
            for s in range(1, len(stages)):
                m.d.sync += ctl[s].eq(ctl[s - 1])

        # -- weights: the ROM output and the operands registered once more --------------------
        # Reset-less with nothing between ROM and register: in block RAM on ECP5 this is
        # the DP16KD output register (convgen.bram).
        params = Signal(rom_layout, name="weights", reset_less=True)
        with m.If(en):
            m.d.sync += [params.w.eq(w_data), params.bias.eq(bias_data)]
        operands = delayed(m, en, operands, 1, chunk_layout, "operand{}_w")

        # -- multiply: P x S products; the biases move along ----------------------------------
        products = [[product(m, en, operands[k][s], params.w[k][s], kind=self.multiplier_kind, name=f"p{k}_{s}")
                     for s in range(S)] for k in range(P)]
        bias = delayed(m, en, [params.bias[k] for k in range(P)], MULTIPLY_STAGES[self.multiplier_kind],
                       signed(self.bias_bits), "bias{}")

        # -- adder tree over the SIMD products (bias delayed alongside) ------------------------
        sums, tree_stages = [], 0
        for k in range(P):
            total, tree_stages = adder_tree(m, en, products[k], width=self.tree_bits, name=f"pe{k}",
                                            levels_per_stage=TREE_LEVELS[self.multiplier_kind])
            sums.append(total)
        bias = delayed(m, en, bias, tree_stages, signed(self.bias_bits), "bias{}_d")

        # -- accumulate over the chunks, starting from the bias --------------------------------
        acc = [Signal(signed(self.tree_bits), name=f"acc{k}") for k in range(P)]
        c = ctl[-2]
        with m.If(en & c.valid):
            for k in range(P):
                m.d.sync += acc[k].eq(Mux(c.first_chunk, bias[k], acc[k]) + sums[k])
        m.d.comb += emitting.eq(c.valid & c.last_chunk)
        for k in range(P):
            m.d.comb += self.o.payload.data[k].eq(acc[k])
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.first.eq(ctl[-1].first),
                     self.o.payload.last.eq(ctl[-1].last)]
        return m


class PointwiseUnit(wiring.Component):
    """A whole :class:`~convgen.config.Pointwise` stage: ``simd``-channel beats in,
    requantized ``pe``-channel beats out."""

    def __init__(self, stage):
        self.stage = stage
        self.mac = PointwiseMAC.for_stage(stage)
        #: Output beats per batch one requantizer lane serves (the array emits a batch of
        #: ``pe`` every ``chunks`` cycles, so ``pe / share`` requantizer lanes keep up).
        self.share = requant_share(stage.pe, self.mac.chunks)
        lanes = stage.pe // self.share
        self.requant = Requantizer.for_stage(stage, lanes)
        if self.share > 1:
            # a skid buffer keeps the MAC's ready path from running through the split
            self._skid = SkidBuffer(acc_layout(self.mac.acc_bits, stage.pe))
            self._split = Split(bits=self.mac.acc_bits, lanes=lanes, factor=self.share)
            self._gather = Gather(bits=stage.output.bits, lanes=lanes, factor=self.share)
        super().__init__({
            "i": In(stream.Signature(beat_layout(stage.input.bits, stage.simd))),
            "o": Out(stream.Signature(beat_layout(stage.output.bits, stage.pe))),
        })

    @property
    def latency(self) -> int:
        """Cycles from a pixel's last operation issue to its last output beat."""
        return self.mac.latency + self.requant.latency + shared_requant_delay(self.share)

    @property
    def cycles_per_pixel(self) -> int:
        return self.mac.cycles_per_pixel

    def elaborate(self, platform):
        m = Module()
        m.submodules.mac = self.mac
        m.submodules.requant = self.requant
        wiring.connect(m, wiring.flipped(self.i), self.mac.i)
        if self.share > 1:
            m.submodules.acc_skid = self._skid
            m.submodules.split = self._split
            m.submodules.gather = self._gather
            wiring.connect(m, self.mac.o, self._skid.i)
            wiring.connect(m, self._skid.o, self._split.i)
            wiring.connect(m, self._split.o, self.requant.i)
            wiring.connect(m, self.requant.o, self._gather.i)
            wiring.connect(m, self._gather.o, wiring.flipped(self.o))
        else:
            wiring.connect(m, self.mac.o, self.requant.i)
            wiring.connect(m, self.requant.o, wiring.flipped(self.o))
        return m
