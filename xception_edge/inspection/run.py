"""`xception-edge inspect`: every int8 artifact of a folder (or one artifact), measured layer by
layer against the fp32 source with its backend's own facility, in one result schema."""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
import time
from pathlib import Path

from .. import __version__, console
from ..errors import BadInput
from ..hostinfo import host
from . import backend_module
from .base import blame, finish
from .context import open_context

SCHEMA = "xception-edge/inspect"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class InspectRequest:
    artifacts: Path
    model: str
    calibration: Path
    calibration_root: Path | None = None
    num_images: int = 32
    unsafe_model: bool = False


def int8_artifacts(root: Path) -> list[Path]:
    """ROOT when it is an artifact, else its int8 sub-folders (other precisions have nothing to inspect)."""
    from ..evaluation import discover_artifacts

    arts = discover_artifacts(Path(root))
    int8 = [a.folder for a in arts if a.manifest.precision == "int8"]
    if not int8:
        kinds = ", ".join(sorted({a.manifest.precision for a in arts}))
        raise BadInput(f"{root} holds no int8 artifact (found: {kinds}); inspect compares int8 artifacts with their fp32 source")
    skipped = [a.name for a in arts if a.manifest.precision != "int8"]
    if skipped:
        console.info(f"inspect: skipping {len(skipped)} non-int8 artifact(s): {', '.join(skipped)}")
    return int8


def inspect_one(ctx) -> dict:
    from . import transforms_table

    """Measure one artifact (context already open) and return its result record."""
    backend = ctx.manifest.backend
    t0 = time.perf_counter()
    errors = finish(backend_module(backend).measure(ctx), ctx.parts)
    matched = {e.layer for e in errors if e.layer}
    missing = [p.name for p in ctx.parts.values() if p.weighted and p.name not in matched]
    return {
        "target": ctx.manifest.target,
        "backend": backend,
        "path": str(ctx.artifact),
        "tool": backend_module(backend).TOOL,
        "images": int(len(ctx.images)),
        "seconds": round(time.perf_counter() - t0, 2),
        "float_layers": list(ctx.profile.quantization.ignored_scope),
        "layers": [e.to_dict() for e in errors],
        "blame": blame(errors, ctx.profile.quantization.ignored_scope),
        "unmatched_weighted_layers": missing,
        "transforms": transforms_table.summary(ctx.manifest),
    }


def run_inspect(req: InspectRequest) -> dict:
    if req.num_images < 1:
        raise BadInput(f"--num-images {req.num_images} must be at least 1")
    folders = int8_artifacts(req.artifacts)
    results, src, exports, decoded = [], None, None, {}
    with tempfile.TemporaryDirectory(prefix="xception-edge-inspect-") as workdir:  # exports shared by every artifact
        for folder in folders:
            ctx = open_context(
                folder,
                req.model,
                req.calibration,
                Path(workdir),
                num_images=req.num_images,
                calibration_root=req.calibration_root,
                unsafe_model=req.unsafe_model,
                source=src,
                exports=exports,
                decoded=decoded,
            )
            src, exports = ctx.source, ctx.exports
            console.info(
                f"[{ctx.manifest.target}] inspecting {len(ctx.parts)} layers on {len(ctx.images)} images "
                f"({backend_module(ctx.manifest.backend).TOOL})"
            )
            results.append(inspect_one(ctx))
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "model": req.model,
        "calibration": str(req.calibration),
        "host": host(),
        "xception_edge": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "artifacts": results,
    }
