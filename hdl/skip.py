"""Skip FIFO sizing: derived from the main path's schedule, beat by beat.

An add pairs beat ``n`` of the main path with beat ``n`` of its skip tensor. The skip
beats wait in a FIFO from the fork (where the skip tensor leaves the main path) until
the add takes them; the FIFO must never fill, or it would hold off the fork and with it
the main path. Its depth is the largest number of skip beats ever waiting.

Every skip beat's write and read cycle is derived from the units' schedules at full
rate (source always valid, sink always ready) over :data:`SIZING_FRAMES` frames back to
back (a window's tail overlaps the next frame's first pixels, and a frame shorter than
the main path's latency is still in the FIFO when the next arrives, so the peak is at a
frame border), and :func:`fifo_depth_for` turns them into
the smallest :class:`~convgen.hdl.engine.SkipFIFO` depth that never refuses a write: a smaller FIFO would
hold off the fork, and with it the main path, at least once per frame.

* When every unit on the main path keeps up with the fork (one beat per cycle), nothing
  is ever held off and each beat's timing follows from the units' schedules alone:
  pipelines (requantizer, MAC units, skid buffer, fork, add) add their latency; the
  window generator emits output ``(p, g)`` 2 cycles after input slot ``(e(p), g)``
  (:class:`~convgen.hdl.schedule.WindowSchedule`), a frame's virtual slots being the next
  frame's first slots, the last frame's following its last input after the window's
  ``tail_wait``; the pointwise array swaps pixel ``q`` in at ``max(last beat + 1,
  swap(q - 1) + operations)``, issues operation ``k`` ``1 + k`` cycles later and emits a
  batch ``stages`` cycles after its last chunk's operation, plus the requantizer; the
  buffered shuffle swaps like the pointwise loader, then emits one beat per cycle; width
  converters emit a gathered word a cycle after its last part and split parts on the
  cycles after their word.
* When a folded pointwise array right after the fork (possibly through a gather) is the
  slowest unit, it holds the fork off: the fork's beats are timed jointly with the
  loader's (:func:`_fork_into_pointwise`). Likewise for a split right after the fork
  (:func:`_fork_into_split`).
* Reads follow the FIFO's two read registers, the skip-side converter (or skid buffer)
  and the add, which takes a skip beat and a main beat in the same cycle
  (:func:`_skip_reads`).

Other throttled paths are composed as if they kept up, which errs on the large side
(:attr:`SkipSizing.exact` is False). ``tests/test_skip.py`` checks, in simulation, that
the derived depth refuses no write and that one less does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Add, Depthwise, EngineConfig, Pointwise, Shuffle
from .schedule import (pointwise_cycles_per_pixel, requant_share, shared_requant_delay, window_schedule,
                       window_tail_wait)

__all__ = ["SkipSizing", "skip_sizing", "skip_fifo_depth"]

# Latencies of the units (kept equal to the gateware's properties by tests/test_skip.py).
FORK_LATENCY = 1
SKID_LATENCY = 1
REQUANT_LATENCY = 9
WINDOW_LATENCY = 2

#: Frames modelled back to back: a window stage's tail overlaps the next frame's first
#: pixels, so the FIFO's peak is at a frame border; the first border is not yet the
#: steady state (the pipeline starts empty), the second is.
SIZING_FRAMES = 3


@dataclass(frozen=True)
class SkipSizing:
    """The skip FIFO of one tensor: its depth and how it was derived."""
    tensor: str
    depth: int
    exact: bool            # True: the peak occupancy at full rate, exactly
    main_latency: int      # cycles from the fork taking the first beat to the add taking it


def _pipeline(times, latency):
    return times + latency


def _adder_stages(count, multipliers):
    from .mac import TREE_LEVELS, adder_tree_stages
    return adder_tree_stages(count, levels_per_stage=TREE_LEVELS[multipliers])


def _add_latency(stage: Add) -> int:
    from .residual import TABLE_BITS, residual_stages
    return len(residual_stages(stage.output.bits <= TABLE_BITS))


def _multiply_stages(stage):
    from .mac import MULTIPLY_STAGES
    return MULTIPLY_STAGES[stage.multipliers]


def _depthwise_times(stage: Depthwise, t_in: np.ndarray, tail_wait: int) -> np.ndarray:
    """Output beat times of a window + depthwise MAC + requantizer for the input beats
    ``t_in`` of back-to-back frames.

    Every slot fires when its input beat arrives; when frames overlap
    (:attr:`~convgen.hdl.schedule.WindowSchedule.overlaps`) the virtual slots of a frame
    are the next frame's first slots, so only the last frame's tail runs after the last
    input: back to back, once the window has waited ``tail_wait`` cycles for a next
    frame. Otherwise each frame's virtual slots follow its last input and
    hold the next frame's first beat off (a recurrence that assumes the held-off beat is
    offered on the cycle after; :func:`skip_timeline` then reports the depth as not exact).
    """
    s = window_schedule(stage)
    groups = stage.input.channels // stage.lanes
    per_frame = s.height * s.width * groups
    t_in = t_in + SKID_LATENCY                        # the unit's input skid buffer
    frames = t_in.size // per_frame
    emission = s.frame_emission_slots(frames)                          # (frames, outputs)
    beats = (emission[:, :, None] * groups + np.arange(groups)).reshape(-1)
    if s.overlaps or s.tail == 0:
        tail = s.tail * groups
        wait = tail_wait if s.overlaps else 0
        fire = np.concatenate([t_in, t_in[-1] + 1 + wait + np.arange(tail, dtype=np.int64)])
    else:
        fire = np.empty(frames * s.slots * groups, dtype=np.int64)
        prev = -(1 << 40)
        for f in range(frames):
            for k in range(s.slots * groups):
                arrive = t_in[f * per_frame + k] if k < per_frame else prev + 1
                fire[f * s.slots * groups + k] = prev = max(arrive, prev + 1)
    mac_latency = 2 + _multiply_stages(stage) + _adder_stages(stage.kernel ** 2 + 1, stage.multipliers)   # operands, weights
    return fire[beats] + WINDOW_LATENCY + SKID_LATENCY + mac_latency + REQUANT_LATENCY   # window's output skid


def _buffered_pixels(t_in, beats_in, busy_cycles):
    """Swap times of a double-buffered pixel unit: pixel q swaps in at
    max(last beat + 1, swap(q - 1) + busy_cycles)."""
    last = t_in.reshape(-1, beats_in)[:, -1] + 1
    swap = np.empty_like(last)
    ready = -(1 << 40)
    for q, t in enumerate(last):            # a recurrence over pixels (schedule analysis only)
        ready = max(t, ready)
        swap[q] = ready
        ready += busy_cycles
    return swap


def _pointwise_times(stage: Pointwise, t_in: np.ndarray) -> np.ndarray:
    c_in, c_out, g = stage.input.channels, stage.output.channels, stage.groups
    beats_in, batches = c_in // stage.simd, c_out // stage.pe
    chunks = c_in // g // stage.simd
    ops = batches * chunks
    swap = _buffered_pixels(t_in, beats_in, ops)
    mac_stages = 3 + _multiply_stages(stage) + _adder_stages(stage.simd, stage.multipliers)   # operands, weights, multiply, tree, accumulate
    last_op = (np.arange(batches) + 1) * chunks - 1        # op index of each batch's last chunk
    requant = REQUANT_LATENCY + shared_requant_delay(requant_share(stage.pe, chunks))
    out = swap[:, None] + 1 + last_op[None, :] + mac_stages + requant
    return out.reshape(-1)


def _shuffle_times(stage: Shuffle, t_in: np.ndarray) -> np.ndarray:
    beats = stage.input.channels // stage.lanes
    if beats == 1:
        return t_in
    swap = _buffered_pixels(t_in, beats, beats)
    return (swap[:, None] + 1 + np.arange(beats)[None, :]).reshape(-1)


def _convert_times(t_in, channels, lanes_in, lanes_out):
    if lanes_in == lanes_out:
        return t_in
    import math
    wide = math.lcm(lanes_in, lanes_out)
    k_in, k_out = wide // lanes_in, wide // lanes_out
    words = t_in.reshape(-1, k_in)[:, -1] + 1 if k_in > 1 else t_in      # gather: 1 after the last part
    if k_out == 1:
        return words
    out = np.empty(words.size * k_out, dtype=np.int64)
    free = -(1 << 40)
    for w, t in enumerate(words):                                      # split: parts back to back
        start = max(t, free) + 1
        out[w * k_out:(w + 1) * k_out] = start + np.arange(k_out)
        free = start + k_out - 1
    return out


def _main_path(config: EngineConfig, add: Add) -> list:
    """The stages from the skip tensor's consumer up to (not including) the add."""
    names = [config.input.name] + [s.name for s in config.stages]
    start = names.index(add.skip.name)          # stages[start] consumes the skip tensor
    return list(config.stages[start:config.stages.index(add)])


def _keeps_up(config: EngineConfig, add: Add) -> bool:
    """True when no unit between the fork and the add is slower than one beat per cycle
    of the skip tensor (the fork's input rate)."""
    skip = add.skip
    lanes = config.input_lanes if skip.name == config.input.name else config.stage(skip.name).lanes_out
    period = skip.channels // lanes                     # cycles per pixel at the fork
    on_path = False
    for stage in config.stages:
        if stage.input.name == skip.name or (on_path is False and skip.name == config.input.name
                                            and stage is config.stages[0]):
            on_path = True
        if stage is add:
            break
        if on_path and isinstance(stage, Pointwise):
            if pointwise_cycles_per_pixel(stage.input.channels, stage.output.channels, stage.groups,
                                          stage.pe, stage.simd) > period:
                return False
        if on_path and isinstance(stage, Depthwise) and stage.input.channels // stage.lanes > period:
            return False
    return True


def _fork_into_pointwise(stage: Pointwise, n: int, gather: int = 1):
    """Fork acceptance times and pointwise loader acceptance times (of its ``simd``-wide
    beats), jointly, at full rate; ``gather`` fork beats make one loader beat through a
    :class:`~convgen.hdl.width.Gather` (1: no converter).

    Loader: beat ``b`` of pixel ``q`` is taken no earlier than pixel ``q - 1`` swapped in
    (the buffer frees in the swap cycle); pixel ``q`` swaps in at
    ``max(last beat + 1, swap(q - 1) + operations)``. Gather: a part is taken one per
    cycle, the part completing a word only from the cycle after the previous word is
    taken (its ``i.ready`` sees the output register's valid, not the take). Fork: its
    register frees when its consumer takes the beat.
    """
    beats_in = stage.input.channels // stage.simd
    ops = (stage.output.channels // stage.pe) * (stage.input.channels // stage.groups // stage.simd)
    words = n // gather
    fork = np.empty(n, dtype=np.int64)
    take = np.empty(words, dtype=np.int64)
    swaps = []
    fork_next, part_prev, take_prev, ready = 0, -(1 << 40), -(1 << 40), -(1 << 40)
    for v in range(words):
        q, b = divmod(v, beats_in)
        for c in range(gather):                           # the parts of loader beat v
            j = v * gather + c
            fork[j] = fork_next
            part = max(fork[j] + FORK_LATENCY, part_prev + 1)
            if gather > 1 and c == gather - 1 and v >= 1:
                part = max(part, take[v - 1] + 1)         # the word register must be empty
            part_prev = part
            fork_next = max(fork[j] + 1, part)
        word_valid = part_prev + (1 if gather > 1 else 0)
        free = swaps[q - 1] if (b == 0 and q >= 1) else -(1 << 40)
        take[v] = max(word_valid, take_prev + 1, free)
        take_prev = take[v]
        if gather == 1:
            fork_next = max(fork[v] + 1, take[v])         # the fork's register frees on the take
        if b == beats_in - 1:                               # the pixel is loaded: it swaps in
            ready = max(take[v] + 1, ready)
            swaps.append(ready)
            ready += ops
    return fork, take


class _SplitTiming:
    """:class:`~convgen.hdl.width.Split`'s word by word: a word offered from cycle ``avail``
    is taken when the spare register is empty (``i.ready``: the word before the previous
    one has gone, or the previous one went straight to the word register); its first part
    is offered once it is taken and the previous word's last part has gone."""

    def __init__(self):
        never = -(1 << 40)
        self.prev_take, self.prev_last, self.prev2_last = never, never, never

    def take(self, avail: int) -> tuple[int, int]:
        """``(take, first part offered)`` of the next word."""
        waiting = self.prev_take < self.prev2_last              # the previous word sits in the spare
        take = max(avail, self.prev2_last + 1) if waiting else avail
        self.prev_take = take
        return take, max(take, self.prev_last) + 1

    def sent(self, last: int):
        """The cycle the word's last part was taken."""
        self.prev2_last, self.prev_last = self.prev_last, last


def _fork_into_split(factor: int, n: int):
    """Fork acceptance times and split output times, the split's parts sent one per cycle."""
    fork = np.empty(n, dtype=np.int64)
    parts = np.empty(n * factor, dtype=np.int64)
    split = _SplitTiming()
    fork_next = 0
    for w in range(n):
        fork[w] = fork_next
        take, first = split.take(fork[w] + FORK_LATENCY)
        parts[w * factor:(w + 1) * factor] = first + np.arange(factor)
        split.sent(first + factor - 1)
        fork_next = max(fork[w] + 1, take)
    # Split parts then continue exactly as a one-beat-per-cycle stream into the path.
    return fork, parts


def _keeps_up_after_split(config: EngineConfig, add: Add, first) -> bool:
    """The path keeps up with the split's output (one beat per cycle of ``first``'s lanes)."""
    period = first.input.channels // first.lanes_in
    for stage in _main_path(config, add):
        if isinstance(stage, Pointwise) and pointwise_cycles_per_pixel(
                stage.input.channels, stage.output.channels, stage.groups, stage.pe, stage.simd) > period:
            return False
        if isinstance(stage, (Depthwise, Shuffle)) and stage.input.channels // stage.lanes_in > period:
            return False
    return True


def skip_timeline(config: EngineConfig, tensor: str, frames: int = SIZING_FRAMES):
    """``(write, read)`` times of every beat of ``tensor``'s skip FIFO for ``frames``
    back-to-back frames at full rate, fork input beats arriving one per cycle from cycle 0,
    the add it feeds, and whether the timing is exact."""
    adds = [s for s in config.stages if isinstance(s, Add) and s.skip.name == tensor]
    if not adds:
        raise ValueError(f"no add reads tensor {tensor!r} back")
    add = adds[0]
    spec = config.tensors[tensor]
    lanes = config.input_lanes if tensor == config.input.name else config.stage(tensor).lanes_out
    n = frames * spec.height * spec.width * spec.channels // lanes
    path = _main_path(config, add)
    first = path[0] if path else add
    exact = True
    if _keeps_up(config, add):
        t_fork_in = np.arange(n, dtype=np.int64)          # one beat per cycle, never held off
        t = _pipeline(t_fork_in, FORK_LATENCY)
    elif isinstance(first, Pointwise) and first.lanes_in % lanes == 0:
        # A folded pointwise array takes the fork's beats (through a gather when it is
        # wider): its loader is free again in the cycle its pixel swaps in, and the fork's
        # register frees when its consumer takes.
        t_fork_in, t = _fork_into_pointwise(first, n, first.lanes_in // lanes)
    elif (first.lanes_in < lanes and lanes % first.lanes_in == 0
          and _keeps_up_after_split(config, add, first)):
        # A split takes a word when its previous word's last part is sent (one per cycle).
        t_fork_in, t = _fork_into_split(lanes // first.lanes_in, n)
    else:
        # Not modelled: compose as if the path kept up with one beat per cycle. Beats then
        # enter the FIFO as early as they possibly can while the reads, paced by the slow
        # unit, come no earlier, so the result errs on the large side.
        t_fork_in = np.arange(n, dtype=np.int64)
        t = _pipeline(t_fork_in, FORK_LATENCY)
        exact = False
    write = t_fork_in + FORK_LATENCY                       # the FIFO takes its copy then
    # Walk the main path from the fork to the add.
    started = tensor == config.input.name
    cur_lanes = lanes
    if t.size != n:                                        # a converter was modelled already
        cur_lanes = first.lanes_in
    for stage in config.stages:
        if not started:
            if stage.name == tensor:
                started = True
            continue
        t = _convert_times(t, stage.input.channels, cur_lanes, stage.lanes_in)
        if stage is add:
            main = t
            break
        if isinstance(stage, Depthwise):
            t = _depthwise_times(stage, t, window_tail_wait(config, stage))
            schedule = window_schedule(stage)
            exact = exact and (frames == 1 or schedule.overlaps or schedule.tail == 0)
        elif isinstance(stage, Pointwise):
            t = _pointwise_times(stage, t)
        elif isinstance(stage, Shuffle):
            t = _shuffle_times(stage, t)
        elif isinstance(stage, Add):
            t = _pipeline(t, _add_latency(stage))
        t = _pipeline(t, SKID_LATENCY)
        cur_lanes = stage.lanes_out
    read = _skip_reads(write, main, lanes, add.lanes_in)
    return write, read, add, exact


class _FifoTiming:
    """The :class:`~convgen.hdl.engine.SkipFIFO`'s read pipeline, entry by entry: entry
    ``k`` leaves the memory for the read port's register in cycle ``issue = max(write[k]
    + 1, move[k - 1])`` (the register is free then, or passes entry ``k - 1`` on), moves to
    the output register in cycle ``move = max(issue + 1, read[k - 1])``, and is offered on
    the FIFO's output from ``move + 1``."""

    def __init__(self):
        self.move = self.read = -(1 << 40)

    def _step(self, write: int) -> int:
        """The next entry's issue cycle (its move is recorded)."""
        issue = max(write + 1, self.move)
        self.move = max(issue + 1, self.read)
        return issue

    def offered(self, write: int) -> int:
        """Cycle from which the next entry, written in cycle ``write``, is offered."""
        self._step(write)
        return self.move + 1

    def issues(self, write: np.ndarray, read: np.ndarray) -> np.ndarray:
        """Cycle each entry leaves the memory, given every write and read cycle."""
        issue = np.empty_like(write)
        for k in range(write.size):
            issue[k] = self._step(write[k])
            self.read = read[k]
        return issue


def _skip_reads(write: np.ndarray, main: np.ndarray, lanes_skip: int, lanes_add: int) -> np.ndarray:
    """Cycle in which each FIFO entry is read, given its write cycle and the cycle each
    main beat reaches the add: the FIFO offers entry ``k`` from :class:`_FifoTiming`'s
    cycle; then the skip-side converter (a split or a gather; a skid buffer when the lanes
    are equal) and the add, which takes skip beat ``i`` with main beat ``i`` in one cycle,
    decide the read."""
    n = write.size
    read = np.empty(n, dtype=np.int64)
    fifo = _FifoTiming()
    if lanes_skip == lanes_add:                          # a skid buffer between them
        never = -(1 << 40)
        add_prev2 = add_prev = never                     # the add's takes of beats k - 2, k - 1
        for k in range(n):
            # The skid takes beat k unless it still holds beat k - 1 (taken before beat
            # k - 2 left for the add); beat k is offered to the add once it is in and beat
            # k - 1 has gone.
            read[k] = fifo.read = max(fifo.offered(write[k]), add_prev2 + 1)
            add = max(read[k], add_prev) + 1
            add_prev2, add_prev = add_prev, max(add, main[k])
        return read
    if lanes_skip % lanes_add == 0:                      # split: entry k gives parts k*f .. k*f+f-1
        f = lanes_skip // lanes_add
        split = _SplitTiming()
        for k in range(n):
            read[k], first = split.take(fifo.offered(write[k]))
            fifo.read = read[k]
            t = first - 1
            for c in range(f):
                t = max(t + 1, main[k * f + c])          # part c is offered from first + c
            split.sent(t)
        return read
    if lanes_add % lanes_skip == 0:                      # gather: parts k*f .. feed add beat k
        f = lanes_add // lanes_skip
        word_taken = -(1 << 40)                          # cycle the previous gathered word was taken
        for k in range(n):
            avail = fifo.offered(write[k])
            t = max(avail, fifo.read + 1)
            if k % f == f - 1:                           # completing a word: the output must be empty
                t = max(t, word_taken + 1)
                read[k] = fifo.read = t
                word_taken = max(t + 1, main[k // f])
            else:
                read[k] = fifo.read = t
        return read
    raise NotImplementedError("skip-side width conversion through an lcm is not modelled")


def fifo_depth_for(write: np.ndarray, read: np.ndarray) -> int:
    """Smallest :class:`~convgen.hdl.engine.SkipFIFO` depth that takes every write on its
    cycle.

    The FIFO is a memory of ``depth - 2`` entries read through two registers; a write is
    refused while the memory is full (its level is registered: no credit for an entry
    leaving in the same cycle). Entry ``k`` leaves the memory in cycle ``issue[k]``
    (:class:`_FifoTiming`). So write ``j`` goes through iff fewer than ``depth - 2`` of
    entries ``0 .. j - 1`` are still inside in its cycle:
    ``depth = max_j (j - #{k : issue[k] < write[j]}) + 3``.
    """
    issue = _FifoTiming().issues(write, read)
    left_before = np.searchsorted(np.sort(issue), write, side="left")
    return int(np.max(np.arange(write.size) - left_before)) + 3


def skip_sizing(config: EngineConfig, tensor: str) -> SkipSizing:
    """Depth of ``tensor``'s skip FIFO (see the module docstring)."""
    write, read, add, exact = skip_timeline(config, tensor)
    return SkipSizing(tensor, fifo_depth_for(write, read), exact, int(read[0] - write[0]))


def skip_fifo_depth(config: EngineConfig, tensor: str) -> int:
    return skip_sizing(config, tensor).depth
