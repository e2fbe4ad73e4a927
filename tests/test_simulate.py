# amaranth: UnusedElaboratable=no
"""convgen sim on Verilator, Icarus and Amaranth: pass, detect a tampered golden model, report."""

import tempfile

import numpy as np
import pytest

from convgen.loader import config_from_dict
from convgen.sim import golden
from convgen.simulate import SimulatorUnavailable, format_report, simulate


def small_block():
    return config_from_dict({"random": {"seed": 3}, "input": {"height": 5, "width": 6, "channels": 4, "lanes": 2},
                             "stage": [{"kind": "pointwise", "out_channels": 8, "pe": 4, "simd": 2, "activation": "relu6"},
                                       {"kind": "depthwise", "lanes": 4, "activation": "relu6"},
                                       {"kind": "pointwise", "out_channels": 4, "pe": 2, "simd": 4},
                                       {"kind": "add", "skip": "input"}]})


SIMULATORS = ["verilator", "icarus", "amaranth"]


def run(config, frames, simulator, **kwargs):
    try:
        return simulate(config, frames, simulator=simulator, **kwargs)
    except SimulatorUnavailable as error:
        pytest.skip(str(error))


def frames_for(config, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([golden.random_input(config.input, rng) for _ in range(n)])


@pytest.fixture
def temp_dirs(tmp_path, monkeypatch):
    """The directory where a run makes its own bench directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_engine_matches_golden(simulator, stall, temp_dirs):
    config = small_block()
    result = run(config, frames_for(config, 2), simulator, stall=stall, seed=4)
    assert result.passed and len(result.frames) == 2
    np.testing.assert_array_equal(result.outputs, np.stack([golden.run(config, f) for f in frames_for(config, 2)]))
    report = format_report(result)
    assert "PASS" in report and "mismatching elements: 0" in report
    assert result.kept_dir is None and list(temp_dirs.iterdir()) == []     # a passing run leaves nothing


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_tampered_golden_model_is_reported_with_the_first_mismatch(simulator, temp_dirs):
    config = small_block()
    frames = frames_for(config, 2)
    expected = np.stack([golden.run(config, f) for f in frames])
    expected[1, 2, 3, 1] += 1                     # one element of the model changed
    expected[1, 4, 0, 2] -= 1
    result = run(config, frames, simulator, expected=expected)
    assert not result.passed and result.mismatches == 2
    assert result.frames[0].mismatches == 0
    assert result.frames[1].first_mismatch[:3] == (2, 3, 1)
    assert "first at pixel (row 2, column 3), channel 1" in format_report(result)
    if simulator != "amaranth":                    # a failing run keeps its bench files, and says where
        assert result.kept_dir.parent == temp_dirs and (result.kept_dir / "outputs.npy").is_file()
        assert f"kept in {result.kept_dir}" in format_report(result)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_one_weight_changed_in_the_model_only_is_detected(simulator, temp_dirs):
    import dataclasses
    config = small_block()
    stage = config.stages[0]
    weights = stage.weights.copy()
    weights[0, 0] = weights[0, 0] + (1 if weights[0, 0] < 127 else -1)
    tampered = dataclasses.replace(config, stages=(dataclasses.replace(stage, weights=weights),) + config.stages[1:])
    frames = frames_for(config, 1)
    expected = np.stack([golden.run(tampered, f) for f in frames])
    result = run(config, frames, simulator, expected=expected)
    assert not result.passed and result.mismatches > 0


def test_a_bench_that_breaks_keeps_its_files(temp_dirs, monkeypatch):
    from convgen import simulate as module

    def broken(config, frames, expected, *, bench_dir, **kwargs):
        (bench_dir / "sim.log").write_text("the simulator crashed\n")
        raise KeyError("frames")                   # e.g. a results.json without its frames
    monkeypatch.setattr(module, "_run_bench", broken)
    config = small_block()
    with pytest.raises(module.BenchError, match="kept in") as error:
        run(config, frames_for(config, 1), "icarus")
    (kept,) = temp_dirs.iterdir()
    assert str(kept) in str(error.value) and (kept / "sim.log").read_text() == "the simulator crashed\n"


def test_bad_arguments_are_refused():
    config = small_block()
    with pytest.raises(ValueError, match="--stall must be a probability"):
        simulate(config, frames_for(config, 1), stall=1.5)
    with pytest.raises(ValueError, match="--simulator must be one of"):
        simulate(config, frames_for(config, 1), simulator="modelsim")


@pytest.mark.slow
@pytest.mark.parametrize("simulator,suffix", [("verilator", ".vcd"), ("icarus", ".fst")])
def test_waves_are_recorded(simulator, suffix, tmp_path):
    config = small_block()
    waves = tmp_path / f"run{suffix}"
    result = run(config, frames_for(config, 1), simulator, waves=str(waves))
    assert result.passed and waves.stat().st_size > 1000
    if suffix == ".vcd":
        assert waves.read_text(errors="replace").startswith("$version")


def test_waves_format_refusals(tmp_path):
    config = small_block()
    with pytest.raises(ValueError, match=r"the Icarus flow records FST; name a \.fst file"):
        simulate(config, frames_for(config, 1), simulator="icarus", waves=str(tmp_path / "w.vcd"))
    with pytest.raises(ValueError, match=r"--waves must name a \.fst or \.vcd file"):
        simulate(config, frames_for(config, 1), simulator="verilator", waves=str(tmp_path / "w.txt"))


def test_relative_work_dir(tmp_path, monkeypatch):
    """A work directory given relative to the current directory (the cocotb runner changes
    directory while it runs, so it is resolved first): the bench runs and leaves its
    results there."""
    config = small_block()
    monkeypatch.chdir(tmp_path)
    result = run(config, frames_for(config, 1), "verilator", work_dir="relative/work")
    assert result.passed
    assert (tmp_path / "relative" / "work" / "results.json").exists()
