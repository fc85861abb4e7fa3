"""The two kinds of task of a sweep, each run here or as a Ray task (so each takes one picklable
argument and reads only paths every node can see):

- ``reference``: the Keras model on the validation images, once for every cell;
- ``run_cell``: one conversion of the target through ``api.convert`` (the cell's profile, size,
  seed and transforms) into OUT/cells/<cell>/, then its evaluation on the same images, scored
  against that reference by ``evaluate``'s own scoring (top-1, drop with its 95% interval,
  McNemar's p, agreement)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from .. import console
from ..errors import BadInput, XceptionEdgeError
from ..profiles import TargetProfile
from .grid import Cell

CELLS = "cells"
DECODE_THREADS = 1


@dataclasses.dataclass(frozen=True)
class SweepContext:
    """What every task reads; nothing in it changes once the sweep has started."""

    model: str
    profile: TargetProfile  # the target's profile as given
    setting: str  # the [quantization] key a cell's method sets ("": none)
    calibration: Path
    calibration_root: Path | None
    validation: Path
    labels: Path | None
    out: Path  # absolute: a Ray worker's working folder is another one
    unsafe_model: bool = False
    resize: str = "resize"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / CELLS / cell.name


@dataclasses.dataclass(frozen=True)
class CellTask:
    """A cell with what it needs: the sweep's context and the Keras reference."""

    ctx: SweepContext
    reference: dict
    cell: Cell


def _validation(ctx: SweepContext, labels: list[str]):
    from ..dataset import labelled_images

    data = labelled_images(ctx.validation, labels, require_labels=True)
    if not data.files:
        raise BadInput(f"--validation {ctx.validation} holds no images; pass labelled images (class sub-folders)")
    return data


def _predict_all(predict, data, spec, labels: list[str]):
    """``evaluate``'s prediction pass and scoring: (accuracy report, {image: class}, undecodable)."""
    from ..evaluation import _predict, _score
    from ..imagefeed import ImageFeed

    with ImageFeed(data.files, spec, workers=DECODE_THREADS) as feed:
        idx, probs, _ = _predict(predict, feed, len(labels))
        failed_idx = sorted(feed.failed)
        keys = data.keys
        failed = {keys[i]: feed.failed[i] for i in failed_idx}
    if len(idx) == 0:
        raise BadInput(f"no image of {data.origin} could be decoded, e.g. {next(iter(failed.values()), '?')}")
    acc, preds = _score(probs, idx, data, labels, failed_idx)
    return acc, preds, failed


def reference(ctx: SweepContext) -> dict:
    """The Keras model's row, predictions and labels on the validation images, and the
    preprocessing every cell's artifact must share."""
    from ..calibration import open_source
    from ..evaluation_keras import _graph_predict, _keras_row
    from ..model_io import load_source, resolve_labels
    from ..preprocess import PreprocessSpec

    src = load_source(ctx.model, unsafe=ctx.unsafe_model)
    calib = open_source(ctx.calibration, ctx.calibration_root)
    labels, _ = resolve_labels(src.num_classes, ctx.labels, calib.classes, calib.origin)
    spec = PreprocessSpec(src.height, src.width, ctx.resize, ctx.crop_fraction, ctx.interpolation)
    data = _validation(ctx, labels)
    acc, preds, failed = _predict_all(_graph_predict(src), data, spec, labels)
    if failed:
        console.warn(f"{len(failed)} validation image(s) could not be decoded; counted as misses: {next(iter(failed.values()))}")
    return {
        "row": _keras_row(ctx.model, src.kind, acc, {}),
        "predictions": preds,
        "label_of": dict(zip(data.keys, (labels[t] for t in data.targets))),
        "labels": labels,
        "spec": spec,
        "model_sha256": src.sha256,
        "data_sha256": data.sha256(labels),
        "undecodable": failed,
    }


def run_cell(task: CellTask) -> dict:
    """Convert the cell (its artifact replaces an earlier one of the same cell) and evaluate it:
    the cell's record (``ok`` false with the ``error`` when its conversion failed)."""
    from .. import api
    from .profile import FILE, cell_profile, write_cell_profile

    ctx, cell = task.ctx, task.cell
    folder = ctx.cell_dir(cell)
    profile = cell_profile(ctx.profile, ctx.setting, cell)
    record = {"name": cell.name, **cell.to_dict(), "profile": str((folder / FILE).relative_to(ctx.out))}
    t0 = time.perf_counter()
    # ORT's entropy/percentile calibrators print to stdout, which --json keeps for the result
    with console.quieted(), contextlib.redirect_stdout(sys.stderr), _cleared_unless_made(folder, folder / profile.name):
        folder.mkdir(parents=True, exist_ok=True)
        path = write_cell_profile(folder, profile, cell)
        result = api.convert(
            ctx.model, [str(path)], calibration=ctx.calibration, out=folder, calibration_root=ctx.calibration_root,
            num_calibration=cell.size, seed=cell.seed, verify=False, labels=ctx.labels, force=True,
            unsafe_model=ctx.unsafe_model, resize=ctx.resize, crop_fraction=ctx.crop_fraction,
            interpolation=ctx.interpolation, transforms=cell.transforms,
        )[0]  # fmt: skip
    record["convert_seconds"] = round(time.perf_counter() - t0, 3)
    if not result.ok:
        return {**record, "ok": False, "error": result.error}
    t1 = time.perf_counter()
    try:
        scored = score(ctx, task.reference, folder / profile.name)
    except XceptionEdgeError as exc:
        if isinstance(exc, BadInput):
            raise
        return {**record, "ok": False, "error": str(exc)}
    return {**record, "ok": True, "error": None, **scored, "evaluate_seconds": round(time.perf_counter() - t1, 3)}


@contextlib.contextmanager
def _cleared_unless_made(folder: Path, artifact: Path):
    """An interrupted cell leaves no folder behind (nor an empty cells/) unless its artifact was written."""
    try:
        yield
    except BaseException:
        if not artifact.exists():
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
        raise


def score(ctx: SweepContext, ref: dict, folder: Path) -> dict:
    """One artifact on the validation images against the Keras reference, as ``evaluate`` scores it."""
    from ..evaluation import _compare
    from ..evaluation_inputs import discover_artifacts
    from ..records import ReportRow
    from ..runtime import open_artifact

    art = discover_artifacts(folder)[0]  # its manifest and every file's sha256 checked
    m = art.manifest
    if m.preprocessing != ref["spec"] or list(m.labels) != ref["labels"]:
        raise BadInput(f"{folder}: its preprocessing or labels differ from the sweep's; remove the folder and run again")
    rt = open_artifact(art.folder, manifest=m)
    labels = ref["labels"]
    acc, preds, _ = _predict_all(rt.predict, _validation(ctx, labels), ref["spec"], labels)
    base = ReportRow(name=folder.parent.name, path=str(folder), target=m.target, backend=m.backend, precision=m.precision)
    row = _compare(base, acc, preds, ref["row"], ref["predictions"], ref["label_of"])
    return {
        "top1": row.top1,
        "top5": row.top5,
        "drop_pp": row.drop_pp,
        "drop_ci_pp": row.drop_ci_pp,
        "mcnemar_p": row.mcnemar_p,
        "agreement": row.agreement,
        "flipped": row.flipped,
        "images": row.images,
        "artifact": str(folder.relative_to(ctx.out)),
        "manifest_sha256": art.manifest_sha256,
        "model_file": m.model_file,
        "model_sha256": m.files[m.model_file]["sha256"],
        "calibration_sha256": (m.calibration or {}).get("list_sha256"),
        "predictions": preds,
    }
