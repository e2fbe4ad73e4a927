"""The pixel stream format shared by every component, and the skid buffer.

A frame streams in raster order (row by row, pixel by pixel), channels-last: a
pixel of C channels travels as C / lanes beats of ``lanes`` channels each,
channel ``beat * lanes + lane`` in lane ``lane``. Every beat carries

* ``data``: ``ArrayLayout(signed(bits), lanes)``;
* ``first``: 1 on the first beat of a frame;
* ``last``: 1 on the last beat of a frame.

Ports are :class:`amaranth.lib.stream.Signature` streams and follow its transfer
rules: ``valid`` never waits for ``ready``, the payload is stable while ``valid``
and not ``ready``, a transfer happens on a cycle with both high.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["beat_layout", "beat_signature", "SkidBuffer"]


def beat_layout(bits: int, lanes: int, *, signed_data: bool = True) -> data.StructLayout:
    """``{data: lanes x (un)signed(bits), first: 1, last: 1}``."""
    if not isinstance(lanes, int) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    if not isinstance(bits, int) or bits < 1:
        raise TypeError(f"bits must be a positive integer, not {bits!r}")
    element = signed(bits) if signed_data else bits
    return data.StructLayout({"data": data.ArrayLayout(element, lanes), "first": 1, "last": 1})


def beat_signature(bits: int, lanes: int, **kwargs) -> stream.Signature:
    """The stream signature of a beat of ``lanes`` elements of ``bits`` bits."""
    return stream.Signature(beat_layout(bits, lanes, **kwargs))


class SkidBuffer(wiring.Component):
    """Two-entry register slice that registers ``ready`` as well as the payload.

    Cuts every combinational path between its two sides: ``i.ready`` is a
    register, so a chain of stages separated by skid buffers has no long
    ready path. Full throughput (one beat per cycle); latency 1.

    Parameters
    ----------
    shape : ShapeLike
        Payload shape of both streams.
    """

    latency = 1

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.o.payload, name="skid")
        # "The skid register is empty", stored as such: i.ready is this flip-flop itself, not
        # its complement (a consumer's clock enable then needs no inversion, which an ECP5
        # block RAM output register could not absorb; see convgen.bram).
        skid_empty = Signal(init=1)
        m.d.comb += self.i.ready.eq(skid_empty)

        with m.If(~self.o.valid | self.o.ready):
            # The output register is free (or being emptied): refill it, from the skid first.
            with m.If(~skid_empty):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_empty.eq(1)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            # The output is stalled and a beat arrives: park it in the skid register.
            m.d.sync += [skid.eq(self.i.payload), skid_empty.eq(0)]
        return m
