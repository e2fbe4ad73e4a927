"""convgen: streaming convolution engine generator for FPGAs.

The repository's folders are the subpackages of this one package: ``scripts/``
is ``convgen`` itself (the configuration, the cost model and the command line),
``hdl/`` is ``convgen.hdl`` (Amaranth gateware), ``sim/`` is ``convgen.sim``
(NumPy golden model and cocotb benches), ``boards/`` is ``convgen.boards``.
"""

__version__ = "0.1.0"
