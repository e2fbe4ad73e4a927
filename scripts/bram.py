"""ECP5 block RAM output registers, moved into the block RAM after synthesis.

A DP16KD read without its output register (``REGMODE NOREG``) has a 5.8 ns clock-to-out
in nextpnr's ECP5 timing model, so any path that starts there, even into a flip-flop
next to it, takes about 7 ns: over the 6.67 ns of 150 MHz. With ``REGMODE OUTREG`` the
data comes from the block RAM's own output register. yosys (0.70) maps memories to
DP16KD but never uses that register, so the gateware puts a reset-less register right
after every block RAM read port (nothing between, the same clock enable as the data it
holds), and :func:`absorb_output_registers` moves it into the block RAM in the netlist
yosys wrote, before nextpnr reads it:

* every connected data output of the read port drives exactly one ``TRELLIS_FF`` input
  ``DI`` and nothing else;
* those flip-flops share the block RAM port's clock (not inverted), one clock enable
  (a net, active high, or none) and have no set/reset (``LSR`` tied to 0) and reset
  value 0, the output register's power-up value;
* the port's own reset input is tied to 0.

Then the port gets ``REGMODE OUTREG`` with ``OCE`` from the flip-flops' clock enable, its
outputs take over the flip-flops' outputs, and the flip-flops go. The function of the
netlist is unchanged, cycle for cycle: the register is the same register, moved. In the
36-bit pseudo-dual-port mode (``DATA_WIDTH_A`` 36) both halves of the word (``DOA`` and
``DOB``) belong to the read port B, and both ``REGMODE_A`` and ``REGMODE_B`` are set.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

__all__ = ["AbsorbedPort", "absorb_output_registers"]


@dataclass(frozen=True)
class AbsorbedPort:
    """A block RAM read port whose output register was (or was not) absorbed."""
    ram: str
    port: str             # "A" or "B"
    flops: int            # flip-flops absorbed (0 when not)
    reason: str = ""      # why not, when not

    @property
    def absorbed(self) -> bool:
        return not self.reason


def _int_param(value) -> int:
    return int(value, 2) if isinstance(value, str) else int(value)


def _str_param(value) -> str:
    # yosys's JSON appends a space to a string that would read as a bit vector.
    return value.rstrip(" ") if isinstance(value, str) else str(value)


def _read_ports(cell: dict) -> list[tuple[str, list[str], list[str], list[str], str, str]]:
    """``(port, output pins, REGMODE params, OCE pins, clock pin, reset pin)`` per read port."""
    params = cell["parameters"]
    if _int_param(params.get("DATA_WIDTH_A", "0")) == 36:        # pseudo dual port: B reads 36 bits
        pins = [f"DOA{i}" for i in range(18)] + [f"DOB{i}" for i in range(18)]
        return [("B", pins, ["REGMODE_A", "REGMODE_B"], ["OCEA", "OCEB"], "CLKB", "RSTB")]
    return [(p, [f"DO{p}{i}" for i in range(18)], [f"REGMODE_{p}"], [f"OCE{p}"], f"CLK{p}", f"RST{p}")
            for p in "AB"]


def _absorb_port(cells: dict, sinks: dict, name: str, cell: dict, port, pins, regmodes, oce_pins,
                 clock_pin, reset_pin) -> AbsorbedPort:
    conn = cell["connections"]
    if any(_str_param(cell["parameters"].get(r, "NOREG")) != "NOREG" for r in regmodes):
        return AbsorbedPort(name, port, 0, "already registered")
    used = [(pin, conn[pin][0]) for pin in pins
            if pin in conn and isinstance(conn[pin][0], int) and sinks.get(conn[pin][0])]
    if not used:
        return AbsorbedPort(name, port, 0, "not read")
    if conn.get(reset_pin, ["0"])[0] != "0":
        return AbsorbedPort(name, port, 0, f"{reset_pin} is used")
    clock = conn.get(clock_pin, [None])[0]
    flops, enables = [], set()
    for pin, bit in used:
        readers = sinks.get(bit, [])
        if len(readers) != 1 or readers[0][1] != "DI" or cells[readers[0][0]]["type"] != "TRELLIS_FF":
            return AbsorbedPort(name, port, 0, f"{pin} does not drive one flip-flop alone")
        ff_name = readers[0][0]
        ff = cells[ff_name]
        p, c = ff["parameters"], ff["connections"]
        if _str_param(p.get("CLKMUX", "CLK")) != "CLK" or c.get("CLK", [None])[0] != clock:
            return AbsorbedPort(name, port, 0, f"{pin}: flip-flop {ff_name} on another clock")
        if c.get("LSR", ["0"])[0] != "0" or _str_param(p.get("REGSET", "RESET")) != "RESET":
            return AbsorbedPort(name, port, 0, f"{pin}: flip-flop {ff_name} has a set/reset")
        cemux = _str_param(p.get("CEMUX", "1"))
        if cemux == "1":
            enables.add("1")
        elif cemux == "CE":
            enables.add(c["CE"][0])
        else:
            return AbsorbedPort(name, port, 0, f"{pin}: flip-flop {ff_name} has clock enable {cemux}")
        flops.append((pin, ff_name))
    if len(enables) != 1:
        return AbsorbedPort(name, port, 0, "the flip-flops have different clock enables")
    (enable,) = enables
    for regmode in regmodes:
        cell["parameters"][regmode] = "OUTREG"
    for oce in oce_pins:
        conn[oce] = [enable]
    for pin, ff_name in flops:
        conn[pin] = list(cells[ff_name]["connections"]["Q"])
        del cells[ff_name]
    return AbsorbedPort(name, port, len(flops))


def absorb_output_registers(netlist: dict) -> list[AbsorbedPort]:
    """Move the flip-flops right after each DP16KD read port into its output register, in
    place in yosys's JSON ``netlist`` (see the module docstring); one record per read
    port that is read."""
    results = []
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        rams = [name for name, cell in cells.items() if cell["type"] == "DP16KD"]
        if not rams:
            continue
        sinks = defaultdict(list)
        for cell_name, cell in cells.items():
            for port, bits in cell["connections"].items():
                if cell["port_directions"].get(port, "input") != "output":
                    for bit in bits:
                        if isinstance(bit, int):
                            sinks[bit].append((cell_name, port))
        for port in module.get("ports", {}).values():
            for bit in port["bits"]:
                if isinstance(bit, int):
                    sinks[bit].append(("", "port"))      # a module output: never a flip-flop
        for name in rams:
            cell = cells[name]
            for read_port in _read_ports(cell):
                result = _absorb_port(cells, sinks, name, cell, *read_port)
                if result.reason != "not read":
                    results.append(result)
    return results
