"""How an image becomes the model's input (``PreprocessSpec``): recorded in every manifest and
read back on devices, so stdlib only; ``preprocess`` does the decoding and resizing (Pillow)."""

from __future__ import annotations

import dataclasses

from ..errors import BadInput

RESIZE_MODES = ("resize", "crop")
INTERPOLATIONS = ("bilinear", "bicubic")
SCALINGS = ("xception",)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input. Recorded verbatim in every manifest."""

    height: int
    width: int
    resize: str = "resize"  # "resize": plain resize; "crop": shorter side + centre crop
    crop_fraction: float = 0.875  # used by resize="crop"
    interpolation: str = "bilinear"  # "bilinear": tf.image.resize compatible; "bicubic": Pillow
    scaling: str = "xception"  # x / 127.5 - 1
    layout: str = "NHWC"
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise BadInput(f"preprocessing resize={self.resize!r} is unknown; use one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise BadInput(f"preprocessing interpolation={self.interpolation!r} is unknown; use one of {INTERPOLATIONS}")
        if self.scaling not in SCALINGS:
            raise BadInput(f"preprocessing scaling={self.scaling!r} is unknown; use one of {SCALINGS}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise BadInput(f"crop fraction {self.crop_fraction} must be in (0, 1]")
        if self.height < 1 or self.width < 1:
            raise BadInput(f"input size {self.height}x{self.width} must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"manifest preprocessing has unknown keys {unknown}; upgrade xception-edge")
        return cls(**data)
