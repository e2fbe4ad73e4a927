"""``convgen bench``: a sweep of examples x parallelism x targets, with a table and plots.

A sweep point is an engine *variant* (an example with its parallelism scaled by a factor)
and what is measured on it:

* the **cost model** (:mod:`convgen.cost`): multipliers and the analytic cycles per frame
  of a stream (``EngineCost.frame_period``: frames back to back);
* **simulation** (:func:`convgen.simulate.simulate` on Verilator): ``frames`` random frames
  back to back at full rate (source always valid, sink always ready), every output beat
  checked against the golden model; cycles per frame = the period between the first two
  frames' last output beats (:func:`steady_period`);
* **synthesis** per target (:func:`convgen.synth.synthesize`): Fmax against the target
  clock, LUT / FF / DSP / EBR use against the device, or the resource that does not fit.
  Frames per second = Fmax / simulated cycles per frame.

Variants (:func:`derive_variant`): the example's TOML document is edited and built again
through :func:`convgen.loader.config_from_dict`, so every variant passes the same
validation as a config file. With factor ``f``:

* every multiplier knob scales exactly: a depthwise stage's ``lanes`` becomes
  ``lanes * f``, a pointwise stage's ``pe * simd`` becomes ``pe * simd * f`` (the valid
  ``pe x simd`` split nearest the original's shape); a variant where one of them is not a
  whole number or not valid is not derived (the reason is reported);
* ports without multipliers (the input's ``lanes``, an explicit ``lanes`` of a shuffle
  or add) scale where needed: to the smallest divisor of the channels at or above
  ``lanes * f``, so they never become the bottleneck and never go below 1.

The numbers (weights, quantization) do not depend on the parallelism, so every variant
of an example computes the same function. The ``x1`` variant keeps the example's name
(its Verilog is the example's, so simulator builds are shared with ``convgen sim``);
the others are named ``<name>_x2``, ``<name>_x0_5``.

Outputs in the output directory: ``records.jsonl`` (one line per finished step; what
``--resume`` reads; a sweep without ``--resume`` starts it afresh and keeps the earlier one
as ``records.jsonl.bak``), ``bench.json`` (every variant with its results), ``bench.md`` (the
table), ``cycles.png``, ``fmax.png`` and ``utilization.png`` (matplotlib, Agg), and
``work/`` (simulation benches and synthesis builds).

Resume: a step's record is keyed by the variant, the step, the SHA-256 of the variant's
emitted Verilog and the step's settings (frames; nextpnr seed), so changing the gateware
or the config invalidates exactly the records it affects. ``records.jsonl`` is appended
and flushed after each step; a line cut short by an interruption is ignored. A step whose
tool broke (a crash, not a result such as a mismatch or a design that does not fit) is
reported in the table and not recorded, so a resumed sweep tries it again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .config import Add, Depthwise, EngineConfig, Pointwise, Shuffle

__all__ = ["Example", "Variant", "VariantError", "ToolRunner", "DEVICES", "EXAMPLES_DIR",
           "load_example", "derive_variant", "derive_variants", "resolve_examples",
           "parse_scales", "parse_targets", "run_sweep", "format_markdown", "write_report",
           "add_arguments", "run"]

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
RECORDS = "records.jsonl"
SIM_SEED = 0            # random frames and (unused at stall 0) stall pattern
SYNTH_SEED = 1          # nextpnr placement seed, as convgen synth's default

#: Device totals per target: column -> (nextpnr BEL type, total on the device). nextpnr's
#: report gives the totals of the resources a design uses; these fill in the others (and
#: the flip-flops of an iCE40, which sit in its logic cells) and let a sweep skip synthesis
#: of a variant whose MAC multipliers alone exceed the device's DSPs.
DEVICES = {
    "up5k": {"LUT": ("ICESTORM_LC", 5280), "FF": (None, 5280), "DSP": ("ICESTORM_DSP", 8),
             "EBR": ("ICESTORM_RAM", 30)},
    "ecp5-25k": {"LUT": ("TRELLIS_COMB", 24288), "FF": ("TRELLIS_FF", 24288),
                 "DSP": ("MULT18X18D", 28), "EBR": ("DP16KD", 56)},
    "ecp5-85k": {"LUT": ("TRELLIS_COMB", 83640), "FF": ("TRELLIS_FF", 83640),
                 "DSP": ("MULT18X18D", 156), "EBR": ("DP16KD", 208)},
}
RESOURCES = ("LUT", "FF", "DSP", "EBR")


class VariantError(ValueError):
    """The parallelism of an example cannot be scaled by the factor asked for."""


# -- command-line values ------------------------------------------------------------------------

def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> ``(0.5, 1.0, 2.0)``: positive finite factors, duplicates dropped."""
    scales = []
    for item in str(text).split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--scales must be comma-separated positive numbers, not {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--scales must be comma-separated positive numbers, not {text!r}")
        if value not in scales:
            scales.append(value)
    return tuple(scales)


def parse_targets(text: str) -> tuple[str, ...]:
    """``"up5k,ecp5-25k"`` -> ``("up5k", "ecp5-25k")``; every name one of :data:`DEVICES`."""
    targets = []
    for item in str(text).split(","):
        name = item.strip()
        if name not in DEVICES:
            raise ValueError(f"--targets must be a comma-separated list of {', '.join(DEVICES)}, "
                             f"not {name!r}")
        if name not in targets:
            targets.append(name)
    return tuple(targets)


def resolve_examples(items=None) -> list[Path]:
    """Config paths for ``--examples``: a path to a ``.toml`` file, or the name of one in
    ``examples/``; none given: every example, sorted by name."""
    known = sorted(EXAMPLES_DIR.glob("*.toml")) if EXAMPLES_DIR.is_dir() else []
    if not items:
        if not known:
            raise ValueError(f"--examples: no examples found in {str(EXAMPLES_DIR)!r}; name config files")
        return known
    paths = []
    for item in items:
        path = Path(item)
        if item.endswith(".toml") or os.sep in item:
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                raise ValueError(f"--examples: config file {item!r} {what}")
        else:
            path = EXAMPLES_DIR / f"{item}.toml"
            if not path.is_file():
                names = ", ".join(p.stem for p in known) or "none found"
                raise ValueError(f"--examples: no example named {item!r} (examples: {names})")
        if path.resolve() not in [p.resolve() for p in paths]:
            paths.append(path)
    return paths


# -- variants -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """An example config: its parsed TOML document and the engine it builds."""
    path: Path
    doc: dict
    config: EngineConfig

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Variant:
    """An example with its parallelism scaled by ``scale``."""
    example: Example
    scale: float
    config: EngineConfig
    parallelism: dict        # "input" or stage name -> {knob: value}, as the variant uses them

    @property
    def label(self) -> str:
        return f"{self.example.name}@x{self.scale:g}"

    @property
    def multipliers(self) -> int:
        return self.cost.multipliers

    @property
    def analytic_cycles(self) -> int:
        """The cost model's cycles per frame of a stream (frames back to back)."""
        return self.cost.frame_period

    @cached_property
    def cost(self):
        from .cost import estimate
        return estimate(self.config)


def load_example(path) -> Example:
    """Read a config file once: the document (to derive variants from) and its engine."""
    from .loader import load_config
    path = Path(path)
    config = load_config(path)            # every refusal of a bad file, with its message
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return Example(path, doc, config)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _exact(value: int, scale: float) -> int | None:
    """``value * scale`` if it is a whole number >= 1, else None."""
    product = value * scale
    whole = round(product)
    return whole if whole >= 1 and abs(product - whole) < 1e-9 else None


def _port_lanes(lanes: int, channels: int, scale: float) -> int:
    """A port without multipliers: the smallest divisor of ``channels`` >= ``lanes * scale``."""
    want = lanes * scale
    return next((d for d in _divisors(channels) if d >= want - 1e-9), channels)


def _scale_depthwise(stage: Depthwise, scale: float) -> dict:
    lanes = _exact(stage.lanes, scale)
    if lanes is None:
        raise VariantError(f"{stage.where}lanes {stage.lanes} x {scale:g} is not a whole number of lanes")
    try:
        dataclasses.replace(stage, lanes=lanes)          # the stage's own validation
    except ValueError as error:
        raise VariantError(str(error)) from None
    return {"lanes": lanes}


def _scale_pointwise(stage: Pointwise, scale: float) -> dict:
    target = _exact(stage.pe * stage.simd, scale)
    if target is None:
        raise VariantError(f"{stage.where}pe x simd = {stage.pe * stage.simd} x {scale:g} is not a "
                           f"whole number of multipliers")
    shape = math.log2(stage.pe / stage.simd)
    valid = []
    for pe in _divisors(target):
        simd = target // pe
        try:
            dataclasses.replace(stage, pe=pe, simd=simd)  # the stage's own validation
        except ValueError:
            continue
        valid.append((abs(math.log2(pe / simd) - shape), -simd, pe, simd))
    if not valid:
        raise VariantError(f"{stage.where}no valid pe x simd = {target} (pe {stage.pe} x simd "
                           f"{stage.simd} scaled by {scale:g}) for {stage.input.channels} input and "
                           f"{stage.output.channels} output channels in {stage.groups} group(s)")
    _, _, pe, simd = min(valid)            # nearest the original's pe:simd shape, then wider simd
    return {"pe": pe, "simd": simd}


def derive_variant(example: Example, scale: float) -> Variant:
    """The example with its parallelism scaled by ``scale`` (see the module docstring),
    built through the loader's validation. Raises :class:`VariantError` (a ``ValueError``)
    with the reason when the factor does not apply."""
    from .loader import config_from_dict
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    base = example.config
    doc = copy.deepcopy(example.doc)
    parallelism = {}
    table = doc.get("input", {})
    if "lanes" in table:
        table["lanes"] = _port_lanes(base.input_lanes, base.input.channels, scale)
        parallelism["input"] = {"lanes": table["lanes"]}
    for stage, st in zip(base.stages, doc.get("stage", [])):
        if isinstance(stage, Depthwise):
            knobs = _scale_depthwise(stage, scale)
        elif isinstance(stage, Pointwise):
            knobs = _scale_pointwise(stage, scale)
        elif isinstance(stage, (Shuffle, Add)) and "lanes" in st:
            knobs = {"lanes": _port_lanes(stage.lanes, stage.input.channels, scale)}
        else:
            continue
        st.update(knobs)
        parallelism[stage.name] = knobs
    label = f"x{scale:g}"
    if scale != 1:
        doc["name"] = f"{base.name}_{label.replace('.', '_').replace('-', '_').replace('+', '')}"
    else:
        doc["name"] = base.name
    try:
        config = config_from_dict(doc, base_dir=example.path.parent, default_name=base.name,
                                  source=str(example.path))
    except (ValueError, TypeError) as error:
        raise VariantError(str(error)) from None
    for stage in config.stages:            # what the built engine really uses (defaults followed)
        if isinstance(stage, (Shuffle, Add)) and stage.name not in parallelism:
            parallelism[stage.name] = {"lanes": stage.lanes}
    parallelism.setdefault("input", {"lanes": config.input_lanes})
    return Variant(example, float(scale), config, parallelism)


def derive_variants(paths, scales) -> tuple[list[Variant], list[dict]]:
    """Every (example, scale) variant that can be derived, and ``{"label", "reason"}`` for
    those that cannot."""
    variants, skipped = [], []
    for path in paths:
        example = load_example(path)
        for scale in scales:
            try:
                variants.append(derive_variant(example, scale))
            except VariantError as error:
                skipped.append({"label": f"{example.name}@x{scale:g}", "reason": str(error)})
    return variants, skipped


# -- the tools ----------------------------------------------------------------------------------

class ToolRunner:
    """What a sweep runs: the Verilog (for the record keys), Verilator, yosys/nextpnr.

    A sweep takes any object with these three methods (tests pass a fake that counts)."""

    def verilog(self, config: EngineConfig) -> str:
        from .emit import emit_verilog
        return emit_verilog(config)

    def simulate(self, config: EngineConfig, frames: int, work_dir) -> dict:
        import numpy as np

        from .simulate import simulate
        from .sim import golden
        rng = np.random.default_rng(SIM_SEED)
        inputs = np.stack([golden.random_input(config.input, rng) for _ in range(frames)])
        result = simulate(config, inputs, simulator="verilator", stall=0.0, seed=SIM_SEED,
                          work_dir=work_dir)
        return {"simulator": "verilator", "frames": len(result.frames), "passed": result.passed,
                "mismatches": result.mismatches, "flag_errors": len(result.flag_errors),
                "cycles": result.total_cycles, "frame_ends": result.frame_ends,
                "cycles_per_frame": steady_period(result.frame_ends, result.total_cycles),
                "sim_seconds": round(result.seconds, 2)}

    def __init__(self, synth_seed: int = SYNTH_SEED):
        self.synth_seed = synth_seed

    def synthesize(self, config: EngineConfig, target: str, out_dir) -> dict:
        from .synth import synthesize
        result = synthesize(config, target, out_dir, seed=self.synth_seed)
        data = result.to_json()
        for key in ("name", "target", "cost_model"):
            data.pop(key, None)
        return data


# -- records ------------------------------------------------------------------------------------

def _record_key(label: str, step: str, verilog_sha: str, settings: dict) -> str:
    extra = ",".join(f"{k}={settings[k]}" for k in sorted(settings))
    return f"{label}|{step}|{verilog_sha}|{extra}"


def _read_records(path: Path) -> dict:
    """Records by key; a line cut short or damaged (an interrupted write) is ignored."""
    records = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str) and "result" in record:
            records[record["key"]] = record
    return records


class _Records:
    """``records.jsonl``: read back on resume; otherwise an earlier file is kept as
    ``records.jsonl.bak`` (one sweep started without ``--resume`` by mistake loses nothing)."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.done = _read_records(path) if resume else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and path.exists() and path.stat().st_size:
            path.replace(path.with_name(path.name + ".bak"))
        # Rewritten without damaged lines, so that appends start on a line of their own.
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.done.values()),
                        encoding="utf-8")

    def add(self, record: dict) -> None:
        self.done[record["key"]] = record
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())


def _printer(text: str, end: str = "\n") -> None:
    print(text, end=end, flush=True)


# -- the sweep ----------------------------------------------------------------------------------

def _dsp_precheck(variant: Variant, target: str) -> dict | None:
    """A synthesis result without synthesis when the MAC multipliers built in DSPs alone
    exceed the device's DSPs (each takes at least one; requantizers and adds take more)."""
    bel, total = DEVICES[target]["DSP"]
    in_dsp = variant.cost.dsp_multipliers
    if in_dsp <= total:
        return None
    from .synth import TARGETS
    return {"fits": False, "fmax_mhz": None, "clock_mhz": TARGETS[target].clock_mhz,
            "meets_clock": False, "utilization": {bel: {"used": in_dsp, "available": total}},
            "cells": {}, "line_buffers": {}, "critical_path": [], "seconds": 0.0,
            "failure": f"does not fit {target}: {bel} at least {in_dsp} used of {total} "
                       f"(cost model's MAC multipliers in DSPs; not synthesized)",
            "predicted": True}


def run_sweep(variants, out_dir, *, targets=tuple(DEVICES), frames: int = 3, sim: bool = True,
              synth: bool = True, resume: bool = False, synth_all: bool = False, skipped=(),
              runner=None, log=_printer) -> dict:
    """Run every step of every variant (simulation, then synthesis per target) and return
    the results document that :func:`write_report` writes (also what ``bench.json`` holds).

    Each finished step is appended to ``out_dir/records.jsonl``; with ``resume`` the steps
    already recorded there for the same Verilog and settings are not run again. Without
    ``synth_all``, a target whose DSPs the cost model's multipliers exceed is reported as
    not fitting without synthesis. ``runner`` defaults to :class:`ToolRunner`; ``log``
    takes ``(text, end="\\n")``.
    """
    from .simulate import SimulatorUnavailable
    from .synth import TARGETS
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"--frames must be an integer >= 1, not {frames!r}")
    targets = parse_targets(",".join(targets)) if targets else ()
    runner = runner or ToolRunner()
    synth_seed = getattr(runner, "synth_seed", SYNTH_SEED)     # test runners may not have one
    out = Path(out_dir)
    store = _Records(out / RECORDS, resume)
    steps = []
    for variant in variants:
        if sim:
            steps.append((variant, "sim", None))
        if synth:
            steps.extend((variant, f"synth {t}", t) for t in targets)
    entries = {}
    hashes = {}
    started_all = time.perf_counter()
    ran = reused = 0
    for index, (variant, step, target) in enumerate(steps, 1):
        if variant.label not in hashes:
            hashes[variant.label] = hashlib.sha256(runner.verilog(variant.config).encode()).hexdigest()
        sha = hashes[variant.label]
        entry = entries.setdefault(variant.label, _entry(variant, sha))
        settings = {"frames": frames} if target is None else {"seed": synth_seed}
        key = _record_key(variant.label, step, sha, settings)
        where = f"[{index}/{len(steps)}] {variant.label}" + (f" {target}" if target else "")
        kind = "sim" if target is None else "synth"
        record = store.done.get(key)
        if record is not None:
            reused += 1
            log(f"{where}: {kind} done earlier ({_summary(kind, record['result'])})")
        elif target is not None and not synth_all and (predicted := _dsp_precheck(variant, target)):
            record = {"key": key, "result": predicted}
            log(f"{where}: synth skipped: {predicted['failure']}")
        else:
            log(f"{where}: {kind} ...", end="")
            work = out / "work" / variant.config.name / ("sim" if target is None else target)
            t0 = time.perf_counter()
            try:
                result = (runner.simulate(variant.config, frames, work) if target is None
                          else runner.synthesize(variant.config, target, work))
            except (ValueError, TypeError, SimulatorUnavailable):
                log(" refused")                  # a missing tool or a bad value: ends the sweep
                raise
            except Exception as error:
                # A tool that broke is not a result: reported, kept out of the records
                # (a resumed sweep tries again).
                message = f"{type(error).__name__}: {' '.join(str(error).split())}"
                log(f" failed: {message}")
                result = {"error": message}
                record = None
            except BaseException:
                log(" interrupted")
                raise
            else:
                seconds = time.perf_counter() - t0
                result["seconds_total"] = round(seconds, 1)
                record = {"key": key, "label": variant.label, "step": step, "verilog_sha256": sha,
                          "settings": settings, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "result": result}
                store.add(record)
                ran += 1
                log(f" {seconds:.0f} s, {_summary(kind, result)}")
            if record is None:
                record = {"key": key, "result": result}
        if target is None:
            entry["sim"] = record["result"]
        else:
            entry["synth"][target] = record["result"]
    for variant in variants:
        if variant.label not in entries:       # neither sim nor synth asked for
            entries[variant.label] = _entry(variant, None)
    log(f"bench: {len(steps)} step(s), {ran} run, {reused} resumed, "
        f"{time.perf_counter() - started_all:.0f} s")
    return {
        "tool": "convgen bench",
        "frames": frames,
        "simulator": "verilator",
        "synth_seed": synth_seed,
        "targets": {t: {"clock_mhz": TARGETS[t].clock_mhz, "family": TARGETS[t].family} for t in targets}
        if synth else {},
        "variants": [entries[v.label] for v in variants],
        "not_derived": list(skipped),
    }


def _entry(variant: Variant, sha: str | None) -> dict:
    return {"label": variant.label, "example": variant.example.name, "scale": variant.scale,
            "name": variant.config.name, "source": str(variant.example.path),
            "multipliers": variant.multipliers, "analytic_cycles_per_frame": variant.analytic_cycles,
            "bottleneck": variant.cost.bottleneck, "parallelism": variant.parallelism,
            "verilog_sha256": sha, "sim": None, "synth": {}}


def _summary(kind: str, result: dict) -> str:
    if "error" in result:
        return result["error"]
    if kind == "sim":
        verdict = "pass" if result.get("passed") else "FAIL"
        return f"{verdict}, {result['cycles_per_frame']:,.0f} cycles/frame"
    if not result.get("fits"):
        return result.get("failure") or "does not fit"
    fmax = result.get("fmax_mhz")
    return f"fits, Fmax {fmax:.1f} MHz" if fmax else "fits"


# -- the report ---------------------------------------------------------------------------------

def resources(target: str, result: dict) -> dict:
    """``column -> (used, available)`` for LUT / FF / DSP / EBR from a synthesis result
    (``used`` is None when the report does not say)."""
    out = {}
    utilization = result.get("utilization", {})
    for column, (bel, total) in DEVICES[target].items():
        if column == "FF" and bel is None:          # iCE40: one flip-flop per logic cell
            cells = result.get("cells", {})
            used = sum(n for cell, n in cells.items() if cell.startswith("SB_DFF")) if cells else None
            out[column] = (used, total)
            continue
        if bel in utilization:
            out[column] = (utilization[bel]["used"], utilization[bel]["available"])
        else:
            out[column] = (0 if result.get("fits") else None, total)
    return out


def _failed_resource(result: dict) -> str:
    """The resource named in a "does not fit" failure (``ICESTORM_DSP`` ...), else the text;
    ``(cost model)`` when the sweep predicted it without synthesis."""
    failure = result.get("failure") or "does not fit"
    if failure.startswith("does not fit"):
        rest = failure.split(":", 1)[1].strip() if ":" in failure else ""
        failure = rest.split()[0] if rest else "?"
    return failure + (" (cost model)" if result.get("predicted") else "")


def fps(entry: dict, result: dict) -> tuple[float | None, bool]:
    """``(frames per second, measured)``: Fmax / simulated cycles per frame, or over the
    analytic cycles (``measured`` False) when there is no passing simulation."""
    fmax = result.get("fmax_mhz") if result.get("fits") else None
    if not fmax:
        return None, False
    sim = entry.get("sim") or {}
    if sim.get("passed") and sim.get("cycles_per_frame"):
        return fmax * 1e6 / sim["cycles_per_frame"], True
    return fmax * 1e6 / entry["analytic_cycles_per_frame"], False


def _cell(used_total, at_least=False) -> str:
    used, total = used_total
    if used is None:
        return "-"
    return f"{'>=' if at_least else ''}{used:,}/{total:,} ({100 * used / total:.0f}%)"


def _sim_cell(sim) -> tuple[str, str]:
    if not sim:
        return "-", "-"
    if "error" in sim:
        return "error", sim["error"]
    return f"{sim['cycles_per_frame']:,.0f}", "pass" if sim["passed"] else f"FAIL ({sim['mismatches']} mismatches)"


def steady_period(frame_ends: list, total_cycles: int) -> int:
    """Cycles per frame of a full-rate run from each frame's last output cycle: the period
    between the first two frames (the steady state when three or more ran; with two, the
    second frame's window tails also wait for a next frame that does not come); one
    frame: the whole run, pipeline fill included."""
    return frame_ends[1] - frame_ends[0] if len(frame_ends) >= 2 else total_cycles


def format_markdown(results: dict) -> str:
    """``bench.md``: one row per variant (and target), then what was not derived."""
    targets = results.get("targets", {})
    lines = ["# convgen bench", ""]
    lines.append(f"Simulation: {results['frames']} random frame(s) back to back on {results['simulator']}, "
                 f"source always valid, sink always ready; cycles per frame: the period between the "
                 f"last output beats of the first two frames (one frame: first input to last output). "
                 f"Analytic: the cost model's cycles per frame of frames back to back (without "
                 f"pipeline latency).")
    if targets:
        clocks = ", ".join(f"{t} {v['clock_mhz']:g} MHz" for t, v in targets.items())
        lines.append("")
        lines.append(f"Synthesis: yosys + nextpnr (seed {results['synth_seed']}), target clocks {clocks}. "
                     f"Resources are used/available (% of the device). fps = Fmax / simulated cycles "
                     f"per frame (`*`: over the analytic cycles, no passing simulation).")
    lines.append("")
    head = ["variant", "multipliers", "analytic cycles/frame", "simulated cycles/frame (period)", "sim"]
    if targets:
        head += ["target", "Fmax MHz", *RESOURCES, "fps"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i in (0, 4, 5) else "---:" for i in range(len(head))) + "|")
    for entry in results["variants"]:
        cycles, verdict = _sim_cell(entry.get("sim"))
        base = [f"`{entry['label']}`", str(entry["multipliers"]), f"{entry['analytic_cycles_per_frame']:,}",
                cycles, verdict]
        if not targets:
            lines.append("| " + " | ".join(base) + " |")
            continue
        for target, info in targets.items():
            result = entry["synth"].get(target)
            if result is None:
                row = ["-"] * (len(RESOURCES) + 2)
            elif "error" in result:
                row = [f"error: {result['error']}"] + ["-"] * (len(RESOURCES) + 1)
            elif not result.get("fits"):
                res = resources(target, result)
                row = [f"does not fit: {_failed_resource(result)}",
                       *(_cell(res[c], result.get("predicted", False)) for c in RESOURCES), "-"]
            else:
                res = resources(target, result)
                fmax = result.get("fmax_mhz")
                rate, measured = fps(entry, result)
                fmax_text = "-" if fmax is None else (f"{fmax:.1f}" + ("" if fmax >= info["clock_mhz"] else " (misses)"))
                rate_text = "-" if rate is None else f"{rate:,.0f}" + ("" if measured else "*")
                row = [fmax_text, *(_cell(res[c]) for c in RESOURCES), rate_text]
            lines.append("| " + " | ".join(base + [target] + row) + " |")
    skipped = results.get("not_derived") or []
    if skipped:
        lines += ["", "Not derived (the factor does not apply to the example's parallelism):", ""]
        lines += [f"- `{s['label']}`: {s['reason']}" for s in skipped]
    lines.append("")
    return "\n".join(lines)


def _figure(ncols=1, nrows=1, width=6.4, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(figure)                      # Agg, without pyplot's global state
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def plot_cycles(results: dict, path) -> Path | None:
    """Cycles per frame against multipliers, one panel per example: the cost model's bound
    as a line, the simulated points beside it."""
    examples = {}
    for entry in results["variants"]:
        examples.setdefault(entry["example"], []).append(entry)
    if not examples:
        return None
    from matplotlib.ticker import ScalarFormatter
    ncols = min(3, len(examples))
    nrows = math.ceil(len(examples) / ncols)
    figure, axes = _figure(ncols, nrows, 4.6, 3.6)
    for ax, (name, entries) in zip(axes, examples.items()):
        entries = sorted(entries, key=lambda e: e["multipliers"])
        xs = [e["multipliers"] for e in entries]
        ax.plot(xs, [e["analytic_cycles_per_frame"] for e in entries], "o-", color="0.45",
                markerfacecolor="none", label="analytic (cost model)")
        measured = [(e["multipliers"], e["sim"]["cycles_per_frame"]) for e in entries
                    if e.get("sim") and "cycles_per_frame" in e["sim"]]
        if measured:
            ax.plot(*zip(*measured), "x", color="tab:red", markersize=9, markeredgewidth=2,
                    label="simulated (Verilator)")
        for e in entries:
            ax.annotate(f"x{e['scale']:g}", (e["multipliers"], e["analytic_cycles_per_frame"]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("multipliers (MAC units)")
        ax.set_ylabel("cycles per frame")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(examples):]:
        ax.set_axis_off()
    figure.suptitle("convgen bench: cycles per frame against parallelism")
    figure.savefig(path, dpi=110)
    return Path(path)


def _synth_points(results):
    targets = list(results.get("targets", {}))
    labels = [e["label"] for e in results["variants"] if any(t in e["synth"] for t in targets)]
    return targets, labels, {e["label"]: e for e in results["variants"]}


def plot_fmax(results: dict, path) -> Path | None:
    """Fmax per variant, one bar per target, with each target's clock as a dashed line;
    ``x`` marks a variant that does not fit."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    targets, labels, by_label = _synth_points(results)
    if not labels:
        return None
    figure, (ax,) = _figure(1, 1, max(6.4, 0.6 * len(labels) * len(targets) + 2), 4.4)
    width = 0.8 / len(targets)
    colors = {t: f"C{i}" for i, t in enumerate(targets)}
    top = max([results["targets"][t]["clock_mhz"] for t in targets] +
              [r["fmax_mhz"] for e in results["variants"] for r in e["synth"].values()
               if r.get("fits") and r.get("fmax_mhz")])
    handles = []
    for i, target in enumerate(targets):
        for j, label in enumerate(labels):
            result = by_label[label]["synth"].get(target)
            x = j - 0.4 + width * (i + 0.5)
            if result and result.get("fits") and result.get("fmax_mhz"):
                ax.bar(x, result["fmax_mhz"], width, color=colors[target])
            elif result:
                ax.plot(x, 0.03 * top, "x", color=colors[target], markersize=8, markeredgewidth=2)
        clock = results["targets"][target]["clock_mhz"]
        ax.axhline(clock, color=colors[target], linestyle="--", linewidth=1)
        handles.append(Patch(facecolor=colors[target], label=f"{target} (clock {clock:g} MHz, dashed)"))
    handles.append(Line2D([], [], marker="x", linestyle="none", color="0.3", markeredgewidth=2,
                          label="does not fit"))
    ax.legend(handles=handles, fontsize=8)
    ax.set_ylim(0, 1.1 * top)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Fmax (MHz)")
    ax.set_title("convgen bench: Fmax per target against the target clock")
    ax.grid(True, axis="y", alpha=0.3)
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_utilization(results: dict, path) -> Path | None:
    """LUT / DSP / EBR use in % of the device, one panel per target (hatched: does not fit;
    the use nextpnr reported before giving up, or the cost model's multipliers)."""
    from matplotlib.patches import Patch
    targets, labels, by_label = _synth_points(results)
    if not labels:
        return None
    columns = ("LUT", "DSP", "EBR")
    figure, axes = _figure(1, len(targets), max(6.4, 0.7 * len(labels) + 2), 3.4)
    width = 0.8 / len(columns)
    for ax, target in zip(axes, targets):
        for i, column in enumerate(columns):
            for j, label in enumerate(labels):
                result = by_label[label]["synth"].get(target)
                if not result or "error" in result:
                    continue
                used, total = resources(target, result)[column]
                if used is None:
                    continue
                fits = bool(result.get("fits"))
                ax.bar(j - 0.4 + width * (i + 0.5), 100 * used / total, width, color=f"C{i}",
                       hatch=None if fits else "//", edgecolor=None if fits else "black")
        ax.axhline(100, color="black", linewidth=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% of device")
        ax.set_title(target, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(handles=[*(Patch(facecolor=f"C{i}", label=c) for i, c in enumerate(columns)),
                           Patch(facecolor="white", edgecolor="black", hatch="//", label="does not fit")],
                  fontsize=8)
    figure.suptitle("convgen bench: LUT / DSP / EBR use")
    figure.savefig(path, dpi=110)
    return Path(path)


def write_report(results: dict, out_dir) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and the plots that have data; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "bench.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(path)
    path = out / "bench.md"
    path.write_text(format_markdown(results), encoding="utf-8")
    written.append(path)
    for name, plot in (("cycles.png", plot_cycles), ("fmax.png", plot_fmax),
                       ("utilization.png", plot_utilization)):
        (out / name).unlink(missing_ok=True)        # no stale plot from an earlier sweep
        made = plot(results, out / name)
        if made:
            written.append(made)
    return written


# -- command line -------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """The options of ``convgen bench``."""
    parser.add_argument("--examples", nargs="+", metavar="NAME|PATH",
                        help="example names (in examples/) or config files; default: every example")
    parser.add_argument("--scales", default="1,2", metavar="F,F,...",
                        help="parallelism factors (multipliers x F), e.g. 0.5,1,2; default 1,2")
    parser.add_argument("--targets", default=",".join(DEVICES), metavar="T,T,...",
                        help=f"synthesis targets; default {','.join(DEVICES)}")
    parser.add_argument("--no-synth", action="store_true", help="skip synthesis")
    parser.add_argument("--no-sim", action="store_true", help="skip simulation")
    parser.add_argument("--frames", type=int, default=3,
                        help="frames per simulation (default 3: the first period is the steady state)")
    parser.add_argument("--seed", type=int, default=SYNTH_SEED,
                        help=f"nextpnr placement seed (default {SYNTH_SEED})")
    parser.add_argument("-o", "--output", default="build/bench", metavar="DIR",
                        help="output directory (default build/bench)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the steps DIR/records.jsonl already holds for the same Verilog")
    parser.add_argument("--synth-all", action="store_true",
                        help="synthesize even where the cost model's multipliers exceed the device's DSPs")


def run(args) -> int:
    """``convgen bench``: derive the variants, run the sweep, write the report.
    Exit status 0 when every simulation passed and no step failed to run, else 1."""
    from .simulate import SimulatorUnavailable
    if args.frames < 1:
        raise ValueError(f"--frames must be an integer >= 1, not {args.frames}")
    scales = parse_scales(args.scales)
    targets = () if args.no_synth else parse_targets(args.targets)
    paths = resolve_examples(args.examples)
    variants, skipped = derive_variants(paths, scales)
    for item in skipped:
        print(f"bench: {item['label']} not derived: {item['reason']}", flush=True)
    if not variants:
        raise ValueError(f"--scales {args.scales}: no variant can be derived from the examples given")
    steps = ([] if args.no_sim else ["sim"]) + [f"synth {t}" for t in targets]
    print(f"bench: {len(variants)} variant(s) of {len(paths)} example(s); per variant: "
          f"{', '.join(steps) or 'the cost model only'}; output {args.output}", flush=True)
    try:
        results = run_sweep(variants, args.output, targets=targets, frames=args.frames,
                            sim=not args.no_sim, synth=not args.no_synth, resume=args.resume,
                            synth_all=args.synth_all, skipped=skipped, runner=ToolRunner(args.seed))
    except SimulatorUnavailable as error:
        raise ValueError(str(error)) from None
    for path in write_report(results, args.output):
        print(f"wrote {path}")
    bad = [e["label"] for e in results["variants"]
           if (e["sim"] and not e["sim"].get("passed")) or any("error" in r for r in e["synth"].values())]
    if bad:
        print(f"bench: failed or mismatching: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
