"""convgen.config: every invalid value is refused when the config is built, with a
one-line ValueError/TypeError naming the parameter and the value; valid edge cases
are accepted and the derived properties are right.

Configs are built two ways: through ``convgen.loader.config_from_dict`` from a small
document (``doc()`` plus ``tweak()``), and directly from the frozen dataclasses
(``spec()``, ``dw()``, ``pw()``, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from contextlib import contextmanager

import numpy as np
import pytest

from convgen import config as C
from convgen.loader import config_from_dict
from convgen.sim import arith, golden

DROP = object()   # tweak(): delete the key


# -- document builders (config_from_dict) -------------------------------------------------------

def doc(**top) -> dict:
    """A valid document: input 8x8x8, a 3x3 depthwise 'dw', a 1x1 pointwise 'pw' 8 -> 8."""
    d = {
        "name": "t",
        "random": {"seed": 7},
        "input": {"height": 8, "width": 8, "channels": 8},
        "stage": [
            {"name": "dw", "kind": "depthwise"},
            {"name": "pw", "kind": "pointwise", "out_channels": 8},
        ],
    }
    for key, value in top.items():
        if value is DROP:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def tweak(d: dict, section: str, **changes) -> dict:
    """Change keys of ``section``: 'input', 'random' or a stage's name (DROP deletes a key)."""
    d = copy.deepcopy(d)
    if section in ("input", "random"):
        table = d.setdefault(section, {})
    else:
        (table,) = [s for s in d["stage"] if s.get("name") == section]
    for key, value in changes.items():
        if value is DROP:
            table.pop(key, None)
        else:
            table[key] = value
    return d


def append(d: dict, **stage) -> dict:
    d = copy.deepcopy(d)
    d["stage"].append(stage)
    return d


def build(d: dict) -> C.EngineConfig:
    return config_from_dict(copy.deepcopy(d))


@contextmanager
def refused(exc, pattern):
    """``pytest.raises(exc, match=pattern)`` that also requires a one-line message."""
    with pytest.raises(exc, match=pattern) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert type(info.value) in (ValueError, TypeError), \
        f"expected exactly ValueError/TypeError, got {type(info.value).__name__}: {message}"


# -- object builders (direct construction) ------------------------------------------------------

def spec(name="input", h=8, w=8, c=8, bits=8, zp=0, scale=0.05) -> C.TensorSpec:
    return C.TensorSpec(name, h, w, c, bits, zp, scale)


def _arrays(weight_shape, c_out, weight_bits=8, seed=0, wmax=3):
    rng = np.random.default_rng(seed)
    return dict(
        weights=rng.integers(-wmax, wmax, size=weight_shape, endpoint=True)
        .astype(np.int8 if weight_bits <= 8 else np.int16),
        bias=rng.integers(-50, 50, size=c_out).astype(np.int32),
        multiplier=np.full(c_out, 1 << 30, dtype=np.int32),
        shift=np.full(c_out, -8, dtype=np.int32),
    )


def dw(name="dw", inp=None, out=None, kernel=3, stride=1, dilation=1, padding="same",
       lanes=1, weight_bits=8, **kw) -> C.Depthwise:
    inp = inp if inp is not None else spec()
    k = int(kernel) if C._is_int(kernel) and 1 <= kernel <= 7 else 3
    if out is None:
        oh, ow = inp.height, inp.width
        if C._is_int(stride) and stride >= 1 and padding in ("same", "valid"):
            d = int(dilation) if C._is_int(dilation) and dilation >= 1 else 1
            oh = max(1, C.conv_output_size(inp.height, k, stride, d, padding))
            ow = max(1, C.conv_output_size(inp.width, k, stride, d, padding))
        out = inp.renamed(name, height=oh, width=ow, scale=0.1)
    arrays = _arrays((k, k, inp.channels), inp.channels, weight_bits)
    arrays.update(kw.pop("arrays", {}))
    return C.Depthwise(name=name, input=inp, output=out, kernel=kernel, stride=stride,
                       dilation=dilation, padding=padding, lanes=lanes, weight_bits=weight_bits,
                       **arrays, **kw)


def pw(name="pw", inp=None, c_out=8, groups=1, pe=1, simd=1, weight_bits=8, out=None, **kw) -> C.Pointwise:
    inp = inp if inp is not None else spec()
    if out is None:
        out = inp.renamed(name, channels=c_out, scale=0.1)
    g = int(groups) if C._is_int(groups) and groups >= 1 and inp.channels % groups == 0 else 1
    arrays = _arrays((c_out, inp.channels // g), c_out, weight_bits)
    arrays.update(kw.pop("arrays", {}))
    return C.Pointwise(name=name, input=inp, output=out, groups=groups, pe=pe, simd=simd,
                       weight_bits=weight_bits, **arrays, **kw)


def add(name="add", inp=None, skip=None, out=None, **kw) -> C.Add:
    inp = inp if inp is not None else spec("pw", scale=0.1)
    skip = skip if skip is not None else spec()
    out = out if out is not None else inp.renamed(name, scale=0.2)
    return C.Add(name=name, input=inp, skip=skip, output=out, **kw)


# ===============================================================================================
# Refusals through config_from_dict
# ===============================================================================================

def _rows(*rows):
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


DW = "stage 'dw' \\(depthwise\\): "
PW = "stage 'pw' \\(pointwise\\): "

DEPTHWISE_REFUSALS = _rows(
    # kernel: odd, 1..7, integer
    ("kernel-even-4", dict(kernel=4), ValueError, DW + r"kernel must be an odd integer from 1 to 7, not 4$"),
    ("kernel-even-2", dict(kernel=2), ValueError, r"kernel must be an odd integer from 1 to 7, not 2$"),
    ("kernel-even-6", dict(kernel=6), ValueError, r"kernel must be an odd integer from 1 to 7, not 6$"),
    ("kernel-0", dict(kernel=0), ValueError, r"kernel must be an odd integer from 1 to 7, not 0$"),
    ("kernel-neg", dict(kernel=-3), ValueError, r"kernel must be an odd integer from 1 to 7, not -3$"),
    ("kernel-9", dict(kernel=9), ValueError, r"kernel must be an odd integer from 1 to 7, not 9$"),
    ("kernel-8", dict(kernel=8), ValueError, r"kernel must be an odd integer from 1 to 7, not 8$"),
    ("kernel-str", dict(kernel="3"), TypeError, DW + r"kernel must be an integer, not '3'$"),
    ("kernel-float", dict(kernel=3.0), TypeError, r"kernel must be an integer, not 3\.0$"),
    ("kernel-bool", dict(kernel=True), TypeError, r"kernel must be an integer, not True$"),
    ("kernel-list", dict(kernel=[3]), TypeError, r"kernel must be an integer, not \[3\]$"),
    # stride, dilation: 1..4
    ("stride-0", dict(stride=0), ValueError, DW + r"stride must be an integer from 1 to 4, not 0$"),
    ("stride-neg", dict(stride=-1), ValueError, r"stride must be an integer from 1 to 4, not -1$"),
    ("stride-5", dict(stride=5), ValueError, r"stride must be an integer from 1 to 4, not 5$"),
    ("stride-float", dict(stride=2.0), TypeError, r"stride must be an integer, not 2\.0$"),
    ("stride-str", dict(stride="2"), TypeError, r"stride must be an integer, not '2'$"),
    ("dilation-0", dict(dilation=0), ValueError, DW + r"dilation must be an integer from 1 to 4, not 0$"),
    ("dilation-5", dict(dilation=5), ValueError, r"dilation must be an integer from 1 to 4, not 5$"),
    ("dilation-bool", dict(dilation=False), TypeError, r"dilation must be an integer, not False$"),
    # padding, activation, rounding: choices
    ("padding-unknown", dict(padding="full"), ValueError, DW + r"padding must be one of same, valid, not 'full'$"),
    ("padding-case", dict(padding="SAME"), ValueError, r"padding must be one of same, valid, not 'SAME'$"),
    ("padding-int", dict(padding=1), TypeError, r"padding must be a string.*not 1$"),
    ("activation-unknown", dict(activation="sigmoid"), ValueError,
     DW + r"activation must be one of none, relu, relu6, not 'sigmoid'$"),
    ("activation-bool", dict(activation=True), TypeError, r"activation must be a string.*not True$"),
    ("rounding-unknown", dict(rounding="up"), ValueError, DW + r"rounding must be one of double, single, not 'up'$"),
    ("multipliers-unknown", dict(multipliers="lut"), ValueError, DW + r"multipliers must be one of dsp, logic, not 'lut'$"),
    ("multipliers-type", dict(multipliers=1), TypeError, DW + r"multipliers must be a string, one of dsp, logic; not 1$"),
    # footprint larger than the padded image ('valid' pads nothing)
    ("footprint-height", dict(padding="valid", kernel=7, dilation=2), ValueError,
     DW + r"kernel footprint 13 \(\(kernel - 1\) \* dilation \+ 1\) is larger than the padded input height 8$"),
    ("footprint-k9-d4", dict(padding="valid", kernel=3, dilation=4), ValueError,
     r"kernel footprint 9 .*larger than the padded input height 8$"),
    # lanes
    ("lanes-not-divisor", dict(lanes=3), ValueError, DW + r"lanes must divide the channels 8, not 3$"),
    ("lanes-too-many", dict(lanes=16), ValueError, r"lanes must divide the channels 8, not 16$"),
    ("lanes-0", dict(lanes=0), ValueError, r"lanes must be an integer >= 1, not 0$"),
    ("lanes-str", dict(lanes="1"), TypeError, r"lanes must be an integer, not '1'$"),
    # widths
    ("weight-bits-1", dict(weight_bits=1), ValueError, DW + r"weight_bits must be an integer from 2 to 16, not 1$"),
    ("weight-bits-17", dict(weight_bits=17), ValueError, r"weight_bits must be an integer from 2 to 16, not 17$"),
    ("weight-bits-float", dict(weight_bits=8.0), TypeError, r"weight_bits must be an integer, not 8\.0$"),
    ("bits-1", dict(bits=1), ValueError, DW + r"bits must be an integer from 2 to 16, not 1$"),
    ("bits-17", dict(bits=17), ValueError, r"bits must be an integer from 2 to 16, not 17$"),
    ("bits-0", dict(bits=0), ValueError, r"bits must be an integer from 2 to 16, not 0$"),
    # output quantization
    ("zero-point-high", dict(zero_point=128), ValueError,
     r"tensor 'dw': zero_point must be an integer from -128 to 127, not 128$"),
    ("zero-point-low", dict(zero_point=-129), ValueError, r"zero_point must be an integer from -128 to 127, not -129$"),
    ("zero-point-4bit", dict(bits=4, zero_point=8), ValueError, r"zero_point must be an integer from -8 to 7, not 8$"),
    ("zero-point-float", dict(zero_point=1.5), TypeError, r"tensor 'dw': zero_point must be an integer, not 1\.5$"),
    ("scale-0", dict(scale=0.0), ValueError, r"tensor 'dw': scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 0\.0$"),
    ("scale-neg", dict(scale=-0.5), ValueError, r"scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not -0\.5$"),
    ("scale-inf", dict(scale=float("inf")), ValueError, r"scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not inf$"),
    ("scale-nan", dict(scale=float("nan")), ValueError, r"scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not nan$"),
    ("scale-float32-underflow", dict(scale=1e-50), ValueError, r"scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 1e-50$"),
    ("scale-str", dict(scale="0.5"), TypeError, r"tensor 'dw': scale must be a number, not '0\.5'$"),
    ("scale-bool", dict(scale=True), TypeError, r"scale must be a number, not True$"),
    # keys
    ("unknown-key", dict(kernal=3), ValueError, r"stage 'dw' \(depthwise\): unknown key 'kernal'"),
    ("key-of-pointwise", dict(out_channels=8), ValueError, r"stage 'dw' \(depthwise\): unknown key 'out_channels'"),
)


@pytest.mark.parametrize("changes, exc, pattern", DEPTHWISE_REFUSALS)
def test_depthwise_refusals(changes, exc, pattern):
    with refused(exc, pattern):
        build(tweak(doc(), "dw", **changes))


def test_scale_too_large_for_float32_is_a_value_error():
    """BUG: a finite double scale that overflows float32 (1e39) is refused, but
    ``check_scale`` converts it with ``np.float32(value)`` first, which emits a
    RuntimeWarning ("overflow encountered in cast"); under ``-W error`` (this
    project's pytest setting, or any strict caller) the refusal escapes as a
    RuntimeWarning instead of the ValueError naming 'scale'."""
    with refused(ValueError, r"tensor 'dw': scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 1e\+39$"):
        build(tweak(doc(), "dw", scale=1e39))
    with refused(ValueError, r"tensor 'x': scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 1e\+39$"):
        C.TensorSpec("x", 1, 1, 1, scale=1e39)


POINTWISE_REFUSALS = _rows(
    ("out-channels-missing", dict(out_channels=DROP), ValueError, PW + r"missing key 'out_channels'$"),
    ("out-channels-0", dict(out_channels=0), ValueError, PW + r"out_channels must be an integer >= 1, not 0$"),
    ("out-channels-str", dict(out_channels="8"), TypeError, r"out_channels must be an integer, not '8'$"),
    ("groups-0", dict(groups=0), ValueError, PW + r"groups must be an integer >= 1, not 0$"),
    ("groups-float", dict(groups=2.0), TypeError, r"groups must be an integer, not 2\.0$"),
    ("groups-vs-in", dict(groups=3, out_channels=6), ValueError,
     PW + r"groups must divide the input channels 8, not 3$"),
    ("groups-vs-out", dict(groups=4, out_channels=6), ValueError,
     PW + r"groups must divide the output channels 6, not 4$"),
    ("simd-0", dict(simd=0), ValueError, r"simd must be an integer >= 1, not 0$"),
    ("simd-not-divisor", dict(simd=3), ValueError, PW + r"simd must divide the input channels per group 8, not 3$"),
    ("simd-too-big", dict(simd=16), ValueError, r"simd must divide the input channels per group 8, not 16$"),
    ("simd-vs-group", dict(groups=2, simd=8), ValueError, r"simd must divide the input channels per group 4, not 8$"),
    ("pe-0", dict(pe=0), ValueError, r"pe must be an integer >= 1, not 0$"),
    ("pe-bool", dict(pe=True), TypeError, r"pe must be an integer, not True$"),
    ("pe-not-divisor", dict(pe=3), ValueError, PW + r"pe must divide the output channels per group 8 .*not 3$"),
    ("pe-above-c-out", dict(pe=16), ValueError, r"pe must divide the output channels per group 8 .*not 16$"),
    # whole groups side by side need simd = C_in / groups ...
    ("pe-groups-partial-simd", dict(groups=2, pe=8, simd=2), ValueError,
     r"pe must divide the output channels per group 4 \(or be a multiple of it dividing 8, with simd = 4\), not 8$"),
    # ... and pe must still divide C_out
    ("pe-groups-not-dividing", dict(groups=4, out_channels=8, pe=6, simd=2), ValueError,
     r"pe must divide the output channels per group 2 .*not 6$"),
    # groups 2, 8 -> 12: 6 output channels per group; pe 4 neither divides 6 nor is a multiple of it
    ("pe-not-multiple-of-group", dict(groups=2, out_channels=12, pe=4, simd=4), ValueError,
     r"pe must divide the output channels per group 6 \(or be a multiple of it dividing 12, with simd = 4\), not 4$"),
    ("weight-bits-17", dict(weight_bits=17), ValueError, PW + r"weight_bits must be an integer from 2 to 16, not 17$"),
    ("bits-1", dict(bits=1), ValueError, PW + r"bits must be an integer from 2 to 16, not 1$"),
    ("activation", dict(activation="relu7"), ValueError, PW + r"activation must be one of none, relu, relu6, not 'relu7'$"),
    ("rounding", dict(rounding="floor"), ValueError, PW + r"rounding must be one of double, single, not 'floor'$"),
    ("multipliers", dict(multipliers="DSP"), ValueError, PW + r"multipliers must be one of dsp, logic, not 'DSP'$"),
    ("unknown-key", dict(lanes=1), ValueError, r"stage 'pw' \(pointwise\): unknown key 'lanes'"),
    ("unknown-key-kernel", dict(kernel=1), ValueError, r"stage 'pw' \(pointwise\): unknown key 'kernel'"),
)


@pytest.mark.parametrize("changes, exc, pattern", POINTWISE_REFUSALS)
def test_pointwise_refusals(changes, exc, pattern):
    with refused(exc, pattern):
        build(tweak(doc(), "pw", **changes))


def test_seeded_generator_handles_every_accepted_scale():
    """BUG: a denormal float32 scale (1.5e-45) passes check_scale, but the seeded
    generator then overflows float32 computing the next stage's weight scale
    (loader._Params.conv: ``(effective * out.scale / inp.scale).astype(np.float32)``):
    a RuntimeWarning, and without -W error a ValueError "real multiplier must be a
    finite non-negative number, not inf" that names no stage or parameter.
    Either outcome below is acceptable; an unnamed crash is not."""
    d = tweak(doc(), "dw", scale=1.5e-45)
    try:
        config = build(d)
    except ValueError as error:
        assert re.search(r"stage 'pw'|tensor 'dw'|scale", str(error)), str(error)
    else:
        assert config.stage("dw").output.scale == 1.5e-45


def test_pointwise_more_groups_than_channels_is_refused_in_random_mode():
    """BUG: with no tensors file, groups larger than the input channels (8 channels,
    groups 16, 16 outputs) crashes the seeded generator with ZeroDivisionError
    (taps = C_in // groups = 0 in loader._Params.conv) before Pointwise can refuse it."""
    with refused(ValueError, PW + r"groups must divide the input channels 8, not 16$"):
        build(tweak(doc(), "pw", groups=16, out_channels=16))


INPUT_REFUSALS = _rows(
    ("height-missing", dict(height=DROP), ValueError, r"^\[input\]: missing key 'height'$"),
    ("width-missing", dict(width=DROP), ValueError, r"^\[input\]: missing key 'width'$"),
    ("channels-missing", dict(channels=DROP), ValueError, r"^\[input\]: missing key 'channels'$"),
    ("height-0", dict(height=0), ValueError, r"^tensor 'input': height must be an integer from 1 to 65536, not 0$"),
    ("width-neg", dict(width=-8), ValueError, r"tensor 'input': width must be an integer from 1 to 65536, not -8$"),
    ("channels-huge", dict(channels=65537), ValueError, r"channels must be an integer from 1 to 65536, not 65537$"),
    ("height-str", dict(height="8"), TypeError, r"tensor 'input': height must be an integer, not '8'$"),
    ("width-float", dict(width=8.0), TypeError, r"tensor 'input': width must be an integer, not 8\.0$"),
    ("channels-bool", dict(channels=True), TypeError, r"tensor 'input': channels must be an integer, not True$"),
    ("bits-1", dict(bits=1), ValueError, r"^\[input\] bits must be an integer from 2 to 16, not 1$"),
    ("bits-17", dict(bits=17), ValueError, r"^\[input\] bits must be an integer from 2 to 16, not 17$"),
    ("bits-str", dict(bits="8"), TypeError, r"^\[input\] bits must be an integer, not '8'$"),
    ("zero-point-range", dict(zero_point=-129), ValueError,
     r"^tensor 'input': zero_point must be an integer from -128 to 127, not -129$"),
    ("zero-point-2bit", dict(bits=2, zero_point=2), ValueError, r"zero_point must be an integer from -2 to 1, not 2$"),
    ("zero-point-16bit", dict(bits=16, zero_point=32768), ValueError,
     r"zero_point must be an integer from -32768 to 32767, not 32768$"),
    ("scale-0", dict(scale=0), ValueError, r"tensor 'input': scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 0\.0$"),
    ("scale-neg-inf", dict(scale=float("-inf")), ValueError, r"scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not -inf$"),
    ("lanes-not-divisor", dict(lanes=3), ValueError, r"^input lanes must divide the input channels 8, not 3$"),
    ("lanes-0", dict(lanes=0), ValueError, r"^input lanes must be an integer >= 1, not 0$"),
    ("lanes-float", dict(lanes=1.0), TypeError, r"^input lanes must be an integer, not 1\.0$"),
    ("unknown-key", dict(depth=8), ValueError, r"^\[input\]: unknown key 'depth'"),
)


@pytest.mark.parametrize("changes, exc, pattern", INPUT_REFUSALS)
def test_input_refusals(changes, exc, pattern):
    with refused(exc, pattern):
        build(tweak(doc(), "input", **changes))


DOC_REFUSALS = _rows(
    ("no-input", lambda: doc(input=DROP), ValueError, r"^config has no \[input\] table"),
    ("input-not-table", lambda: doc(input=3), TypeError, r"^\[input\] must be a table, not 3$"),
    ("no-stage-key", lambda: doc(stage=DROP), ValueError, r"^config has no \[\[stage\]\] tables"),
    ("no-stages", lambda: doc(stage=[]), ValueError, r"^config has no \[\[stage\]\] tables"),
    ("stage-not-array", lambda: doc(stage={"name": "dw", "kind": "depthwise"}), ValueError,
     r"^config has no \[\[stage\]\] tables"),
    ("stage-not-table", lambda: doc(stage=[3]), TypeError, r"^\[\[stage\]\] 0 must be a table, not 3$"),
    ("top-unknown-key", lambda: doc(stages=[]), ValueError, r"^config: unknown key 'stages'"),
    ("top-rounding", lambda: doc(rounding="floor"), ValueError, r"^rounding must be one of double, single, not 'floor'$"),
    ("top-rounding-type", lambda: doc(rounding=1), TypeError, r"^rounding must be a string.*not 1$"),
    ("name-not-identifier", lambda: doc(name="my engine"), ValueError,
     r"^name must be an identifier \(ASCII letters, digits, _; not starting with a digit\), not 'my engine'$"),
    ("tensors-not-str", lambda: doc(random=DROP, tensors=3), TypeError, r"^tensors must be a file name, not 3$"),
    ("random-unknown-key", lambda: doc(random={"sead": 1}), ValueError, r"^\[random\]: unknown key 'sead'"),
    ("random-not-table", lambda: doc(random=1), TypeError, r"^\[random\] must be a table, not 1$"),
    ("random-seed-neg", lambda: doc(random={"seed": -1}), ValueError, r"^\[random\] seed must be an integer >= 0, not -1$"),
    ("random-seed-str", lambda: doc(random={"seed": "1"}), TypeError, r"^\[random\] seed must be an integer, not '1'$"),
    ("random-scales", lambda: doc(random={"scales": "pow2"}), ValueError,
     r"^\[random\] scales must be one of float, power-of-two, not 'pow2'$"),
    # stage kinds and names
    ("kind-unknown", lambda: tweak(doc(), "dw", kind="conv"), ValueError,
     r"^\[\[stage\]\] 0: kind must be one of pointwise, depthwise, shuffle, add, not 'conv'$"),
    ("kind-missing", lambda: tweak(doc(), "pw", kind=DROP), ValueError,
     r"^\[\[stage\]\] 1: kind must be one of .*, not None$"),
    ("kind-int", lambda: tweak(doc(), "dw", kind=1), ValueError, r"^\[\[stage\]\] 0: kind must be one of .*, not 1$"),
    ("name-input", lambda: tweak(doc(), "dw", name="input"), ValueError,
     r"^\[\[stage\]\] 0: name must be an identifier other than 'input', not 'input'$"),
    ("name-not-identifier", lambda: tweak(doc(), "pw", name="p-w"), ValueError,
     r"^\[\[stage\]\] 1: name must be an identifier other than 'input', not 'p-w'$"),
    ("name-digit", lambda: tweak(doc(), "pw", name="1x1"), ValueError, r"name must be an identifier .*, not '1x1'$"),
    ("name-duplicate", lambda: tweak(doc(), "pw", name="dw"), ValueError,
     r"^stage 'dw' \(pointwise\): name 'dw' is already used by another tensor$"),
    ("name-duplicate-default", lambda: doc(stage=[{"kind": "depthwise", "name": "pointwise1"},
                                                   {"kind": "pointwise", "out_channels": 8}]),
     ValueError, r"name 'pointwise1' is already used by another tensor$"),
    # shuffle
    ("shuffle-groups", lambda: append(doc(), name="sh", kind="shuffle", groups=3), ValueError,
     r"^stage 'sh' \(shuffle\): groups must divide the channels 8, not 3$"),
    ("shuffle-groups-0", lambda: append(doc(), name="sh", kind="shuffle", groups=0), ValueError,
     r"^stage 'sh' \(shuffle\): groups must be an integer >= 1, not 0$"),
    ("shuffle-lanes", lambda: append(doc(), name="sh", kind="shuffle", groups=2, lanes=3), ValueError,
     r"^stage 'sh' \(shuffle\): lanes must divide the channels 8, not 3$"),
    ("shuffle-unknown-key", lambda: append(doc(), name="sh", kind="shuffle", bits=8), ValueError,
     r"^stage 'sh' \(shuffle\): unknown key 'bits'"),
    # add: skip
    ("add-skip-unknown", lambda: append(doc(), name="res", kind="add", skip="nope"), ValueError,
     r"^stage 'res' \(add\): skip must name an earlier tensor \(input, dw, pw\), not 'nope'$"),
    ("add-skip-missing", lambda: append(doc(), name="res", kind="add"), ValueError,
     r"^stage 'res' \(add\): skip must name an earlier tensor \(input, dw, pw\), not None$"),
    ("add-skip-itself", lambda: append(doc(), name="res", kind="add", skip="res"), ValueError,
     r"skip must name an earlier tensor \(input, dw, pw\), not 'res'$"),
    ("add-skip-later", lambda: doc(stage=[{"name": "dw", "kind": "depthwise"},
                                          {"name": "res", "kind": "add", "skip": "pw"},
                                          {"name": "pw", "kind": "pointwise", "out_channels": 8}]),
     ValueError, r"^stage 'res' \(add\): skip must name an earlier tensor \(input, dw\), not 'pw'$"),
    # add: shapes and quantization
    ("add-skip-shape", lambda: append(tweak(doc(), "pw", out_channels=16), name="res", kind="add", skip="input"),
     ValueError, r"^stage 'res' \(add\): skip tensor 'input' has shape \(8, 8, 8\), which does not match "
                 r"the main input's \(8, 8, 16\)$"),
    ("add-skip-shape-stride", lambda: append(tweak(doc(), "dw", stride=2), name="res", kind="add", skip="input"),
     ValueError, r"skip tensor 'input' has shape \(8, 8, 8\), which does not match the main input's \(4, 4, 8\)$"),
    ("add-skip-bits", lambda: append(tweak(doc(), "pw", bits=6), name="res", kind="add", skip="input"),
     ValueError, r"^stage 'res' \(add\): skip, main input and output must have equal bits, not 8, 6, 6$"),
    ("add-out-bits", lambda: append(doc(), name="res", kind="add", skip="input", bits=6),
     ValueError, r"^stage 'res' \(add\): skip, main input and output must have equal bits, not 8, 8, 6$"),
    ("add-12bit-zero-point", lambda: append(tweak(tweak(tweak(doc(), "input", bits=12, zero_point=3),
                                                        "dw", zero_point=0), "pw", zero_point=0),
                                            name="res", kind="add", skip="input", zero_point=0),
     ValueError, r"^stage 'res' \(add\): above 10 bits the add needs zero points of 0 .*'input'"),
    ("add-12bit-output-zero-point", lambda: append(tweak(tweak(tweak(doc(), "input", bits=12, zero_point=0),
                                                               "dw", zero_point=0), "pw", zero_point=0),
                                                   name="res", kind="add", skip="input", zero_point=-5),
     ValueError, r"above 10 bits the add needs zero points of 0 .*'res'"),
    ("add-output-scale-too-small", lambda: append(tweak(tweak(doc(), "input", scale=1.0), "pw", scale=1.0),
                                                  name="res", kind="add", skip="input", scale=1e-7),
     ValueError, r"^stage 'res' \(add\): quantization does not line up: output scale 1e-07 is too small "
                 r"for input scales 1 and 1"),
    ("add-output-scale-boundary", lambda: append(tweak(tweak(doc(), "input", scale=1.0), "pw", scale=0.5),
                                                 name="res", kind="add", skip="input", scale=2.0 ** -19),
     ValueError, r"quantization does not line up: output scale 1\.90735e-06 is too small"),
    ("add-lanes", lambda: append(doc(), name="res", kind="add", skip="input", lanes=5), ValueError,
     r"^stage 'res' \(add\): lanes must divide the channels 8, not 5$"),
    ("add-activation", lambda: append(doc(), name="res", kind="add", skip="input", activation="gelu"), ValueError,
     r"^stage 'res' \(add\): activation must be one of none, relu, relu6, not 'gelu'$"),
    ("add-unknown-key", lambda: append(doc(), name="res", kind="add", skip="input", pe=1), ValueError,
     r"^stage 'res' \(add\): unknown key 'pe'"),
    ("add-zero-point", lambda: append(doc(), name="res", kind="add", skip="input", zero_point=300), ValueError,
     r"^tensor 'res': zero_point must be an integer from -128 to 127, not 300$"),
)


@pytest.mark.parametrize("make, exc, pattern", DOC_REFUSALS)
def test_document_refusals(make, exc, pattern):
    with refused(exc, pattern):
        build(make())


@pytest.mark.parametrize("section, key", [("dw", "kind"), ("new-add", "skip")])
def test_unhashable_kind_or_skip_is_refused_naming_it(section, key):
    """BUG: a list where a string is expected for a stage's ``kind`` or an add's ``skip``
    (``kind = ["depthwise"]``) escapes as a bare ``TypeError: unhashable type: 'list'``
    from the dict lookup, naming neither the parameter nor the value."""
    if section == "dw":
        d = tweak(doc(), "dw", kind=["depthwise"])
    else:
        d = append(doc(), name="res", kind="add", skip=["input"])
    with refused((TypeError, ValueError), rf"{key} .*\['(depthwise|input)'\]"):
        build(d)


# ===============================================================================================
# Refusals of directly constructed objects
# ===============================================================================================

@pytest.mark.parametrize("kwargs, exc, pattern", _rows(
    ("name-space", dict(name="a b"), ValueError, r"tensor name must be an identifier .*, not 'a b'$"),
    ("name-empty", dict(name=""), ValueError, r"tensor name must be an identifier .*, not ''$"),
    ("height-0", dict(height=0), ValueError, r"^tensor 'x': height must be an integer from 1 to 65536, not 0$"),
    ("width-65537", dict(width=65537), ValueError, r"^tensor 'x': width must be an integer from 1 to 65536, not 65537$"),
    ("channels-float", dict(channels=8.0), TypeError, r"^tensor 'x': channels must be an integer, not 8\.0$"),
    ("channels-npfloat", dict(channels=np.float64(8)), TypeError, r"channels must be an integer, not "),
    ("height-npbool", dict(height=np.bool_(True)), TypeError, r"height must be an integer, not "),
    ("bits-1", dict(bits=1), ValueError, r"^tensor 'x': bits must be an integer from 2 to 16, not 1$"),
    ("bits-17", dict(bits=17), ValueError, r"^tensor 'x': bits must be an integer from 2 to 16, not 17$"),
    ("zero-point-2bit", dict(bits=2, zero_point=-3), ValueError, r"zero_point must be an integer from -2 to 1, not -3$"),
    ("zero-point-str", dict(zero_point="0"), TypeError, r"^tensor 'x': zero_point must be an integer, not '0'$"),
    ("scale-0", dict(scale=0), ValueError, r"^tensor 'x': scale must be a positive normal float32 number \(1\.18e-38 to 3\.4e\+38\), not 0\.0$"),
    ("scale-none", dict(scale=None), TypeError, r"^tensor 'x': scale must be a number, not None$"),
))
def test_tensor_spec_refusals(kwargs, exc, pattern):
    args = dict(name="x", height=4, width=4, channels=4)
    args.update(kwargs)
    with refused(exc, pattern):
        C.TensorSpec(**args)


def test_tensor_spec_accepts_numpy_integers_and_normalises_them():
    t = C.TensorSpec("x", np.int64(4), np.int32(5), np.uint8(6), np.int16(8), np.int8(-3), np.float32(0.5))
    assert t.shape == (4, 5, 6) and t.bits == 8 and t.zero_point == -3 and t.scale == 0.5
    assert all(type(v) is int for v in (t.height, t.width, t.channels, t.bits, t.zero_point))
    assert type(t.scale) is float


D = "stage 'dw' \\(depthwise\\): "
P = "stage 'pw' \\(pointwise\\): "
W8 = np.zeros((3, 3, 8), dtype=np.int8)
ONES = np.ones(8, dtype=np.int32)
M30 = np.full(8, 1 << 30, dtype=np.int32)


ARRAY_REFUSALS = _rows(
    # weights: numpy array, dtype, shape, range
    ("weights-list", dw, dict(weights=W8.tolist()), TypeError, D + r"weights must be a numpy array, not list$"),
    ("weights-shape", dw, dict(weights=np.zeros((3, 3, 4), np.int8)), ValueError,
     D + r"weights must have shape \(3, 3, 8\), not \(3, 3, 4\)$"),
    ("weights-shape-kernel", dw, dict(weights=np.zeros((5, 5, 8), np.int8)), ValueError,
     r"weights must have shape \(3, 3, 8\), not \(5, 5, 8\)$"),
    ("weights-shape-1hwc", dw, dict(weights=np.zeros((1, 3, 3, 8), np.int8)), ValueError,
     r"weights must have shape \(3, 3, 8\), not \(1, 3, 3, 8\)$"),
    ("weights-float", dw, dict(weights=W8.astype(np.float32)), TypeError, r"weights must hold integers, not float32$"),
    ("weights-above-4bit", dw, dict(weight_bits=4, weights=np.full((3, 3, 8), 8, np.int8)), ValueError,
     D + r"weights must hold values from -8 to 7, not 8$"),
    ("weights-below-4bit", dw, dict(weight_bits=4, weights=np.full((3, 3, 8), -9, np.int8)), ValueError,
     r"weights must hold values from -8 to 7, not -9$"),
    ("weights-above-2bit", dw, dict(weight_bits=2, weights=np.full((3, 3, 8), 2, np.int8)), ValueError,
     r"weights must hold values from -2 to 1, not 2$"),
    ("weights-above-12bit", dw, dict(weight_bits=12, weights=np.full((3, 3, 8), 2048, np.int16)), ValueError,
     r"weights must hold values from -2048 to 2047, not 2048$"),
    ("pw-weights-transposed", pw, dict(c_out=16, arrays=dict(weights=np.zeros((8, 16), np.int8))), ValueError,
     P + r"weights must have shape \(16, 8\), not \(8, 16\)$"),
    ("pw-weights-grouped", pw, dict(groups=2, arrays=dict(weights=np.zeros((8, 8), np.int8))), ValueError,
     P + r"weights must have shape \(8, 4\), not \(8, 8\)$"),
    # bias: int32 (C_out,)
    ("bias-float", dw, dict(bias=ONES.astype(np.float64)), TypeError, D + r"bias must hold integers, not float64$"),
    ("bias-shape", dw, dict(bias=np.ones(4, np.int32)), ValueError, D + r"bias must have shape \(8,\), not \(4,\)$"),
    ("bias-scalar", dw, dict(bias=np.int32(0)), TypeError, r"bias must be a numpy array, not int32$"),
    ("bias-list", pw, dict(arrays=dict(bias=[0] * 8)), TypeError, P + r"bias must be a numpy array, not list$"),
    # multiplier: int32, 0 or [2^30, 2^31)
    ("multiplier-low", dw, dict(multiplier=np.full(8, (1 << 30) - 1, np.int32)), ValueError,
     D + r"multiplier must be 0 or in \[2\^30, 2\^31\) .*not 1073741823$"),
    ("multiplier-1", pw, dict(arrays=dict(multiplier=np.r_[M30[:7], 1].astype(np.int32))), ValueError,
     P + r"multiplier must be 0 or in \[2\^30, 2\^31\) .*not 1$"),
    ("multiplier-negative", dw, dict(multiplier=np.full(8, -(1 << 30), np.int32)), ValueError,
     D + r"multiplier must hold values from 0 to 2147483647, not -1073741824$"),
    ("multiplier-shape", dw, dict(multiplier=np.full(9, 1 << 30, np.int32)), ValueError,
     r"multiplier must have shape \(8,\), not \(9,\)$"),
    # shift: int32 in [-31, 30]
    ("shift-31", dw, dict(shift=np.full(8, 31, np.int32)), ValueError, D + r"shift must hold values from -31 to 30, not 31$"),
    ("shift--32", pw, dict(arrays=dict(shift=np.full(8, -32, np.int32))), ValueError,
     P + r"shift must hold values from -31 to 30, not -32$"),
    ("shift-shape", dw, dict(shift=np.zeros((8, 1), np.int32)), ValueError, r"shift must have shape \(8,\), not \(8, 1\)$"),
)


@pytest.mark.parametrize("maker, kwargs, exc, pattern", ARRAY_REFUSALS)
def test_array_refusals(maker, kwargs, exc, pattern):
    kwargs = dict(kwargs)
    if maker is dw:
        direct = {k: kwargs.pop(k) for k in ("weights", "bias", "multiplier", "shift") if k in kwargs}
        kwargs.setdefault("arrays", {}).update(direct)
    with refused(exc, pattern):
        maker(**kwargs)


def _pw16(c_in, weight, bias=0, zp=0):
    """16-bit pointwise c_in -> 1 with every weight ``weight`` and bias ``bias``."""
    inp = spec(c=c_in, bits=16, zp=zp)
    return pw(inp=inp, c_out=1, weight_bits=16, arrays=dict(
        weights=np.full((1, c_in), weight, np.int16), bias=np.array([bias], np.int32),
        multiplier=np.array([1 << 30], np.int32), shift=np.array([-20], np.int32)))


def test_accumulator_overflow_is_refused_at_the_int32_boundary():
    # one tap: (-32768) * (-32768) = 2^30; a bias of 2^31 - 1 - 2^30 reaches INT32_MAX exactly
    ok = _pw16(1, -32768, bias=arith.INT32_MAX - (1 << 30))
    assert ok.accumulator_range[1] == arith.INT32_MAX
    with refused(ValueError, P + r"worst-case accumulator \[-?\d+, 2147483648\] overflows int32"):
        _pw16(1, -32768, bias=arith.INT32_MAX - (1 << 30) + 1)
    # two taps: 2 * 2^30 = 2^31 > INT32_MAX
    with refused(ValueError, r"worst-case accumulator \[-2147418112, 2147483648\] overflows int32"):
        _pw16(2, -32768)
    # the low side: 2 taps of 32767 * (-32768) = -2^31 + 2^16; a bias of -2^16 reaches INT32_MIN
    assert _pw16(2, 32767, bias=-(1 << 16)).accumulator_range[0] == arith.INT32_MIN
    with refused(ValueError, r"worst-case accumulator \[-2147483649, \d+\] overflows int32"):
        _pw16(2, 32767, bias=-(1 << 16) - 1)
    # a zero point widens x - zp: 8-bit weights 127 on 16-bit input with zp -32768
    with refused(ValueError, r"worst-case accumulator .* overflows int32"):
        inp = spec(c=2048, bits=16, zp=-32768)
        pw(inp=inp, c_out=1, arrays=dict(weights=np.full((1, 2048), 127, np.int8),
                                        bias=np.zeros(1, np.int32), multiplier=np.array([1 << 30], np.int32),
                                        shift=np.zeros(1, np.int32)))


def test_accumulator_overflow_is_refused_for_depthwise():
    inp = spec(c=1, bits=16)
    with refused(ValueError, D + r"worst-case accumulator \[-\d+, \d+\] overflows int32"):
        dw(inp=inp, kernel=3, weight_bits=16, arrays=dict(
            weights=np.full((3, 3, 1), -32768, np.int16), bias=np.zeros(1, np.int32),
            multiplier=np.array([1 << 30], np.int32), shift=np.zeros(1, np.int32)))


STAGE_REFUSALS = _rows(
    ("stage-name", lambda: dw(name="d w", out=spec("dw", scale=0.1)),
     ValueError, r"^stage name must be an identifier .*, not 'd w'$"),
    ("output-not-named-after-stage", lambda: dw(out=spec("other", scale=0.1)), ValueError,
     D + r"output tensor must be named after the stage, not 'other'$"),
    ("input-not-spec", lambda: C.Shuffle(name="sh", input=(8, 8, 8), output=spec("sh"), groups=2), TypeError,
     r"^stage 'sh' \(shuffle\): input and output must be TensorSpec objects$"),
    ("dw-output-shape-stride", lambda: dw(stride=2, out=spec("dw", scale=0.1)), ValueError,
     D + r"output shape must be \(4, 4, 8\), not \(8, 8, 8\)$"),
    ("dw-output-channels", lambda: dw(out=spec("dw", c=16, scale=0.1)), ValueError,
     D + r"output shape must be \(8, 8, 8\), not \(8, 8, 16\)$"),
    ("dw-valid-width", lambda: dw(inp=spec(h=16, w=4), padding="valid", kernel=5,
                                  out=spec("dw", h=12, w=1, scale=0.1)), ValueError,
     D + r"kernel footprint 5 .* larger than the padded input width 4$"),
    ("dw-valid-1-pixel", lambda: dw(inp=spec(h=8, w=1), padding="valid", kernel=3,
                                    out=spec("dw", h=6, w=1, scale=0.1)), ValueError,
     r"kernel footprint 3 .* larger than the padded input width 1$"),
    ("pw-output-hw", lambda: pw(out=spec("pw", h=4, scale=0.1)), ValueError,
     P + r"output height x width must equal the input's 8x8"),
    ("shuffle-output-scale", lambda: C.Shuffle(name="sh", input=spec(), output=spec("sh", scale=0.5), groups=2),
     ValueError, r"^stage 'sh' \(shuffle\): output must equal the input"),
    ("shuffle-lanes", lambda: C.Shuffle(name="sh", input=spec(), output=spec("sh"), groups=2, lanes=3),
     ValueError, r"^stage 'sh' \(shuffle\): lanes must divide the channels 8, not 3$"),
    ("shuffle-groups", lambda: C.Shuffle(name="sh", input=spec(), output=spec("sh"), groups=5),
     ValueError, r"^stage 'sh' \(shuffle\): groups must divide the channels 8, not 5$"),
    ("add-skip-not-spec", lambda: add(skip="input"), TypeError, r"^stage 'add' \(add\): skip must be a TensorSpec, not 'input'$"),
    ("add-skip-shape", lambda: add(skip=spec(c=4)), ValueError,
     r"^stage 'add' \(add\): skip tensor 'input' has shape \(8, 8, 4\), which does not match the main input's \(8, 8, 8\)$"),
    ("add-output-shape", lambda: add(out=spec("add", c=16, scale=0.2)), ValueError,
     r"^stage 'add' \(add\): output shape must be \(8, 8, 8\), not \(8, 8, 16\)$"),
    ("add-skip-bits", lambda: add(skip=spec(bits=10)), ValueError,
     r"^stage 'add' \(add\): skip, main input and output must have equal bits, not 10, 8, 8$"),
    ("add-16bit-zero-point", lambda: add(inp=spec("pw", bits=16), skip=spec(bits=16, zp=1),
                                         out=spec("add", bits=16, scale=0.2)),
     ValueError, r"^stage 'add' \(add\): above 10 bits the add needs zero points of 0 .*'input'"),
    ("add-scale", lambda: add(out=spec("add", scale=1e-9)), ValueError,
     r"^stage 'add' \(add\): quantization does not line up: output scale 1e-09 is too small"),
    ("add-rounding", lambda: add(rounding="half"), ValueError,
     r"^stage 'add' \(add\): rounding must be one of double, single, not 'half'$"),
    ("add-lanes", lambda: add(lanes=0), ValueError, r"^stage 'add' \(add\): lanes must be an integer >= 1, not 0$"),
    ("conv-activation-none", lambda: dw(activation=None), TypeError,
     D + r"activation must be a string, one of none, relu, relu6; not None$"),
)


@pytest.mark.parametrize("make, exc, pattern", STAGE_REFUSALS)
def test_stage_refusals(make, exc, pattern):
    with refused(exc, pattern):
        make()


def _engine_parts():
    inp = spec()
    d = dw(inp=inp)
    p = pw(inp=d.output)
    return inp, d, p


def _engine_refusals():
    inp, d, p = _engine_parts()
    p_from_input = pw(inp=inp)                   # reads 'input', not 'dw'
    dup = pw(name="dw", inp=d.output)            # a second tensor named 'dw'
    later = add(name="res", inp=d.output, skip=p.output, out=d.output.renamed("res", scale=0.2))
    ghost = add(name="res", inp=p.output, skip=spec("ghost"), out=p.output.renamed("res", scale=0.2))
    wrong_q = add(name="res", inp=p.output, skip=spec(scale=0.07), out=p.output.renamed("res", scale=0.2))
    named_input = pw(name="input", inp=inp)
    return _rows(
        ("no-stages", dict(stages=()), ValueError, r"^stages must list at least one stage, not none$"),
        ("not-a-stage", dict(stages=(d, "pw")), TypeError, r"^stages\[1\] must be a Stage, not 'pw'$"),
        ("input-not-spec", dict(input=(8, 8, 8), stages=(d,)), TypeError, r"^input must be a TensorSpec, not \(8, 8, 8\)$"),
        ("name", dict(name="1st", stages=(d,)), ValueError, r"^name must be an identifier .*, not '1st'$"),
        ("chain-broken", dict(stages=(d, p_from_input)), ValueError,
         r"^stage 'pw' \(pointwise\): input must be 'dw' \(8, 8, 8\) \(the previous stage's output\), "
         r"not 'input' \(8, 8, 8\)$"),
        ("first-stage-input", dict(stages=(p,)), ValueError, r"input must be 'input' .*not 'dw'"),
        ("duplicate-name", dict(stages=(d, dup)), ValueError,
         r"^stage 'dw' \(pointwise\): name 'dw' is already used by another tensor$"),
        ("stage-named-input", dict(stages=(named_input,)), ValueError,
         r"name 'input' is already used by another tensor$"),
        ("skip-later", dict(stages=(d, later)), ValueError,
         r"^stage 'res' \(add\): skip must name an earlier tensor \(input, dw\), not 'pw'$"),
        ("skip-unknown", dict(stages=(d, p, ghost)), ValueError,
         r"skip must name an earlier tensor \(input, dw, pw\), not 'ghost'$"),
        ("skip-quantization-differs", dict(stages=(d, p, wrong_q)), ValueError,
         r"skip must name an earlier tensor \(input, dw, pw\), not 'input'$"),
        ("input-lanes", dict(stages=(d, p), input_lanes=3), ValueError,
         r"^input lanes must divide the input channels 8, not 3$"),
        ("input-lanes-0", dict(stages=(d, p), input_lanes=0), ValueError, r"^input lanes must be an integer >= 1, not 0$"),
        ("input-lanes-str", dict(stages=(d, p), input_lanes="2"), TypeError, r"^input lanes must be an integer, not '2'$"),
    )


@pytest.mark.parametrize("changes, exc, pattern", _engine_refusals())
def test_engine_refusals(changes, exc, pattern):
    inp, d, p = _engine_parts()
    args = dict(name="e", input=inp, stages=(d, p))
    args.update(changes)
    with refused(exc, pattern):
        C.EngineConfig(**args)


# ===============================================================================================
# Accepted edge cases
# ===============================================================================================

@pytest.mark.parametrize("section, changes", [
    pytest.param("dw", dict(kernel=1), id="kernel-1"),
    pytest.param("dw", dict(kernel=7), id="kernel-7"),
    pytest.param("dw", dict(kernel=7, padding="valid"), id="kernel-7-valid-8x8"),
    pytest.param("dw", dict(stride=4), id="stride-4"),
    pytest.param("dw", dict(stride=4, kernel=5, padding="valid"), id="stride-4-valid"),
    pytest.param("dw", dict(dilation=4), id="dilation-4-same"),
    pytest.param("dw", dict(dilation=4, kernel=7), id="dilation-4-kernel-7-same-8x8"),
    pytest.param("dw", dict(lanes=8), id="dw-lanes-all"),
    pytest.param("dw", dict(weight_bits=2), id="weight-bits-2"),
    pytest.param("dw", dict(weight_bits=16), id="weight-bits-16"),
    pytest.param("dw", dict(bits=2), id="dw-bits-2"),
    pytest.param("dw", dict(bits=16, zero_point=-32768), id="dw-bits-16-zp-min"),
    pytest.param("dw", dict(zero_point=127, scale=3.0e38), id="zp-max-huge-scale"),
    pytest.param("dw", dict(rounding="single"), id="single-rounding"),
    pytest.param("pw", dict(pe=8, simd=8), id="pe-simd-full"),
    pytest.param("pw", dict(groups=2, pe=8, simd=4), id="pe-spans-2-groups"),
    pytest.param("pw", dict(groups=4, pe=4, simd=2), id="pe-spans-2-of-4-groups"),
    pytest.param("pw", dict(groups=8, pe=8, simd=1), id="pe-spans-all-groups-depthwise-like"),
    pytest.param("pw", dict(groups=2, pe=2, simd=2), id="pe-within-group"),
    pytest.param("pw", dict(groups=8, out_channels=16, pe=4, simd=1), id="pe-2-groups-of-2"),
    pytest.param("pw", dict(out_channels=1), id="one-output"),
    pytest.param("input", dict(bits=2, zero_point=-2), id="input-bits-2"),
    pytest.param("input", dict(bits=16, zero_point=32767), id="input-bits-16"),
    pytest.param("input", dict(lanes=8), id="input-lanes-8"),
    pytest.param("input", dict(height=1), id="one-row"),
    pytest.param("input", dict(width=1), id="one-column"),
    pytest.param("input", dict(height=1, width=1), id="one-pixel"),
])
def test_valid_edge_cases_are_accepted(section, changes):
    config = build(tweak(doc(), section, **changes))
    table = changes
    if section in ("dw", "pw"):
        stage = config.stage(section)
        for key, value in table.items():
            if key in ("bits", "zero_point", "scale"):
                assert getattr(stage.output, key) == value
            elif key == "out_channels":
                assert stage.output.channels == value
            else:
                assert getattr(stage, key) == value


@pytest.mark.parametrize("height, width, changes, out_hw", [
    (1, 8, dict(kernel=3, padding="same"), (1, 8)),
    (8, 1, dict(kernel=7, padding="same"), (8, 1)),
    (1, 8, dict(kernel=1, padding="valid"), (1, 8)),
    (1, 9, dict(kernel=1, stride=4, padding="valid"), (1, 3)),
    (9, 9, dict(kernel=3, dilation=4, padding="valid"), (1, 1)),     # footprint 9 = size
    (25, 25, dict(kernel=7, dilation=4, padding="valid"), (1, 1)),   # footprint 25 = size
    (3, 5, dict(kernel=3, padding="valid"), (1, 3)),
    (1, 1, dict(kernel=7, dilation=4, padding="same"), (1, 1)),
])
def test_thin_and_tight_images_with_valid_geometry(height, width, changes, out_hw):
    config = build(tweak(tweak(doc(), "input", height=height, width=width), "dw", **changes))
    assert (config.stage("dw").out_height, config.stage("dw").out_width) == out_hw
    assert config.output.shape == (*out_hw, 8)
    x = np.zeros(config.input.shape, dtype=np.int64)
    assert golden.run(config, x).shape == config.output.shape


@pytest.mark.parametrize("in_bits, w_bits", [(2, 2), (2, 16), (16, 2), (16, 16)])
def test_extreme_widths_are_accepted_when_the_accumulator_fits(in_bits, w_bits):
    config = build(tweak(tweak(tweak(doc(), "input", bits=in_bits), "dw", weight_bits=w_bits),
                         "pw", weight_bits=w_bits))
    for stage in config.stages:
        lo, hi = stage.accumulator_range
        assert arith.INT32_MIN <= lo <= 0 <= hi <= arith.INT32_MAX
        assert stage.input.bits == in_bits and stage.output.bits == in_bits
    # directly: one 16x16-bit tap is the largest single product and fits
    assert _pw16(1, -32768).accumulator_range == (-(32768 * 32767), 1 << 30)


def test_add_edge_cases_are_accepted():
    # 10 bits: the int8 ADD path (left shift 20) still takes non-zero zero points
    d = tweak(tweak(tweak(doc(), "input", bits=10, zero_point=-7), "dw", zero_point=3), "pw", zero_point=5)
    config = build(append(d, name="res", kind="add", skip="input", zero_point=-1, activation="relu6"))
    res = config.stage("res")
    assert res.params.left_shift == 20 and res.skip is config.input
    # 16 bits with zero points 0: the int16 path (left shift 15)
    d = tweak(tweak(tweak(doc(), "input", bits=16, zero_point=0), "dw", zero_point=0), "pw", zero_point=0)
    config = build(append(d, name="res", kind="add", skip="dw", zero_point=0))
    assert config.stage("res").params.left_shift == 15 and config.stage("res").skip.name == "dw"
    # output scale just large enough: 2 * 1 / (2^20 * 2^-18) = 0.5 < 1
    d = tweak(tweak(doc(), "input", scale=1.0), "pw", scale=1.0)
    build(append(d, name="res", kind="add", skip="input", scale=2.0 ** -18))
    # an add with one operand a later shuffle's input: skip can be any earlier tensor
    d = append(append(doc(), name="sh", kind="shuffle", groups=2), name="res", kind="add", skip="pw")
    assert build(d).stage("res").skip.name == "pw"


# ===============================================================================================
# Properties
# ===============================================================================================

def tf_same(size, kernel, stride, dilation=1):
    """TensorFlow's SAME geometry, written from its documentation
    (tensorflow.org/api_docs/python/tf/nn#notes_on_padding_2): output ceil(in / stride);
    pad_total = max((out - 1) * stride + effective_kernel - in, 0); top = total // 2."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return out, (total // 2, total - total // 2)


def tf_valid(size, kernel, stride, dilation=1):
    effective = (kernel - 1) * dilation + 1
    return -(-(size - effective + 1) // stride), (0, 0)


@pytest.mark.parametrize("size, kernel, stride, dilation, out, pads", [
    # stride 2, 3x3: an even size pads only the bottom/right, an odd size both sides
    (16, 3, 2, 1, 8, (0, 1)),
    (15, 3, 2, 1, 8, (1, 1)),
    (8, 3, 2, 1, 4, (0, 1)),
    (7, 3, 2, 1, 4, (1, 1)),
    (2, 3, 2, 1, 1, (0, 1)),
    (1, 3, 2, 1, 1, (1, 1)),
    (8, 5, 2, 1, 4, (1, 2)),
    (9, 5, 2, 1, 5, (2, 2)),
    (8, 3, 1, 1, 8, (1, 1)),
    (8, 7, 1, 1, 8, (3, 3)),
    (16, 3, 1, 2, 16, (2, 2)),
    (10, 3, 4, 1, 3, (0, 1)),
    (8, 3, 4, 1, 2, (0, 0)),
    (9, 3, 4, 1, 3, (1, 1)),
    (8, 1, 2, 1, 4, (0, 0)),
])
def test_same_geometry_matches_tensorflow(size, kernel, stride, dilation, out, pads):
    assert tf_same(size, kernel, stride, dilation) == (out, pads)   # the table itself
    inp = spec(h=size, w=size + 1)
    stage = dw(inp=inp, kernel=kernel, stride=stride, dilation=dilation, padding="same")
    assert stage.out_height == out
    assert stage.pad_top_bottom == pads
    out_w, pads_w = tf_same(size + 1, kernel, stride, dilation)
    assert stage.out_width == out_w and stage.pad_left_right == pads_w
    assert stage.output.shape == (out, out_w, 8)


@pytest.mark.parametrize("size, kernel, stride, dilation", [
    (8, 3, 1, 1), (8, 3, 2, 1), (9, 3, 2, 1), (16, 5, 3, 1), (9, 3, 1, 4), (7, 7, 4, 1), (12, 3, 4, 2),
])
def test_valid_geometry_matches_tensorflow(size, kernel, stride, dilation):
    stage = dw(inp=spec(h=size, w=size), kernel=kernel, stride=stride, dilation=dilation, padding="valid")
    out, pads = tf_valid(size, kernel, stride, dilation)
    assert (stage.out_height, stage.out_width) == (out, out)
    assert stage.pad_top_bottom == pads == stage.pad_left_right
    assert stage.footprint == (kernel - 1) * dilation + 1


def test_stride_2_same_output_reads_bottom_padding():
    """End to end: with an even size, the last output row's window hangs one row past
    the bottom (which reads the zero point) and none past the top."""
    config = build(tweak(doc(), "dw", stride=2, kernel=3))
    stage = config.stage("dw")
    assert stage.pad_top_bottom == (0, 1) and stage.pad_left_right == (0, 1)
    x = golden.random_input(config.input, np.random.default_rng(0))
    acc = golden.depthwise_accumulate(x, stage.weights, stage.bias, stage.input_offset,
                                      stride=2, pad=((0, 1), (0, 1)), out_size=(4, 4))
    # independent: output (0, 0) sums taps at rows 0..2 and cols 0..2 of the unpadded input
    xo = x.astype(np.int64) + stage.input_offset
    expect = (xo[0:3, 0:3, :] * stage.weights).sum(axis=(0, 1)) + stage.bias
    assert np.array_equal(acc[0, 0], expect)
    # output (3, 3) sums rows/cols 6, 7 and the padding row/col 8 (contributing nothing)
    expect = (xo[6:8, 6:8, :] * stage.weights[:2, :2]).sum(axis=(0, 1)) + stage.bias
    assert np.array_equal(acc[3, 3], expect)


def _brute_force_range(windows: np.ndarray, taps: np.ndarray, bias: np.ndarray):
    """Min and max over every window (rows) of every channel's dot product plus bias."""
    acc = windows @ taps.T + bias          # (n_windows, C)
    return int(acc.min()), int(acc.max())


@pytest.mark.parametrize("bits, zp, seed", [(2, 1, 0), (2, -2, 1), (2, 0, 2), (2, -1, 3)])
def test_depthwise_accumulator_range_is_the_brute_force_worst_case(bits, zp, seed):
    """Every possible 3x3 window (4^9 of them for a 2-bit input) of a tiny depthwise
    stage, each channel's accumulator computed directly; edge pixels read padding,
    which equals a tap at the zero point, so they are among these windows."""
    rng = np.random.default_rng(seed)
    inp = spec(h=3, w=3, c=2, bits=bits, zp=zp)
    weights = rng.integers(-4, 3, size=(3, 3, 2), endpoint=True).astype(np.int8)
    weights[0, 0] = [-4, 3]                                  # both signs in each channel
    weights[2, 2] = [3, -4]
    bias = np.array([5, -7], np.int32)
    stage = dw(inp=inp, weight_bits=3, arrays=dict(weights=weights, bias=bias,
                                                   multiplier=np.full(2, 1 << 30, np.int32),
                                                   shift=np.zeros(2, np.int32)))
    qmin, qmax = arith.int_range(bits)
    values = np.arange(qmin, qmax + 1) - zp                   # x + input_offset
    n = len(values)
    windows = values[np.indices((n,) * 9).reshape(9, -1).T]   # every window, taps in (ky, kx) order
    taps = weights.reshape(9, 2).T.astype(np.int64)
    lo, hi = _brute_force_range(windows, taps, bias.astype(np.int64))
    assert lo < 0 < hi
    assert stage.accumulator_range == (lo, hi)


@pytest.mark.parametrize("bits, zp, groups, seed", [(3, -2, 1, 0), (3, 3, 1, 1), (4, -8, 1, 2), (3, 0, 3, 3)])
def test_pointwise_accumulator_range_is_the_brute_force_worst_case(bits, zp, groups, seed):
    """Every possible input pixel of a tiny pointwise stage, run through the golden model."""
    rng = np.random.default_rng(seed)
    c_in, c_out = 3, 3
    inp = spec(h=1, w=1, c=c_in, bits=bits, zp=zp)
    weights = rng.integers(-8, 7, size=(c_out, c_in // groups), endpoint=True).astype(np.int8)
    weights[0, 0], weights[1, 0] = -8, 7
    bias = rng.integers(-20, 20, size=c_out).astype(np.int32)
    stage = pw(inp=inp, c_out=c_out, groups=groups, arrays=dict(
        weights=weights, bias=bias, multiplier=np.full(c_out, 1 << 30, np.int32), shift=np.zeros(c_out, np.int32)))
    qmin, qmax = arith.int_range(bits)
    n = qmax - qmin + 1
    pixels = (np.indices((n,) * c_in).reshape(c_in, -1).T + qmin)[None]   # (1, n^3, C_in): every pixel
    acc = golden.pointwise_accumulate(pixels, weights, bias, -zp, groups)
    lo, hi = int(acc.min()), int(acc.max())
    assert lo < 0 < hi
    assert stage.accumulator_range == (lo, hi)


def _min_signed_bits(lo, hi):
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


@pytest.mark.parametrize("weight, bias, c_in", [(-32768, 0, 1), (32767, 0, 1), (1, 0, 1), (-1, 5, 2), (100, -1000, 3),
                                                (-32768, arith.INT32_MAX - (1 << 30), 1)])
def test_accumulator_bits_is_the_narrowest_signed_width(weight, bias, c_in):
    stage = _pw16(c_in, weight, bias)
    lo, hi = stage.accumulator_range
    assert stage.accumulator_bits == _min_signed_bits(lo, hi)


def test_accumulator_bits_of_examples_like_stages():
    config = build(doc())
    for stage in config.stages:
        lo, hi = stage.accumulator_range
        assert stage.accumulator_bits == _min_signed_bits(lo, hi) <= 32
        assert stage.taps_per_output == (9 if stage.kind == "depthwise" else 8)


def test_requant_is_power_of_two_only_with_power_of_two_scales():
    d = append(tweak(doc(), "dw", activation="relu6"), name="res", kind="add", skip="dw", activation="relu")
    d = tweak(d, "pw", activation="relu6", out_channels=8)
    pot = build(tweak(d, "random", scales="power-of-two"))
    for stage in pot.stages:
        assert stage.output.scale_is_power_of_two
        if isinstance(stage, C.ConvStage):
            assert stage.requant_is_power_of_two
            assert np.all(stage.multiplier == arith.POWER_OF_TWO_MULTIPLIER)
    assert pot.input.scale_is_power_of_two
    flt = build(tweak(d, "random", scales="float"))
    for stage in flt.stages:
        if isinstance(stage, C.ConvStage):
            assert not stage.requant_is_power_of_two
    # one channel off 2^30 is enough to need the multiplier
    s = dw(arrays=dict(multiplier=np.r_[np.full(7, 1 << 30), (1 << 30) + 1].astype(np.int32)))
    assert not s.requant_is_power_of_two
    assert dw().requant_is_power_of_two


@pytest.mark.parametrize("c, g, expected", [
    (6, 2, [0, 3, 1, 4, 2, 5]),
    (6, 3, [0, 2, 4, 1, 3, 5]),
    (8, 4, [0, 2, 4, 6, 1, 3, 5, 7]),
    (4, 1, [0, 1, 2, 3]),
    (4, 4, [0, 1, 2, 3]),
    (12, 3, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]),
])
def test_shuffle_permutation(c, g, expected):
    inp = spec(c=c)
    sh = C.Shuffle(name="sh", input=inp, output=inp.renamed("sh"), groups=g)
    assert sh.permutation.tolist() == expected
    # the definition: output channel j * g + i is input channel i * (C / g) + j
    for i in range(g):
        for j in range(c // g):
            assert sh.permutation[j * g + i] == i * (c // g) + j
    x = np.arange(c)[None, None, :].repeat(2, axis=0)
    assert np.array_equal(golden.channel_shuffle(x, g)[0, 0], np.array(expected))
    assert sh.lanes == c               # defaults to every channel


def test_engine_tensors_order_output_and_skip_sources():
    d = append(append(doc(), name="sh", kind="shuffle", groups=4), name="res", kind="add", skip="dw")
    config = build(d)
    assert list(config.tensors) == ["input", "dw", "pw", "sh", "res"]
    assert config.tensors["dw"] is config.stage("dw").output
    assert config.output is config.stage("res").output
    assert config.skip_sources == frozenset({"dw"})
    assert [s.kind for s in config.stages] == ["depthwise", "pointwise", "shuffle", "add"]
    with pytest.raises(KeyError, match="no stage named 'nope'"):
        config.stage("nope")
    # the shuffle inherits the upstream stage's lanes in a file, the add too
    assert config.stage("sh").lanes == config.stage("pw").lanes_out
    assert config.stage("res").lanes == config.stage("sh").lanes


@pytest.mark.parametrize("first, lanes", [
    (dict(name="dw", kind="depthwise", lanes=2), 2),
    (dict(name="dw", kind="depthwise"), 1),
    (dict(name="pw", kind="pointwise", out_channels=8, simd=4, pe=2), 4),
    (dict(name="sh", kind="shuffle", groups=2), 8),
])
def test_input_lanes_default_to_the_first_stage(first, lanes):
    config = build(doc(stage=[first]))
    assert config.input_lanes == lanes == config.stages[0].lanes_in
    explicit = build(tweak(doc(stage=[first]), "input", lanes=8))
    assert explicit.input_lanes == 8
    # directly
    inp, d, p = _engine_parts()
    assert C.EngineConfig("e", inp, (d, p)).input_lanes == d.lanes_in == 1
    assert C.EngineConfig("e", inp, [d, p]).stages == (d, p)


def test_direct_construction_normalises_numpy_scalars():
    s = dw(kernel=np.int64(5), stride=np.int32(1), dilation=np.uint8(1), lanes=np.int16(2))
    assert (s.kernel, s.stride, s.dilation, s.lanes) == (5, 1, 1, 2)
    assert all(type(v) is int for v in (s.kernel, s.stride, s.dilation, s.lanes))


# ===============================================================================================
# Immutability
# ===============================================================================================

def test_objects_are_frozen():
    d = append(append(doc(), name="sh", kind="shuffle", groups=2), name="res", kind="add", skip="input")
    config = build(d)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stages = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.input.bits = 4
    for stage in config.stages:
        with pytest.raises(dataclasses.FrozenInstanceError):
            stage.name = "x"
        with pytest.raises(dataclasses.FrozenInstanceError):
            stage.output = stage.input
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage("dw").kernel = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage("pw").weights = np.zeros((8, 8), np.int8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage("sh").groups = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stage("res").skip = config.stage("dw").output
    assert isinstance(config.stages, tuple)


def test_arrays_are_read_only_copies():
    arrays = _arrays((3, 3, 8), 8)
    originals = {k: v.copy() for k, v in arrays.items()}
    stage = dw(arrays=arrays)
    for key in ("weights", "bias", "multiplier", "shift"):
        value = getattr(stage, key)
        assert not value.flags.writeable
        assert value.dtype == np.int64
        with pytest.raises(ValueError, match="read-only"):
            value[(0,) * value.ndim] = 1
        # the caller's array is copied, not aliased
        arrays[key][(0,) * value.ndim] += 1
        assert np.array_equal(value, originals[key])
    config = build(doc())
    for stage in config.stages:
        assert not any(getattr(stage, k).flags.writeable for k in ("weights", "bias", "multiplier", "shift"))


def test_derived_properties_cannot_drift_from_the_arrays():
    """The cached accumulator range is computed from the read-only arrays, so it cannot go stale."""
    stage = dw()
    before = stage.accumulator_range
    with pytest.raises(ValueError):
        stage.weights[0, 0, 0] = 100
    assert stage.accumulator_range == before


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8])
def test_direct_construction_accepts_any_integer_dtype(dtype):
    """Only the tensors file fixes dtypes (test_loader checks those refusals); objects built
    in Python take any integer dtype whose values fit, and store int64 read-only copies,
    so dataclasses.replace works on them."""
    import dataclasses
    base = config_from_dict(doc()).stages[0]
    stage = dataclasses.replace(base, weights=base.weights.astype(dtype) if dtype is not np.uint8
                                else np.abs(base.weights).astype(dtype))
    assert stage.weights.dtype == np.int64 and not stage.weights.flags.writeable
    if dtype is not np.uint8:
        np.testing.assert_array_equal(stage.weights, base.weights)
