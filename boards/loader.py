"""The frame loader: UART bytes in, a checked frame into the engine, its output back out.

Speaks the framing of :mod:`convgen.boards.protocol` (``docs/boards.md``):

1. ``IDLE`` — wait for ``COMMAND_FRAME``; every other byte is ignored.
2. ``RECEIVE`` — store the frame's ``H * W * C * in_bytes`` bytes in block RAM while
   computing their CRC-8, then compare the next byte with it. A framing error from the
   receiver or ``timeout`` cycles without a byte end the frame early.
3. ``REPLY`` — send the status byte. Only ``STATUS_OK`` goes on; a frame that failed is
   never computed. After a framing error the loader drains (``DRAIN``: ignores bytes
   until the line has been quiet for ``timeout`` cycles), so the rest of a damaged
   frame is not mistaken for a new one.
4. ``RUN`` — stream the stored frame into the engine (``to_engine``, one byte every
   2 cycles, ``first``/``last`` on the frame's first/last beat) while the engine's
   output beats (``from_engine``) go out byte by byte, with backpressure from the
   transmitter, into ``tx``; the engine stalls as the UART needs, so any ratio of
   output to input size works.
5. ``CHECKSUM`` — send the CRC-8 of the output bytes, back to ``IDLE``.

Bytes received in any state but ``RECEIVE`` are taken and dropped (``rx.ready`` is
always high, so the receiver never overruns because of the loader).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..hdl.beats import beat_layout
from . import protocol

__all__ = ["FrameLoader"]


class FrameLoader(wiring.Component):
    """Frame protocol engine between a UART and a convolution engine of ``config``.

    Parameters
    ----------
    config : EngineConfig
        The engine's geometry and widths.
    timeout : int
        Clock cycles without a byte that end a frame (``STATUS_TIMEOUT``) and that end
        the drain after a framing error.

    Ports
    -----
    rx : In(stream.Signature(8))
        Bytes from the receiver.
    rx_error : In(1)
        The receiver's framing-error pulse.
    tx : Out(stream.Signature(8))
        Bytes to the transmitter.
    to_engine : Out(stream.Signature(beat_layout(input bits, input lanes)))
        The stored frame, beat by beat.
    from_engine : In(stream.Signature(beat_layout(output bits, output lanes)))
        The engine's output beats.
    busy : Out(1)
        High from the command byte until the last reply byte is taken.
    error : Out(1)
        High from an error status until the next ``STATUS_OK``.

    Storage: one ``Memory`` of ``frame_bytes`` bytes (block RAM). Latency: the status
    byte is offered the cycle after the checksum byte arrives.
    """

    def __init__(self, config: EngineConfig, *, timeout: int):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise ValueError(f"timeout must be a positive integer of clock cycles, not {timeout!r}")
        self._config = config
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "to_engine": Out(stream.Signature(beat_layout(config.input.bits, self.input_lanes))),
            "from_engine": In(stream.Signature(beat_layout(config.output.bits, self.output_lanes))),
            "busy": Out(1),
            "error": Out(1),
        })

    # -- geometry ---------------------------------------------------------------------------

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def input_lanes(self) -> int:
        return self._config.input_lanes

    @property
    def output_lanes(self) -> int:
        return self._config.stages[-1].lanes_out

    @property
    def frame_bytes(self) -> int:
        """Input element bytes of one frame (what the memory holds)."""
        spec = self._config.input
        return spec.height * spec.width * spec.channels * protocol.element_bytes(spec.bits)

    @property
    def result_bytes(self) -> int:
        """Output element bytes of one frame (between the status byte and the CRC)."""
        spec = self._config.output
        return spec.height * spec.width * spec.channels * protocol.element_bytes(spec.bits)

    # -- gateware ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        config = self._config
        in_bits, out_bits = config.input.bits, config.output.bits
        in_element = protocol.element_bytes(in_bits)
        out_element = protocol.element_bytes(out_bits)
        n_in, n_out = self.frame_bytes, self.result_bytes
        in_beat_bytes = self.input_lanes * in_element
        out_beat_bytes = self.output_lanes * out_element
        beats_in = n_in // in_beat_bytes

        m.submodules.frame = frame = Memory(shape=8, depth=n_in, init=[])
        store = frame.write_port()
        fetch = frame.read_port()

        # Receive side.
        received = Signal(range(n_in + 1))
        crc_in = Signal(8)
        quiet = Signal(range(self._timeout + 1))         # cycles since the last byte
        status = Signal(8)
        drain = Signal()
        m.d.comb += [self.rx.ready.eq(1), store.addr.eq(received), store.data.eq(self.rx.payload)]

        # Feeding the engine: bytes from the memory into a beat register.
        fetch_addr = Signal(range(n_in + 1))
        fetched = Signal()                               # fetch.data holds a byte this cycle
        beat = Signal(8 * in_beat_bytes)
        beat_fill = Signal(range(in_beat_bytes + 1))
        beat_index = Signal(range(max(beats_in, 2)))
        m.d.comb += [
            fetch.addr.eq(fetch_addr),
            self.to_engine.payload.data.eq(Cat(*(beat[8 * in_element * k:][:in_bits]
                                                 for k in range(self.input_lanes)))),
            self.to_engine.payload.first.eq(beat_index == 0),
            self.to_engine.payload.last.eq(beat_index == beats_in - 1),
        ]

        # Draining the engine: an output beat as little-endian, sign-extended bytes.
        lanes = [Signal(signed(8 * out_element), name=f"out_lane{k}") for k in range(self.output_lanes)]
        m.d.comb += [lane.eq(self.from_engine.payload.data[k]) for k, lane in enumerate(lanes)]
        result = Signal(8 * out_beat_bytes)
        result_left = Signal(range(out_beat_bytes + 1))
        sent = Signal(range(n_out + 1))
        crc_out = Signal(8)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.rx.valid & (self.rx.payload == protocol.COMMAND_FRAME)):
                    m.d.sync += [received.eq(0), crc_in.eq(0), quiet.eq(0), drain.eq(0)]
                    m.next = "RECEIVE"

            with m.State("RECEIVE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += quiet.eq(quiet + 1)
                with m.If(self.rx_error):
                    m.d.sync += [status.eq(protocol.STATUS_FRAMING_ERROR), drain.eq(1)]
                    m.next = "REPLY"
                with m.Elif(self.rx.valid):
                    m.d.sync += quiet.eq(0)
                    with m.If(received != n_in):
                        m.d.comb += store.en.eq(1)
                        m.d.sync += [received.eq(received + 1),
                                     crc_in.eq(protocol.crc8_next(crc_in, self.rx.payload))]
                    with m.Else():
                        m.d.sync += status.eq(Mux(self.rx.payload == crc_in, protocol.STATUS_OK,
                                                  protocol.STATUS_BAD_CHECKSUM))
                        m.next = "REPLY"
                with m.Elif(quiet == self._timeout):
                    m.d.sync += status.eq(protocol.STATUS_TIMEOUT)
                    m.next = "REPLY"

            with m.State("REPLY"):
                m.d.comb += [self.busy.eq(1), self.tx.valid.eq(1), self.tx.payload.eq(status)]
                with m.If(self.tx.ready):
                    m.d.sync += self.error.eq(status != protocol.STATUS_OK)
                    with m.If(status == protocol.STATUS_OK):
                        m.d.sync += [fetch_addr.eq(0), fetched.eq(0), beat_fill.eq(0), beat_index.eq(0),
                                     self.to_engine.valid.eq(0), result_left.eq(0), sent.eq(0),
                                     crc_out.eq(0)]
                        m.next = "RUN"
                    with m.Elif(drain):
                        m.d.sync += quiet.eq(0)
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("DRAIN"):
                m.d.sync += quiet.eq(Mux(self.rx.valid, 0, quiet + 1))
                with m.If(quiet == self._timeout):
                    m.next = "IDLE"

            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                # Feed: one memory read, then its byte into the beat, while no beat waits.
                with m.If(fetched):
                    m.d.sync += [beat.eq(Cat(beat[8:], fetch.data)), fetched.eq(0)]
                    with m.If(beat_fill == in_beat_bytes - 1):
                        m.d.sync += [beat_fill.eq(0), self.to_engine.valid.eq(1)]
                    with m.Else():
                        m.d.sync += beat_fill.eq(beat_fill + 1)
                with m.Elif(~self.to_engine.valid & (fetch_addr != n_in)):
                    m.d.sync += [fetch_addr.eq(fetch_addr + 1), fetched.eq(1)]
                with m.If(self.to_engine.valid & self.to_engine.ready):
                    m.d.sync += [self.to_engine.valid.eq(0), beat_index.eq(beat_index + 1)]
                # Drain: a beat into the result register, then out byte by byte.
                m.d.comb += [self.from_engine.ready.eq(result_left == 0),
                             self.tx.valid.eq(result_left != 0), self.tx.payload.eq(result[:8])]
                with m.If(self.from_engine.valid & self.from_engine.ready):
                    m.d.sync += [result.eq(Cat(*lanes)), result_left.eq(out_beat_bytes)]
                with m.If(self.tx.valid & self.tx.ready):
                    m.d.sync += [result.eq(result >> 8), result_left.eq(result_left - 1), sent.eq(sent + 1),
                                 crc_out.eq(protocol.crc8_next(crc_out, result[:8]))]
                with m.If(sent == n_out):
                    m.next = "CHECKSUM"

            with m.State("CHECKSUM"):
                m.d.comb += [self.busy.eq(1), self.tx.valid.eq(1), self.tx.payload.eq(crc_out)]
                with m.If(self.tx.ready):
                    m.next = "IDLE"
        return m
