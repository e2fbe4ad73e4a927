"""The engine: a config's stages composed into one streaming datapath.

::

    i --> [width] --> stage 0 --> skid --> [width] --> stage 1 --> skid --> ... --> o
            |                                             ^
            '--> fork --> skip FIFO --> skid|width -----' (an add's skip operand)

* a :class:`~convgen.hdl.width.WidthConverter` wherever the lanes of a producer and its
  consumer differ;
* a :class:`~convgen.hdl.beats.SkidBuffer` after every stage, so ``ready`` is registered
  at every stage boundary and never chains through the engine;
* a :class:`Fork` after every tensor an add reads back, feeding a skip FIFO
  (:class:`SkipFIFO`: block RAM read through two registers) whose depth is
  :func:`skip_fifo_depth`, and from it the add through a width converter or, with equal
  lanes, a skid buffer;
* a burst FIFO after a strided window stage whose outputs come in bursts faster than
  the next stage takes them (:func:`burst_fifo_depths`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import Add, Depthwise, EngineConfig, Pointwise, Shuffle
from .beats import SkidBuffer, beat_layout
from .depthwise import DepthwiseUnit
from .pointwise import PointwiseUnit
from .residual import ResidualAdd
from .schedule import window_tail_wait
from .shuffle import ChannelShuffle
from .width import WidthConverter

__all__ = ["Fork", "SkipFIFO", "Engine", "make_unit"]


class Fork(wiring.Component):
    """One stream to two consumers; each beat goes to both. Registered outputs with a
    valid bit each: a consumer that is slower holds off the input, never the other
    consumer's copy. Full throughput when both are ready; latency 1."""

    latency = 1

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "a": Out(stream.Signature(shape)),
                          "b": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        a_free = ~self.a.valid | self.a.ready
        b_free = ~self.b.valid | self.b.ready
        m.d.comb += self.i.ready.eq(a_free & b_free)
        with m.If(self.a.valid & self.a.ready):
            m.d.sync += self.a.valid.eq(0)
        with m.If(self.b.valid & self.b.ready):
            m.d.sync += self.b.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.a.payload.eq(self.i.payload), self.b.payload.eq(self.i.payload),
                         self.a.valid.eq(1), self.b.valid.eq(1)]
        return m


class SkipFIFO(wiring.Component):
    """A FIFO of ``depth`` beats (>= 3): a memory of ``depth - 2`` entries read through two
    registers, the read port's and an output register (reset-less, nothing between: on
    ECP5 the DP16KD output register, see :mod:`convgen.bram`), which ``o`` comes from.

    The read pipeline stalls as a whole: the output register takes the next entry when it
    is empty or read (``~o.valid | o.ready``), the read port when it is empty or passes
    its entry on. A write (refused while the memory is full) is offered on ``o`` three
    cycles later at the earliest; one beat per cycle both ways. ``level`` is the
    occupancy (memory, read port, output register), for benches."""

    #: Cycles from a write to the beat on ``o`` when the FIFO is empty.
    latency = 3

    def __init__(self, shape, depth: int):
        if depth < 3:
            raise ValueError(f"skip FIFO depth must be >= 3, not {depth}")
        self.shape, self.depth = shape, depth
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.shape).width
        inner_depth = self.depth - 2
        # no_rw_check: a read of the entry written in the same cycle happens only when the
        # memory is empty and is discarded, so yosys need not emulate read-old-data.
        m.submodules.storage = storage = Memory(shape=width, depth=inner_depth, init=[],
                                                attrs={"no_rw_check": 1})
        wr, rd = storage.write_port(), storage.read_port()
        produce = Signal(range(inner_depth), name="produce")
        consume = Signal(range(inner_depth), name="consume")
        inner_level = Signal(range(inner_depth + 1), name="inner_level")
        read_valid = Signal()                       # the read port's register holds an entry
        out = Signal(width, name="out", reset_less=True)
        write = Signal()
        issue = Signal()
        advance_out = ~self.o.valid | self.o.ready  # the output register takes the next entry
        advance_read = ~read_valid | advance_out    # the read port takes the next address
        # i.ready is a register, `inner_level != inner_depth` a cycle early: the memory
        # cannot be full after a cycle that issues a read, else it is full after a write
        # at depth - 1 or without one at depth (compares of the level register alone, so
        # o.ready reaches this register through `issue` only).
        ready = Signal(init=1, name="w_ready")
        m.d.sync += ready.eq(issue | Mux(write, inner_level != inner_depth - 1, inner_level != inner_depth))
        m.d.comb += [
            self.i.ready.eq(ready),
            write.eq(self.i.valid & self.i.ready),
            wr.addr.eq(produce), wr.data.eq(self.i.payload), wr.en.eq(write),
            issue.eq(advance_read & (inner_level != 0)),
            rd.addr.eq(consume), rd.en.eq(advance_read),
            self.o.payload.eq(out),
            self.level.eq(inner_level + read_valid + self.o.valid),
        ]
        with m.If(write):
            m.d.sync += produce.eq(Mux(produce == inner_depth - 1, 0, produce + 1))
        with m.If(issue):
            m.d.sync += consume.eq(Mux(consume == inner_depth - 1, 0, consume + 1))
        with m.If(write & ~issue):
            m.d.sync += inner_level.eq(inner_level + 1)
        with m.Elif(issue & ~write):
            m.d.sync += inner_level.eq(inner_level - 1)
        with m.If(advance_read):
            m.d.sync += read_valid.eq(inner_level != 0)
        with m.If(advance_out):
            m.d.sync += [self.o.valid.eq(read_valid), out.eq(rd.data)]
        return m


def burst_fifo_depths(config: EngineConfig) -> dict[str, int]:
    """Depth (beats) of the FIFO behind each strided depthwise stage that needs one.

    The stage's input pixels arrive at the pace of the slowest stage before it; the
    stages after it take its output pixels at the pace of the slowest of them
    (both from the cost model's busy cycles). ``convgen.hdl.schedule.burst_backlog``
    gives the pixels to buffer beyond the two the next (double-buffered) stage holds.
    """
    from ..cost import estimate
    from .schedule import burst_backlog, window_schedule
    busy = {s.name: s.busy_cycles for s in estimate(config).stages}
    names = ["input"] + [s.name for s in config.stages]
    depths = {}
    for index, stage in enumerate(config.stages):
        if not isinstance(stage, Depthwise) or stage.stride == 1 or index + 1 == len(config.stages):
            continue
        pixels_in = stage.input.height * stage.input.width
        pixels_out = stage.out_height * stage.out_width
        period_in = -(-max(busy[n] for n in names[:index + 2]) // pixels_in)
        period_out = -(-max(busy[n] for n in names[index + 2:]) // pixels_out)
        backlog = burst_backlog(window_schedule(stage), period_in, period_out)
        if backlog:
            depths[stage.name] = max(3, backlog * (stage.output.channels // stage.lanes_out))
    return depths


def make_unit(stage, config: EngineConfig | None = None):
    """The gateware unit of a configured stage (``config``: the engine it is part of,
    which sets how long a window waits for the next frame; None for a unit alone)."""
    if isinstance(stage, Depthwise):
        return DepthwiseUnit(stage, tail_wait=None if config is None else window_tail_wait(config, stage))
    if isinstance(stage, Pointwise):
        return PointwiseUnit(stage)
    if isinstance(stage, Shuffle):
        return ChannelShuffle.for_stage(stage)
    if isinstance(stage, Add):
        return ResidualAdd.for_stage(stage)
    raise TypeError(f"no gateware for stage {stage!r}")


class Engine(wiring.Component):
    """The datapath of an :class:`~convgen.config.EngineConfig`.

    Ports: ``i`` — input beats (``input_lanes`` x input bits, ``first``/``last`` of frame);
    ``o`` — output beats (the last stage's lanes x output bits).

    Parameters
    ----------
    config : EngineConfig
    skip_depths : dict, optional
        Depth of the skip FIFO per skip tensor name, overriding :func:`skip_fifo_depth`
        (for tests that probe the sizing).
    """

    def __init__(self, config: EngineConfig, *, skip_depths: dict | None = None):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        self.units = {stage.name: make_unit(stage, config) for stage in config.stages}
        from .skip import skip_fifo_depth
        self.skip_depths = {name: skip_fifo_depth(config, name) for name in config.skip_sources}
        self.skip_depths.update(skip_depths or {})
        self.burst_depths = burst_fifo_depths(config)
        out = config.output
        super().__init__({
            "i": In(stream.Signature(beat_layout(config.input.bits, config.input_lanes))),
            "o": Out(stream.Signature(beat_layout(out.bits, config.stages[-1].lanes_out))),
        })
        self.skip_fifos: dict[str, SkipFIFO] = {}

    @property
    def output_lanes(self) -> int:
        return self.config.stages[-1].lanes_out

    def elaborate(self, platform):
        m = Module()
        config = self.config
        counter = iter(range(1 << 30))

        def convert(port, bits, channels, lanes_in, lanes_out):
            if lanes_in == lanes_out:
                return port
            conv = WidthConverter(bits=bits, channels=channels, lanes_in=lanes_in, lanes_out=lanes_out)
            m.submodules[f"width{next(counter)}"] = conv
            wiring.connect(m, port, conv.i)
            return conv.o

        skips = {}

        def fork_if_needed(port, spec, lanes):
            if spec.name not in config.skip_sources:
                return port
            fork = Fork(beat_layout(spec.bits, lanes))
            fifo = SkipFIFO(beat_layout(spec.bits, lanes), self.skip_depths[spec.name])
            m.submodules[f"fork_{spec.name}"] = fork
            m.submodules[f"skip_{spec.name}"] = fifo
            self.skip_fifos[spec.name] = fifo
            wiring.connect(m, port, fork.i)
            wiring.connect(m, fork.b, fifo.i)
            skips[spec.name] = (fifo.o, lanes)
            return fork.a

        port, lanes = wiring.flipped(self.i), config.input_lanes
        port = fork_if_needed(port, config.input, lanes)
        for stage in config.stages:
            unit = self.units[stage.name]
            m.submodules[stage.name] = unit
            port = convert(port, stage.input.bits, stage.input.channels, lanes, stage.lanes_in)
            wiring.connect(m, port, unit.i)
            if isinstance(stage, Add):
                skip_port, skip_lanes = skips[stage.skip.name]
                if skip_lanes == stage.lanes_in:
                    # The add takes its two operands jointly, so its ready is logic of the
                    # main beat's valid and its output's ready: a skid buffer keeps that out
                    # of the FIFO's read control (a converter's i.ready is a register already).
                    skip_skid = SkidBuffer(beat_layout(stage.skip.bits, skip_lanes))
                    m.submodules[f"skip_skid_{stage.name}"] = skip_skid
                    wiring.connect(m, skip_port, skip_skid.i)
                    skip_port = skip_skid.o
                else:
                    skip_port = convert(skip_port, stage.skip.bits, stage.skip.channels, skip_lanes,
                                        stage.lanes_in)
                wiring.connect(m, skip_port, unit.skip)
            skid = SkidBuffer(beat_layout(stage.output.bits, stage.lanes_out))
            m.submodules[f"skid_{stage.name}"] = skid
            wiring.connect(m, unit.o, skid.i)
            port, lanes = skid.o, stage.lanes_out
            if stage.name in self.burst_depths:
                burst = SkipFIFO(beat_layout(stage.output.bits, lanes), self.burst_depths[stage.name])
                m.submodules[f"burst_{stage.name}"] = burst
                wiring.connect(m, port, burst.i)
                port = burst.o
            port = fork_if_needed(port, stage.output, lanes)
        wiring.connect(m, port, wiring.flipped(self.o))
        return m
