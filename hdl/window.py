"""Line buffer and sliding-window generator: KxK windows with stride, dilation and padding.

Schedule
--------
Input pixels arrive in raster order, ``G = C / lanes`` beats each; every beat is a
*slot*. Slot ``(y, x)`` (pixel index ``y * W + x``) is where output ``(oy, ox)`` is
emitted when ::

    y * W + x == (oy * s - top + (K - 1) * d) * W + (ox * s - left + (K - 1) * d)

i.e. at the slot of its bottom-right tap in padded coordinates, *without* clamping:
an output whose right taps fall in the right padding is emitted in the first slots of
the next row (which no output of that row needs: its first output completes at
``x = right``), with those columns masked; outputs whose bottom taps fall in the bottom
padding are emitted in *virtual* slots after the last input, during which no input is
taken and zero-point rows are shifted in. So the generator takes one input beat per
cycle with no bubbles at row borders, and a frame costs ``max(H * W, last emission
slot + 1)`` pixel slots: :func:`window_schedule`.

Back-to-back frames
-------------------
When :attr:`WindowSchedule.overlaps` (every 'same' window at stride 1, and most others),
the virtual slots also take input: the next frame's first ``tail`` pixels. The column a
virtual slot writes is that pixel's column; what it shifts in lies below this frame
(bottom padding, masked) and, for the next frame, what stays in the line buffer lies
above it (top padding, masked); and the next frame emits nothing before its slot
``tail``. So a stream of frames costs ``H * W`` slots per frame, no bubbles at frame
borders either. Whether a tail overlaps is decided at its first virtual beat: it waits
there up to ``tail_wait`` cycles for the next frame's first beat; if that comes, the
tail takes the next frame's pixels (waiting for them like for any input); if not (the
end of a stream, or a source that waits for this frame's output), the tail runs on zero
points without waiting and the next frame starts afresh. ``tail_wait`` covers the
longest gap between two input beats of a stream at full rate (the engine derives it
from the stages upstream, :func:`convgen.hdl.schedule.window_tail_wait`), so back-to-back
frames always overlap there; a longer gap costs only the overlap. A source that offers a
frame's first beat must go on offering its next ``tail`` pixels without waiting for the
previous frame's output.

Storage
-------
* Line buffer: one ``Memory`` of depth ``W * G`` whose word is the stack of the last
  ``(K - 1) * d`` rows of ``lanes`` elements at that column: each slot takes its stack
  from a register, shifts the new element in, writes it back. The stack is read two
  slots ahead through the read port's register and that (reset-less) stack register,
  with nothing between: on ECP5 they become the DP16KD's own registers
  (:mod:`convgen.bram`), so no path starts at a block RAM output. The address advances
  every slot and never restarts. Synthesis maps it to block RAM; it is exactly
  ``(K - 1) * d * W * C`` elements. With one or two words (``W * G <= 2``) the stacks are
  registers.
* Window columns: the K taps (rows ``y - (K - 1) * d ... y`` step ``d``) of each slot
  pass through ``K - 1`` delay lines of ``d * G`` slots, which give the K window columns.

Padding taps (outside the image) are replaced by the input zero point at the window.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .beats import beat_layout
from .schedule import WindowSchedule, window_schedule  # noqa: F401 (re-exported)

__all__ = ["WindowSchedule", "window_schedule", "window_layout", "WindowGenerator"]


def window_layout(bits: int, lanes: int, kernel: int) -> data.StructLayout:
    """Window beats: ``data[ky * K + kx][lane]``, plus ``first``/``last`` of the output frame."""
    return data.StructLayout({
        "data": data.ArrayLayout(data.ArrayLayout(signed(bits), lanes), kernel * kernel),
        "first": 1, "last": 1,
    })


class _Delay(wiring.Component):
    """``o`` is ``i`` as it was ``depth`` enabled cycles ago (registers, or a RAM ring
    when long). Both sides advance together on ``en``."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        super().__init__({"en": In(1), "i": In(width), "o": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if self.depth <= 2:
            chain = [Signal(self.width, name=f"r{k}") for k in range(self.depth)]
            prev = self.i
            for reg in chain:
                with m.If(self.en):
                    m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += self.o.eq(prev)
            return m
        # A ring of depth - 1 words read before written, plus the read port's register.
        m.submodules.ring = ring = Memory(shape=self.width, depth=self.depth - 1, init=[])
        wr, rd = ring.write_port(), ring.read_port()
        ptr = Signal(range(self.depth - 1))
        m.d.comb += [wr.addr.eq(ptr), wr.data.eq(self.i), wr.en.eq(self.en),
                     rd.addr.eq(ptr), rd.en.eq(self.en), self.o.eq(rd.data)]
        with m.If(self.en):
            m.d.sync += ptr.eq(Mux(ptr == self.depth - 2, 0, ptr + 1))
        return m


class WindowGenerator(wiring.Component):
    """KxK sliding windows over a pixel stream.

    Parameters
    ----------
    height, width, channels, lanes, bits : int
        Input frame (H, W, C) of ``bits``-bit elements, ``lanes`` channels per beat.
    kernel, stride, dilation : int
    pad_top, pad_left : int
        Padding before the image (TensorFlow's 'same' offsets; 0 for 'valid'). The
        padding after follows from the output size.
    out_height, out_width : int
    zero_point : int
        Value of padding taps (the input zero point).
    tail_wait : int or None
        Cycles the first virtual slot waits for the next frame before flushing the tail
        (see "Back-to-back frames"); default ``2 * C / lanes + 8``, for a source that
        offers its beats back to back.

    Ports: ``i`` — :func:`~convgen.hdl.beats.beat_layout` beats; ``o`` —
    :func:`window_layout` beats, one per output pixel and channel group, in raster order.
    Latency: 2 cycles from the slot that completes a window to its output beat.
    """

    latency = 2

    def __init__(self, *, height, width, channels, lanes, bits, kernel, stride, dilation,
                 pad_top, pad_left, out_height, out_width, zero_point, tail_wait=None):
        if channels % lanes:
            raise ValueError(f"lanes must divide channels {channels}, not {lanes}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 1, not {kernel}")
        self.schedule = WindowSchedule(height, width, kernel, stride, dilation, pad_top, pad_left,
                                       out_height, out_width)
        self.channels, self.lanes, self.bits, self.zero_point = channels, lanes, bits, zero_point
        self.groups = channels // lanes
        self.tail_wait = 2 * self.groups + 8 if tail_wait is None else tail_wait
        if self.tail_wait < 0:
            raise ValueError(f"tail_wait must be a number of cycles >= 0, not {tail_wait}")
        super().__init__({
            "i": In(stream.Signature(beat_layout(bits, lanes))),
            "o": Out(stream.Signature(window_layout(bits, lanes, kernel))),
        })

    @classmethod
    def for_stage(cls, stage, tail_wait=None):
        """The window generator of a :class:`~convgen.config.Depthwise` stage."""
        return cls(tail_wait=tail_wait, height=stage.input.height, width=stage.input.width, channels=stage.input.channels,
                   lanes=stage.lanes, bits=stage.input.bits, kernel=stage.kernel, stride=stage.stride,
                   dilation=stage.dilation, pad_top=stage.pad_top_bottom[0],
                   pad_left=stage.pad_left_right[0], out_height=stage.out_height,
                   out_width=stage.out_width, zero_point=stage.input.zero_point)

    @property
    def line_buffer_bits(self) -> int:
        """Bits of line-buffer RAM: (K - 1) * d rows of W * C elements."""
        return self.schedule.reach * self.schedule.width * self.channels * self.bits

    @property
    def window_delay_bits(self) -> int:
        """Bits held by the column delay lines: (K - 1) * d * G slots of K * lanes elements."""
        s = self.schedule
        return s.reach * self.groups * s.kernel * self.lanes * self.bits

    def elaborate(self, platform):
        m = Module()
        s, G, L, K, bits = self.schedule, self.groups, self.lanes, self.schedule.kernel, self.bits
        H, W, reach = s.height, s.width, s.reach
        element = signed(bits)

        # -- slot counters ------------------------------------------------------------------
        y = Signal(range(H + s.virtual_rows + 1), name="slot_y")
        x = Signal(range(W), name="slot_x")
        g = Signal(range(G), name="slot_group")
        slot = Signal(range(s.slots * G + 1), name="slot")        # beat index within the frame
        beats, real_beats = s.slots * G, H * W * G
        # Decisions about the slot, registered as the slot counter advances, so that no
        # compare of the counters sits on the fire -> counter path: the frame's last beat,
        # its first virtual beat, whether the slot is a real input pixel (y < H), and the
        # two flags `fire` is made of.
        last_slot = Signal(init=beats == 1)
        first_virtual = Signal()
        real = Signal(init=1)
        overlap = Signal()       # this tail is taking the next frame's pixels ("Back-to-back frames")
        timeout = Signal(init=self.tail_wait == 0)     # the first virtual beat waited long enough
        waited = Signal(range(self.tail_wait + 1), name="tail_waited")
        offers = Signal(init=1)  # the slot takes an input beat if one is offered
        alone = Signal()         # the slot fires without one (zero points)

        en = Signal()            # the pipeline advances
        fire = Signal()          # a slot happens this cycle
        takes = Signal()         # ... and shifts in an input beat (not the zero point)
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(en & offers),
            fire.eq(en & (self.i.valid & offers | alone)),
            takes.eq(offers & self.i.valid),
        ]
        # Next values. Real slots wait for input; the first virtual slot takes the next
        # frame's first beat if offered, or fires alone once it has waited `tail_wait`
        # cycles; the rest of the tail waits for input if it overlaps, else fires alone.
        # The next frame starts at slot 0, or at slot `tail` after an overlapped tail: a
        # real slot, never the last or the first virtual one (tail < H * W).
        pre_virtual = (slot == real_beats - 1) if s.tail else Const(0)
        overlapping = Signal()   # this beat's tail overlaps (decided on its first virtual beat)
        m.d.comb += overlapping.eq(Mux(first_virtual, self.i.valid, overlap))
        # Each decision's next value is computed for both cases from registers (and i.valid)
        # alone, `fire` (which o.ready reaches) selecting between them last.
        real_f, first_virtual_f, overlap_f, timeout_h = Signal(), Signal(), Signal(), Signal()
        timeout_f = Const(self.tail_wait == 0)
        m.d.comb += [
            real_f.eq(last_slot | real & ~pre_virtual),
            first_virtual_f.eq(~last_slot & pre_virtual & int(s.overlaps)),
            overlap_f.eq(~last_slot & overlapping),
            timeout_h.eq(Mux(en & first_virtual, waited == self.tail_wait - 1, timeout)),
        ]
        m.d.sync += [
            real.eq(Mux(fire, real_f, real)),
            first_virtual.eq(Mux(fire, first_virtual_f, first_virtual)),
            overlap.eq(Mux(fire, overlap_f, overlap)),
            timeout.eq(Mux(fire, timeout_f, timeout_h)),
            offers.eq(Mux(fire, real_f | overlap_f | first_virtual_f, offers)),
            alone.eq(Mux(fire, Mux(first_virtual_f, timeout_f, ~real_f & ~overlap_f),
                         Mux(first_virtual, timeout_h, ~real & ~overlap))),
        ]
        with m.If(fire):
            m.d.sync += [waited.eq(0), last_slot.eq(Mux(last_slot, beats == 1, slot == beats - 2))]
        with m.Elif(en & first_virtual):
            m.d.sync += waited.eq(waited + 1)
        start_y, start_x = divmod(s.tail, W)
        with m.If(fire):
            m.d.sync += slot.eq(Mux(last_slot, Mux(overlapping, s.tail * G, 0), slot + 1))
            with m.If(last_slot):
                m.d.sync += [y.eq(Mux(overlapping, start_y, 0)), x.eq(Mux(overlapping, start_x, 0)), g.eq(0)]
            with m.Elif(g == G - 1):
                m.d.sync += g.eq(0)
                with m.If(x == W - 1):
                    m.d.sync += [x.eq(0), y.eq(y + 1)]
                with m.Else():
                    m.d.sync += x.eq(x + 1)
            with m.Else():
                m.d.sync += g.eq(g + 1)

        # -- this slot's column: K taps (rows y - (K-1)d ... y step d) x lanes -------------------
        zp = Cat(*[Const(self.zero_point, element) for _ in range(L)])    # one padding element per lane
        new = Signal(data.ArrayLayout(element, L), name="new")
        m.d.comb += new.eq(Mux(takes, self.i.payload.data.as_value(), zp))
        column = Signal(data.ArrayLayout(data.ArrayLayout(element, L), K), name="column")
        if reach:
            stack_layout = data.ArrayLayout(data.ArrayLayout(element, L), reach)   # oldest first
            depth = W * G
            # The stack of the slot's column is at `addr`, which advances by one every slot
            # (modulo W * G) and never restarts: the address of a column is then fixed for
            # the whole frame whatever column it started at, and what a new frame reads
            # above its first row is top padding (masked).
            addr = Signal(range(depth))
            with m.If(fire):
                m.d.sync += addr.eq(Mux(addr == depth - 1, 0, addr + 1))
            stack = Signal(stack_layout, name="stack")
            if depth >= 3:
                # Block RAM read two slots ahead: the read port's register, then the stack
                # register (reset-less, nothing between: on ECP5 it is the DP16KD output
                # register, see convgen.bram). A stack read at slot n was last written at
                # slot n + 2 - depth < n, so the prefetch never misses a write.
                # no_rw_check: a slot never reads the address written in its cycle, so yosys
                # need not emulate read-old-data around the block RAM.
                m.submodules.lines = lines = Memory(shape=stack_layout, depth=depth, init=[],
                                                    attrs={"no_rw_check": 1})
                wr, rd = lines.write_port(), lines.read_port()
                # read_addr is always addr + 2 (mod depth), kept as its own register so the
                # block RAM's address comes straight from flip-flops.
                read_addr = Signal(range(depth), init=2 % depth)
                stack_out = Signal(stack_layout, name="stack_out", reset_less=True)
                with m.If(fire):
                    m.d.sync += [read_addr.eq(Mux(read_addr == depth - 1, 0, read_addr + 1)),
                                 stack_out.eq(rd.data)]
                m.d.comb += [rd.addr.eq(read_addr), rd.en.eq(fire), stack.eq(stack_out),
                             wr.addr.eq(addr), wr.en.eq(fire)]
                write_data = wr.data
            else:
                # One or two columns: registers, read in the slot.
                stacks = Array(Signal(stack_layout, name=f"stack{k}") for k in range(depth))
                write_data = Signal(stack_layout, name="stack_next")
                with m.If(fire):
                    m.d.sync += stacks[addr].eq(write_data)
                m.d.comb += stack.eq(stacks[addr])
            shifted = [stack[k] for k in range(1, reach)] + [new]
            for k, value in enumerate(shifted):
                m.d.comb += write_data[k].eq(value)
            for i in range(K):            # tap i: row y - (K - 1 - i) * d
                back = (K - 1 - i) * s.dilation
                m.d.comb += column[i].eq(new if back == 0 else stack[reach - back])
        else:
            m.d.comb += column[0].eq(new)

        # -- emission and padding masks from the schedule's tables ------------------------------
        col_table, row_table = s.column_table(), s.row_table()
        row = Signal(range(len(row_table)), name="window_row")
        # Pad each table to every value its index can take, so no lookup is ever out of
        # range (an out-of-range Array index is undefined: X in a 4-state simulator).
        col_table += [(False, 0, 0)] * ((1 << len(x)) - len(col_table))
        row_table += [(False, 0)] * ((1 << len(row)) - len(row_table))
        # The column's table entry is a register that follows `x` (updated with it, from
        # the entry of the next column, looked up from `x` itself), so no table lookup on
        # the slot counter sits in front of the emission decision.
        carry_shape = range(max(c for _, c, _ in col_table) + 1)
        col_layout = data.StructLayout({"emit": 1, "carry": carry_shape, "mask": K})

        def col_entry(column):
            emit, carry, mask = col_table[column]
            return {"emit": int(emit), "carry": carry, "mask": mask}

        col = Signal(col_layout, init=col_entry(0), name="column_entry")
        next_entry = Array(col_layout.const(col_entry((v + 1) % W)) for v in range(1 << len(x)))[x]
        with m.If(fire):
            with m.If(last_slot):
                m.d.sync += col.eq(Mux(overlapping, col_layout.const(col_entry(start_x)).as_value(),
                                       col_layout.const(col_entry(0)).as_value()))
            with m.Elif(g == G - 1):
                m.d.sync += col.eq(next_entry)
        col_emit, col_carry, col_mask = col.emit, col.carry, col.mask
        m.d.comb += row.eq(Mux(y >= col_carry, y - col_carry, 0))
        row_emit = Array(Const(e) for e, _ in row_table)[row]
        row_mask = Array(Const(mk, K) for _, mk in row_table)[row]

        # Stage 1: register the column and the slot's decisions.
        col_reg = Signal.like(column, name="column_reg")
        emit1, cmask1, rmask1 = Signal(), Signal(K), Signal(K)
        fire1 = Signal()
        emitting = Signal()
        m.d.comb += emitting.eq(col_emit & row_emit & (y >= col_carry))
        with m.If(en):
            m.d.sync += [col_reg.eq(column), emit1.eq(fire & emitting), cmask1.eq(col_mask),
                         rmask1.eq(row_mask), fire1.eq(fire)]
        # The output beat's index in the frame counts the beats that left stage 1 (counted
        # there, not at the slot, so the emission decision drives only one register).
        out_index = Signal(range(s.out_height * s.out_width * G + 1))
        last_index = s.out_height * s.out_width * G - 1
        with m.If(en & emit1):
            m.d.sync += out_index.eq(Mux(out_index == last_index, 0, out_index + 1))

        # Stage 2: the K window columns from the delay lines, padding masked, registered.
        width = len(col_reg.as_value())
        columns = [col_reg.as_value()]
        for j in range(1, K):
            m.submodules[f"delay{j}"] = delay = _Delay(width, s.dilation * G)
            m.d.comb += [delay.en.eq(en & fire1), delay.i.eq(columns[-1])]
            columns.append(delay.o)
        # columns[0] is the newest (window column K-1); columns[j] is window column K-1-j.
        with m.If(en):
            m.d.sync += [self.o.valid.eq(emit1), self.o.payload.first.eq(out_index == 0),
                         self.o.payload.last.eq(out_index == last_index)]
            for kx in range(K):
                col_value = data.ArrayLayout(data.ArrayLayout(element, L), K)(columns[K - 1 - kx])
                for ky in range(K):
                    pad = cmask1[kx] | rmask1[ky]
                    m.d.sync += self.o.payload.data[ky * K + kx].eq(
                        Mux(pad, zp, col_value[ky].as_value()))
        return m
