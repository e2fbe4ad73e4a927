"""The simulator build cache: ``<cache>/sim/<name>-<simulator>-<hash of the Verilog>[-vcd|-fst]``.

A build is reused while its Verilog, simulator, options and tool versions are unchanged: a
stamp file (``convgen-build.json``) written after a successful build records them, and a
matching stamp with its executable present skips the simulator's compiler entirely.

A Verilator build keeps only what running it needs: the executable (statically linked
against the verilated model; about 1 MB for the examples), the Verilog and the build log.
The object files and the two precompiled headers (about 70 MB each) are deleted after the
build, so a build costs about 2 MB of disk instead of 150-190 MB.

The cache holds at most ``$CONVGEN_SIM_CACHE_MB`` megabytes (default
:data:`DEFAULT_LIMIT_MB`): after each build the least recently used builds are evicted,
but never one used in the last :data:`EVICT_MIN_AGE` seconds (another process may be
running it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

__all__ = ["DEFAULT_LIMIT_MB", "build", "build_dir_for", "cache_limit_bytes", "evict", "sim_cache_root"]

#: Size limit of ``<cache>/sim`` when ``$CONVGEN_SIM_CACHE_MB`` is not set.
DEFAULT_LIMIT_MB = 2048
#: A build used this recently (seconds) is never evicted.
EVICT_MIN_AGE = 600
STAMP = "convgen-build.json"
# What a Verilator build directory keeps besides the executable and the stamp.
_VERILATOR_KEEP = {".v", ".log"}


def sim_cache_root() -> Path:
    from .toolchain import cache_dir
    return cache_dir() / "sim"


def build_dir_for(name: str, simulator: str, verilog: str, waves: str | None = None) -> Path:
    """Where the ``simulator`` build of this exact Verilog is kept; a build with wave
    tracing is kept apart, per trace format (``waves`` names the dump file)."""
    digest = hashlib.sha256(verilog.encode()).hexdigest()[:16]
    trace = "" if not waves else "-fst" if str(waves).endswith(".fst") else "-vcd"
    return sim_cache_root() / f"{name}-{simulator}-{digest}{trace}"


def cache_limit_bytes(env: dict | None = None) -> int:
    """``$CONVGEN_SIM_CACHE_MB`` in bytes (default :data:`DEFAULT_LIMIT_MB`)."""
    env = os.environ if env is None else env
    text = env.get("CONVGEN_SIM_CACHE_MB", "").strip()
    if not text:
        return DEFAULT_LIMIT_MB << 20
    try:
        megabytes = int(text)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise ValueError(f"CONVGEN_SIM_CACHE_MB must be a whole number of megabytes >= 0, not {text!r}")
    return megabytes << 20


def _executable(simulator: str, build_dir: Path, toplevel: str) -> Path:
    return build_dir / (toplevel if simulator == "verilator" else "sim.vvp")


def _stamp(simulator: str, source: Path, toplevel: str, build_args, waves: bool, make_flags: str) -> dict:
    import importlib.metadata

    versions = {}
    for dist in ("cocotb", "verilator" if simulator == "verilator" else None):
        if dist:
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[dist] = None
    if simulator == "icarus":
        versions["iverilog"] = shutil.which("iverilog")
    return {"simulator": simulator, "toplevel": toplevel, "build_args": list(build_args), "waves": bool(waves),
            "make_flags": make_flags, "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "versions": versions}


def _prune_verilator(build_dir: Path, toplevel: str) -> None:
    for path in build_dir.iterdir():
        if path.name in (toplevel, STAMP) or path.suffix in _VERILATOR_KEEP:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def build(simulator: str, toplevel: str, verilog: str, *, build_args=(), waves: str | None = None,
          make_flags: str = "") -> Path:
    """Build ``verilog`` (top module ``toplevel``) for ``simulator`` ("verilator" or
    "icarus") with ``cocotb_tools.runner`` into :func:`build_dir_for`, unless the stamp
    there says this very build is done; return that directory. ``waves`` names the dump
    file when tracing; ``make_flags`` are added to ``MAKEFLAGS`` for a Verilator build
    (e.g. ``OPT_FAST=-O0``). Raises ``RuntimeError`` with the build log's first error line
    when the build fails."""
    from cocotb_tools.runner import get_runner

    build_dir = build_dir_for(toplevel, simulator, verilog, waves)
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    if not source.is_file() or source.read_text() != verilog:
        source.write_text(verilog)
    wanted = _stamp(simulator, source, toplevel, build_args, bool(waves), make_flags)
    stamp_path = build_dir / STAMP
    try:
        done = json.loads(stamp_path.read_text()) == wanted
    except (OSError, ValueError):
        done = False
    if done and _executable(simulator, build_dir, toplevel).is_file():
        os.utime(build_dir)                          # recently used: last to be evicted
        return build_dir
    stamp_path.unlink(missing_ok=True)
    log = build_dir / "build.log"
    flags = os.environ.get("MAKEFLAGS", "")
    if make_flags:
        os.environ["MAKEFLAGS"] = f"{flags} {make_flags}".strip()
    try:
        get_runner(simulator).build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                                    timescale=("1ns", "1ps"), waves=bool(waves), build_args=list(build_args),
                                    log_file=log)
    except (SystemExit, RuntimeError, OSError) as error:      # the runner raises RuntimeError
        raise RuntimeError(f"the {simulator} build of {toplevel} failed: {_first_error(log) or error}; "
                           f"see {log}") from None
    finally:
        os.environ["MAKEFLAGS"] = flags
    if not _executable(simulator, build_dir, toplevel).is_file():
        raise RuntimeError(f"the {simulator} build of {toplevel} made no executable; see {log}")
    if simulator == "verilator":
        _prune_verilator(build_dir, toplevel)
    stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")
    os.utime(build_dir)
    evict(keep=build_dir)
    return build_dir


def _first_error(log: Path) -> str:
    """The first line of ``log`` that reports an error (the compiler's or make's), or ''."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in lines if "error" in line.lower()), "")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def evict(limit: int | None = None, *, keep: Path | None = None, now: float | None = None) -> list[Path]:
    """Delete the least recently used builds until ``<cache>/sim`` holds at most ``limit``
    bytes (default :func:`cache_limit_bytes`); never ``keep`` nor a build used in the last
    :data:`EVICT_MIN_AGE` seconds. Returns the deleted directories."""
    root = sim_cache_root()
    if not root.is_dir():
        return []
    limit = cache_limit_bytes() if limit is None else limit
    now = time.time() if now is None else now
    entries = []
    for path in root.iterdir():
        if path.is_dir():
            try:
                entries.append((path.stat().st_mtime, path, _size(path)))
            except OSError:
                continue                             # vanished meanwhile (another process)
    total = sum(size for _, _, size in entries)
    evicted = []
    for mtime, path, size in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if (keep is not None and path.resolve() == Path(keep).resolve()) or now - mtime < EVICT_MIN_AGE:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= size
        evicted.append(path)
    return evicted
