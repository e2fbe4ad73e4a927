"""The engine configuration: one frozen object that describes an engine completely.

The gateware, the golden model, the cost model, the benches and the reports all
read an :class:`EngineConfig`; nothing else holds a copy of a parameter. It is
built either directly (every object validates itself on construction) or from
a TOML file plus an optional ``.npz`` of tensors by :func:`load_config`
(format: ``docs/config.md``).

Every invalid value is refused when the object is built: ``TypeError`` for a
value of the wrong type, ``ValueError`` for a wrong value or a conflict between
values; the one-line message names the parameter (with its stage) and the value.

Shapes and layouts: activations are (H, W, C) channels-last; pointwise weights
are (C_out, C_in / groups) (TFLite OHWI with H = W = 1); depthwise weights are
(K, K, C) (TFLite 1HWC without the leading 1); biases, multipliers and shifts
are per output channel (C_out,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np

from .sim import arith

__all__ = [
    "ACTIVATIONS", "PADDINGS", "MIN_BITS", "MAX_BITS",
    "TensorSpec", "Stage", "Pointwise", "Depthwise", "Shuffle", "Add", "EngineConfig",
    "conv_output_size", "same_padding",
]

ACTIVATIONS = ("none", "relu", "relu6")
#: Where a convolution's MAC multipliers are built: DSP blocks (one per multiply) or logic
#: (shift-and-add, no DSP; for devices with few DSPs such as the iCE40 UP5K's 8).
MULTIPLIER_KINDS = ("dsp", "logic")
PADDINGS = ("same", "valid")
MIN_BITS, MAX_BITS = 2, 16
MAX_KERNEL, MAX_STRIDE, MAX_DILATION = 7, 4, 4


# -- validation helpers -------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(where: str, name: str, value, lo: int | None = None, hi: int | None = None,
              what: str | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[lo, hi]``, else raise."""
    if not _is_int(value):
        raise TypeError(f"{where}{name} must be an integer, not {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if what is None:
            what = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{where}{name} must be {what}, not {value}")
    return value


def check_identifier(where: str, name: str, value) -> str:
    """A name that is also a valid Verilog/Python identifier."""
    if not isinstance(value, str):
        raise TypeError(f"{where}{name} must be a string, not {value!r}")
    if not value.isidentifier() or not value.isascii():
        raise ValueError(f"{where}{name} must be an identifier (ASCII letters, digits, _; "
                         f"not starting with a digit), not {value!r}")
    return value


def check_choice(where: str, name: str, value, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}{name} must be a string, one of {', '.join(choices)}; not {value!r}")
    if value not in choices:
        raise ValueError(f"{where}{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


_F32 = np.finfo(np.float32)


def check_scale(where: str, name: str, value) -> float:
    """A scale: a positive normal float32 number (TFLite stores scales as float32)."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}{name} must be a number, not {value!r}")
    value = float(value)
    if not (math.isfinite(value) and float(_F32.smallest_normal) <= value <= float(_F32.max)):
        raise ValueError(f"{where}{name} must be a positive normal float32 number "
                         f"({float(_F32.smallest_normal):.3g} to {float(_F32.max):.3g}), not {value!r}")
    return value


def check_array(where: str, name: str, value, shape: tuple, lo: int, hi: int) -> np.ndarray:
    """A read-only int64 copy of an integer array of exactly ``shape`` and values in [lo, hi].

    Any integer dtype is accepted here (the values are checked); the tensors file
    format fixes the dtypes (:mod:`convgen.loader`)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where}{name} must be a numpy array, not {type(value).__name__}")
    if value.dtype.kind not in "iu":
        raise TypeError(f"{where}{name} must hold integers, not {value.dtype.name}")
    if value.shape != tuple(shape):
        raise ValueError(f"{where}{name} must have shape {tuple(shape)}, not {value.shape}")
    base = value.astype(np.int64)
    if base.size and (base.min() < lo or base.max() > hi):
        bad = base.min() if base.min() < lo else base.max()
        raise ValueError(f"{where}{name} must hold values from {lo} to {hi}, not {int(bad)}")
    base.setflags(write=False)
    out = base.view()             # a view of a read-only base can never be made writable
    out.setflags(write=False)
    return out


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """TensorFlow's output size: ``ceil(size / stride)`` for ``same``,
    ``ceil((size - (kernel - 1) * dilation) / stride)`` for ``valid``."""
    if padding == "same":
        return (size + stride - 1) // stride
    return (size - (kernel - 1) * dilation + stride - 1) // stride


def same_padding(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """``(before, after)`` padding as TensorFlow computes it: the total
    ``max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)`` is split
    with the odd extra row/column after (bottom/right); ``valid`` pads nothing."""
    if padding == "valid":
        return 0, 0
    out = conv_output_size(size, kernel, stride, dilation, padding)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    return total // 2, total - total // 2


# -- tensors ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """An activation tensor as it streams between stages: (height, width, channels)
    of signed ``bits``-bit integers, real value ``scale * (q - zero_point)``."""
    name: str
    height: int
    width: int
    channels: int
    bits: int = 8
    zero_point: int = 0
    scale: float = 1.0

    def __post_init__(self):
        check_identifier("", "tensor name", self.name)
        where = f"tensor {self.name!r}: "
        for dim in ("height", "width", "channels"):
            object.__setattr__(self, dim, check_int(where, dim, getattr(self, dim), 1, 1 << 16))
        bits = check_int(where, "bits", self.bits, MIN_BITS, MAX_BITS)
        object.__setattr__(self, "bits", bits)
        qmin, qmax = arith.int_range(bits)
        object.__setattr__(self, "zero_point", check_int(where, "zero_point", self.zero_point, qmin, qmax))
        object.__setattr__(self, "scale", check_scale(where, "scale", self.scale))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def qmin(self) -> int:
        return arith.int_range(self.bits)[0]

    @property
    def qmax(self) -> int:
        return arith.int_range(self.bits)[1]

    @property
    def scale_is_power_of_two(self) -> bool:
        return arith.is_power_of_two_scale(self.scale)

    def renamed(self, name: str, **changes) -> "TensorSpec":
        return TensorSpec(**{**self.__dict__, "name": name, **changes})


# -- stages -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class Stage:
    """One stage of the engine: consumes ``input``, produces ``output`` (named after the stage)."""
    kind: ClassVar[str]
    name: str
    input: TensorSpec
    output: TensorSpec

    def __post_init__(self):
        check_identifier("", "stage name", self.name)
        if not isinstance(self.input, TensorSpec) or not isinstance(self.output, TensorSpec):
            raise TypeError(f"{self.where}input and output must be TensorSpec objects")
        if self.output.name != self.name:
            raise ValueError(f"{self.where}output tensor must be named after the stage, not {self.output.name!r}")
        self._validate()

    def _validate(self):
        """Check and normalise the stage's own parameters (subclasses extend it)."""

    @property
    def where(self) -> str:
        return f"stage {self.name!r} ({self.kind}): "

    def _require_output(self, height, width, channels):
        if self.output.shape != (height, width, channels):
            raise ValueError(f"{self.where}output shape must be {(height, width, channels)}, "
                             f"not {self.output.shape}")

    # Parallelism as stream lanes: channels per beat on the stage's input and output.
    @property
    def lanes_in(self) -> int:
        raise NotImplementedError

    @property
    def lanes_out(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True, eq=False, kw_only=True)
class ConvStage(Stage):
    """Common part of the convolutions: int32 accumulation of ``w * (x - input zero point)``
    plus bias, then per-output-channel requantization and the activation clamp."""
    activation: str = "none"
    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    weight_bits: int = 8
    rounding: str = "double"
    multipliers: str = "dsp"

    def _validate(self):
        w = self.where
        check_choice(w, "activation", self.activation, ACTIVATIONS)
        check_choice(w, "rounding", self.rounding, arith.ROUNDINGS)
        check_choice(w, "multipliers", self.multipliers, MULTIPLIER_KINDS)
        wb = check_int(w, "weight_bits", self.weight_bits, MIN_BITS, MAX_BITS)
        object.__setattr__(self, "weight_bits", wb)
        c_out = self.output.channels
        wmin, wmax = arith.int_range(wb)
        object.__setattr__(self, "weights", check_array(w, "weights", self.weights,
                                                        self.expected_weight_shape(), wmin, wmax))
        object.__setattr__(self, "bias", check_array(w, "bias", self.bias, (c_out,),
                                                     arith.INT32_MIN, arith.INT32_MAX))
        object.__setattr__(self, "multiplier", check_array(w, "multiplier", self.multiplier, (c_out,),
                                                           0, arith.INT32_MAX))
        object.__setattr__(self, "shift", check_array(w, "shift", self.shift, (c_out,), -31, 30))
        low = self.multiplier[(self.multiplier != 0) & (self.multiplier < (1 << 30))]
        if low.size:
            raise ValueError(f"{w}multiplier must be 0 or in [2^30, 2^31) (a normalised "
                             f"QuantizeMultiplier significand), not {int(low[0])}")
        lo, hi = self.accumulator_range
        if lo < arith.INT32_MIN or hi > arith.INT32_MAX:
            raise ValueError(f"{w}worst-case accumulator [{lo}, {hi}] overflows int32 "
                             f"(the arithmetic contract accumulates in int32); reduce weights, bias or widths")

    def expected_weight_shape(self) -> tuple:
        raise NotImplementedError

    @property
    def input_offset(self) -> int:
        """Added to every input element before the multiply (TFLite ``input_offset``)."""
        return -self.input.zero_point

    @cached_property
    def activation_range(self) -> tuple[int, int]:
        """``(act_min, act_max)`` of the output clamp."""
        return arith.activation_range(self.activation, self.output.scale,
                                      self.output.zero_point, self.output.bits)

    @property
    def requant_is_power_of_two(self) -> bool:
        """Every channel's multiplier is 2^30 (a power-of-two real scale): the requantizer
        is a rounding shift and needs no multiplier."""
        return bool(np.all(self.multiplier == arith.POWER_OF_TWO_MULTIPLIER))

    def _taps(self) -> np.ndarray:
        """Weights as (C_out, taps): the products summed into each output channel."""
        raise NotImplementedError

    @cached_property
    def accumulator_range(self) -> tuple[int, int]:
        """Worst-case ``(min, max)`` of the int32 accumulator over every input, from the
        actual weights and biases: each product ``w * (x + input_offset)`` with
        ``x + input_offset`` in ``[qmin - zp, qmax - zp]`` (0 for a padded tap); the
        range is widened to include 0 (hardware registers start there)."""
        lo_x, hi_x = self.input.qmin - self.input.zero_point, self.input.qmax - self.input.zero_point
        taps = self._taps()
        pos, neg = np.maximum(taps, 0), np.minimum(taps, 0)
        acc_max = pos.sum(axis=1) * hi_x + neg.sum(axis=1) * lo_x + self.bias
        acc_min = pos.sum(axis=1) * lo_x + neg.sum(axis=1) * hi_x + self.bias
        return int(min(acc_min.min(), 0)), int(max(acc_max.max(), 0))

    @property
    def accumulator_bits(self) -> int:
        """Signed width that holds :attr:`accumulator_range` (what the gateware instantiates)."""
        lo, hi = self.accumulator_range
        return max((-lo - 1).bit_length(), hi.bit_length()) + 1

    @property
    def taps_per_output(self) -> int:
        return self._taps().shape[1]


@dataclass(frozen=True, eq=False, kw_only=True)
class Pointwise(ConvStage):
    """1x1 convolution with ``groups``; ``pe`` output channels x ``simd`` input channels per cycle.

    ``pe`` must divide C_out / groups, or be a multiple of it with ``simd`` = C_in / groups
    (whole groups side by side); ``simd`` must divide C_in / groups. The array then takes
    exactly MACs per pixel / (pe * simd) cycles per pixel.
    """
    kind: ClassVar[str] = "pointwise"
    groups: int = 1
    pe: int = 1
    simd: int = 1

    @staticmethod
    def check_geometry(where: str, input: TensorSpec, out_channels, groups) -> tuple[int, int]:
        """Validate output channels and groups on ``input``; returns ``(out_channels, groups)``."""
        out_channels = check_int(where, "out_channels", out_channels, 1)
        groups = check_int(where, "groups", groups, 1)
        if input.channels % groups:
            raise ValueError(f"{where}groups must divide the input channels {input.channels}, not {groups}")
        if out_channels % groups:
            raise ValueError(f"{where}groups must divide the output channels {out_channels}, not {groups}")
        return out_channels, groups

    def _validate(self):
        w = self.where
        if self.input.height != self.output.height or self.input.width != self.output.width:
            raise ValueError(f"{w}output height x width must equal the input's "
                             f"{self.input.height}x{self.input.width}, not "
                             f"{self.output.height}x{self.output.width}")
        _, groups = self.check_geometry(w, self.input, self.output.channels, self.groups)
        object.__setattr__(self, "groups", groups)
        c_in, c_out = self.input.channels, self.output.channels
        pe = check_int(w, "pe", self.pe, 1)
        simd = check_int(w, "simd", self.simd, 1)
        object.__setattr__(self, "pe", pe)
        object.__setattr__(self, "simd", simd)
        group_in, group_out = c_in // groups, c_out // groups
        if group_in % simd:
            raise ValueError(f"{w}simd must divide the input channels per group {group_in}, not {simd}")
        if c_out % pe or not (group_out % pe == 0 or (pe % group_out == 0 and simd == group_in)):
            raise ValueError(f"{w}pe must divide the output channels per group {group_out} (or be a "
                             f"multiple of it dividing {c_out}, with simd = {group_in}), not {pe}")
        super()._validate()

    def expected_weight_shape(self):
        return (self.output.channels, self.input.channels // self.groups)

    def _taps(self):
        return self.weights

    @property
    def lanes_in(self):
        return self.simd

    @property
    def lanes_out(self):
        return self.pe


@dataclass(frozen=True, eq=False, kw_only=True)
class Depthwise(ConvStage):
    """KxK depthwise convolution (depth multiplier 1), ``lanes`` channels per beat.

    Geometry follows TensorFlow: ``same`` pads ``(before, after)`` from
    :func:`same_padding` (the odd extra row/column at the bottom/right), out-of-image
    taps are skipped (equal to padding with the input zero point).
    """
    kind: ClassVar[str] = "depthwise"
    kernel: int = 3
    stride: int = 1
    dilation: int = 1
    padding: str = "same"
    lanes: int = 1

    @staticmethod
    def check_geometry(where: str, input: TensorSpec, kernel, stride, dilation, padding):
        """Validate a window's geometry on ``input``; returns ``(kernel, stride, dilation, padding)``."""
        k = check_int(where, "kernel", kernel, 1, MAX_KERNEL, what=f"an odd integer from 1 to {MAX_KERNEL}")
        if k % 2 == 0:
            raise ValueError(f"{where}kernel must be an odd integer from 1 to {MAX_KERNEL}, not {k}")
        stride = check_int(where, "stride", stride, 1, MAX_STRIDE)
        dilation = check_int(where, "dilation", dilation, 1, MAX_DILATION)
        check_choice(where, "padding", padding, PADDINGS)
        footprint = (k - 1) * dilation + 1
        for axis, size in (("height", input.height), ("width", input.width)):
            before, after = same_padding(size, k, stride, dilation, padding)
            if footprint > size + before + after:
                raise ValueError(f"{where}kernel footprint {footprint} ((kernel - 1) * dilation + 1) "
                                 f"is larger than the padded input {axis} {size + before + after}")
        return k, stride, dilation, padding

    def _validate(self):
        w = self.where
        geometry = self.check_geometry(w, self.input, self.kernel, self.stride, self.dilation, self.padding)
        for key, value in zip(("kernel", "stride", "dilation", "padding"), geometry):
            object.__setattr__(self, key, value)
        lanes = check_int(w, "lanes", self.lanes, 1)
        if self.input.channels % lanes:
            raise ValueError(f"{w}lanes must divide the channels {self.input.channels}, not {lanes}")
        object.__setattr__(self, "lanes", lanes)
        self._require_output(self.out_height, self.out_width, self.input.channels)
        super()._validate()

    @property
    def footprint(self) -> int:
        """Rows/columns spanned by the dilated kernel: ``(kernel - 1) * dilation + 1``."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def out_height(self) -> int:
        return conv_output_size(self.input.height, self.kernel, self.stride, self.dilation, self.padding)

    @property
    def out_width(self) -> int:
        return conv_output_size(self.input.width, self.kernel, self.stride, self.dilation, self.padding)

    @property
    def pad_top_bottom(self) -> tuple[int, int]:
        return same_padding(self.input.height, self.kernel, self.stride, self.dilation, self.padding)

    @property
    def pad_left_right(self) -> tuple[int, int]:
        return same_padding(self.input.width, self.kernel, self.stride, self.dilation, self.padding)

    def expected_weight_shape(self):
        return (self.kernel, self.kernel, self.input.channels)

    def _taps(self):
        return self.weights.reshape(-1, self.input.channels).T

    @property
    def lanes_in(self):
        return self.lanes

    @property
    def lanes_out(self):
        return self.lanes


@dataclass(frozen=True, eq=False, kw_only=True)
class Shuffle(Stage):
    """ShuffleNet channel shuffle: (H, W, g, C/g) -> transpose -> (H, W, C/g, g).
    Output channel ``j * groups + i`` is input channel ``i * (C / groups) + j``."""
    kind: ClassVar[str] = "shuffle"
    groups: int = 1
    lanes: int | None = None   # set from the upstream stage when built from a file

    def _validate(self):
        w = self.where
        groups = check_int(w, "groups", self.groups, 1)
        object.__setattr__(self, "groups", groups)
        if self.input.channels % groups:
            raise ValueError(f"{w}groups must divide the channels {self.input.channels}, not {groups}")
        if self.output != self.input.renamed(self.name):
            raise ValueError(f"{w}output must equal the input (shape and quantization) under the stage's name")
        lanes = check_int(w, "lanes", self.input.channels if self.lanes is None else self.lanes, 1)
        if self.input.channels % lanes:
            raise ValueError(f"{w}lanes must divide the channels {self.input.channels}, not {lanes}")
        object.__setattr__(self, "lanes", lanes)

    @property
    def permutation(self) -> np.ndarray:
        """``out[..., j] = in[..., permutation[j]]``."""
        c, g = self.input.channels, self.groups
        return np.arange(c).reshape(g, c // g).T.reshape(-1)

    @property
    def lanes_in(self):
        return self.lanes

    @property
    def lanes_out(self):
        return self.lanes


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Stage):
    """Residual add, TFLite int8 ADD arithmetic: ``skip`` (an earlier tensor, TFLite's first
    operand) plus ``input`` (the main path), then the activation clamp."""
    kind: ClassVar[str] = "add"
    skip: TensorSpec
    activation: str = "none"
    rounding: str = "double"
    lanes: int | None = None

    def _validate(self):
        w = self.where
        check_choice(w, "activation", self.activation, ACTIVATIONS)
        check_choice(w, "rounding", self.rounding, arith.ROUNDINGS)
        if not isinstance(self.skip, TensorSpec):
            raise TypeError(f"{w}skip must be a TensorSpec, not {self.skip!r}")
        if self.skip.shape != self.input.shape:
            raise ValueError(f"{w}skip tensor {self.skip.name!r} has shape {self.skip.shape}, "
                             f"which does not match the main input's {self.input.shape}")
        if self.output.shape != self.input.shape:
            raise ValueError(f"{w}output shape must be {self.input.shape}, not {self.output.shape}")
        if not self.skip.bits == self.input.bits == self.output.bits:
            raise ValueError(f"{w}skip, main input and output must have equal bits, not "
                             f"{self.skip.bits}, {self.input.bits}, {self.output.bits}")
        if self.input.bits > 10:
            nonzero = [t for t in (self.skip, self.input, self.output) if t.zero_point != 0]
            if nonzero:
                raise ValueError(f"{w}above 10 bits the add needs zero points of 0 (TFLite int16 "
                                 f"ADD); tensor {nonzero[0].name!r} has zero_point {nonzero[0].zero_point}")
        try:
            self.params
        except ValueError as error:
            raise ValueError(f"{w}quantization does not line up: {error}") from None
        lanes = check_int(w, "lanes", self.input.channels if self.lanes is None else self.lanes, 1)
        if self.input.channels % lanes:
            raise ValueError(f"{w}lanes must divide the channels {self.input.channels}, not {lanes}")
        object.__setattr__(self, "lanes", lanes)

    @cached_property
    def params(self) -> arith.AddParams:
        """The integer ADD parameters, derived from the three scales as TFLite does."""
        return arith.add_params(self.skip.scale, self.skip.zero_point,
                                self.input.scale, self.input.zero_point,
                                self.output.scale, self.output.zero_point,
                                self.activation, self.output.bits, self.rounding)

    @property
    def activation_range(self) -> tuple[int, int]:
        return self.params.act_min, self.params.act_max

    @property
    def lanes_in(self):
        return self.lanes

    @property
    def lanes_out(self):
        return self.lanes


STAGE_KINDS = {cls.kind: cls for cls in (Pointwise, Depthwise, Shuffle, Add)}


# -- the engine ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EngineConfig:
    """A whole engine: the input tensor, the ordered stages and the input port's lanes.

    Stage ``i`` consumes stage ``i - 1``'s output (stage 0 the engine input); an
    :class:`Add` names any earlier tensor as its skip operand.
    """
    name: str
    input: TensorSpec
    stages: tuple[Stage, ...]
    input_lanes: int | None = None
    source: str | None = field(default=None, compare=False)   # file it was loaded from, for reports

    def __post_init__(self):
        check_identifier("", "name", self.name)
        if not isinstance(self.input, TensorSpec):
            raise TypeError(f"input must be a TensorSpec, not {self.input!r}")
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ValueError("stages must list at least one stage, not none")
        tensors = {self.input.name: self.input}
        upstream = self.input
        for index, stage in enumerate(stages):
            if not isinstance(stage, Stage):
                raise TypeError(f"stages[{index}] must be a Stage, not {stage!r}")
            if stage.name in tensors:
                raise ValueError(f"{stage.where}name {stage.name!r} is already used by another tensor")
            if stage.input != upstream:
                raise ValueError(f"{stage.where}input must be {upstream.name!r} {upstream.shape} "
                                 f"(the previous stage's output), not {stage.input.name!r} {stage.input.shape}")
            if isinstance(stage, Add) and tensors.get(stage.skip.name) != stage.skip:
                raise ValueError(f"{stage.where}skip must name an earlier tensor "
                                 f"({', '.join(tensors)}), not {stage.skip.name!r}")
            tensors[stage.name] = stage.output
            upstream = stage.output
        lanes = check_int("", "input lanes", stages[0].lanes_in if self.input_lanes is None
                          else self.input_lanes, 1)
        if self.input.channels % lanes:
            raise ValueError(f"input lanes must divide the input channels {self.input.channels}, not {lanes}")
        object.__setattr__(self, "input_lanes", lanes)

    @property
    def output(self) -> TensorSpec:
        return self.stages[-1].output

    @property
    def tensors(self) -> dict[str, TensorSpec]:
        """Every tensor by name, in stream order: the input, then each stage's output."""
        return {self.input.name: self.input, **{s.name: s.output for s in self.stages}}

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}")

    @property
    def skip_sources(self) -> frozenset[str]:
        """Names of the tensors some add reads back: the gateware keeps FIFOs for them."""
        return frozenset(s.skip.name for s in self.stages if isinstance(s, Add))
