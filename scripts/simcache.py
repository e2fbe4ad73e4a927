"""The simulator build cache: ``<cache>/sim/<name>-<simulator>-<hash>[-vcd|-fst]``, the hash
of the Verilog and the build options.

A build is reused while its Verilog, simulator, options and tool versions are unchanged: a
stamp file (``convgen-build.json``) written after a successful build records them, and a
matching stamp with its executable present skips the simulator's compiler entirely.

A Verilator build keeps only what running it needs: the executable (statically linked
against the verilated model; about 1 MB for the examples), the Verilog and the build log.
The object files and the two precompiled headers (about 70 MB each) are deleted after the
build, so a build costs about 2 MB of disk instead of 150-190 MB.

The cache holds at most ``$CONVGEN_SIM_CACHE_MB`` megabytes (default
:data:`DEFAULT_LIMIT_MB`): after each build the least recently used builds are evicted,
never one used in the last :data:`EVICT_MIN_AGE` seconds nor one whose lock another
process holds (:func:`locked`: exclusive while it builds, shared while it runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["DEFAULT_LIMIT_MB", "BuildError", "build", "build_dir_for", "cache_limit_bytes", "evict", "locked",
           "sim_cache_root"]

#: Size limit of ``<cache>/sim`` when ``$CONVGEN_SIM_CACHE_MB`` is not set.
DEFAULT_LIMIT_MB = 2048
#: A build used this recently (seconds) is never evicted.
EVICT_MIN_AGE = 600
STAMP = "convgen-build.json"
LOCK = ".lock"
# What a build directory keeps besides the executable, the stamp and the lock.
_KEEP_SUFFIXES = {".v", ".log"}


def sim_cache_root() -> Path:
    from .toolchain import cache_dir
    return cache_dir() / "sim"


def build_dir_for(name: str, simulator: str, verilog: str, waves: str | None = None, *, build_args=(),
                  make_flags: str = "") -> Path:
    """Where the ``simulator`` build of this exact Verilog with these options is kept; a
    build with wave tracing is kept apart, per trace format (``waves`` names the dump file)."""
    options = json.dumps([list(build_args), make_flags])
    digest = hashlib.sha256(f"{verilog}\0{options}".encode()).hexdigest()[:16]
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


class BuildError(RuntimeError):
    """A simulator build failed; the message is one line naming the log."""


def _executable(simulator: str, build_dir: Path, toplevel: str) -> Path:
    return build_dir / (toplevel if simulator == "verilator" else "sim.vvp")


@functools.cache
def _tool_version(simulator: str, path: str) -> str | None:
    """The first line ``verilator --version`` / ``iverilog -V`` prints (once per process)."""
    from .toolchain import _probe
    out = _probe([path, "--version" if simulator == "verilator" else "-V"], dict(os.environ), any_status=True)
    return out.strip().splitlines()[0] if out and out.strip() else None


def _stamp(simulator: str, source: Path, toplevel: str, build_args, waves: bool, make_flags: str) -> dict:
    """Everything the executable depends on: the source, options, tool versions, and the
    absolute paths built into it (cocotb's libraries, the build directory)."""
    import cocotb_tools.config

    from .toolchain import _dist_version

    tool = shutil.which("verilator" if simulator == "verilator" else "iverilog")
    return {"simulator": simulator, "toplevel": toplevel, "build_args": list(build_args),
            "waves": bool(waves) or os.environ.get("WAVES", "") not in ("", "0"), "make_flags": make_flags,
            "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "tool": tool and _tool_version(simulator, tool), "cocotb": _dist_version("cocotb"),
            "cocotb_libs": str(cocotb_tools.config.libs_dir),
            "python": sys.version, "build_dir": str(source.parent.resolve())}


def _prune(build_dir: Path, keep: set) -> None:
    """Delete everything in ``build_dir`` but the files named in ``keep`` and the sources
    and logs (``.v``, ``.log``)."""
    for path in build_dir.iterdir():
        if path.name in keep or path.suffix in _KEEP_SUFFIXES:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(build_dir: Path, *, shared: bool = False, wait: bool = True):
    """Hold ``build_dir``'s lock: exclusive while building, shared while running. Yields
    False (and holds nothing) when ``wait`` is False and another process holds it."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / LOCK, "a") as handle:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(simulator: str, toplevel: str, verilog: str, *, build_args=(), waves: str | None = None,
          make_flags: str = "") -> Path:
    """Build ``verilog`` (top module ``toplevel``) for ``simulator`` ("verilator" or
    "icarus") with ``cocotb_tools.runner`` into :func:`build_dir_for`, unless the stamp
    there says this very build is done; return that directory. ``waves`` names the dump
    file when tracing; ``make_flags`` are added to ``MAKEFLAGS`` for a Verilator build
    (e.g. ``OPT_FAST=-O0``). Run the result under :func:`locked` (shared), so that no
    other process evicts it meanwhile. Raises :class:`BuildError` (one line: the build
    log's first error) when the build fails."""
    limit = cache_limit_bytes()                      # a bad setting is refused before any work
    build_dir = build_dir_for(toplevel, simulator, verilog, waves, build_args=build_args, make_flags=make_flags)
    with locked(build_dir):
        built = _build_locked(simulator, toplevel, verilog, build_dir, build_args, waves, make_flags)
    if built:
        evict(limit, keep=build_dir)
    return build_dir


def _build_locked(simulator, toplevel, verilog, build_dir, build_args, waves, make_flags) -> bool:
    from cocotb_tools.runner import get_runner

    from .synth import first_error

    build_dir.mkdir(parents=True, exist_ok=True)       # again: evicted while this process waited
    source = build_dir / f"{toplevel}.v"
    if not source.is_file() or source.read_text() != verilog:
        source.write_text(verilog)
    wanted = _stamp(simulator, source, toplevel, build_args, bool(waves), make_flags)
    stamp_path = build_dir / STAMP
    try:
        done = json.loads(stamp_path.read_text()) == wanted
    except (OSError, ValueError):
        done = False
    executable = _executable(simulator, build_dir, toplevel)
    if done and executable.is_file():
        os.utime(build_dir)                          # recently used: last to be evicted
        return False
    stamp_path.unlink(missing_ok=True)
    log = build_dir / "build.log"
    saved = os.environ.get("MAKEFLAGS")
    if make_flags:
        os.environ["MAKEFLAGS"] = f"{saved or ''} {make_flags}".strip()
    try:
        get_runner(simulator).build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                                    timescale=("1ns", "1ps"), waves=bool(waves), build_args=list(build_args),
                                    log_file=log)
        if not executable.is_file():
            raise BuildError("made no executable")
    except (SystemExit, RuntimeError, OSError) as error:      # the runner raises RuntimeError
        _prune(build_dir, {LOCK})                    # a failed build keeps its log, not its objects
        raise BuildError(f"the {simulator} build of {toplevel} failed: {first_error(log, '(?i)error') or error}; "
                         f"see {log}") from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    if simulator == "verilator":
        _prune(build_dir, {toplevel, STAMP, LOCK})
    stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")
    os.utime(build_dir)
    return True


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
        try:
            # Not while another process builds or runs it, nor when it was used since the
            # listing (opening a lock file that was not there changes the mtime itself).
            had_lock = (path / LOCK).exists()
            with locked(path, wait=False) as free:
                if not free or (had_lock and now - path.stat().st_mtime < EVICT_MIN_AGE):
                    continue
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue
        total -= size
        evicted.append(path)
    return evicted
