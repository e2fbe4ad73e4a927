"""The simulator build cache: a build is reused only while nothing it depends on changed, a
Verilator build keeps only its executable, failures name the error, old builds are evicted."""

import os
import time

import pytest

from convgen import simcache
from convgen.simulate import SimulatorUnavailable, prepare_runner_environment

COUNTER = """module tiny_counter(input clk, input rst, output reg [3:0] count);
  always @(posedge clk) count <= rst ? 4'd0 : count + 4'd1;
endmodule
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CONVGEN_SIM_CACHE_MB", raising=False)
    return tmp_path / "sim"


def ready(simulator):
    try:
        prepare_runner_environment(simulator)
    except SimulatorUnavailable as error:
        pytest.skip(str(error))


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_a_build_is_reused_while_nothing_changed(simulator, cache):
    ready(simulator)
    build_dir = simcache.build(simulator, "tiny_counter", COUNTER)
    assert build_dir.parent == cache
    executable = build_dir / ("tiny_counter" if simulator == "verilator" else "sim.vvp")
    built = executable.stat().st_mtime_ns
    assert simcache.build(simulator, "tiny_counter", COUNTER) == build_dir
    assert executable.stat().st_mtime_ns == built                    # not built again
    if simulator == "verilator":
        # Only what running it needs stays: no object files, no ~70 MB precompiled headers.
        assert sorted(p.name for p in build_dir.iterdir()) == sorted(
            ["tiny_counter", "tiny_counter.v", "build.log", simcache.STAMP, simcache.LOCK])
        assert sum(p.stat().st_size for p in build_dir.iterdir()) < 5 << 20
        optimized = simcache.build(simulator, "tiny_counter", COUNTER, build_args=["-O3"])
        assert optimized != build_dir and (optimized / "tiny_counter").is_file()   # other options: apart
        assert executable.stat().st_mtime_ns == built
    edited = COUNTER.replace("4'd1", "4'd2")
    other = simcache.build(simulator, "tiny_counter", edited)
    assert other != build_dir and (other / executable.name).is_file()
    (other / simcache.STAMP).write_text("{}")                         # an interrupted or foreign build
    stamp_time = (other / executable.name).stat().st_mtime_ns
    simcache.build(simulator, "tiny_counter", edited)
    assert (other / executable.name).stat().st_mtime_ns != stamp_time


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_a_failing_build_quotes_its_first_error(simulator, cache):
    ready(simulator)
    broken = COUNTER.replace("endmodule", "wire [3:0] ;\nendmodule")
    with pytest.raises(simcache.BuildError) as error:
        simcache.build(simulator, "tiny_counter", broken)
    message = str(error.value)
    assert f"the {simulator} build of tiny_counter failed" in message and "build.log" in message
    assert "error" in message.lower() and "\n" not in message
    (build_dir,) = cache.iterdir()                                    # nothing recorded as built, and
    assert sorted(p.name for p in build_dir.iterdir()) == sorted(     # only the source and log kept
        ["tiny_counter.v", "build.log", simcache.LOCK])


def fake_build(root, name, megabytes, age):
    path = root / name
    path.mkdir(parents=True)
    (path / "blob").write_bytes(b"\0" * (megabytes << 20))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_least_recently_used_builds_are_evicted_first(cache):
    old, older, oldest = (fake_build(cache, n, 1, age) for n, age in (("old", 2000), ("older", 3000),
                                                                       ("oldest", 4000)))
    recent = fake_build(cache, "recent", 1, 60)
    assert simcache.evict(int(2.5 * (1 << 20))) == [oldest, older]
    assert old.is_dir() and recent.is_dir() and not oldest.exists()
    # A build used in the last EVICT_MIN_AGE seconds stays, and so does the one being used.
    assert simcache.evict(0, keep=old) == [] and old.is_dir() and recent.is_dir()
    with simcache.locked(old, shared=True):                           # another process runs it
        assert simcache.evict(0) == [] and old.is_dir()
    assert simcache.evict(0) == [] and old.is_dir()                   # ... and so used it just now
    stamp = time.time() - 2000
    os.utime(old, (stamp, stamp))
    assert simcache.evict(0) == [old]


def test_the_limit_comes_from_the_environment(cache, monkeypatch):
    assert simcache.cache_limit_bytes() == simcache.DEFAULT_LIMIT_MB << 20
    monkeypatch.setenv("CONVGEN_SIM_CACHE_MB", "300")
    assert simcache.cache_limit_bytes() == 300 << 20
    for bad in ("lots", "-1", "1.5"):
        monkeypatch.setenv("CONVGEN_SIM_CACHE_MB", bad)
        with pytest.raises(ValueError, match=f"CONVGEN_SIM_CACHE_MB must be .*not '{bad}'"):
            simcache.cache_limit_bytes()
    with pytest.raises(ValueError, match="CONVGEN_SIM_CACHE_MB"):     # refused before any work
        simcache.build("icarus", "tiny_counter", COUNTER)
    assert not cache.exists()
