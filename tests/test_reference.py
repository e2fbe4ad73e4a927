"""The golden model against the TensorFlow Lite interpreter's own tensors.

Five small int8 Keras models were run by ``tf.lite.Interpreter`` (tensorflow-cpu 2.21,
reference kernels, every tensor preserved); ``convgen.sim.reference.load_case`` turns
each into an engine plus the interpreter's tensors (see the vectors' README.md). Every
tensor of every sample must match bit for bit, end to end and stage by stage. A negative
control shows the comparison notices single rounding. The vectors cannot tell a missing
activation clamp from a right one (their ReLU zero points are all -128), so the clamp is
checked separately on hand-built stages where it cuts inside the integer range.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from convgen import config as C
from convgen.sim import arith, golden, reference

VECTOR_DIR = reference.default_vector_dir()
if not VECTOR_DIR.is_dir():
    pytest.skip(f"TFLite reference vectors not found at {VECTOR_DIR} "
                f"(set CONVGEN_TFLITE_VECTORS)", allow_module_level=True)

CASES = ("dw3x3_s1_same", "pw_relu6", "dws_layer", "mbv2_block_s1", "shufflenet_unit")
KINDS = {
    "dw3x3_s1_same": ["depthwise"],
    "pw_relu6": ["pointwise"],
    "dws_layer": ["depthwise", "pointwise"],
    "mbv2_block_s1": ["pointwise", "depthwise", "pointwise", "add"],
    "shufflenet_unit": ["pointwise", "shuffle", "depthwise", "pointwise", "add"],
}
SAMPLES = range(3)
_loaded: dict = {}


def case(name: str, rounding: str = "double"):
    """load_case, memoised (the tests only read it)."""
    key = (name, rounding)
    if key not in _loaded:
        _loaded[key] = reference.load_case(name, VECTOR_DIR, rounding=rounding)
    return _loaded[key]


def mismatches(config_case, sample: int, isolated: bool) -> dict[str, int]:
    """Number of differing elements per tensor, end to end or stage by stage."""
    c, out = config_case, {}
    if isolated:
        got = {}
        for stage in c.config.stages:
            skip = c.tensors[stage.skip.name][sample] if isinstance(stage, C.Add) else None
            got[stage.name] = golden.run_stage(stage, c.tensors[stage.input.name][sample], skip)
    else:
        got = golden.run(c.config, c.inputs[sample], keep=True)
    for name, tensor in got.items():
        out[name] = int(np.count_nonzero(tensor != c.tensors[name][sample]))
    return out


# -- the loaded cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_case_structure(name):
    c = case(name)
    assert [s.kind for s in c.config.stages] == KINDS[name]
    assert list(c.tensors) == list(c.config.tensors)       # every tensor has the interpreter's value
    assert c.inputs.shape == (3, *c.config.input.shape) and c.outputs.shape == (3, *c.config.output.shape)
    np.testing.assert_array_equal(c.tensors["input"], c.inputs)
    np.testing.assert_array_equal(c.tensors[c.config.stages[-1].name], c.outputs)
    for tensor in c.tensors.values():
        assert tensor.min() >= -128 and tensor.max() <= 127
        assert len(np.unique(tensor)) > 8                   # not a degenerate sample


# -- bit-exact against the interpreter ----------------------------------------------------------

@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("name", CASES)
def test_end_to_end_every_tensor(name, sample):
    c = case(name)
    got = golden.run(c.config, c.inputs[sample], keep=True)
    assert list(got) == list(c.tensors)
    for tensor_name, want in c.tensors.items():
        assert got[tensor_name].dtype == np.int64
        np.testing.assert_array_equal(got[tensor_name], want[sample], err_msg=f"{name}[{sample}] {tensor_name}")
    output = golden.run(c.config, c.inputs[sample])
    np.testing.assert_array_equal(output, c.outputs[sample])


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("name", CASES)
def test_each_stage_in_isolation(name, sample):
    """Each stage fed the interpreter's own input tensor: a mismatch names its stage."""
    c = case(name)
    for stage in c.config.stages:
        x = c.tensors[stage.input.name][sample]
        skip = c.tensors[stage.skip.name][sample] if isinstance(stage, C.Add) else None
        got = golden.run_stage(stage, x, skip)
        np.testing.assert_array_equal(got, c.tensors[stage.name][sample],
                                      err_msg=f"{name}[{sample}] stage {stage.name} ({stage.kind})")


def test_single_rounding_is_detected():
    """Negative control: TFLITE_SINGLE_ROUNDING arithmetic differs from the interpreter
    somewhere (TFLite 2.21's reference kernels use double rounding), both end to end and
    with each stage fed the interpreter's input, so the comparisons above are sensitive."""
    end_to_end, isolated = {}, {}
    for name in CASES:
        single = case(name, "single")
        assert all(getattr(s, "rounding", "single") == "single" for s in single.config.stages)
        for sample in SAMPLES:
            for key, value in mismatches(single, sample, isolated=False).items():
                end_to_end[(name, key)] = end_to_end.get((name, key), 0) + value
            for key, value in mismatches(single, sample, isolated=True).items():
                isolated[(name, key)] = isolated.get((name, key), 0) + value
    assert sum(end_to_end.values()) > 0, "single rounding matched TFLite everywhere"
    assert sum(isolated.values()) > 0
    # every convolution kind is caught on its own (ADD happens to agree on these vectors)
    for kind in ("depthwise_conv_2d", "conv_2d"):
        assert any(n > 0 for (_, key), n in isolated.items() if key.split("_", 1)[1] == kind), kind
    # and the default (double) loads match exactly: zero mismatches, same counting code
    assert all(n == 0 for name in CASES for sample in SAMPLES
               for n in mismatches(case(name), sample, isolated=True).values())


def test_multipliers_follow_tflite_derivation():
    """load_case's per-channel (multiplier, shift) is QuantizeMultiplier of TFLite's
    PopulateConvolutionQuantizationParams real, ``double(input_scale) * double(filter_scale[c])
    / double(output_scale)``, with the scales read here straight from the .npz."""
    checked = 0
    for name in CASES:
        with np.load(VECTOR_DIR / f"{name}.npz", allow_pickle=False) as npz:
            for stage in case(name).config.stages:
                if not isinstance(stage, C.ConvStage):
                    continue
                k = int(stage.name.split("_")[0][2:])            # "op<k>_<op>"
                in_scale = float(npz[f"op{k}_in0_scale"].reshape(-1)[0])
                out_scale = float(npz[f"op{k}_out_scale"].reshape(-1)[0])
                assert npz[f"op{k}_in0_scale"].dtype == npz[f"op{k}_weight_scales"].dtype == np.float32
                reals = [in_scale * float(ws) / out_scale for ws in npz[f"op{k}_weight_scales"]]
                pairs = [arith.quantize_multiplier(r) for r in reals]
                np.testing.assert_array_equal(stage.multiplier, [m for m, _ in pairs])
                np.testing.assert_array_equal(stage.shift, [s for _, s in pairs])
                assert stage.input.zero_point == int(npz[f"op{k}_in0_zero_point"].reshape(-1)[0])
                assert stage.output.zero_point == int(npz[f"op{k}_out_zero_point"].reshape(-1)[0])
                checked += 1
    assert checked == 10


# -- the activation clamp, where it cuts --------------------------------------------------------

def _clamp_stages(activation: str, kind: str):
    """A stage whose relu6 bounds cut inside int8: output zero point -20 and scale 1/8 give
    relu = [-20, 127] and relu6 = [-20, -20 + 6/(1/8)] = [-20, 28] (6/(1/8) = 48 exactly)."""
    rng = np.random.default_rng(42)
    inp = C.TensorSpec("input", 6, 6, 8, 8, 3, 0.05)
    if kind == "depthwise":
        out = C.TensorSpec("s", 6, 6, 8, 8, -20, 0.125)
        weights = rng.integers(-127, 128, size=(3, 3, 8)).astype(np.int8)
        extra = dict(kernel=3, stride=1, padding="same")
        cls = C.Depthwise
    else:
        out = C.TensorSpec("s", 6, 6, 8, 8, -20, 0.125)
        weights = rng.integers(-127, 128, size=(8, 8)).astype(np.int8)
        extra = {}
        cls = C.Pointwise
    # real multiplier ~ 1/400: accumulators of a few 10^4 land over about [-100, 100]
    m, s = arith.quantize_multiplier(1 / 400)
    stage = cls(name="s", input=inp, output=out, activation=activation, weights=weights,
                bias=rng.integers(-2000, 2000, size=8).astype(np.int32),
                multiplier=np.full(8, m, dtype=np.int32), shift=np.full(8, s, dtype=np.int32), **extra)
    return stage, rng.integers(-128, 128, size=(4, 6, 6, 8))


@pytest.mark.parametrize("kind", ["depthwise", "pointwise"])
def test_activation_clamp_cuts_inside_int_range(kind):
    zero_point, scale = -20, Fraction(1, 8)
    relu6_max = zero_point + int(Fraction(6) / scale)          # 48: exact, no rounding involved
    assert relu6_max == 28
    none, frames = _clamp_stages("none", kind)
    relu, _ = _clamp_stages("relu", kind)
    relu6, _ = _clamp_stages("relu6", kind)
    assert relu6.activation_range == (zero_point, relu6_max)
    assert relu.activation_range == (zero_point, 127)
    assert none.activation_range == (-128, 127)
    for x in frames:
        raw = golden.run_stage(none, x)
        out6 = golden.run_stage(relu6, x)
        out_relu = golden.run_stage(relu, x)
        # the same accumulators without the clamp go past both bounds...
        assert raw.max() > relu6_max and raw.min() < zero_point
        # ...and the clamp is exactly a saturation at the bounds, nothing else
        np.testing.assert_array_equal(out6, np.minimum(np.maximum(raw, zero_point), relu6_max))
        np.testing.assert_array_equal(out_relu, np.maximum(raw, zero_point))
        assert out6.max() == relu6_max and out6.min() == zero_point
        assert out_relu.min() == zero_point and out_relu.max() == raw.max()


def test_activation_clamp_in_add():
    """ADD's fused relu6 cuts inside int8 too (output zero point -100, scale 0.04:
    6 / 0.04 = 150 in float32, so act_max = 50)."""
    spec = C.TensorSpec("input", 4, 4, 8, 8, 0, 0.03)
    skip = spec
    out = {a: C.Add(name="add", input=spec, skip=skip, activation=a,
                    output=C.TensorSpec("add", 4, 4, 8, 8, -100, 0.04)) for a in ("none", "relu6")}
    assert float(np.float32(6) / np.float32(0.04)) == 150.0
    assert out["relu6"].activation_range == (-100, 50)
    rng = np.random.default_rng(43)
    x = rng.integers(-128, 128, size=(4, 4, 8))
    raw = golden.run_stage(out["none"], x, skip=x[::-1])
    clamped = golden.run_stage(out["relu6"], x, skip=x[::-1])
    assert raw.max() > 50 and raw.min() < -100
    np.testing.assert_array_equal(clamped, np.clip(raw, -100, 50))
