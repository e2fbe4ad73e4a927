"""Board top levels: the engine served over the board's UART (``docs/boards.md``).

* :class:`UARTEngine` — pins in, pins out: :class:`~convgen.boards.uart.UARTReceiver` ->
  :class:`~convgen.boards.loader.FrameLoader` <-> :class:`~convgen.hdl.engine.Engine`,
  loader -> :class:`~convgen.boards.uart.UARTTransmitter`, plus the status lights.
  Simulated as is (``tests/test_boards.py``).
* :class:`BoardTop` — a :class:`UARTEngine` on an amaranth-boards platform: the UART
  resource, two LEDs, the board's default clock (no PLL) and the platform's power-on reset.
* :data:`BOARDS` — the supported boards.

Everything runs in the ``sync`` domain of the board clock. Reset: the platform's
power-on reset (a reset synchronizer on iCE40, the GSR on ECP5) clears every register;
there is no reset button. The protocol recovers by itself: a frame that stops short
ends after the timeout (0.1 s on a board) with ``STATUS_TIMEOUT``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..hdl.engine import Engine
from .loader import FrameLoader
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["UARTEngine", "BoardTop", "Board", "BOARDS", "uart_divisor", "DEFAULT_BAUD"]

DEFAULT_BAUD = 115_200
#: The largest baud rate error the divisor may leave (the receiver tolerates about 4%).
MAX_BAUD_ERROR = 0.02


def uart_divisor(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` on a ``clock_hz`` clock (rounded); ``ValueError``
    naming ``--baud`` when that leaves a rate error above 2% or fewer than 4 cycles."""
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise ValueError(f"--baud must be a positive integer, not {baud!r}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ValueError(f"--baud {baud} is too fast for the {clock_hz / 1e6:g} MHz board clock "
                         f"(at most {int(clock_hz // 4)})")
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"--baud {baud} cannot be made from the {clock_hz / 1e6:g} MHz board clock "
                         f"(divisor {divisor} gives {clock_hz / divisor:.0f} baud, {100 * error:.1f}% off)")
    return divisor


class UARTEngine(wiring.Component):
    """An engine of ``config`` behind an 8N1 UART.

    Parameters
    ----------
    config : EngineConfig
    divisor : int
        Clock cycles per UART bit (at least 4).
    timeout : int
        Clock cycles without a byte that end a frame (:class:`FrameLoader`).
    blink : int
        Clock cycles per half period of the heartbeat.

    Ports
    -----
    rx : In(1)      the UART line from the host (idle high, asynchronous)
    tx : Out(1)     the UART line to the host (registered, idle high)
    busy : Out(1)   a frame is being received, computed or answered
    error : Out(1)  the last frame was refused (checksum, framing error, timeout)
    heartbeat : Out(1)  toggles every ``blink`` cycles
    activity : Out(1)   ``heartbeat | busy``: blinks while idle, on while busy (one LED)
    """

    def __init__(self, config: EngineConfig, *, divisor: int, timeout: int, blink: int):
        if not isinstance(blink, int) or isinstance(blink, bool) or blink < 1:
            raise ValueError(f"blink must be a positive integer of clock cycles, not {blink!r}")
        self.receiver = UARTReceiver(divisor)
        self.transmitter = UARTTransmitter(divisor)
        self.loader = FrameLoader(config, timeout=timeout)
        self.engine = Engine(config)
        self._blink = blink
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "error": Out(1),
                          "heartbeat": Out(1), "activity": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = self.receiver
        m.submodules.transmitter = transmitter = self.transmitter
        m.submodules.loader = loader = self.loader
        m.submodules.engine = engine = self.engine
        wiring.connect(m, receiver.o, loader.rx)
        wiring.connect(m, loader.tx, transmitter.i)
        wiring.connect(m, loader.to_engine, engine.i)
        wiring.connect(m, engine.o, loader.from_engine)
        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx), loader.rx_error.eq(receiver.framing_error),
                     self.busy.eq(loader.busy), self.error.eq(loader.error),
                     self.activity.eq(self.heartbeat | loader.busy)]
        ticks = Signal(range(self._blink))
        with m.If(ticks == self._blink - 1):
            m.d.sync += [ticks.eq(0), self.heartbeat.eq(~self.heartbeat)]
        with m.Else():
            m.d.sync += ticks.eq(ticks + 1)
        return m


@dataclass(frozen=True)
class Board:
    """A supported board: its platform class and where the status lights are.

    An LED is ``(resource, number)`` or ``(resource, number, subsignal)``.
    """
    name: str
    platform: type
    device: str
    activity_led: tuple
    error_led: tuple
    uart_note: str = "the board's USB-serial port"

    def make_platform(self):
        platform = self.platform()
        if self.name == "orangecrab":
            # The OrangeCrab's USB goes straight to the FPGA: no UART resource. Use the
            # Feather header's 0 (RX, into the FPGA) and 1 (TX) with a 3.3 V USB-serial adapter.
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                                 attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])
        return platform


def _boards():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2Platform
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return {
        # iCEBreaker: led 0 is the red LED (pin 11), led 1 the green one (pin 37).
        "icebreaker": Board("icebreaker", ICEBreakerPlatform, "iCE40UP5K-SG48", ("led", 1), ("led", 0)),
        "ulx3s": Board("ulx3s", ULX3S_85F_Platform, "LFE5U-85F-6BG381", ("led", 0), ("led", 1)),
        "orangecrab": Board("orangecrab", OrangeCrabR0_2Platform, "LFE5U-25F-8MG285",
                            ("rgb_led", 0, "g"), ("rgb_led", 0, "r"),
                            uart_note="Feather header pins 0 (RX) and 1 (TX), 3.3 V"),
    }


#: Board name -> :class:`Board`.
BOARDS = _boards()


class BoardTop(Elaboratable):
    """:class:`UARTEngine` of ``config`` on ``board`` at ``baud``, on the board's default clock.

    The divisor is ``round(clock / baud)`` (:func:`uart_divisor`); the frame timeout is
    0.1 s and the heartbeat blinks at about 1 Hz.
    """

    def __init__(self, board: Board, config: EngineConfig, *, baud: int = DEFAULT_BAUD):
        self.board = board
        self.config = config
        self.baud = baud

    def elaborate(self, platform):
        m = Module()
        clock_hz = platform.default_clk_frequency
        m.submodules.core = core = UARTEngine(self.config, divisor=uart_divisor(clock_hz, self.baud),
                                              timeout=int(clock_hz // 10), blink=int(clock_hz // 2))
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx_pin = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_pin.i), tx_pin.o.eq(core.tx)]
        requested = {}
        for role, led, signal in (("activity", self.board.activity_led, core.activity),
                                  ("error", self.board.error_led, core.error)):
            key = led[:2]
            if key not in requested:
                requested[key] = platform.request(*key, dir="-")
            port = requested[key] if len(led) == 2 else getattr(requested[key], led[2])
            m.submodules[f"led_{role}"] = pin = io.Buffer("o", port)
            m.d.comb += pin.o.eq(signal)
        return m
