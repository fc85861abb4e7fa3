"""Target profiles as frozen dataclasses and string enums (loaded from targets/*.toml by targets.py)."""

from __future__ import annotations

import dataclasses
import enum


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic-int8"
    INT8 = "int8"

    @property
    def needs_calibration(self) -> bool:
        return self is Precision.INT8


class DType(str, enum.Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Backend quantization knobs; the generic ones live on TargetProfile."""

    activation_dtype: str = "int8"  # int8 | uint8 (ONNX Runtime QDQ)
    weight_dtype: str = "int8"
    reduce_range: bool = False  # 7-bit weights (ONNX Runtime on CPUs without VNNI)
    x86_without_vnni: bool = False  # ONNX Runtime: refuse int8 weights that can saturate AVX2's 16-bit sums
    calibration_method: str = "minmax"  # minmax | entropy (ONNX Runtime's) | percentile (ours); LiteRT too
    calibration_percentile: float = 99.999  # percentile: the share of |x| kept in range (ONNX Runtime's default)
    preset: str = "performance"  # NNCF: performance | mixed
    fast_bias_correction: bool = True  # NNCF
    disable_bias_correction: bool = False  # NNCF: no bias correction at all (AdvancedQuantizationParameters)
    activations_range: str = "mean_minmax"  # NNCF: activation range estimator, minmax | mean_minmax | histogram
    overflow_fix: str = "first_layer"  # NNCF: enable | first_layer | disable (7-bit weights against AVX2 saturation)
    subset_size: int | None = None  # NNCF: calibration images used for statistics (None: all of them)
    ignored_scope: tuple[str, ...] = ()  # layer names kept in float
    max_float_mac_share: float = 0.2  # convert --max-drop: the most of the model's MACs it may keep in float
    transforms: tuple[str, ...] = ()  # pre-quantization transforms of the Keras model, in order: "cle"
    # options of those transforms, {transform: {option: value}} ([quantization.transform_options.NAME])
    transform_options: dict = dataclasses.field(default_factory=dict)

    def with_transforms(self, names) -> QuantSpec:
        """These settings with the transform list ``names``, keeping the options of those only."""
        names = tuple(names)
        kept = {k: v for k, v in self.transform_options.items() if k in names}
        return dataclasses.replace(self, transforms=names, transform_options=kept)


@dataclasses.dataclass(frozen=True)
class VerifySpec:
    """Post-conversion check against the source model on held-back images."""

    min_agreement: float = 0.9  # top-1 agreement floor; below it the artifact is not written
    num_images: int = 64


@dataclasses.dataclass(frozen=True)
class GateSpec:
    """CI accuracy gates (used by `xception-edge gate`); every entry optional."""

    max_top1_drop_pp: float | None = None  # judges the point estimate, drop_pp
    max_top1_drop_pp_upper: float | None = None  # judges the worst plausible drop: the 95% interval's end, -drop_ci_pp[0]
    min_top1_ratio: float | None = None
    min_agreement: float | None = None
    max_size_mb: float | None = None
    max_p50_latency_ms: float | None = None
    latency_host: str | None = None  # the host or device (its --device spec, CPU or core) latency is gated on
    min_device_agreement: float | None = None  # a device row's top-1 agreement with this host's (unset: 0.99)


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    backend: str  # a name in the backend registry (xception_edge.backends)
    format: str  # one of that backend's formats
    precision: Precision
    hardware: str = ""
    input_dtype: DType = DType.FLOAT32
    output_dtype: DType = DType.FLOAT32
    per_channel: bool = True
    calibration_size: int = 300
    threads: int = 2
    quantization: QuantSpec = QuantSpec()
    verify: VerifySpec = VerifySpec()
    gates: GateSpec = GateSpec()
    source: str = ""  # the TOML file it came from

    def to_dict(self) -> dict:
        def conv(v):
            if isinstance(v, enum.Enum):
                return v.value
            if isinstance(v, tuple):
                return list(v)
            return v

        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v = {k: conv(x) for k, x in dataclasses.asdict(v).items()}
            out[f.name] = conv(v)
        return out
