"""Read the TensorFlow Lite reference vectors into convgen configurations.

``shared/tflite-vectors/<case>.npz`` holds a small int8 model's constants and
every tensor the TFLite interpreter computed (format in that folder's README).
:func:`load_case` turns the ops into an :class:`~convgen.config.EngineConfig`,
deriving the per-channel multipliers and shifts from the float32 scales exactly
as TFLite's ``PopulateConvolutionQuantizationParams`` does
(``double(input_scale) * double(weight_scale[c]) / double(output_scale)``
through ``QuantizeMultiplier``), and returns the interpreter's tensors to
compare against. Supported ops: CONV_2D 1x1 (grouped), DEPTHWISE_CONV_2D
(depth multiplier 1), the RESHAPE/TRANSPOSE/RESHAPE channel shuffle, ADD.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import arith

__all__ = ["ReferenceCase", "load_case", "default_vector_dir"]

_ACTIVATIONS = {"NONE": "none", "RELU": "relu", "RELU6": "relu6"}


def default_vector_dir() -> Path:
    """Where the reference vectors are: ``$CONVGEN_TFLITE_VECTORS``, else the copy in the
    checkout's ``tests/data/tflite-vectors``, else ``shared/tflite-vectors`` beside the checkout."""
    env = os.environ.get("CONVGEN_TFLITE_VECTORS")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[1]
    for candidate in (root / "tests" / "data" / "tflite-vectors", root.parent / "shared" / "tflite-vectors"):
        if candidate.is_dir():
            return candidate
    return candidate


@dataclass(frozen=True, eq=False)
class ReferenceCase:
    """A TFLite reference model as a convgen engine, with the interpreter's tensors."""
    config: object                 # EngineConfig
    inputs: np.ndarray             # (N, H, W, C) int64: the model inputs
    outputs: np.ndarray            # (N, H', W', C') int64: the interpreter's outputs
    tensors: dict                  # stage name -> (N, H, W, C) int64 interpreter tensor


def _scalar(npz, key):
    return npz[key].reshape(-1)[0].item()


def _tensor_spec(npz, index, name):
    from ..config import TensorSpec
    shape = npz[f"t{index}"].shape[2:]          # (3, 1, H, W, C) stacked per sample
    return TensorSpec(name, *shape, bits=8, zero_point=int(_scalar(npz, f"t{index}_zero_point")),
                      scale=float(_scalar(npz, f"t{index}_scale")))


def _multipliers(in_scale, weight_scales, out_scale, rounding):
    pairs = [arith.quantize_multiplier(float(np.float32(in_scale)) * float(ws) / float(np.float32(out_scale)),
                                       rounding)
             for ws in np.asarray(weight_scales, dtype=np.float32)]
    return (np.array([m for m, _ in pairs], dtype=np.int32), np.array([s for _, s in pairs], dtype=np.int32))


def load_case(case: str, vector_dir: Path | None = None, rounding: str = "double") -> ReferenceCase:
    """Build the engine of reference case ``case`` (e.g. ``"mbv2_block_s1"``)."""
    from ..config import Add, Depthwise, EngineConfig, Pointwise, Shuffle

    path = Path(vector_dir or default_vector_dir()) / f"{case}.npz"
    npz = np.load(path, allow_pickle=False)
    input_index = int(npz["input_tensor_index"])
    names = {input_index: "input"}              # TFLite tensor index -> convgen tensor name
    specs = {input_index: _tensor_spec(npz, input_index, "input")}
    stages, k, n_ops = [], 0, int(npz["num_ops"])
    prev_index = input_index
    while k < n_ops:
        op = str(npz[f"op{k}_name"])
        ins, out_index = [int(i) for i in npz[f"op{k}_inputs"]], int(npz[f"op{k}_outputs"][0])
        name = f"op{k}_{op.lower()}"
        if op == "RESHAPE" and k + 2 < n_ops and str(npz[f"op{k + 1}_name"]) == "TRANSPOSE":
            groups = int(npz[f"op{k}_new_shape"][-2])
            if list(npz[f"op{k + 1}_perm"]) != [0, 1, 2, 4, 3] or str(npz[f"op{k + 2}_name"]) != "RESHAPE":
                raise ValueError(f"{case}: op{k}: RESHAPE/TRANSPOSE is not a channel shuffle")
            name, out_index = f"op{k}_shuffle", int(npz[f"op{k + 2}_outputs"][0])
            src = specs[ins[0]]
            stage = Shuffle(name=name, input=src, output=src.renamed(name), groups=groups)
            k += 3
        else:
            src = specs[ins[0]]
            out = _tensor_spec(npz, out_index, name)
            if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                common = dict(name=name, input=src, output=out,
                              activation=_ACTIVATIONS[str(npz[f"op{k}_fused_activation"])],
                              bias=npz[f"op{k}_bias"], rounding=rounding)
                common["multiplier"], common["shift"] = _multipliers(
                    src.scale, npz[f"op{k}_weight_scales"], out.scale, rounding)
                if list(npz[f"op{k}_dilation"]) != list(npz[f"op{k}_dilation"])[:1] * 2 or \
                        list(npz[f"op{k}_stride"]) != list(npz[f"op{k}_stride"])[:1] * 2:
                    raise ValueError(f"{case}: op{k}: unequal strides or dilations are not supported")
                if op == "CONV_2D":
                    weights = npz[f"op{k}_weights"]
                    if weights.shape[1:3] != (1, 1) or list(npz[f"op{k}_stride"]) != [1, 1]:
                        raise ValueError(f"{case}: op{k}: only 1x1 stride-1 CONV_2D is supported")
                    stage = Pointwise(**common, weights=weights.reshape(weights.shape[0], -1),
                                      groups=int(npz[f"op{k}_groups"]))
                else:
                    if int(npz[f"op{k}_depth_multiplier"]) != 1:
                        raise ValueError(f"{case}: op{k}: depth multiplier must be 1")
                    weights = npz[f"op{k}_weights"][0]
                    stage = Depthwise(**common, weights=weights, kernel=weights.shape[0],
                                      stride=int(npz[f"op{k}_stride"][0]),
                                      dilation=int(npz[f"op{k}_dilation"][0]),
                                      padding=str(npz[f"op{k}_padding"]).lower(), lanes=1)
            elif op == "ADD":
                # TFLite's ADD treats its operands alike; one must be the previous op's output.
                if prev_index not in ins:
                    raise ValueError(f"{case}: op{k}: ADD must take the previous op's output")
                skip = ins[1] if ins[0] == prev_index else ins[0]
                stage = Add(name=name, input=specs[prev_index], output=out, skip=specs[skip],
                            activation=_ACTIVATIONS[str(npz[f"op{k}_fused_activation"])],
                            rounding=rounding)
            else:
                raise ValueError(f"{case}: op{k}: unsupported op {op}")
            k += 1
        stages.append(stage)
        prev_index = out_index
        names[out_index] = stage.name
        specs[out_index] = stage.output
    config = EngineConfig(name=case, input=specs[input_index], stages=tuple(stages))

    def frames(key):
        a = npz[key]
        return a.reshape(a.shape[0], *a.shape[2:]).astype(np.int64)

    tensors = {name: frames(f"t{index}") for index, name in names.items()}
    return ReferenceCase(config, frames("input"), frames("output"), tensors)
