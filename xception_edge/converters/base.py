"""What every converter returns."""

from __future__ import annotations

import dataclasses

from ..runtime.base import TensorSpec


@dataclasses.dataclass
class ConvertedModel:
    model_file: str  # path relative to the artifact folder
    input: TensorSpec
    output: TensorSpec
    tools: dict[str, str]  # tool name -> version
    details: dict = dataclasses.field(default_factory=dict)  # backend-specific facts for the manifest
