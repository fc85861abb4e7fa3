"""OpenVINO IR converter: the run's one openvino.Model (from the SavedModel export, batch 1,
NHWC) -> fp32 IR, fp16-compressed IR, or int8 IR quantized by NNCF with the shared
calibration iterator. Writes model.xml + model.bin into the stage folder.

OpenVINO's TensorFlow frontend loses the Keras layer names (its transpose sinking renames ops
to Transpose_1234), so weighted ops are matched back to their Keras layers by their weights
and renamed: the IR reads ``block4_sepconv2/pointwise``, and a profile's ``ignored_scope``
can name Keras layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from ... import console
from .frameworks import nncf as guarded_nncf
from .frameworks import openvino
from ...calibration import CalibrationSet
from ...errors import ConversionFailed, first_line
from ...model_io import SourceModel, _all_layers
from ...runtime.base import TensorSpec
from ...profiles import Precision, TargetProfile
from ...converters.base import ConvertedModel
from ...exports import Exports

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
# Host verification runs the CPU plugin in f32: its default on CPUs with AVX512-BF16 is bf16,
# which would measure bf16 rounding, not the artifact. The runtime reads this from the manifest.
CPU_INFERENCE_PRECISION = "f32"
_WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")


@dataclasses.dataclass(frozen=True)
class AccuracyControl:
    """`convert --max-drop` for OpenVINO: quantize with nncf.quantize_with_accuracy_control, which
    reverts the quantizers whose removal restores the most top-1 on these labelled images."""

    images: np.ndarray  # (N, H, W, 3) preprocessed
    labels: np.ndarray  # (N,) class indices
    max_drop_pp: float


def convert(
    src: SourceModel,
    profile: TargetProfile,
    calib: CalibrationSet | None,
    stage: Path,
    exports: Exports,
    *,
    accuracy_control: AccuracyControl | None = None,
) -> ConvertedModel:
    ov = openvino()
    precision = profile.precision
    if precision is Precision.INT8 and (calib is None or len(calib) == 0):
        raise ConversionFailed(f"{profile.name}: int8 needs calibration images; pass --calibration DIR")
    model = source_model(exports).clone()
    layer_ops = name_keras_layers(model, src.keras_model)
    tools = {"openvino": ov.__version__.split("-")[0]}
    details: dict = {"cpu_inference_precision": CPU_INFERENCE_PRECISION, "keras_layers_named": len(layer_ops)}
    if precision is Precision.INT8:
        ignored = resolve_ignored_scope(profile, model, layer_ops, src)
        model, qdetails = _quantize(model, profile, calib, ignored, accuracy_control, layer_ops)
        tools["nncf"] = guarded_nncf().__version__
        details.update(qdetails)
    compress = precision is Precision.FP16
    try:
        ov.save_model(model, str(stage / MODEL_FILE), compress_to_fp16=compress)
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: openvino.save_model failed: {first_line(exc)}") from None
    saved = ov.Core().read_model(str(stage / MODEL_FILE))
    details.update(weight_summary(saved))
    if precision is Precision.INT8 and details["fake_quantize_ops"] == 0:
        raise ConversionFailed(f"{profile.name}: NNCF inserted no FakeQuantize op; the IR would not be int8")
    if (stage / WEIGHTS_FILE).is_file():
        details["bin_bytes"] = (stage / WEIGHTS_FILE).stat().st_size
    inp, out = io_specs(saved)
    return ConvertedModel(MODEL_FILE, inp, out, tools, details)


def source_model(exports: Exports):
    """The openvino.Model of the run's SavedModel (batch 1, NHWC, fixed size), converted once per
    run and shared by every OpenVINO target (``exports.cached``): callers clone it before changing it."""

    def make():
        ov = openvino()
        path = exports.saved_model()
        src = exports.source
        with console.progress("Converting the SavedModel to OpenVINO", total=None):
            try:
                return ov.convert_model(str(path), input=[1, src.height, src.width, 3])
            except Exception as exc:
                raise ConversionFailed(f"openvino.convert_model failed on {src.spec}: {first_line(exc)}") from None

    return exports.cached("openvino", make)


# --------------------------------------------------------------------------- quantization
class _CalibrationData:
    """The shared calibration images as a re-iterable source (NNCF iterates more than once)."""

    def __init__(self, calib: CalibrationSet):
        self.calib = calib

    def __len__(self) -> int:
        return len(self.calib)

    def __iter__(self):
        return self.calib.batches()


@contextlib.contextmanager
def _nncf_progress_to_stderr():
    """NNCF draws its own progress bars on stdout; keep stdout clean for --json."""
    if console._state.get("quiet"):
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    else:
        with contextlib.redirect_stdout(sys.stderr):
            yield


# [quantization] overflow_fix -> NNCF's OverflowFix: 7-bit weights where AVX2/AVX-512 (no VNNI)
# int8 kernels would saturate their 16-bit intermediate sums.
OVERFLOW_FIX = {"enable": "enable", "first_layer": "first_layer_only", "disable": "disable"}
# [quantization] activations_range -> NNCF's RangeEstimatorParametersSet for the (per-tensor)
# activation quantizers: NNCF's default averages each image's min and max (mean_minmax); minmax
# takes the extremes over all the calibration images, as TFLite's and ONNX Runtime's calibrators do.
ACTIVATIONS_RANGE = {"minmax": "MINMAX", "mean_minmax": "MEAN_MINMAX", "histogram": "HISTOGRAM"}


def _advanced_parameters(profile: TargetProfile):
    """NNCF's AdvancedQuantizationParameters from the profile's [quantization] settings."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    q = profile.quantization
    return AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=profile.per_channel),
        overflow_fix=OverflowFix(OVERFLOW_FIX[q.overflow_fix]),
        disable_bias_correction=q.disable_bias_correction,
        # mean_minmax is NNCF's own default: left to it (None)
        activations_range_estimator_params=(
            None
            if q.activations_range == "mean_minmax"
            else getattr(RangeEstimatorParametersSet, ACTIVATIONS_RANGE[q.activations_range])
        ),
    )


def _quantize(model, profile: TargetProfile, calib: CalibrationSet, ignored: list[str], accuracy_control=None, layer_ops=None):
    nncf = guarded_nncf()
    q = profile.quantization
    subset = min(q.subset_size or len(calib), len(calib))
    advanced = _advanced_parameters(profile)
    kwargs = {
        "preset": nncf.QuantizationPreset(q.preset),
        "subset_size": subset,
        "fast_bias_correction": q.fast_bias_correction,
    }
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    dataset = nncf.Dataset(_CalibrationData(calib))
    with _nncf_progress_to_stderr():
        try:
            if accuracy_control is None:
                console.info(
                    f"[{profile.name}] NNCF int8 quantization: {q.preset} preset, statistics from {subset} calibration images"
                )
                quantized = nncf.quantize(model, dataset, advanced_parameters=advanced, **kwargs)
            else:
                quantized = _with_accuracy_control(
                    nncf, model, dataset, accuracy_control, profile.name, advanced_quantization_parameters=advanced, **kwargs
                )
        except ConversionFailed:
            raise
        except Exception as exc:
            what = "nncf.quantize" if accuracy_control is None else "nncf.quantize_with_accuracy_control"
            raise ConversionFailed(f"{profile.name}: {what} failed: {first_line(exc)}") from None
    details = {
        "nncf": {
            "preset": q.preset,
            "subset_size": subset,
            "fast_bias_correction": q.fast_bias_correction,
            "disable_bias_correction": q.disable_bias_correction,
            "activations_range": q.activations_range,
            "overflow_fix": q.overflow_fix,
            "per_channel_weights": profile.per_channel,
            "ignored_scope": ignored,
        },
    }
    if accuracy_control is not None:
        op_layer = {op: layer for layer, ops in (layer_ops or {}).items() for op in ops}
        reverted = [
            op.get_friendly_name()
            for op in quantized.get_ordered_ops()
            if op.get_type_name() in _WEIGHTED_OPS
            and weight_type(op) not in ("i8", "u8")
            and op.get_friendly_name() not in ignored
        ]
        layers = list(dict.fromkeys(op_layer[n] for n in reverted if n in op_layer))
        details["nncf"]["accuracy_control"] = {
            "max_drop_pp": accuracy_control.max_drop_pp,
            "float_ops": reverted,
            "float_layers": layers,
        }
    return quantized, details


def _with_accuracy_control(nncf, model, dataset, ac: AccuracyControl, name: str, **kwargs):
    """nncf.quantize_with_accuracy_control, validating top-1 (ties to the lower class, as evaluate
    scores it) on the labelled images; NNCF compiles what it validates in f32."""
    from ...accuracy import topk_hits

    items = [(ac.images[i : i + 1], int(ac.labels[i])) for i in range(len(ac.labels))]

    def validate(compiled, data):
        data = list(data)
        probs = np.concatenate([np.asarray(compiled(x)[0]) for x, _ in data])
        hits = topk_hits(probs, np.array([y for _, y in data]), 1).astype(np.float64)
        return float(hits.mean()), [float(h) for h in hits]

    console.info(f"[{name}] nncf.quantize_with_accuracy_control: top-1 drop at most {ac.max_drop_pp:g} pp on {len(items)} images")
    return nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items), validate, max_drop=ac.max_drop_pp / 100.0, drop_type=nncf.DropType.ABSOLUTE, **kwargs
    )


def resolve_ignored_scope(profile: TargetProfile, model, layer_ops: dict[str, list[str]], src: SourceModel) -> list[str]:
    """Profile ignored_scope entries -> OpenVINO op names. An entry is a Keras layer with weights
    (matched to its ops) or an op name of the converted model; anything else is a BadInput
    (``scope.check_entry``, which the run's precheck applied already to the Keras names)."""
    from ... import scope
    from . import SPEC

    op_names = {op.get_friendly_name() for op in model.get_ops()}
    out: list[str] = []
    for entry in profile.quantization.ignored_scope:
        if entry in layer_ops:
            names = layer_ops[entry]
        elif entry in op_names:
            names = [entry]
        elif scope.check_entry(profile, entry, src, SPEC):  # a weighted Keras layer whose weights matched no op
            raise ConversionFailed(
                f"{profile.name}: the weights of Keras layer '{entry}' match no op of the OpenVINO model, so it cannot "
                "be kept in float (was the model changed after loading?)"
            )
        else:
            weighted = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED_OPS]
            raise scope.unknown_entry(profile, entry, src, pool=set(layer_ops) | set(weighted), native=SPEC.native_names)
        out.extend(n for n in names if n not in out)
    return out


# --------------------------------------------------------------------------- layer names
def _kernel_rows(layer) -> list[tuple[str, np.ndarray]]:
    """A Keras layer's kernels as (suffix, 2-D rows), one row per output channel in the order
    OpenVINO's weights have (Convolution OIHW, GroupConvolution GOIHW, MatMul out x in)."""
    kind = layer.__class__.__name__

    def rows(kernel, axes):
        w = np.transpose(np.asarray(kernel), axes)
        return w.reshape(w.shape[0] * (w.shape[1] if axes == _DEPTHWISE else 1), -1)

    if kind == "Conv2D":
        return [("", rows(layer.kernel, _CONV))]
    if kind == "DepthwiseConv2D":
        return [("", rows(layer.kernel, _DEPTHWISE))]
    if kind == "SeparableConv2D":
        return [("/depthwise", rows(layer.depthwise_kernel, _DEPTHWISE)), ("/pointwise", rows(layer.pointwise_kernel, _CONV))]
    if kind == "Dense":
        return [("", np.asarray(layer.kernel).T)]
    return []


_CONV = (3, 2, 0, 1)  # Keras (kh, kw, in, out) -> (out, in, kh, kw)
_DEPTHWISE = (2, 3, 0, 1)  # Keras (kh, kw, in, multiplier) -> (in, multiplier, kh, kw)


def _op_rows(op) -> np.ndarray | None:
    const = op.input_value(1).get_node()
    if const.get_type_name() != "Constant":
        return None
    w = np.asarray(const.get_data())
    kind = op.get_type_name()
    if kind == "MatMul":
        if w.ndim != 2:
            return None
        return w if op.get_attributes().get("transpose_b") else w.T
    if kind == "GroupConvolution":  # (groups, out/group, in/group, kh, kw)
        return w.reshape(w.shape[0] * w.shape[1], -1)
    return w.reshape(w.shape[0], -1)


def _proportional_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """a[i] == s[i] * b[i] for a per-row scale s (a BatchNorm folded into the weights)."""
    if a.shape != b.shape:
        return False
    a, b = a.astype(np.float64), b.astype(np.float64)
    bb = (b * b).sum(1)
    s = np.where(bb > 0, (a * b).sum(1) / np.where(bb > 0, bb, 1), 0.0)
    resid = np.abs(a - s[:, None] * b).max()
    return bool(resid <= 1e-4 * max(np.abs(a).max(), 1e-12))


def name_keras_layers(model, keras_model) -> dict[str, list[str]]:
    """Rename the weighted ops of ``model`` after the Keras layers whose weights they hold;
    returns Keras layer name -> op names. A raw SavedModel (no Keras model) keeps OV's names."""
    if keras_model is None:
        return {}
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED_OPS]
    weights = {id(op): _op_rows(op) for op in ops}
    taken: set[int] = set()
    out: dict[str, list[str]] = {}
    for layer in _all_layers(keras_model):
        for suffix, rows in _kernel_rows(layer):
            for op in ops:
                w = weights[id(op)]
                if id(op) in taken or w is None or not _proportional_rows(w, rows):
                    continue
                taken.add(id(op))
                op.set_friendly_name(layer.name + suffix)
                out.setdefault(layer.name, []).append(layer.name + suffix)
                break
    return out


# --------------------------------------------------------------------------- inspection
def weight_type(op) -> str | None:
    """Element type of the constant holding a weighted op's weights, looking through the
    Convert/Multiply/Subtract of fp16-compressed and int8 weights (None if not a constant)."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape", "FakeQuantize"):
        node = node.input_value(0).get_node()
    return node.get_output_element_type(0).get_type_name() if node.get_type_name() == "Constant" else None


def weight_summary(model) -> dict:
    """What the IR computes in: FakeQuantize ops, and the stored type of every weighted op's weights."""
    counts: dict[str, int] = {}
    weights: dict[str, int] = {}
    for op in model.get_ops():
        kind = op.get_type_name()
        counts[kind] = counts.get(kind, 0) + 1
        if kind in _WEIGHTED_OPS:
            t = weight_type(op) or "computed"
            weights[t] = weights.get(t, 0) + 1
    return {
        "fake_quantize_ops": counts.get("FakeQuantize", 0),
        "weights_by_type": dict(sorted(weights.items())),
        "op_counts": dict(sorted(counts.items())),
    }


def io_specs(model) -> tuple[TensorSpec, TensorSpec]:
    def spec(port) -> TensorSpec:
        names = sorted(port.get_names())
        name = names[0] if names else port.get_node().get_friendly_name()
        shape = tuple(int(d) for d in port.get_shape())
        return TensorSpec(name, np.dtype(port.get_element_type().to_dtype()).name, shape)

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionFailed(
            f"the OpenVINO model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; expected one of each"
        )
    return spec(model.input(0)), spec(model.output(0))
