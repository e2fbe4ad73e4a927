"""convgen.sim.golden against an independent convolution.

The reference here is a float64 grouped, dilated, strided 2-D convolution built from
``numpy.lib.stride_tricks.sliding_window_view`` and ``np.einsum`` on integer-valued data
(exact in float64 at these magnitudes), with TensorFlow's SAME/VALID output size and
padding written out from their definitions. None of golden's functions is used to
compute an expected value; requantization and ADD come from ``arith`` (checked
against a scalar model of TFLite's C++ in ``test_arith.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from convgen import config as C
from convgen.loader import load_config
from convgen.sim import arith, golden

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
KERNELS, STRIDES, DILATIONS, PADDINGS, GROUPS = (1, 3, 5, 7), (1, 2, 3, 4), (1, 2, 3, 4), ("same", "valid"), (1, 2, 4)
N_RANDOM = 30


# -- independent reference ----------------------------------------------------------------------

def tf_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """TensorFlow: SAME -> ceil(in / stride); VALID -> ceil((in - (k-1)*d) / stride)."""
    if padding == "same":
        return math.ceil(size / stride)
    return math.ceil((size - (kernel - 1) * dilation) / stride)


def tf_padding(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """TensorFlow SAME: total = max(0, (out-1)*stride + (k-1)*d + 1 - in), top = total // 2."""
    if padding == "valid":
        return 0, 0
    out = tf_output_size(size, kernel, stride, dilation, padding)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    return total // 2, total - total // 2


def conv2d_ref(x, w, bias, input_offset, stride=1, dilation=1, padding="valid", groups=1):
    """Grouped conv2d accumulators: x (H, W, Cin) ints, w (K, K, Cin/groups, Cout) ints,
    ``sum w * (x + input_offset)`` over the window, out-of-image taps contributing 0.
    Returns (Ho, Wo, Cout) int64, computed in float64 (exact here: |values| < 2^40)."""
    h, wd, c_in = x.shape
    k, c_out = w.shape[0], w.shape[3]
    ho, wo = (tf_output_size(n, k, stride, dilation, padding) for n in (h, wd))
    (top, bottom), (left, right) = (tf_padding(n, k, stride, dilation, padding) for n in (h, wd))
    xp = np.pad(np.asarray(x, dtype=np.float64) + input_offset, ((top, bottom), (left, right), (0, 0)))
    footprint = (k - 1) * dilation + 1
    win = sliding_window_view(xp, (footprint, footprint), axis=(0, 1))   # (Hp', Wp', Cin, fp, fp)
    win = win[::stride, ::stride][:ho, :wo, :, ::dilation, ::dilation]   # (Ho, Wo, Cin, K, K)
    assert win.shape == (ho, wo, c_in, k, k)
    cig, cog = c_in // groups, c_out // groups
    win = win.reshape(ho, wo, groups, cig, k, k)
    wg = np.asarray(w, dtype=np.float64).reshape(k, k, cig, groups, cog)
    acc = np.einsum("hwgcyx,yxcgo->hwgo", win, wg).reshape(ho, wo, c_out)
    acc = acc + np.asarray(bias, dtype=np.float64)
    assert np.abs(acc).max(initial=0) < 2.0 ** 50
    out = acc.astype(np.int64)
    assert np.array_equal(out, acc)                 # integer-valued, nothing lost
    return out


def depthwise_ref(x, weights, bias, input_offset, stride, dilation, padding):
    """Depthwise (K, K, C) weights as a conv with groups = C."""
    k, _, c = weights.shape
    return conv2d_ref(x, np.asarray(weights).reshape(k, k, 1, c), bias, input_offset,
                      stride, dilation, padding, groups=c)


def pointwise_ref(x, weights, bias, input_offset, groups):
    """Pointwise (C_out, C_in/groups) weights as a 1x1 conv."""
    return conv2d_ref(x, np.asarray(weights).T[None, None], bias, input_offset, groups=groups)


def shuffle_ref(x, groups):
    """ShuffleNet definition: output channel j*g + i is input channel i*(C/g) + j."""
    c = x.shape[-1]
    out = np.empty_like(x)
    for i in range(groups):
        for j in range(c // groups):
            out[..., j * groups + i] = x[..., i * (c // groups) + j]
    return out


def requantize_stage(acc, stage):
    lo, hi = arith.activation_range(stage.activation, stage.output.scale, stage.output.zero_point,
                                    stage.output.bits)
    return arith.requantize(acc, stage.multiplier, stage.shift, stage.output.zero_point, lo, hi,
                            stage.rounding)


def compose(config, x):
    """Every tensor of ``config`` on input x, stage kind by stage kind, with the reference."""
    tensors = {config.input.name: np.asarray(x, dtype=np.int64)}
    cur = tensors[config.input.name]
    for stage in config.stages:
        if isinstance(stage, C.Pointwise):
            cur = requantize_stage(pointwise_ref(cur, stage.weights, stage.bias, -stage.input.zero_point,
                                                 stage.groups), stage)
        elif isinstance(stage, C.Depthwise):
            cur = requantize_stage(depthwise_ref(cur, stage.weights, stage.bias, -stage.input.zero_point,
                                                 stage.stride, stage.dilation, stage.padding), stage)
        elif isinstance(stage, C.Shuffle):
            cur = shuffle_ref(cur, stage.groups)
        elif isinstance(stage, C.Add):
            skip, inp, out = stage.skip, stage.input, stage.output
            params = arith.add_params(skip.scale, skip.zero_point, inp.scale, inp.zero_point,
                                      out.scale, out.zero_point, stage.activation, out.bits, stage.rounding)
            cur = arith.quantized_add(tensors[skip.name], cur, params)
        else:
            raise AssertionError(f"unexpected stage {stage!r}")
        tensors[stage.name] = cur
    return tensors


# -- random cases -------------------------------------------------------------------------------

def random_case(index: int) -> dict:
    """A legal random geometry (VALID needs the dilated kernel to fit the frame): even
    cases SAME, odd cases VALID; every 5th case is a 1-row or 1-column frame."""
    rng = np.random.default_rng(1000 + index)
    padding = PADDINGS[index % 2]
    while True:
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        if index % 10 == 0:
            h = 1
        elif index % 10 == 5:
            w = 1
        k = int(rng.choice(KERNELS))
        stride, dilation = int(rng.choice(STRIDES)), int(rng.choice(DILATIONS))
        footprint = (k - 1) * dilation + 1
        if padding == "same" or footprint <= min(h, w):
            break
    groups = int(rng.choice(GROUPS))
    bits = int(rng.choice([4, 8, 8, 12]))
    return dict(rng=rng, h=h, w=w, k=k, stride=stride, dilation=dilation, padding=padding,
                groups=groups, c=groups * int(rng.integers(1, 4)), c_out=groups * int(rng.integers(1, 4)),
                bits=bits, out_bits=int(rng.choice([4, 8, 16])))


CASES = [random_case(i) for i in range(N_RANDOM)]


def test_random_cases_cover_the_space():
    """The ~30 cases reach every kernel, stride, dilation, padding and group count,
    1-row and 1-column frames, and SAME cases whose padding is asymmetric."""
    assert {c["k"] for c in CASES} == set(KERNELS)
    assert {c["stride"] for c in CASES} == set(STRIDES)
    assert {c["dilation"] for c in CASES} == set(DILATIONS)
    assert {c["padding"] for c in CASES} == set(PADDINGS)
    assert {c["groups"] for c in CASES} == set(GROUPS)
    assert any(c["h"] == 1 for c in CASES) and any(c["w"] == 1 for c in CASES)
    assert any(c["padding"] == "same" and c["k"] > 1 and c["h"] > 1 for c in CASES)
    pads = [tf_padding(n, c["k"], c["stride"], c["dilation"], c["padding"]) for c in CASES for n in (c["h"], c["w"])]
    assert any(top != bottom for top, bottom in pads)


def test_tf_padding_reference_against_worked_examples():
    """The reference arithmetic itself, on cases worked out by hand from TF's rules."""
    assert (tf_output_size(16, 3, 2, 1, "same"), tf_padding(16, 3, 2, 1, "same")) == (8, (0, 1))
    assert (tf_output_size(5, 3, 1, 1, "same"), tf_padding(5, 3, 1, 1, "same")) == (5, (1, 1))
    assert (tf_output_size(7, 3, 1, 2, "valid"), tf_padding(7, 3, 1, 2, "valid")) == (3, (0, 0))
    assert (tf_output_size(10, 1, 4, 1, "same"), tf_padding(10, 1, 4, 1, "same")) == (3, (0, 0))
    assert (tf_output_size(1, 7, 1, 4, "same"), tf_padding(1, 7, 1, 4, "same")) == (1, (12, 12))


def _frame(rng, shape, bits):
    lo, hi = arith.int_range(bits)
    return rng.integers(lo, hi, size=shape, endpoint=True)


@pytest.mark.parametrize("index", range(N_RANDOM))
def test_depthwise_accumulate_random(index):
    c = dict(CASES[index])
    rng = np.random.default_rng(2000 + index)
    x = _frame(rng, (c["h"], c["w"], c["c"]), c["bits"])
    zp = int(rng.integers(*arith.int_range(c["bits"]), endpoint=True))
    weights = rng.integers(-128, 128, size=(c["k"], c["k"], c["c"]))
    bias = rng.integers(-(1 << 20), 1 << 20, size=c["c"])
    geom = (c["k"], c["stride"], c["dilation"], c["padding"])
    pad = (tf_padding(c["h"], *geom), tf_padding(c["w"], *geom))
    out_size = (tf_output_size(c["h"], *geom), tf_output_size(c["w"], *geom))
    got = golden.depthwise_accumulate(x, weights, bias, -zp, c["stride"], c["dilation"], pad, out_size)
    want = depthwise_ref(x, weights, bias, -zp, c["stride"], c["dilation"], c["padding"])
    assert got.dtype == np.int64 and got.shape == (*out_size, c["c"])
    np.testing.assert_array_equal(got, want)
    # Skipped taps equal padding with the input zero point: pad x with zp, run VALID.
    xz = np.pad(x, (pad[0], pad[1], (0, 0)), constant_values=zp)
    np.testing.assert_array_equal(
        golden.depthwise_accumulate(xz, weights, bias, -zp, c["stride"], c["dilation"], out_size=out_size),
        want)
    valid_on_padded = depthwise_ref(xz, weights, bias, -zp, c["stride"], c["dilation"], "valid")
    np.testing.assert_array_equal(valid_on_padded[:out_size[0], :out_size[1]], want)


@pytest.mark.parametrize("index", range(N_RANDOM))
def test_pointwise_accumulate_random(index):
    c = dict(CASES[index])
    rng = np.random.default_rng(3000 + index)
    x = _frame(rng, (c["h"], c["w"], c["c"]), c["bits"])
    zp = int(rng.integers(*arith.int_range(c["bits"]), endpoint=True))
    weights = rng.integers(-128, 128, size=(c["c_out"], c["c"] // c["groups"]))
    bias = rng.integers(-(1 << 20), 1 << 20, size=c["c_out"])
    got = golden.pointwise_accumulate(x, weights, bias, -zp, c["groups"])
    assert got.dtype == np.int64 and got.shape == (c["h"], c["w"], c["c_out"])
    np.testing.assert_array_equal(got, pointwise_ref(x, weights, bias, -zp, c["groups"]))


def _random_requant(rng, n, taps, in_span, out_span):
    """Per-channel (multiplier, shift) of reals that spread the accumulator of ``taps``
    products (int8 weights, inputs over ``in_span``) over about the output range."""
    acc_std = math.sqrt(taps) * 73 * in_span / 3.5
    reals = 2.0 ** rng.uniform(-1.5, 1.5, size=n) * out_span / (6 * acc_std)
    pairs = [arith.quantize_multiplier(float(r)) for r in reals]
    return (np.array([m for m, _ in pairs], dtype=np.int32), np.array([s for _, s in pairs], dtype=np.int32))


def build_dw_pw(c, rng, rounding="double"):
    """Depthwise -> grouped pointwise engine from a random case, built directly."""
    bits, out_bits = c["bits"], c["out_bits"]
    lo, hi = arith.int_range(bits)
    inp = C.TensorSpec("input", c["h"], c["w"], c["c"], bits, int(rng.integers(lo, hi, endpoint=True)), 0.05)
    geom = (c["k"], c["stride"], c["dilation"], c["padding"])
    ho, wo = tf_output_size(c["h"], *geom), tf_output_size(c["w"], *geom)
    acts = [str(a) for a in rng.choice(C.ACTIVATIONS, size=2)]
    olo, ohi = arith.int_range(out_bits)
    dw_out = C.TensorSpec("dw", ho, wo, c["c"], out_bits, int(rng.integers(olo, ohi // 2, endpoint=True)),
                          float(np.float32(rng.uniform(0.01, 0.2))))
    m, s = _random_requant(rng, c["c"], c["k"] ** 2, hi - lo, ohi - olo)
    dw = C.Depthwise(name="dw", input=inp, output=dw_out, activation=acts[0],
                     weights=rng.integers(-127, 128, size=(c["k"], c["k"], c["c"])).astype(np.int8),
                     bias=rng.integers(-5000, 5000, size=c["c"]).astype(np.int32), multiplier=m, shift=s,
                     kernel=c["k"], stride=c["stride"], dilation=c["dilation"], padding=c["padding"],
                     rounding=rounding)
    pw_out = C.TensorSpec("pw", ho, wo, c["c_out"], 8, int(rng.integers(-128, 64)), 0.1)
    m, s = _random_requant(rng, c["c_out"], c["c"] // c["groups"], ohi - olo, 255)
    pw = C.Pointwise(name="pw", input=dw_out, output=pw_out, activation=acts[1], groups=c["groups"],
                     weights=rng.integers(-127, 128, size=(c["c_out"], c["c"] // c["groups"])).astype(np.int8),
                     bias=rng.integers(-5000, 5000, size=c["c_out"]).astype(np.int32), multiplier=m, shift=s,
                     rounding=rounding)
    return C.EngineConfig(name="rand", input=inp, stages=(dw, pw))


@pytest.mark.parametrize("index", range(N_RANDOM))
def test_run_random_engine(index):
    c = dict(CASES[index])
    rng = np.random.default_rng(4000 + index)
    config = build_dw_pw(c, rng, rounding=("double", "single")[index % 2])
    dw = config.stages[0]
    geom = (c["k"], c["stride"], c["dilation"], c["padding"])
    # the config's geometry is TensorFlow's
    assert dw.pad_top_bottom == tf_padding(c["h"], *geom) and dw.pad_left_right == tf_padding(c["w"], *geom)
    assert (dw.out_height, dw.out_width) == (tf_output_size(c["h"], *geom), tf_output_size(c["w"], *geom))
    x = golden.random_input(config.input, rng)
    got = golden.run(config, x, keep=True)
    want = compose(config, x)
    assert list(got) == list(want) == ["input", "dw", "pw"]
    for name in want:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(golden.run(config, x), want["pw"])
    for stage in config.stages:
        lo, hi = stage.activation_range
        assert got[stage.name].min() >= lo and got[stage.name].max() <= hi


# -- channel shuffle ----------------------------------------------------------------------------

@pytest.mark.parametrize("c,g", [(16, 4), (12, 3), (12, 4), (8, 2), (6, 6), (6, 1), (24, 8)])
def test_channel_shuffle(c, g):
    rng = np.random.default_rng(5000 + c * 10 + g)
    x = rng.integers(-128, 128, size=(3, 5, c))
    got = golden.channel_shuffle(x, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, shuffle_ref(x, g))
    # a permutation of channels, and g then C/g undoes it
    np.testing.assert_array_equal(np.sort(got, axis=-1), np.sort(x, axis=-1))
    np.testing.assert_array_equal(golden.channel_shuffle(got, c // g), x)
    spec = C.TensorSpec("input", 3, 5, c)
    stage = C.Shuffle(name="sh", input=spec, output=spec.renamed("sh"), groups=g)
    np.testing.assert_array_equal(x[..., stage.permutation], shuffle_ref(x, g))
    np.testing.assert_array_equal(golden.run_stage(stage, x), shuffle_ref(x, g))
    if 1 < g < c:
        assert not np.array_equal(got, x)


# -- composition: the example engines ------------------------------------------------------------

def test_examples_present():
    assert {p.stem for p in EXAMPLES} >= {"dws_layer", "mobilenetv2_block", "shufflenet_unit"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_composition(path):
    config = load_config(path)
    rng = np.random.default_rng(6000 + len(path.stem))
    for _ in range(2):
        x = golden.random_input(config.input, rng)
        got = golden.run(config, x, keep=True)
        want = compose(config, x)
        assert list(got) == list(want) == list(config.tensors)
        for name in want:
            assert got[name].dtype == np.int64
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{path.stem}: {name}")
        np.testing.assert_array_equal(golden.run(config, x), want[config.stages[-1].name])
        for stage in config.stages:
            out = got[stage.name]
            assert out.shape == stage.output.shape
            lo, hi = stage.activation_range if hasattr(stage, "activation_range") else \
                (stage.output.qmin, stage.output.qmax)
            assert lo >= stage.output.qmin and hi <= stage.output.qmax
            assert out.min() >= lo and out.max() <= hi
            assert len(np.unique(out)) > 4, f"{stage.name}: degenerate output, comparison is weak"


def test_example_kinds():
    """The named blocks are what the composition test composed."""
    kinds = {p.stem: [s.kind for s in load_config(p).stages] for p in EXAMPLES}
    assert kinds["dws_layer"] == ["depthwise", "pointwise"]
    assert kinds["mobilenetv2_block"] == ["pointwise", "depthwise", "pointwise", "add"]
    assert kinds["shufflenet_unit"] == ["pointwise", "shuffle", "depthwise", "pointwise", "add"]


# -- input validation ---------------------------------------------------------------------------

def test_run_rejects_bad_inputs():
    config = load_config(next(p for p in EXAMPLES if p.stem == "dws_layer"))
    spec = config.input
    rng = np.random.default_rng(7000)
    x = golden.random_input(spec, rng)
    assert x.shape == spec.shape and x.dtype == np.int64
    golden.run(config, x)                                   # accepted as is
    for bad in (x[:-1], x[:, :-1], x[..., :-1], x.reshape(spec.height // 2, spec.width * 2, -1), x[None], x[..., 0]):
        with pytest.raises(ValueError):
            golden.run(config, bad)
    for value in (spec.qmax + 1, spec.qmin - 1, 1 << 40):
        y = x.copy()
        y[3, 4, 5] = value
        with pytest.raises(ValueError):
            golden.run(config, y)
    edge = x.copy()
    edge[0, 0, 0], edge[1, 1, 1] = spec.qmin, spec.qmax     # the range itself is fine
    golden.run(config, edge)
    with pytest.raises(TypeError):
        golden.run(config, x.astype(np.float64))


def test_random_input_covers_range():
    spec = C.TensorSpec("input", 32, 32, 8, bits=4)
    x = golden.random_input(spec, np.random.default_rng(7001))
    assert x.dtype == np.int64 and x.shape == spec.shape
    assert set(np.unique(x)) == set(range(spec.qmin, spec.qmax + 1))
