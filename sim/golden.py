"""NumPy golden model: the bit-exact reference every engine is checked against.

Layout is (H, W, C) channels-last everywhere; every array is ``np.int64`` on
purpose (values that TFLite holds in int32 or int8 are exact in it), and no
Python loop runs over pixels: the convolutions loop over kernel taps at most.

Order of operations for a convolution (TFLite ``reference_integer_ops``):
accumulate ``w * (x + input_offset)`` with ``input_offset = -input_zero_point``,
add the int32 bias, ``MultiplyByQuantizedMultiplier`` per output channel, add the
output zero point, clamp to the activation range. Out-of-image taps are skipped,
which equals padding the input with its zero point. The accumulator never leaves
int32: :class:`convgen.config.ConvStage` refuses weights whose worst case would.
"""

from __future__ import annotations

import numpy as np

from . import arith

__all__ = [
    "pointwise_accumulate", "depthwise_accumulate", "channel_shuffle",
    "run_stage", "run", "random_input",
]


def _hwc(x, name="x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must be an (H, W, C) array, not shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {x.dtype}")
    return x.astype(np.int64)


def pointwise_accumulate(x, weights, bias, input_offset: int, groups: int = 1) -> np.ndarray:
    """Grouped 1x1 convolution accumulators.

    x (H, W, C_in); weights (C_out, C_in / groups); bias (C_out,).
    Output channel ``o`` of group ``g = o // (C_out / groups)`` sums input channels
    ``g * C_in/groups ...``. Returns (H, W, C_out) int64.
    """
    x = _hwc(x)
    h, w, c_in = x.shape
    weights = np.asarray(weights, dtype=np.int64)
    c_out = weights.shape[0]
    xg = (x + input_offset).reshape(h, w, groups, c_in // groups)
    wg = weights.reshape(groups, c_out // groups, c_in // groups)
    acc = np.einsum("hwgc,gmc->hwgm", xg, wg).reshape(h, w, c_out)
    return acc + np.asarray(bias, dtype=np.int64)


def depthwise_accumulate(x, weights, bias, input_offset: int, stride: int = 1, dilation: int = 1,
                         pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
                         out_size: tuple[int, int] | None = None) -> np.ndarray:
    """KxK depthwise convolution accumulators (depth multiplier 1).

    x (H, W, C); weights (K, K, C); bias (C,); ``pad`` is ((top, bottom), (left, right)).
    Output pixel (oy, ox) reads input (oy*stride - top + ky*dilation,
    ox*stride - left + kx*dilation); taps outside the image contribute nothing
    (padding with 0 after the offset is added). Returns (H_out, W_out, C) int64.
    """
    x = _hwc(x)
    weights = np.asarray(weights, dtype=np.int64)
    k = weights.shape[0]
    (top, bottom), (left, right) = pad
    xp = np.pad(x + input_offset, ((top, bottom), (left, right), (0, 0)))
    if out_size is None:
        out_size = ((xp.shape[0] - (k - 1) * dilation - 1) // stride + 1,
                    (xp.shape[1] - (k - 1) * dilation - 1) // stride + 1)
    out_h, out_w = out_size
    acc = np.zeros((out_h, out_w, x.shape[2]), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            y0, x0 = ky * dilation, kx * dilation
            window = xp[y0:y0 + (out_h - 1) * stride + 1:stride, x0:x0 + (out_w - 1) * stride + 1:stride]
            acc += window * weights[ky, kx]
    return acc + np.asarray(bias, dtype=np.int64)


def channel_shuffle(x, groups: int) -> np.ndarray:
    """ShuffleNet shuffle: reshape (H, W, g, C/g), swap the last two axes, reshape back."""
    x = _hwc(x)
    h, w, c = x.shape
    return x.reshape(h, w, groups, c // groups).swapaxes(2, 3).reshape(h, w, c)


def _check_int32(acc, stage):
    if acc.size and (acc.min() < arith.INT32_MIN or acc.max() > arith.INT32_MAX):
        raise AssertionError(f"{stage.where}accumulator left int32, which its validated "
                             f"worst case {stage.accumulator_range} forbids")
    return acc


def run_stage(stage, x, skip=None) -> np.ndarray:
    """Run one configured stage on its input (H, W, C); ``skip`` is an add's skip operand."""
    # Imported here: convgen.config imports this package's arith module.
    from ..config import Add, Depthwise, Pointwise, Shuffle

    if isinstance(stage, Pointwise):
        acc = pointwise_accumulate(x, stage.weights, stage.bias, stage.input_offset, stage.groups)
    elif isinstance(stage, Depthwise):
        acc = depthwise_accumulate(x, stage.weights, stage.bias, stage.input_offset, stage.stride,
                                   stage.dilation, (stage.pad_top_bottom, stage.pad_left_right),
                                   (stage.out_height, stage.out_width))
    elif isinstance(stage, Shuffle):
        return channel_shuffle(x, stage.groups)
    elif isinstance(stage, Add):
        if skip is None:
            raise ValueError(f"{stage.where}needs its skip operand {stage.skip.name!r}")
        return arith.quantized_add(_hwc(skip, "skip"), _hwc(x), stage.params)
    else:
        raise TypeError(f"unknown stage {stage!r}")
    act_min, act_max = stage.activation_range
    return arith.requantize(_check_int32(acc, stage), stage.multiplier, stage.shift,
                            stage.output.zero_point, act_min, act_max, stage.rounding)


def run(config, x, keep: bool = False):
    """Run an :class:`~convgen.config.EngineConfig` on one input frame.

    x: (H, W, C) integers in the input tensor's range. Returns the output
    (H', W', C') int64, or with ``keep=True`` a dict of every tensor by name
    (the input, then each stage's output).
    """
    x = _hwc(x, "input")
    spec = config.input
    if x.shape != spec.shape:
        raise ValueError(f"input must have shape {spec.shape}, not {x.shape}")
    if x.size and (x.min() < spec.qmin or x.max() > spec.qmax):
        raise ValueError(f"input values must lie in [{spec.qmin}, {spec.qmax}] ({spec.bits} bits)")
    tensors = {spec.name: x}
    for stage in config.stages:
        skip = tensors.get(stage.skip.name) if hasattr(stage, "skip") else None
        x = run_stage(stage, x, skip)
        tensors[stage.name] = x
    return tensors if keep else x


def random_input(spec, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random (H, W, C) frame over the full range of ``spec.bits``."""
    return rng.integers(spec.qmin, spec.qmax, size=spec.shape, endpoint=True, dtype=np.int64)
