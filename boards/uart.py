"""8N1 UART: a receiver and a transmitter, ``divisor`` clock cycles per bit.

A character on the line is one start bit (low), eight data bits, least significant first,
and one stop bit (high); the line idles high. Both sides run in the ``sync`` domain; the
baud rate is ``clock frequency / divisor`` (e.g. 12 MHz / 104 = 115,385 baud, 0.2% fast).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "MIN_DIVISOR"]

#: The smallest divisor: the receiver samples in the middle of a bit and needs a few cycles.
MIN_DIVISOR = 4


def _check_divisor(divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clock cycles per bit, "
                         f"not {divisor!r}")
    return divisor


class _UARTComponent(wiring.Component):
    """A UART side: ``divisor`` clock cycles per bit, checked."""

    def __init__(self, divisor: int, members: dict):
        self._divisor = _check_divisor(divisor)
        super().__init__(members)

    @property
    def divisor(self) -> int:
        return self._divisor


class UARTReceiver(_UARTComponent):
    """8N1 receiver with a two-flop synchronizer and mid-bit sampling.

    Ports
    -----
    rx : In(1)
        The line, asynchronous to the clock; idles high.
    o : Out(stream.Signature(8))
        Received bytes. ``valid`` stays up until the byte is taken.
    framing_error : Out(1)
        One-cycle pulse when a stop bit is sampled low; the byte is discarded and the
        receiver waits for the line to go high again (a break is one error, not many).
    overrun : Out(1)
        One-cycle pulse when a byte completes while the previous one is still waiting in
        ``o``; the new byte is discarded, the waiting one kept.

    Timing: the line is seen 2 cycles late (synchronizer); the start bit is confirmed
    ``divisor // 2`` cycles after its edge is seen and every later bit is sampled
    ``divisor`` cycles after the previous one, so near its middle; ``o.valid`` rises the
    cycle after the stop bit's sample, ``9 * divisor + divisor // 2 + 3`` cycles after the
    start edge on the pin.
    """

    def __init__(self, divisor: int):
        super().__init__(divisor, {"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                                   "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        line_meta = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [line_meta.eq(self.rx), line.eq(line_meta)]

        timer = Signal(range(divisor))
        bit = Signal(range(8))
        shift = Signal(8)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bit.eq(bit + 1), timer.eq(divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~line):
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
                with m.Else():
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                    m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTransmitter(_UARTComponent):
    """8N1 transmitter.

    Ports
    -----
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the line is idle (between characters).
    tx : Out(1)
        The line (a register; idles high).

    A byte taken in cycle t starts its start bit in cycle t + 1; a character lasts
    ``10 * divisor`` cycles, and back-to-back characters are ``10 * divisor + 1`` apart.
    """

    def __init__(self, divisor: int):
        super().__init__(divisor, {"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        shift = Signal(9)                       # data bits, then the stop bit
        bits_left = Signal(range(11))           # bit periods still to finish, start bit included
        timer = Signal(range(divisor))
        m.d.comb += self.i.ready.eq(bits_left == 0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i.payload, 1)), bits_left.eq(10),
                         timer.eq(divisor - 1)]
        with m.Elif(bits_left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], 1)), bits_left.eq(bits_left - 1),
                             timer.eq(divisor - 1)]
        return m
