"""`sweep`: check everything (no TensorFlow), then under a lock on --out the Keras reference once,
every cell (here, in order, or as Ray tasks), and sweep.json / sweep.md / sweep.html."""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

from .. import __version__, console
from ..errors import BadInput
from .cell import CellTask, SweepContext, reference, run_cell
from .grid import Grid, read_grid

SCHEMA = "xception-edge/sweep"
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SweepRequest:
    model: str
    target: str
    calibration: Path
    validation: Path
    grid: object  # a .toml/.json path, KEY=V1,V2 strings, or a mapping of axis -> values
    out: Path = Path("sweep")
    calibration_root: Path | None = None
    labels: Path | None = None
    unsafe_model: bool = False
    resize: str = "resize"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    executor: str = "local"
    ray_address: str | None = None
    resume: bool = False


def precheck(req: SweepRequest):
    """Everything that can be checked before a model loads: (profile, grid, calibration source)."""
    from ..calibration import open_source
    from ..model_io import KERAS_XCEPTION
    from ..pipeline import check_installed
    from ..scale.executor import check_executor, probe, ray_module
    from ..targets import resolve_target

    check_executor(req.executor)
    if req.ray_address is not None and req.executor != "ray":
        raise BadInput(f"--ray-address {req.ray_address} is for --executor ray; add it or drop --ray-address")
    if req.model.lower() != KERAS_XCEPTION and not Path(req.model).exists():
        raise BadInput(f"--model {req.model} does not exist; pass a .keras or .h5 file or a SavedModel folder")
    profile = resolve_target(req.target)
    if not profile.precision.needs_calibration:
        raise BadInput(
            f"sweep varies the calibration of an int8 target; {profile.name} is {profile.precision.value}, which has none"
        )
    check_installed([profile])
    grid = read_grid(req.grid, profile)
    if Path(req.model).is_dir() and any(grid.transforms):
        raise BadInput(
            f"transforms rewrite the Keras model's layers, and {req.model} is a SavedModel; pass the .keras/.h5 model, "
            "or sweep transforms = [[]]"
        )
    calib = open_source(req.calibration, req.calibration_root)
    if max(grid.sizes) > len(calib.files):
        raise BadInput(
            f"grid size {max(grid.sizes)} is more than the {len(calib.files)} images of --calibration {calib.origin}; "
            "use smaller sizes or more calibration images"
        )
    _check_validation(req, calib)
    if Path(req.out).exists() and not Path(req.out).is_dir():
        raise BadInput(f"--out {req.out} is a file; pass a folder for the cells and sweep.json, sweep.md, sweep.html")
    if req.executor == "ray":
        ray_module()  # installed (else a one-line error naming the extra), and the head reachable
        if req.ray_address:
            probe(req.ray_address)
    return profile, grid, calib


def _check_validation(req: SweepRequest, calib) -> None:
    """--validation exists, and is labelled with the classes (when known before the model loads);
    images that are also calibration images get a warning."""
    if not Path(req.validation).exists():
        raise BadInput(f"--validation {req.validation} does not exist; pass labelled images (class sub-folders or a list file)")
    labels = None
    if req.labels is not None:
        from ..model_io import read_labels

        labels = read_labels(req.labels)
    elif calib.classes is not None:
        labels = list(calib.classes)
    if labels is None:
        return
    from ..dataset import labelled_images

    data = labelled_images(req.validation, labels, require_labels=True)
    shared = {f.resolve() for f in data.files} & {f.resolve() for f in calib.files}
    if shared:
        console.warn(
            f"{len(shared)} of {len(data.files)} --validation images are also calibration images, e.g. {sorted(shared)[0]}; "
            "the sweep will look better than on unseen images: use held-out images"
        )


def run_sweep(req: SweepRequest) -> dict:
    """The sweep under an exclusive lock on --out; returns sweep.json's content."""
    from ..artifact import output_lock

    t0 = time.perf_counter()
    profile, grid, calib = precheck(req)
    with output_lock(Path(req.out), "--out") as out:
        ctx = SweepContext(
            req.model, profile, grid.setting, Path(req.calibration).resolve(),
            None if req.calibration_root is None else Path(req.calibration_root).resolve(),
            Path(req.validation).resolve(), None if req.labels is None else Path(req.labels).resolve(),
            out.resolve(), req.unsafe_model, req.resize, req.crop_fraction, req.interpolation,
        )  # fmt: skip
        console.info(f"Keras reference on {req.validation} ({req.executor})")
        ref = _map(req, reference, [ctx])[0]
        t1 = time.perf_counter()
        cells = _run_cells(req, ctx, ref, grid, calib)
        timing = {"reference_seconds": t1 - t0, "cells_seconds": time.perf_counter() - t1}
        from .report import write_sweep

        sweep = _assemble(req, ctx, ref, grid, calib, cells, timing)
        sweep["files"] = {k: str(v) for k, v in write_sweep(sweep, out).items()}
    return sweep


def _map(req: SweepRequest, fn, items: list, on_done=None) -> list:
    from ..scale.executor import map_tasks

    return map_tasks(fn, items, executor=req.executor, ray_address=req.ray_address, on_done=on_done)


def _run_cells(req: SweepRequest, ctx: SweepContext, ref: dict, grid: Grid, calib) -> list[dict]:
    """Every cell's record in the grid's order: reused (--resume) or computed, each saved as it finishes."""
    from . import store

    cells = grid.cells()
    listing = store.calibration_listing(calib)
    keys = {c.name: store.cell_key(ctx, ref, c, listing) for c in cells}
    done = {}
    if req.resume:
        for c in cells:
            if (found := store.load(ctx.out, ctx.cell_dir(c), keys[c.name], c.name)) is not None:
                done[c.name] = found
        if done:
            console.info(f"--resume: reusing {len(done)} finished cell(s) of {len(cells)}")
    todo = [c for c in cells if c.name not in done]
    for c in todo:
        store.forget(ctx.cell_dir(c))
    with console.progress(f"Sweep: {len(cells)} cells of {ctx.profile.name}", total=len(cells)) as bar:
        bar.advance(len(done))

        def finished(i: int, record: dict) -> None:
            cell = todo[i]
            record = {**record, "reused": False}
            if record["ok"]:
                store.save(ctx.cell_dir(cell), keys[cell.name], record)
            done[cell.name] = record
            console.info(_line(record))
            bar.advance()

        try:
            _map(req, run_cell, [CellTask(ctx, ref, c) for c in todo], on_done=finished)
        except KeyboardInterrupt:
            saved = sum(1 for r in done.values() if r["ok"])
            if saved:
                console.warn(f"interrupted: {saved} finished cell(s) are kept in {ctx.out / 'cells'}; rerun with --resume")
            raise
    return [done[c.name] for c in cells]


def _line(r: dict) -> str:
    if not r["ok"]:
        return f"[{r['name']}] FAILED: {r['error']}"
    return (
        f"[{r['name']}] top-1 {100 * r['top1']:.2f}% ({r['drop_pp']:+.2f} pp vs Keras), "
        f"agreement {100 * r['agreement']:.2f}%, {r['convert_seconds'] + r['evaluate_seconds']:.1f} s"
    )


def _assemble(req, ctx: SweepContext, ref: dict, grid: Grid, calib, cells: list[dict], timing: dict) -> dict:
    from .noise import recommend, summarize

    summary = summarize(cells, ref["label_of"])
    row = ref["row"]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "xception_edge": __version__,
        "model": {"spec": req.model, "sha256": ref["model_sha256"]},
        "target": {
            "name": ctx.profile.name,
            "backend": ctx.profile.backend,
            "source": ctx.profile.source,
            "method_setting": grid.setting or None,
        },
        "calibration": {"source": calib.origin, "images": len(calib.files)},
        "validation": {
            "source": str(req.validation),
            "images": row.images,
            "sha256": ref["data_sha256"],
            "undecodable": ref["undecodable"],
        },
        "reference": {"name": row.name, "top1": row.top1, "top5": row.top5},
        "grid": grid.to_dict(),
        "executor": {"kind": req.executor, "ray_address": req.ray_address},
        "cells": [{k: v for k, v in c.items() if k != "predictions"} for c in cells],
        "summary": summary,
        "recommendation": recommend(summary, row.images, len(grid.seeds)),
        "timing": timing,
    }
