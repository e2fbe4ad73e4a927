"""Cycle schedules of the streaming components, in plain Python (no Amaranth).

The gateware, the cost model, the benches and the tests all take their cycle counts
from here, so the formula for a component exists once.

* :class:`WindowSchedule` — where a window stage emits each output (see
  :mod:`convgen.hdl.window`): output ``(oy, ox)`` leaves at pixel slot
  ``(oy*s - top + (K-1)*d) * W + (ox*s - left + (K-1)*d)``, unclamped; a frame takes
  ``max(H * W, last emission slot + 1)`` slots of ``C / lanes`` beats, and back-to-back
  frames overlap their tail with the next frame's first pixels when that is safe
  (:attr:`WindowSchedule.overlaps`): one frame per ``H * W`` slots.
* :func:`pointwise_frame_cycles` — the folded pointwise array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WindowSchedule", "window_schedule", "window_tail_wait", "pointwise_cycles_per_pixel",
           "pointwise_frame_cycles", "burst_backlog"]


@dataclass(frozen=True)
class WindowSchedule:
    """Where each output of a window stage is emitted (see the module docstring)."""
    height: int
    width: int
    kernel: int
    stride: int
    dilation: int
    pad_top: int
    pad_left: int
    out_height: int
    out_width: int

    @property
    def reach(self) -> int:
        return (self.kernel - 1) * self.dilation

    @property
    def emission_slots(self) -> np.ndarray:
        """(out_h, out_w) pixel-slot index at which each output is emitted."""
        rows = np.arange(self.out_height) * self.stride - self.pad_top + self.reach
        cols = np.arange(self.out_width) * self.stride - self.pad_left + self.reach
        return rows[:, None] * self.width + cols[None, :]

    @property
    def slots(self) -> int:
        """Pixel slots per frame: every input, then the virtual slots of the bottom padding."""
        return max(self.height * self.width, int(self.emission_slots[-1, -1]) + 1)

    @property
    def fill(self) -> int:
        """Input pixels taken up to and including the slot of the first output."""
        return int(self.emission_slots[0, 0]) + 1

    @property
    def tail(self) -> int:
        """Virtual pixel slots after the last input (bottom padding)."""
        return self.slots - self.height * self.width

    @property
    def overlaps(self) -> bool:
        """True when the next frame's first ``tail`` pixels ride in this frame's virtual slots.

        Virtual slot ``H*W + j`` writes column ``j mod W``, the column of the next frame's
        pixel ``j``; what it shifts in lands in rows >= H of this frame, which its outputs
        mask as bottom padding, and in rows < 0 of the next frame's, masked as top padding.
        Safe when the next frame emits nothing during the overlap (its first emission slot
        is at least ``tail``; for 'same' at stride 1 it is exactly ``tail``) and the overlap
        is shorter than a frame."""
        return 0 < self.tail < self.height * self.width and int(self.emission_slots[0, 0]) >= self.tail

    @property
    def period_slots(self) -> int:
        """Pixel slots between the starts of back-to-back frames: ``H * W`` when frames
        overlap, else every slot of the frame."""
        return self.height * self.width if self.overlaps else self.slots

    def frame_emission_slots(self, frames: int) -> np.ndarray:
        """(frames, out_h * out_w): slot of every output of ``frames`` back-to-back frames,
        counted from the first frame's first slot."""
        offsets = np.arange(frames, dtype=np.int64)[:, None] * self.period_slots
        return offsets + self.emission_slots.reshape(1, -1)

    @property
    def last_emission(self) -> int:
        """Pixel slot of the frame's last output."""
        return int(self.emission_slots[-1, -1])

    def frame_cycles(self, groups: int, latency: int, frames: int = 1, tail_wait: int = 0) -> int:
        """Cycles from the first input beat to the last output beat of ``frames`` frames
        at full rate (source always valid, sink always ready): every slot is one beat per
        channel group, frames start every :attr:`period_slots`, the last frame's tail
        starts after waiting ``tail_wait`` cycles for a next frame (when frames can
        overlap), and the last output leaves ``latency`` cycles after its slot."""
        wait = tail_wait if self.overlaps else 0
        return ((frames - 1) * self.period_slots + self.last_emission + 1) * groups + wait + latency

    @property
    def virtual_rows(self) -> int:
        return -(-self.tail // self.width)

    # Per-slot lookup tables (see WindowGenerator): x -> (emits, row carry, column pad mask),
    # row -> (emits, row pad mask).
    def column_table(self):
        table = []
        for x in range(self.width):
            entry = (False, 0, 0)
            for ox in range(self.out_width):
                q = ox * self.stride - self.pad_left + self.reach
                if q % self.width == x and q >= 0:
                    cols = [ox * self.stride - self.pad_left + j * self.dilation for j in range(self.kernel)]
                    mask = sum(1 << j for j, c in enumerate(cols) if not 0 <= c < self.width)
                    entry = (True, q // self.width, mask)
            table.append(entry)
        return table

    def row_table(self):
        rows = self.height + self.virtual_rows + 1
        table = []
        for y in range(rows):
            entry = (False, 0)
            r = y + self.pad_top - self.reach
            if r >= 0 and r % self.stride == 0 and r // self.stride < self.out_height:
                oy = r // self.stride
                taps = [oy * self.stride - self.pad_top + i * self.dilation for i in range(self.kernel)]
                entry = (True, sum(1 << i for i, t in enumerate(taps) if not 0 <= t < self.height))
            table.append(entry)
        return table


def window_schedule(stage) -> WindowSchedule:
    """The schedule of a :class:`~convgen.config.Depthwise` stage."""
    return WindowSchedule(stage.input.height, stage.input.width, stage.kernel, stage.stride,
                          stage.dilation, stage.pad_top_bottom[0], stage.pad_left_right[0],
                          stage.out_height, stage.out_width)


def window_tail_wait(config, stage) -> int:
    """Cycles ``stage``'s window waits at a frame's first virtual slot for the next frame
    (:class:`~convgen.hdl.window.WindowGenerator`, "Back-to-back frames").

    A bound on the longest gap between two of its input beats when frames come back to
    back at full rate: twice the cycles per pixel of the slowest stage before it (the
    input port included), or, behind a window stage, the input rows that window swallows
    without an output (``(K - 1) * d + stride`` rows of its cycles per pixel); plus 8.
    Too short would only cost the overlap (the tail then runs on zero points);
    ``tests/test_cocotb.py`` checks that every example's frames overlap at full rate."""
    from ..config import Depthwise
    from ..cost import estimate
    costs = {s.name: s for s in estimate(config).stages}
    gap = 2 * costs["input"].cycles_per_pixel
    for before in config.stages[:config.stages.index(stage)]:
        cost = costs[before.name]
        if isinstance(before, Depthwise):
            rows = (before.kernel - 1) * before.dilation + before.stride
            gap = max(gap, rows * before.input.width * cost.cycles_per_pixel)
        else:
            gap = max(gap, 2 * cost.cycles_per_pixel)
    return gap + 8


def pointwise_cycles_per_pixel(c_in: int, c_out: int, groups: int, pe: int, simd: int) -> int:
    """Sustained cycles per pixel of the PE x SIMD array: its operations
    ``(C_out / pe) * (C_in / groups / simd)``, or its input beats ``C_in / simd`` if more."""
    return max((c_out // pe) * (c_in // groups // simd), c_in // simd)


def pointwise_frame_cycles(pixels: int, c_in: int, c_out: int, groups: int, pe: int, simd: int,
                           latency: int) -> int:
    """Cycles from the first input beat to the last output beat of a frame at full rate:
    the first pixel's beats, one cycle to swap it in, ``pixels - 1`` pixel periods, the
    last pixel's operations, then the pipeline latency."""
    beats = c_in // simd
    operations = (c_out // pe) * (c_in // groups // simd)
    period = pointwise_cycles_per_pixel(c_in, c_out, groups, pe, simd)
    return beats + 1 + (pixels - 1) * period + operations + latency


def requant_share(pe: int, chunks: int) -> int:
    """Output beats of a pointwise array that one requantizer lane serves in turn.

    The array emits a batch of ``pe`` accumulators every ``chunks`` cycles (or slower), so
    a requantizer of ``pe / f`` lanes fed ``f`` beats per batch keeps up: ``f`` is the largest
    divisor of ``pe`` not above ``chunks`` (1: no sharing)."""
    return max(f for f in range(1, pe + 1) if pe % f == 0 and f <= max(chunks, 1))


def shared_requant_delay(share: int) -> int:
    """Cycles a shared requantizer adds to a batch's last beat: the skid buffer in front of
    the split, the split's register and its ``share - 1`` further beats, and the gather's
    register (0 when not shared)."""
    return share + 2 if share > 1 else 0


def burst_backlog(schedule: WindowSchedule, period_in: int, period_out: int, held: int = 2,
                  frames: int = 2) -> int:
    """Pixels a buffer behind a window stage must hold so that neither side waits.

    The window emits output ``p`` in the slot of input pixel ``e(p)``, inputs arriving one
    per ``period_in`` cycles; the next stage takes one output pixel per ``period_out``
    cycles and holds ``held`` pixels itself (a double-buffered pixel unit holds 2). With
    a stride above 1 the outputs come in bursts (one every ``stride`` slots on every
    ``stride``-th row), faster than a stage paced for the average rate takes them; a
    frame's last row, emitted in the next frame's first slots when frames overlap, can
    run into that frame's first row, so ``frames`` back-to-back frames are modelled.
    Returns the largest number of emitted outputs the next stage has not yet taken,
    minus what it holds (0: no buffer needed).
    """
    arrive = schedule.frame_emission_slots(frames).reshape(-1) * period_in
    taken = np.empty_like(arrive)
    free = -(1 << 40)
    for p, t in enumerate(arrive):                  # a queue served one pixel per period_out
        free = max(free, t) + period_out
        taken[p] = free
    waiting = np.arange(1, arrive.size + 1) - np.searchsorted(np.sort(taken), arrive, side="right")
    return max(0, int(waiting.max()) - held)
