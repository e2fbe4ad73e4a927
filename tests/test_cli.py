"""The convgen command line: reports, golden runs, and one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convgen import cli, cost
from convgen.loader import load_config
from convgen.sim import golden

EXAMPLES = Path(__file__).parents[1] / "examples"
MBV2 = str(EXAMPLES / "mobilenetv2_block.toml")


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cost_table_reports_the_model(capsys):
    status, out, err = run(capsys, "cost", MBV2)
    assert status == 0 and err == ""
    est = cost.estimate(load_config(MBV2))
    for stage in est.stages:
        assert stage.name in out
    assert f"{est.macs:,}" in out
    assert f"cycles per frame: {est.cycles_per_frame:,}" in out


def test_cost_json(capsys):
    status, out, _ = run(capsys, "cost", MBV2, "--json")
    assert status == 0
    data = json.loads(out)
    assert data["total"]["macs"] == 8 * 48 * 256 + 9 * 48 * 256 + 48 * 8 * 256


def test_golden_with_user_input_and_output(tmp_path, capsys):
    config = load_config(MBV2)
    frames = np.random.default_rng(7).integers(-128, 128, size=(2, *config.input.shape)).astype(np.int8)
    np.save(tmp_path / "x.npy", frames)
    status, out, _ = run(capsys, "golden", MBV2, "--input", str(tmp_path / "x.npy"),
                         "--output", str(tmp_path / "y.npy"))
    assert status == 0 and "2 frame(s)" in out
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and y.shape == (2, *config.output.shape)
    for frame, result in zip(frames, y):
        np.testing.assert_array_equal(result, golden.run(config, frame))


def test_golden_random_input_is_seeded(tmp_path, capsys):
    for name in ("a", "b"):
        assert run(capsys, "golden", MBV2, "--seed", "3", "--output", str(tmp_path / f"{name}.npy"))[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_check_and_tensors(tmp_path, capsys):
    status, out, _ = run(capsys, "check", str(EXAMPLES / "shufflenet_unit.toml"))
    assert status == 0 and out.rstrip().endswith("ok") and "shuffle" in out
    assert run(capsys, "tensors", MBV2, "-o", str(tmp_path / "t.npz"))[0] == 0
    assert "expand.weights" in np.load(tmp_path / "t.npz").files


BAD_CONFIGS = {
    "even kernel": ('[input]\nheight = 8\nwidth = 8\nchannels = 8\n[[stage]]\nkind = "depthwise"\nkernel = 4\n',
                    "kernel must be an odd integer from 1 to 7, not 4"),
    "unknown key": ('[input]\nheight = 8\nwidth = 8\nchannels = 8\nheigth = 3\n',
                    "unknown key 'heigth'"),
    "bad toml": ("[input\n", "is not valid TOML"),
    "groups": ('[input]\nheight = 8\nwidth = 8\nchannels = 6\n[[stage]]\nkind = "pointwise"\n'
               'out_channels = 8\ngroups = 4\n', "groups must divide the input channels 6, not 4"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2(case, tmp_path, capsys):
    text, message = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    status, out, err = run(capsys, "cost", str(path))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("convgen: error: ") and message in err


def test_missing_file_and_bad_input_are_one_line(tmp_path, capsys):
    status, _, err = run(capsys, "cost", str(tmp_path / "nope.toml"))
    assert status == 2 and err.count("\n") == 1 and "nope.toml" in err
    np.save(tmp_path / "x.npy", np.zeros((4, 4, 8), dtype=np.int8))
    status, _, err = run(capsys, "golden", MBV2, "--input", str(tmp_path / "x.npy"))
    assert status == 2 and err.count("\n") == 1 and "--input" in err and "(16, 16, 8)" in err
    np.save(tmp_path / "x.npy", np.full((16, 16, 8), 300, dtype=np.int16))
    status, _, err = run(capsys, "golden", MBV2, "--input", str(tmp_path / "x.npy"))
    assert status == 2 and "outside [-128, 127]" in err


def test_a_failing_simulator_build_is_one_line_not_an_internal_error(monkeypatch, capsys):
    from convgen import simcache, simulate

    def broken_build(simulator, toplevel, verilog, **kwargs):
        raise simcache.BuildError(f"the {simulator} build of {toplevel} failed: No space left on device; "
                                  "see build.log")
    monkeypatch.setattr(simulate, "prepare_runner_environment", lambda simulator: None)
    monkeypatch.setattr(simcache, "build", broken_build)
    status, _, err = run(capsys, "sim", MBV2, "--simulator", "icarus")
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("convgen: error: the icarus build of mobilenetv2_block failed: No space left")


def test_console_script_and_module_entry_points(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_CONFIGS["even kernel"][0])
    for argv in (["convgen"], [sys.executable, "-m", "convgen"]):
        exe = argv if argv[0] != "convgen" else [str(Path(sys.executable).with_name("convgen"))]
        done = subprocess.run([*exe, "cost", str(bad)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        done = subprocess.run([*exe, "cost", MBV2], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "cycles per frame" in done.stdout
