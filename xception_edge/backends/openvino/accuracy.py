"""`convert --max-drop` for OpenVINO: NNCF's own accuracy control (quantize_with_accuracy_control),
tried before the toolkit's SQNR-ranked float fallback."""

from __future__ import annotations

from pathlib import Path

from ... import console
from ...inspection.layers import float_mac_share
from ...records import BudgetAttempt, BudgetRecord

METHOD = "nncf.quantize_with_accuracy_control"


def try_accuracy_control(profile, max_drop, validation, parts, build, stage: Path, attempts: list, record: BudgetRecord):
    """OpenVINO's own accuracy-aware quantization first: NNCF ranks quantizers by the metric itself
    and reverts as few as it can; its model becomes the artifact if our f32 measurement agrees and
    its float layers fit the MAC limit. Otherwise the SQNR-ranked loop goes on (None)."""
    from ...budget import clear_stage, drop_pp
    from .convert import AccuracyControl

    clear_stage(stage)
    ac = AccuracyControl(validation.images, validation.labels, max_drop)
    manifest, runtime, result = build(profile, accuracy_control=ac)
    drop = drop_pp(validation, runtime)
    layers = list(profile.quantization.ignored_scope) + manifest.conversion["nncf"]["accuracy_control"]["float_layers"]
    share = float_mac_share(parts, layers)
    attempts.append(BudgetAttempt(tuple(layers), round(share, 6), round(drop, 3), method=METHOD))
    console.info(
        f"[{profile.name}] NNCF accuracy control: {len(layers)} layer(s) in float ({share:.1%} of MACs): top-1 drop {drop:.2f} pp"
    )
    if drop <= max_drop and share <= profile.quantization.max_float_mac_share:
        return manifest, result, record.kept(attempts[-1], attempts)
    return None
