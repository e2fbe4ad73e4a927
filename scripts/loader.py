"""Build :class:`~convgen.config.EngineConfig` objects from TOML files and ``.npz`` tensors.

The TOML holds the structure (geometry, stage kinds, widths, activations,
parallelism); the ``.npz`` it names holds the numbers (weights, biases,
multipliers, shifts, zero points, scales). Without a tensors file, seeded
random tensors and quantization parameters are generated so that every example
runs with no data. Format: ``docs/config.md``.
"""

from __future__ import annotations

import math
import re
import tomllib
import zipfile
from pathlib import Path

import numpy as np

from . import config as C
from .sim import arith

__all__ = ["load_config", "config_from_dict", "save_tensors", "tensor_arrays"]

_TOP_KEYS = {"name", "tensors", "rounding", "random", "input", "stage"}
_RANDOM_KEYS = {"seed", "scales"}
_SCALE_MODES = ("float", "power-of-two")
_INPUT_KEYS = {"height", "width", "channels", "bits", "lanes", "zero_point", "scale"}
_QUANT_KEYS = {"bits", "zero_point", "scale"}
_STAGE_KEYS = {
    "pointwise": {"name", "kind", "out_channels", "groups", "activation", "pe", "simd",
                  "weight_bits", "rounding", "multipliers"} | _QUANT_KEYS,
    "depthwise": {"name", "kind", "kernel", "stride", "dilation", "padding", "activation", "lanes",
                  "weight_bits", "rounding", "multipliers"} | _QUANT_KEYS,
    "shuffle": {"name", "kind", "groups", "lanes"},
    "add": {"name", "kind", "skip", "activation", "lanes", "rounding"} | _QUANT_KEYS,
}
_CONV_ARRAYS = ("weights", "bias", "multiplier", "shift")
_QUANT_ARRAYS = ("zero_point", "scale")


def _check_keys(where: str, table, allowed: set):
    if not isinstance(table, dict):
        raise TypeError(f"{where} must be a table, not {table!r}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def load_config(path, tensors: dict | None = None) -> C.EngineConfig:
    """Load an engine from a TOML file (and the ``.npz`` it names, relative to the TOML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"config file {str(path)!r} cannot be read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    name = re.sub(r"\W", "_", path.stem.encode("ascii", "replace").decode())
    if not name.isidentifier():
        name = f"engine_{name}"          # e.g. 3x3_dw.toml -> engine_3x3_dw
    return config_from_dict(doc, base_dir=path.parent, default_name=name, source=str(path), tensors=tensors)


def _read_npz(path: Path) -> dict:
    if not zipfile.is_zipfile(path):
        if not path.exists():
            raise ValueError(f"tensors file {str(path)!r} does not exist")
        raise ValueError(f"tensors file {str(path)!r} is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as error:          # a damaged archive: zipfile, EOF, value errors
        raise ValueError(f"tensors file {str(path)!r} cannot be read as .npz: "
                         f"{type(error).__name__}: {error}") from None


class _Params:
    """Where a stage's numbers come from: the tensors file, or the seeded generator."""

    def __init__(self, arrays: dict | None, seed: int, scales: str):
        self.arrays = arrays
        self.used: set[str] = set()
        self.rng = np.random.default_rng(seed)
        self.scales = scales

    def get(self, key: str):
        if self.arrays is None:
            return None
        if key not in self.arrays:
            raise ValueError(f"tensors file has no array {key!r}")
        self.used.add(key)
        return self.arrays[key]

    def quant(self, where: str, name: str, table: dict, activation: str, bits: int,
              default_scale_log2: float) -> tuple[int, float]:
        """``(zero_point, scale)`` of tensor ``name`` from the TOML, the file or the generator."""
        out = []
        for key in _QUANT_ARRAYS:
            in_toml = key in table
            in_file = self.arrays is not None and f"{name}.{key}" in self.arrays
            if in_toml and in_file:
                raise ValueError(f"{where}{key} is given both in the TOML and as "
                                 f"{f'{name}.{key}'!r} in the tensors file")
            if in_toml:
                out.append(table[key])
            elif self.arrays is not None:
                value = self.get(f"{name}.{key}")
                if value.shape not in ((), (1,)):
                    raise ValueError(f"{where}tensors file array {f'{name}.{key}'!r} must be a scalar, "
                                     f"not shape {value.shape}")
                kinds = "iu" if key == "zero_point" else "f"
                if value.dtype.kind not in kinds:
                    raise TypeError(f"{where}tensors file array {f'{name}.{key}'!r} must be "
                                    f"{'an integer' if key == 'zero_point' else 'a float'}, "
                                    f"not {value.dtype.name}")
                out.append(value.reshape(-1)[0].item())
            else:
                out.append(None)
        zero_point, scale = out
        if zero_point is None or scale is None:
            rz, rs = self._random_quant(activation, bits, default_scale_log2)
            zero_point = rz if zero_point is None else zero_point
            scale = rs if scale is None else scale
        return zero_point, scale

    def _random_quant(self, activation, bits, scale_log2):
        qmin, qmax = arith.int_range(bits)
        rng = self.rng
        if activation == "relu6":
            # Post-training quantization puts ReLU6's zero point at qmin and 6.0 near qmax;
            # the jitter lets the clamp cut inside the integer range too.
            zero_point = qmin + int(rng.integers(0, max(1, (qmax - qmin) // 8)))
            if self.scales == "power-of-two":
                return zero_point, 2.0 ** -(bits - 4)       # 3 integer bits: [0, 6] in Q3.(bits-4)
            return zero_point, float(np.float32(6.0 / (qmax - qmin) * rng.uniform(0.7, 1.3)))
        if activation == "relu":
            zero_point = qmin + int(rng.integers(0, max(1, (qmax - qmin) // 8)))
        else:
            zero_point = int(rng.integers(qmin // 2, qmax // 2 + 1))
        if self.scales == "power-of-two":
            return zero_point, 2.0 ** round(scale_log2)
        return zero_point, float(np.float32(2.0 ** (scale_log2 + rng.uniform(-0.5, 0.5))))

    def conv(self, where: str, name: str, inp: C.TensorSpec, out: C.TensorSpec, taps: int,
             weight_shape: tuple, weight_bits: int, rounding: str) -> dict:
        """Weights, bias, multiplier and shift of a convolution stage."""
        if self.arrays is not None:
            arrays = {key: self.get(f"{name}.{key}") for key in _CONV_ARRAYS}
            dtypes = {"weights": "int8" if weight_bits <= 8 else "int16",
                      "bias": "int32", "multiplier": "int32", "shift": "int32"}
            for key, dtype in dtypes.items():      # the file format fixes the dtypes
                if arrays[key].dtype != np.dtype(dtype):
                    raise TypeError(f"{where}{key} must have dtype {dtype}, not {arrays[key].dtype.name}")
            return arrays
        rng, c_out = self.rng, out.channels
        span = inp.qmax - inp.qmin
        # Largest weight magnitude that keeps the worst-case accumulator in int32.
        w_max = min((1 << (weight_bits - 1)) - 1, max(1, ((1 << 30) // (taps * span))))
        weights = rng.integers(-w_max, w_max, size=weight_shape, endpoint=True)
        acc_std = math.sqrt(taps) * (w_max / math.sqrt(3)) * (span / math.sqrt(12))
        bias = np.round(rng.normal(0, acc_std / 4, size=c_out)).astype(np.int64)
        bias = np.clip(bias, -(1 << 29), 1 << 29)
        # Per-channel real multiplier: spreads about 3 sigma of the accumulator over the output.
        effective = (out.qmax - out.qmin) / (6 * acc_std) * rng.uniform(0.5, 2.0, size=c_out)
        if self.scales == "power-of-two":
            effective = 2.0 ** np.round(np.log2(effective))
        with np.errstate(over="ignore", under="ignore"):
            weight_scales = (effective * out.scale / inp.scale).astype(np.float32)
        if not np.all(np.isfinite(weight_scales) & (weight_scales > 0)):
            raise ValueError(f"{where}cannot generate weight scales for input scale {inp.scale!r} "
                             f"and output scale {out.scale!r}: give the tensors in a file")
        pairs = [arith.quantize_multiplier(float(np.float32(inp.scale)) * float(ws)
                                           / float(np.float32(out.scale)), rounding)
                 for ws in weight_scales]
        return {
            "weights": weights.astype(np.int8 if weight_bits <= 8 else np.int16),
            "bias": bias.astype(np.int32),
            "multiplier": np.array([m for m, _ in pairs], dtype=np.int32),
            "shift": np.array([s for _, s in pairs], dtype=np.int32),
        }


def config_from_dict(doc: dict, base_dir=".", default_name: str = "engine", source: str | None = None,
                     tensors: dict | None = None) -> C.EngineConfig:
    """Build an engine from a parsed TOML document (see ``docs/config.md``).

    ``tensors`` (a dict of arrays) replaces the file the document names, if any.
    """
    _check_keys("config", doc, _TOP_KEYS)
    name = doc.get("name", default_name)
    rounding = C.check_choice("", "rounding", doc.get("rounding", "double"), arith.ROUNDINGS)
    if "tensors" in doc and tensors is None:
        if not isinstance(doc["tensors"], str):
            raise TypeError(f"tensors must be a file name, not {doc['tensors']!r}")
        tensors = _read_npz(Path(base_dir) / doc["tensors"])
    random = doc.get("random", {})
    _check_keys("[random]", random, _RANDOM_KEYS)
    if tensors is not None and "random" in doc:
        raise ValueError("[random] is used only without a tensors file; remove one of them")
    seed = C.check_int("[random] ", "seed", random.get("seed", 0), 0)
    scales = C.check_choice("[random] ", "scales", random.get("scales", "float"), _SCALE_MODES)
    params = _Params(tensors, seed, scales)

    table = doc.get("input")
    if table is None:
        raise ValueError("config has no [input] table (height, width, channels)")
    _check_keys("[input]", table, _INPUT_KEYS)
    for key in ("height", "width", "channels"):
        if key not in table:
            raise ValueError(f"[input]: missing key {key!r}")
    bits = C.check_int("[input] ", "bits", table.get("bits", 8), C.MIN_BITS, C.MAX_BITS)
    zero_point, scale = params.quant("[input] ", "input", table, "none", bits, -7)
    source_spec = C.TensorSpec("input", table["height"], table["width"], table["channels"],
                               bits, zero_point, scale)

    stage_tables = doc.get("stage", [])
    if not isinstance(stage_tables, list) or not stage_tables:
        raise ValueError("config has no [[stage]] tables; an engine needs at least one stage")
    tensors_by_name = {"input": source_spec}
    upstream = source_spec
    lanes_out = None
    stages = []
    for index, st in enumerate(stage_tables):
        if not isinstance(st, dict):
            raise TypeError(f"[[stage]] {index} must be a table, not {st!r}")
        kind = st.get("kind")
        if not isinstance(kind, str) or kind not in _STAGE_KEYS:
            raise ValueError(f"[[stage]] {index}: kind must be one of {', '.join(_STAGE_KEYS)}, not {kind!r}")
        stage_name = st.get("name", f"{kind}{index}")
        where = f"stage {stage_name!r} ({kind}): "
        _check_keys(f"stage {stage_name!r} ({kind})", st, _STAGE_KEYS[kind])
        if not isinstance(stage_name, str) or not stage_name.isidentifier() or stage_name == "input":
            raise ValueError(f"[[stage]] {index}: name must be an identifier other than 'input', "
                             f"not {stage_name!r}")
        stage = _build_stage(kind, stage_name, where, st, upstream, tensors_by_name, lanes_out,
                             params, st.get("rounding", rounding))
        stages.append(stage)
        tensors_by_name[stage.name] = stage.output
        upstream, lanes_out = stage.output, stage.lanes_out

    if params.arrays is not None:
        unused = sorted(set(params.arrays) - params.used)
        if unused:
            raise ValueError(f"tensors file has an array no stage uses: {unused[0]!r}")
    return C.EngineConfig(name=name, input=source_spec, stages=tuple(stages),
                          input_lanes=table.get("lanes"), source=source)


def _build_stage(kind, name, where, st, upstream, tensors_by_name, lanes_out, params, rounding):
    common = dict(name=name, input=upstream)
    if kind == "shuffle":
        return C.Shuffle(**common, output=upstream.renamed(name), groups=st.get("groups", 1),
                         lanes=st.get("lanes", lanes_out))
    activation = C.check_choice(where, "activation", st.get("activation", "none"), C.ACTIVATIONS)
    bits = C.check_int(where, "bits", st.get("bits", upstream.bits), C.MIN_BITS, C.MAX_BITS)
    if kind == "add":
        skip_name = st.get("skip")
        if not isinstance(skip_name, str) or skip_name not in tensors_by_name:
            raise ValueError(f"{where}skip must name an earlier tensor "
                             f"({', '.join(tensors_by_name)}), not {skip_name!r}")
        skip = tensors_by_name[skip_name]
        zero_point, scale = params.quant(where, name, st, activation, bits,
                                         math.log2(max(skip.scale, upstream.scale)) + 0.5)
        output = C.TensorSpec(name, *upstream.shape, bits, zero_point, scale)
        return C.Add(**common, output=output, skip=skip, activation=activation, rounding=rounding,
                     lanes=st.get("lanes", lanes_out))

    weight_bits = C.check_int(where, "weight_bits", st.get("weight_bits", 8), C.MIN_BITS, C.MAX_BITS)
    if kind == "pointwise":
        if "out_channels" not in st:
            raise ValueError(f"{where}missing key 'out_channels'")
        out_channels, groups = C.Pointwise.check_geometry(where, upstream, st["out_channels"],
                                                          st.get("groups", 1))
        out_shape = (upstream.height, upstream.width, out_channels)
        taps = upstream.channels // groups
        weight_shape = (out_channels, taps)
        extra = dict(groups=groups, pe=st.get("pe", 1), simd=st.get("simd", 1))
    else:
        kernel, stride, dilation, padding = C.Depthwise.check_geometry(
            where, upstream, st.get("kernel", 3), st.get("stride", 1), st.get("dilation", 1),
            st.get("padding", "same"))
        out_shape = (C.conv_output_size(upstream.height, kernel, stride, dilation, padding),
                     C.conv_output_size(upstream.width, kernel, stride, dilation, padding),
                     upstream.channels)
        taps = kernel * kernel
        weight_shape = (kernel, kernel, upstream.channels)
        extra = dict(kernel=kernel, stride=stride, dilation=dilation, padding=padding,
                     lanes=st.get("lanes", 1))
    zero_point, scale = params.quant(where, name, st, activation, bits, -5)
    output = C.TensorSpec(name, *out_shape, bits, zero_point, scale)
    arrays = params.conv(where, name, upstream, output, taps, weight_shape, weight_bits, rounding)
    cls = C.Pointwise if kind == "pointwise" else C.Depthwise
    return cls(**common, output=output, activation=activation, weight_bits=weight_bits,
               rounding=rounding, multipliers=st.get("multipliers", "dsp"), **arrays, **extra)


def tensor_arrays(config: C.EngineConfig) -> dict[str, np.ndarray]:
    """Every number of an engine as the arrays of its tensors file (``<name>.<array>``)."""
    arrays = {}
    shuffles = {s.name for s in config.stages if isinstance(s, C.Shuffle)}
    for spec in config.tensors.values():
        if spec.name not in shuffles:       # a shuffle's quantization is its input's
            arrays[f"{spec.name}.zero_point"] = np.array(spec.zero_point, dtype=np.int32)
            arrays[f"{spec.name}.scale"] = np.array(spec.scale, dtype=np.float64)
    for stage in config.stages:
        if isinstance(stage, C.ConvStage):
            arrays[f"{stage.name}.weights"] = stage.weights.astype(np.int8 if stage.weight_bits <= 8 else np.int16)
            for key in ("bias", "multiplier", "shift"):
                arrays[f"{stage.name}.{key}"] = getattr(stage, key).astype(np.int32)
    return arrays


def save_tensors(config: C.EngineConfig, path) -> None:
    """Write an engine's numbers as a tensors file that :func:`load_config` reads back."""
    np.savez(path, **tensor_arrays(config))
