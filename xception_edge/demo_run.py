"""`xception-edge demo`: build or reuse the demo, convert it to every built-in target, and
compare every artifact with the Keras model on the held-out demo images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import console
from .errors import BadInput


def demo_calibration_list() -> Path:
    """calibration/demo.txt: in the installed package, or at the repo root in a checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_calibration" / "demo.txt", here.parent / "calibration" / "demo.txt"):
        if cand.is_file():
            return cand
    raise BadInput(f"the demo calibration list calibration/demo.txt is missing beside {here}; reinstall xception-edge")


def held_out_comparison(model_path: Path, artifacts: dict[str, Path], data: Path, labels: list[str]) -> dict:
    """Top-1 of Keras and of every artifact on a labelled folder, and each artifact's top-1
    agreement with Keras. Images are decoded once and shared by every backend."""
    from . import frameworks
    from .calibration import open_source
    from .preprocess import PreprocessSpec, load_images
    from .runtime import open_artifact

    src = open_source(data)
    if src.classes is None or list(src.classes) != list(labels):
        raise BadInput(f"{data}: class folders {src.classes} do not match the model's labels {labels}")
    keras = frameworks.keras()
    model = keras.models.load_model(model_path, compile=False)
    _, h, w, _ = model.inputs[0].shape
    files = list(src.files)
    with console.progress(f"Decoding {len(files)} held-out images of {data.name}", total=len(files)) as task:
        x, failed = load_images(files, PreprocessSpec(h, w), on_progress=lambda i: task.update(i))
    if failed:
        raise BadInput(f"{len(failed)} held-out demo images could not be decoded: {failed[0]}; delete the demo cache")
    y = np.array(src.class_of)
    ref = model.predict(x, batch_size=64, verbose=0).argmax(-1)
    rows = {"keras-fp32": {"top1": float((ref == y).mean()), "agreement": 1.0, "size_bytes": model_path.stat().st_size}}
    for name, folder in artifacts.items():
        rt = open_artifact(folder)
        t0 = time.perf_counter()
        pred = rt.predict(x).argmax(-1)
        rows[name] = {
            "top1": float((pred == y).mean()),
            "agreement": float((pred == ref).mean()),
            "size_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".tflite", ".xml", ".bin", ".onnx")),
            "ms_per_image": 1000 * (time.perf_counter() - t0) / len(x),
        }
    return {"images": len(x), "split": data.name, "results": rows}


def run_demo(out: Path, cache: Path | None, json_out: str | None, *, tiny: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from .demo import DEMO, TINY, ensure_demo
    from .pipeline import ConvertRequest, run_convert
    from .tables import conversion_table

    demo = ensure_demo(cache, config=TINY if tiny else DEMO)
    stats = demo.stats
    console.info(
        f"demo model {demo.model} ({stats.get('params', '?')} parameters): Keras top-1 "
        f"{stats.get('val_top1', float('nan')):.1%} on val, {stats.get('val_hard_top1', float('nan')):.1%} on val_hard"
    )
    labels_file = demo.model.with_name("labels.txt")
    if not labels_file.is_file():
        labels_file.write_text("\n".join(demo.labels) + "\n", encoding="utf-8")
    # The committed list (calibration/demo.txt) names images of the full demo's train split;
    # the tiny test variant has fewer, so it samples its train folder instead.
    calibration = demo.data / "train" if tiny else demo_calibration_list()
    req = ConvertRequest(
        model=str(demo.model), targets=("all",), out=Path(out), calibration=calibration,
        calibration_root=demo.data / "train", verify_data=demo.data / "val", labels=labels_file, force=True,
    )
    results = run_convert(req)
    if json_out != "-":
        conversion_table(results)
    written = {r.target: Path(r.path) for r in results if r.ok}
    comparisons = [held_out_comparison(demo.model, written, demo.data / split, list(demo.labels)) for split in ("val", "val_hard")]
    if json_out:
        import dataclasses

        payload = {"demo": {"model": str(demo.model), "stats": stats}, "conversions": [dataclasses.asdict(r) for r in results],
                   "held_out": comparisons}
        text = json.dumps(payload, indent=2, default=str)
        if json_out == "-":
            print(text)
        else:
            Path(json_out).write_text(text + "\n", encoding="utf-8")
    if json_out != "-":
        for comp in comparisons:
            t = Table(title=f"Held-out demo images: {comp['split']} ({comp['images']} images)")
            for col in ("artifact", "size", "top-1", "Δ vs Keras", "agreement with Keras", "ms/image"):
                t.add_column(col, justify="left" if col == "artifact" else "right")
            base = comp["results"]["keras-fp32"]["top1"]
            for name, r in comp["results"].items():
                t.add_row(name, f"{r['size_bytes'] / 1e6:.2f} MB", f"{r['top1']:.1%}", f"{100 * (r['top1'] - base):+.1f} pt",
                          f"{r['agreement']:.1%}", f"{r['ms_per_image']:.2f}" if "ms_per_image" in r else "—")
            Console(width=200 if not Console().is_terminal else None).print(t)
        console.info(f"artifacts in {Path(out).resolve()}")
    failed = [r.target for r in results if not r.ok]
    if failed:
        import click

        raise click.exceptions.Exit(1)
