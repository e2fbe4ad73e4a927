"""Registered multiplies that land in a DSP block with its own registers.

:class:`Multiply` is ``p = a * b`` two enabled cycles after ``a``, ``b``: the operands
registered, then the product registered. In generic Verilog (simulation, lint, iCE40,
whose ``ice40_dsp`` pass packs such registers into SB_MAC16 by itself) it is behavioural.
Elaborated for an ECP5 (a platform whose ``family`` is ``"ecp5"``: an Amaranth
``LatticePlatform`` or :data:`ECP5`, which ``convgen synth`` passes) it is one
``MULT18X18D`` with its input registers (A, B) and output register clocked by ``CLK0``,
clock enable ``CE0`` the pipeline enable, ``SIGNEDA`` / ``SIGNEDB`` the operands'
signedness: yosys maps ``a * b`` to that primitive without registers, so the
fabric-to-DSP and DSP-to-fabric routing would add to the 18x18 multiply's 3.9 ns in
one cycle.

The registers are reset-less (reset-less fabric registers in the generic form, ``RST0``
tied low in the DSP): both start at 0 and hold their value through a domain reset.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Multiply", "ECP5", "fits_mult18", "is_ecp5"]

#: A platform stand-in for elaborating ECP5 gateware without a board (``convgen synth``).
ECP5 = SimpleNamespace(family="ecp5")


def fits_mult18(shape) -> bool:
    """True when a value of ``shape`` fits an 18-bit DSP operand (signed or unsigned:
    the MULT18X18D's SIGNEDA / SIGNEDB)."""
    return shape.width <= 18


def is_ecp5(platform) -> bool:
    """True when ``platform`` (as passed to ``elaborate``) is an ECP5."""
    return getattr(platform, "family", None) == "ecp5"


class Multiply(wiring.Component):
    """``p = a * b``, ``latency`` (2) cycles of ``en`` after the operands.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes (signed or unsigned); the product is ``signed(len(a) + len(b))``
        (unsigned times unsigned: ``unsigned(len(a) + len(b))``). On an ECP5 both must fit an
        18-bit operand (:func:`fits_mult18`); wider ones stay behavioural.

    Attributes
    ----------
    en : Signal, in
        Every register advances while it is high.
    a, b : Signal, in
    p : Signal(len(a) + len(b)), out
    """

    latency = 2

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = (s if hasattr(s, "signed") else s.shape() for s in (a_shape, b_shape))
        width = a_shape.width + b_shape.width
        p_shape = signed(width) if (a_shape.signed or b_shape.signed) else unsigned(width)
        super().__init__({"en": In(1), "a": In(a_shape), "b": In(b_shape), "p": Out(p_shape)})

    @property
    def in_dsp(self) -> bool:
        """True when both operands fit one MULT18X18D (only then is it instantiated on ECP5)."""
        return fits_mult18(self.a.shape()) and fits_mult18(self.b.shape())

    def elaborate(self, platform):
        m = Module()
        if is_ecp5(platform) and self.in_dsp:
            # each operand extended to 18 bits as its own signedness, SIGNEDA/B telling which
            a = Signal(signed(18) if self.a.shape().signed else unsigned(18))
            b = Signal(signed(18) if self.b.shape().signed else unsigned(18))
            product = Signal(36)
            m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(product[:len(self.p)])]
            ports = {f"i_A{k}": a[k] for k in range(18)}
            ports.update({f"i_B{k}": b[k] for k in range(18)})
            ports.update({f"i_C{k}": Const(0, 1) for k in range(18)})
            ports.update({f"o_P{k}": product[k] for k in range(36)})
            m.submodules.mult18 = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
                p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED", p_CLK3_DIV="ENABLED",
                p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE",
                p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
                i_SIGNEDA=Const(int(self.a.shape().signed), 1), i_SIGNEDB=Const(int(self.b.shape().signed), 1),
                i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
                i_CLK0=ClockSignal("sync"), i_CLK1=Const(0, 1), i_CLK2=Const(0, 1), i_CLK3=Const(0, 1),
                i_CE0=self.en, i_CE1=Const(0, 1), i_CE2=Const(0, 1), i_CE3=Const(0, 1),
                i_RST0=Const(0, 1), i_RST1=Const(0, 1), i_RST2=Const(0, 1), i_RST3=Const(0, 1),
                **ports)
            return m
        a = Signal(self.a.shape(), reset_less=True)
        b = Signal(self.b.shape(), reset_less=True)
        p = Signal(self.p.shape(), reset_less=True)
        with m.If(self.en):
            m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
        m.d.comb += self.p.eq(p)
        return m
