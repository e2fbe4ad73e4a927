"""Pipelined arithmetic shared by the MAC units: adder trees and the per-group parameter ROM."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib.memory import Memory

from .dsp import Multiply

__all__ = ["signed_bits", "adder_tree", "GroupCounter", "group_rom", "MULTIPLY_STAGES", "MULTIPLY_STAGE_NAMES",
           "TREE_LEVELS", "product", "delayed"]

#: Register stages of one multiply: a DSP product registers its operands, then the product
#: (:class:`~convgen.hdl.dsp.Multiply`: the DSP block's own registers on ECP5); a logic
#: product registers the pairwise sums of its shifted rows, then one level of their sums,
#: then their total (product tables: the table read, its data, the digits' sum).
MULTIPLY_STAGE_NAMES = {"dsp": ("factors", "multiply"), "logic": ("rows", "partial", "multiply")}
MULTIPLY_STAGES = {kind: len(names) for kind, names in MULTIPLY_STAGE_NAMES.items()}
#: Adder levels per register stage of the tree over a multiplier's products: one behind
#: DSPs (their products come out over long routing, about 1.9 ns on the ECP5, and the
#: designs that use them aim at the higher clocks), two behind logic multipliers.
TREE_LEVELS = {"dsp": 1, "logic": 2}


def signed_bits(lo: int, hi: int) -> int:
    """Width of a signed value holding every integer in [lo, hi]."""
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1


def adder_tree(m: Module, en, values, *, width: int, levels_per_stage: int = 2, name: str = "sum"):
    """Sum ``values`` with a binary tree registered every ``levels_per_stage`` levels and
    after the last.

    Every register advances on ``en``. Returns ``(total, stages)``: the sum as a
    ``signed(width)`` value and the number of register stages it went through
    (0 for a single value). ``width`` must hold every partial sum (callers size it
    from the worst case).
    """
    level, stages, depth = list(values), 0, 0
    while len(level) > 1:
        nxt = [level[k] + level[k + 1] for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        depth += 1
        if depth % levels_per_stage == 0 or len(nxt) == 1:
            regs = []
            for k, v in enumerate(nxt):
                reg = Signal(signed(width), name=f"{name}_s{stages}_{k}")
                with m.If(en):
                    m.d.sync += reg.eq(v)
                regs.append(reg)
            nxt, stages = regs, stages + 1
        level = nxt
    return level[0], stages


def product(m: Module, en, a, w, *, kind: str, name: str):
    """``a * w`` (both signed) registered ``MULTIPLY_STAGES[kind]`` enabled cycles later.

    ``"dsp"``: a :class:`~convgen.hdl.dsp.Multiply` submodule (operands registered, then
    the product: one MULT18X18D with its own registers when elaborated for ECP5). ``"logic"``: shift-and-add of
    the rows ``a * w[k] * 2^k`` (the top row subtracted: two's complement), added in pairs,
    registered, the pairs added in pairs and registered, then summed and registered; no
    ``*``, so no DSP. Returns the product as a
    ``signed(len(a) + len(w))`` signal.
    """
    width = len(a) + len(w)
    out = Signal(signed(width), name=name)
    if kind == "dsp":
        m.submodules[f"{name}_mul"] = mul = Multiply(a.shape(), w.shape())
        m.d.comb += [mul.en.eq(en), mul.a.eq(a), mul.b.eq(w), out.eq(mul.p)]
        return out
    if kind != "logic":
        raise ValueError(f"multipliers must be one of {', '.join(MULTIPLY_STAGES)}, not {kind!r}")
    # Pair p_i = a*w[2i] + 2*a*w[2i+1] at its own weight 4^i (narrow: len(a) + 2 bits); the
    # top bit of w has weight -2^(len(w)-1).
    n = len(w)
    pairs = []
    for i, k in enumerate(range(0, n, 2)):
        low = Mux(w[k], a, 0)
        if k == n - 1:                                   # odd width: the top row alone
            value = -low
        else:
            high = Mux(w[k + 1], a, 0) << 1
            value = low - high if k + 1 == n - 1 else low + high
        pair = Signal(signed(len(a) + 3), name=f"{name}_pair{i}")
        with m.If(en):
            m.d.sync += pair.eq(value)
        pairs.append((pair, 2 * i))
    # total: the pairs at their weights, added as a balanced tree; its first level registered
    def merge(terms):
        merged = []
        for j in range(0, len(terms) - 1, 2):
            (x, wx), (y, wy) = terms[j], terms[j + 1]
            merged.append((x + (y << (wy - wx)), wx))
        if len(terms) % 2:
            merged.append(terms[-1])
        return merged

    partial = []
    for i, (value, weight) in enumerate(merge(pairs) if len(pairs) > 1 else pairs):
        reg = Signal(value.shape(), name=f"{name}_partial{i}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        partial.append((reg, weight))
    while len(partial) > 1:
        partial = merge(partial)
    total = partial[0][0] << partial[0][1]
    with m.If(en):
        m.d.sync += out.eq(total)
    return out


def delayed(m: Module, en, values, stages: int, shape, name: str):
    """``values`` through ``stages`` registers each (advancing on ``en``), named
    ``name.format(k)`` for the ``k``-th value; returns the last registers."""
    for _ in range(stages):
        regs = [Signal(shape, name=name.format(k)) for k in range(len(values))]
        with m.If(en):
            m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
        values = regs
    return values


def adder_tree_stages(count: int, levels_per_stage: int = 2) -> int:
    """Register stages :func:`adder_tree` uses for ``count`` values."""
    stages, depth = 0, 0
    while count > 1:
        count = (count + 1) // 2
        depth += 1
        if depth % levels_per_stage == 0 or count == 1:
            stages += 1
    return stages


class GroupCounter:
    """The channel group of the beat on a stream: 0 on ``first``, then counting modulo
    ``groups`` on every transfer. ``index`` is the group of the beat offered now; ``count``
    (a register) is that group unless the beat is ``first``."""

    def __init__(self, m: Module, port, groups: int, name: str = "group"):
        self.index = Signal(range(max(groups, 1)), name=f"{name}_index")
        self.count = count = Signal(range(max(groups, 1)), name=f"{name}_count")
        m.d.comb += self.index.eq(Mux(port.payload.first, 0, count))
        with m.If(port.valid & port.ready):
            m.d.sync += count.eq(Mux(self.index == groups - 1, 0, self.index + 1))


def group_rom(m: Module, name: str, layout, rows: list, addr, en, *, attrs=None):
    """A ROM (``Memory``) of parameter rows, read synchronously at ``addr`` while ``en``;
    returns the read data (valid the cycle after the address). ``attrs``: the memory's
    attributes (e.g. ``rom_style``)."""
    m.submodules[name] = rom = Memory(shape=layout, depth=len(rows), init=rows, attrs=attrs)
    port = rom.read_port()
    m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
    return port.data
